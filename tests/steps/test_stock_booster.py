"""The bundle's stock-runtime booster, served by KServe's own xgbserver (v0.20.0, from ../shared/peers)
behind the drift transformer forwarding encoded rows (the ``manifests/overlays/xgbserver`` setup):
its predictions equal kfloop's predictor's for the same requests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from kfloop.schema import infer_schema
from kfloop.steps.baseline import fit_drift_baseline
from kfloop.steps.register import assemble_bundle
from kfloop.steps.train import train_model
from kfloop.store.bundle import MODEL_FILE, STOCK_DIR, STOCK_MODEL_FILE, verify_bundle
from kfloop.training.samples import churn
from tests.conftest import free_port
from tests.serving.conftest import ServerProcess

pytestmark = pytest.mark.processes

PEER = Path(__file__).resolve().parents[2].parent / "shared" / "peers" / "kserve-xgbserver-v0.20.0"
MODEL = "churn"
CATEGORICAL = ("contract", "payment_method", "internet_service")


def bundle_of(root: Path, numeric: bool) -> Path:
    """A bundle as the register step assembles it, on churn data (only its numeric features if ``numeric``)."""
    df = churn(1500, seed=0)
    if numeric:
        df = df.drop(columns=list(CATEGORICAL))
    df.iloc[:1200].to_parquet(root / "train.parquet")
    df.iloc[1200:].to_parquet(root / "valid.parquet")
    (root / "schema.json").write_text(json.dumps(infer_schema(df, "churn").to_dict()))
    params = {"n_estimators": 20, "max_depth": 3, "nthread": 1}
    train_model(
        str(root / "train.parquet"), str(root / "valid.parquet"), str(root / "schema.json"), params, str(root / "m")
    )
    (root / "evaluation.json").write_text(json.dumps({"task": "binary", "metrics": {}}))
    fit_drift_baseline(str(root / "m"), str(root / "train.parquet"), str(root / "drift"), backend="scipy")
    return assemble_bundle(str(root / "m"), str(root / "evaluation.json"), None, str(root / "drift"), root / "bundle")


def test_only_an_all_numeric_bundle_carries_a_stock_booster(tmp_path):
    (tmp_path / "n").mkdir()
    (tmp_path / "c").mkdir()
    numeric, categorical = bundle_of(tmp_path / "n", True), bundle_of(tmp_path / "c", False)
    assert STOCK_MODEL_FILE in verify_bundle(numeric)["files"]
    assert [p.name for p in (numeric / STOCK_DIR).iterdir()] == ["model.ubj"]  # xgbserver wants exactly one
    assert not (categorical / STOCK_DIR).exists()
    assert STOCK_MODEL_FILE not in verify_bundle(categorical)["files"]


class Served(ServerProcess):
    def __init__(self, module: str, *args: str, env: dict | None = None, ready: str = f"/v1/models/{MODEL}"):
        port = free_port()
        super().__init__(module, ["--model_name", MODEL, "--http_port", str(port), *args], port, ready, env)

    def predict(self, body: dict) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/models/{MODEL}:predict", json=body, timeout=30)


@pytest.mark.skipif(not PEER.is_dir(), reason=f"KServe's xgbserver v0.20.0 is not at {PEER} (../shared/peers)")
def test_kserves_xgbserver_serves_the_stock_booster_as_kfloop_serves_the_bundle(tmp_path):
    pytest.importorskip("kserve_storage", reason="KServe's xgbserver needs kserve-storage==0.20.0")
    bundle = bundle_of(tmp_path, numeric=True)
    peer_env = {"PYTHONPATH": str(PEER)}
    (tmp_path / "named").mkdir()  # kfloop's own booster, alone in its folder as xgbserver wants it
    shutil.copyfile(bundle / MODEL_FILE, tmp_path / "named" / MODEL_FILE)
    stock = Served("xgbserver", "--model_dir", str(bundle / STOCK_DIR), "--enable_grpc", "false", env=peer_env)
    named = Served("xgbserver", "--model_dir", str(tmp_path / "named"), "--enable_grpc", "false", env=peer_env)
    kfloop = Served("kfloop.serving.model_servers.predictor", "--model_dir", str(bundle), "--enable_grpc", "false")
    servers = [stock, named, kfloop]
    try:
        for s in servers:
            s.wait_ready()
        transformer = Served(
            "kfloop.serving.model_servers.transformer",
            "--model_dir",
            str(bundle),
            "--model_version",
            "1",
            "--predictor_host",
            f"127.0.0.1:{stock.port}",
            "--predictor_rows",
            "encoded",
            "--enable_grpc",
            "false",
            env={"KFLOOP_HOME": str(tmp_path / "home")},
        )
        servers.append(transformer)
        transformer.wait_ready()

        rows = json.loads(churn(40, seed=7).drop(columns=["churn", *CATEGORICAL]).to_json(orient="records"))
        rows[1]["monthly_charges"] = None  # a missing value travels as null and is NaN to both
        expected = kfloop.predict({"instances": rows})
        assert expected.status_code == 200, expected.text
        expected = [p1 for _, p1 in expected.json()["predictions"]]  # kfloop answers [P(0), P(1)] per row

        # the stock runtime answers P(1) per row (booster.predict); kfloop's predictor both classes
        # the defect: the stock runtime cannot predict from lists with kfloop's own model.ubj
        encoded = [[r[k] for k in rows[0]] for r in rows]
        assert named.predict({"instances": encoded[:2]}).status_code == 500

        direct = stock.predict({"instances": encoded})
        assert direct.status_code == 200, direct.text
        assert direct.json()["predictions"] == pytest.approx(expected, abs=1e-6)
        through = transformer.predict({"instances": rows})  # named objects, rebuilt as encoded rows
        assert through.status_code == 200, through.text + transformer.output()[-2000:]
        assert through.json()["predictions"] == pytest.approx(expected, abs=1e-6)
    finally:
        for s in servers:
            s.stop()
