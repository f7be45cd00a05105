"""Batch inference (SageMaker Batch Transform, Vertex batch prediction): a registered version predicts
a CSV/Parquet file, chunk by chunk, as its servers would answer the same rows.

Owns reading the input in chunks of bounded size from a local path or ``s3://`` (``source``), encoding
a chunk's rows with the serving decoder and setting aside the rows it cannot encode with their reason
(``encode``), the output files, written atomically (``outputs``), and the job that ties them together
with the model, capture records and the drift check per chunk (``job``).

May import: ``kfloop.monitoring`` and everything below it. Not ``kfloop.retraining``, ``kfloop.rollout``
or ``kfloop.report``.
"""
