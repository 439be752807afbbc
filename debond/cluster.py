"""Where the Dask graphs run: an embedded LocalCluster, an existing cluster, SLURM jobs.

The default is a :class:`distributed.LocalCluster` sized to the machine, whose
scheduler, workers and dashboard listen on 127.0.0.1 only; an address given
with ``--scheduler`` (or the ``DASK_SCHEDULER_ADDRESS`` environment variable)
runs the same graphs on any existing cluster: a Kubernetes deployment (Dask
operator), an HPC allocation, a scheduler started by hand. ``--cluster slurm``
starts a :class:`dask_jobqueue.SLURMCluster` (:mod:`debond.slurm`) whose
workers run in batch jobs. An address is checked before any connection, so a
malformed one is named with the option or variable it came from.

TLS: certificate files (:func:`tls_security`, the ``--tls-*`` options) or
dask's ``distributed.comm.tls.*`` configuration secure ``tls://`` between
this process, the scheduler and the workers.

Workers that advertise the ``GPU`` resource (``dask worker --resources
GPU=1``) receive the tasks of the stages that use a GPU
(:func:`stage_resources`); on a cluster without them the same tasks run
anywhere.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster, WorkerPlugin
from distributed.comm.addressing import parse_address, parse_host_port
from distributed.security import Security

#: Environment variable with the address of an existing scheduler.
SCHEDULER_VARIABLE = "DASK_SCHEDULER_ADDRESS"
#: The only interface the embedded cluster listens on: nothing outside the machine
#: may submit work to it or read its dashboard.
LOOPBACK = "127.0.0.1"
#: Schemes of a scheduler address that a client in another process can reach.
SCHEMES = ("tcp", "tls", "ws", "wss")
#: Dask settings that give tls:// its certificates.
TLS_SETTINGS = ("distributed.comm.tls.ca-file", "distributed.comm.tls.client.cert")
#: The options that give tls:// its certificate files, in the words of the errors.
TLS_OPTIONS = ("--tls-ca-file", "--tls-cert", "--tls-key")
#: The worker resource that the stages using a GPU ask for, one unit per task.
GPU_RESOURCE = "GPU"
#: Loggers silenced while the embedded cluster closes.
QUIET_AT_SHUTDOWN = (
    "distributed",
    "distributed.client",
    "distributed.core",
    "distributed.comm",
    "distributed.batched",
    "distributed.scheduler",
    "distributed.nanny",
    "distributed.worker",
    "tornado.application",
    "asyncio",
)


class ClusterError(RuntimeError):
    """The cluster could not be reached or started."""


def tls_security(ca_file: Path, cert: Path, key: Path | None = None) -> Security:
    """TLS from certificate files, for this process and any cluster it starts.

    Parameters
    ----------
    ca_file : Path
        The certificate authority that signed the scheduler's and the
        workers' certificates (PEM).
    cert : Path
        This process's certificate (PEM), signed by `ca_file`; it may hold the
        private key too.
    key : Path, optional
        The private key of `cert` (PEM), when `cert` does not hold it.

    Returns
    -------
    distributed.security.Security
        With encryption required: every connection is ``tls://``. The same
        certificate serves the client and, on an embedded or SLURM cluster,
        the scheduler and the workers.

    Raises
    ------
    ClusterError
        Naming the option (:data:`TLS_OPTIONS`) of a file that is missing or
        not a PEM file.
    """
    files = {"--tls-ca-file": ca_file, "--tls-cert": cert, "--tls-key": key}
    for option, path in files.items():
        if path is None:
            continue
        if not path.is_file():
            raise ClusterError(f"{option} {path}: no such file; expected a PEM file")
        head = path.read_bytes()[:4096]
        if b"-----BEGIN " not in head:
            raise ClusterError(
                f"{option} {path}: not a PEM file (no '-----BEGIN' line); expected a "
                "certificate or key in PEM format"
            )
    ca, certificate = str(ca_file), str(cert)
    private = None if key is None else str(key)
    return Security(
        tls_ca_file=ca,
        tls_client_cert=certificate,
        tls_client_key=private,
        tls_scheduler_cert=certificate,
        tls_scheduler_key=private,
        tls_worker_cert=certificate,
        tls_worker_key=private,
        require_encryption=True,
    )


def stage_resources(client: Client, gpu: bool) -> dict[str, float] | None:
    """The worker resources a stage's tasks ask for on this cluster.

    Parameters
    ----------
    client : distributed.Client
    gpu : bool
        Whether the stage uses a GPU where there is one
        (:attr:`debond.stages.base.Stage.gpu`).

    Returns
    -------
    dict or None
        ``{"GPU": 1}`` for a GPU stage when at least one worker advertises
        the :data:`GPU_RESOURCE` (``dask worker --resources GPU=1``): its
        tasks then run on those workers only, one per GPU unit. None
        otherwise: on a CPU-only cluster the same tasks run anywhere.
    """
    if not gpu:
        return None
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    advertised = (info.get("resources", {}).get(GPU_RESOURCE, 0) for info in workers.values())
    return {GPU_RESOURCE: 1} if any(amount >= 1 for amount in advertised) else None


def check_address(address: str, origin: str, security: Security | None = None) -> str:
    """A scheduler address, checked before any connection is tried.

    Parameters
    ----------
    address : str
        ``tcp://host:8786`` (the scheme may be left out: tcp), ``tls://…``,
        ``ws://…`` or ``wss://…``.
    origin : str
        Where it came from (``--scheduler`` or :data:`SCHEDULER_VARIABLE`),
        named by the error.
    security : Security, optional
        The certificates given as files (:func:`tls_security`); default:
        those of the dask configuration.

    Returns
    -------
    str
        The address, unchanged.

    Raises
    ------
    ClusterError
        Naming `origin` and the address: another scheme, no port or one that
        is not a number from 1 to 65535, or ``tls://`` without the
        certificates of :data:`TLS_SETTINGS` (the dask configuration) or
        :data:`TLS_OPTIONS`, or those options with an address that is not
        ``tls://``.

    Examples
    --------
    >>> check_address("tcp://10.0.0.5:8786", "--scheduler")
    'tcp://10.0.0.5:8786'
    >>> check_address("10.0.0.5", "--scheduler")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    debond.cluster.ClusterError: --scheduler '10.0.0.5': missing its port; expected ...
    """
    where = f"{origin} {address!r}"
    example = "expected an address such as tcp://host:8786"
    try:
        scheme, location = parse_address(address)
    except ValueError as error:
        raise ClusterError(f"{where}: {error}; {example}") from None
    if scheme not in SCHEMES:
        raise ClusterError(
            f"{where}: scheme {scheme!r} is not one of {', '.join(SCHEMES)}; {example}"
        )
    port = location.rpartition(":")[2] if ":" in location else ""
    if not port or port.endswith("]"):
        raise ClusterError(f"{where}: missing its port; {example}")
    if not port.isdigit():
        raise ClusterError(f"{where}: port {port!r} is not a number; {example}")
    if not 1 <= int(port) <= 65535:
        raise ClusterError(f"{where}: port {port} is out of range (1 to 65535); {example}")
    try:
        parse_host_port(location)
    except ValueError as error:
        raise ClusterError(f"{where}: not a host and port ({error}); {example}") from None
    if scheme == "tls":
        tls = (security or Security()).get_tls_config_for_role("client")
        if not (tls["ca_file"] and tls["cert"]):
            raise ClusterError(
                f"{where}: tls:// needs certificates and none are configured (dask config "
                f"{' and '.join(TLS_SETTINGS)}, or the options {', '.join(TLS_OPTIONS)}); "
                "expected a tcp:// address, or those certificates"
            )
    elif security is not None and security.require_encryption:
        raise ClusterError(
            f"{where}: certificates were given ({', '.join(TLS_OPTIONS)}) for a {scheme}:// "
            f"address; expected the scheduler's tls:// address (tls://{location})"
        )
    return address


def workers_in_process(client: Client) -> bool:
    """Whether the client's workers run in this process (an in-process LocalCluster).

    Only then do they share this process's memory, e.g. a ``memory://``
    store. Told by the scheduler's address: ``inproc://`` connects nothing
    across processes. A cluster of threads on ``tcp://`` counts as
    distributed.
    """
    return str(client.scheduler.address).startswith("inproc://")


def default_workers() -> int:
    """Worker processes of the embedded cluster: one per core the process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without affinity
        return max(1, os.cpu_count() or 1)


