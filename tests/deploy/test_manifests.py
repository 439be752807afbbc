"""Manifests against their references: the Dask operator's CRDs (strictly: unknown fields
are errors), the Deployments and Services the operator's own functions make of them
checked against Kubernetes 1.33's schemas, and the settings ``debond submit k8s``
refuses before anything is contacted."""

from __future__ import annotations

import copy
import re
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import tomlkit
import yaml
from dask_kubernetes.operator.controller import (
    build_cluster_spec,
    build_default_worker_group_spec,
    build_job_pod_spec,
    build_scheduler_deployment_spec,
    build_scheduler_service_spec,
    build_worker_deployment_spec,
)
from kubernetes.utils import parse_quantity as reference_quantity
from typer.testing import CliRunner

from debond.cli import app
from debond.kubernetes import (
    GPU_RESOURCE,
    KubernetesError,
    Settings,
    check_image,
    check_manifests,
    check_settings,
    parse_quantity,
)
from tests.deploy.operator_references import (
    K8S,
    crd_schemas,
    kustomizations,
    kustomize_merge,
    strict,
    validators,
)

runner = CliRunner()
#: The Kubernetes version the built-in kinds are checked against.
KUBERNETES = "1.33.0"


def operator_kinds(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["apiVersion"] == "kubernetes.dask.org/v1"]


def validate_crd(doc: dict[str, Any], schemas: dict[Any, Any], *, strictly: bool = True) -> None:
    """Raise the first error of `doc` against its kind's CRD schema (strict: no unknown field)."""
    validator = schemas[doc["kind"], strictly]
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        raise error


def campaign_folder(source: Path, target: Path, **campaign: str) -> Path:
    """The small synthetic campaign's inputs, its first sample only, `campaign` keys changed."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("store.zarr", "truth"))
    path = target / "campaign.toml"
    document = tomlkit.parse(path.read_text())
    del document["sample"][1:]  # type: ignore[union-attr]
    for key, value in campaign.items():
        section, _, name = key.partition(".")
        document.setdefault(section, tomlkit.table())[name] = value  # type: ignore[index]
    path.write_text(tomlkit.dumps(document))
    return path


def submit(path: Path, *options: str) -> tuple[int, str]:
    result = runner.invoke(app, ["submit", "k8s", str(path), "--dry-run", *options])
    return result.exit_code, result.output


@pytest.fixture(scope="session")
def schemas() -> dict[tuple[str, bool], jsonschema.Draft7Validator]:
    """A validator of each operator kind's CRD schema, by (kind, strict), built once."""
    return validators()


@pytest.fixture(scope="session")
def built() -> dict[str, list[dict[str, Any]]]:
    """``deploy/k8s/``'s base and overlays, built once."""
    return kustomizations()


# ------------------------------------------------------------ against the CRDs


def test_the_crds_come_from_the_operator_package() -> None:
    schemas = crd_schemas()
    assert set(schemas) == {"DaskCluster", "DaskJob", "DaskWorkerGroup", "DaskAutoscaler"}
    worker = schemas["DaskCluster"]["properties"]["spec"]["properties"]["worker"]
    assert "containers" in worker["properties"]["spec"]["properties"]
    strict_worker = strict(schemas["DaskCluster"])["properties"]["spec"]["properties"]["worker"]
    assert strict_worker["additionalProperties"] is False


def test_every_kustomization_validates_strictly(
    built: dict[str, list[dict[str, Any]]], schemas: dict[Any, Any]
) -> None:
    assert set(built) == {"base", "overlays/cpu", "overlays/gpu"}
    for where, docs in built.items():
        kinds = {doc["kind"] for doc in operator_kinds(docs)}
        assert {"DaskJob", "DaskAutoscaler"} <= kinds, where
        for doc in operator_kinds(docs):
            validate_crd(doc, schemas)
        check_manifests(docs)
    gpu = [d for d in built["overlays/gpu"] if d["kind"] == "DaskWorkerGroup"]
    (container,) = gpu[0]["spec"]["worker"]["spec"]["containers"]
    assert container["resources"]["limits"][GPU_RESOURCE] == "1"
    assert container["args"][container["args"].index("--resources") + 1] == "GPU=1"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")
