"""Where the Dask graphs run: an embedded LocalCluster or an existing cluster.

The default is a :class:`distributed.LocalCluster` sized to the machine, whose
scheduler, workers and dashboard listen on 127.0.0.1 only; an address given
with ``--scheduler`` (or the ``DASK_SCHEDULER_ADDRESS`` environment variable)
runs the same graphs on any existing cluster: a Kubernetes deployment (Dask
operator), an HPC allocation (dask-jobqueue), a scheduler started by hand.
An address is checked before any connection, so a malformed one is named
with the option or variable it came from.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


def check_address(address: str, origin: str) -> str:
    """A scheduler address, checked before any connection is tried.

    Parameters
    ----------
    address : str
        ``tcp://host:8786`` (the scheme may be left out: tcp), ``tls://…``,
        ``ws://…`` or ``wss://…``.
    origin : str
        Where it came from (``--scheduler`` or :data:`SCHEDULER_VARIABLE`),
        named by the error.

    Returns
    -------
    str
        The address, unchanged.

    Raises
    ------
    ClusterError
        Naming `origin` and the address: another scheme, no port or one that
        is not a number from 1 to 65535, or ``tls://`` without the
        certificates of :data:`TLS_SETTINGS` (the dask configuration).

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
        tls = Security().get_tls_config_for_role("client")
        if not (tls["ca_file"] and tls["cert"]):
            raise ClusterError(
                f"{where}: tls:// needs certificates and none are configured (dask config "
                f"{' and '.join(TLS_SETTINGS)}); expected a tcp:// address, or those settings"
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
    echo: Callable[[str], None] | None = None,
) -> Iterator[Client]:
    """A Dask client for the run; what it started is closed on exit.

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786``). Default: the
        ``DASK_SCHEDULER_ADDRESS`` environment variable, else an embedded
        LocalCluster listening on 127.0.0.1 only (scheduler, workers and
        dashboard).
    workers : int, optional
        Worker processes of the embedded cluster (default: one per core).
        Ignored for an existing cluster.
    threads_per_worker : int
        Threads per embedded worker. One by default: ASTRA and the NumPy
        kernels release the GIL unevenly, processes scale predictably.
    memory_limit : str or float
        Per embedded worker (``"auto"``: the machine's memory shared out).
    timeout_s : float
        How long to wait for an existing scheduler, seconds.
    echo : callable, optional
        Receives one line with the cluster's size and dashboard address.

    Yields
    ------
    distributed.Client

    Raises
    ------
    ClusterError
        When the address is malformed (:func:`check_address`) or the
        scheduler at it cannot be reached in time (the message names the
        address and where it came from).
    """
    address = scheduler or os.environ.get(SCHEDULER_VARIABLE) or None
    if address:
        origin = "--scheduler" if scheduler else SCHEDULER_VARIABLE
        check_address(address, origin)
        try:
            client = Client(address, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError) as error:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {address!r} (from {origin}) within "
                f"{timeout_s:g} s: {error}; start one with `dask scheduler` or leave "
                f"{origin} unset to run on an embedded cluster"
            ) from error
        try:
            if echo is not None:
                n = len(client.scheduler_info().get("workers", {}))
                echo(f"cluster: {address}, {n} workers, dashboard {client.dashboard_link}")
            yield client
        finally:
            client.close()
        return

    n_workers = workers or default_workers()
    if n_workers < 1:
        raise ClusterError(f"workers must be >= 1; got {n_workers}")
    with _sigint_ignored():  # the worker processes inherit it: Ctrl-C is the run's to handle
        local = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            processes=True,
            host=LOOPBACK,
            dashboard_address=f"{LOOPBACK}:0",
        )
    loggers = [logging.getLogger(name) for name in QUIET_AT_SHUTDOWN]
    levels = [logger.level for logger in loggers]
    try:
        with local, Client(local) as client:
            client.register_plugin(_QuietCancellations())
            if echo is not None:
                echo(f"cluster: embedded, {n_workers} workers, dashboard {client.dashboard_link}")
            try:
                yield client
            finally:
                # Closing breaks the heartbeats and streams between client,
                # scheduler and workers in whatever order; each would be logged
                # with a traceback (CommClosedError) that means nothing here.
                for logger in loggers:
                    logger.setLevel(logging.CRITICAL)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
