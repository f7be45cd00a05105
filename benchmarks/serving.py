"""Benchmark: the kfloop predictor and drift transformer against KServe's stock xgbserver and MLServer.

    python benchmarks/serving.py            # 20 s per case (about 15 minutes in all)
    python benchmarks/serving.py --quick    # 3 s per case, a smoke run
    python benchmarks/serving.py --only pred-n30,tr-n30,xgb-n30,pt-n30 --seconds 8   # the issue 13 lines

One run builds two bundles with default training parameters and a drift baseline (scipy backend unless
``--drift-backend alibi``): churn (``sample:churn``, 5 numeric and 3 categorical features) and numeric30 (30
numeric features, synthetic), starts the servers on 127.0.0.1 with one worker each, and loads them one case
at a time with ``wrk`` (a separate process, Lua script for the POST body): 1-row requests at concurrency 1
and 16, 100-row requests at concurrency 8. Servers:

- the kfloop predictor, sent what users send: V1 objects keyed by feature name, V2 one named input per
  feature (FP64 numbers, BYTES category strings); and the same booster with every feature declared
  numeric, sent the encoded FP32 ``[n, 8]`` tensor (the like-for-like line with MLServer; the real
  bundle refuses a single tensor since it has categorical features); on numeric30, V1 lists;
- the kfloop drift transformer in front of the predictor (validation, capture to a temp KFLOOP_HOME,
  drift detection on, in its monitor process; V1 forwarded to the predictor on V1, V2 on V2); on numeric30
  also with ``--monitor_process false`` (``tr-n30-ip``: capture and drift checks in the transformer's process);
- KServe's stock xgbserver v0.20.0 (``../shared/peers``, with kserve-storage==0.20.0; skipped with the
  reason where absent) with its default flags, bare and behind a pass-through KServe transformer
  (``passthrough_transformer.py``), sent V1 lists: numeric30's rows, churn's encoded rows (the booster
  without feature names, as the register step writes the stock booster; its categorical splits read the
  category codes);
- MLServer 1.7.1 with mlserver-xgboost (V2 only; one FP32 tensor, so it gets the encoded matrix), in its
  default configuration, with parallel_workers=0, and tuned (parallel_workers=0, no access log, one
  XGBoost thread per call). It does not install beside kserve, so it runs from its own venv
  (``--mlserver-venv``, created on first use).

Cases run shape by shape (all servers for one shape, then the next), so a change in machine load
hits every server alike; each case reports the CPU our servers used and the CPU other processes on
the machine used meanwhile, and for the drift transformers the drift coverage (rows queued for drift
checks / rows served, from the transformer's counters). Then the in-process floor
(``booster.inplace_predict``), issue 13's table per model (kfloop / xgbserver, bare and behind the
pass-through transformer, p99 ratios, CPU per request of each path, coverage; its goals marked on
numeric30) and the MLServer targets, as ratios measured in this run, with PASS/FAIL.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

MODEL = "churn"
NUMERIC_MODEL = "numeric30"  # an all-numeric model: 30 numeric features, the like-for-like case
NUMERIC_FEATURES = 30
PEER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "kserve-xgbserver-v0.20.0"  # ../shared/peers
PASSTHROUGH = Path(__file__).resolve().parent / "passthrough_transformer.py"
SHAPES = ((1, 1), (1, 16), (100, 8))  # (rows per request, concurrency)
# bodies per request size, sent in turn (different test rows): a drift window (500 rows) of one-row
# requests holds 500 different rows (of 200 rows repeated, every window drifted and wrote an event)
DISTINCT_BODIES = {1: 1000, 100: 10}
MLSERVER_PACKAGES = ("mlserver==1.7.1", "mlserver-xgboost==1.7.1", "uvloop<0.22")
DEFAULT_VENV = Path(__file__).resolve().parent / ".venv-mlserver"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the model ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Models:
    """The bundle, its all-numeric twin, MLServer's model repository, and test rows to send."""

    bundle: Path
    numeric_bundle: Path
    mlserver_repo: Path
    booster_dir: Path  # model.ubj alone, for KServe's xgbserver (sent the encoded rows as V1 lists)
    booster: object
    names: list[str]
    categorical: set[str]
    rows: list[dict]  # raw test rows (feature name -> JSON value)
    X: np.ndarray  # the same rows encoded (float32)


def build_models(root: Path, n_rows: int, drift_backend: str = "alibi") -> Models:
    """Train on ``sample:churn`` with default parameters, fit the drift baseline, write the bundles."""
    import pandas as pd
    import xgboost

    from kfloop.store.bundle import MODEL_FILE, SCHEMA_FILE, load_schema, write_manifest

    data, bundle = root / "data", root / "bundle"
    _pipeline_steps(f"sample:churn?n_rows={n_rows}", "churn", root, data, bundle, drift_backend)
    schema = load_schema(bundle)
    numeric = _numeric_twin(bundle, root / "numeric-bundle", schema, MODEL_FILE, SCHEMA_FILE)
    write_manifest(numeric)
    repo = _mlserver_repo(root / "mlserver-models", bundle / MODEL_FILE)
    booster = xgboost.Booster(model_file=str(bundle / MODEL_FILE))
    booster.set_param({"nthread": 1})  # as the predictor serves it
    needed = max(rows * count for rows, count in DISTINCT_BODIES.items())
    test = _enough(pd.read_parquet(data / "test.parquet").drop(columns=["churn"]), needed, n_rows)
    rows = json.loads(test.to_json(orient="records"))
    return Models(
        bundle,
        numeric,
        repo,
        _booster_dir(root / "booster", bundle / MODEL_FILE),
        booster,
        schema.names,
        {f.name for f in schema.features if f.kind == "categorical"},
        rows,
        schema.encode_frame(test),
    )


