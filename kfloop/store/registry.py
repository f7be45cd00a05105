"""The model registry: numbered, immutable model versions on object storage.

Layout below the store's root::

    models/<name>/bundles/<bundle-id>/...   the files of a model bundle (kfloop.store.bundle), immutable
    models/<name>/versions/<000001>.json    the version record, sealed JSON, created once
    models/<name>/stages/<000001>.json      the version's current stage and its history, sealed JSON
    models/<name>/aliases/<alias>/<000001>.json   an alias's moves, numbered, sealed JSON, created once

Registration uploads the bundle first, then creates the version record with an atomic
create-if-absent (``ObjectStore.put_if_absent``) under the next free number, retrying on the
next number when another run won the race. So versions are numbered without gaps or
duplicates, and a version is visible only once completely written: a crash before the record
leaves an unreferenced bundle folder, never a half-registered version.

Stages follow SageMaker's model registry: a new version is ``staging`` (or
``pending-approval`` until approved or rejected); rollouts make it ``production`` (the previous
production version becomes ``archived``) or ``rejected``.

Aliases (as MLflow's and Vertex's) are mutable named pointers beside the stages: ``champion``,
``challenger`` or any valid name (``kfloop.names.validate_alias_name``) but a stage's or ``latest``,
so ``NAME@X`` is never ambiguous: a stage when ``X`` is one, else an alias. An alias is a numbered
log of moves (``{"version": V | null, "previous": ..., "reason", "time"}``), each created with the
same ``put_if_absent`` as version numbers: a move claims the number after the one it read, so
concurrent moves are serialised, none is lost, and each record's ``previous`` is exactly where
the alias pointed before it (a compare-and-swap). The highest number is where the alias points;
``null`` means deleted. The moves appear in the stage history of the versions they touch.

A version whose record or stage document is corrupt (a checksum mismatch, broken JSON, missing
fields) is unreadable on its own: ``get`` raises ``ChecksumError`` naming it, listings skip it (and
report it to a caller that asks, as ``kfloop registry list`` does), every other version reads as
before. ``verify`` recomputes the SHA-256 of every stored file of a version's bundle.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import uuid
from pathlib import Path

from kfloop.errors import ChecksumError, ModelNotFound, ObjectNotFound, RegistryError
from kfloop.names import (
    MODELS_PREFIX,
    model_alias_key,
    model_aliases_prefix,
    model_stage_key,
    model_version_key,
    validate_alias_name,
    validate_model_name,
)
from kfloop.store import bundle
from kfloop.store.objects import ObjectStore, get_json, put_json, seal_json, sha256_file
from kfloop.timestamps import rfc3339_millis

log = logging.getLogger(__name__)
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
    aliases: tuple = ()

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["stage_history"] = list(self.stage_history)
        return out


RESERVED_ALIASES = (*STAGES, "latest")


def validate_alias(alias: str) -> str:
    """``alias`` if it can name an alias: the form of ``validate_alias_name``, not a stage, not ``latest``."""
    if alias in RESERVED_ALIASES:
        raise RegistryError(f"alias {alias!r} is reserved: aliases cannot be named like a stage {STAGES} or 'latest'")
    return validate_alias_name(alias)


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A parsed reference: ``NAME``, ``NAME:VERSION``, ``NAME:latest``, ``NAME@STAGE`` or ``NAME@ALIAS``.

    After ``@``, a stage name is a stage (aliases cannot be named like stages), anything else an alias."""

    name: str
    version: int | None = None
    stage: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, version, stage, alias = text.strip(), None, None, None
        if "@" in name:
            name, pointer = name.split("@", 1)
            if pointer in STAGES:
                stage = pointer
            else:
                try:
                    alias = validate_alias(pointer)
                except RegistryError as e:
                    raise RegistryError(
                        f"{text!r}: {pointer!r} is neither a stage nor a valid alias ({e}; stages: {', '.join(STAGES)})"
                    ) from None
        elif ":" in name:
            name, raw = name.split(":", 1)
            if raw != "latest":
                if not raw.isdigit() or int(raw) < 1:
                    raise RegistryError(f"{text!r}: version must be a positive whole number or 'latest'")
                version = int(raw)
        validate_model_name(name)
        return cls(name, version, stage, alias)


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
                        name,
                        other.version,
                        "archived",
                        f"replaced by version {version}",
                        self._stages(name, other.version),
                    )
        self._write_stage(name, version, stage, reason, self._stages(name, record.version))
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

    def _stages(self, name: str, version: int) -> list:
        """The stored stage changes of a version (``VersionRecord.stage_history`` adds the alias moves)."""
        try:
            return list(get_json(self.store, model_stage_key(name, version))["history"])
        except ObjectNotFound:
            return []

    def _write_stage(self, name: str, version: int, stage: str, reason: str, history: list) -> None:
        entry = {"stage": stage, "reason": reason, "time": rfc3339_millis()}
        put_json(self.store, model_stage_key(name, version), {**entry, "history": history + [entry]})

    # -- aliases -------------------------------------------------------------------------------

    def set_alias(self, ref: str | ModelRef, alias: str, reason: str = "") -> VersionRecord:
        """Point ``alias`` of the model at the version ``ref`` names (moving it if it points elsewhere)."""
        validate_alias(alias)
        record = self.resolve(ref)
        self._move_alias(record.name, alias, record.version, reason or f"alias {alias!r} set")
        return self.get(record.name, record.version)

    def delete_alias(self, name: str, alias: str, reason: str = "") -> int:
        """Remove ``alias`` of model ``name``; returns the version it pointed at."""
        validate_model_name(name)
        validate_alias(alias)
        previous = self._move_alias(name, alias, None, reason or f"alias {alias!r} deleted")
        return previous

    def _move_alias(self, name: str, alias: str, version: int | None, reason: str) -> int | None:
        """Append the move after the last one read; another writer's move in between makes us re-read."""
        for _ in range(MAX_CLAIM_ATTEMPTS):
            sequence, current = self._alias_head(name, alias)
            previous = current["version"] if current else None
            if version is None and previous is None:
                raise ModelNotFound(f"model {name!r} has no alias {alias!r}{self._known_aliases(name)}")
            doc = {"alias": alias, "version": version, "previous": previous, "reason": reason, "time": rfc3339_millis()}
            if self.store.put_if_absent(model_alias_key(name, alias, sequence + 1), seal_json(doc)):
                return previous
        raise RegistryError(f"could not move alias {alias!r} of {name!r} after {MAX_CLAIM_ATTEMPTS} attempts")

    def _alias_head(self, name: str, alias: str) -> tuple[int, dict | None]:
        """The number of the alias's last move and that move (0, None when it never existed)."""
        keys = self._alias_keys(name, alias)
        if not keys:
            return 0, None
        return int(keys[-1].rsplit("/", 1)[1][:-5]), get_json(self.store, keys[-1])

    def _alias_keys(self, name: str, alias: str) -> list[str]:
        return [k for k in self.store.list(model_aliases_prefix(name, alias)) if k.endswith(".json")]

    def aliases(self, name: str) -> dict[str, int]:
        """Every alias of model ``name`` that points at a version, and that version."""
        out = {}
        for alias, moves in self._alias_moves(name).items():
            if moves and moves[-1]["version"] is not None:
                out[alias] = moves[-1]["version"]
        return dict(sorted(out.items()))

    def alias_history(self, name: str, alias: str) -> list[dict]:
        """Every move of ``alias``, oldest first."""
        return self._alias_moves(name).get(alias, [])

    def _alias_moves(self, name: str) -> dict[str, list[dict]]:
        prefix = model_aliases_prefix(name)
        moves: dict[str, list[dict]] = {}
        for key in self.store.list(prefix):
            if key.endswith(".json"):
                alias = key[len(prefix) :].split("/", 1)[0]
                moves.setdefault(alias, []).append(get_json(self.store, key))
        return moves

    def _known_aliases(self, name: str) -> str:
        known = self.aliases(name)
        return f" (aliases: {', '.join(f'{a} -> {v}' for a, v in known.items())})" if known else " (it has no aliases)"

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

    def get(self, name: str, version: int, _moves: dict | None = None) -> VersionRecord:
        """One version; ``ModelNotFound`` when it does not exist, ``ChecksumError`` naming it when its
        record or stage document is corrupt."""
        try:
            doc = get_json(self.store, model_version_key(name, version))
        except ObjectNotFound:
            raise ModelNotFound(f"no version {version} of model {name!r} in {self.store.uri('models/')}") from None
        except ChecksumError as e:
            raise ChecksumError(f"{name}:{version} is unreadable: {e}") from None
        try:
            stage = get_json(self.store, model_stage_key(name, version))
        except ObjectNotFound:  # the record is created just before its first stage document
            stage = {"stage": doc.get("initial_stage"), "history": []}
        except ChecksumError as e:
            raise ChecksumError(f"{name}:{version} is unreadable: {e}") from None
        moves = self._alias_moves(name) if _moves is None else _moves
        fields = {f.name for f in dataclasses.fields(VersionRecord)}
        try:
            history = list(stage["history"]) + _alias_entries(moves, version)
            history.sort(key=lambda entry: entry.get("time", ""))  # RFC 3339 UTC millis: sorts as text
            pointing = sorted(a for a, m in moves.items() if m and m[-1]["version"] == version)
            record = VersionRecord(
                **{k: v for k, v in doc.items() if k in fields},
                stage=stage["stage"],
                stage_history=tuple(history),
                aliases=tuple(pointing),
            )
        except (KeyError, TypeError, AttributeError) as e:  # sealed, but not a record kfloop wrote
            raise ChecksumError(
                f"{name}:{version} is unreadable: its record at {self.store.uri(model_version_key(name, version))} "
                f"is not a version record ({e.__class__.__name__}: {e})"
            ) from None
        if not isinstance(record.stage, str) or not isinstance(record.files, dict):
            raise ChecksumError(f"{name}:{version} is unreadable: its record has no stage or files")
        return record

    def list_versions(self, name: str | None = None, unreadable: list | None = None) -> list[VersionRecord]:
        """Every readable version (of ``name``, or of every model). A corrupt version is skipped: logged,
        or appended to ``unreadable`` as ``(ref, reason)`` when given."""
        names = [name] if name else self.models()
        out = []
        for n in names:
            moves = self._alias_moves(n)
            for v in self.version_numbers(n):
                try:
                    out.append(self.get(n, v, moves))
                except ChecksumError as e:
                    if unreadable is None:
                        log.warning("skipping %s:%d: %s", n, v, e)
                    else:
                        unreadable.append((f"{n}:{v}", str(e)))
        return out

    def verify(self, record: VersionRecord) -> list[str]:
        """The problems of a version's stored bundle files: each file missing or whose SHA-256 differs
        from the record's, and a manifest that differs from the record; empty when all is well."""
        problems = []
        with tempfile.TemporaryDirectory(prefix="kfloop-verify-") as tmp:
            for rel, entry in sorted(record.files.items()):
                target = Path(tmp) / "file"
                try:
                    self.store.get_file(f"{record.bundle_key}/{rel}", target)
                except ObjectNotFound:
                    problems.append(f"{rel}: missing from {record.bundle_uri}")
                    continue
                digest = sha256_file(target)
                if digest != entry.get("sha256"):
                    problems.append(f"{rel}: checksum mismatch (recorded {entry.get('sha256')}, stored {digest})")
            try:
                self.store.get_file(f"{record.bundle_key}/{bundle.MANIFEST}", Path(tmp) / bundle.MANIFEST)
                manifest = bundle.read_manifest(Path(tmp))
                if manifest.get("files") != record.files:
                    problems.append(f"{bundle.MANIFEST}: differs from the version record")
            except ObjectNotFound:
                problems.append(f"{bundle.MANIFEST}: missing from {record.bundle_uri}")
            except (ChecksumError, ValueError) as e:
                problems.append(f"{bundle.MANIFEST}: unreadable ({e})")
        return problems

    def resolve(self, ref: str | ModelRef) -> VersionRecord:
        """The version a reference names; ``NAME`` alone (or ``NAME:latest``) means the latest version."""
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        if ref.version is not None:
            return self.get(ref.name, ref.version)
        if ref.alias is not None:
            target = self.aliases(ref.name).get(ref.alias)
            if target is None:
                raise ModelNotFound(f"model {ref.name!r} has no alias {ref.alias!r}{self._known_aliases(ref.name)}")
            return self.get(ref.name, target)
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


def _alias_entries(moves: dict[str, list[dict]], version: int) -> list[dict]:
    """The alias moves that touched ``version``, as stage-history entries (``stage`` is the current one's
    business; these carry ``alias`` and ``action`` instead)."""
    entries = []
    for alias, log in moves.items():
        for move in log:
            if move["version"] == version:
                action = "set" if move["previous"] is None else f"moved from version {move['previous']}"
            elif move["previous"] == version:
                action = "deleted" if move["version"] is None else f"moved to version {move['version']}"
            else:
                continue
            entries.append({"alias": alias, "action": action, "reason": move["reason"], "time": move["time"]})
    return entries


def _read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text()) if path.is_file() else {}
