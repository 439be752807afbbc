"""The readiness waits of the distributed fixtures, without a cluster."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.processes import Processes, scheduler_address


def test_a_scheduler_file_is_read_once_it_is_whole(tmp_path: Path) -> None:
    """The file exists, empty then half written, before it holds the address."""
    info = tmp_path / "scheduler.json"
    info.write_text("")
    whole = json.dumps({"type": "Scheduler", "address": "tcp://127.0.0.1:4321"})
    written = threading.Event()

    def write() -> None:
        info.write_text(whole[:10])
        time.sleep(0.2)
        info.write_text(whole)
        written.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        address = scheduler_address(info, Processes(tmp_path), time.monotonic() + 60)
    finally:
        writer.join()
    assert written.is_set() and address == "tcp://127.0.0.1:4321"


def test_a_process_that_exits_fails_the_wait_with_its_stderr(tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    script = "import sys; sys.stderr.write('no such interface'); sys.exit(3)"
    processes.start("scheduler", [sys.executable, "-c", script]).wait(timeout=60)
    with pytest.raises(pytest.fail.Exception) as failure:
        scheduler_address(tmp_path / "never.json", processes, time.monotonic() + 60)
    message = str(failure.value)
    assert "scheduler exited with status 3 while waiting for the scheduler file" in message
    assert "no such interface" in message


def test_the_deadline_fails_the_wait(tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    running = processes.start("scheduler", [sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        with pytest.raises(pytest.fail.Exception, match="held no scheduler address"):
            scheduler_address(tmp_path / "never.json", processes, time.monotonic() + 0.2)
    finally:
        processes.stop()
    assert running.returncode is not None