def _pipeline_steps(source: str, target: str, root: Path, data: Path, bundle: Path, drift_backend: str) -> None:
    """The training pipeline's steps on ``source``: process into ``data``, train into ``bundle``, fit the drift
    baseline as the baseline step does (the prediction baseline on the held-out split), write the manifest."""
    from kfloop.config import Settings
    from kfloop.steps.baseline import fit_drift_baseline
    from kfloop.steps.process import process
    from kfloop.steps.train import train_model
    from kfloop.store.bundle import write_manifest

    process(
        source,
        target,
        Settings(home=root / "home-build"),
        data / "train.parquet",
        data / "valid.parquet",
        data / "test.parquet",
        data / "schema.json",
        data / "quality.md",
    )
    train_model(str(data / "train.parquet"), str(data / "valid.parquet"), str(data / "schema.json"), {}, str(bundle))
    fit_drift_baseline(
        str(bundle),
        str(data / "train.parquet"),
        str(bundle / "drift"),
        backend=drift_backend,
        valid_path=str(data / "valid.parquet"),
    )
    write_manifest(bundle)


def _enough(test, needed: int, n_rows: int):
    """The first ``needed`` test rows; SystemExit when the test split is smaller."""
    if len(test) < needed:
        raise SystemExit(f"--rows {n_rows}: the test split has {len(test)} rows, the request bodies need {needed}")
    return test.head(needed)


def _numeric_twin(bundle: Path, out: Path, schema, model_file: str, schema_file: str) -> Path:
    """The same ``model.ubj`` with every feature declared numeric: it takes the encoded matrix as one tensor
    (category codes as numbers, which the booster's categorical splits read as they read the real bundle's)."""
    out.mkdir(parents=True)
    shutil.copy(bundle / model_file, out / model_file)
    doc = schema.to_dict()
    doc["features"] = [{"name": f["name"], "kind": "numeric"} for f in doc["features"]]
    (out / schema_file).write_text(json.dumps(doc))
    return out


def _mlserver_repo(root: Path, model_file: Path) -> Path:
    """A model repository with the same booster for MLServer's XGBoost runtime."""
    folder = root / MODEL
    folder.mkdir(parents=True)
    shutil.copy(model_file, folder / "model.ubj")
    settings = {
        "name": MODEL,
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": "./model.ubj", "version": "1"},
    }
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return root


@dataclasses.dataclass
class NumericModel:
    """The all-numeric bundle, its booster alone in a folder (as KServe's xgbserver loads it), test rows."""

    bundle: Path
    booster_dir: Path
    booster: object
    X: np.ndarray  # test rows (float32), sent as V1 lists


def build_numeric_model(root: Path, n_rows: int, drift_backend: str) -> NumericModel:
    """A binary model on ``NUMERIC_FEATURES`` numeric features (synthetic: a noisy logistic of some of them,
    with interactions), trained and baselined as the pipeline does."""
    import pandas as pd
    import xgboost

    from kfloop.store.bundle import MODEL_FILE

    rng = np.random.default_rng(7)
    X = rng.normal(0.0, 1.0, (n_rows, NUMERIC_FEATURES)).round(4)
    logit = X[:, :10] @ rng.normal(0, 1, 10) + X[:, 10] * X[:, 11] - np.abs(X[:, 12]) + rng.logistic(0, 1, n_rows)
    frame = pd.DataFrame(X, columns=[f"x{i:02d}" for i in range(NUMERIC_FEATURES)])
    frame["label"] = (logit > 0).astype(int)
    data, bundle = root / "numeric-data", root / "numeric30-bundle"
    data.mkdir()
    frame.to_parquet(data / "all.parquet")
    _pipeline_steps(str(data / "all.parquet"), "label", root, data, bundle, drift_backend)
    booster_dir = _booster_dir(root / "numeric30-booster", bundle / MODEL_FILE)
    booster = xgboost.Booster(model_file=str(bundle / MODEL_FILE))
    booster.set_param({"nthread": 1})
    needed = max(rows * count for rows, count in DISTINCT_BODIES.items())
    test = _enough(pd.read_parquet(data / "test.parquet").drop(columns=["label"]), needed, n_rows)
    return NumericModel(bundle, booster_dir, booster, test.to_numpy(dtype=np.float32))


def _booster_dir(root: Path, model_file: Path) -> Path:
    """A folder holding only ``model_file`` without feature names and types, as the register step writes the
    stock-runtime booster (``kfloop.steps.register``): KServe's xgbserver predicts from plain lists. For churn
    that booster still has its categorical splits, which read the category codes of the encoded rows."""
    import xgboost

    root.mkdir()
    booster = xgboost.Booster(model_file=str(model_file))
    booster.feature_names, booster.feature_types = None, None
    booster.save_model(str(root / model_file.name))
    return root


# -- request bodies -------------------------------------------------------------------------------


def write_bodies(models: Models, numeric: NumericModel | None, folder: Path) -> dict[tuple[str, int], list[Path]]:
    """JSON bodies by (format, rows), each a list of bodies on different test rows: ``v1`` objects,
    ``v2`` named inputs, ``fp32`` one encoded tensor, ``enc`` the encoded rows as V1 lists (the same churn
    rows in every format); ``n30`` V1 lists of the all-numeric model's test rows."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[tuple[str, int], list[Path]] = {}
    for n, count in DISTINCT_BODIES.items():
        for i in range(count):
            part = slice(i * n, (i + 1) * n)
            bodies = _bodies(models, part)
            if numeric is not None:
                bodies["n30"] = {"instances": _shortest(numeric.X[part])}
            for kind, body in bodies.items():
                path = folder / f"{kind}-{n}-{i}.json"
                path.write_text(json.dumps(body, separators=(",", ":")))
                paths.setdefault((kind, n), []).append(path)
    return paths


def _bodies(models: Models, part: slice) -> dict[str, dict]:
    rows, X = models.rows[part], models.X[part]
    n = len(rows)
    v2 = [
        {
            "name": name,
            "shape": [n],
            "datatype": "BYTES" if name in models.categorical else "FP64",
            "data": [r[name] for r in rows],
        }
        for name in models.names
    ]
    fp32 = [{"name": "input-0", "shape": [n, X.shape[1]], "datatype": "FP32", "data": sum(_shortest(X), [])}]
    return {
        "v1": {"instances": rows},
        "v2": {"inputs": v2},
        "fp32": {"inputs": fp32},
        "enc": {"instances": _shortest(X)},
    }


def _shortest(X: np.ndarray) -> list[list[float]]:
    """float32 rows as lists of numbers in float32's shortest decimal form."""
    return [[float(str(v)) for v in row] for row in X]


