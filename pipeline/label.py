"""Label: connected components of a 3-D mask, block by block, unique over the volume.

The ``label`` stage of DESIGN.md (phases → particles). A boolean volume (e.g.
``phases == silicon``) becomes an int32 label volume in which every connected
particle has one label, however many blocks it crosses::

    mask (z, y, x), chunked
      │ 1 per block, persisted: cc3d labels 1..n_b (kept on the worker); voxel ─┐ one
      │   count and first voxel of each label, its labels on the volume's      │ dask.compute,
      │   outer faces, its 6 faces                                             │ small results
      │ 3 per block and each forward neighbour (across a face; also an edge    │ gathered
      │   for 18, a corner for 26): the pairs of labels that touch            ─┘
      │ 2 offsets: exclusive cumulative sum of n_b (blocks in C order)
      │ 4 union-find over the pairs on the client (scipy.sparse.csgraph)
      │ 5 merged volumes; components below ``min_volume_voxels`` dropped;
      │   renumbered 1..N in order of first appearance in C order of the volume
      ▼ 6 map_blocks on the kept block labels: the lookup table (one graph key) → labels

cc3d runs once per block: its labels stay where they were made, in the
narrowest unsigned dtype that holds the block's count (1 byte a voxel for up
to 255 labels, 2 for up to 65535), until the final labels are computed from
them; the lookup of step 6 is the only pass over them after the merge.

Touching particles (``split_touching`` with a size prior ``radius_range_um``):
after step 5, every component that can hold two particles of the prior (more
voxels than a ball of the smallest radius) and whose bounding box holds at
most ``max_split_voxels`` is split on its bounding box by a distance-transform
watershed (:func:`split_kernel`), in tasks that each take a batch of
components of at most ``max_split_voxels`` box voxels (crops of the lazy
labels); only the pieces' counts, volumes, first voxels and boxes reach the
client, which numbers components and pieces together by first voxel in C
order. The final labels paste, block by block, the pieces of the split
components whose boxes meet the block (the splitting tasks run again when
the labels are computed: no piece is kept between the passes). A
component's box, and so its pieces, do not depend on the chunking. A
component whose box exceeds ``max_split_voxels`` (a percolating network)
stays whole and is flagged by the measure stage.

From the store (:func:`label_stored`, what the label stage runs): the same
steps and the same labels, but no task keeps a block of labels for another.
Step 1's tasks read their own boxes of the stored mask and keep only what
step 3 needs (statistics, border labels, faces); the splitting tasks read
their components' boxes of the mask and write the pieces to a scratch array
in the store, one batch to its own chunks; the final labels' tasks read
their blocks again, label them again (cc3d numbers a block the same way
every time) and paste the pieces from the scratch array. Each task holds its
own block or box and nothing else, whatever the volume's size: cc3d runs
twice per block, and the pieces are written and read once, where the
in-memory form persists every block's labels and splits every candidate
twice.

This is the approach of dask-image's ``ndmeasure.label`` (label with offsets,
join across faces, relabel), with the merge done as a block-wise reduction:
one pair task per block, reading the faces of at most 13 neighbours, so the
graph grows linearly with the number of blocks (dask-image issue 391: its
graph construction fails on many blocks). Under 18 and 26 connectivity
voxels also touch diagonally across a block's edge or corner, into a block
that shares no face with theirs; those pairs are found too.

What reaches the client: per block its count; per provisional label two
integers (volume, first voxel); the touching pairs (bounded by the areas of
the faces between blocks, unique per block pair); the labels on the
volume's outer faces (unique per block). The faces themselves stay on the
workers, as do the block labels. The lookup table, one int32 per provisional
label, is built on the client and shipped once. Nothing of the volume's size
is materialised there (DESIGN.md, principles 1–3).

Numbering: cc3d numbers a block's labels in order of first appearance in C
order (checked, and enforced if a cc3d version did otherwise), and the final
renumbering orders the merged components by their first voxel in C order of
the whole volume. The result therefore does not depend on the chunking and,
with ``min_volume_voxels=0``, equals ``scipy.ndimage.label`` with
``generate_binary_structure(3, r)`` (r = 1, 2, 3 for 6, 18, 26) exactly.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import cc3d
import dask
import dask.array as da
import numba
import numpy as np
import zarr
from dask.highlevelgraph import HighLevelGraph
from scipy import ndimage, sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from debond.pipeline.blocks import block_edges, block_location, read_box
from debond.pipeline.checks import positive
from debond.pipeline.levels import check_size_prior
from debond.pipeline.segment import SILICON
from debond.storage import default_chunks

__all__ = [
    "CONNECTIVITIES",
    "LABEL_BLOCK_VOXELS",
    "MAX_SPLIT_VOXELS",
    "NECK_FRACTION",
    "SCRATCH_CHUNK",
    "SPLIT_BYTES_PER_VOXEL",
    "Labels",
    "StoredMask",
    "coarse_chunks",
    "label",
    "label_kernel",
    "label_particles",
    "label_stored",
    "split_kernel",
]

#: Neighbourhoods of a voxel: 6 (faces), 18 (faces and edges), 26 (faces, edges
#: and corners); ``scipy.ndimage.generate_binary_structure(3, r)`` with r = 1, 2, 3.
CONNECTIVITIES = (6, 18, 26)

#: The most nonzero coordinates of an offset to a neighbour, per connectivity.
_STEPS = {6: 1, 18: 2, 26: 3}

#: Pairs carry labels packed as ``block << _SHIFT | local`` (block: C-order index).
_SHIFT = 32
_LOCAL_MASK = (1 << _SHIFT) - 1
_INT32_MAX = int(np.iinfo(np.int32).max)

#: Rows of a block's or a piece's statistics: voxels, first voxel, z0, z1, y0, y1, x0, x1.
_N_STATS = 8

#: A neck splits two particles when it is narrower, in radius, than the smaller
#: particle's radius less ``NECK_FRACTION`` × the prior's smallest radius (the
#: dynamic ``h`` of the distance-transform maxima kept as markers).
NECK_FRACTION = 0.25

#: The least dynamic (voxels) of a distance-transform maximum kept as a marker: the
#: distance transform of a voxelised body has maxima of about this depth.
H_FLOOR = 0.5

#: Default :func:`label` ``max_split_voxels``: the largest bounding box (voxels) of a
#: component that is split, and the most box voxels one splitting task holds. The
#: distance transform, maxima and watershed need about :data:`SPLIT_BYTES_PER_VOXEL`
#: bytes per box voxel: 2**25 voxels (a 322³ box) take about 4 GB.
MAX_SPLIT_VOXELS = 2**25

#: Peak bytes of :func:`split_kernel` per voxel of a component's box, measured
#: (tests/test_memory.py): scikit-image's ``h_maxima`` holds about 105 of them,
#: scipy's distance transform 49 and the watershed 22, one after the other.
SPLIT_BYTES_PER_VOXEL = 120.0

#: :func:`label_particles`' ``block_voxels``: the mask's chunks are joined into labelling
#: blocks of at least about this many voxels (128³). A block costs a few tasks and a
#: few milliseconds of scheduling whatever its size, so 64³ chunks (a quarter of a
#: millisecond of cc3d each) spend most of their time in scheduling; a 128³ block holds
#: 2 MB of mask and 2–8 MB of labels while it is labelled.
LABEL_BLOCK_VOXELS = 2**21

#: :func:`label_stored`: elements per chunk of the scratch array of pieces (2 bytes
#: each); a splitting batch writes whole chunks of its own, a final-labels task reads
#: one at a time.
SCRATCH_CHUNK = 2**20


def _meta(dtype: Any, ndim: int = 3) -> np.ndarray:
    return np.empty((0,) * ndim, dtype=dtype)


def _one_per_block(x: da.Array) -> tuple[tuple[int, ...], ...]:
    """Chunks of an array with one element per block of ``x``."""
    return tuple((1,) * len(c) for c in x.chunks)


def _boxed(value: Any, ndim: int = 3) -> np.ndarray:
    """``value`` in a (1, 1, 1) object array: a block of a per-block dask result."""
    box = np.empty((1,) * ndim, dtype=object)
    box[(0,) * ndim] = value
    return box


def _check_connectivity(connectivity: Any) -> int:
    if (
        isinstance(connectivity, bool)
        or not isinstance(connectivity, int | np.integer)
        or connectivity not in CONNECTIVITIES
    ):
        raise ValueError(
            "connectivity must be 6 (faces), 18 (faces and edges) or 26 (faces, edges and "
            f"corners); got {connectivity!r}"
        )
    return int(connectivity)


def _check_binary_dtype(dtype: np.dtype[Any], name: str) -> None:
    if dtype != np.bool_ and not np.issubdtype(dtype, np.integer):
        raise TypeError(
            f"{name} must be boolean (or integers 0/1); got dtype {dtype}. Threshold or "
            "select a phase first, e.g. phases == 85"
        )


def _check_zero_one(block: np.ndarray, name: str) -> None:
    """Integers other than 0 and 1 are refused: a phase volume is not a mask."""
    if block.dtype == np.bool_ or block.size == 0:
        return
    low, high = block.min(), block.max()
    if low < 0 or high > 1:
        raise ValueError(
            f"{name} must be boolean or hold only 0 and 1; found values from {low} to {high}. "
            "Select a phase first, e.g. phases == 85"
        )


# ----------------------------------------------------------------- kernel


@numba.njit(cache=True, nogil=True)
def _block_stats_loop(
    labels: np.ndarray, n: int, boxes: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:  # pragma: no cover - compiled
    """One pass over a (Z, Y, X) block of labels 0..n: voxels, flat C-order index of the
    first voxel and half-open box (z0, z1, y0, y1, x0, x1; only with ``boxes``) of each
    label 0..n, and whether labels 1..n appear in that order."""
    counts = np.zeros(n + 1, np.int64)
    first = np.full(n + 1, -1, np.int64)
    box = np.zeros((6, n + 1), np.int64)
    highest = 0
    ordered = True
    nz, ny, nx = labels.shape
    flat = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                value = labels[z, y, x]
                if value != 0:
                    if counts[value] == 0:
                        first[value] = flat
                        if value != highest + 1:
                            ordered = False
                        highest = max(highest, value)
                        if boxes:
                            box[0, value], box[1, value] = z, z + 1
                            box[2, value], box[3, value] = y, y + 1
                            box[4, value], box[5, value] = x, x + 1
                    elif boxes:
                        box[1, value] = z + 1  # z only grows
                        box[2, value] = min(box[2, value], y)
                        box[3, value] = max(box[3, value], y + 1)
                        box[4, value] = min(box[4, value], x)
                        box[5, value] = max(box[5, value], x + 1)
                    counts[value] += 1
                flat += 1
    return counts, first, box, ordered


@numba.njit(cache=True, nogil=True)
def _lookup_loop(labels: np.ndarray, table: np.ndarray) -> np.ndarray:  # pragma: no cover
    """``table[labels]`` for a (Z, Y, X) block (one pass, no intermediate index array)."""
    out = np.empty(labels.shape, table.dtype)
    nz, ny, nx = labels.shape
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                out[z, y, x] = table[labels[z, y, x]]
    return out


def _block_stats(
    labels: np.ndarray, n: int, boxes: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Voxels (n,), flat C-order index of the first voxel (n,) and half-open boxes
    (6, n) of labels 1..n of a block (boxes zero unless asked), all int64; None when
    the labels are not numbered in order of first appearance."""
    counts, first, box, ordered = _block_stats_loop(np.ascontiguousarray(labels), n, boxes)
    if not ordered:
        return None
    return counts[1:], first[1:], box[:, 1:]


