"""What the Kubernetes tests check against: the Dask operator's CRDs, shipped in the
installed dask-kubernetes package, and the manifests of ``deploy/k8s/``, built."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
#: The operator's Helm chart's CRDs, inside the dask-kubernetes package.
CRDS = ("operator", "deployment", "helm", "dask-kubernetes-operator", "crds")
#: PyYAML's C loader where it is built (the CRDs are 900 kB of YAML).
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: Object metadata as the API server accepts it on any resource (the fields used here).
METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def strict(schema: Any) -> Any:
    """`schema` with ``additionalProperties: false`` wherever it lists properties.

    As kubeconform's strict mode does: a field the schema does not know is an
    error, where the API server would drop it silently. Objects that keep
    unknown fields (``x-kubernetes-preserve-unknown-fields``) stay open.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validators() -> dict[tuple[str, bool], jsonschema.Draft7Validator]:
    """A validator of each operator kind's schema, by (kind, strict)."""
    found = {}
    for kind, schema in crd_schemas().items():
        for strictly in (False, True):
            checked = strict(schema) if strictly else schema
            jsonschema.Draft7Validator.check_schema(checked)
            found[kind, strictly] = jsonschema.Draft7Validator(checked)
    return found


def kustomizations() -> dict[str, list[dict[str, Any]]]:
    """``deploy/k8s/``'s base and overlays, built, by folder (``overlays/gpu``)."""
    return {
        str(path.parent.relative_to(K8S)): build(path.parent)
        for path in sorted(K8S.rglob("kustomization.yaml"))
    }


def crd_schemas() -> dict[str, dict[str, Any]]:
    """Each operator kind's OpenAPI schema (version v1), with apiVersion, kind and metadata."""
    folder = files("dask_kubernetes").joinpath(*CRDS)
    schemas = {}
    for name in ("daskcluster", "daskjob", "daskworkergroup", "daskautoscaler"):
        crd = yaml.load(folder.joinpath(f"{name}.yaml").read_text(), Loader=LOADER)
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
        schema["properties"] |= {
            "apiVersion": {"const": f"{crd['spec']['group']}/v1"},
            "kind": {"const": crd["spec"]["names"]["kind"]},
            "metadata": METADATA,
        }
        schema["required"] = [*schema.get("required", []), "apiVersion", "kind", "metadata"]
        schemas[crd["spec"]["names"]["kind"]] = schema
    return schemas


def load_all(path: Path) -> list[dict[str, Any]]:
    """The documents of a YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomize_merge(folder: Path) -> list[dict[str, Any]]:
    """The resources a kustomization lists, its bases' first (no transformers applied)."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in spec.get("resources", []):
        path = (folder / resource).resolve()
        docs += kustomize_merge(path) if path.is_dir() else load_all(path)
    return docs


def build(folder: Path) -> list[dict[str, Any]]:
    """A kustomization built by ``kubectl kustomize`` where kubectl exists, else merged."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return kustomize_merge(folder)
    done = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
