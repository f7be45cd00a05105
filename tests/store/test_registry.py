"""Registry: numbering under concurrency, checksums, atomic visibility, stages; local and S3."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from kfloop.config import Settings
from kfloop.errors import ChecksumError, ModelNotFound, RegistryError
from kfloop.store import bundle
from kfloop.store.objects import LocalStore, S3Store, open_store, seal_json
from kfloop.store.registry import ModelRef, Registry
from tests.fakes.bundles import minimal_bundle


@pytest.fixture(params=["local", "s3"])
def registry(request, tmp_path) -> Registry:
    if request.param == "local":
        return Registry(LocalStore(tmp_path / "home"))
    return Registry(open_store(request.getfixturevalue("s3_settings")))


def test_versions_are_numbered_from_one_and_round_trip(registry, tmp_path):
    first = registry.register("churn", minimal_bundle(tmp_path / "b1", "1"), lineage={"run": "r1"})
    second = registry.register("churn", minimal_bundle(tmp_path / "b2", "2"))
    assert (first.version, second.version) == (1, 2)
    assert first.stage == "staging" and first.lineage == {"run": "r1"}
    assert first.schema["features"][1]["categories"] == ["a", "b"]
    record, path = registry.fetch_bundle("churn:1", tmp_path / "out")
    assert record.version == 1
    assert (path / bundle.MODEL_FILE).read_bytes() == b"model-1"
    assert registry.resolve("churn").version == 2
    assert registry.resolve("churn:latest").version == 2


def test_tampered_object_fails_checksum_on_load(registry, tmp_path):
    record = registry.register("churn", minimal_bundle(tmp_path / "b1"))
    registry.store.put(f"{record.bundle_key}/{bundle.MODEL_FILE}", b"tampered")
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        registry.fetch_bundle("churn:1", tmp_path / "out")


def test_tampered_version_record_fails_checksum(registry, tmp_path):
    registry.register("churn", minimal_bundle(tmp_path / "b1"))
    key = "models/churn/versions/000001.json"
    doc = json.loads(registry.store.get(key))
    doc["metrics"]["auc"] = 1.0
    registry.store.put(key, json.dumps(doc).encode())
    with pytest.raises(ChecksumError):
        registry.get("churn", 1)


def test_crash_before_the_version_record_leaves_no_visible_version(tmp_path):
    store = LocalStore(tmp_path / "home")
    registry = Registry(store)

    class CrashingStore(LocalStore):
        def put_if_absent(self, key, data):
            raise OSError("simulated crash while committing")

    with pytest.raises(OSError):
        Registry(CrashingStore(tmp_path / "home")).register("churn", minimal_bundle(tmp_path / "b1"))
    assert store.list("models/churn/bundles/")  # the bundle was uploaded...
    assert registry.list_versions("churn") == []  # ...but no version is visible
    assert registry.register("churn", minimal_bundle(tmp_path / "b2")).version == 1


def _register_many(home: str, n: int, tag: str, out) -> None:
    registry = Registry(LocalStore(home))
    root = Path(home).parent / f"bundle-{tag}"
    minimal_bundle(root, tag)
    out.put([registry.register("churn", root).version for _ in range(n)])


def test_concurrent_registration_has_no_gaps_or_duplicates(tmp_path):
    home = str(tmp_path / "home")
    queue = multiprocessing.get_context("fork").Queue()
    procs = [
        multiprocessing.get_context("fork").Process(target=_register_many, args=(home, 8, str(i), queue))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    got = sorted(v for _ in procs for v in queue.get(timeout=60))
    for p in procs:
        p.join(timeout=60)
    assert got == list(range(1, 33))
    assert Registry(LocalStore(home)).version_numbers("churn") == list(range(1, 33))


def test_concurrent_registration_on_s3_has_no_gaps(s3_settings, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    roots = [minimal_bundle(tmp_path / f"b{i}", str(i)) for i in range(4)]

    def worker(root):  # each thread its own client, as separate runs would have
        return [Registry(S3Store.from_settings(s3_settings)).register("churn", root).version for _ in range(3)]

    with ThreadPoolExecutor(4) as pool:
        got = sorted(v for vs in pool.map(worker, roots) for v in vs)
    assert got == list(range(1, 13))


def test_stages_promotion_archives_previous(registry, tmp_path):
    registry.register("churn", minimal_bundle(tmp_path / "b1"))
    registry.register("churn", minimal_bundle(tmp_path / "b2"))
    registry.set_stage("churn", 1, "production")
    registry.set_stage("churn", 2, "production", reason="canary passed")
    stages = {r.version: r.stage for r in registry.list_versions("churn")}
    assert stages == {1: "archived", 2: "production"}
    assert registry.production("churn").version == 2
    assert [h["stage"] for h in registry.get("churn", 1).stage_history] == ["staging", "production", "archived"]


def test_approval_flow(registry, tmp_path):
    registry.register("churn", minimal_bundle(tmp_path / "b1"), stage="pending-approval")
    registry.register("churn", minimal_bundle(tmp_path / "b2"), stage="pending-approval")
    assert registry.approve("churn:1").stage == "staging"
    assert registry.reject("churn:2").stage == "rejected"
    with pytest.raises(RegistryError, match="not 'pending-approval'"):
        registry.approve("churn:1")


@pytest.mark.parametrize(
    "ref", ["Churn", "churn:0", "churn:x", "churn@Live", "churn@latest", "churn@a_b", "-churn", ""]
)
def test_bad_references_are_rejected(ref):
    with pytest.raises(RegistryError):
        ModelRef.parse(ref)


def test_unknown_model_and_version(registry, tmp_path):
    with pytest.raises(ModelNotFound):
        registry.resolve("nope")
    registry.register("churn", minimal_bundle(tmp_path / "b1"))
    with pytest.raises(ModelNotFound):
        registry.resolve("churn:7")
    with pytest.raises(ModelNotFound):
        registry.resolve("churn@production")


def test_unreachable_s3_endpoint_gives_a_clear_error():
    from kfloop.errors import StorageError
    from tests.conftest import free_port

    bad = Settings(s3_endpoint=f"127.0.0.1:{free_port()}", s3_access_key="a", s3_secret_key="b")
    with pytest.raises(StorageError, match="cannot reach S3 endpoint"):
        Registry(open_store(bad)).list_versions()


CORRUPTIONS = {
    "checksum mismatch": lambda doc, raw: json.dumps({**doc, "version": 7}).encode(),
    "truncated JSON": lambda doc, raw: raw[: len(raw) // 2],
    "sealed but no record": lambda doc, raw: seal_json({"x": 1}),
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_one_corrupt_version_record_leaves_the_others_readable(registry, tmp_path, corrupt):
    for i in range(3):
        registry.register("churn", minimal_bundle(tmp_path / f"b{i}", str(i)))
    key = "models/churn/versions/000002.json"
    raw = registry.store.get(key)
    registry.store.put(key, CORRUPTIONS[corrupt](json.loads(raw), raw))
    with pytest.raises(ChecksumError, match="churn:2 is unreadable"):
        registry.get("churn", 2)
    unreadable: list = []
    assert [r.version for r in registry.list_versions(unreadable=unreadable)] == [1, 3]
    assert [ref for ref, _ in unreadable] == ["churn:2"]
    assert [r.version for r in registry.list_versions("churn")] == [1, 3]
    assert registry.resolve("churn").version == 3 and registry.get("churn", 1).version == 1


def test_a_corrupt_stage_document_makes_only_its_version_unreadable(registry, tmp_path):
    registry.register("churn", minimal_bundle(tmp_path / "b1", "1"))
    registry.register("churn", minimal_bundle(tmp_path / "b2", "2"))
    registry.store.put("models/churn/stages/000001.json", b"{not json")
    assert [r.version for r in registry.list_versions("churn")] == [2]


def test_verify_names_each_missing_or_changed_bundle_file(registry, tmp_path):
    record = registry.register("churn", minimal_bundle(tmp_path / "b1"))
    assert registry.verify(record) == []
    registry.store.put(f"{record.bundle_key}/{bundle.MODEL_FILE}", b"tampered")
    problems = registry.verify(record)
    assert len(problems) == 1 and problems[0].startswith(f"{bundle.MODEL_FILE}: checksum mismatch (recorded ")
    registry.store.delete(f"{record.bundle_key}/{bundle.MANIFEST}")
    assert registry.verify(record)[1] == f"{bundle.MANIFEST}: missing from {record.bundle_uri}"
