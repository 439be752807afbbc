"""Kubernetes manifests for a campaign, through the Dask operator (``kubernetes.dask.org/v1``).

``debond submit k8s CAMPAIGN.toml`` comes here. A run on Kubernetes is one
DaskJob: the operator creates a DaskCluster named after it (a scheduler, its
Service and a group of CPU workers), then a runner pod that runs ``debond run``
with ``DASK_SCHEDULER_ADDRESS`` pointing at that scheduler (the operator
injects it, and ``DASK_WORKER_NAME`` into every worker). Beside it, a
DaskWorkerGroup of GPU workers (``nvidia.com/gpu`` in their limits, the
``GPU`` resource advertised to Dask) and a DaskAutoscaler of the CPU workers
join the same cluster. ``deploy/k8s/`` holds the same objects as a kustomize
base with ``cpu`` and ``gpu`` overlays.

Every pod that reads or writes the campaign mounts one ReadWriteMany volume
claim at the same path: the campaign file, its raw inputs, its tables and a
local store live there. A store on ``s3://`` is reached with credentials
from a Secret (``AWS_ACCESS_KEY_ID`` and the others as environment
variables), never from the campaign file.

Everything here is a pure function of the campaign and the settings, apart
from :func:`apply`: nothing is contacted before the settings are checked
(:func:`check_settings`, :func:`check_campaign`, :func:`check_manifests`), and
each refusal names the setting.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml
from dask.utils import parse_bytes

from debond import __version__

if TYPE_CHECKING:
    from debond.campaign import Campaign

#: API group and version of the Dask operator's resources.
API_VERSION = "kubernetes.dask.org/v1"
#: The extended resource a GPU worker's container asks for (NVIDIA device plugin).
GPU_RESOURCE = "nvidia.com/gpu"
#: The Dask resource GPU workers advertise (``dask worker --resources GPU=1``).
DASK_GPU_RESOURCE = "GPU"
#: Ports of the scheduler (comm, dashboard) and of a worker's dashboard.
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
WORKER_DASHBOARD_PORT = 8788
#: Environment variables a store on ``s3://`` reads from the Secret, and whether each
#: must be there (the others are optional: a session token, an endpoint for a
#: non-AWS object store, a region).
CREDENTIALS = (
    ("AWS_ACCESS_KEY_ID", True),
    ("AWS_SECRET_ACCESS_KEY", True),
    ("AWS_SESSION_TOKEN", False),
    ("AWS_ENDPOINT_URL", False),
    ("AWS_DEFAULT_REGION", False),
)
#: Recon algorithms meant for CUDA workers (iterative: hours on CPU workers).
GPU_ALGORITHMS = ("sirt", "cgls")
#: Longest DaskCluster name the operator accepts (63 characters less "-scheduler").
MAX_NAME = 53

_NAME = re.compile(rf"^(?=.{{1,{MAX_NAME}}}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL = re.compile(r"^(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# An image reference, as the container runtimes parse it (distribution/reference's
# grammar): [registry[:port]/]path[:tag][@digest].
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_PATH}(?:/{_PATH})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)
# A Kubernetes quantity: a signed decimal number and a suffix (binary SI, decimal SI,
# or a decimal exponent).
_QUANTITY = re.compile(r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?P<suffix>.*)$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
#: Kubernetes memory suffixes and the same unit in Dask's words.
_DASK_UNITS = {"Ki": "KiB", "Mi": "MiB", "Gi": "GiB", "Ti": "TiB", "k": "kB", "M": "MB", "G": "GB"}
#: A Kubernetes variable reference in a command or its arguments: $(NAME), or $$ escaped.
_VARIABLE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class KubernetesError(ValueError):
    """A setting, a campaign or a manifest that cannot run on Kubernetes; names the setting."""


@dataclass(frozen=True)
class Settings:
    """What ``debond submit k8s`` renders for, besides the campaign.

    Attributes
    ----------
    name : str
        The DaskJob, and the DaskCluster the operator creates for it: a
        lowercase RFC 1123 label of at most :data:`MAX_NAME` characters.
    namespace : str
        Kubernetes namespace of every object.
    image : str
        Container image of the scheduler, the workers and the runner
        (``deploy/Dockerfile``), with a tag or digest.
    workers : int
        CPU workers (the cluster's default worker group), >= 0.
    gpu_workers : int
        GPU workers (a DaskWorkerGroup), >= 0; each takes one GPU.
    max_workers : int or None
        With a value above `workers`: a DaskAutoscaler lets the CPU workers
        grow to it. Default: no autoscaler.
    worker_memory : str
        Each worker container's memory limit, a Kubernetes quantity (``"8Gi"``).
    memory_limit : str or None
        Dask's memory limit of each worker (``dask worker --memory-limit``,
        e.g. ``"7GiB"``); default: the container's limit.
    worker_cpu : str
        CPU request and limit of each worker container (quantity).
    threads : int
        Threads per worker.
    claim : str
        The ReadWriteMany PersistentVolumeClaim holding the campaign.
    mount_path : str
        Where the claim is mounted in every pod (absolute).
    store_secret : str
        The Secret with a store's ``s3://`` credentials (:data:`CREDENTIALS`).
    """

    name: str = "debond"
    namespace: str = "default"
    image: str = f"debond:{__version__}"
    workers: int = 2
    gpu_workers: int = 0
    max_workers: int | None = None
    worker_memory: str = "8Gi"
    memory_limit: str | None = None
    worker_cpu: str = "1"
    threads: int = 1
    claim: str = "debond-data"
    mount_path: str = "/data"
    store_secret: str = "debond-store-credentials"


# ---------------------------------------------------------------- quantities


def parse_quantity(text: str, setting: str = "quantity") -> Decimal:
    """The value of a Kubernetes quantity (``"8Gi"``, ``"500m"``, ``"1e3"``).

    Parameters
    ----------
    text : str
        A quantity as Kubernetes writes it: a decimal number and a binary SI
        suffix (Ki … Ei), a decimal SI suffix (n, u, m, k, M, G, T, P, E) or a
        decimal exponent (``e3``).
    setting : str
        What the quantity is, named by the error.

    Returns
    -------
    Decimal
        The value in base units (bytes, cores, devices).

    Raises
    ------
    KubernetesError
        Naming `setting`: not a string, or not a quantity.

    Examples
    --------
    >>> parse_quantity("8Gi"), parse_quantity("500m"), parse_quantity("1.5e3")
    (Decimal('8589934592'), Decimal('0.500'), Decimal('1.5E+3'))
    """
    if not isinstance(text, str):
        raise KubernetesError(
            f"{setting} = {text!r} is not quoted (YAML read a {type(text).__name__}); expected "
            f"a string such as '{text}' (the Dask operator's schemas type quantities as strings)"
        )
    found = _QUANTITY.match(text)
    problem = f"{setting} = {text!r} is not a Kubernetes quantity; expected e.g. '8Gi' or '500m'"
    if found is None:
        raise KubernetesError(problem)
    number, suffix = Decimal(found["number"]), found["suffix"]
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    exponent = re.fullmatch(r"[eE]([+-]?[0-9]+)", suffix)
    if exponent is None:
        raise KubernetesError(problem)
    try:
        return number.scaleb(int(exponent[1]))
    except InvalidOperation:
        raise KubernetesError(problem) from None


def dask_memory(quantity: str) -> str:
    """A Kubernetes memory quantity in Dask's words (``"8Gi"`` → ``"8GiB"``).

    Examples
    --------
    >>> dask_memory("8Gi"), dask_memory("500M"), dask_memory("1000")
    ('8GiB', '500MB', '1000')
    """
    found = _QUANTITY.match(quantity)
    if found is not None and found["suffix"] in _DASK_UNITS:
        return found["number"] + _DASK_UNITS[found["suffix"]]
    return str(int(parse_quantity(quantity, "memory")))


# ---------------------------------------------------------------- settings


def job_name(campaign_name: str) -> str:
    """A DaskJob name from a campaign's ``[campaign] name``: ``debond-`` and its words.

    Examples
    --------
    >>> job_name("Si/graphite 2026")
    'debond-si-graphite-2026'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", campaign_name.lower()).strip("-")
    return f"debond-{slug}"[:MAX_NAME].rstrip("-") if slug else "debond"


