"""Fixtures shared by the test packages."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from debond.synth import write_campaign
from tests.processes import Processes, scheduler_address, wait_for_workers

#: Seconds a scheduler and its workers may take to start (a loaded 2-core machine
#: needs tens of seconds to import dask in three processes).
STARTUP_S = 180.0
#: Worker processes the ``scheduler`` fixture starts.
WORKERS = 2

#: The real data sets beside a checkout (``../shared/data``), read by the tests
#: that check the image stages on real scans when ``DEBOND_REAL_DATA`` is unset.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "DEBOND_REAL_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["DEBOND_REAL_DATA"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def small_campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small synthetic campaign (seed 0), written once per test run.

    Shared by every test module: read it, never write into it (copy it first,
    as the runner's tests do).
    """
    folder = tmp_path_factory.mktemp("synth") / "small"
    write_campaign(folder, "small", seed=0)
    return folder


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[str]:
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1, all ready.

    Yields the scheduler's address once both workers have joined; fails, with
    every process's stderr, when a process exits or :data:`STARTUP_S` passes.
    """
    dask_cli = str(Path(sys.executable).with_name("dask"))
    info = tmp_path / "scheduler.json"
    processes = Processes(tmp_path)
    deadline = time.monotonic() + STARTUP_S
    try:
        processes.start(
            "scheduler",
            [
                dask_cli,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(info),
            ],
        )
        address = scheduler_address(info, processes, deadline)
        for i in range(WORKERS):
            processes.start(
                f"worker {i}",
                [
                    dask_cli,
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                ],
            )
        wait_for_workers(address, processes, WORKERS, deadline)
        yield address
    finally:
        processes.stop()
