"""One writer per store: a lock file in a local store's folder.

Two runs writing one store at once would replace each other's arrays while
they are written. A run therefore holds the store's lock file,
``<store>/debond.lock``, for as long as it writes: an exclusive ``flock`` on
the file, which the kernel releases when the process ends however it ends,
and in the file who holds it (PID, host, process start time, since when,
the command), for the message a second run gets.

A lock file left by a run that was killed names a process that no longer
runs; the next run takes it over and says so. One that names a process on
another host (a store on a shared volume) cannot be checked from here: it is
refused, and the message says which file to delete if that run is gone.

Stores at URLs (``s3://``, ``gs://``, ``memory://``) have no folder to lock
and object stores no exclusive create that all of them honour: no lock is
taken there (:func:`lock_file` is None), and the runner says so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from debond.storage.provenance import StoreError, now

__all__ = [
    "LOCK_NAME",
    "Holder",
    "StoreInUse",
    "check_free",
    "lock_file",
    "store_lock",
]

#: The lock file's name in the store's folder.
LOCK_NAME = "debond.lock"
#: How far a recorded process start time may be from the live process's, s.
START_TOLERANCE_S = 1.0
#: Attempts at a lock file that the previous holder removes as we open it.
ATTEMPTS = 20


class StoreInUse(StoreError, RuntimeError):
    """Another process holds the store's lock: a run is writing it."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a store's lock, as its lock file says.

    Attributes
    ----------
    pid : int
        Process id.
    host : str
        Host name.
    since : str
        ISO 8601 UTC time the lock was taken.
    started : float or None
        The process's start time (seconds since the epoch), which tells a
        live process from a later one that reuses its PID.
    command : str
        The command line of the process.
    """

    pid: int
    host: str
    since: str
    started: float | None = None
    command: str = ""

    def __str__(self) -> str:
        command = f" ({self.command})" if self.command else ""
        return f"PID {self.pid} on {self.host} since {self.since}{command}"

    def running(self) -> bool | None:
        """Whether the process runs: None when it is on another host (it cannot be told)."""
        if self.host != socket.gethostname():
            return None
        try:
            process = psutil.Process(self.pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            started = process.create_time()
        except psutil.NoSuchProcess:
            return False
        return self.started is None or abs(started - self.started) <= START_TOLERANCE_S

    @classmethod
    def this_process(cls) -> Holder:
        """This process, now."""
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            since=now(),
            started=psutil.Process().create_time(),
            command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        )

    @classmethod
    def from_text(cls, text: str) -> Holder | None:
        """The holder a lock file names; None for an empty or unreadable file."""
        try:
            record: Any = json.loads(text)
            return cls(
                pid=int(record["pid"]),
                host=str(record["host"]),
                since=str(record["since"]),
                started=None if record.get("started") is None else float(record["started"]),
                command=str(record.get("command", "")),
            )
        except (ValueError, TypeError, KeyError):
            return None


def lock_file(location: str | os.PathLike[str]) -> Path | None:
    """The lock file of a store: ``<folder>/debond.lock``; None for a URL (no lock)."""
    where = os.fspath(location)
    return None if "://" in where else Path(where) / LOCK_NAME


def _in_use(path: Path, found: Holder | None, alive: bool | None) -> StoreInUse:
    store = path.parent
    if found is None:
        return StoreInUse(
            f"store {store} is in use by another process (its lock file {path} is being "
            "written); expected no other run on this store: wait for it to finish"
        )
    if alive is None:
        return StoreInUse(
            f"store {store} is in use by {found}, as its lock file {path} says; debond "
            f"cannot tell from {socket.gethostname()} whether that run still goes on: if it "
            f"does not, delete {path}"
        )
    return StoreInUse(
        f"store {store} is in use by {found} (lock file {path}); expected no other run on "
        "this store: wait for that one to finish, or stop it"
    )


def check_free(location: str | os.PathLike[str]) -> None:
    """Raise :class:`StoreInUse` if a run holds the store's lock now. Nothing is written.

    A lock file left by a process that no longer runs is no obstacle (the
    next run takes it over); a URL is never locked.

    Examples
    --------
    >>> import tempfile
    >>> check_free(tempfile.mkdtemp())
    """
    path = lock_file(location)
    if path is None:
        return
    try:
        with path.open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                found = Holder.from_text(path.read_text(errors="replace"))
                raise _in_use(path, found, True) from None
            found = Holder.from_text(handle.read().decode(errors="replace"))
    except FileNotFoundError:
        return
    alive = None if found is None else found.running()
    if found is not None and alive is not False:
        raise _in_use(path, found, alive)


def _same_file(fd: int, path: Path) -> bool:
    """Whether `fd` is still the file at `path` (the previous holder may have removed it)."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (here.st_dev, here.st_ino)


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _write(fd: int, me: Holder) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(asdict(me)) + "\n").encode())
    os.fsync(fd)


def _acquire(path: Path, me: Holder, echo: Callable[[str], None]) -> int:
    """Open and lock the lock file, take over a stale one, write `me`; the open descriptor."""
    for _ in range(ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            found = Holder.from_text(_read(fd))
            os.close(fd)
            raise _in_use(path, found, True) from None
        if not _same_file(fd, path):  # removed by the holder we waited for: open the new one
            os.close(fd)
            continue
        found = Holder.from_text(_read(fd))
        alive = None if found is None else found.running()
        if found is not None and alive is not False:
            os.close(fd)
            raise _in_use(path, found, alive)
        if found is not None:
            echo(f"took over the lock {path}: it named {found}, which no longer runs")
        _write(fd, me)
        return fd
    raise StoreInUse(f"{path}: the lock file changed {ATTEMPTS} times while it was being taken")


@contextmanager
def store_lock(
    location: str | os.PathLike[str], echo: Callable[[str], None] = print
) -> Iterator[Path | None]:
    """Hold the store's lock while the block runs.

    Parameters
    ----------
    location : path or URL
        The store; its folder must exist. A URL takes no lock.
    echo : callable
        Told when a stale lock is taken over.

    Yields
    ------
    Path or None
        The lock file, or None for a URL.

    Raises
    ------
    StoreInUse
        (a ``RuntimeError``) naming the store, the holder's PID, host and
        start, and the lock file.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with store_lock(folder) as path:
    ...     try:
    ...         check_free(folder)
    ...     except StoreInUse as error:
    ...         print(f"in use by PID {os.getpid()} on" in str(error))
    True
    >>> path.exists()
    False
    """
    path = lock_file(location)
    if path is None:
        yield None
        return
    fd = _acquire(path, Holder.this_process(), echo)
    try:
        yield path
    finally:
        # removed before it is unlocked: whoever opened it meanwhile sees that it is gone
        if _same_file(fd, path):
            path.unlink()
        os.close(fd)
