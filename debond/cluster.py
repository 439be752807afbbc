"""Where the Dask graphs run: an embedded LocalCluster or an existing cluster.

The default is a :class:`distributed.LocalCluster` sized to the machine; an
address given with ``--scheduler`` (or the ``DASK_SCHEDULER_ADDRESS``
environment variable) runs the same graphs on any existing cluster: a
Kubernetes deployment (Dask operator), an HPC allocation (dask-jobqueue), a
scheduler started by hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster

#: Environment variable with the address of an existing scheduler.
SCHEDULER_VARIABLE = "DASK_SCHEDULER_ADDRESS"


class ClusterError(RuntimeError):
    """The cluster could not be reached or started."""


def default_workers() -> int:
    """Worker processes of the embedded cluster: one per core the process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without affinity
        return max(1, os.cpu_count() or 1)


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
        LocalCluster.
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
        When the scheduler at the address cannot be reached in time (the
        message names the address and where it came from).
    """
    address = scheduler or os.environ.get(SCHEDULER_VARIABLE) or None
    if address:
        origin = "--scheduler" if scheduler else SCHEDULER_VARIABLE
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
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            processes=True,
            dashboard_address=":0",
        ) as local,
        Client(local) as client,
    ):
        if echo is not None:
            echo(f"cluster: embedded, {n_workers} workers, dashboard {client.dashboard_link}")
        yield client
