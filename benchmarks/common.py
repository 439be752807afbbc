"""Shared helpers of the benchmarks: timing, memory, machine info, output.

Every benchmark module in ``benchmarks/`` defines ``main(argv=None) -> dict``
and can be run as a script. The dict it returns is also written as JSON to
``benchmarks/results/<name>.json`` (git-ignored) and carries a ``summary``:
``{label: value}`` pairs, already formatted, that ``benchmarks/run.py`` prints
in its combined table.

Conventions (the project's benchmarking rules): machines are noisy, so times
are medians over repeats (the individual times are kept too); every speed
figure is a ratio against a reference measured in the same process, reported
with the absolute times, the peak memory and the problem size.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

BENCHMARKS_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
MIB = 1024.0 * 1024.0

#: Environment variables that set the thread count of BLAS / OpenMP libraries.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


@dataclass(frozen=True)
class Timing:
    """Wall times of repeated calls, seconds."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median,
            "min_s": self.min,
            "max_s": self.max,
            "repeats": len(self.times),
            "times_s": list(self.times),
        }


def time_call(func: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call (``time.perf_counter``) and its return value."""
    start = time.perf_counter()
    value = func()
    return time.perf_counter() - start, value


def time_repeats(func: Callable[[], Any], repeats: int, warmup: int = 0) -> tuple[Timing, Any]:
    """Call ``func`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns the :class:`Timing` and the value of the last call.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    for _ in range(warmup):
        func()
    times = []
    value = None
    for _ in range(repeats):
        seconds, value = time_call(func)
        times.append(seconds)
    return Timing(tuple(times)), value


def traced_peak(func: Callable[[], Any]) -> tuple[float, Any]:
    """Peak traced memory of one call in bytes (``tracemalloc``), and its value.

    NumPy reports its array buffers to tracemalloc, so this covers arrays as
    well as Python objects allocated during the call (not memory held by
    native libraries that bypass the Python allocators). Tracing slows
    allocation down: do not time the same call.
    """
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    try:
        value = func()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return float(peak - base), value


def max_rss_bytes() -> float:
    """Peak resident set size of this process so far (``ru_maxrss``), bytes."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return float(rss) if sys.platform == "darwin" else float(rss) * 1024.0


def high_water_mark(pid: int | str = "self") -> float | None:
    """Peak RSS of a process (``VmHWM``, Linux), bytes; None where unknown.

    ``pid`` defaults to the calling process (e.g. a Dask worker under
    ``Client.run``). The peak counts from the process's start or the last
    reset through ``/proc/<pid>/clear_refs``.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) * 1024.0  # kB
    except OSError:
        return None
    return None


def _git_commit() -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=BENCHMARKS_DIR,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=BENCHMARKS_DIR,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}


def machine_info() -> dict[str, Any]:
    """Cores, platform, Python and library versions, thread settings, git commit."""
    import numpy as np

    info: dict[str, Any] = {
        "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "thread_variables": {name: os.environ.get(name) for name in THREAD_VARIABLES},
        "git": _git_commit(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15_min"] = list(os.getloadavg())
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    for module in ("scipy", "pandas"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    return info


def source_digests(*modules: ModuleType) -> dict[str, str]:
    """SHA-256 (first 16 hex digits) of each module's source file, by module name.

    Read when called: record it next to the results, so a reader can tell which
    code was measured (the git commit alone misses uncommitted changes).
    """
    digests = {}
    for module in modules:
        path = getattr(module, "__file__", None)
        if path:
            digests[module.__name__] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return digests


def _plain(value: Any) -> Any:
    """JSON fallback for NumPy scalars and arrays, tuples and paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_result(name: str, payload: dict[str, Any], directory: Path | None = None) -> Path:
    """Write ``payload`` to ``<directory>/<name>.json`` (default ``benchmarks/results``)."""
    directory = RESULTS_DIR if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_plain) + "\n", encoding="utf-8")
    return path


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table: columns padded to their widest cell, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    numeric = [
        all(_is_number(row[i]) for row in rows if i < len(row)) and len(rows) > 0
        for i in range(len(headers))
    ]
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            row[i].rjust(widths[i]) if numeric[i] else row[i].ljust(widths[i])
            for i in range(len(row))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """Print :func:`format_table`."""
    print(format_table(rows, headers))


def fmt_seconds(seconds: float) -> str:
    """A duration with a unit that keeps 3 significant digits (ns … s)."""
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def fmt_mib(n_bytes: float) -> str:
    """Bytes as MiB."""
    return f"{n_bytes / MIB:.1f} MiB"


def process_cpu_seconds() -> float:
    """This process's CPU time (user + system, all threads), seconds."""
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def cluster_cpu_seconds(client: Any) -> float:
    """CPU seconds of every worker process and of this process (client and scheduler).

    ``client`` is a ``distributed.Client``; the workers report through ``Client.run``.
    """
    workers: dict[str, float] = client.run(process_cpu_seconds)
    return sum(workers.values()) + process_cpu_seconds()
