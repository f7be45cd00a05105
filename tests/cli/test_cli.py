"""The ``kfloop`` command line: help for every command, registry commands against a real local
store, and bad input giving one ``error:`` line, exit status 1 and an unchanged store.

No pipeline is run here (tests/pipelines does that); commands that would run one are guarded."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kfloop import __version__
from kfloop.cli.main import main
from kfloop.store.objects import LocalStore
from kfloop.store.registry import Registry
from tests.cli.conftest import COMMANDS
from tests.fakes.bundles import make_bundle

pytestmark = pytest.mark.processes  # starts servers / CLI processes on 127.0.0.1


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """KFLOOP_HOME for in-process and subprocess runs; no S3 settings leak in from the environment."""
    for name in [n for n in os.environ if n.startswith("KFLOOP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KFLOOP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def registry(home) -> Registry:
    return Registry(LocalStore(home))


def register(registry: Registry, tmp_path: Path, name: str, auc: float, **kwargs):
    return registry.register(name, make_bundle(tmp_path / f"bundle-{name}-{auc}", auc), **kwargs)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def cli_process(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kfloop.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


def snapshot(root: Path) -> dict[str, str]:
    """Every file below ``root`` with its content hash."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# -- entry point and help -------------------------------------------------------------------------


def test_every_expected_command_exists():
    assert set(COMMANDS) == {
        (),
        ("demo",),
        ("pipeline",),
        ("registry",),
        ("report",),
        ("serve",),
        ("rollout",),
        ("pipeline", "compile"),
        ("pipeline", "run"),
        ("pipeline", "submit"),
        ("pipeline", "schedule"),
        ("pipeline", "schedule", "list"),
        ("pipeline", "schedule", "delete"),
        ("registry", "list"),
        ("registry", "show"),
        ("registry", "approve"),
        ("registry", "reject"),
        ("registry", "alias"),
        ("registry", "alias", "set"),
        ("registry", "alias", "delete"),
        ("rollout", "deploy"),
        ("rollout", "promote"),
        ("rollout", "rollback"),
        ("rollout", "status"),
        ("rollout", "shadow"),
        ("rollout", "analyze"),
        ("batch",),
        ("batch", "compile"),
        ("batch", "run"),
        ("batch", "submit"),
        ("monitor",),
        ("monitor", "compile"),
        ("monitor", "run"),
        ("monitor", "submit"),
        ("monitor", "schedule"),
        ("monitor", "schedule", "list"),
        ("monitor", "schedule", "delete"),
    }


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "kfloop")
def test_help_exits_0_and_documents_every_flag(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {' '.join(('kfloop',) + path)}")
    for action in COMMANDS[path]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):  # each subcommand listed with a line of help
            for choice in action._choices_actions:
                assert choice.help and f"{choice.dest} {choice.help}" in " ".join(text.split())
            continue
        assert action.help, f"{action.option_strings or action.dest} of '{' '.join(path)}' has no help text"
        for flag in action.option_strings or [action.metavar or action.dest]:
            assert flag in text, f"{flag} missing from the help of '{' '.join(path)}'"


def test_submit_help_documents_its_flags(capsys):
    with pytest.raises(SystemExit):
        main(["pipeline", "submit", "--help"])
    text = capsys.readouterr().out
    for flag in ("--host", "--experiment", "--wait", "--timeout", "--poll-seconds", "--param", "--namespace"):
        assert flag in text


def test_module_entry_point_runs_as_a_process(home):
    proc = cli_process("--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, f"kfloop {__version__}")
    proc = cli_process("registry", "list")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "no registered versions\n", "")


def test_no_command_prints_help_and_exits_2(home, capsys):
    code, out, _ = cli(capsys)
    assert code == 2 and out.startswith("usage: kfloop") and "registry" in out and "pipeline" in out
    proc = cli_process()
    assert proc.returncode == 2 and proc.stdout.startswith("usage: kfloop")


@pytest.mark.parametrize("group", ["registry", "pipeline"])
def test_group_without_subcommand_prints_its_own_help(group, home, capsys):
    code, out, _ = cli(capsys, group)
    assert code == 2 and out.startswith(f"usage: kfloop {group}")


# -- registry commands ----------------------------------------------------------------------------