class _QuietCancellations(WorkerPlugin):
    """On every embedded worker: a task cancelled mid-run is not logged as a warning.

    When a run is stopped or a sample fails, its tasks are cancelled on
    purpose; the worker's state machine would print "Async instruction …
    ended with CancelledError" for each. Its errors are still logged.
    """

    name = "debond-quiet-cancellations"

    def setup(self, worker: object) -> None:
        logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while the embedded workers start, so that they inherit it.

    Ctrl-C in a terminal reaches the whole process group. Workers that took it
    would die mid-task with tracebacks, and the run could not cancel its work
    and say what finished; this process handles it (:func:`debond.runner.
    run_campaign`) and closes the workers itself. Only the main thread can
    change signal handlers; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def cluster(
    scheduler: str | None = None,
    *,
    workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float = "auto",
    timeout_s: float = 10.0,
    security: Security | None = None,
    slurm: bool = False,
    jobqueue_config: Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> Iterator[Client]:
    """A Dask client for the run; what it started is closed on exit.

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786``). Default: the
        ``DASK_SCHEDULER_ADDRESS`` environment variable, else an embedded
        LocalCluster listening on 127.0.0.1 only (scheduler, workers and
        dashboard), or SLURM jobs with `slurm`.
    workers : int, optional
        Worker processes of the embedded cluster (default: one per core), or
        of the SLURM cluster (default: those of one job). Ignored for an
        existing cluster.
    threads_per_worker : int
        Threads per embedded worker. One by default: ASTRA and the NumPy
        kernels release the GIL unevenly, processes scale predictably.
    memory_limit : str or float
        Per embedded worker (``"auto"``: the machine's memory shared out).
    timeout_s : float
        How long to wait for an existing scheduler, seconds.
    security : Security, optional
        TLS certificates (:func:`tls_security`); default: dask's configuration.
    slurm : bool
        Start a :class:`dask_jobqueue.SLURMCluster` (:mod:`debond.slurm`):
        its scheduler in this process, its workers in batch jobs.
    jobqueue_config : Path, optional
        With `slurm`: a dask-jobqueue YAML file (default: dask's configuration).
    echo : callable, optional
        Receives one line with the cluster's size and dashboard address.

    Yields
    ------
    distributed.Client

    Raises
    ------
    ClusterError
        When the address is malformed (:func:`check_address`), the scheduler
        at it cannot be reached in time (the message names the address and
        where it came from), or `slurm` is asked with an address.
    debond.slurm.SlurmError
        SLURM settings that cannot work (before any job is submitted).
    """
    address = scheduler or os.environ.get(SCHEDULER_VARIABLE) or None
    if slurm:
        if scheduler:
            raise ClusterError(
                f"--cluster slurm starts its own scheduler; --scheduler {scheduler!r} names "
                "another; expected one of the two"
            )
        with _slurm_cluster(workers, jobqueue_config, security, echo) as client:
            yield client
    elif address:
        origin = "--scheduler" if scheduler else SCHEDULER_VARIABLE
        with _existing_cluster(address, origin, security, timeout_s, echo) as client:
            yield client
    else:
        with _embedded_cluster(workers, threads_per_worker, memory_limit, security, echo) as client:
            yield client


def _refused_hint(address: str) -> str:
    """What to try when a connection to `address` failed: TLS for a tcp:// address."""
    if address.startswith("tls://"):
        return (
            "; check that the scheduler's certificate is signed by the --tls-ca-file given "
            "and that it listens on tls://"
        )
    return (
        "; a scheduler that requires TLS refuses tcp:// clients: give its tls:// address and "
        f"{', '.join(TLS_OPTIONS)}"
    )


@contextmanager
def _existing_cluster(
    address: str,
    origin: str,
    security: Security | None,
    timeout_s: float,
    echo: Callable[[str], None] | None,
) -> Iterator[Client]:
    """A client of the scheduler at `address` (checked first); closed on exit."""
    check_address(address, origin, security)
    try:
        client = Client(address, timeout=f"{timeout_s}s", security=security)
    except (OSError, TimeoutError) as error:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address!r} (from {origin}) within "
            f"{timeout_s:g} s: {error}{_refused_hint(address)}; start one with `dask "
            f"scheduler` or leave {origin} unset to run on an embedded cluster"
        ) from error
    try:
        if echo is not None:
            n = len(client.scheduler_info().get("workers", {}))
            echo(f"cluster: {address}, {n} workers, dashboard {client.dashboard_link}")
        yield client
    finally:
        client.close()


