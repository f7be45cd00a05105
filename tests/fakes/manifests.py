"""The project's manifests as tests read them: rendered with ``kubectl kustomize`` (skipped without
kubectl), and validated against the CRD schemas in ``../shared/schemas`` (skipped without them)."""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

MANIFESTS = REPO / "manifests"

SCHEMAS = REPO.parent / "shared" / "schemas"


def kustomize_targets() -> list[str]:
    """Every folder under manifests/ that holds a kustomization, relative to manifests/."""
    return sorted(p.parent.relative_to(MANIFESTS).as_posix() for p in MANIFESTS.rglob("kustomization.yaml"))


def require_kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on the PATH: cannot render the kustomizations")
    return kubectl


@functools.cache
def _render(path: str) -> tuple[dict, ...]:
    result = subprocess.run(
        [require_kubectl(), "kustomize", path], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.load_all(result.stdout, Loader=Loader) if doc)


def render(path: str | Path) -> list[dict]:
    """The objects ``kubectl kustomize <path>`` renders (a deep copy: tests may change them)."""
    return copy.deepcopy(list(_render(str(path))))


def load_crd_schemas(root: Path) -> dict[tuple[str, str], dict]:
    """The openAPIV3Schema of every served version of every CRD under ``root``, keyed by
    (apiVersion, kind) as a manifest names them, e.g. ("serving.kserve.io/v1beta1", "InferenceService")."""
    schemas: dict[tuple[str, str], dict] = {}
    for path in sorted(root.rglob("*.yaml")):
        for doc in yaml.load_all(path.read_text(), Loader=Loader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if version.get("served", True):
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


@functools.cache
def _strict_validator(api_version: str, kind: str) -> jsonschema.Draft4Validator:
    schemas = _crd_schemas()
    assert (api_version, kind) in schemas, f"no CRD for {api_version} {kind} under {SCHEMAS}: {sorted(schemas)}"
    schema = strict(schemas[(api_version, kind)])
    # The API server accepts these at the top of every object even where a CRD does not declare them.
    implicit = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    schema["properties"] = {**implicit, **schema["properties"]}
    return jsonschema.Draft4Validator(schema)


@functools.lru_cache(maxsize=1)
def _crd_schemas() -> dict[tuple[str, str], dict]:
    return load_crd_schemas(SCHEMAS)


def schema_errors(obj: dict) -> list[str]:
    """Messages for every way ``obj`` breaks the strict CRD schema of its apiVersion and kind."""
    validator = _strict_validator(obj["apiVersion"], obj["kind"])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def strict(schema: dict) -> dict:
    """A copy of a CRD schema that rejects fields it does not declare, as the API server does with
    strict field validation (except where the schema says x-kubernetes-preserve-unknown-fields)."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict(sub) for name, sub in out["properties"].items()}
        if not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [strict(sub) for sub in out[key]]
    return out