def test_list_empty(home, capsys):
    assert cli(capsys, "registry", "list") == (0, "no registered versions\n", "")
    code, out, _ = cli(capsys, "registry", "list", "--json")
    assert code == 0 and json.loads(out) == []
    assert not home.exists()  # reading does not create state


def test_list_shows_every_version_with_stage_and_primary_metric(registry, tmp_path, capsys):
    register(registry, tmp_path, "churn", 0.81)
    register(registry, tmp_path, "churn", 0.87, stage="pending-approval")
    register(registry, tmp_path, "fraud", 0.93)
    code, out, err = cli(capsys, "registry", "list")
    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split() == ["MODEL", "VERSION", "STAGE", "METRIC", "CREATED", "ALIASES"]
    assert [r.split()[:4] for r in rows] == [
        ["churn", "1", "staging", "auc=0.8100"],
        ["churn", "2", "pending-approval", "auc=0.8700"],
        ["fraud", "1", "staging", "auc=0.9300"],
    ]
    code, out, _ = cli(capsys, "registry", "list", "--model", "fraud")
    assert [r.split()[0] for r in out.splitlines()[1:]] == ["fraud"]


def test_list_json(registry, tmp_path, capsys):
    register(registry, tmp_path, "churn", 0.81, lineage={"run_id": "r-1"})
    register(registry, tmp_path, "churn", 0.87)
    code, out, _ = cli(capsys, "registry", "list", "--json")
    docs = json.loads(out)
    assert code == 0
    assert [(d["name"], d["version"], d["stage"]) for d in docs] == [("churn", 1, "staging"), ("churn", 2, "staging")]
    assert docs[0]["lineage"] == {"run_id": "r-1"} and docs[1]["metrics"]["metrics"]["auc"] == 0.87