@contextmanager
def _quiet_shutdown() -> Iterator[None]:
    """The cluster's loggers silenced once the block ends, restored after.

    Closing breaks the heartbeats and streams between client, scheduler and
    workers in whatever order; each would be logged with a traceback
    (CommClosedError) that means nothing here.
    """
    try:
        yield
    finally:
        for name in QUIET_AT_SHUTDOWN:
            logging.getLogger(name).setLevel(logging.CRITICAL)


@contextmanager
def _restored_log_levels() -> Iterator[None]:
    """The cluster's loggers at their levels of before the block, whatever it changed."""
    loggers = [logging.getLogger(name) for name in QUIET_AT_SHUTDOWN]
    levels = [logger.level for logger in loggers]
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextmanager
def _embedded_cluster(
    workers: int | None,
    threads_per_worker: int,
    memory_limit: str | float,
    security: Security | None,
    echo: Callable[[str], None] | None,
) -> Iterator[Client]:
    """A LocalCluster on 127.0.0.1 (tls:// with `security`) and its client; closed on exit."""
    n_workers = workers or default_workers()
    if n_workers < 1:
        raise ClusterError(f"workers must be >= 1; got {n_workers}")
    tls: dict[str, Any] = {} if security is None else {"security": security, "protocol": "tls://"}
    with _sigint_ignored():  # the worker processes inherit it: Ctrl-C is the run's to handle
        local = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            processes=True,
            host=LOOPBACK,
            dashboard_address=f"{LOOPBACK}:0",
            **tls,
        )
    with _restored_log_levels(), local, Client(local, security=security) as client:
        client.register_plugin(_QuietCancellations())
        if echo is not None:
            echo(f"cluster: embedded, {n_workers} workers, dashboard {client.dashboard_link}")
        with _quiet_shutdown():
            yield client