# -- servers --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process in its own process group (stopped as a group: no orphaned workers)."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        port: int,
        logs: Path,
        env: dict | None = None,
        cwd: Path | None = None,
        model: str = MODEL,
    ):
        self.name, self.port, self.url, self.model = name, port, f"http://127.0.0.1:{port}", model
        self.log_path = logs / f"{name}.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/models/{self.model}/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} on {self.url} not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the group, SIGKILL to whatever is left after ``timeout``."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop in {timeout:.0f}s: killing it")
        _signal_group(self.proc.pid, signal.SIGKILL)  # the leader's children, if any outlived it
        self.proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def kfloop_server(
    name: str, module: str, logs: Path, *args: str, env: dict | None = None, model: str = MODEL
) -> Server:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        f"kfloop.serving.model_servers.{module}",
        "--model_name",
        model,
        "--http_port",
        str(port),
        "--enable_grpc",
        "false",
        *args,
    ]
    return Server(name, cmd, port, logs, env, model=model)


def xgbserver(name: str, model: str, booster_dir: Path, logs: Path) -> Server:
    """KServe's stock xgbserver v0.20.0 (``../shared/peers``) with its default flags (gRPC off: one
    fixed gRPC port per machine otherwise; the HTTP path is the same)."""
    port = free_port()
    cmd = [sys.executable, "-m", "xgbserver", "--model_name", model, "--model_dir", str(booster_dir)]
    cmd += ["--http_port", str(port), "--enable_grpc", "false"]
    return Server(name, cmd, port, logs, {"PYTHONPATH": str(PEER)}, model=model)


def passthrough(name: str, model: str, predictor: Server, logs: Path) -> Server:
    """The pass-through KServe transformer (``passthrough_transformer.py``) in front of ``predictor``."""
    port = free_port()
    cmd = [sys.executable, str(PASSTHROUGH), "--model_name", model, "--http_port", str(port), "--enable_grpc"]
    cmd += ["false", "--predictor_host", f"127.0.0.1:{predictor.port}", "--predictor_protocol", "v1"]
    return Server(name, cmd, port, logs, model=model)


def peer_missing() -> str | None:
    """Why KServe's xgbserver cannot run here, or None."""
    if not (PEER / "xgbserver").is_dir():
        return f"KServe's xgbserver v0.20.0 is not at {PEER} (../shared/peers)"
    import importlib.util

    if importlib.util.find_spec("kserve_storage") is None:
        return "KServe's xgbserver needs kserve-storage==0.20.0 (pip install kserve-storage==0.20.0)"
    return None


def mlserver(name: str, venv: Path, repo: Path, logs: Path, settings: dict, env: dict) -> Server:
    """``mlserver start`` on a copy of the repository with a ``settings.json`` (ports, ``settings``)."""
    folder = logs / name
    shutil.copytree(repo, folder)
    port = free_port()
    doc = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), **settings}
    (folder / "settings.json").write_text(json.dumps(doc))
    return Server(name, [str(venv / "bin" / "mlserver"), "start", str(folder)], port, logs, env, cwd=folder)


