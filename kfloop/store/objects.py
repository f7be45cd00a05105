"""Object storage: a local folder by default, S3/MinIO when configured.

Both backends offer the same small interface on ``/``-separated keys. Writes are atomic
(an object is either absent or complete) and ``put_if_absent`` is an atomic create that
fails when the key exists, which the registry uses to number versions without gaps or
duplicates. JSON documents are sealed with a SHA-256 of their canonical body
(``put_json``/``get_json``) so every stored object carries a checksum that is checked on load.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from kfloop.config import Settings
from kfloop.errors import ChecksumError, ConfigError, ObjectNotFound, StorageError

CHECKSUM_FIELD = "_sha256"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def put_if_absent(self, key: str, data: bytes) -> bool: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def put_file(self, key: str, path: str | Path) -> None: ...
    def get_file(self, key: str, path: str | Path) -> None: ...
    def uri(self, key: str) -> str: ...


class LocalStore:
    """Objects as files below ``root``; atomic through write-to-temp then rename/link."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(f"key {key!r} escapes the store root {self.root}")
        return path

    def _write_temp(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return Path(tmp)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        os.replace(self._write_temp(path, data), path)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)  # atomic, and fails if ``path`` exists
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink()

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {self.uri(key)}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        start = base if base.is_dir() else base.parent
        if not start.exists():
            return []
        keys = []
        for path in start.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def put_file(self, key: str, path: str | Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".tmp-{uuid.uuid4().hex}"
        with open(path, "rb") as src, open(tmp, "wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
        os.replace(tmp, dest)

    def get_file(self, key: str, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(self.get(key))

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri() if key else self.root.as_uri()


class S3Store:
    """Objects in one bucket of an S3-compatible server (MinIO, SeaweedFS, AWS S3), via ``minio``."""

    def __init__(self, client, bucket: str, endpoint: str, create_bucket: bool = True):
        self.client, self.bucket, self.endpoint = client, bucket, endpoint
        if create_bucket:
            self._call("check bucket", lambda: self.client.bucket_exists(bucket) or self.client.make_bucket(bucket))

    @classmethod
    def from_settings(cls, settings: Settings, bucket: str | None = None, create_bucket: bool = True) -> S3Store:
        return cls(make_minio_client(settings), bucket or settings.s3_bucket, settings.s3_endpoint or "", create_bucket)

    def _call(self, what: str, fn):
        from minio.error import S3Error
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchBucket"):
                raise ObjectNotFound(f"{what}: {e.code} at s3://{self.bucket}/{e.object_name or ''}") from e
            if e.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StorageError(f"{what}: S3 endpoint {self.endpoint} rejected the credentials ({e.code})") from e
            raise StorageError(f"{what}: S3 error {e.code}: {e.message}") from e
        except (HTTPError, OSError) as e:
            raise StorageError(f"{what}: cannot reach S3 endpoint {self.endpoint}: {e.__class__.__name__}") from e
        except ValueError as e:  # minio checks names (bucket, object) before sending anything
            raise ConfigError(f"{what}: {e}") from e

    def put(self, key: str, data: bytes) -> None:
        self._call(f"put {key}", lambda: self.client.put_object(self.bucket, key, io.BytesIO(data), len(data)))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from minio.error import S3Error

        # minio's public put_object turns unknown headers into user metadata, so the
        # conditional create (If-None-Match: *, supported by MinIO and S3) goes through
        # the client's own PutObject call, pinned with the minio version.
        try:
            self._call(
                f"create {key}", lambda: self.client._put_object(self.bucket, key, data, headers={"If-None-Match": "*"})
            )
            return True
        except StorageError as e:
            cause = e.__cause__
            if isinstance(cause, S3Error) and cause.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    def get(self, key: str) -> bytes:
        def read():
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call(f"get {key}", read)

    def exists(self, key: str) -> bool:
        try:
            self._call(f"stat {key}", lambda: self.client.stat_object(self.bucket, key))
            return True
        except ObjectNotFound:
            return False

    def list(self, prefix: str) -> list[str]:
        return sorted(
            self._call(
                f"list {prefix}",
                lambda: [o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)],
            )
        )

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", lambda: self.client.remove_object(self.bucket, key))

    def put_file(self, key: str, path: str | Path) -> None:
        self._call(f"upload {key}", lambda: self.client.fput_object(self.bucket, key, str(path)))

    def get_file(self, key: str, path: str | Path) -> None:
        self._call(f"download {key}", lambda: self.client.fget_object(self.bucket, key, str(path)))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def make_minio_client(settings: Settings):
    """A ``minio.Minio`` client for the configured endpoint, with short retries so an
    unreachable endpoint fails in seconds with a clear error instead of hanging."""
    import urllib3
    from minio import Minio

    if not settings.s3_endpoint:
        raise StorageError("no S3 endpoint configured (set KFLOOP_S3_ENDPOINT)")
    endpoint = settings.s3_endpoint.split("://", 1)[-1].rstrip("/")
    secure = settings.s3_secure or settings.s3_endpoint.startswith("https://")
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=120),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(
        endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=secure,
        region=settings.s3_region,
        http_client=http,
    )


def open_store(settings: Settings) -> ObjectStore:
    """The store the settings point at: S3 when an endpoint is set, else the local home folder."""
    if settings.uses_s3:
        return S3Store.from_settings(settings)
    return LocalStore(settings.home)


def seal_json(doc: dict) -> bytes:
    """Serialize ``doc`` with a SHA-256 of its canonical body in ``_sha256``."""
    body = {k: v for k, v in doc.items() if k != CHECKSUM_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    return json.dumps({**body, CHECKSUM_FIELD: sha256_bytes(canonical)}, sort_keys=True, indent=1, default=str).encode()


def unseal_json(data: bytes, where: str) -> dict:
    """Parse a sealed document and verify its checksum; raises ChecksumError on mismatch."""
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise ChecksumError(f"{where} is not valid JSON: {e}") from e
    expected = doc.pop(CHECKSUM_FIELD, None) if isinstance(doc, dict) else None
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()
    if expected != sha256_bytes(canonical):
        raise ChecksumError(f"{where}: checksum mismatch (stored {expected}, content {sha256_bytes(canonical)})")
    return doc


def put_json(store: ObjectStore, key: str, doc: dict) -> None:
    store.put(key, seal_json(doc))


def get_json(store: ObjectStore, key: str) -> dict:
    return unseal_json(store.get(key), store.uri(key))


def iter_json(store: ObjectStore, prefix: str) -> Iterator[tuple[str, dict]]:
    for key in store.list(prefix):
        if key.endswith(".json"):
            yield key, get_json(store, key)
