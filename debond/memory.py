"""Memory per task: the budget a worker gives one task, and blocks sized to fit it.

Every stage declares the peak memory of one task as a function of its block
shape and parameters (``Stage.peak_bytes``, the way HTTomo's methods declare
their memory estimators). The runner reads the workers' memory limit from the
cluster (:func:`task_budget`) and sets it for the run under the Dask
configuration key :data:`TASK_MEMORY_KEY`; a stage that chooses its own blocks
reads it there (:func:`task_bytes`) and takes the largest block whose peak fits
(:func:`largest_block`). A value set by the user under that key (``dask.config``
or the ``DASK_DEBOND__TASK_MEMORY`` environment variable) is kept: it overrides
what the cluster says.

The budget leaves room for what Dask itself keeps in a worker's memory: the
interpreter and its libraries, the inputs and results of the tasks around the
running one. Dask pauses a worker at 80 % of its limit and restarts it at 95 %.
One task per thread gets :data:`TASK_SHARE` of the limit, and, on a worker
process of its own, no more than :data:`ROOM_SHARE` of the room its libraries
leave under the pause threshold: with debond's libraries loaded a worker holds
about 350 MiB before its first task, a third of a 1 GiB worker, and tasks
sized to the limit alone drove such workers past 95 %.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dask

__all__ = [
    "DEFAULT_TASK_BYTES",
    "MIN_TASK_BYTES",
    "ROOM_SHARE",
    "TASK_MEMORY_KEY",
    "TASK_SHARE",
    "largest_block",
    "task_budget",
    "task_bytes",
]

#: Dask configuration key of the bytes one task may use (set by the runner).
TASK_MEMORY_KEY = "debond.task-memory"
#: Share of a worker's memory limit that one running task may use, per thread.
TASK_SHARE = 0.3
#: Share of the room under Dask's pause threshold, once a worker's libraries are
#: loaded, that one running task may use, per thread: the rest is for what grows
#: as the run goes (compiled kernels, the allocator's free lists, results
#: waiting for the next task).
ROOM_SHARE = 0.4
#: Fewer bytes than this for a task: the worker is too small to run debond.
MIN_TASK_BYTES = 64 * 2**20
#: Dask's pause threshold, a share of the limit, when the worker's is not known.
DASK_PAUSE = 0.8
#: A task's bytes when nothing says otherwise (no cluster, no configuration).
DEFAULT_TASK_BYTES = 256 * 2**20
#: Block edges are multiples of this (voxels), as the stored chunks are.
BLOCK_STEP = 16

PeakBytes = Callable[[tuple[int, ...], Mapping[str, Any]], float]


def task_budget(
    memory_limit: float | None,
    threads: int,
    held: float = 0.0,
    pause: float = DASK_PAUSE,
) -> int | None:
    """Bytes one task may use on a worker with this memory limit and thread count.

    Parameters
    ----------
    memory_limit : float or None
        The worker's limit, bytes (``scheduler_info()["workers"][…]["memory_limit"]``);
        0 or None: no limit.
    threads : int
        Tasks the worker runs at once.
    held : float
        Bytes the worker process holds before its tasks (its libraries
        loaded); 0 when not known (a worker in the client's process).
    pause : float
        Dask's pause threshold on that worker, a share of its limit
        (``distributed.worker.memory.pause``).

    Returns
    -------
    int or None
        ``min(TASK_SHARE × limit, ROOM_SHARE × (pause × limit − held)) / threads``;
        None without a limit.

    Raises
    ------
    ValueError
        Fewer than :data:`MIN_TASK_BYTES` per task: the worker's limit is too
        small for what it holds (the message gives both and a limit that would do).

    Examples
    --------
    >>> round(task_budget(2**30, 1) / 2**20)
    307
    >>> round(task_budget(2**30, 1, held=350 * 2**20) / 2**20)
    188
    >>> task_budget(0, 4) is None
    True
    """
    if not memory_limit:
        return None
    if threads < 1:
        raise ValueError(f"threads must be ≥ 1; got {threads!r}")
    limit = float(memory_limit)
    share = TASK_SHARE * limit
    if held > 0:
        share = min(share, ROOM_SHARE * (pause * limit - held))
    budget = int(share / threads)
    if budget < MIN_TASK_BYTES:
        # the smallest limit that meets both rules, rounded up to what is printed
        needed = threads * MIN_TASK_BYTES
        enough = needed / TASK_SHARE
        if held > 0:
            enough = max(enough, (held + needed / ROOM_SHARE) / pause)
        enough = math.ceil(100 * enough / 2**30) / 100 * 2**30
        raise ValueError(
            f"a worker with a memory limit of {limit / 2**20:.0f} MiB and {threads} thread(s) "
            f"holds {held / 2**20:.0f} MiB before its first task, which leaves "
            f"{max(budget, 0) / 2**20:.0f} MiB per task under Dask's pause threshold "
            f"({pause:.0%}); expected at least {MIN_TASK_BYTES / 2**20:.0f} MiB: give workers "
            f"a memory limit of at least {enough / 2**30:.2f} GiB, or fewer threads"
        )
    return budget


def task_bytes() -> int:
    """The bytes one task may use in this run: :data:`TASK_MEMORY_KEY`, else the default.

    Raises
    ------
    ValueError
        A configured value that is not a positive number of bytes.
    """
    value = dask.config.get(TASK_MEMORY_KEY, None)
    if value is None:
        return DEFAULT_TASK_BYTES
    parsed = dask.utils.parse_bytes(value) if isinstance(value, str) else value
    if isinstance(parsed, bool) or not isinstance(parsed, int | float) or parsed <= 0:
        raise ValueError(
            f"dask config {TASK_MEMORY_KEY} = {value!r}; expected a positive number of "
            "bytes (e.g. 512e6 or '512 MiB')"
        )
    return int(parsed)


def largest_block(
    shape: Sequence[int],
    halo: Sequence[int],
    peak: Callable[[tuple[int, ...]], float],
    budget: float,
    step: int = BLOCK_STEP,
) -> tuple[int, ...]:
    """The largest cubic block (edges clipped to ``shape``) whose task fits ``budget``.

    A block is ``min(edge, n)`` along each axis; an axis split into several
    blocks carries its halo on both sides, one taken whole needs none. The
    edges tried are the axes' lengths and the multiples of ``step`` below them,
    largest first; the smallest, ``max(step, halo)`` per axis, is returned
    when nothing fits.

    Parameters
    ----------
    shape : sequence of int
        The array's shape.
    halo : sequence of int
        Halo per axis, voxels.
    peak : callable
        Bytes of one task whose block (halo included) has the given shape.
    budget : float
        Bytes a task may use.
    step : int
        Edges are multiples of this.

    Returns
    -------
    tuple of int
        The block's shape, without the halo.

    Examples
    --------
    >>> largest_block((100, 100, 100), (0, 0, 0), lambda b: 4.0 * b[0] * b[1] * b[2], 4e6)
    (100, 100, 100)
    >>> largest_block((512, 512, 512), (8, 8, 8), lambda b: 4.0 * b[0] * b[1] * b[2], 4e6)
    (80, 80, 80)
    """
    if len(shape) != len(halo):
        raise ValueError(f"shape {tuple(shape)} and halo {tuple(halo)} differ in length")
    edges = sorted({*shape, *range(step, max(shape) + 1, step)}, reverse=True)
    smallest = tuple(min(n, max(step, h)) for n, h in zip(shape, halo, strict=True))
    for edge in edges:
        block = tuple(max(min(n, edge), s) for n, s in zip(shape, smallest, strict=True))
        padded = tuple(
            b + (2 * h if b < n else 0) for b, n, h in zip(block, shape, halo, strict=True)
        )
        if peak(padded) <= budget:
            return block
    return smallest
