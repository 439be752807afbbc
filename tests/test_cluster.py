"""The cluster connection, against real scheduler and worker processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from debond.cluster import SCHEDULER_VARIABLE, ClusterError, cluster

pytestmark = pytest.mark.distributed


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[str]:
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1."""
    dask_cli = Path(sys.executable).with_name("dask")
    info = tmp_path / "scheduler.json"
    processes = [
        subprocess.Popen(
            [
                str(dask_cli),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(info),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        for _ in range(2):
            processes.append(
                subprocess.Popen(
                    [
                        str(dask_cli),
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def _wait_for_workers(client, n: int) -> None:  # type: ignore[no-untyped-def]
    client.wait_for_workers(n, timeout=60)


def test_an_existing_cluster_runs_the_graph(scheduler: str) -> None:
    lines: list[str] = []
    data = np.random.default_rng(0).random((64, 64))
    with cluster(scheduler, echo=lines.append) as client:
        _wait_for_workers(client, 2)
        assert len(client.scheduler_info()["workers"]) == 2
        total = da.from_array(data, chunks=16).sum().compute()
    assert total == pytest.approx(data.sum())
    assert scheduler in lines[0]


def test_the_environment_variable_names_the_cluster(
    scheduler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SCHEDULER_VARIABLE, scheduler)
    with cluster() as client:
        assert client.scheduler.address == scheduler


def test_the_embedded_cluster_is_closed_on_exit() -> None:
    lines: list[str] = []
    with cluster(workers=1, echo=lines.append) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        assert client.submit(sum, [1, 2, 3]).result() == 6
    assert client.status == "closed"
    assert "embedded, 1 workers" in lines[0]


def test_an_unreachable_scheduler_is_named() -> None:
    with (
        pytest.raises(ClusterError, match=r"tcp://127.0.0.1:1.*--scheduler"),
        cluster("tcp://127.0.0.1:1", timeout_s=2),
    ):
        pass
