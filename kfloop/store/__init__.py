"""Storage: where the loop's state lives, on a local folder or S3/MinIO.

Owns the object store abstraction with checksummed (sealed) JSON (``objects``), the model registry of
numbered immutable versions and their stages (``registry``), model bundles with checksum manifests
(``bundle``) and the event log of every CloudEvent the loop acted on (``event_log``).

May import: the leaves only (``kfloop.schema``, ``kfloop.names``, ``kfloop.config``, ``kfloop.errors`` ...).
"""
