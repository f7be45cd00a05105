"""The error types kfloop raises.

Every expected failure (bad input, bad config, missing objects, broken checksums) is a
``KfloopError``; the CLI prints its message without a traceback and exits non-zero.
Messages name the bad value and what was expected.
"""


class KfloopError(Exception):
    """Base class of every error kfloop expects and reports to the user."""


class ConfigError(KfloopError):
    """A setting or parameter has a value kfloop cannot use."""


class DataError(KfloopError):
    """Input data cannot be read, or is empty."""


class DataQualityError(DataError):
    """Data violates a quality rule; names the column and the rule."""

    def __init__(self, column: str | None, rule: str, detail: str):
        self.column, self.rule, self.detail = column, rule, detail
        where = f"column {column!r}" if column else "data"
        super().__init__(f"data quality rule {rule!r} failed for {where}: {detail}")


class StorageError(KfloopError):
    """The object store cannot be reached or refused an operation."""


class ObjectNotFound(StorageError):
    """An object that should exist does not."""


class ChecksumError(StorageError):
    """A stored object's content does not match its recorded checksum."""


class RegistryError(KfloopError):
    """A model registry operation is not allowed (bad reference, bad stage change...)."""


class ModelNotFound(RegistryError):
    """No such model or version in the registry."""


class InvalidRequest(KfloopError):
    """A request (inference payload, CloudEvent, feedback) is malformed; served as HTTP 400."""