def check_image(image: str, setting: str = "--image") -> str:
    """A container image reference with a tag or digest, else a :class:`KubernetesError`.

    Examples
    --------
    >>> check_image("registry.example.org:5000/team/debond:0.1.0")
    'registry.example.org:5000/team/debond:0.1.0'
    >>> check_image("Debond:0.1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    debond.kubernetes.KubernetesError: --image 'Debond:0.1' is not an image reference; ...
    """
    found = _IMAGE.match(image)
    if found is None or len(found["name"]) > 255:
        raise KubernetesError(
            f"{setting} {image!r} is not an image reference; expected "
            "[registry[:port]/]name[:tag][@digest] with a lowercase name, "
            "e.g. registry.example.org/debond:0.1.0"
        )
    if found["digest"] is None and found["tag"] in (None, "latest"):
        raise KubernetesError(
            f"{setting} {image!r} has no fixed version ({found['tag'] or 'no tag'}); expected "
            "a tag or digest, so that the runner and every worker run the same debond, "
            f"e.g. {found['name']}:{__version__}"
        )
    return image


def check_settings(settings: Settings) -> Settings:
    """The settings, once each is known to be valid; raises naming the first that is not.

    Raises
    ------
    KubernetesError
        Naming the option: a name or namespace that is not an RFC 1123 label,
        an image without a tag or digest or not an image at all, a count
        below zero or no workers at all, a maximum below the workers, a
        quantity that is not one, Dask's memory limit above the container's,
        a mount path that is not absolute.
    """
    if not _NAME.match(settings.name):
        raise KubernetesError(
            f"--name {settings.name!r}: expected a lowercase RFC 1123 label (a-z, 0-9, '-', "
            f"starting and ending with a letter or digit) of at most {MAX_NAME} characters"
        )
    if not _LABEL.match(settings.namespace):
        raise KubernetesError(
            f"--namespace {settings.namespace!r}: expected a lowercase RFC 1123 label "
            "(a-z, 0-9, '-') of at most 63 characters"
        )
    for option, claim in (("--claim", settings.claim), ("--store-secret", settings.store_secret)):
        if not _NAME.match(claim):
            raise KubernetesError(
                f"{option} {claim!r}: expected a lowercase RFC 1123 name (a-z, 0-9, '-')"
            )
    check_image(settings.image)
    for option, count, least in (
        ("--workers", settings.workers, 0),
        ("--gpu-workers", settings.gpu_workers, 0),
        ("--threads", settings.threads, 1),
    ):
        if count < least:
            raise KubernetesError(f"{option} must be at least {least}; got {count}")
    if settings.workers + settings.gpu_workers < 1:
        raise KubernetesError("--workers and --gpu-workers are both 0; expected at least 1 worker")
    if settings.max_workers is not None and settings.max_workers < settings.workers:
        raise KubernetesError(
            f"--max-workers {settings.max_workers} is below --workers {settings.workers}; "
            "expected at least as many"
        )
    if parse_quantity(settings.worker_cpu, "--worker-cpu") <= 0:
        raise KubernetesError(f"--worker-cpu {settings.worker_cpu!r} must be above 0")
    container = parse_quantity(settings.worker_memory, "--worker-memory")
    if container <= 0:
        raise KubernetesError(f"--worker-memory {settings.worker_memory!r} must be above 0")
    if settings.memory_limit is not None:
        check_memory_limit(settings.memory_limit, container, "--memory-limit", "--worker-memory")
    if not PurePosixPath(settings.mount_path).is_absolute():
        raise KubernetesError(
            f"--mount-path {settings.mount_path!r}: expected an absolute path such as /data"
        )
    return settings


