"""Workers in SLURM jobs: a dask-jobqueue configuration, checked before any job is submitted.

``debond run CAMPAIGN.toml --cluster slurm`` starts a
:class:`dask_jobqueue.SLURMCluster` whose scheduler runs in the ``debond``
process and whose workers run in batch jobs (``sbatch``). Its settings are
dask-jobqueue's own, in its configuration format (the ``jobqueue.slurm``
section of a YAML file, ``deploy/hpc/slurm.yaml``), read from a file given
with ``--jobqueue-config`` or else from the dask configuration
(``~/.config/dask/jobqueue.yaml``).

A mistake in them would surface only once the jobs run, or never (a worker
that advertises a GPU its job did not ask for), so they are checked first,
each error naming the file and the setting: an unknown setting (a typo),
missing ``cores`` or ``memory``, more processes than cores, a worker memory
limit above the job's share of its memory, a ``job-mem`` below ``memory``,
a GPU request (``--gres=gpu…``, ``--gpus…``) without workers that advertise
the ``GPU`` resource, or the reverse.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask.config
import yaml
from dask.utils import format_bytes, parse_bytes

__all__ = [
    "CONFIG_SECTION",
    "GPU_RESOURCE",
    "SlurmError",
    "check_slurm_config",
    "gpu_directive",
    "load_slurm_config",
    "slurm_config",
    "worker_resources",
]

#: Where dask-jobqueue reads its SLURM settings in the dask configuration.
CONFIG_SECTION = "jobqueue.slurm"
#: The worker resource that stages using a GPU ask for (``dask worker --resources GPU=1``).
GPU_RESOURCE = "GPU"
#: ``#SBATCH`` options that ask for GPUs: ``--gres=gpu:2``, ``--gpus=1``, ``--gpus-per-node=4``,
#: ``--gpus-per-task=1``, ``-G 1``.
_GPU_DIRECTIVE = re.compile(r"^(--gres=(\S*,)?gpu\b|--gpus(-per-[a-z]+)?[= ]|-G\s*\d)")


class SlurmError(ValueError):
    """A SLURM configuration that cannot work; the message names the file and the setting."""


def _defaults() -> dict[str, Any]:
    """dask-jobqueue's own SLURM settings and their defaults (its ``jobqueue.yaml``)."""
    import dask_jobqueue  # registers its defaults in dask.config

    folder = Path(dask_jobqueue.__file__).parent
    shipped = yaml.safe_load((folder / "jobqueue.yaml").read_text(encoding="utf-8"))
    return dict(shipped["jobqueue"]["slurm"])


