"""Block-wise filters that equal the whole-array filter, for any chunking.

A neighbourhood filter (median, Gaussian, morphology) applied chunk by chunk
equals the same scipy filter on the whole array when every chunk sees a halo
at least as deep as the filter's reach, and the array's true edges are left
to scipy's own edge mode. :func:`map_exact` does both: neighbouring chunks
shorter than the halo are merged first (an axis shorter than the halo
becomes one chunk and needs none), then ``map_overlap(boundary="none")``
exchanges halos between chunks only, so a block on the edge arrives
unpadded and the kernel applies ``mode`` at the real edge.

Where a standard scipy filter has a dask-image counterpart
(``dask_image.ndfilters``: the same ``map_overlap(boundary="none")``, plus
CuPy chunks dispatched to cupyx), the stages call dask-image on the chunks
:func:`merge_chunks` gives, when :func:`halo_fits` says every axis is at least
as long as its halo. Otherwise, and for the stages' own kernels, they call
:func:`map_exact`: dask refuses a halo deeper than the whole axis ("The
overlapping depth 3 is larger than your array 2", a 2-row detector under a
7×7 median), where :func:`map_exact` takes the axis as one chunk without a
halo and gives scipy's result.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import zarr

__all__ = [
    "block_edges",
    "block_location",
    "halo_fits",
    "map_exact",
    "merge_chunks",
    "merge_small_chunks",
    "read_box",
]


def merge_small_chunks(chunks: Sequence[int], minimum: int) -> tuple[int, ...]:
    """Merge neighbouring chunks until each is at least ``minimum`` long.

    Like dask's ``ensure_minimum_chunksize`` but it never fails: an axis
    shorter than ``minimum`` becomes one chunk.

    Examples
    --------
    >>> merge_small_chunks((2, 2, 5, 1), 3)
    (4, 6)
    """
    merged: list[int] = []
    for c in chunks:
        if merged and merged[-1] < minimum:
            merged[-1] += c
        else:
            merged.append(c)
    if len(merged) > 1 and merged[-1] < minimum:
        last = merged.pop()
        merged[-1] += last
    return tuple(merged)


def merge_chunks(array: da.Array, depth: Mapping[int, int]) -> da.Array:
    """``array`` rechunked so that no chunk is shorter than its axis's halo.

    :func:`merge_small_chunks` on every axis with a halo; the array itself
    when nothing changes.

    Examples
    --------
    >>> merge_chunks(da.zeros((4, 23), chunks=(1, 2)), {1: 3}).chunks
    ((1, 1, 1, 1), (4, 4, 4, 4, 4, 3))
    """
    chunks = tuple(
        merge_small_chunks(c, depth.get(axis, 0)) if depth.get(axis, 0) else c
        for axis, c in enumerate(array.chunks)
    )
    return array if chunks == array.chunks else array.rechunk(chunks)


def halo_fits(shape: Sequence[int], depth: Mapping[int, int]) -> bool:
    """Whether every axis is at least as long as its halo (as ``map_overlap`` needs).

    Examples
    --------
    >>> halo_fits((3, 2, 40), {1: 3, 2: 3})
    False
    """
    return all(shape[axis] >= d for axis, d in depth.items())


def map_exact(
    array: da.Array,
    kernel: Callable[..., np.ndarray],
    depth: Mapping[int, int],
    *,
    dtype: Any,
    **kwargs: Any,
) -> da.Array:
    """``kernel`` over the chunks of ``array`` with halos ``depth`` per axis.

    Parameters
    ----------
    array : dask.array.Array
    kernel : callable
        ``kernel(block, **kwargs) -> ndarray`` of the block's shape; a scipy
        filter whose reach along axis ``a`` is at most ``depth[a]`` voxels.
    depth : mapping of int to int
        Halo per axis (axes left out get none).
    dtype : dtype-like
        Of the result.
    **kwargs
        Passed to ``kernel``.

    Returns
    -------
    dask.array.Array
        The input's chunks, merged where a chunk was shorter than the halo.
    """
    array = merge_chunks(array, depth)
    halo = {
        axis: (depth.get(axis, 0) if len(array.chunks[axis]) > 1 else 0)
        for axis in range(array.ndim)
    }
    return array.map_overlap(
        kernel,
        depth=halo,
        boundary="none",
        trim=True,
        allow_rechunk=False,
        dtype=dtype,
        meta=np.empty((0,) * array.ndim, dtype=dtype),
        **kwargs,
    )


def block_edges(chunks: Sequence[int]) -> np.ndarray:
    """The first voxel of every block along one axis, and the one past the last.

    Examples
    --------
    >>> block_edges((4, 4, 2)).tolist()
    [0, 4, 8, 10]
    """
    return np.cumsum((0, *chunks), dtype=np.int64)


def block_location(
    chunks: Sequence[Sequence[int]], index: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """Where block ``index`` of a chunked array lies: ``(start, stop)`` per axis.

    As ``block_info[0]["array-location"]`` of ``dask.array.map_blocks``.

    Examples
    --------
    >>> block_location(((4, 4, 2), (3,)), (2, 0))
    ((8, 10), (0, 3))
    """
    return tuple((sum(c[:i]), sum(c[: i + 1])) for c, i in zip(chunks, index, strict=True))


def read_box(array: zarr.Array, low: Sequence[int], high: Sequence[int]) -> np.ndarray:
    """The box ``[low, high)`` of a stored array, read one of its chunks at a time.

    Zarr decodes up to ``async.concurrency`` chunks (10) of one read at once;
    read chunk by chunk, a task holds one decoded chunk beside the box.

    Parameters
    ----------
    array : zarr.Array
        Any number of axes.
    low, high : sequences of int
        The box's first corner and the one past its last, per axis.

    Returns
    -------
    ndarray
        ``array[low:high]`` along every axis, of the array's dtype.
    """
    out = np.empty(tuple(int(b - a) for a, b in zip(low, high, strict=True)), array.dtype)
    edges = [
        [int(lo), *range((int(lo) // c + 1) * c, int(hi), c), int(hi)]
        for lo, hi, c in zip(low, high, array.chunks, strict=True)
    ]
    for piece in itertools.product(*(itertools.pairwise(e) for e in edges)):
        source = tuple(slice(a, b) for a, b in piece)
        target = tuple(slice(a - lo, b - lo) for (a, b), lo in zip(piece, low, strict=True))
        out[target] = array[source]
    return out