def check_memory_limit(limit: str, container: Decimal, setting: str, container_setting: str) -> int:
    """Dask's memory limit of a worker in bytes, refused above its container's limit.

    A worker whose Dask limit is above its container's is killed by the
    kernel (OOMKilled) before Dask pauses or spills anything.

    Parameters
    ----------
    limit : str
        ``dask worker --memory-limit``: bytes with a unit (``"7GiB"``).
    container : Decimal
        The container's memory limit, bytes.
    setting, container_setting : str
        Where each came from, named by the error.
    """
    try:
        value = parse_bytes(limit)
    except (ValueError, TypeError):
        raise KubernetesError(
            f"{setting} {limit!r} is not a size; expected e.g. '7GiB' (the worker's share "
            "of its container's memory)"
        ) from None
    if value == 0:
        raise KubernetesError(
            f"{setting} {limit!r} means no limit to Dask: the worker would never spill or "
            f"pause before the container's limit ({container_setting}) kills it; expected a size"
        )
    if value > container:
        raise KubernetesError(
            f"{setting} {limit!r} ({value} bytes) is above {container_setting} "
            f"({int(container)} bytes): the container would be killed before Dask spills or "
            f"pauses; expected at most the container's limit"
        )
    return value


def gpu_request(campaign: Campaign) -> str | None:
    """The setting of `campaign` that asks for GPU workers, or None.

    An iterative reconstruction (``[recon] algorithm = "sirt"`` or
    ``"cgls"``) of a sample with projections is meant for CUDA workers: on
    CPU workers it takes hours. ``"auto"`` runs on either.
    """
    algorithm = campaign.stage_parameters("recon")["algorithm"]
    if algorithm in GPU_ALGORITHMS and any(s.txm is not None for s in campaign.samples):
        return f'[recon] algorithm = "{algorithm}"'
    return None