@contextmanager
def _slurm_cluster(
    workers: int | None,
    jobqueue_config: Path | None,
    security: Security | None,
    echo: Callable[[str], None] | None,
) -> Iterator[Client]:
    """A SLURMCluster from checked settings, scaled to `workers`; its jobs cancelled on exit."""
    from debond.slurm import check_slurm_config, load_slurm_config, slurm_config

    settings, origin = load_slurm_config(jobqueue_config)
    check_slurm_config(settings, origin)
    per_job = settings.get("processes") or 1
    n_workers = workers or per_job
    if n_workers < 1:
        raise ClusterError(f"--workers must be at least 1; got {n_workers}")
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:  # pragma: no cover - the hpc extra is in the dev group
        raise ClusterError(
            "--cluster slurm needs dask-jobqueue, which is not installed; expected "
            "pip install 'debond[hpc]'"
        ) from None
    tls: dict[str, Any] = {} if security is None else {"security": security, "protocol": "tls://"}
    # in force while the cluster lives: dask-jobqueue reads it again for every job it submits
    with (
        slurm_config(settings),
        _restored_log_levels(),
        SLURMCluster(**tls) as jobs,
        Client(jobs, security=security) as client,
    ):
        jobs.scale(n=n_workers)
        if echo is not None:
            echo(
                f"cluster: SLURM ({origin}), {n_workers} workers in "
                f"{-(-n_workers // per_job)} job(s), dashboard {client.dashboard_link}; "
                "waiting for the first job to start"
            )
        client.wait_for_workers(1)
        with _quiet_shutdown():
            yield client