def ensure_mlserver_venv(venv: Path) -> Path:
    """The venv with MLServer, created (``python -m venv`` + pip) if it has no working ``mlserver``."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import mlserver, mlserver_xgboost; print(mlserver.__version__)"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return venv
    log(f"creating the MLServer venv in {venv} (pip install {' '.join(MLSERVER_PACKAGES)})")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *MLSERVER_PACKAGES], check=True)
    subprocess.run(check, check=True, capture_output=True)
    return venv


# -- targets: what each line of the table measures ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    key: str
    server: str
    path: str
    protocol: str
    body: str  # which body kind
    url_path: str
    model: str = MODEL  # which model: MODEL (churn) or NUMERIC_MODEL


V1_PATH, V2_PATH = f"/v1/models/{MODEL}:predict", f"/v2/models/{MODEL}/infer"
N30_PATH = f"/v1/models/{NUMERIC_MODEL}:predict"
TARGETS = (
    Target("pred-v1", "kfloop predictor", "direct", "V1 objects", "v1", V1_PATH),
    Target("pred-v2", "kfloop predictor", "direct", "V2 named", "v2", V2_PATH),
    Target("pred-fp32", "kfloop predictor*", "direct", "V2 FP32", "fp32", V2_PATH),
    Target("tr-v1", "kfloop transformer", "->predictor", "V1 objects", "v1", V1_PATH),
    Target("tr-v2", "kfloop transformer", "->predictor", "V2 named", "v2", V2_PATH),
    Target("mls-default", "mlserver default", "direct", "V2 FP32", "fp32", V2_PATH),
    Target("mls-pw0", "mlserver pw=0", "direct", "V2 FP32", "fp32", V2_PATH),
    Target("mls-tuned", "mlserver tuned", "direct", "V2 FP32", "fp32", V2_PATH),
    Target("xgb-churn", "kserve xgbserver", "direct", "V1 lists", "enc", V1_PATH),
    Target("pt-churn", "kserve transformer", "->xgbserver", "V1 lists", "enc", V1_PATH),
    Target("pred-n30", "kfloop predictor", "direct", "V1 lists", "n30", N30_PATH, NUMERIC_MODEL),
    Target("tr-n30", "kfloop transformer", "->predictor", "V1 lists", "n30", N30_PATH, NUMERIC_MODEL),
    Target("tr-n30-ip", "kfloop transformer, in-process", "->predictor", "V1 lists", "n30", N30_PATH, NUMERIC_MODEL),
    Target("xgb-n30", "kserve xgbserver", "direct", "V1 lists", "n30", N30_PATH, NUMERIC_MODEL),
    Target("pt-n30", "kserve transformer", "->xgbserver", "V1 lists", "n30", N30_PATH, NUMERIC_MODEL),
)
PEER_TARGETS = frozenset({"xgb-churn", "pt-churn", "xgb-n30", "pt-n30"})
# the comparison, per model: (kfloop predictor, kfloop transformer, xgbserver, pass-through transformer)
PEER_LINES = {
    "numeric30 (30 numeric features, V1 lists to every server)": ("pred-n30", "tr-n30", "xgb-n30", "pt-n30"),
    "churn (kfloop: V1 objects; xgbserver: the encoded rows as V1 lists)": (
        "pred-v1",
        "tr-v1",
        "xgb-churn",
        "pt-churn",
    ),
}
# MLServer configurations: (settings.json entries, environment)
MLSERVER_CONFIGS = {
    "mls-default": ({}, {}),
    "mls-pw0": ({"parallel_workers": 0}, {}),
    "mls-tuned": ({"parallel_workers": 0, "debug": False}, {"OMP_NUM_THREADS": "1"}),
}


def start_servers(
    stack: ExitStack,
    models: Models,
    numeric: NumericModel,
    work: Path,
    venv: Path | None,
    targets: tuple[Target, ...] = TARGETS,
) -> dict[str, Server]:
    """The servers ``targets`` need (no MLServer without ``venv``), started together and checked ready;
    registered on ``stack`` to be stopped."""
    logs = work / "logs"
    logs.mkdir()
    keys = {t.key for t in targets}
    servers: dict[str, Server] = {}

    def started(server: Server, *for_keys: str) -> Server:
        stack.callback(server.stop)
        servers.update({k: server for k in for_keys if k in keys})
        return server

    if keys & {"pred-v1", "pred-v2", "tr-v1", "tr-v2"}:
        predictor = started(
            kfloop_server("predictor", "predictor", logs, "--model_dir", str(models.bundle)), "pred-v1", "pred-v2"
        )
        for protocol in ("v1", "v2"):
            if f"tr-{protocol}" in keys:
                started(
                    kfloop_server(
                        f"transformer-{protocol}",
                        "transformer",
                        logs,
                        "--model_dir",
                        str(models.bundle),
                        "--predictor_host",
                        f"127.0.0.1:{predictor.port}",
                        "--predictor_protocol",
                        protocol,
                        env={"KFLOOP_HOME": str(work / f"kfloop-home-{protocol}")},
                    ),
                    f"tr-{protocol}",
                )
    if "pred-fp32" in keys:
        started(
            kfloop_server("predictor-numeric", "predictor", logs, "--model_dir", str(models.numeric_bundle)),
            "pred-fp32",
        )
    if keys & {"pred-n30", "tr-n30", "tr-n30-ip"}:
        predictor = started(
            kfloop_server("predictor-n30", "predictor", logs, "--model_dir", str(numeric.bundle), model=NUMERIC_MODEL),
            "pred-n30",
        )
        # the transformer as deployed (monitoring in its monitor process), and with it in-process
        for key, monitor_process in (("tr-n30", "true"), ("tr-n30-ip", "false")):
            if key in keys:
                started(
                    kfloop_server(
                        key.replace("tr-", "transformer-"),
                        "transformer",
                        logs,
                        "--model_dir",
                        str(numeric.bundle),
                        "--predictor_host",
                        f"127.0.0.1:{predictor.port}",
                        "--predictor_protocol",
                        "v1",
                        "--monitor_process",
                        monitor_process,
                        env={"KFLOOP_HOME": str(work / f"kfloop-home-{key}")},
                        model=NUMERIC_MODEL,
                    ),
                    key,
                )
    for suffix, model, folder in (("churn", MODEL, models.booster_dir), ("n30", NUMERIC_MODEL, numeric.booster_dir)):
        if keys & {f"xgb-{suffix}", f"pt-{suffix}"}:
            peer = started(xgbserver(f"xgbserver-{suffix}", model, folder, logs), f"xgb-{suffix}")
            if f"pt-{suffix}" in keys:
                started(passthrough(f"passthrough-{suffix}", model, peer, logs), f"pt-{suffix}")
    for key, (settings, env) in MLSERVER_CONFIGS.items() if venv else ():
        if key in keys:
            started(mlserver(key, venv, models.mlserver_repo, logs, settings, env), key)
    for s in {id(s): s for s in servers.values()}.values():
        log(f"waiting for {s.name} on {s.url}")
        s.wait_ready()
    return servers


def check_answers(
    servers: dict[str, Server], bodies: dict, expected: dict[str, np.ndarray], targets: tuple[Target, ...] = TARGETS
) -> None:
    """Every target answers every body with the booster's own probabilities (same model, same work);
    ``expected``: the class-1 probabilities of each model's test rows."""
    for target in targets:
        url = servers[target.key].url + target.url_path
        for n in DISTINCT_BODIES:
            for i, body in enumerate(bodies[target.body, n]):
                request = urllib.request.Request(url, body.read_bytes(), {"content-type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=30) as r:
                        got = _positive_probability(json.loads(r.read()))
                except urllib.error.HTTPError as e:
                    raise RuntimeError(
                        f"{target.key} ({url}) answered {body.name} with {e.code}: {e.read()[:300]}"
                    ) from None
                want = expected[target.model][i * n : (i + 1) * n]
                if got.shape != want.shape or not np.allclose(got, want, atol=1e-5):
                    raise RuntimeError(
                        f"{target.key} ({url}) answered {body.name} with {got[:3]}..., expected {want[:3]}..."
                    )


def _positive_probability(answer: dict) -> np.ndarray:
    if "predictions" in answer:  # kfloop: both class probabilities; xgbserver: the class-1 probability
        predictions = np.asarray(answer["predictions"], dtype=np.float64)
        return predictions[:, 1] if predictions.ndim == 2 else predictions
    out = answer["outputs"][0]
    data = np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])
    return data[:, 1] if data.ndim == 2 and data.shape[1] == 2 else data.ravel()