@pytest.mark.parametrize("folder", ["base", "overlays/cpu", "overlays/gpu"])
def test_the_merge_without_kubectl_lists_what_kustomize_builds(
    built: dict[str, list[dict[str, Any]]], folder: str
) -> None:
    """Where kubectl is missing, the merge stands in for it: the same objects, unlabelled."""

    def names(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return sorted((doc["kind"], doc["metadata"]["name"]) for doc in docs)

    merged = kustomize_merge(K8S / folder)
    assert names(merged) == names(built[folder])
    if folder == "base":  # no transformer but labels: the same specs
        specs = {(d["kind"], d["metadata"]["name"]): d["spec"] for d in built[folder]}
        for doc in merged:
            assert doc["spec"] == specs[doc["kind"], doc["metadata"]["name"]]


def test_rendered_manifests_validate_strictly(
    small_campaign: Path, tmp_path: Path, schemas: dict[Any, Any]
) -> None:
    local = campaign_folder(small_campaign, tmp_path / "local")
    s3 = campaign_folder(small_campaign, tmp_path / "s3", **{"campaign.store": "s3://b/x.zarr"})
    cases = [
        (local, ["--workers", "3"]),
        (s3, ["--workers", "2", "--gpu-workers", "2", "--max-workers", "6", "--namespace", "r"]),
    ]
    for path, options in cases:
        code, output = submit(path, *options)
        assert code == 0, output
        docs = [doc for doc in yaml.safe_load_all(output) if doc]
        for doc in docs:
            validate_crd(doc, schemas)
        check_manifests(docs)
        kinds = [doc["kind"] for doc in docs]
        assert kinds == (
            ["DaskJob"] if path == local else ["DaskJob", "DaskWorkerGroup", "DaskAutoscaler"]
        )
        runner_pod = docs[0]["spec"]["job"]["spec"]["containers"][0]
        assert runner_pod["args"] == ["debond", "run", "/data/campaign.toml"]
        secrets = {e["name"] for e in runner_pod.get("env", []) if "valueFrom" in e}
        assert ("AWS_ACCESS_KEY_ID" in secrets) == (path == s3)


# ------------------------------------------------------------ broken fixtures fail


def gpu_group_text() -> str:
    return (K8S / "overlays" / "gpu" / "gpu-workergroup.yaml").read_text()


def broken(text: str, old: str, new: str) -> dict[str, Any]:
    assert old in text, old
    doc: dict[str, Any] = yaml.safe_load(text.replace(old, new))
    return doc


def test_a_misspelt_field_fails_strictly_and_only_strictly(schemas: dict[Any, Any]) -> None:
    """dask-kubernetes issue 650: `limit:` for `limits:` is silently dropped by the server."""
    doc = broken(gpu_group_text(), "limits: {cpu", "limit: {cpu")
    validate_crd(doc, schemas, strictly=False)  # the plain schema lets it through
    with pytest.raises(jsonschema.ValidationError, match="'limit' was unexpected"):
        validate_crd(doc, schemas)


def test_an_unquoted_gpu_quantity_fails(schemas: dict[Any, Any]) -> None:
    """The operator's CRDs type resource quantities as strings; YAML reads 1 as an integer."""
    doc = broken(gpu_group_text(), 'nvidia.com/gpu: "1"}', "nvidia.com/gpu: 1}")
    limits = doc["spec"]["worker"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits[GPU_RESOURCE] == 1
    with pytest.raises(jsonschema.ValidationError, match="1 is not of type 'string'"):
        validate_crd(doc, schemas, strictly=False)
    with pytest.raises(
        KubernetesError,
        match=r"resources\.limits\.nvidia\.com/gpu = 1 is not quoted \(YAML read a int\)",
    ):
        check_manifests([doc])


def test_a_missing_scheduler_service_fails(schemas: dict[Any, Any]) -> None:
    (doc,) = [d for d in yaml.safe_load_all((K8S / "base" / "daskjob.yaml").read_text()) if d]
    validate_crd(doc, schemas)
    del doc["spec"]["cluster"]["spec"]["scheduler"]["service"]
    with pytest.raises(jsonschema.ValidationError, match="'service' is a required property"):
        validate_crd(doc, schemas, strictly=False)


def test_a_gpu_limit_without_the_dask_resource_fails() -> None:
    doc = broken(gpu_group_text(), ',\n                 "--resources", "GPU=1"]', "]")
    with pytest.raises(KubernetesError, match=r"advertises --resources GPU=None"):
        check_manifests([doc])


def test_a_dask_memory_limit_above_the_container_fails() -> None:
    doc = broken(gpu_group_text(), '"--memory-limit", "16GiB"', '"--memory-limit", "20GiB"')
    with pytest.raises(KubernetesError, match=r"--memory-limit '20GiB'.*above resources"):
        check_manifests([doc])


# ------------------------------------------------------------ what the operator makes


def operator_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects the operator creates for `docs`, by its own functions."""
    made: list[dict[str, Any]] = []
    for doc in docs:
        name = doc["metadata"]["name"]
        namespace = doc["metadata"].get("namespace", "default")
        if doc["kind"] == "DaskJob":
            spec = doc["spec"]["cluster"]["spec"]
            made.append(build_cluster_spec(name, spec["worker"], spec["scheduler"], {}, {}))
            made.append(
                build_job_pod_spec(name, name, namespace, doc["spec"]["job"]["spec"], {}, {})
            )
            made.append(build_scheduler_deployment_spec(name, spec["scheduler"]["spec"], {}, {}))
            made.append(build_scheduler_service_spec(name, spec["scheduler"]["service"], {}, {}))
            group = build_default_worker_group_spec(name, spec["worker"], {}, {})
            made.append(group)
        elif doc["kind"] == "DaskWorkerGroup":
            group = doc
        else:
            continue
        made.append(
            build_worker_deployment_spec(
                group["metadata"]["name"],
                namespace,
                group["spec"]["cluster"],
                "0123456789",
                group["spec"]["worker"]["spec"],
                {},
                {},
            )
        )
    return made


def test_what_the_operator_makes_validates(
    built: dict[str, list[dict[str, Any]]], schemas: dict[Any, Any]
) -> None:
    docs = built["overlays/gpu"]
    made = operator_objects(docs)
    kinds = sorted(doc["kind"] for doc in made)
    assert kinds == [
        "DaskCluster",
        "DaskWorkerGroup",
        "Deployment",
        "Deployment",
        "Deployment",
        "Pod",
        "Service",
    ]
    builtin = [doc for doc in docs + made if doc["apiVersion"] != "kubernetes.dask.org/v1"]
    for doc in builtin:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    for doc in operator_kinds(made):
        validate_crd(doc, schemas)
    workers = [d for d in made if d["kind"] == "Deployment" and "worker" in d["metadata"]["name"]]
    for worker in workers:
        env = {e["name"] for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert {"DASK_WORKER_NAME", "DASK_SCHEDULER_ADDRESS"} <= env


def test_a_broken_pod_fails_kubernetes_validate(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    """The reference catches what it should: a port that is not a number."""
    made = operator_objects(copy.deepcopy(built["overlays/cpu"]))
    (scheduler,) = [
        d for d in made if d["metadata"]["name"] == "debond-scheduler" and d["kind"] == "Deployment"
    ]
    scheduler["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(scheduler, KUBERNETES, strict=True)


# ------------------------------------------------------------ settings refused


@pytest.mark.parametrize(
    "text", ["8Gi", "500m", "1.5", "1e3", "2E-3", "100M", "0.5Ki", "3", ".5", "12Ti"]
)
def test_quantities_parse_as_kubernetes_does(text: str) -> None:
    assert parse_quantity(text) == Decimal(str(reference_quantity(text)))


@pytest.mark.parametrize("text", ["8GB", "x", "1.2.3", "", "Gi"])
def test_bad_quantities_are_refused_as_kubernetes_does(text: str) -> None:
    with pytest.raises(ValueError):
        reference_quantity(text)
    with pytest.raises(KubernetesError, match=rf"--worker-memory = '{text}' is not a Kubernetes"):
        parse_quantity(text, "--worker-memory")


@pytest.mark.parametrize(
    "image",
    [
        "debond:0.1.0",
        "ghcr.io/lab/debond:1.2",
        "localhost:5000/a/b_c.d:v1-rc.2",
        "debond@sha256:" + "a" * 64,
    ],
)
def test_image_references_are_accepted(image: str) -> None:
    assert check_image(image) == image


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("Debond:0.1", "is not an image reference"),
        ("debond:", "is not an image reference"),
        ("ghcr.io/lab/debond:0.1 ", "is not an image reference"),
        ("debond", "has no fixed version"),
        ("debond:latest", "has no fixed version"),
    ],
)
def test_bad_images_are_refused(image: str, expected: str) -> None:
    with pytest.raises(KubernetesError, match=rf"^--image {image!r}: ?.*{expected}|{expected}"):
        check_image(image)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"memory_limit": "10GiB", "worker_memory": "8Gi"},
            r"--memory-limit '10GiB' .* above --worker-memory",
        ),
        ({"name": "Debond_run"}, r"--name 'Debond_run': expected a lowercase RFC 1123 label"),
        ({"namespace": "a" * 64}, r"--namespace"),
        ({"workers": 0, "gpu_workers": 0}, r"--workers and --gpu-workers are both 0"),
        ({"workers": 4, "max_workers": 2}, r"--max-workers 2 is below --workers 4"),
        ({"worker_memory": "8GB"}, r"--worker-memory = '8GB' is not a Kubernetes quantity"),
        ({"mount_path": "data"}, r"--mount-path 'data': expected an absolute path"),
        ({"threads": 0}, r"--threads must be at least 1"),
        ({"memory_limit": "0"}, r"--memory-limit '0' means no limit to Dask"),
    ],
)
def test_bad_settings_are_named(changes: dict[str, Any], expected: str) -> None:
    settings = Settings(**changes)
    with pytest.raises(KubernetesError, match=expected):
        check_settings(settings)


def test_campaign_settings_that_cannot_run_are_named(small_campaign: Path, tmp_path: Path) -> None:
    path = campaign_folder(small_campaign, tmp_path / "a")
    elsewhere = tmp_path / "elsewhere.zarr"
    cases = [
        (
            campaign_folder(small_campaign, tmp_path / "b", **{"campaign.store": str(elsewhere)}),
            [],
            rf"\[campaign\] store = '{elsewhere}' is a local path not in the shared folder",
        ),
        (
            campaign_folder(small_campaign, tmp_path / "c", **{"campaign.store": "memory://x"}),
            [],
            r"every pod of a Kubernetes cluster must reach the store; expected s3://",
        ),
        (
            campaign_folder(small_campaign, tmp_path / "d", **{"recon.algorithm": "sirt"}),
            ["--gpu-workers", "0"],
            r'\[recon\] algorithm = "sirt" asks for GPU workers and --gpu-workers is 0',
        ),
        (
            campaign_folder(small_campaign, tmp_path / "f", **{"campaign.store": "s3://b/x.zarr"}),
            ["--shared-folder", str(tmp_path / "b")],
            r"sample\[0\] \('c00'\)\.txm .* is not in the shared folder",
        ),
        (path, ["--image", "debond"], r"--image 'debond' has no fixed version"),
        (path, ["--worker-memory", "4Gi", "--memory-limit", "6GiB"], r"--memory-limit '6GiB'"),
    ]
    for campaign, options, expected in cases:
        code, output = submit(campaign, *options)
        assert code == 2, output
        assert re.search(expected, " ".join(output.split())), output
    code, output = submit(
        campaign_folder(small_campaign, tmp_path / "e", **{"recon.algorithm": "sirt"}),
        "--gpu-workers",
        "1",
    )
    assert code == 0, output


def test_without_a_cluster_submit_says_so(
    small_campaign: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = campaign_folder(small_campaign, tmp_path / "a")
    result = runner.invoke(app, ["submit", "k8s", str(path)])
    assert result.exit_code == 2, result.output
    assert "no Kubernetes cluster is configured" in result.output
    assert "--dry-run" in result.output
