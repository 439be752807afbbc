"""One writer per store: a lock held by another process, a stale lock, a lock of another host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from debond.storage.lock import LOCK_NAME, StoreInUse, check_free, lock_file, store_lock

#: Seconds a child process may take to take the lock (imports on a loaded machine).
STARTUP_S = 120.0

HOLDER = """
import sys
from debond.storage.lock import store_lock
with store_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # holds the lock until its stdin closes (or it is killed)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process holding the lock of ``tmp_path / "s.zarr"``, ready once it says so."""
    store = tmp_path / "s.zarr"
    store.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    line = process.stdout.readline()  # blocks until the lock is held, or the process ends
    assert line == "locked\n", f"the holder exited with {process.wait(STARTUP_S)}"
    try:
        yield process
    finally:
        process.kill()
        process.wait(STARTUP_S)
        process.stdin.close()
        process.stdout.close()


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(STARTUP_S)
    return child.pid


def _write_lock(store: Path, **fields: object) -> Path:
    record = {"pid": _dead_pid(), "host": socket.gethostname(), "since": "2025-01-01T00:00Z"}
    path = store / LOCK_NAME
    path.write_text(json.dumps(record | fields))
    return path


def test_a_second_process_is_refused_naming_the_holder(
    holder: subprocess.Popen[str], tmp_path: Path
) -> None:
    store = tmp_path / "s.zarr"
    expected = rf"store {store} is in use by PID {holder.pid} on {socket.gethostname()} since "
    with pytest.raises(StoreInUse, match=expected):
        check_free(store)
    with pytest.raises(StoreInUse, match=expected) as info, store_lock(store):
        pass
    assert str(store / LOCK_NAME) in str(info.value)
    assert (store / LOCK_NAME).is_file()  # the holder's lock is untouched


def test_the_lock_of_a_killed_process_is_taken_over_saying_so(
    holder: subprocess.Popen[str], tmp_path: Path
) -> None:
    store = tmp_path / "s.zarr"
    holder.kill()
    holder.wait(STARTUP_S)
    assert (store / LOCK_NAME).is_file()  # left behind
    check_free(store)  # a stale lock is no obstacle
    said: list[str] = []
    with store_lock(store, said.append):
        recorded = json.loads((store / LOCK_NAME).read_text())
        assert recorded["pid"] == os.getpid()
    (line,) = said
    assert line.startswith(
        f"took over the lock {store / LOCK_NAME}: it named PID {holder.pid} on "
        f"{socket.gethostname()} since "
    )
    assert line.endswith(", which no longer runs")
    assert not (store / LOCK_NAME).exists()


def test_a_lock_naming_a_pid_that_is_not_running_is_taken_over(tmp_path: Path) -> None:
    path = _write_lock(tmp_path)
    dead = json.loads(path.read_text())["pid"]
    said: list[str] = []
    with store_lock(tmp_path, said.append):
        pass
    assert len(said) == 1 and f"it named PID {dead} on " in said[0]
    assert said[0].endswith("which no longer runs")


def test_a_reused_pid_is_not_the_holder(tmp_path: Path) -> None:
    """This process's PID, but another start time: the holder is gone."""
    _write_lock(tmp_path, pid=os.getpid(), started=time.time() - 3600)
    said: list[str] = []
    with store_lock(tmp_path, said.append):
        pass
    assert len(said) == 1 and "which no longer runs" in said[0]


def test_a_lock_of_another_host_is_refused_with_the_file_to_delete(tmp_path: Path) -> None:
    path = _write_lock(tmp_path, host="elsewhere.example", pid=4242)
    with pytest.raises(StoreInUse, match=r"in use by PID 4242 on elsewhere.example since") as info:
        check_free(tmp_path)
    assert f"if it does not, delete {path}" in str(info.value)
    with pytest.raises(StoreInUse, match=r"cannot tell"), store_lock(tmp_path):
        pass
    assert path.is_file()


def test_urls_take_no_lock() -> None:
    assert lock_file("s3://bucket/c.zarr") is None
    with store_lock("memory://c.zarr") as path:
        assert path is None