def check_campaign(campaign: Campaign, settings: Settings, shared_folder: Path) -> str:
    """Where the pods find the campaign file; raises naming what cannot run on the cluster.

    Parameters
    ----------
    campaign : Campaign
    settings : Settings
    shared_folder : Path
        The local folder that the volume claim holds (a local mount of the
        same share, or the copy uploaded to it): mounted at
        ``settings.mount_path`` in every pod.

    Returns
    -------
    str
        The campaign file's path in the pods.

    Raises
    ------
    KubernetesError
        A campaign file, raw input or local store outside `shared_folder`
        (the pods would not see it), a ``memory://`` store or one on another
        URL than ``s3://``, or a campaign asking for GPUs
        (:func:`gpu_request`) with ``--gpu-workers 0``.
    """
    shared = Path(os.path.realpath(shared_folder))
    where = f"not in the shared folder {shared} (the claim {settings.claim!r})"
    key = f"{campaign.path}: [campaign] store = {campaign.declared.campaign.store!r}"
    store = campaign.store_location
    if "://" in store:
        if not store.startswith("s3://"):
            raise KubernetesError(
                f"{key}: every pod of a Kubernetes cluster must reach the store; expected "
                "s3://bucket/… (credentials from the Secret --store-secret) or a path in "
                f"the shared folder {shared}"
            )
    elif not Path(os.path.realpath(store)).is_relative_to(shared):
        raise KubernetesError(
            f"{key} is a local path {where}: the workers run on other nodes; expected a "
            f"path in the shared folder, or s3://bucket/… (or --shared-folder naming the "
            "folder the claim holds)"
        )
    for what, path in campaign.inputs():
        if not Path(os.path.realpath(path)).is_relative_to(shared):
            raise KubernetesError(
                f"{campaign.path}: {what} {path} is {where}: the pods would not see it; "
                "expected every input in the shared folder (or --shared-folder naming the "
                "folder the claim holds)"
            )
    asked = gpu_request(campaign)
    if asked is not None and settings.gpu_workers == 0:
        raise KubernetesError(
            f"{campaign.path}: {asked} asks for GPU workers and --gpu-workers is 0; expected "
            '--gpu-workers 1 or more, or algorithm = "auto" or "fbp" for a CPU-only cluster'
        )
    relative = Path(os.path.realpath(campaign.path)).relative_to(shared)
    return str(PurePosixPath(settings.mount_path, *relative.parts))


# ---------------------------------------------------------------- rendering


def _volume(settings: Settings) -> dict[str, Any]:
    return {"name": "data", "persistentVolumeClaim": {"claimName": settings.claim}}


def _mount(settings: Settings) -> dict[str, Any]:
    return {"name": "data", "mountPath": settings.mount_path}


def _credentials(settings: Settings) -> list[dict[str, Any]]:
    return [
        {
            "name": variable,
            "valueFrom": {
                "secretKeyRef": {
                    "name": settings.store_secret,
                    "key": variable,
                    "optional": not required,
                }
            },
        }
        for variable, required in CREDENTIALS
    ]