@pytest.mark.parametrize("ref, version", [("churn:1", 1), ("churn:latest", 2), ("churn@production", 1)])
def test_show_json_has_schema_version_stage_metrics_lineage(registry, tmp_path, capsys, ref, version):
    register(registry, tmp_path, "churn", 0.81, lineage={"run_id": "r-1", "source": "sample:churn"})
    register(registry, tmp_path, "churn", 0.87, lineage={"run_id": "r-2"})
    registry.set_stage("churn", 1, "production")
    code, out, err = cli(capsys, "registry", "show", ref, "--json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["schema"]["target"] == "churn"
    assert doc["schema"]["features"] == [
        {"name": "tenure", "kind": "numeric"},
        {"name": "plan", "kind": "categorical", "categories": ["basic", "premium"]},
    ]
    assert doc["version"] == version and doc["name"] == "churn"
    assert doc["stage"] == ("production" if version == 1 else "staging")
    assert doc["metrics"]["metrics"]["auc"] == (0.81 if version == 1 else 0.87)
    assert doc["lineage"]["run_id"] == f"r-{version}"


def test_show_text(registry, tmp_path, capsys):
    register(registry, tmp_path, "churn", 0.81, lineage={"run_id": "r-1"})
    code, out, _ = cli(capsys, "registry", "show", "churn:1")
    assert code == 0
    assert out.startswith("churn:1  stage=staging")
    assert "target: churn" in out and "auc=0.8100" in out and "r-1" in out
    assert any(line.split()[:2] == ["plan", "categorical"] and "premium" in line for line in out.splitlines())


def corrupt_version_record(registry: Registry, name: str, version: int) -> None:
    key = f"models/{name}/versions/{version:06d}.json"
    registry.store.put(key, registry.store.get(key).replace(b'"staging"', b'"production"'))


def test_list_names_a_corrupt_version_and_lists_the_others(registry, tmp_path, capsys):
    for auc in (0.81, 0.83, 0.87):
        register(registry, tmp_path, "churn", auc)
    corrupt_version_record(registry, "churn", 2)
    code, out, err = cli(capsys, "registry", "list")
    assert code == 1
    assert [r.split()[:2] for r in out.splitlines()[1:]] == [["churn", "1"], ["churn", "3"]]
    assert err.startswith("error: churn:2 is unreadable: ") and "checksum mismatch" in err and err.count("\n") == 1
    code, out, err = cli(capsys, "registry", "list", "--json")
    assert code == 1 and [d["version"] for d in json.loads(out)] == [1, 3]
    assert cli(capsys, "registry", "show", "churn:3")[0] == 0
    code, out, err = cli(capsys, "registry", "show", "churn:2")
    assert code == 1 and err.startswith("error: churn:2 is unreadable")


def test_show_verify_checks_every_bundle_file(registry, tmp_path, capsys):
    record = register(registry, tmp_path, "churn", 0.81)
    code, out, err = cli(capsys, "registry", "show", "churn:1", "--verify")
    assert (code, err) == (0, "") and out.splitlines()[
        -1
    ] == f"verified: {len(record.files)} files match their SHA-256 in the version record"
    code, out, err = cli(capsys, "registry", "show", "churn:1", "--verify", "--json")
    assert (code, err) == (0, "") and json.loads(out)["version"] == 1
    changed = sorted(record.files)[0]
    registry.store.put(f"{record.bundle_key}/{changed}", b"flipped bits")
    code, out, err = cli(capsys, "registry", "show", "churn:1", "--verify")
    assert code == 1 and "verified" not in out
    assert err.startswith(f"error: churn:1: {changed}: checksum mismatch (recorded ") and err.count("\n") == 1


def test_approve_and_reject(registry, tmp_path, capsys):
    register(registry, tmp_path, "churn", 0.81, stage="pending-approval")
    register(registry, tmp_path, "churn", 0.87, stage="pending-approval")
    assert cli(capsys, "registry", "approve", "churn:1") == (0, "churn:1 approved: now staging\n", "")
    assert cli(capsys, "registry", "reject", "churn:2", "--reason", "bias on age") == (0, "churn:2 rejected\n", "")
    assert [(r.version, r.stage) for r in registry.list_versions("churn")] == [(1, "staging"), (2, "rejected")]
    assert registry.get("churn", 2).stage_history[-1]["reason"] == "bias on age"
    assert registry.get("churn", 1).stage_history[-1]["reason"] == "approved"


def test_alias_set_move_show_list_and_delete(registry, tmp_path, capsys):
    register(registry, tmp_path, "churn", 0.81)
    register(registry, tmp_path, "churn", 0.87)
    registry.set_stage("churn", 1, "production")
    assert cli(capsys, "registry", "alias", "set", "churn@production", "champion") == (
        0,
        "churn@champion -> churn:1\n",
        "",
    )
    assert cli(capsys, "registry", "alias", "set", "churn:2", "challenger", "--reason", "ab test")[0] == 0
    code, out, _ = cli(capsys, "registry", "list")
    assert [(r.split()[1], r.split()[-1]) for r in out.splitlines()[1:]] == [("1", "champion"), ("2", "challenger")]
    code, out, _ = cli(capsys, "registry", "show", "churn@challenger")
    assert code == 0 and out.startswith("churn:2  stage=staging  aliases=challenger")
    assert cli(capsys, "registry", "alias", "set", "churn@challenger", "champion")[1] == "churn@champion -> churn:2\n"
    code, out, _ = cli(capsys, "registry", "show", "churn@champion", "--json")
    doc = json.loads(out)
    assert doc["version"] == 2 and doc["aliases"] == ["challenger", "champion"]
    assert [h["action"] for h in doc["stage_history"] if h.get("alias") == "champion"] == ["moved from version 1"]
    assert cli(capsys, "registry", "alias", "delete", "churn", "challenger") == (
        0,
        "churn@challenger deleted (it pointed at churn:2)\n",
        "",
    )
    assert registry.aliases("churn") == {"champion": 2}


def test_reject_without_reason_records_a_default(registry, tmp_path, capsys):
    register(registry, tmp_path, "churn", 0.81, stage="pending-approval")
    assert cli(capsys, "registry", "reject", "churn:1")[0] == 0
    assert registry.get("churn", 1).stage_history[-1]["reason"] == "rejected by reviewer"


def test_home_flag_overrides_the_environment(registry, tmp_path, capsys, monkeypatch):
    register(registry, tmp_path, "churn", 0.81)
    monkeypatch.setenv("KFLOOP_HOME", str(tmp_path / "elsewhere"))
    assert cli(capsys, "registry", "list")[1] == "no registered versions\n"
    code, out, _ = cli(capsys, "--home", str(registry.store.root), "registry", "list", "--json")
    assert [d["version"] for d in json.loads(out)] == [1]


# -- bad input ------------------------------------------------------------------------------------

BAD_INPUTS = {
    "unknown model": (["registry", "show", "nope"], "'nope'"),
    "unknown version": (["registry", "show", "churn:7"], "no version 7"),
    "bad reference": (["registry", "show", "Churn:x"], "'Churn:x'"),
    "bad stage": (["registry", "show", "churn@Live"], "'Live' is neither a stage nor a valid alias"),
    "approve a staging version": (["registry", "approve", "churn:2"], "not 'pending-approval'"),
    "approve twice": (
        [
            "registry",
            "approve",
            "churn:1",
        ],
        "not 'pending-approval'",
    ),
    "reject unknown model": (["registry", "reject", "nope:1"], "'nope'"),
    "unknown alias": (["registry", "show", "churn@champion"], "no alias 'champion'"),
    "alias named like a stage": (["registry", "alias", "set", "churn:1", "production"], "'production' is reserved"),
    "invalid alias": (["registry", "alias", "set", "churn:1", "Champ_1"], "alias 'Champ_1' is not valid"),
    "alias of an unknown version": (["registry", "alias", "set", "churn:9", "champion"], "no version 9"),
    "delete an unknown alias": (["registry", "alias", "delete", "churn", "champion"], "no alias 'champion'"),
    "alias of an invalid model": (["registry", "alias", "delete", "../x", "champion"], "'../x' is not valid"),
    "unknown parameter": (["pipeline", "run", "--param", "foo=1"], "'foo' is not a pipeline parameter"),
    "parameter of the wrong type": (["pipeline", "run", "--param", "seed=x"], "seed='x'"),
    "bad boolean": (["pipeline", "run", "--param", "require_approval=maybe"], "require_approval='maybe'"),
    "parameter without =": (["pipeline", "run", "--param", "seed"], "expected key=value"),
    "negative gate threshold": (["pipeline", "run", "--param", "threshold=-0.5"], "gate threshold -0.5 must be >= 0"),
    "invalid model name": (["pipeline", "run", "--model-name", "../churn"], "'../churn' is not valid"),
    "invalid model name parameter": (["pipeline", "run", "--param", "model_name=Churn X"], "'Churn X' is not valid"),
    "submit an invalid model name": (
        ["pipeline", "submit", "--host", "http://127.0.0.1:9", "--model-name", "a/b"],
        "'a/b' is not valid",
    ),
    "missing pipeline YAML": (
        ["pipeline", "run", "--pipeline", "/nonexistent/training.yaml"],
        "/nonexistent/training.yaml not found",
    ),
    "submit with an unknown parameter": (
        ["pipeline", "submit", "--host", "http://127.0.0.1:9", "--param", "x=1"],
        "'x' is not a pipeline parameter",
    ),
}


@pytest.fixture
def populated(registry, tmp_path) -> Registry:
    """churn:1 approved from pending-approval, churn:2 staging: bad commands must change neither."""
    register(registry, tmp_path, "churn", 0.81, stage="pending-approval")
    register(registry, tmp_path, "churn", 0.87)
    registry.approve("churn:1")
    return registry


@pytest.fixture
def no_pipeline_runs(monkeypatch):
    """Fail loudly instead of running or submitting a pipeline if validation let bad input through."""
    import kfloop.pipelines.run_local
    import kfloop.pipelines.submit

    def refuse(*args, **kwargs):
        raise AssertionError("bad input reached the pipeline runner")

    monkeypatch.setattr(kfloop.pipelines.run_local, "run_local", refuse)
    monkeypatch.setattr(kfloop.pipelines.submit, "submit_run", refuse)


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_error_line_exit_1_and_leaves_the_store_unchanged(
    case, populated, capsys, no_pipeline_runs
):
    args, detail = BAD_INPUTS[case]
    before = snapshot(populated.store.root)
    code, out, err = cli(capsys, *args)
    assert code == 1
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert detail in err
    assert snapshot(populated.store.root) == before


@pytest.mark.parametrize("args", [["registry", "show", "Churn:x"], ["pipeline", "run", "--param", "seed=x"]])
def test_bad_input_in_a_real_process_has_no_traceback(args, populated):
    before = snapshot(populated.store.root)
    proc = cli_process(*args)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert snapshot(populated.store.root) == before


def test_usage_error_exits_2(home, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["registry", "show"])  # missing the reference
    assert exit_.value.code == 2
    assert "the following arguments are required: ref" in capsys.readouterr().err
