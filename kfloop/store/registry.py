"""The model registry: numbered, immutable model versions on object storage.

Layout below the store's root::

    models/<name>/bundles/<bundle-id>/...   the files of a model bundle (kfloop.store.bundle), immutable
    models/<name>/versions/<000001>.json    the version record, sealed JSON, created once
    models/<name>/stages/<000001>.json      the version's current stage and its history, sealed JSON

Registration uploads the bundle first, then creates the version record with an atomic
create-if-absent (``ObjectStore.put_if_absent``) under the next free number, retrying on the
next number when another run won the race. So versions are numbered without gaps or
duplicates, and a version is visible only once completely written: a crash before the record
leaves an unreferenced bundle folder, never a half-registered version.

Stages follow SageMaker's model registry: a new version is ``staging`` (or
``pending-approval`` until approved or rejected); rollouts make it ``production`` (the previous
production version becomes ``archived``) or ``rejected``.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

from kfloop.errors import ChecksumError, ModelNotFound, ObjectNotFound, RegistryError
from kfloop.names import MODELS_PREFIX, model_stage_key, model_version_key, validate_model_name
from kfloop.store import bundle
from kfloop.store.objects import ObjectStore, get_json, put_json, seal_json, sha256_file
from kfloop.timestamps import rfc3339_millis

STAGES = ("pending-approval", "staging", "production", "archived", "rejected")
MAX_CLAIM_ATTEMPTS = 1000


@dataclasses.dataclass(frozen=True)
class VersionRecord:
    """One registered model version as stored, with its current stage."""

    name: str
    version: int
    stage: str
    created_at: str
    bundle_uri: str
    bundle_key: str
    files: dict
    schema: dict
    metrics: dict
    lineage: dict
    stage_history: tuple = ()

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["stage_history"] = list(self.stage_history)
        return out


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A parsed reference: ``NAME``, ``NAME:VERSION``, ``NAME:latest`` or ``NAME@STAGE``."""

    name: str
    version: int | None = None
    stage: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, version, stage = text.strip(), None, None
        if "@" in name:
            name, stage = name.split("@", 1)
            if stage not in STAGES:
                raise RegistryError(f"{text!r}: stage {stage!r} is not one of {STAGES}")
        elif ":" in name:
            name, raw = name.split(":", 1)
            if raw != "latest":
                if not raw.isdigit() or int(raw) < 1:
                    raise RegistryError(f"{text!r}: version must be a positive whole number or 'latest'")
                version = int(raw)
        validate_model_name(name)
        return cls(name, version, stage)