def load_slurm_config(path: Path | None) -> tuple[dict[str, Any], str]:
    """The SLURM settings: those of a jobqueue YAML file, or of the dask configuration.

    Parameters
    ----------
    path : Path, optional
        A YAML file in dask-jobqueue's format (``jobqueue: slurm: {cores: …}``).
        Default: the dask configuration's ``jobqueue.slurm`` section.

    Returns
    -------
    settings : dict
        dask-jobqueue's defaults overlaid with the file's settings.
    origin : str
        Where they came from (the file, or "the dask configuration"), for errors.

    Raises
    ------
    SlurmError
        A file that is missing, not YAML, or without a ``jobqueue.slurm`` mapping.
    """
    defaults = _defaults()
    if path is None:
        found = dask.config.get(CONFIG_SECTION, default={}) or {}
        return {**defaults, **found}, "the dask configuration"
    origin = str(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SlurmError(
            f"--jobqueue-config {path}: no such file; expected a dask-jobqueue YAML file "
            "such as deploy/hpc/slurm.yaml"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SlurmError(f"--jobqueue-config {path}: not readable as YAML: {error}") from None
    section = document
    for key in CONFIG_SECTION.split("."):
        section = section.get(key) if isinstance(section, Mapping) else None
    if not isinstance(section, Mapping):
        raise SlurmError(
            f"{origin}: no {CONFIG_SECTION} section; expected a dask-jobqueue configuration, "
            "'jobqueue:' then 'slurm:' then its settings (cores, memory, …)"
        )
    return {**defaults, **section}, origin


def gpu_directive(directives: Sequence[str]) -> str | None:
    """The first ``#SBATCH`` directive that asks for GPUs, or None.

    Examples
    --------
    >>> gpu_directive(["--exclusive", "--gres=gpu:a100:2"])
    '--gres=gpu:a100:2'
    >>> gpu_directive(["--gpus-per-node=4"]), gpu_directive(["--gres=nvme:1"])
    ('--gpus-per-node=4', None)
    """
    for directive in directives:
        if _GPU_DIRECTIVE.match(directive.strip()):
            return directive
    return None


def _option(arguments: Sequence[str], name: str) -> str | None:
    """The value of ``name`` in a worker's arguments (``--name X`` or ``--name=X``), or None."""
    for i, argument in enumerate(arguments):
        if argument == name and i + 1 < len(arguments):
            return arguments[i + 1]
        if argument.startswith(f"{name}="):
            return argument.split("=", 1)[1]
    return None


def worker_resources(arguments: Sequence[str]) -> dict[str, float]:
    """The resources a worker advertises (``--resources "GPU=1 MEM=2e9"``) in its arguments.

    Examples
    --------
    >>> worker_resources(["--resources", "GPU=1"])
    {'GPU': 1.0}
    >>> worker_resources(["--nthreads", "2"])
    {}
    """
    text = _option(arguments, "--resources")
    if not text:
        return {}
    found = {}
    for item in re.split(r"[,\s]+", text.strip()):
        name, _, value = item.partition("=")
        try:
            found[name] = float(value)
        except ValueError:
            raise SlurmError(
                f"worker-extra-args --resources {text!r}: {item!r} is not NAME=NUMBER"
            ) from None
    return found


def _strings(settings: Mapping[str, Any], key: str, origin: str) -> list[str]:
    value = settings.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SlurmError(
            f"{origin}: {CONFIG_SECTION}.{key} = {value!r}; expected a list of strings"
        )
    return list(value)


def _bytes(value: Any, key: str, origin: str) -> int:
    try:
        return int(parse_bytes(value) if isinstance(value, str) else value)
    except (ValueError, TypeError):
        raise SlurmError(
            f"{origin}: {CONFIG_SECTION}.{key} = {value!r} is not a memory size; expected "
            "e.g. '64GB' or '120GiB'"
        ) from None


def check_slurm_config(settings: Mapping[str, Any], origin: str) -> None:
    """Refuse SLURM settings that cannot work; nothing is submitted.

    Parameters
    ----------
    settings : mapping
        :func:`load_slurm_config`'s settings (the ``jobqueue.slurm`` keys).
    origin : str
        The file (or "the dask configuration"), named by every error.

    Raises
    ------
    SlurmError
        Naming `origin`, the setting (``jobqueue.slurm.<key>``), what it holds
        and what is expected.
    """
    known = _defaults()
    where = f"{origin}: {CONFIG_SECTION}"
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise SlurmError(
            f"{where}.{unknown[0]}: unknown setting; expected one of {', '.join(sorted(known))}"
        )
    for key in ("cores", "memory"):
        if settings.get(key) is None:
            raise SlurmError(f"{where}.{key} is missing; dask-jobqueue needs cores and memory")
    cores = settings["cores"]
    if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
        raise SlurmError(f"{where}.cores = {cores!r}; expected a whole number of cores, ≥ 1")
    processes = settings.get("processes") or 1
    if not isinstance(processes, int) or not 1 <= processes <= cores:
        raise SlurmError(
            f"{where}.processes = {processes!r}; expected worker processes per job from 1 to "
            f"cores ({cores})"
        )
    memory = _bytes(settings["memory"], "memory", origin)
    if settings.get("job-mem") is not None:
        job_mem = _bytes(settings["job-mem"], "job-mem", origin)
        if job_mem < memory:
            raise SlurmError(
                f"{where}.job-mem = {settings['job-mem']!r} is less than memory = "
                f"{settings['memory']!r}, which the workers may use; expected job-mem ≥ memory"
            )
    arguments = _strings(settings, "worker-extra-args", origin)
    limit = _option(arguments, "--memory-limit")
    if limit is not None and limit not in ("auto", "0"):
        per_worker = _bytes(limit, "worker-extra-args --memory-limit", origin)
        if per_worker * processes > memory:
            raise SlurmError(
                f"{where}.worker-extra-args --memory-limit {limit} × {processes} process(es) "
                f"= {format_bytes(per_worker * processes)} is more than the job's memory = "
                f"{settings['memory']!r}; expected at most {format_bytes(memory // processes)} "
                "per worker (or leave --memory-limit out: memory is shared out)"
            )
    directive = gpu_directive(_strings(settings, "job-extra-directives", origin))
    gpus = worker_resources(arguments).get(GPU_RESOURCE, 0.0)
    if directive is not None and gpus <= 0:
        raise SlurmError(
            f"{where}.job-extra-directives asks for GPUs ({directive!r}) but no worker "
            f"advertises one; expected worker-extra-args to hold '--resources', "
            f"'{GPU_RESOURCE}=1' (one GPU per worker process), so that the stages using a GPU "
            "run there"
        )
    if directive is None and gpus > 0:
        raise SlurmError(
            f"{where}.worker-extra-args advertises {GPU_RESOURCE}={gpus:g} but the job asks for "
            "no GPU; expected a job-extra-directives entry such as '--gres=gpu:1' (or remove "
            f"the {GPU_RESOURCE} resource on a CPU partition)"
        )


@contextmanager
def slurm_config(settings: Mapping[str, Any]) -> Iterator[None]:
    """The settings in force as dask's ``jobqueue.slurm`` while the block runs."""
    with dask.config.set({CONFIG_SECTION: dict(settings)}):
        yield
