"""Registry aliases: named pointers beside stages, NAME@ALIAS references, the stage history, and
atomic moves under threads and processes on a local folder and threads on S3 (moto)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor

import pytest

from kfloop.errors import ModelNotFound, RegistryError
from kfloop.names import model_alias_key
from kfloop.store.objects import LocalStore, S3Store, open_store
from kfloop.store.registry import STAGES, ModelRef, Registry
from tests.fakes.bundles import minimal_bundle as make_bundle


@pytest.fixture(params=["local", "s3"])
def registry(request, tmp_path) -> Registry:
    if request.param == "local":
        return Registry(LocalStore(tmp_path / "home"))
    return Registry(open_store(request.getfixturevalue("s3_settings")))


@pytest.fixture
def three(registry, tmp_path) -> Registry:
    for i in range(3):
        registry.register("churn", make_bundle(tmp_path / f"b{i}", str(i)))
    return registry


def test_set_resolve_move_and_delete(three):
    assert three.set_alias("churn:1", "champion").aliases == ("champion",)
    three.set_alias("churn:2", "challenger", reason="best offline auc")
    assert three.aliases("churn") == {"challenger": 2, "champion": 1}
    assert three.resolve("churn@champion").version == 1
    assert three.resolve(ModelRef.parse("churn@challenger")).version == 2
    three.set_alias("churn@challenger", "champion")  # any reference names the version
    assert three.resolve("churn@champion").version == 2
    assert three.get("churn", 1).aliases == () and three.get("churn", 2).aliases == ("challenger", "champion")
    assert three.delete_alias("churn", "challenger") == 2
    assert three.aliases("churn") == {"champion": 2}
    with pytest.raises(ModelNotFound, match="no alias 'challenger'.*champion -> 2"):
        three.resolve("churn@challenger")
    three.set_alias("churn:3", "challenger")  # a deleted alias can be set again
    assert three.resolve("churn@challenger").version == 3
    assert [r.aliases for r in three.list_versions("churn")] == [(), ("champion",), ("challenger",)]


def test_alias_moves_are_in_the_stage_history_of_the_versions_they_touch(three):
    three.set_alias("churn:1", "champion", reason="first good model")
    three.set_stage("churn", 1, "production")
    three.set_alias("churn:2", "champion", reason="retrained")
    three.delete_alias("churn", "champion", reason="incident")
    v1 = three.get("churn", 1).stage_history
    assert [(h.get("stage"), h.get("alias"), h.get("action")) for h in v1] == [
        ("staging", None, None),
        (None, "champion", "set"),
        ("production", None, None),
        (None, "champion", "moved to version 2"),
    ]
    assert v1[1]["reason"] == "first good model"
    v2 = [(h.get("alias"), h.get("action"), h["reason"]) for h in three.get("churn", 2).stage_history if "alias" in h]
    assert v2 == [("champion", "moved from version 1", "retrained"), ("champion", "deleted", "incident")]
    assert three.get("churn", 1).stage == "production"  # aliases leave stages alone


@pytest.mark.parametrize("alias", [*STAGES, "latest"])
def test_aliases_named_like_stages_are_refused(three, alias):
    with pytest.raises(RegistryError, match="reserved"):
        three.set_alias("churn:1", alias)
    if alias == "latest":  # NAME:latest is the latest version; NAME@latest is nothing
        with pytest.raises(RegistryError, match="neither a stage nor a valid alias"):
            ModelRef.parse("churn@latest")
    else:  # NAME@X with X a stage is always the stage
        assert ModelRef.parse(f"churn@{alias}") == ModelRef("churn", stage=alias)


@pytest.mark.parametrize("alias", ["Champion", "a_b", "-x", "", "x" * 41, "a/b", ".."])
def test_invalid_alias_names_are_refused_and_write_nothing(three, alias):
    before = three.store.list("models/churn/aliases/")
    with pytest.raises(RegistryError, match="not valid"):
        three.set_alias("churn:1", alias)
    assert three.store.list("models/churn/aliases/") == before


def test_errors_leave_the_registry_as_it_was(three):
    three.set_alias("churn:1", "champion")
    before = three.store.list("models/")
    with pytest.raises(ModelNotFound, match="no version 9"):
        three.set_alias("churn:9", "champion")
    with pytest.raises(ModelNotFound, match="no alias 'nope'.*champion -> 1"):
        three.delete_alias("churn", "nope")
    with pytest.raises(ModelNotFound, match="has no registered versions"):
        three.set_alias("other", "champion")
    with pytest.raises(ModelNotFound, match="has no aliases"):
        three.resolve("other@champion")
    assert three.store.list("models/") == before
    assert three.aliases("churn") == {"champion": 1}


def _check_log(registry: Registry, moves: int) -> None:
    """Numbered without gaps, each move's ``previous`` the one before's version, the head is the alias."""
    history = registry.alias_history("churn", "champion")
    assert len(history) == moves
    previous = None
    for move in history:
        assert move["previous"] == previous
        previous = move["version"]
    assert registry.aliases("churn")["champion"] == previous
    assert registry.store.exists(model_alias_key("churn", "champion", moves))


def _move_many(home: str, version: int, n: int) -> None:
    registry = Registry(LocalStore(home))
    for _ in range(n):
        registry.set_alias(f"churn:{version}", "champion")


def test_concurrent_moves_in_threads_lose_nothing(tmp_path):
    registry = Registry(LocalStore(tmp_path / "home"))
    for i in range(3):
        registry.register("churn", make_bundle(tmp_path / f"b{i}", str(i)))
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: _move_many(str(tmp_path / "home"), i % 3 + 1, 5), range(6)))
    _check_log(registry, 30)


@pytest.mark.processes
def test_concurrent_moves_in_processes_lose_nothing(tmp_path):
    home = tmp_path / "home"
    registry = Registry(LocalStore(home))
    for i in range(3):
        registry.register("churn", make_bundle(tmp_path / f"b{i}", str(i)))
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_move_many, args=(str(home), i % 3 + 1, 6)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * 4
    _check_log(registry, 24)


def test_concurrent_moves_on_s3_lose_nothing(s3_settings, tmp_path):
    registry = Registry(open_store(s3_settings))
    for i in range(3):
        registry.register("churn", make_bundle(tmp_path / f"b{i}", str(i)))

    def worker(i):  # each thread its own client, as separate processes would have
        own = Registry(S3Store.from_settings(s3_settings))
        for _ in range(3):
            own.set_alias(f"churn:{i % 3 + 1}", "champion")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, range(4)))
    _check_log(registry, 12)
