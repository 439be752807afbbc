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
running one. Dask pauses a worker at 80 % of its limit and restarts it at 95 %;
one task per thread gets :data:`TASK_SHARE` of the limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dask

__all__ = [
    "DEFAULT_TASK_BYTES",
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
#: A task's bytes when nothing says otherwise (no cluster, no configuration).
DEFAULT_TASK_BYTES = 256 * 2**20
#: Block edges are multiples of this (voxels), as the stored chunks are.
BLOCK_STEP = 16

PeakBytes = Callable[[tuple[int, ...], Mapping[str, Any]], float]


def task_budget(memory_limit: float | None, threads: int) -> int | None:
    """Bytes one task may use on a worker with this memory limit and thread count.

    Parameters
    ----------
    memory_limit : float or None
        The worker's limit, bytes (``scheduler_info()["workers"][…]["memory_limit"]``);
        0 or None: no limit.
    threads : int
        Tasks the worker runs at once.

    Returns
    -------
    int or None
        ``TASK_SHARE × memory_limit / threads``; None without a limit.

    Examples
    --------
    >>> round(task_budget(2**30, 1) / 2**20)
    307
    >>> task_budget(0, 4) is None
    True
    """
    if not memory_limit:
        return None
    if threads < 1:
        raise ValueError(f"threads must be ≥ 1; got {threads!r}")
    return int(TASK_SHARE * float(memory_limit) / threads)


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