def scheduler_spec(settings: Settings) -> dict[str, Any]:
    """The DaskCluster's ``scheduler``: its pod (``dask scheduler``) and its Service."""
    container = {
        "name": "scheduler",
        "image": settings.image,
        "args": [
            "dask",
            "scheduler",
            "--port",
            str(SCHEDULER_PORT),
            "--dashboard-address",
            f":{DASHBOARD_PORT}",
        ],
        "ports": [
            {"name": "tcp-comm", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
            {"name": "http-dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"port": "http-dashboard", "path": "/health"},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
        },
        "livenessProbe": {
            "httpGet": {"port": "http-dashboard", "path": "/health"},
            "initialDelaySeconds": 15,
            "periodSeconds": 20,
        },
        "resources": {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"cpu": "1", "memory": "2Gi"},
        },
    }
    return {
        "spec": {"containers": [container]},
        "service": {
            "type": "ClusterIP",
            "selector": {
                "dask.org/cluster-name": settings.name,
                "dask.org/component": "scheduler",
            },
            "ports": [
                {
                    "name": "tcp-comm",
                    "protocol": "TCP",
                    "port": SCHEDULER_PORT,
                    "targetPort": "tcp-comm",
                },
                {
                    "name": "http-dashboard",
                    "protocol": "TCP",
                    "port": DASHBOARD_PORT,
                    "targetPort": "http-dashboard",
                },
            ],
        },
    }


def worker_spec(settings: Settings, *, s3: bool, gpu: bool, replicas: int) -> dict[str, Any]:
    """A worker group's ``worker``: replicas and the pod (``dask worker``, the claim mounted).

    GPU workers ask for one ``nvidia.com/gpu`` each and advertise the Dask
    resource ``GPU=1``, so that the stages that use a GPU are scheduled there.
    """
    memory_limit = settings.memory_limit or dask_memory(settings.worker_memory)
    args = [
        "dask",
        "worker",
        "--name",
        "$(DASK_WORKER_NAME)",
        "--nthreads",
        str(settings.threads),
        "--memory-limit",
        memory_limit,
        "--dashboard-address",
        f":{WORKER_DASHBOARD_PORT}",
    ]
    limits = {"cpu": settings.worker_cpu, "memory": settings.worker_memory}
    if gpu:
        args += ["--resources", f"{DASK_GPU_RESOURCE}=1"]
        limits[GPU_RESOURCE] = "1"
    container: dict[str, Any] = {
        "name": "worker",
        "image": settings.image,
        "args": args,
        "ports": [
            {"name": "http-dashboard", "containerPort": WORKER_DASHBOARD_PORT, "protocol": "TCP"}
        ],
        "resources": {
            "requests": {"cpu": settings.worker_cpu, "memory": settings.worker_memory},
            "limits": limits,
        },
        "volumeMounts": [_mount(settings)],
    }
    if s3:
        container["env"] = _credentials(settings)
    pod: dict[str, Any] = {"containers": [container], "volumes": [_volume(settings)]}
    if gpu:
        pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return {"replicas": replicas, "spec": pod}


def runner_spec(settings: Settings, campaign_in_pod: str, *, s3: bool) -> dict[str, Any]:
    """The DaskJob's ``job``: the runner pod, ``debond run CAMPAIGN`` against the cluster."""
    container: dict[str, Any] = {
        "name": "runner",
        "image": settings.image,
        "args": ["debond", "run", campaign_in_pod],
        "volumeMounts": [_mount(settings)],
        "resources": {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"cpu": "1", "memory": "2Gi"},
        },
    }
    if s3:
        container["env"] = _credentials(settings)
    return {
        "spec": {
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [_volume(settings)],
        }
    }


def _metadata(settings: Settings, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": settings.namespace,
        "labels": {"app.kubernetes.io/name": "debond", "app.kubernetes.io/instance": settings.name},
    }


def render(settings: Settings, campaign_in_pod: str, *, s3: bool) -> list[dict[str, Any]]:
    """The manifests of a run, in the order they are applied.

    Parameters
    ----------
    settings : Settings
        Checked (:func:`check_settings`).
    campaign_in_pod : str
        The campaign file's path in the pods (:func:`check_campaign`).
    s3 : bool
        Whether the store is on ``s3://`` (the runner and the workers then
        read :data:`CREDENTIALS` from ``settings.store_secret``).

    Returns
    -------
    list of dict
        A DaskJob; a DaskWorkerGroup of GPU workers when
        ``settings.gpu_workers`` > 0; a DaskAutoscaler when
        ``settings.max_workers`` > ``settings.workers``.
    """
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": API_VERSION,
            "kind": "DaskJob",
            "metadata": _metadata(settings, settings.name),
            "spec": {
                "job": runner_spec(settings, campaign_in_pod, s3=s3),
                "cluster": {
                    "spec": {
                        "scheduler": scheduler_spec(settings),
                        "worker": worker_spec(
                            settings, s3=s3, gpu=False, replicas=settings.workers
                        ),
                    }
                },
            },
        }
    ]
    if settings.gpu_workers:
        docs.append(
            {
                "apiVersion": API_VERSION,
                "kind": "DaskWorkerGroup",
                "metadata": _metadata(settings, f"{settings.name}-gpu"),
                "spec": {
                    "cluster": settings.name,
                    "worker": worker_spec(settings, s3=s3, gpu=True, replicas=settings.gpu_workers),
                },
            }
        )
    if settings.max_workers is not None and settings.max_workers > settings.workers:
        docs.append(
            {
                "apiVersion": API_VERSION,
                "kind": "DaskAutoscaler",
                "metadata": _metadata(settings, settings.name),
                "spec": {
                    "cluster": settings.name,
                    "minimum": settings.workers,
                    "maximum": settings.max_workers,
                },
            }
        )
    return docs