class Registry:
    """Model versions of every model on one object store."""

    def __init__(self, store: ObjectStore):
        self.store = store

    # -- writing -------------------------------------------------------------------------------

    def register(
        self, name: str, bundle_dir: str | Path, lineage: dict | None = None, stage: str = "staging"
    ) -> VersionRecord:
        """Upload a bundle and make it the next version of ``name``; returns the new record."""
        validate_model_name(name)
        if stage not in ("staging", "pending-approval"):
            raise RegistryError(f"a new version starts as 'staging' or 'pending-approval', not {stage!r}")
        bundle_dir = Path(bundle_dir)
        manifest = bundle.verify_bundle(bundle_dir)
        bundle_key = f"{MODELS_PREFIX}/{name}/bundles/{uuid.uuid4().hex}"
        for rel in manifest["files"]:
            self.store.put_file(f"{bundle_key}/{rel}", bundle_dir / rel)
        self.store.put(f"{bundle_key}/{bundle.MANIFEST}", (bundle_dir / bundle.MANIFEST).read_bytes())
        doc = {
            "name": name,
            "created_at": rfc3339_millis(),
            "bundle_uri": self.store.uri(bundle_key + "/"),
            "bundle_key": bundle_key,
            "files": manifest["files"],
            "schema": bundle.load_schema(bundle_dir).to_dict(),
            "metrics": _read_json(bundle_dir / bundle.METRICS_FILE),
            "lineage": lineage or {},
            "initial_stage": stage,
        }
        version = self._claim_next_version(name, doc)
        self._write_stage(name, version, stage, reason="registered", history=[])
        return self.get(name, version)

    def _claim_next_version(self, name: str, doc: dict) -> int:
        version = self.latest_version(name) + 1
        for _ in range(MAX_CLAIM_ATTEMPTS):
            if self.store.put_if_absent(model_version_key(name, version), seal_json({**doc, "version": version})):
                return version
            version += 1  # another run registered this number first
        raise RegistryError(f"could not claim a version number for {name!r} after {MAX_CLAIM_ATTEMPTS} attempts")

    def set_stage(self, name: str, version: int, stage: str, reason: str = "") -> VersionRecord:
        """Move a version to ``stage``; making one ``production`` archives the previous one."""
        if stage not in STAGES:
            raise RegistryError(f"stage {stage!r} is not one of {STAGES}")
        record = self.get(name, version)
        if stage == "production":
            for other in self.list_versions(name):
                if other.stage == "production" and other.version != version:
                    self._write_stage(
                        name, other.version, "archived", f"replaced by version {version}", list(other.stage_history)
                    )
        self._write_stage(name, version, stage, reason, list(record.stage_history))
        return self.get(name, version)

    def approve(self, ref: str) -> VersionRecord:
        return self._decide_approval(ref, "staging", "approved")

    def reject(self, ref: str, reason: str = "rejected by reviewer") -> VersionRecord:
        return self._decide_approval(ref, "rejected", reason)

    def _decide_approval(self, ref: str, stage: str, reason: str) -> VersionRecord:
        record = self.resolve(ref)
        if record.stage != "pending-approval":
            raise RegistryError(f"{record.ref} is {record.stage!r}, not 'pending-approval'")
        return self.set_stage(record.name, record.version, stage, reason)

    def _write_stage(self, name: str, version: int, stage: str, reason: str, history: list) -> None:
        entry = {"stage": stage, "reason": reason, "time": rfc3339_millis()}
        put_json(self.store, model_stage_key(name, version), {**entry, "history": history + [entry]})

    # -- reading -------------------------------------------------------------------------------

    def models(self) -> list[str]:
        names = {key.split("/")[1] for key in self.store.list(f"{MODELS_PREFIX}/") if "/versions/" in key}
        return sorted(names)

    def version_numbers(self, name: str) -> list[int]:
        prefix = f"{MODELS_PREFIX}/{name}/versions/"
        return sorted(int(k[len(prefix) : -5]) for k in self.store.list(prefix) if k.endswith(".json"))

    def latest_version(self, name: str) -> int:
        numbers = self.version_numbers(name)
        return numbers[-1] if numbers else 0

    def get(self, name: str, version: int) -> VersionRecord:
        try:
            doc = get_json(self.store, model_version_key(name, version))
        except ObjectNotFound:
            raise ModelNotFound(f"no version {version} of model {name!r} in {self.store.uri('models/')}") from None
        try:
            stage = get_json(self.store, model_stage_key(name, version))
        except ObjectNotFound:  # the record is created just before its first stage document
            stage = {"stage": doc["initial_stage"], "history": []}
        fields = {f.name for f in dataclasses.fields(VersionRecord)}
        return VersionRecord(
            **{k: v for k, v in doc.items() if k in fields}, stage=stage["stage"], stage_history=tuple(stage["history"])
        )

    def list_versions(self, name: str | None = None) -> list[VersionRecord]:
        names = [name] if name else self.models()
        return [self.get(n, v) for n in names for v in self.version_numbers(n)]

    def resolve(self, ref: str | ModelRef) -> VersionRecord:
        """The version a reference names; ``NAME`` alone (or ``NAME:latest``) means the latest version."""
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        if ref.version is not None:
            return self.get(ref.name, ref.version)
        versions = self.list_versions(ref.name)
        if not versions:
            raise ModelNotFound(f"model {ref.name!r} has no registered versions")
        if ref.stage:
            matching = [v for v in versions if v.stage == ref.stage]
            if not matching:
                raise ModelNotFound(f"model {ref.name!r} has no version in stage {ref.stage!r}")
            return matching[-1]
        return versions[-1]

    def production(self, name: str) -> VersionRecord | None:
        try:
            return self.resolve(ModelRef(name, stage="production"))
        except ModelNotFound:
            return None

    def fetch_bundle(self, ref: str | ModelRef, dest: str | Path) -> tuple[VersionRecord, Path]:
        """Download a version's bundle into ``dest`` and verify every file's checksum."""
        record = self.resolve(ref)
        dest = Path(dest)
        for rel, entry in record.files.items():
            target = dest / rel
            if not (target.is_file() and sha256_file(target) == entry["sha256"]):
                self.store.get_file(f"{record.bundle_key}/{rel}", target)
        self.store.get_file(f"{record.bundle_key}/{bundle.MANIFEST}", dest / bundle.MANIFEST)
        manifest = bundle.verify_bundle(dest)
        if manifest["files"] != record.files:
            raise ChecksumError(f"{record.ref}: bundle manifest at {record.bundle_uri} differs from the version record")
        return record, dest


def _read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text()) if path.is_file() else {}
