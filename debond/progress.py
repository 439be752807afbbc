"""Progress of a run: tasks done out of the total per stage and sample, and worker memory.

Every graph a stage of a sample submits carries a Dask annotation naming the
run, the stage and the sample (:func:`dask.annotate` is local to the thread
that submits, so the samples' threads do not mix). On the scheduler,
:class:`TaskCounts` counts the tasks of each name as graphs arrive and as
they finish; this holds for the graphs the runner computes and for those a
table stage computes itself (``dask.compute`` inside the stage), and on an
existing cluster as on the embedded one.

A :class:`Tracker` asks the scheduler for those counts, and for each
worker's memory, twice a second, and hands them to a display:

* :class:`BarDisplay`: one bar per running stage of a sample, with tasks done
  out of the total and the time left (rich), for a terminal;
* :class:`LineDisplay`: when output is not a terminal, a plain line each time
  a stage of a sample passes another tenth of its tasks, e.g.
  ``segment c03        40 % (120/300 tasks), 12 s left``.

The tracker also keeps, per stage of a sample, its wall time, its task count
and the largest worker memory seen while it ran, for the run's log
(:mod:`debond.runlog`).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dask
from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

__all__ = [
    "ANNOTATION",
    "BarDisplay",
    "Display",
    "LineDisplay",
    "StageRecord",
    "TaskCounts",
    "Tracker",
    "format_duration",
]

#: The Dask annotation that names a task's run, stage and sample.
ANNOTATION = "debond_progress"
#: Seconds between two looks at the scheduler's counts.
POLL_S = 0.5


# ----------------------------------------------------------------- on the scheduler


class TaskCounts(SchedulerPlugin):
    """On the scheduler: tasks submitted and finished, per :data:`ANNOTATION` value.

    A task counts once, under the first name it arrives with: a task that is
    already in memory when a graph names it again counts as done at once. A
    task that errs counts as done (the runner reports the error); one that is
    cancelled never finishes.
    """

    name = "debond-task-counts"
    #: The scheduler's handler that answers :meth:`look` (a remote call; nothing logged).
    handler = "debond_progress"

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.total: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.waiting: dict[Any, str] = {}  # task key → its name, until it finishes

    def update_graph(  # type: ignore[override]  # the hook takes more keywords than it uses
        self, scheduler: Any, *, annotations: Mapping[str, Mapping[Any, Any]], **kwargs: Any
    ) -> None:
        for key, label in annotations.get(ANNOTATION, {}).items():
            if key in self.waiting:
                continue
            self.total[label] = self.total.get(label, 0) + 1
            task = scheduler.tasks.get(key)
            if task is not None and task.state == "memory":
                self.done[label] = self.done.get(label, 0) + 1
            else:
                self.waiting[key] = label

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        label = self.waiting.get(key)
        if label is None:
            return
        if finish in ("memory", "erred"):
            self.done[label] = self.done.get(label, 0) + 1
            del self.waiting[key]
        elif finish == "forgotten":
            del self.waiting[key]

    def look(self, labels: Sequence[str] = (), forget: Sequence[str] = ()) -> dict[str, Any]:
        """The counts of ``labels`` and each worker's memory; then drop those of ``forget``.

        Returns
        -------
        dict
            ``counts``: ``{name: [done, total]}`` (0, 0 for a name not seen
            yet); ``memory``: ``{worker address: process RSS in bytes}`` as
            the workers last reported it.
        """
        counts = {label: [self.done.get(label, 0), self.total.get(label, 0)] for label in labels}
        for label in forget:  # finished: their tasks are all done or cancelled
            self.total.pop(label, None)
            self.done.pop(label, None)
        memory = {w.address: int(w.memory.process) for w in self.scheduler.workers.values()}
        return {"counts": counts, "memory": memory}


def _install(dask_scheduler: Any) -> None:
    """Add :class:`TaskCounts` and its handler to the scheduler, unless there (another run's)."""
    if TaskCounts.name not in dask_scheduler.plugins:
        plugin = TaskCounts(dask_scheduler)
        dask_scheduler.add_plugin(plugin)
        dask_scheduler.handlers[TaskCounts.handler] = plugin.look


# ----------------------------------------------------------------- records


@dataclass
class StageRecord:
    """One stage of one sample as the tracker saw it run.

    Attributes
    ----------
    stage, sample : str
    started : float
        :func:`time.monotonic` at its start, s.
    seconds : float
        Wall time, s (up to now while it runs).
    done, total : int
        Its tasks finished and submitted so far (a table stage may submit
        several graphs, so ``total`` can grow).
    peak_bytes : int
        The largest resident memory of any one worker process seen while it
        ran, bytes (0 when none was seen).
    running : bool
    """

    stage: str
    sample: str
    started: float
    seconds: float = 0.0
    done: int = 0
    total: int = 0
    peak_bytes: int = 0
    running: bool = True

    @property
    def fraction(self) -> float:
        """Tasks done over tasks submitted (0 before any)."""
        return self.done / self.total if self.total else 0.0

    def seconds_left(self) -> float | None:
        """Time left at the pace so far, s: elapsed × left / done; None before a task is done."""
        if not self.done or self.done >= self.total:
            return None
        return self.seconds * (self.total - self.done) / self.done


def format_duration(seconds: float) -> str:
    """A duration for people: ``12 s``, ``3 min 20 s``, ``2 h 05 min``.

    Examples
    --------
    >>> [format_duration(s) for s in (0.4, 12.3, 200, 7500)]
    ['0 s', '12 s', '3 min 20 s', '2 h 05 min']
    """
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _columns(record: StageRecord) -> str:
    """Stage and sample in the columns of the runner's lines."""
    return f"{record.stage:<7} {record.sample:<10}"


# ----------------------------------------------------------------- displays


class Display(Protocol):
    """Where a run's lines and progress go."""

    def echo(self, line: str) -> None:
        """Show one line of the run (a stage starting, done, failed)."""

    def show(self, records: Sequence[StageRecord]) -> None:
        """Show the progress of the stages running now."""

    def close(self) -> None:
        """The run is over: leave the terminal as it was."""


class LineDisplay:
    """Progress as plain lines, for output that is not a terminal (a log, a pipe).

    A line is printed when a stage of a sample has passed another tenth of
    its tasks (10 %, 20 %, … 90 %; the runner's own ``done`` line says when
    it finished). A stage that submits a further graph (a table stage) has a
    larger total from then on, and its tenths count again from its new share.
    No control characters: every line ends with a newline and stands alone.

    Parameters
    ----------
    echo : callable
        Receives each line.
    step : int
        Per cent between two lines (default 10).
    """

    def __init__(self, echo: Callable[[str], None], step: int = 10) -> None:
        if not 1 <= step <= 100:
            raise ValueError(f"step must be 1 to 100 per cent; got {step}")
        self._echo = echo
        self.step = step
        self._shown: dict[tuple[str, str, float], tuple[int, int]] = {}  # → (total, per cent)

    def echo(self, line: str) -> None:
        self._echo(line)

    def show(self, records: Sequence[StageRecord]) -> None:
        for record in records:
            if not record.total:
                continue
            key = (record.stage, record.sample, record.started)
            total, last = self._shown.get(key, (record.total, 0))
            reached = int(100 * record.done // record.total) // self.step * self.step
            if total != record.total:  # a further graph: count from its share on
                total, last = record.total, reached
            if last < reached < 100:
                left = record.seconds_left()
                eta = "" if left is None else f", {format_duration(left)} left"
                self._echo(
                    f"{_columns(record)} {100 * record.fraction:3.0f} % "
                    f"({record.done}/{record.total} tasks){eta}"
                )
                last = reached
            self._shown[key] = (total, last)

    def close(self) -> None:
        self._shown.clear()


class BarDisplay:
    """Progress as bars in a terminal (rich): one per running stage of a sample.

    Each bar shows the stage and sample, the tasks done out of the total and
    the time left; the run's lines print above the bars. A bar goes when its
    stage ends.

    Parameters
    ----------
    console : rich.console.Console, optional
        Where to draw (default: standard output).
    """

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tasks"),
            TimeRemainingColumn(),
            console=console or Console(),
            transient=True,
        )
        self._bars: dict[tuple[str, str, float], TaskID] = {}
        self._started = False
        self._lock = threading.Lock()

    def echo(self, line: str) -> None:
        self.progress.console.print(
            line, markup=False, highlight=False, emoji=False, soft_wrap=True
        )

    def show(self, records: Sequence[StageRecord]) -> None:
        with self._lock:
            if not self._started:
                self.progress.start()
                self._started = True
            running = set()
            for record in records:
                key = (record.stage, record.sample, record.started)
                running.add(key)
                if key not in self._bars:
                    self._bars[key] = self.progress.add_task(_columns(record), total=None)
                total = record.total or None
                self.progress.update(self._bars[key], completed=record.done, total=total)
            for key in [k for k in self._bars if k not in running]:
                self.progress.remove_task(self._bars.pop(key))
            self.progress.refresh()

    def close(self) -> None:
        with self._lock:
            if self._started:
                self.progress.stop()
                self._started = False


# ----------------------------------------------------------------- the tracker


class Tracker:
    """Counts a run's tasks per stage and sample on the scheduler; reads worker memory.

    Use as a context manager around the run: it installs :class:`TaskCounts`
    on the scheduler (once; runs sharing a scheduler share it, each under its
    own names) and looks at the counts every :data:`POLL_S` s from a thread
    of its own, until the block ends. Each stage of a sample runs inside
    :meth:`stage`.

    Parameters
    ----------
    client : distributed.Client
    display : Display, optional
        Shown the running stages after each look (none: counts and memory are
        still recorded, for the log).
    interval_s : float
        Seconds between two looks.

    Attributes
    ----------
    records : list of StageRecord
        Every stage of a sample run so far, in the order they started.
    peak_bytes : int
        The largest worker memory seen during the whole run, bytes.
    workers_seen : set of str
        Addresses of the workers that reported memory.
    """

    def __init__(
        self, client: Client, display: Display | None = None, interval_s: float = POLL_S
    ) -> None:
        self.client = client
        self.display = display
        self.interval_s = interval_s
        self.run = uuid.uuid4().hex[:12]
        self.records: list[StageRecord] = []
        self.peak_bytes = 0
        self.workers_seen: set[str] = set()
        self.problem: str | None = None  # why the scheduler cannot count, if it cannot
        self._running: dict[str, StageRecord] = {}  # by their names on the scheduler
        self._named: dict[str, StageRecord] = {}  # every one, running or not
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Tracker:
        try:
            self.client.run_on_scheduler(_install)
        except Exception as error:  # e.g. a scheduler that cannot import debond
            self.problem = f"no task counts from the scheduler ({type(error).__name__}: {error})"
        self._thread = threading.Thread(target=self._watch, name="debond-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 * self.interval_s + 5)
        if self.display is not None:
            self.display.close()

    def seen(self) -> list[StageRecord]:
        """The records so far, copied (the samples' threads may still add to them)."""
        with self._lock:
            return list(self.records)

    def _label(self, stage: str, sample: str) -> str:
        return f"{self.run}/{stage}/{sample}"

    @contextlib.contextmanager
    def stage(self, stage: str, sample: str) -> Iterator[StageRecord]:
        """Around one stage of a sample: its graphs are annotated, counted and timed.

        Whatever the block submits to the cluster, from this thread, carries
        the stage's name (:data:`ANNOTATION`); the record is final when the
        block ends.
        """
        label = self._label(stage, sample)
        record = StageRecord(stage, sample, time.monotonic())
        with self._lock:
            self.records.append(record)
            self._running[label] = record
            self._named[label] = record
        try:
            with dask.annotate(**{ANNOTATION: label}):
                yield record
        finally:
            with self._lock:
                record.seconds = time.monotonic() - record.started
                record.running = False
                self._running.pop(label, None)
            self._look([label], forget=[label])  # its final count

    def _look(self, labels: list[str], forget: list[str]) -> None:
        """Ask the scheduler for counts and memory; update the records of ``labels``."""
        if self.problem is not None:  # the scheduler has no counts to give
            return
        try:
            call = getattr(self.client.scheduler, TaskCounts.handler)
            seen = self.client.sync(call, labels=labels, forget=forget)
        except Exception:  # the cluster is closing or lost: the run says so itself
            return
        peak = max(seen["memory"].values(), default=0)
        now = time.monotonic()
        with self._lock:
            self.peak_bytes = max(self.peak_bytes, peak)
            self.workers_seen.update(seen["memory"])
            for label in labels:
                record = self._named[label]
                record.done, record.total = seen["counts"].get(label, (record.done, record.total))
                record.peak_bytes = max(record.peak_bytes, peak)
                if record.running:
                    record.seconds = now - record.started

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                labels = list(self._running)
            self._look(labels, forget=[])
            if self.display is not None:
                with self._lock:
                    running = [r for r in self._running.values() if r.running]
                self.display.show(running)