# -- load: wrk and CPU accounting ---------------------------------------------------------------

LUA = """local paths = {{ {paths} }}
local requests, i = {{}}, 0
init = function(args)
  for k, path in ipairs(paths) do
    local f = assert(io.open(path, "rb"))
    requests[k] = wrk.format("POST", nil, {{["Content-Type"] = "application/json"}}, f:read("*a"))
    f:close()
  end
end
request = function()  -- the bodies in turn
  i = i % #requests + 1
  return requests[i]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK_RESULT %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\\n", summary.requests,
    summary.duration, e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50),
    latency:percentile(99)))
end
"""


@dataclasses.dataclass
class Result:
    target: Target
    rows: int
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cores: float
    wrk_cores: float
    other_cores: float
    coverage: float | None = None  # drift transformers: rows queued for drift checks / rows served
    check_ms: float | None = None  # ... and the drift thread's CPU ms per checked window


def wrk_script(bodies: list[Path]) -> Path:
    """A wrk Lua script that POSTs ``bodies`` in turn and prints a ``WRK_RESULT`` line when done."""
    script = bodies[0].with_suffix(".lua")
    script.write_text(LUA.format(paths=", ".join(f"[[{p}]]" for p in bodies)))
    return script


def run_wrk(url: str, script: Path, concurrency: int, seconds: int) -> dict:
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next((s for s in out.splitlines() if s.startswith("WRK_RESULT")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    requests, duration_us, *errors, p50, p99 = (float(v) for v in line.split()[1:])
    return {
        "requests": requests,
        "seconds": duration_us / 1e6,
        "errors": int(sum(errors)),
        "p50_ms": p50 / 1e3,
        "p99_ms": p99 / 1e3,
    }


def _busy_ticks() -> int:
    """CPU ticks spent by the whole machine (not idle, not iowait)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


def _group_ticks(pgids: set[int]) -> int:
    """CPU ticks (user + system) of the live processes in the process groups ``pgids``."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:
            total += int(fields[11]) + int(fields[12])
    return total


@dataclasses.dataclass
class Sample:
    """One wrk run: its counts and the CPU seconds spent meanwhile."""

    requests: float
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    server_s: float
    wrk_s: float
    other_s: float
    queued_rows: int = 0  # a drift transformer's: rows queued for drift checks meanwhile (not skipped/dropped)
    served_rows: int = 0  # ... and rows it served meanwhile
    check_cpu_s: float = 0.0  # ... and the CPU its drift thread used checking windows meanwhile
    windows: int = 0  # ... in this many windows


def measure(
    url: str,
    pgids: set[int],
    script: Path,
    concurrency: int,
    seconds: int,
    warmup: int,
    transformer: Server | None = None,
) -> Sample:
    if warmup:
        run_wrk(url, script, concurrency, warmup)
    before = drift_counters(transformer) if transformer else {}
    busy, ours, children = _busy_ticks(), _group_ticks(pgids), resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk = run_wrk(url, script, concurrency, seconds)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_s = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    busy_s, ours_s = (_busy_ticks() - busy) / CLK_TCK, (_group_ticks(pgids) - ours) / CLK_TCK
    queued = served = windows = 0
    check_s = 0.0
    if transformer:  # the transformer's own counts: every served row is queued, skipped, dropped or unreferenced
        delta = {k: v - before[k] for k, v in drift_counters(transformer).items()}
        queued, served = delta["kfloop_drift_rows_submitted_total"], sum(delta[k] for k in SERVED_ROWS)
        windows, check_s = delta["kfloop_drift_windows_checked_total"], delta["kfloop_drift_check_cpu_seconds_total"]
    return Sample(
        wrk["requests"],
        wrk["seconds"],
        wrk["errors"],
        wrk["p50_ms"],
        wrk["p99_ms"],
        ours_s,
        wrk_s,
        max(busy_s - ours_s - wrk_s, 0.0),
        queued,
        served,
        check_s,
        windows,
    )


def combine(target: Target, rows: int, concurrency: int, samples: list[Sample]) -> Result:
    """A case from its rounds: totals over all rounds, the median p50, the worst p99."""
    seconds = sum(s.seconds for s in samples)
    return Result(
        target,
        rows,
        concurrency,
        sum(s.requests for s in samples) / seconds,
        float(np.median([s.p50_ms for s in samples])),
        max(s.p99_ms for s in samples),
        sum(s.errors for s in samples),
        sum(s.server_s for s in samples) / seconds,
        sum(s.wrk_s for s in samples) / seconds,
        sum(s.other_s for s in samples) / seconds,
        sum(s.queued_rows for s in samples) / max(sum(s.served_rows for s in samples), 1)
        if target.key.startswith("tr-")
        else None,
        sum(s.check_cpu_s for s in samples) * 1e3 / max(sum(s.windows for s in samples), 1)
        if target.key.startswith("tr-")
        else None,
    )


def run_cases(
    servers: dict[str, Server],
    bodies: dict,
    seconds: int,
    warmup: int,
    rounds: int,
    targets: tuple[Target, ...] = TARGETS,
) -> list[Result]:
    """Every case, shape by shape; each case's seconds are split into ``rounds`` that alternate between the
    servers, so a burst of other load on the machine falls on all of them alike."""
    pgids = {s.proc.pid for s in servers.values()}
    results = []
    for rows, concurrency in SHAPES:
        samples: dict[str, list[Sample]] = {t.key: [] for t in targets}
        for i in range(rounds):
            for target in targets:
                url = servers[target.key].url + target.url_path
                script = wrk_script(bodies[target.body, rows])
                transformer = servers[target.key] if target.key.startswith("tr-") else None
                samples[target.key].append(
                    measure(
                        url,
                        pgids,
                        script,
                        concurrency,
                        max(seconds // rounds, 1),
                        warmup if i == 0 else 0,
                        transformer,
                    )
                )
        for target in targets:
            r = combine(target, rows, concurrency, samples[target.key])
            log(
                f"{target.key:<12} rows={rows:<3} c={concurrency:<2} {r.rps:8.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                f"p99 {r.p99_ms:6.2f} ms  errors {r.errors}  other load {r.other_cores:.2f} cores"
            )
            results.append(r)
    return results


DRIFT_COUNTERS = (
    "kfloop_drift_rows_submitted_total",
    "kfloop_drift_rows_checked_total",
    "kfloop_drift_rows_skipped_total",
    "kfloop_drift_rows_dropped_total",
    "kfloop_drift_rows_unreferenced_total",
    "kfloop_drift_windows_checked_total",
    "kfloop_drift_check_cpu_seconds_total",  # (seconds, not a count)
)
SERVED_ROWS = (DRIFT_COUNTERS[0], *DRIFT_COUNTERS[2:5])  # queued, skipped, dropped, unreferenced


def drift_counters(server: Server) -> dict[str, float]:
    """A drift transformer's row and window counters and its checks' CPU seconds from its /metrics, summed
    over versions."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as r:
        text = r.read().decode()
    values = dict.fromkeys(DRIFT_COUNTERS, 0)
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in values:
            values[name] += float(line.rsplit(" ", 1)[1])
    return values


def floor(booster, X: np.ndarray, seconds: float) -> list[tuple[int, float]]:
    """Per-call µs of ``booster.inplace_predict`` (nthread=1, as served) on 1 and 100 rows."""
    out = []
    for n in DISTINCT_BODIES:
        x = np.ascontiguousarray(X[:n])
        booster.inplace_predict(x)
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            for _ in range(100):
                booster.inplace_predict(x)
            calls += 100
        out.append((n, elapsed / calls * 1e6))
    return out


DRIFT_SETTLE_S = 1.0


# -- report ---------------------------------------------------------------------------------------


def print_table(results: list[Result], floor_lines: list[tuple[int, float]]) -> None:
    header = (
        f"{'model':<9} {'server':<21} {'path':<12} {'protocol':<10} {'rows/req':>8} {'conc':>4} {'req/s':>8} "
        f"{'rows/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'srv cores':>9} {'srv ms/req':>10} "
        f"{'wrk cores':>9} {'other cores':>11} {'drift cov.':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        t = r.target
        coverage = f"{r.coverage:>10.1%}" if r.coverage is not None else ""
        print(
            f"{t.model:<9} {t.server:<21} {t.path:<12} {t.protocol:<10} {r.rows:>8} {r.concurrency:>4} {r.rps:>8.0f} "
            f"{r.rps * r.rows:>9.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.errors:>6} {r.server_cores:>9.2f} "
            f"{r.server_cores / r.rps * 1e3:>10.3f} {r.wrk_cores:>9.2f} {r.other_cores:>11.2f} {coverage}"
        )
    for n, us in floor_lines:
        print(
            f"{MODEL:<9} {'xgboost inplace_pred.':<21} {'in-process':<12} {'ndarray':<10} {n:>8} {1:>4} "
            f"{1e6 / us:>8.0f} {n * 1e6 / us:>9.0f} {us / 1e3:>7.3f}   ({us:.1f} µs per call)"
        )


PEER_GOALS = {  # the targets: (line, shape) -> (op, goal)
    ("transformer / xgbserver", (1, 1)): (">=", 1.3),
    ("transformer / xgbserver", (1, 16)): (">=", 4.0),
    ("transformer / xgbserver", (100, 8)): (">=", 1.5),
    ("predictor / xgbserver", (1, 1)): (">=", 2.0),
    ("predictor / xgbserver", (100, 8)): (">=", 2.5),
    ("transformer p99 / predictor p99", (1, 1)): ("<=", 2.0),
    ("transformer p99 / predictor p99", (1, 16)): ("<=", 2.0),
}


def print_peer_ratios(results: list[Result], peer_reason: str | None, drift_backend: str) -> None:
    """The issue's table per model: kfloop against KServe's stock xgbserver, bare and behind a
    pass-through KServe transformer, as ratios of this run's numbers (req/s; p99), with the CPU per
    request of each path and the drift coverage; the issue's goals (numeric30) marked ok/NO."""
    by = {(r.target.key, r.rows, r.concurrency): r for r in results}
    for title, keys in PEER_LINES.items():
        print(f"\nkfloop vs KServe's stock xgbserver v0.20.0: {title}")
        if peer_reason:
            print(f"  skipped: {peer_reason}")
        elif not all((key, *SHAPES[0]) in by for key in keys):
            print(f"  not measured in this run (needs --only {','.join(keys)})")
        else:
            _print_peer_model(by, keys, keys[1] == "tr-n30", drift_backend)
    print(
        "  (ok/NO: the issue's goals, on numeric30; drift coverage: rows queued for drift checks / rows served, "
        "goal >= 90% at 50,000 rows/s)"
    )


def _print_peer_model(by: dict, keys: tuple[str, str, str, str], goals: bool, drift_backend: str) -> None:
    pred, tr, xgb, pt = keys
    shapes = [f"{rows} row{'s' if rows > 1 else ''}, c={c}" for rows, c in SHAPES]
    print(f"  {'':<44}" + "".join(f"{s:>17}" for s in shapes))

    def line(name: str, value: Callable, fmt: Callable = lambda v: f"{v:.2f}x") -> None:
        cells = []
        for shape in SHAPES:
            v, mark = value(*shape), ""
            if goals and (name, shape) in PEER_GOALS:
                op, goal = PEER_GOALS[name, shape]
                mark = " ok" if (v >= goal if op == ">=" else v <= goal) else " NO"
            cells.append(f"{fmt(v) + mark:>17}")
        print(f"  {name:<44}" + "".join(cells))

    def rps(key: str, rows: int, c: int) -> float:
        return by[key, rows, c].rps

    def p99(key: str, rows: int, c: int) -> float:
        return by[key, rows, c].p99_ms

    def ms(v: tuple) -> str:
        return f"{v[0]:.2f}, {v[1]:.2f}"

    line("predictor / xgbserver", lambda *sh: rps(pred, *sh) / rps(xgb, *sh))
    line("transformer / xgbserver", lambda *sh: rps(tr, *sh) / rps(xgb, *sh))
    line("transformer / pass-through -> xgbserver", lambda *sh: rps(tr, *sh) / rps(pt, *sh))
    line("transformer p99 / predictor p99", lambda *sh: p99(tr, *sh) / p99(pred, *sh))
    line("  p99 ms: transformer, predictor", lambda *sh: (p99(tr, *sh), p99(pred, *sh)), ms)
    line("  p99 ms: pass-through, xgbserver", lambda *sh: (p99(pt, *sh), p99(xgb, *sh)), ms)
    for name, key in (("predictor", pred), ("transformer path", tr), ("xgbserver", xgb), ("pass-through path", pt)):
        line(
            f"CPU ms per request: {name}",
            lambda *sh, key=key: by[(key, *sh)].server_cores / by[(key, *sh)].rps * 1e3,
            lambda v: f"{v:.3f}",
        )
    line(
        f"drift coverage ({drift_backend}; rows/s)",
        lambda *sh: (by[(tr, *sh)].coverage, by[(tr, *sh)].rps * sh[0]),
        lambda v: f"{v[0]:.0%} ({v[1]:.0f})",
    )
    line("  drift check CPU ms per window", lambda *sh: by[(tr, *sh)].check_ms, lambda v: f"{v:.2f}")


def print_targets(results: list[Result]) -> bool:
    """The targets as ratios of this run's numbers, PASS/FAIL; True when all pass."""
    by = {(r.target.key, r.rows, r.concurrency): r for r in results}

    def rps(key: str, c: int) -> float:
        return by[key, 1, c].rps

    print(
        f"\n{'target (1-row requests, measured in this run)':<46} {'ratio':>6}  {'goal':<6} {'':<4}  "
        f"{'vs mlserver pw=0':>16} {'vs mlserver tuned':>17}"
    )
    ok = True

    def check(name: str, ratio: float, op: str, goal: float, key: str | None = None, c: int = 1) -> None:
        nonlocal ok
        passed = ratio >= goal if op == ">=" else ratio <= goal
        ok &= passed
        extra = f"{rps(key, c) / rps('mls-pw0', c):16.2f} {rps(key, c) / rps('mls-tuned', c):17.2f}" if key else ""
        print(f"{name:<46} {ratio:>6.2f}  {op}{goal:<4} {'PASS' if passed else 'FAIL':<4}  {extra}")

    for goal, keys in ((1.5, ("pred-v2", "pred-fp32", "pred-v1")), (1.0, ("tr-v2", "tr-v1"))):
        for c in (1, 16):
            for key in keys:
                check(f"{key} req/s c={c} / mlserver default", rps(key, c) / rps("mls-default", c), ">=", goal, key, c)
    for protocol in ("v2", "v1"):
        tr, pred = f"tr-{protocol}", f"pred-{protocol}"
        check(f"{tr} req/s c=16 / {pred} req/s", rps(tr, 16) / rps(pred, 16), ">=", 0.6)
        check(f"{tr} p50 c=1 / {pred} p50", by[tr, 1, 1].p50_ms / by[pred, 1, 1].p50_ms, "<=", 2.0)
    return ok


def print_notes(args, load_before: tuple, load_after: tuple, n_trees: int) -> None:
    print(f"""
Notes
- Model: sample:churn, {args.rows} rows, default training parameters ({n_trees} trees after early stopping),
  8 features (5 numeric, 3 categorical). Every server loads the same model.ubj; each answer was checked
  against booster.inplace_predict before measuring.
- kfloop predictor: the user-facing requests (V1 objects keyed by feature name, category strings; V2 one
  named input per feature, FP64 numbers and BYTES categories), decoded with the training schema.
  kfloop predictor*: the same booster with every feature declared numeric, sent the already-encoded FP32
  [n, 8] tensor: the like-for-like line with MLServer (the real bundle refuses one tensor: it has
  categorical features).
- kfloop transformer: the full path, client -> transformer (validation, capture to a local KFLOOP_HOME,
  drift windows of 500 rows on a background thread, at most a quarter of a core: above that rate the
  checked windows are a sample, see the counts under the table) -> predictor, forwarded on the client's
  protocol.
- MLServer 1.7.1 + mlserver-xgboost 1.7.1 (V2 only: one FP32 tensor, so it gets the encoded matrix; its
  answer is the class-1 probability, ours both class probabilities). default: MLServer's defaults (inference
  in one parallel worker process, debug access log, XGBoost on all cores per call). pw=0: parallel_workers=0
  (inference in the server process), else defaults. tuned: parallel_workers=0, debug=false (no access log,
  like kfloop's default) and OMP_NUM_THREADS=1 (one XGBoost thread per call, as the kfloop predictor's
  --nthread 1 default: with all cores, OpenMP threads wait on each other whenever another process holds a
  core, here wrk or the machine's other load).
- KServe xgbserver v0.20.0 (../shared/peers, kserve-storage 0.20.0): its default flags (gRPC off), the
  booster without feature names (as the register step writes the stock booster), sent V1 lists; the
  kserve transformer is benchmarks/passthrough_transformer.py, KServe's default forwarding to it.
  numeric30: 30 numeric features, synthetic, every server sent V1 lists.
- Requests go through different test rows in turn: 1-row requests through {DISTINCT_BODIES[1]} rows, 100-row
  requests through {DISTINCT_BODIES[100]} batches (identical rows would make every drift window drift).
- One worker process per server; wrk (1 thread, separate process) shares the machine's {os.cpu_count()} cores
  with the servers. {args.seconds} s per case after a {args.warmup} s warm-up, in {args.rounds} rounds that
  alternate between the servers (req/s over all rounds, p50 the rounds' median, p99 the worst round's).
  Latency is wrk's (no coordinated omission correction). errors = non-2xx answers + socket errors
  (connect/read/write/timeout).
- srv cores: CPU used by all benchmark servers during the case (cores, 1.0 = one core busy); srv ms/req:
  that CPU per request (the whole path: transformer + predictor for the transformer lines); wrk cores:
  the load generator's; other cores: CPU used meanwhile by processes that are not part of this benchmark
  (other work on the machine: with 2 cores, anything above ~0.2 lowers the numbers of that case).
- Load average (1/5/15 min) before: {_loads(load_before)}, after: {_loads(load_after)}.""")


def _loads(values) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def _selected(only: str | None) -> tuple[Target, ...]:
    if not only:
        return TARGETS
    keys = set(only.split(","))
    unknown = keys - {t.key for t in TARGETS}
    if unknown:
        raise SystemExit(f"--only: unknown lines {sorted(unknown)}; choose from {[t.key for t in TARGETS]}")
    return tuple(t for t in TARGETS if t.key in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="measured seconds per case (default 20)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per case (default 1)")
    parser.add_argument(
        "--rounds", type=int, default=4, help="rounds per case, alternating between the servers (default 4)"
    )
    parser.add_argument("--quick", action="store_true", help="3 s per case in one round: a smoke run")
    parser.add_argument("--rows", type=int, default=20_000, help="training rows of sample:churn (default 20000)")
    parser.add_argument(
        "--mlserver-venv",
        type=Path,
        default=DEFAULT_VENV,
        help=f"venv with MLServer (created if missing; default {DEFAULT_VENV})",
    )
    parser.add_argument(
        "--only",
        default=None,
        metavar="KEY,...",
        help=f"measure only these lines (a partial run checks no MLServer targets; MLServer starts only "
        f"when named; the xgbserver comparison prints for each model whose four lines ran): "
        f"{','.join(t.key for t in TARGETS)}",
    )
    parser.add_argument(
        "--drift-backend",
        choices=("alibi", "scipy"),
        default="scipy",
        help="drift backend of the baselines the transformers load (default scipy: the one to deploy without "
        "Alibi Detect's BSL licence, and the cheap one)",
    )
    args = parser.parse_args()
    targets = _selected(args.only)
    peer_reason = peer_missing()
    if peer_reason and PEER_TARGETS & {t.key for t in targets}:
        log(f"skipping {sorted(PEER_TARGETS & {t.key for t in targets})}: {peer_reason}")
        targets = tuple(t for t in targets if t.key not in PEER_TARGETS)
    if args.quick:
        args.seconds, args.rounds = 3, 1
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    # unwind on Ctrl-C (even when started in the background, which ignores SIGINT), SIGTERM and SIGHUP:
    # the servers are stopped on the way out
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    load_before = os.getloadavg()
    venv = ensure_mlserver_venv(args.mlserver_venv) if any(t.key in MLSERVER_CONFIGS for t in targets) else None
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kfloop-serving-bench-")))
        log(f"building the churn and numeric30 bundles ({args.rows} rows each) in {work}")
        models = build_models(work, args.rows, args.drift_backend)
        numeric = build_numeric_model(work, args.rows, args.drift_backend)
        bodies = write_bodies(models, numeric, work / "bodies")
        servers = start_servers(stack, models, numeric, work, venv, targets)
        expected = {
            MODEL: models.booster.inplace_predict(models.X),
            NUMERIC_MODEL: numeric.booster.inplace_predict(numeric.X),
        }
        check_answers(servers, bodies, expected, targets)
        log(
            f"all servers ready and answering alike; {len(SHAPES) * len(targets)} cases of "
            f"{args.warmup}+{args.seconds} s"
        )
        results = run_cases(servers, bodies, args.seconds, args.warmup, args.rounds, targets)
        time.sleep(DRIFT_SETTLE_S)  # the drift threads take what is queued
        counters = {t.key: drift_counters(servers[t.key]) for t in targets if t.key.startswith("tr-")}
        log("stopping the servers")
    floor_lines = floor(models.booster, models.X, min(args.seconds / 4, 2.0))
    print_table(results, floor_lines)
    for key, c in counters.items():
        print(
            f"{key}: {c['kfloop_drift_rows_submitted_total']:.0f} rows queued for drift checks, "
            f"{c['kfloop_drift_rows_checked_total']:.0f} checked, {c['kfloop_drift_rows_skipped_total']:.0f} skipped "
            f"while the monitor rested (--drift_cpu_share, default 0.25), "
            f"{c['kfloop_drift_rows_dropped_total']:.0f} dropped; "
            f"{c['kfloop_drift_check_cpu_seconds_total'] * 1e3 / max(c['kfloop_drift_windows_checked_total'], 1):.2f} "
            f"ms of CPU per window checked"
        )
    print_peer_ratios(results, peer_reason, args.drift_backend)
    if {t.key for t in TARGETS} - PEER_TARGETS - {t.key for t in targets}:
        log("--only: a partial run, the MLServer targets are not checked")
        return
    ok = print_targets(results)
    print_notes(args, load_before, os.getloadavg(), models.booster.num_boosted_rounds())
    if not ok:
        log("some targets FAIL (see the table)")


if __name__ == "__main__":
    main()