def _narrow(labels: np.ndarray, n: int) -> np.ndarray:
    """``labels`` (0..n) in the narrowest unsigned integer dtype that holds ``n``."""
    for dtype in (np.uint8, np.uint16):
        if n <= np.iinfo(dtype).max:
            return labels.astype(dtype)
    return labels.astype(np.uint32, copy=False)


def _label_block(
    mask: np.ndarray, connectivity: int, boxes: bool = False
) -> tuple[np.ndarray, int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """cc3d labels of one block numbered in order of first appearance in C order, in the
    narrowest unsigned dtype that holds their number (:func:`_narrow`), their number
    and their :func:`_block_stats` (voxels, first voxel, boxes if asked; local)."""
    block = np.ascontiguousarray(mask)
    if block.size == 0:
        empty = np.empty(0, np.int64)
        return np.zeros(block.shape, np.uint8), 0, (empty, empty, np.empty((6, 0), np.int64))
    if connectivity == 26 and min(block.shape) == 1:
        # On a block one voxel thick, 26 and 18 are the same neighbourhood; cc3d 4.1
        # fails ("cannot be mapped to union-find array") on some such blocks with 26.
        connectivity = 18
    connected_components: Any = cc3d.connected_components  # its stubs want a Literal
    labels, n = connected_components(
        block, connectivity=connectivity, return_N=True, out_dtype=np.uint32, binary_image=True
    )
    n = int(n)
    if n > _INT32_MAX:
        raise ValueError(f"mask block of shape {block.shape} has {n} components, over int32")
    labels = _narrow(labels, n)
    stats = _block_stats(labels, n, boxes)
    if stats is None:  # cc3d numbers so today; keep the contract if a version does not
        values, first_index = np.unique(labels.ravel(), return_index=True)
        keep = values != 0
        order = np.argsort(first_index[keep])
        table = np.zeros(n + 1, labels.dtype)
        table[values[keep][order]] = np.arange(1, n + 1, dtype=labels.dtype)
        labels = table[labels]
        stats = _block_stats(labels, n, boxes)
        assert stats is not None
    return labels, n, stats


def label_kernel(mask: np.ndarray, connectivity: int = 6) -> tuple[np.ndarray, int]:
    """Connected components of one block (cc3d), numbered like ``scipy.ndimage.label``.

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool, or of integers holding only 0 and 1
        Foreground where true.
    connectivity : {6, 18, 26}
        Voxels sharing a face (6), a face or an edge (18), or a face, an edge
        or a corner (26) are connected; default 6.

    Returns
    -------
    labels : (Z, Y, X) ndarray of int32
        0 for background, 1..n for the components, numbered in order of first
        appearance in C order (as scipy.ndimage.label numbers them).
    n : int
        The number of components.

    Raises
    ------
    ValueError
        ``mask`` not 3-D or holding integers other than 0 and 1, ``connectivity``
        not 6, 18 or 26.
    TypeError
        ``mask`` neither boolean nor integer.

    Examples
    --------
    >>> m = np.zeros((1, 3, 3), bool)
    >>> m[0, 0, 0] = m[0, 1, 1] = m[0, 2, 0] = True
    >>> label_kernel(m)[1], label_kernel(m, connectivity=26)[1]
    (3, 1)
    """
    connectivity = _check_connectivity(connectivity)
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D (z, y, x); got shape {mask.shape}")
    _check_binary_dtype(mask.dtype, "mask")
    _check_zero_one(mask, "mask")
    labels, n, _ = _label_block(mask, connectivity)
    return labels.astype(np.int32), n


# ------------------------------------------------------------ block tasks


class _Block(NamedTuple):
    """One labelled block: its local labels (kept on the worker that made them), its
    statistics, its labels on the volume's outer faces and its six faces."""

    labels: np.ndarray | None  # local labels 0..n, narrowest unsigned dtype; None: not kept
    stats: np.ndarray  # (8, n) int64: voxels, global C-order index of the first voxel, box
    border: np.ndarray  # local labels on the volume's outer faces, unique
    faces: tuple[np.ndarray, ...]  # 6 planes of local labels: axis 0 first, last, axis 1 …


def _describe_block(
    mask: np.ndarray,
    location: Sequence[tuple[int, int]],
    shape: Sequence[int],
    connectivity: int,
    boxes: bool,
) -> _Block:
    """Label one block (cc3d, once) at ``location`` (``(start, stop)`` per axis) of a
    volume of ``shape``: its labels, statistics, border labels and faces. Bounding boxes
    are measured only with ``boxes`` (the splitting needs them); else their rows are 0."""
    labels, n, (volumes, first, local_boxes) = _label_block(mask, connectivity, boxes)
    coords = np.unravel_index(first, labels.shape)
    global_first = np.ravel_multi_index(
        tuple(c + start for c, (start, _) in zip(coords, location, strict=True)), tuple(shape)
    )
    stats = np.zeros((_N_STATS, n), np.int64)
    stats[0] = volumes
    stats[1] = global_first
    if boxes:
        origin = np.repeat([start for start, _ in location], 2)
        stats[2:] = local_boxes + origin[:, None]
    faces = tuple(
        np.ascontiguousarray(np.take(labels, side, axis=axis))
        for axis in range(3)
        for side in (0, -1)
    )
    outer = [
        faces[2 * axis + k]
        for axis, (start, stop) in enumerate(location)
        for k, touches in enumerate((start == 0, stop == shape[axis]))
        if touches
    ]
    border = np.unique(np.concatenate([face.ravel() for face in outer] + [np.zeros(1, np.int32)]))
    return _Block(labels, stats, border[1:], faces)


def _block_kernel(
    mask: np.ndarray, connectivity: int, boxes: bool, block_info: dict[Any, Any] | None = None
) -> np.ndarray:
    """:func:`_describe_block` of one block of a dask mask, boxed in a (1, 1, 1) object
    array; its labels are kept (persisted) for the final lookup."""
    _check_zero_one(mask, "mask")
    assert block_info is not None
    location, shape = block_info[0]["array-location"], block_info[0]["shape"]
    return _boxed(_describe_block(mask, location, shape, connectivity, boxes))


def _faces_kernel(block: np.ndarray) -> np.ndarray:
    """The six faces of a :func:`_block_kernel` result, boxed (what neighbours read)."""
    kept: _Block = block.item()
    return _boxed(kept.faces)


def _forward_offsets(connectivity: int) -> list[tuple[int, int, int]]:
    """Offsets to the neighbouring blocks whose voxels can touch a block's, one of each
    opposite pair (first nonzero component +1): faces (3), edges (6, from 18), corners
    (4, at 26)."""
    most = _STEPS[connectivity]
    offsets = []
    for dz, dy, dx in itertools.product((-1, 0, 1), repeat=3):
        nonzero = [o for o in (dz, dy, dx) if o]
        if nonzero and nonzero[0] == 1 and len(nonzero) <= most:
            offsets.append((dz, dy, dx))
    return offsets


def _side_slices(step: int, length: int) -> tuple[slice, slice]:
    """Slices of the lower and upper regions along one axis for an in-region shift."""
    if step >= 0:
        return slice(0, length - step), slice(step, length)
    return slice(-step, length), slice(0, length + step)


def _touching_pairs(
    lower: tuple[np.ndarray, ...],
    upper: tuple[np.ndarray, ...],
    offset: tuple[int, int, int],
    connectivity: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Local labels ``(a, b)`` of ``lower`` and ``upper`` (the faces of two blocks, the
    second at ``offset`` from the first) that touch under ``connectivity``, one row per
    touching voxel pair found.

    The regions that can touch are the lower block's last plane along the first
    nonzero axis of ``offset`` against the upper block's first plane, narrowed
    to an edge line or a corner voxel along the other nonzero axes; along the
    zero axes of ``offset`` the voxels may also be shifted by ±1 as far as the
    connectivity allows (at most 1, 2 or 3 nonzero steps in all).
    """
    axis = next(a for a, o in enumerate(offset) if o)
    others = [a for a in range(3) if a != axis]
    region_lower = lower[2 * axis + 1]
    region_upper = upper[2 * axis]
    index_lower: list[slice] = []
    index_upper: list[slice] = []
    for other in others:
        if offset[other] == 1:
            index_lower.append(slice(-1, None))
            index_upper.append(slice(0, 1))
        elif offset[other] == -1:
            index_lower.append(slice(0, 1))
            index_upper.append(slice(-1, None))
        else:
            index_lower.append(slice(None))
            index_upper.append(slice(None))
    region_lower = region_lower[tuple(index_lower)]
    region_upper = region_upper[tuple(index_upper)]
    free = [k for k, other in enumerate(others) if offset[other] == 0]
    spare = _STEPS[connectivity] - sum(1 for o in offset if o)
    found_a, found_b = [], []
    for steps in itertools.product((-1, 0, 1), repeat=len(free)):
        if sum(1 for s in steps if s) > spare:
            continue
        take_lower = [slice(None), slice(None)]
        take_upper = [slice(None), slice(None)]
        for k, step in zip(free, steps, strict=True):
            take_lower[k], take_upper[k] = _side_slices(step, region_lower.shape[k])
        a = region_lower[tuple(take_lower)]
        b = region_upper[tuple(take_upper)]
        both = (a != 0) & (b != 0)
        found_a.append(a[both])
        found_b.append(b[both])
    return np.concatenate(found_a), np.concatenate(found_b)


def _pairs_kernel(
    lower: np.ndarray,
    uppers: list[np.ndarray],
    lower_id: int,
    upper_ids: list[int],
    offsets: list[tuple[int, int, int]],
    connectivity: int,
) -> np.ndarray:
    """What the client needs of one block: its statistics, its border labels and the
    pairs of packed labels ``block << 32 | local`` that touch between it and its forward
    neighbours (unique rows of an (m, 2) int64 array), boxed as one tuple.

    ``lower`` is the block itself (:func:`_block_kernel`, so the task runs where its
    labels are), ``uppers`` its neighbours' faces (:func:`_faces_kernel`)."""
    block: _Block = lower.item()
    found = [np.empty((0, 2), np.int64)]
    for upper, upper_id, offset in zip(uppers, upper_ids, offsets, strict=True):
        a, b = _touching_pairs(block.faces, upper.item(), offset, connectivity)
        if len(a):
            # Unique (a, b) through one 64-bit key each: np.unique(axis=0) is much slower.
            keys = np.unique((a.astype(np.uint64) << np.uint64(_SHIFT)) | b.astype(np.uint64))
            a = (keys >> np.uint64(_SHIFT)).astype(np.int64)
            b = (keys & np.uint64(_LOCAL_MASK)).astype(np.int64)
            found.append(np.stack([(lower_id << _SHIFT) | a, (upper_id << _SHIFT) | b], axis=1))
    return _boxed((block.stats, block.border, np.concatenate(found)))


def _relabel_kernel(
    block: np.ndarray,
    starts: np.ndarray,
    table: np.ndarray,
    block_id: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Final labels of one block: ``table[start + local]`` on its kept local labels."""
    kept: _Block = block.item()
    assert block_id is not None and kept.labels is not None
    start = int(starts[block_id])
    n = kept.stats.shape[1]
    block_table = table[start : start + n + 1].copy()
    block_table[0] = 0  # provisional labels of this block are start+1 .. start+n
    return _lookup_loop(kept.labels, block_table)


# ------------------------------------------------------------ splitting


def _check_min_radius(min_radius_vox: Any) -> float:
    return positive(min_radius_vox, "min_radius_vox", "voxels")


def split_kernel(
    mask: np.ndarray,
    *,
    min_radius_vox: float,
    connectivity: int = 6,
    open_sides: Sequence[bool] = (False,) * 6,
) -> tuple[np.ndarray, int]:
    """Split one connected object at its necks: a distance-transform watershed.

    1. ``d``: the Euclidean distance transform (``scipy.ndimage``) of the
       mask with its enclosed holes filled, padded with one voxel of
       background on its sides, so the crop's edges count as the object's
       surface, except on the ``open_sides`` (the volume's own faces: what
       lies beyond is unknown, and a particle cut by the field of view must
       not get a surface, and so a neck, there). A neck is a feature of the
       outer surface: a few voxels of another phase enclosed in a particle
       (noise classified as graphite or SEI inside the silicon) would
       otherwise pull ``d`` down around them and make one sphere several
       maxima, and so several pieces.
    2. Markers: the regional maxima of ``d`` whose dynamic is at least
       ``h = max(H_FLOOR, NECK_FRACTION · min_radius_vox)`` (``skimage.
       morphology.h_maxima``), one per connected plateau (26-connected).
    3. Markers of one body are joined: two closer together than the larger
       of their inscribed radii (the value of ``d`` there: one lies inside
       the other's inscribed sphere, the rule of PoreSpy's
       ``trim_nearby_peaks``) or than ``min_radius_vox``.
    4. ``skimage.segmentation.watershed(−d, markers, mask=mask)`` with the
       labelling's connectivity: every voxel of the object joins one piece.

    The dynamic of a maximum is how far ``d`` must fall on the way to a
    higher one. For two touching spheres of radii R₁ ≥ R₂ joined by a neck
    of radius n it is R₂ − n, and their centres lie R₁ + R₂ apart (less an
    overlap): they split while the neck is narrower than R₂ − h.

    What was tried: h-maxima alone, with h up to one voxel, split about one
    in ten voxelised ellipsoids of aspect 1.5 at random orientations (the
    distance transform along the long axis is nearly flat, and the voxel
    staircase makes two maxima of dynamic near one voxel) and every sphere
    with a crack to its centre; a larger h then also keeps touching spheres
    whole. Joining markers inside each other's inscribed spheres (step 3)
    keeps all of those whole, including spheres cracked 0.7 of the way to
    the centre, with h small enough (half a voxel) to split real particles
    as PoreSpy's SNOW does (tests/pipeline/test_split.py). The borders of the
    volume are left open (step 1) for the same reason SNOW leaves them open.

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool
        One connected object (under ``connectivity``), e.g. a component's
        bounding box.
    min_radius_vox : float
        The smallest particle radius expected, voxels (the lower bound of the
        size prior), > 0.
    connectivity : {6, 18, 26}
        Neighbourhood of the watershed's flooding (that of the labelling).
    open_sides : 6 bools
        Sides of the crop on the volume's border, in the order z first, z
        last, y first, y last, x first, x last; default none.

    Returns
    -------
    pieces : (Z, Y, X) ndarray of int32
        0 outside ``mask``, 1..n for the pieces, numbered in order of first
        appearance in C order.
    n : int
        Number of pieces (1 when nothing is split, 0 for an empty mask).

    Examples
    --------
    >>> z, y, x = np.indices((20, 20, 36))
    >>> two = ((z - 9.5) ** 2 + (y - 9.5) ** 2 + (x - 9) ** 2 <= 64) | (
    ...     (z - 9.5) ** 2 + (y - 9.5) ** 2 + (x - 24) ** 2 <= 64
    ... )
    >>> split_kernel(two, min_radius_vox=4)[1]
    2
    """
    connectivity = _check_connectivity(connectivity)
    radius = _check_min_radius(min_radius_vox)
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D (z, y, x); got shape {mask.shape}")
    if not mask.any():
        return np.zeros(mask.shape, np.int32), 0
    sides = [bool(v) for v in open_sides]
    if len(sides) != 6:
        raise ValueError(f"open_sides must be 6 bools (z first, z last, … x last); got {sides}")
    widths = [(int(not sides[2 * a]), int(not sides[2 * a + 1])) for a in range(3)]
    padded = np.pad(mask, widths)
    inner = tuple(slice(w[0], w[0] + n) for w, n in zip(widths, mask.shape, strict=True))
    if padded.all():  # no surface to measure from: nothing to split
        return mask.astype(np.int32), 1
    distance = ndimage.distance_transform_edt(ndimage.binary_fill_holes(padded))
    h = max(H_FLOOR, NECK_FRACTION * radius)
    markers, n = ndimage.label(h_maxima(distance, h), structure=np.ones((3, 3, 3), bool))
    if n > 1:
        markers, n = _merge_markers(markers, n, distance, radius)
    if n <= 1:
        return mask.astype(np.int32), 1
    pieces = watershed(-distance, markers, connectivity=_STEPS[connectivity], mask=padded)[
        inner
    ].astype(np.int32)
    # renumber by first appearance in C order (the watershed numbers by marker)
    values, first_index = np.unique(pieces.ravel(), return_index=True)
    keep = values != 0
    order = np.argsort(first_index[keep])
    table = np.zeros(int(values.max()) + 1, np.int32)
    table[values[keep][order]] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return table[pieces], int(keep.sum())


def _merge_markers(
    markers: np.ndarray, n: int, distance: np.ndarray, min_radius_vox: float
) -> tuple[np.ndarray, int]:
    """Join markers that belong to one body: closer together than the larger of their
    inscribed radii (one lies inside the other's inscribed sphere; PoreSpy's
    ``trim_nearby_peaks`` rule) or than the prior's smallest radius."""
    index = np.arange(1, n + 1)
    where = np.asarray(ndimage.center_of_mass(np.ones_like(distance), markers, index))
    radius = np.asarray(ndimage.maximum(distance, markers, index), np.float64)
    reach = max(float(radius.max()), min_radius_vox)
    pairs = cKDTree(where).query_pairs(r=reach, output_type="ndarray")
    gap = np.linalg.norm(where[pairs[:, 0]] - where[pairs[:, 1]], axis=1)
    close = pairs[
        gap < np.maximum(np.maximum(radius[pairs[:, 0]], radius[pairs[:, 1]]), min_radius_vox)
    ]
    graph = sparse.coo_matrix(
        (np.ones(len(close), np.int8), (close[:, 0], close[:, 1])), shape=(n, n)
    )
    count, group = csgraph.connected_components(graph, directed=False)
    table = np.concatenate([[0], group + 1]).astype(np.int32)
    return table[markers], int(count)


def _piece_stats(
    pieces: np.ndarray, n: int, origin: tuple[int, ...], shape: tuple[int, ...]
) -> np.ndarray:
    """(8, n) int64 statistics of pieces 1..n of a crop at ``origin`` of a volume of
    ``shape``: voxels, global C-order index of the first voxel, global half-open box."""
    stats = np.empty((_N_STATS, n), np.int64)
    stats[0] = np.bincount(pieces.ravel(), minlength=n + 1)[1:]
    values, first_index = np.unique(pieces.ravel(), return_index=True)
    first = first_index[values != 0]  # pieces are numbered by first appearance
    coords = np.unravel_index(first, pieces.shape)
    stats[1] = np.ravel_multi_index(
        tuple(c + o for c, o in zip(coords, origin, strict=True)), shape
    )
    for j, box in enumerate(ndimage.find_objects(pieces, max_label=n)):
        assert box is not None
        for axis, s in enumerate(box):
            stats[2 + 2 * axis, j] = s.start + origin[axis]
            stats[3 + 2 * axis, j] = s.stop + origin[axis]
    return stats


class _Split(NamedTuple):
    """A split component: its label, the origin of its box, the pieces in the box
    (None when it stays whole) and their statistics."""

    component: int
    origin: tuple[int, int, int]
    pieces: np.ndarray | None
    stats: np.ndarray | None


def _split_one(
    body: np.ndarray,
    origin: tuple[int, ...],
    shape: tuple[int, ...],
    min_radius_vox: float,
    connectivity: int,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Split one component (``body``: its voxels on its bounding box at ``origin`` of a
    volume of ``shape``): its pieces and their :func:`_piece_stats`, or (None, None)
    when it stays whole."""
    sides = [
        side
        for axis in range(3)
        for side in (origin[axis] == 0, origin[axis] + body.shape[axis] == shape[axis])
    ]
    pieces, n = split_kernel(
        body, min_radius_vox=min_radius_vox, connectivity=connectivity, open_sides=sides
    )
    if n <= 1:
        return None, None
    return pieces, _piece_stats(pieces, n, origin, shape)


def _split_batch(
    crops: list[np.ndarray],
    components: list[int],
    origins: list[tuple[int, int, int]],
    shape: tuple[int, ...],
    min_radius_vox: float,
    connectivity: int,
) -> list[_Split]:
    """Split each component of a batch on its bounding box (crops of the labels)."""
    found = []
    for crop, component, origin in zip(crops, components, origins, strict=True):
        body = np.asarray(crop) == component
        pieces, stats = _split_one(body, origin, shape, min_radius_vox, connectivity)
        found.append(_Split(component, origin, pieces, stats))
    return found


def _split_summary(batch: list[_Split]) -> list[tuple[int, np.ndarray | None]]:
    """The statistics of a batch, without the pieces (what reaches the client)."""
    return [(item.component, item.stats) for item in batch]


def _paste(
    out: np.ndarray,
    location: Sequence[tuple[int, int]],
    origin: Sequence[int],
    pieces: np.ndarray,
    table: np.ndarray,
) -> None:
    """Write ``table[pieces]`` into ``out`` (the block at ``location``) where the pieces
    (on a box at ``origin``) meet the block and are nonzero."""
    inside_block, inside_crop = [], []
    for axis, (start, stop) in enumerate(location):
        lo = max(start, origin[axis])
        hi = min(stop, origin[axis] + pieces.shape[axis])
        if lo >= hi:
            return
        inside_block.append(slice(lo - start, hi - start))
        inside_crop.append(slice(lo - origin[axis], hi - origin[axis]))
    crop = pieces[tuple(inside_crop)]
    where = crop > 0
    target = out[tuple(inside_block)]
    target[where] = table[crop[where]]


def _paste_kernel(
    block: np.ndarray,
    location: tuple[tuple[int, int], ...],
    table: np.ndarray,
    pieces: dict[int, np.ndarray],
    *batches: list[_Split],
) -> np.ndarray:
    """Final labels of one block: ``table[block]`` for whole components, then the pieces
    of the split components whose boxes meet the block, through their own tables."""
    out = table[block]
    for batch in batches:
        for item in batch:
            if item.pieces is not None:
                _paste(out, location, item.origin, item.pieces, pieces[item.component])
    return out


# ------------------------------------------------------------ from the store


class StoredMask(NamedTuple):
    """A mask read from a stored array: its voxels equal to ``value``.

    Attributes
    ----------
    array : zarr.Array
        (Z, Y, X) stored volume, e.g. the phases.
    value : int or bool
        The voxels of the mask, e.g. ``SILICON`` in the phases, True in a
        stored boolean mask.
    """

    array: zarr.Array
    value: int | bool

    def read(self, low: Sequence[int], high: Sequence[int]) -> np.ndarray:
        """The mask on the box ``[low, high)``, (z, y, x) bool (:func:`read_box`)."""
        return np.asarray(read_box(self.array, low, high) == self.value)


def _stored_block_kernel(
    source: StoredMask, location: tuple[tuple[int, int], ...], boxes: bool, connectivity: int
) -> np.ndarray:
    """:func:`_describe_block` of one block read from the store, boxed; its labels are
    not kept (the final pass labels the block again)."""
    low, high = zip(*location, strict=True)
    block = _describe_block(
        source.read(low, high), location, source.array.shape, connectivity, boxes
    )
    return _boxed(block._replace(labels=None))


def _split_stored_batch(
    source: StoredMask,
    members: list[tuple[int, int, tuple[int, ...], tuple[int, ...], int]],
    min_radius_vox: float,
    connectivity: int,
    scratch: zarr.Array,
) -> list[tuple[int, np.ndarray | None]]:
    """Split each component of a batch on its bounding box read from the store.

    ``members`` holds, per component, its label, the C-order index of its first
    voxel, its box's low and high corners and where its pieces go in ``scratch``
    (a 1-D array of this batch's own chunks): the pieces of a split component are
    written there, raveled in C order; only their statistics are returned.

    The component is the connected component of the mask on its box that holds
    its first voxel: its box holds all of it, and no other voxel of the box
    connects to it, inside the box or out."""
    shape = tuple(int(s) for s in source.array.shape)
    found: list[tuple[int, np.ndarray | None]] = []
    for component, first, low, high, offset in members:
        labels, _, _ = _label_block(source.read(low, high), connectivity)
        at = tuple(int(c) - lo for c, lo in zip(np.unravel_index(first, shape), low, strict=True))
        body = labels == labels[at]
        del labels
        pieces, stats = _split_one(body, low, shape, min_radius_vox, connectivity)
        if pieces is not None:
            if pieces.max() > np.iinfo(scratch.dtype).max:
                raise ValueError(
                    f"component {component} splits into {pieces.max()} pieces; at most "
                    f"{np.iinfo(scratch.dtype).max} are kept"
                )
            scratch[offset : offset + pieces.size] = pieces.ravel().astype(scratch.dtype)
        found.append((component, stats))
    return found


class _Pasted(NamedTuple):
    """A split component's pieces as a final-labels task reads them from the scratch."""

    low: tuple[int, ...]  # the box's first voxel
    high: tuple[int, ...]  # one past its last
    offset: int  # where its raveled pieces start in the scratch array
    table: np.ndarray  # (pieces + 1,) int32: piece → final label


def _stored_labels_kernel(
    source: StoredMask,
    location: tuple[tuple[int, int], ...],
    connectivity: int,
    table: np.ndarray,
    pasted: list[_Pasted],
    scratch: zarr.Array | None,
) -> np.ndarray:
    """Final labels of one block read from the store: its cc3d labels (as the first
    pass numbered them) through ``table``, then the pieces of the split components whose
    boxes meet it, read from ``scratch``."""
    low, high = zip(*location, strict=True)
    labels, n, _ = _label_block(source.read(low, high), connectivity)
    if n + 1 != len(table):
        raise RuntimeError(
            f"the block at {location} of {source.array} holds {n} components now and "
            f"{len(table) - 1} when it was first labelled: the array changed during the stage"
        )
    out = _lookup_loop(labels, table)
    del labels
    for item in pasted:
        assert scratch is not None
        size = math.prod(b - a for a, b in zip(item.low, item.high, strict=True))
        raveled = read_box(scratch, (item.offset,), (item.offset + size,))
        pieces = raveled.reshape(tuple(b - a for a, b in zip(item.low, item.high, strict=True)))
        _paste(out, location, item.low, pieces, item.table)
    return out


# ---------------------------------------------------------------- wrapper


@dataclass(frozen=True, eq=False)
class Labels:
    """Result of :func:`label`.

    Attributes
    ----------
    labels : (Z, Y, X) dask array of int32
        0 for background, 1..count for the particles; the shape and chunks of
        the mask. Lazy: computing it applies the lookup table to the block
        labels that :func:`label` kept (persisted) on the workers, or, from
        :func:`label_stored`, to each block read and labelled again.
    count : int
        Number of particles N (after dropping small ones).
    volumes : (N,) ndarray of int64
        ``volumes[i]`` is the number of voxels of label ``i + 1``.
    touches_border : (N,) ndarray of bool
        True where label ``i + 1`` has a voxel on one of the six outer faces of
        the volume (a particle that may be cut by the field of view).
    components : int or None
        Connected components before splitting (after dropping small ones);
        None when nothing was split (no size prior: ``count`` is that number).
    split : int
        Components that the watershed cut into two or more particles.
    """

    labels: da.Array
    count: int
    volumes: np.ndarray
    touches_border: np.ndarray
    components: int | None = None
    split: int = 0


def _as_mask(mask: Any) -> da.Array:
    """``mask`` as a 3-D dask array of bool or integers; NumPy input is checked for 0/1
    here and chunked in cubes (:func:`debond.storage.default_chunks`, "volume")."""
    if not isinstance(mask, da.Array):
        mask = np.asarray(mask)
    if mask.ndim != 3 or 0 in mask.shape:
        raise ValueError(
            f"mask must be 3-D (z, y, x) with at least one voxel on each axis; got shape "
            f"{mask.shape}"
        )
    _check_binary_dtype(np.dtype(mask.dtype), "mask")
    if isinstance(mask, da.Array):
        return mask
    _check_zero_one(mask, "mask")
    return da.from_array(mask, chunks=default_chunks(mask.shape, "volume", mask.dtype))


def _check_min_volume(min_volume_voxels: Any) -> int:
    if isinstance(min_volume_voxels, bool) or not isinstance(min_volume_voxels, int | np.integer):
        raise TypeError(
            f"min_volume_voxels must be an integer number of voxels ≥ 0; got {min_volume_voxels!r}"
        )
    if min_volume_voxels < 0:
        raise ValueError(
            f"min_volume_voxels must be an integer number of voxels ≥ 0; got {min_volume_voxels!r}"
        )
    return int(min_volume_voxels)


def _check_prior(split_touching: Any, radius_range_um: Any, voxel_size_um: Any) -> float | None:
    """The smallest radius of the size prior in voxels, or None when nothing is split."""
    if not isinstance(split_touching, bool | np.bool_):
        raise TypeError(f"split_touching must be True or False; got {split_touching!r}")
    prior = check_size_prior(radius_range_um)
    if prior is None or not split_touching:
        return None
    return prior[0] / positive(voxel_size_um, "voxel_size_um (to split with the prior)", "µm")


def _check_max_split(max_split_voxels: Any) -> int:
    if (
        isinstance(max_split_voxels, bool)
        or not isinstance(max_split_voxels, int | np.integer)
        or max_split_voxels < 1
    ):
        raise ValueError(
            f"max_split_voxels must be an integer number of voxels ≥ 1; got {max_split_voxels!r}"
        )
    return int(max_split_voxels)


def label(
    mask: da.Array | np.ndarray,
    *,
    connectivity: int = 6,
    min_volume_voxels: int = 0,
    split_touching: bool = True,
    radius_range_um: tuple[float, float] | None = None,
    voxel_size_um: float | None = None,
    max_split_voxels: int = MAX_SPLIT_VOXELS,
    block_voxels: int | None = None,
) -> Labels:
    """Connected components of a 3-D mask, block-wise, labels unique over the volume.

    Every block is labelled with cc3d; labels that touch across the face
    between two blocks (and, for 18 and 26 connectivity, diagonally across a
    block edge or corner) are joined by a union-find over the touching pairs,
    found block by block from the blocks' faces; components smaller than
    ``min_volume_voxels`` are dropped (set to 0); the rest are renumbered
    1..N in order of first appearance in C order of the whole volume (equal
    to increasing smallest old label in scipy's numbering). With
    ``min_volume_voxels=0`` the result equals ``scipy.ndimage.label(mask,
    generate_binary_structure(3, r))[0]`` (r = 1, 2, 3 for 6, 18, 26) for
    any chunking.

    This function labels every block once and persists the block labels
    (``dask.persist`` on the current scheduler: they stay on the workers of
    a distributed cluster, in the narrowest unsigned dtype that holds the
    block's count), then computes the per-block counts, volumes, touching
    pairs and border labels, all small. The returned ``labels`` stay lazy:
    computing them applies the lookup table to the kept block labels.

    With ``split_touching`` and a size prior (``radius_range_um`` and
    ``voxel_size_um``), the components that can hold two particles of the
    prior are then split at their necks (:func:`split_kernel` on each
    component's bounding box, many components per task): a second compute
    returns the pieces' volumes, first voxels and boxes, and everything is
    renumbered 1..N by first voxel in C order, so the result does not depend
    on the chunking. The returned ``labels`` run the splitting tasks again
    when computed (each block takes the pieces of the components that meet
    it). Without a prior nothing is split: the default call is plain
    connected-component labelling.

    Parameters
    ----------
    mask : (Z, Y, X) dask or NumPy array of bool, or of integers holding only 0 and 1
        Foreground where true, e.g. ``phases == 3`` (silicon). NumPy input is
        chunked in cubes of 128 voxels (``default_chunks(..., "volume", ...)``);
        integer dask input is checked for 0/1 block by block while computing.
        Every chunk must hold fewer than 2**31 voxels.
    connectivity : {6, 18, 26}
        Neighbourhood: shared face (6, default), face or edge (18), face,
        edge or corner (26).
    min_volume_voxels : int
        Components with fewer voxels are removed (after merging across
        blocks, before splitting); default 0 keeps all.
    split_touching : bool
        Split touching particles by a distance-transform watershed (default
        True); acts only with a size prior.
    radius_range_um : (lo, hi) floats, optional
        Size prior: the expected equivalent radii of the particles, µm,
        0 < lo ≤ hi (hi may be inf). ``lo`` sets which components are tried
        (more voxels than a ball of radius lo), the depth of the markers
        (``max(H_FLOOR, NECK_FRACTION · lo)`` voxels) and the least distance
        between two particles' markers; ``hi`` is for the measure stage's
        ``oversized`` flag. None (default): no prior, nothing is split.
    voxel_size_um : float, optional
        Voxel edge, µm, > 0; needed with ``radius_range_um`` to split.
    max_split_voxels : int
        Largest bounding box (voxels) of a component that is split, and the
        most box voxels one splitting task holds (default
        :data:`MAX_SPLIT_VOXELS`, 2**25, about 4 GB per task); larger
        components (percolating networks) stay whole.
    block_voxels : int, optional
        Label blocks of at least about this many voxels: along each axis,
        consecutive chunks of ``mask`` are joined until a block's edge
        reaches ``block_voxels ** (1/3)`` (:func:`coarse_chunks`; the result
        does not depend on it). None (default): the chunks of ``mask``.

    Returns
    -------
    Labels
        ``labels`` (lazy int32, the chunks of the labelling blocks: those of
        ``mask``, joined where ``block_voxels`` asks), ``count`` N,
        ``volumes`` (N,) int64 voxels and ``touches_border`` (N,) bool, entry
        ``i`` for label ``i + 1``; ``components`` (before splitting; None
        when nothing was tried) and ``split`` (components cut in pieces).

    Raises
    ------
    ValueError
        ``mask`` not 3-D, empty, holding integers other than 0 and 1 (for dask
        input raised while the reductions compute), chunks of 2**31 voxels or
        more, more than 2**31 − 1 provisional labels; ``connectivity`` not 6,
        18 or 26; ``min_volume_voxels`` negative; ``radius_range_um`` not
        two radii with 0 < lo ≤ hi; ``voxel_size_um`` not > 0 where a prior
        is given; ``max_split_voxels`` or ``block_voxels`` < 1.
    TypeError
        ``mask`` neither boolean nor integer; ``min_volume_voxels`` not an
        integer; ``split_touching`` not a bool.

    Examples
    --------
    >>> m = np.zeros((4, 4, 4), bool)
    >>> m[0, 0, :] = m[3, 3, 3] = m[2, 2, 2] = True
    >>> result = label(da.from_array(m, chunks=2), connectivity=6)
    >>> result.count, result.volumes.tolist(), result.touches_border.tolist()
    (3, [4, 1, 1], [True, False, True])
    >>> label(m, connectivity=26).count
    2
    >>> z, y, x = np.indices((20, 20, 36))
    >>> two = ((z - 9.5) ** 2 + (y - 9.5) ** 2 + (x - 9) ** 2 <= 64) | (
    ...     (z - 9.5) ** 2 + (y - 9.5) ** 2 + (x - 24) ** 2 <= 64
    ... )
    >>> found = label(two, radius_range_um=(0.2, 1.0), voxel_size_um=0.05)
    >>> found.components, found.count
    (1, 2)
    """
    array = _as_mask(mask)
    connectivity = _check_connectivity(connectivity)
    minimum = _check_min_volume(min_volume_voxels)
    prior = _check_prior(split_touching, radius_range_um, voxel_size_um)
    max_split = _check_max_split(max_split_voxels)
    if any(np.isnan(size) for sizes in array.chunks for size in sizes):
        raise ValueError(
            "mask must have known chunk sizes; got unknown (NaN) ones. "
            "Call mask.compute_chunk_sizes() first"
        )
    if block_voxels is not None:
        coarse = coarse_chunks(array.chunks, block_voxels)
        if coarse != array.chunks:
            array = array.rechunk(coarse)
    _check_blocks(array.chunks)
    token = dask.base.tokenize(array.name, connectivity)

    # 1: label every block once and keep its labels where they were made (persisted:
    # futures on a distributed cluster, in memory otherwise), with its counts, volumes,
    # first voxels, border labels and faces.
    blocks = da.map_blocks(
        _block_kernel,
        array,
        connectivity,
        prior is not None,
        chunks=_one_per_block(array),
        dtype=object,
        meta=_meta(object),
        name=f"label-blocks-{token}",
    )
    (blocks,) = dask.persist(blocks)
    merged = _merge(_block_summaries(blocks, connectivity, token), minimum)

    # 6: the lookup table as one graph key each, applied block by block.
    token = dask.base.tokenize(token, minimum)
    starts_key = dask.delayed(
        merged.starts.reshape(array.numblocks), name=f"label-starts-{token}", pure=True
    )
    table_key = dask.delayed(merged.table, name=f"label-table-{token}", pure=True)
    labels = da.map_blocks(
        _relabel_kernel,
        blocks,
        starts_key,
        table_key,
        chunks=array.chunks,
        dtype=np.int32,
        meta=_meta(np.int32),
        name=f"label-{token}",
    )
    whole = merged.labels(labels)
    if prior is None:
        return whole
    return _split_components(
        whole,
        merged.first,
        merged.boxes,
        min_radius_vox=prior,
        connectivity=connectivity,
        max_split_voxels=max_split,
        token=token,
    )


def _check_blocks(chunks: tuple[tuple[int, ...], ...]) -> None:
    """Labelling blocks that the packed pairs and cc3d's labels can address."""
    if math.prod(len(c) for c in chunks) >= 2**31:
        raise ValueError(
            f"mask must have fewer than 2**31 blocks; got {tuple(len(c) for c in chunks)} blocks"
        )
    largest = math.prod(max(c) for c in chunks)
    if largest >= 2**31:
        raise ValueError(
            f"mask chunks must hold fewer than 2**31 voxels; the largest holds {largest}. "
            "Rechunk it, e.g. mask.rechunk(128)"
        )


def _block_summaries(blocks: da.Array, connectivity: int, token: str) -> np.ndarray:
    """Per block (C order), what the client needs of it: its statistics, its border
    labels and the packed pairs of labels touching its forward neighbours across faces,
    edges and corners (:func:`_pairs_kernel`); one dask.compute.

    ``blocks`` holds one :class:`_Block` per block (its grid is the labelling blocks').
    The graph grows linearly with the number of blocks: a pair task reads the faces of
    at most 13 neighbours."""
    grid = blocks.numblocks
    box = _meta(object)
    faces = da.map_blocks(
        _faces_kernel, blocks, dtype=object, meta=box, name=f"label-faces-{token}"
    )
    offsets = _forward_offsets(connectivity)
    pairs_name = f"label-pairs-{token}"
    layer: dict[Any, Any] = {}
    for index in np.ndindex(*grid):
        neighbours = [
            (offset, tuple(i + o for i, o in zip(index, offset, strict=True))) for offset in offsets
        ]
        neighbours = [
            (o, n) for o, n in neighbours if all(0 <= i < g for i, g in zip(n, grid, strict=True))
        ]
        layer[(pairs_name, *index)] = (
            _pairs_kernel,
            (blocks.name, *index),
            [(faces.name, *n) for _, n in neighbours],
            int(np.ravel_multi_index(index, grid)),
            [int(np.ravel_multi_index(n, grid)) for _, n in neighbours],
            [o for o, _ in neighbours],
            connectivity,
        )
    dependencies: list[Any] = [blocks, faces]
    pairs_graph = HighLevelGraph.from_collections(pairs_name, layer, dependencies=dependencies)
    pairs_array = da.Array(pairs_graph, pairs_name, chunks=blocks.chunks, dtype=object, meta=box)
    (per_block,) = dask.compute(pairs_array)
    return per_block.ravel()


class _Merged(NamedTuple):
    """The components of a blocked labelling, merged across blocks on the client."""

    starts: np.ndarray  # (blocks,) int64: offset of each block's provisional labels
    table: np.ndarray  # (provisional + 1,) int32: provisional label → final label, 0 → 0
    volumes: np.ndarray  # (N,) int64: voxels of final labels 1..N
    first: np.ndarray  # (N,) int64: global C-order index of each one's first voxel
    boxes: np.ndarray  # (N, 6) int64: half-open boxes z0, z1, y0, y1, x0, x1
    touches_border: np.ndarray  # (N,) bool

    def labels(self, labels: da.Array) -> Labels:
        """The :class:`Labels` of these components with the lazy ``labels``."""
        return Labels(
            labels=labels,
            count=len(self.volumes),
            volumes=self.volumes,
            touches_border=self.touches_border,
        )

    def block_table(self, index: int) -> np.ndarray:
        """The lookup of block ``index``'s local labels 0..n (C order of the blocks)."""
        start = int(self.starts[index])
        stop = int(self.starts[index + 1]) if index + 1 < len(self.starts) else len(self.table) - 1
        table = self.table[start : stop + 1].copy()
        table[0] = 0  # provisional labels of this block are start+1 .. stop
        return table


def _merge(per_block: np.ndarray, minimum: int) -> _Merged:
    """Join the blocks' provisional labels that touch (union-find over the pairs), drop
    the components under ``minimum`` voxels and number the rest 1..N in order of first
    appearance in C order of the volume.

    ``per_block`` is :func:`_block_summaries`' result."""
    # 2: offsets of the blocks' provisional labels (blocks in C order).
    counts = np.array([stats.shape[1] for stats, _, _ in per_block], np.int64)
    total = int(counts.sum())
    if total > _INT32_MAX:
        raise ValueError(f"mask has {total} provisional labels; at most 2**31 − 1 are supported")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    stats_provisional = np.concatenate(
        [stats for stats, _, _ in per_block] + [np.empty((_N_STATS, 0), np.int64)], axis=1
    )
    volumes_provisional, first_provisional = stats_provisional[:2]

    # 4: union-find over the pairs (connected components of the graph whose nodes are the
    # provisional labels 0..total and whose edges are the pairs).
    packed = np.concatenate([pairs for _, _, pairs in per_block] + [np.empty((0, 2), np.int64)])
    edges = starts[packed >> _SHIFT] + (packed & _LOCAL_MASK)
    adjacency = sparse.coo_matrix(
        (np.ones(len(edges), np.int32), (edges[:, 0], edges[:, 1])), shape=(total + 1, total + 1)
    )
    _, component = csgraph.connected_components(adjacency, directed=False)
    merged = component[1:].astype(np.int64)  # component of provisional label 1..total

    # 5: merged volumes, drop, renumber by first appearance in C order.
    n_components = int(component.max()) + 1
    volume = np.zeros(n_components, np.int64)
    np.add.at(volume, merged, volumes_provisional)
    first = np.full(n_components, np.iinfo(np.int64).max)
    np.minimum.at(first, merged, first_provisional)
    boxes = np.empty((n_components, 6), np.int64)
    boxes[:, 0::2] = np.iinfo(np.int64).max
    boxes[:, 1::2] = -1
    for axis in range(3):
        np.minimum.at(boxes[:, 2 * axis], merged, stats_provisional[2 + 2 * axis])
        np.maximum.at(boxes[:, 2 * axis + 1], merged, stats_provisional[3 + 2 * axis])
    kept = np.flatnonzero(volume >= max(minimum, 1))  # the background's component is empty
    kept = kept[np.argsort(first[kept], kind="stable")]
    final = np.zeros(n_components, np.int32)
    final[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
    table = final[component]  # provisional label → final label, 0 → 0
    table[0] = 0

    border = np.concatenate(
        [
            start + border.astype(np.int64)
            for start, (_, border, _) in zip(starts, per_block, strict=True)
        ]
        + [np.empty(0, np.int64)]
    )
    touches = np.zeros(len(kept) + 1, bool)
    touches[table[border]] = True
    return _Merged(starts, table, volume[kept], first[kept], boxes[kept], touches[1:])


def _batches(candidates: np.ndarray, boxes: np.ndarray, budget: int) -> list[list[int]]:
    """Candidates (indices into ``boxes``) in batches whose boxes hold at most ``budget``
    voxels together (a box larger than the budget alone in its batch)."""
    batches: list[list[int]] = []
    held = budget
    for index in candidates:
        size = int(np.prod(boxes[index, 1::2] - boxes[index, 0::2]))
        if held + size > budget:
            batches.append([])
            held = 0
        batches[-1].append(int(index))
        held += size
    return batches


def _candidates(
    volumes: np.ndarray, boxes: np.ndarray, min_radius_vox: float, max_split_voxels: int
) -> np.ndarray:
    """Indices of the components that can hold two particles of the prior (more voxels
    than a ball of its smallest radius) and whose box is small enough to split."""
    sizes = np.prod(boxes[:, 1::2] - boxes[:, 0::2], axis=1)
    smallest = 4.0 / 3.0 * math.pi * min_radius_vox**3
    return np.flatnonzero((volumes > smallest) & (sizes <= max_split_voxels))


class _Numbered(NamedTuple):
    """Whole components and pieces numbered together by first voxel in C order."""

    labels: Labels  # without its lazy labels (``labels.labels`` is the unsplit one)
    table: np.ndarray  # (components + 1,) int32: component → final label (0: split)
    pieces: dict[int, np.ndarray]  # split component → (pieces + 1,) int32 final labels


def _number(
    whole: Labels,
    first: np.ndarray,
    boxes: np.ndarray,
    pieces: dict[int, np.ndarray],
    shape: tuple[int, ...],
) -> _Numbered:
    """Number the components of ``whole`` that stay whole and the pieces of the split
    ones (``pieces``: component → :func:`_piece_stats`) 1..N by first voxel in C order."""
    n = whole.count
    keep = np.ones(n, bool)
    keep[[c - 1 for c in pieces]] = False
    owner = [np.flatnonzero(keep) + 1] + [
        np.full(stats.shape[1], -c, np.int64) for c, stats in pieces.items()
    ]
    firsts = [first[keep]] + [stats[1] for stats in pieces.values()]
    volumes = [whole.volumes[keep]] + [stats[0] for stats in pieces.values()]
    boxes_all = [boxes[keep]] + [stats[2:].T for stats in pieces.values()]
    owners = np.concatenate([*owner, np.empty(0, np.int64)])
    order = np.argsort(np.concatenate([*firsts, np.empty(0, np.int64)]), kind="stable")
    volume = np.concatenate([*volumes, np.empty(0, np.int64)])[order]
    box = np.concatenate([*boxes_all, np.empty((0, 6), np.int64)])[order]
    count = len(order)
    if count > _INT32_MAX:
        raise ValueError(f"mask has {count} particles after splitting; at most 2**31 − 1")
    number = np.empty(count, np.int32)
    number[order] = np.arange(1, count + 1, dtype=np.int32)
    table = np.zeros(n + 1, np.int32)
    whole_ones = owners > 0
    table[owners[whole_ones]] = number[whole_ones]
    tables: dict[int, np.ndarray] = {}
    at = int(whole_ones.sum())
    for component, stats in pieces.items():
        tables[component] = np.concatenate([[0], number[at : at + stats.shape[1]]]).astype(np.int32)
        at += stats.shape[1]
    touches = (box[:, 0::2] == 0).any(axis=1) | (box[:, 1::2] == np.array(shape)).any(axis=1)
    numbered = Labels(
        labels=whole.labels,
        count=count,
        volumes=volume,
        touches_border=touches,
        components=n,
        split=len(pieces),
    )
    return _Numbered(numbered, table, tables)


def _blocks_met(chunks: tuple[tuple[int, ...], ...], box: np.ndarray) -> Iterator[tuple[int, ...]]:
    """Indices of the blocks of ``chunks`` that a half-open box (z0, z1, y0, y1, x0, x1)
    meets."""
    edges = [block_edges(c) for c in chunks]
    ranges = [
        range(
            int(np.searchsorted(edges[a], box[2 * a], side="right")) - 1,
            int(np.searchsorted(edges[a], box[2 * a + 1], side="left")),
        )
        for a in range(3)
    ]
    return itertools.product(*ranges)


def _split_components(
    whole: Labels,
    first: np.ndarray,
    boxes: np.ndarray,
    *,
    min_radius_vox: float,
    connectivity: int,
    max_split_voxels: int,
    token: str,
) -> Labels:
    """Split the components of ``whole`` that can hold two particles of the prior
    (:func:`split_kernel` on their bounding boxes, batched); renumber everything by first
    appearance in C order; the final labels stay lazy."""
    base = whole.labels
    shape = tuple(int(s) for s in base.shape)
    candidates = _candidates(whole.volumes, boxes, min_radius_vox, max_split_voxels)
    batch_lists = _batches(candidates, boxes, max_split_voxels)
    split = dask.delayed(_split_batch, pure=True)
    summary = dask.delayed(_split_summary, pure=True)
    batches = []
    for members in batch_lists:
        crops = [
            base[tuple(slice(int(boxes[i, 2 * a]), int(boxes[i, 2 * a + 1])) for a in range(3))]
            for i in members
        ]
        batches.append(
            split(
                crops,
                [i + 1 for i in members],
                [tuple(int(v) for v in boxes[i, 0::2]) for i in members],
                shape,
                min_radius_vox,
                connectivity,
            )
        )
    found = dask.compute(*(summary(batch) for batch in batches))
    pieces = {component: stats for part in found for component, stats in part if stats is not None}
    numbered = _number(whole, first, boxes, pieces, shape)

    # The final labels: per block, the table of whole components and the pieces of the
    # split components whose boxes meet the block (their batches are recomputed).
    token = dask.base.tokenize(token, min_radius_vox, max_split_voxels)
    table_key = dask.delayed(numbered.table, name=f"label-split-table-{token}", pure=True)
    pieces_key = dask.delayed(numbered.pieces, name=f"label-split-pieces-{token}", pure=True)
    meets: dict[tuple[int, ...], list[int]] = {}
    for j, members in enumerate(batch_lists):
        for i in members:
            if i + 1 not in pieces:
                continue
            for index in _blocks_met(base.chunks, boxes[i]):
                held = meets.setdefault(index, [])
                if not held or held[-1] != j:
                    held.append(j)
    name = f"label-split-{token}"
    layer: dict[Any, Any] = {}
    for index in np.ndindex(*base.numblocks):
        layer[(name, *index)] = (
            _paste_kernel,
            (base.name, *index),
            block_location(base.chunks, index),
            table_key.key,
            pieces_key.key,
            *(batches[j].key for j in meets.get(index, [])),
        )
    dependencies: list[Any] = [base, table_key, pieces_key, *batches]
    graph = HighLevelGraph.from_collections(name, layer, dependencies=dependencies)
    labels = da.Array(graph, name, chunks=base.chunks, dtype=np.int32, meta=_meta(np.int32))
    return dataclasses.replace(numbered.labels, labels=labels)


def label_stored(
    source: StoredMask,
    scratch: zarr.Group,
    *,
    connectivity: int = 6,
    min_volume_voxels: int = 0,
    split_touching: bool = True,
    radius_range_um: tuple[float, float] | None = None,
    voxel_size_um: float | None = None,
    max_split_voxels: int = MAX_SPLIT_VOXELS,
    block_voxels: int | None = None,
) -> Labels:
    """:func:`label` of a stored mask, every task reading its own box from the store.

    The same labels as :func:`label` of the same mask (the same components,
    pieces and numbering, for any chunking), with memory bounded per task at
    any volume size: no task's result is a block of labels, and no task
    waits on another's large result.

    1. Every block's task reads its box of the mask, labels it (cc3d) and
       keeps its statistics, border labels and faces, not its labels; the
       touching pairs, merge and numbering are :func:`label`'s.
    2. With a size prior, every splitting task reads its components' boxes
       of the mask (a component is the connected component of its box that
       holds its first voxel), splits them and writes their pieces to
       ``scratch`` (an array ``pieces``, each batch in chunks of its own);
       only the pieces' statistics reach the client.
    3. The returned ``labels`` are lazy: each block's task reads its box of
       the mask, labels it again (cc3d numbers a block the same way every
       time), looks up its final labels and pastes, from ``scratch``, the
       pieces of the split components whose boxes meet it. Compute them
       before the mask or ``scratch`` changes, then remove ``scratch``.

    Parameters
    ----------
    source : StoredMask
        The stored (Z, Y, X) array and the value of its mask's voxels.
    scratch : zarr.Group
        Where the pieces are kept between steps 2 and 3, in the same store
        (every worker reads it); its ``pieces`` array is replaced.
    connectivity, min_volume_voxels, split_touching : as for :func:`label`
    radius_range_um, voxel_size_um, max_split_voxels : as for :func:`label`
    block_voxels : int, optional
        Label blocks of at least about this many voxels, whole stored chunks
        (:func:`coarse_chunks`); None: the stored chunks.

    Returns
    -------
    Labels
        As :func:`label`'s; ``labels`` in the labelling blocks.

    Raises
    ------
    ValueError
        As :func:`label`; the stored array not 3-D or empty.
    RuntimeError
        (while ``labels`` compute) A block that holds other components than
        when it was first read: the stored mask changed.
    """
    array = source.array
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(
            f"the stored mask {array} must be 3-D (z, y, x) with at least one voxel on each "
            f"axis; got shape {array.shape}"
        )
    connectivity = _check_connectivity(connectivity)
    minimum = _check_min_volume(min_volume_voxels)
    prior = _check_prior(split_touching, radius_range_um, voxel_size_um)
    max_split = _check_max_split(max_split_voxels)
    chunks = da.core.normalize_chunks(array.chunks, array.shape)
    if block_voxels is not None:
        chunks = coarse_chunks(chunks, block_voxels)
    _check_blocks(chunks)
    grid = tuple(len(c) for c in chunks)
    shape = tuple(int(s) for s in array.shape)
    token = uuid.uuid4().hex  # the store's content is not in the graph: a name per call

    # 1: per block, its summary, read from the store (no dependencies)
    name = f"label-stored-blocks-{token}"
    layer: dict[Any, Any] = {
        (name, *index): (
            _stored_block_kernel,
            source,
            block_location(chunks, index),
            prior is not None,
            connectivity,
        )
        for index in np.ndindex(*grid)
    }
    blocks = da.Array(
        HighLevelGraph.from_collections(name, layer, dependencies=[]),
        name,
        chunks=tuple((1,) * g for g in grid),
        dtype=object,
        meta=_meta(object),
    )
    merged = _merge(_block_summaries(blocks, connectivity, token), minimum)
    whole = merged.labels(blocks)  # its labels are replaced below
    pasted: dict[tuple[int, ...], list[_Pasted]] = {}
    pieces_array = None
    numbered = None
    if prior is not None:
        # 2: split the candidates; their pieces wait in the scratch array
        boxes = merged.boxes
        batch_lists = _batches(
            _candidates(merged.volumes, boxes, prior, max_split), boxes, max_split
        )
        sizes = np.prod(boxes[:, 1::2] - boxes[:, 0::2], axis=1)
        offsets: dict[int, int] = {}
        at = 0
        for members in batch_lists:
            at = -(-at // SCRATCH_CHUNK) * SCRATCH_CHUNK  # a batch writes its own chunks
            for i in members:
                offsets[i] = at
                at += int(sizes[i])
        pieces_array = scratch.create_array(
            "pieces",
            shape=(max(at, 1),),
            chunks=(SCRATCH_CHUNK,),
            dtype=np.uint16,
            fill_value=0,
            overwrite=True,
        )
        split = dask.delayed(_split_stored_batch, pure=False)
        found = dask.compute(
            *(
                split(
                    source,
                    [
                        (
                            i + 1,
                            int(merged.first[i]),
                            tuple(int(v) for v in boxes[i, 0::2]),
                            tuple(int(v) for v in boxes[i, 1::2]),
                            offsets[i],
                        )
                        for i in members
                    ],
                    prior,
                    connectivity,
                    pieces_array,
                )
                for members in batch_lists
            )
        )
        pieces = {c: stats for part in found for c, stats in part if stats is not None}
        numbered = _number(whole, merged.first, boxes, pieces, shape)
        for component, piece_table in numbered.pieces.items():
            i = component - 1
            item = _Pasted(
                tuple(int(v) for v in boxes[i, 0::2]),
                tuple(int(v) for v in boxes[i, 1::2]),
                offsets[i],
                piece_table,
            )
            for index in _blocks_met(chunks, boxes[i]):
                pasted.setdefault(index, []).append(item)

    # 3: the final labels, block by block from the store
    name = f"label-stored-{token}"
    layer = {}
    for flat, index in enumerate(np.ndindex(*grid)):
        block_table = merged.block_table(flat)
        if numbered is not None:
            block_table = numbered.table[block_table]
        layer[(name, *index)] = (
            _stored_labels_kernel,
            source,
            block_location(chunks, index),
            connectivity,
            block_table,
            pasted.get(index, []),
            pieces_array,
        )
    labels = da.Array(
        HighLevelGraph.from_collections(name, layer, dependencies=[]),
        name,
        chunks=chunks,
        dtype=np.int32,
        meta=_meta(np.int32),
    )
    found_labels = whole if numbered is None else numbered.labels
    return dataclasses.replace(found_labels, labels=labels)


def coarse_chunks(
    chunks: tuple[tuple[int, ...], ...], block_voxels: int
) -> tuple[tuple[int, ...], ...]:
    """Chunks of whole consecutive input chunks, at least ``block_voxels`` per block.

    Along each axis, consecutive chunks are joined until their sum reaches the
    edge ``ceil(block_voxels ** (1/3))``; a last group shorter than that joins
    the one before it. Every new boundary is an old one, so rechunking to the
    result only concatenates chunks.

    Parameters
    ----------
    chunks : tuple of 3 tuples of int
        A Dask array's chunks, voxels.
    block_voxels : int
        The least voxels a block should hold, ≥ 1.

    Returns
    -------
    tuple of 3 tuples of int
        The joined chunks (the input where no chunk is joined).

    Examples
    --------
    >>> coarse_chunks(((64,) * 4, (64,) * 4, (64, 64, 64, 10)), 128**3)
    ((128, 128), (128, 128), (202,))
    """
    if (
        isinstance(block_voxels, bool)
        or not isinstance(block_voxels, int | np.integer)
        or block_voxels < 1
    ):
        raise ValueError(
            f"block_voxels must be an integer number of voxels ≥ 1; got {block_voxels!r}"
        )
    edge = math.ceil(round(block_voxels ** (1.0 / 3.0), 9))
    joined: list[tuple[int, ...]] = []
    for sizes in chunks:
        groups: list[int] = []
        held = edge
        for size in sizes:
            if held >= edge:
                groups.append(0)
                held = 0
            groups[-1] += int(size)
            held += int(size)
        if len(groups) > 1 and groups[-1] < edge:
            last = groups.pop()
            groups[-1] += last
        joined.append(tuple(groups))
    return tuple(joined)


def label_particles(
    phases: da.Array | zarr.Array,
    scratch: zarr.Group | None = None,
    *,
    voxel_size_um: float,
    radius_range_um: tuple[float, float] | None = None,
    connectivity: int = 6,
    min_volume_voxels: int = 27,
    split_touching: bool = True,
    max_split_voxels: int = MAX_SPLIT_VOXELS,
) -> Labels:
    """The label stage: the silicon particles of a phase volume, touching ones split.

    The phases' chunks are joined into labelling blocks of at least
    :data:`LABEL_BLOCK_VOXELS` (128³) voxels (:func:`label`'s ``block_voxels``).
    Stored phases are labelled from the store (:func:`label_stored`): the
    same labels, with every task's memory bounded at any volume size.

    Parameters
    ----------
    phases : (Z, Y, X) dask array or stored zarr.Array of uint8
        Phase codes (silicon is 3).
    scratch : zarr.Group, optional
        With stored ``phases``: where the split pieces wait for the final
        labels (:func:`label_stored`); remove it once they are written.
    voxel_size_um : float
        Voxel edge, µm.
    radius_range_um : (float, float), optional
        The size prior: equivalent radii of the silicon particles, µm. Needed
        to split touching particles; without it the particles are the
        connected components.
    connectivity : {6, 18, 26}, default 6
        Neighbours that connect voxels: faces, edges or corners.
    min_volume_voxels : int, default 27
        Smaller particles are dropped, voxels.
    split_touching : bool, default True
        Split touching particles: a watershed of the distance transform with
        markers from the size prior (:func:`label`).
    max_split_voxels : int
        A component whose bounding box holds more voxels stays whole (and is
        flagged by the measure stage); bounds a splitting task's memory.

    Returns
    -------
    Labels

    Raises
    ------
    ValueError
        Stored ``phases`` without a ``scratch`` group, and as :func:`label`.
    """
    keywords: dict[str, Any] = {
        "connectivity": connectivity,
        "min_volume_voxels": min_volume_voxels,
        "split_touching": split_touching,
        "radius_range_um": radius_range_um,
        "voxel_size_um": voxel_size_um,
        "max_split_voxels": max_split_voxels,
        "block_voxels": LABEL_BLOCK_VOXELS,
    }
    if isinstance(phases, zarr.Array):
        if scratch is None:
            raise ValueError(
                f"stored phases ({phases}) are labelled from the store and need a scratch "
                "group for the split pieces; got scratch=None"
            )
        return label_stored(StoredMask(phases, SILICON), scratch, **keywords)
    return label(phases == SILICON, **keywords)
