"""Child processes for the distributed tests, waited on until they are ready.

Nothing here sleeps for a fixed time in the hope that a process is up: each
wait polls for the condition itself (a scheduler file that parses, workers
registered with the scheduler) and fails, with every process's stderr, as
soon as a process exits or the deadline passes.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

#: Seconds between two looks at a condition that is not yet true.
POLL_S = 0.05


class Processes:
    """Child processes whose stderr goes to files in ``folder``, shown on failure.

    Files rather than pipes: a pipe nobody reads fills up and stalls its writer.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.folder / f"{name.replace(' ', '-')}.stderr"
        with log.open("wb") as stderr:
            process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr)
        self.started.append((name, process, log))
        return process

    def check_running(self, waiting_for: str) -> None:
        """Fail if any process has exited (``waiting_for`` says for what)."""
        for name, process, _ in self.started:
            if process.poll() is not None:
                self.fail(
                    f"{name} exited with status {process.returncode} "
                    f"while waiting for {waiting_for}"
                )

    def fail(self, reason: str) -> None:
        """Fail the test with ``reason`` and the stderr of every process."""
        logs = "\n".join(
            f"--- {name} (pid {process.pid}) stderr:\n{log.read_text(errors='replace').strip()}"
            for name, process, log in self.started
        )
        pytest.fail(f"the test processes did not start: {reason}\n{logs}", pytrace=False)

    def stop(self) -> None:
        """Terminate the processes, last started first; kill what does not stop."""
        for _, process, _ in reversed(self.started):
            if process.poll() is None:
                process.terminate()
        for _, process, _ in self.started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def scheduler_address(info: Path, processes: Processes, deadline: float) -> str:
    """The address in the scheduler file ``info``, once the file is whole.

    ``dask scheduler --scheduler-file`` writes the file in place: it may exist
    and still be empty or half written, so it is read until it parses and
    names an address. ``deadline`` is a :func:`time.monotonic` time.
    """
    while True:
        try:
            address = json.loads(info.read_text())["address"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            address = None
        if isinstance(address, str) and address:
            return address
        processes.check_running(f"the scheduler file {info}")
        if time.monotonic() > deadline:
            processes.fail(f"{info} held no scheduler address by the deadline")
        time.sleep(POLL_S)


def wait_for_workers(address: str, processes: Processes, n: int, deadline: float) -> None:
    """Return once the scheduler at ``address`` has ``n`` running workers."""
    from distributed import Client

    timeout = max(1.0, deadline - time.monotonic())
    try:
        client = Client(address, timeout=f"{timeout:.0f}s")
    except OSError as error:  # TimeoutError included
        processes.check_running(f"a connection to {address}")
        processes.fail(f"no connection to the scheduler at {address}: {error}")
    with client:
        while True:
            try:
                # short waits, so that a worker that died is noticed at once
                client.wait_for_workers(n, timeout=1.0)
                return
            except TimeoutError:
                pass
            processes.check_running(f"{n} workers at {address}")
            if time.monotonic() > deadline:
                found = len(client.scheduler_info(n_workers=-1)["workers"])
                processes.fail(f"{found} of {n} workers joined {address} by the deadline")