def to_yaml(docs: Iterable[Mapping[str, Any]]) -> str:
    """Manifests as one YAML stream (``---`` between documents), keys in their order."""
    return "---\n".join(yaml.safe_dump(dict(doc), sort_keys=False) for doc in docs)


def manifests_for(
    campaign: Campaign, settings: Settings, shared_folder: Path
) -> list[dict[str, Any]]:
    """Check everything, then render: the manifests ``debond submit k8s`` prints or applies.

    Raises
    ------
    KubernetesError
        From :func:`check_settings`, :func:`check_campaign` or
        :func:`check_manifests`, before anything is contacted.
    """
    check_settings(settings)
    in_pod = check_campaign(campaign, settings, shared_folder)
    docs = render(settings, in_pod, s3=campaign.store_location.startswith("s3://"))
    check_manifests(docs)
    return docs


# ---------------------------------------------------------------- manifest checks


def _pod_specs(doc: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Each pod spec in an operator resource, with where it is (``DaskJob/x spec.job``)."""
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    spec = doc.get("spec", {})
    kind = doc.get("kind")
    found: list[tuple[str, Any]] = []
    if kind == "DaskJob":
        found.append((f"{name} spec.job.spec", spec.get("job", {}).get("spec")))
        spec = spec.get("cluster", {}).get("spec", {})
        name += " spec.cluster"
    if kind in ("DaskJob", "DaskCluster"):
        found.append((f"{name} spec.scheduler.spec", spec.get("scheduler", {}).get("spec")))
        found.append((f"{name} spec.worker.spec", spec.get("worker", {}).get("spec")))
    if kind == "DaskWorkerGroup":
        found.append((f"{name} spec.worker.spec", spec.get("worker", {}).get("spec")))
    return [(where, pod) for where, pod in found if isinstance(pod, Mapping)]


def option_value(args: Sequence[str], option: str) -> str | None:
    """The value of ``--option VALUE`` or ``--option=VALUE`` in a command line (the last one).

    Examples
    --------
    >>> option_value(["dask", "worker", "--nthreads", "2", "--nthreads=4"], "--nthreads")
    '4'
    """
    value = None
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(option + "="):
            value = arg.split("=", 1)[1]
    return value


def check_manifests(docs: Iterable[Mapping[str, Any]]) -> None:
    """The checks the operator's schemas cannot make, on every container of every pod.

    * Every resource quantity is a quoted string (the operator's schemas say
      ``type: string``; an unquoted ``1`` is an integer to YAML).
    * A ``dask worker`` whose ``--memory-limit`` is above its container's
      memory limit is refused.
    * A container that asks for ``nvidia.com/gpu`` runs ``dask worker
      --resources GPU=N`` with as many GPUs, and a worker advertising
      ``GPU`` asks for its GPUs.

    Raises
    ------
    KubernetesError
        Naming the resource, the container and the field.
    """
    for doc in docs:
        for where, pod in _pod_specs(doc):
            for container in pod.get("containers", []):
                _check_container(f"{where} container {container.get('name')!r}", container)


def _check_container(where: str, container: Mapping[str, Any]) -> None:
    resources = container.get("resources", {})
    for part in ("limits", "requests"):
        for resource, value in resources.get(part, {}).items():
            parse_quantity(value, f"{where}: resources.{part}.{resource}")
    args = [*container.get("command", []), *container.get("args", [])]
    if not is_dask_worker(args):
        return
    memory = resources.get("limits", {}).get("memory")
    limit = option_value(args, "--memory-limit")
    if memory is not None and limit not in (None, "auto") and not _is_fraction(limit):
        check_memory_limit(
            str(limit),
            parse_quantity(memory, f"{where}: resources.limits.memory"),
            f"{where}: --memory-limit",
            f"resources.limits.memory {memory!r}",
        )
    gpus = resources.get("limits", {}).get(GPU_RESOURCE)
    advertised = dict(
        item.split("=", 1) for item in (option_value(args, "--resources") or "").split() if item
    )
    asked = str(int(parse_quantity(gpus, GPU_RESOURCE))) if gpus is not None else None
    if asked != advertised.get(DASK_GPU_RESOURCE):
        raise KubernetesError(
            f"{where}: resources.limits.{GPU_RESOURCE} = {gpus!r} but the worker advertises "
            f"--resources {DASK_GPU_RESOURCE}={advertised.get(DASK_GPU_RESOURCE)}; expected "
            f"as many Dask {DASK_GPU_RESOURCE} as GPUs in the container's limits"
        )


def is_dask_worker(args: Sequence[str]) -> bool:
    """Whether a command line starts a Dask worker (``dask worker`` or ``dask-worker``).

    Examples
    --------
    >>> is_dask_worker(["dask", "worker", "--nthreads", "1"]), is_dask_worker(["dask-worker"])
    (True, True)
    >>> is_dask_worker(["debond", "run", "/data/worker.toml"])
    False
    """
    names = [PurePosixPath(arg).name for arg in args[:2]]
    return names[:1] == ["dask-worker"] or names == ["dask", "worker"]


def _is_fraction(limit: str) -> bool:
    """Whether a ``--memory-limit`` is a fraction of the machine's memory (``"0.8"``)."""
    try:
        return 0 < float(limit) <= 1
    except ValueError:
        return False


# ---------------------------------------------------------------- local and remote


def expand_variables(args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """A command line with Kubernetes' ``$(NAME)`` references replaced from `env`.

    As the kubelet does: ``$(NAME)`` of a defined variable becomes its value,
    an undefined one stays as written, ``$$`` becomes ``$``.

    Examples
    --------
    >>> expand_variables(["--name", "$(DASK_WORKER_NAME)", "$(UNSET)", "$$(x)"],
    ...                  {"DASK_WORKER_NAME": "w-0"})
    ['--name', 'w-0', '$(UNSET)', '$(x)']
    """

    def value(found: re.Match[str]) -> str:
        if found[0] == "$$":
            return "$"
        return env.get(found[1], found[0])

    return [_VARIABLE.sub(value, arg) for arg in args]


def describe(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per manifest: kind, name and what it runs."""
    lines = []
    for doc in docs:
        line = f"{doc['kind']}/{doc['metadata']['name']}"
        for where, pod in _pod_specs(doc):
            for container in pod.get("containers", []):
                args = [*container.get("command", []), *container.get("args", [])]
                part = where.rsplit(" ", 1)[-1].removesuffix(".spec")
                line += f"\n  {part}: {shlex.join(args)}"
        lines.append(line)
    return lines


def apply(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Create the manifests on the cluster of the current kubeconfig, through kr8s.

    Returns
    -------
    list of str
        ``Kind/name`` of each object created.

    Raises
    ------
    KubernetesError
        kr8s is not installed (the ``k8s`` extra), no cluster is configured
        (no kubeconfig, no service account), or the API server refused an
        object (the message names it and what the server said).
    """
    try:
        import kr8s
        from kr8s.objects import object_from_spec
    except ImportError:
        raise KubernetesError(
            "applying manifests needs kr8s, which is not installed; expected "
            "pip install 'debond[k8s]', or --dry-run to print them"
        ) from None
    try:
        api = kr8s.api()
    except Exception as error:  # kr8s raises ValueError, OSError or its own errors
        raise KubernetesError(
            f"no Kubernetes cluster is configured ({error}); expected a kubeconfig "
            "(KUBECONFIG or ~/.kube/config) or an in-cluster service account, or --dry-run "
            "to print the manifests"
        ) from None
    created: list[str] = []
    for doc in docs:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            object_from_spec(dict(doc), api=api, allow_unknown_type=True).create()
        except Exception as error:  # the API server's answer, whatever its type
            raise KubernetesError(
                f"the cluster refused {what}: {error}"
                + (f" (created before it: {', '.join(created)})" if created else "")
            ) from None
        created.append(what)
    return created
