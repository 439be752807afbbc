"""Measure: per-particle gaps between silicon and the CBD, by ray tracing.

The ``measure`` stage of DESIGN.md (particles → ray-traced gaps → the
particles table). For every silicon particle, rays leave its centroid in
quasi-uniform directions; along each, the distance from the particle's
surface to the carbon black-binder domain (CBD) is the ray's gap; the
particle's gap is the mean over its valid rays (the paper's "average distance
between each silicon particle and the nearest carbon black-binder domain ...
based on a ray tracing approach", Supplementary Note 7)::

    labels (z, y, x), chunked
      │ particle_properties  per block: labels present, voxel counts, coordinate
      │                      sums, bounding boxes → combined on the client
      │                      (particles × blocks numbers, never the volume)
      ▼
    one row per particle: centroid, bounding box, equivalent radius
      │ measure_gaps         bounding box ± margin cropped from phases, labels,
      │                      sample; neighbouring particles per task
      │                      (dask.delayed), as many as fit a task's memory
      │ ray_gaps_kernel      all rays of one particle at once (NumPy)
      ▼
    particle, centroid_*_um, radius_um, gap_mean_um, gap_std_um, n_rays, touches_border,
    oversized, spans_box, few_rays   (flags: not measured, gap NaN)

The ray model (:func:`ray_gaps_kernel`): a ray starts at the particle's
centroid and samples, every ``step_vox`` voxels, the trilinearly interpolated
indicators of the particle (``labels == particle``) and of the CBD
(``phases == 2``). The surface is where the particle's indicator first falls
below 0.5 after having been at or above it; the CBD is where its indicator
first reaches 0.5 from there on; both crossings are placed between the two
bracketing samples by linear interpolation; the gap is their distance. Rays
that meet graphite, another particle, the outside of the sample or of the
volume before the CBD, or find no CBD within the maximum length, are not
counted.

Phase codes: 0 pore, 1 graphite, 2 CBD, 3 silicon, 4 SEI. Voxel ``i`` along
an axis has its centre at ``i * voxel_size_um`` µm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import zarr
from numpy.typing import NDArray
from scipy import ndimage

from debond.memory import task_bytes
from debond.pipeline.blocks import block_edges, read_box
from debond.pipeline.checks import positive
from debond.pipeline.levels import check_size_prior
from debond.pipeline.segment import CBD, GRAPHITE, SILICON
from debond.storage import default_chunks
from debond.storage.tables import NOT_MEASURED  # flags: not measured, gap NaN

__all__ = [
    "GAP_COLUMNS",
    "MIN_VALID_RAY_FRACTION",
    "NOT_MEASURED",
    "OVERSIZE_FACTOR",
    "PARTICLE_COLUMNS",
    "fibonacci_directions",
    "measure_gaps",
    "particle_properties",
    "particle_stats_kernel",
    "ray_gaps_kernel",
]


#: Columns of :func:`particle_properties`, in order.
PARTICLE_COLUMNS = (
    "particle",
    "volume_voxels",
    "centroid_z_um",
    "centroid_y_um",
    "centroid_x_um",
    "z0",
    "z1",
    "y0",
    "y1",
    "x0",
    "x1",
    "radius_um",
)

#: Columns of :func:`measure_gaps`, in order (the 3-D part of ``particles.parquet``).
GAP_COLUMNS = (
    "particle",
    "centroid_z_um",
    "centroid_y_um",
    "centroid_x_um",
    "radius_um",
    "gap_mean_um",
    "gap_std_um",
    "n_rays",
    "touches_border",
    "oversized",
    "spans_box",
    "few_rays",
)

#: Default :func:`measure_gaps` ``min_valid_ray_fraction``.
MIN_VALID_RAY_FRACTION = 0.2
#: Peak bytes of a task per voxel of a particle's crop: the kernel's per-voxel
#: arrays (the crops are views of the batch's box, or copies where the box came
#: in pieces; measured with tracemalloc, tests/test_memory.py) ...
CROP_BYTES_PER_VOXEL = 24.0
#: ... and per point of one particle's rays (n_rays × steps of 0.25 voxel):
#: their coordinates and the phases sampled along them.
RAY_POINT_BYTES = 72.0
#: Ray steps, voxels.
RAY_STEP_VOXELS = 0.25


def task_peak_bytes(crop_voxels: float, n_rays: int, max_length_vox: float) -> float:
    """Peak memory of tracing one particle's rays in its crop, bytes (inputs not counted).

    Parameters
    ----------
    crop_voxels : float
        Voxels of the crop (the particle's box plus the longest ray on every side).
    n_rays : int
        Rays per particle.
    max_length_vox : float
        Longest ray, voxels.
    """
    steps = math.ceil(max_length_vox / RAY_STEP_VOXELS)
    return CROP_BYTES_PER_VOXEL * crop_voxels + RAY_POINT_BYTES * n_rays * steps


def batch_particles(
    boxes: NDArray[np.int64],
    bytes_per_voxel: float,
    work: Callable[[int], float],
    most: int,
    budget: float,
) -> list[list[int]]:
    """Consecutive particles in batches of at most `most` whose task fits `budget`.

    A batch's task holds the box around its particles' crops (`bytes_per_voxel`
    per voxel: the phases, labels and sample cut to it) and traces one crop at
    a time (`work` of the largest crop's voxels).

    Parameters
    ----------
    boxes : (n, 2, 3) int array
        Per particle (in the order wanted), its crop's first voxel and the one past its last.
    bytes_per_voxel : float
        Bytes of the inputs per voxel of a batch's box.
    work : callable
        Bytes of tracing one crop of the given voxels (:func:`task_peak_bytes`).
    most : int
        Particles per batch, ≥ 1.
    budget : float
        Bytes a task may use; a particle whose task alone needs more goes alone.

    Returns
    -------
    list of lists of int
        Positions in `boxes`, in order.

    Examples
    --------
    >>> boxes = np.array([[[0, 0, 0], [4, 4, 4]], [[2, 2, 2], [6, 6, 6]], [[0, 0, 20], [4, 4, 24]]])
    >>> batch_particles(boxes, 1.0, lambda voxels: 0.0, most=8, budget=300.0)
    [[0, 1], [2]]
    """
    batches: list[list[int]] = []
    low = high = np.zeros(3, np.int64)
    heaviest = 0.0
    for position, (lo, hi) in enumerate(np.asarray(boxes, np.int64)):
        crop = work(int(np.prod(hi - lo)))
        grown_low, grown_high = np.minimum(low, lo), np.maximum(high, hi)
        need = bytes_per_voxel * float(np.prod(grown_high - grown_low)) + max(heaviest, crop)
        if batches and len(batches[-1]) < most and need <= budget:
            batches[-1].append(position)
            low, high, heaviest = grown_low, grown_high, max(heaviest, crop)
        else:
            batches.append([position])
            low, high, heaviest = lo, hi, crop
    return batches


#: A particle is oversized above this multiple of the size prior's largest
#: radius: the prior bounds true radii, and a measured one may exceed it by the
#: partial volume of its surface (a few %), never by a second particle (two
#: equal spheres merged are 1.26 times one).
OVERSIZE_FACTOR = 1.2

#: Columns of :func:`particle_stats_kernel`: label, voxel count, sums of the
#: voxel indices along z, y, x, and the half-open bounding box.
_STATS = ("particle", "count", "sum_z", "sum_y", "sum_x", "z0", "z1", "y0", "y1", "x0", "x1")

#: Rays × steps evaluated at once by :func:`ray_gaps_kernel` (bounds its memory).
_POINTS_PER_PASS = 1 << 20


# -------------------------------------------------------------- directions


def fibonacci_directions(n: int) -> np.ndarray:
    """``n`` unit vectors spread quasi-uniformly over the sphere (Fibonacci lattice).

    Point ``i`` has ``z = 1 − (2i + 1)/n`` (equal-area bands) and azimuth
    ``i × π(3 − √5)`` (the golden angle), so every direction stands for the
    same solid angle ``4π/n`` and neighbours are about ``√(4π/n)`` radians
    apart (González 2010, *Measurement of areas on a sphere using Fibonacci
    and latitude–longitude lattices*, Math. Geosci. 42, 49).

    Parameters
    ----------
    n : int
        Number of directions, ≥ 1.

    Returns
    -------
    (n, 3) ndarray of float64
        Unit vectors, components ordered (z, y, x) like the volume's axes.

    Examples
    --------
    >>> d = fibonacci_directions(4)
    >>> d.shape, bool(np.allclose(np.linalg.norm(d, axis=1), 1.0))
    ((4, 3), True)
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer (directions); got {n!r}")
    i = np.arange(int(n), dtype=np.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    phi = (i - 0.5) * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([z, r * np.sin(phi), r * np.cos(phi)], axis=1)


# ------------------------------------------------------ particle properties


def particle_stats_kernel(block: np.ndarray, offset: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Partial per-label statistics of one block of a label volume.

    The block-wise half of :func:`particle_properties`: the numbers that,
    summed (counts, coordinate sums) or taken as extremes (bounding boxes)
    over the blocks, give each particle's volume, centroid and bounding box.

    Parameters
    ----------
    block : (z, y, x) ndarray of integers
        Labels; 0 is background.
    offset : 3 ints
        Global voxel index of ``block[0, 0, 0]``.

    Returns
    -------
    (k, 11) ndarray of int64
        One row per non-zero label present, sorted by label, columns
        ``label, count, sum_z, sum_y, sum_x, z0, z1, y0, y1, x0, x1``: voxel
        count, sums of the global voxel indices, half-open global bounding
        box. The sums are accumulated in float64 and exact while a block's
        sum stays below 2**53 (a block of 10⁸ voxels at indices up to 10⁷).
    """
    block = np.asarray(block)
    present, inverse = np.unique(block, return_inverse=True)
    inverse = inverse.reshape(block.shape)
    k = present.size
    flat = inverse.ravel()
    counts = np.bincount(flat, minlength=k)
    columns: list[np.ndarray] = [present.astype(np.int64), counts.astype(np.int64)]
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = block.shape[axis]
        coordinate = np.arange(block.shape[axis], dtype=np.float64).reshape(shape)
        weights = np.broadcast_to(coordinate, block.shape).ravel()
        sums = np.bincount(flat, weights=weights, minlength=k)
        columns.append(np.rint(sums).astype(np.int64) + counts * int(offset[axis]))
    boxes = ndimage.find_objects(inverse + 1, max_label=k)
    bounds = np.empty((k, 6), np.int64)
    for j, box in enumerate(boxes):
        if box is None:  # pragma: no cover - every label of np.unique is present
            continue
        for axis, s in enumerate(box):
            bounds[j, 2 * axis] = s.start + int(offset[axis])
            bounds[j, 2 * axis + 1] = s.stop + int(offset[axis])
    table = np.concatenate([np.stack(columns, axis=1), bounds], axis=1)
    return table[present != 0]


def _stats_partials(labels: da.Array) -> list[Any]:
    """One delayed :func:`particle_stats_kernel` per block of ``labels``."""
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in labels.chunks]
    blocks = labels.to_delayed()
    kernel = dask.delayed(particle_stats_kernel, pure=True)
    return [
        kernel(blocks[index], tuple(int(starts[a][index[a]]) for a in range(3)))
        for index in np.ndindex(*blocks.shape)
    ]


def _combine_stats(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Per-block statistics (list of (k_b, 11) int64) to per-particle ones, sorted by label.

    Runs on the client: its size is the number of particles × blocks they cross.
    """
    table = (
        np.concatenate([np.asarray(p, np.int64).reshape(-1, len(_STATS)) for p in parts])
        if parts
        else np.empty((0, len(_STATS)), np.int64)
    )
    if table.size and table[:, 0].min() < 0:
        raise ValueError(
            f"labels must be ≥ 0 (0 background, 1..N particles); found label {table[:, 0].min()}"
        )
    particles, inverse = np.unique(table[:, 0], return_inverse=True)
    out = np.zeros((particles.size, len(_STATS)), np.int64)
    out[:, 0] = particles
    for column in range(1, 5):
        np.add.at(out[:, column], inverse, table[:, column])
    for column in (5, 7, 9):
        out[:, column] = np.iinfo(np.int64).max
        np.minimum.at(out[:, column], inverse, table[:, column])
    for column in (6, 8, 10):
        np.maximum.at(out[:, column], inverse, table[:, column])
    return out


def _properties_frame(stats: np.ndarray, voxel_size_um: float) -> pd.DataFrame:
    """The :data:`PARTICLE_COLUMNS` table from combined statistics."""
    count = stats[:, 1]
    safe = np.maximum(count, 1).astype(np.float64)
    frame: dict[str, Any] = {"particle": stats[:, 0], "volume_voxels": count}
    for j, axis in enumerate("zyx"):
        frame[f"centroid_{axis}_um"] = stats[:, 2 + j] / safe * voxel_size_um
    for j, name in enumerate(("z0", "z1", "y0", "y1", "x0", "x1")):
        frame[name] = stats[:, 5 + j]
    volume_um3 = count.astype(np.float64) * voxel_size_um**3
    frame["radius_um"] = np.cbrt(3.0 * volume_um3 / (4.0 * math.pi))
    table = pd.DataFrame(frame, columns=list(PARTICLE_COLUMNS))
    integers = ("particle", "volume_voxels", "z0", "z1", "y0", "y1", "x0", "x1")
    return table.astype(dict.fromkeys(integers, np.int64))


def _as_volume(array: Any, name: str, shape: tuple[int, ...] | None = None) -> da.Array:
    """``array`` as a 3-D Dask array (NumPy input in cubes of 8 MiB, Zarr in its chunks)."""
    if isinstance(array, zarr.Array):
        array = da.from_zarr(array)
    if not isinstance(array, da.Array):
        array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"{name} must be 3-D (z, y, x); got shape {array.shape}")
    if shape is not None and tuple(array.shape) != shape:
        raise ValueError(
            f"{name} must have the shape of labels, {shape}; got shape {tuple(array.shape)}"
        )
    if any(int(s) == 0 for s in array.shape):
        raise ValueError(f"{name} must not be empty; got shape {tuple(array.shape)}")
    if isinstance(array, da.Array):
        return array
    return da.from_array(array, chunks=default_chunks(array.shape, "volume", array.dtype))


def _check_integer_dtype(array: Any, name: str, what: str) -> None:
    dtype = np.dtype(array.dtype)
    if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
        raise ValueError(f"{name} must hold integer {what}; got dtype {dtype}")


def _check_voxel_size(voxel_size_um: Any) -> float:
    return positive(voxel_size_um, "voxel_size_um", "µm")


def particle_properties(labels: da.Array | np.ndarray, *, voxel_size_um: float) -> pd.DataFrame:
    """Volume, centroid, bounding box and equivalent radius of every particle.

    A block-wise partial reduction (DESIGN.md, principle 2): each block
    reports, for the labels it holds, voxel counts, sums of voxel indices and
    bounding boxes (:func:`particle_stats_kernel`); the client adds and takes
    extremes. Work on the client scales with particles × blocks, never with
    the volume, and there is one task per block, not per particle.
    **Computes** (with the active Dask scheduler) and returns a small table.

    Parameters
    ----------
    labels : (z, y, x) dask or NumPy array of integers
        0 background, 1..N particles (any positive labels, unique over the
        volume). NumPy input is split into cubes of 8 MiB.
    voxel_size_um : float
        Edge of a voxel, µm, > 0.

    Returns
    -------
    pandas.DataFrame
        One row per label present, sorted by label, columns
        :data:`PARTICLE_COLUMNS`: ``particle`` (int64), ``volume_voxels``
        (int64), ``centroid_z_um, centroid_y_um, centroid_x_um`` (float64,
        the mean voxel index × voxel size, as ``scipy.ndimage.center_of_mass``
        × voxel size), bounding box ``z0, z1, y0, y1, x0, x1`` (int64 voxel
        indices, half-open, as ``scipy.ndimage.find_objects``), ``radius_um``
        (float64, ``(3V/4π)^(1/3)`` with ``V = volume_voxels × voxel³``).
        No particle: no rows, the same columns.

    Raises
    ------
    ValueError
        ``labels`` not 3-D or not integer, a negative label, ``voxel_size_um``
        not > 0.

    Examples
    --------
    >>> labels = np.zeros((4, 4, 4), np.int32)
    >>> labels[1:3, 1:3, 1:3] = 7
    >>> table = particle_properties(labels, voxel_size_um=0.5)
    >>> table[["particle", "volume_voxels", "centroid_z_um", "z0", "z1"]].values.tolist()
    [[7.0, 8.0, 0.75, 1.0, 3.0]]
    """
    voxel = _check_voxel_size(voxel_size_um)
    volume = _as_volume(labels, "labels")
    _check_integer_dtype(volume, "labels", "particle labels")
    parts = dask.compute(*_stats_partials(volume))
    return _properties_frame(_combine_stats(parts), voxel)


# ------------------------------------------------------------------- rays


def _first(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a (rays, steps) bool array: whether any is True and the first index."""
    return np.asarray(mask.any(axis=1)), np.asarray(mask.argmax(axis=1))


def ray_gaps_kernel(
    phases_crop: np.ndarray,
    labels_crop: np.ndarray,
    particle: int,
    centroid_vox: Sequence[float] | np.ndarray,
    directions: np.ndarray,
    *,
    max_length_vox: float,
    step_vox: float = 0.25,
    sample_crop: np.ndarray | None = None,
    crop_origin: Sequence[int] = (0, 0, 0),
    volume_shape: Sequence[int],
) -> np.ndarray:
    """The gap along every ray of one particle, in voxels.

    Ray model, for a ray of direction ``d`` from the centroid ``c``, samples
    ``p_k = c + k·step_vox·d`` (k = 0, 1, ...):

    1. ``f`` and ``h`` are the trilinear interpolations of the indicators
       ``labels == particle`` and ``phases == CBD`` at the samples
       (``scipy.ndimage.map_coordinates(order=1)``).
    2. Entry: the first sample with ``f ≥ 0.5`` (the centroid itself when it
       lies in the particle). A centroid outside its particle (a non-convex
       particle, a shell) thus starts measuring where the ray first enters
       the particle; a ray that never enters it is invalid.
    3. Surface: the first sample after the entry with ``f < 0.5``; the
       crossing ``t_s`` lies between it and the sample before, by linear
       interpolation of ``f`` to 0.5.
    4. CBD: the first sample from the surface sample on with ``h ≥ 0.5``;
       ``t_c`` by linear interpolation of ``h`` to 0.5 with the sample before
       (``t_c = t_s`` if that one had ``h ≥ 0.5`` too). The gap is
       ``max(t_c − t_s, 0)``: 0 where the CBD touches the particle.
    5. The ray is invalid (NaN) when a sample from the entry up to the one
       before the CBD crossing lies outside the volume (the trilinear domain
       ``0 ≤ p ≤ shape − 1`` of ``volume_shape``) or outside the crop, or its
       nearest voxel (rounding half to even) is outside the sample, graphite,
       another particle's label, or silicon not labelled ``particle``; when the
       ray enters its own particle again before the CBD; when it finds no
       CBD; or when ``t_c − t_s > max_length_vox``.

    The samples of all rays are evaluated together, in passes of at most
    2**20 points, not in a loop per ray or step.

    Parameters
    ----------
    phases_crop : (z, y, x) ndarray of integers
        Phase codes (0 pore, 1 graphite, 2 CBD, 3 silicon, 4 SEI) of a box of
        the volume.
    labels_crop : (z, y, x) ndarray of integers
        Particle labels of the same box.
    particle : int
        The particle's label.
    centroid_vox : 3 floats
        The particle's centroid, global voxel coordinates (z, y, x).
    directions : (n_rays, 3) ndarray
        Unit vectors (z, y, x), e.g. :func:`fibonacci_directions`.
    max_length_vox : float
        Longest gap counted, voxels.
    step_vox : float
        Distance between samples along a ray, voxels (default 0.25).
    sample_crop : (z, y, x) ndarray of bool, optional
        True inside the sample; None: everything is inside.
    crop_origin : 3 ints
        Global voxel index of ``[0, 0, 0]`` of the crops.
    volume_shape : 3 ints
        Shape of the whole volume.

    Returns
    -------
    (n_rays,) ndarray of float64
        Gap of each ray in voxels (≥ 0), NaN where the ray is invalid.

    Notes
    -----
    The crop must hold the particle's bounding box widened by
    ``max_length_vox + step_vox + 2`` voxels on every side (or up to the
    volume's edge): a sample outside the crop makes its ray invalid, and a
    smaller crop would drop rays that the whole volume would count.
    """
    phases_crop = np.asarray(phases_crop)
    labels_crop = np.asarray(labels_crop)
    if phases_crop.ndim != 3 or phases_crop.shape != labels_crop.shape:
        raise ValueError(
            "phases_crop and labels_crop must be 3-D of one shape; got "
            f"{phases_crop.shape} and {labels_crop.shape}"
        )
    if sample_crop is not None:
        sample_crop = np.asarray(sample_crop, dtype=bool)
        if sample_crop.shape != phases_crop.shape:
            raise ValueError(
                f"sample_crop must have the crops' shape {phases_crop.shape}; "
                f"got {sample_crop.shape}"
            )
    directions = np.asarray(directions, dtype=np.float64)
    if directions.ndim != 2 or directions.shape[1] != 3:
        raise ValueError(f"directions must be (n_rays, 3); got shape {directions.shape}")
    if not step_vox > 0:
        raise ValueError(f"step_vox must be > 0 (voxels); got {step_vox!r}")
    n_rays = directions.shape[0]
    gaps = np.full(n_rays, np.nan)
    own = labels_crop == particle
    if n_rays == 0 or not own.any():
        return gaps

    origin = np.asarray(crop_origin, dtype=np.float64)
    centre = np.asarray(centroid_vox, dtype=np.float64) - origin
    crop_shape = np.asarray(phases_crop.shape, dtype=np.float64)
    volume_hi = np.asarray(volume_shape, dtype=np.float64) - 1.0 - origin

    # Reach: the particle's farthest bounding-box corner from the centroid, one
    # voxel of interpolation support, the longest gap and one step.
    corner = np.zeros(3)
    for axis in range(3):
        present = np.flatnonzero(own.any(axis=tuple(a for a in range(3) if a != axis)))
        corner[axis] = max(abs(present[0] - centre[axis]), abs(present[-1] - centre[axis]))
    reach = float(np.linalg.norm(corner)) + 2.0 + float(max_length_vox) + 2.0 * step_vox
    n_steps = math.ceil(reach / step_vox) + 1
    t = np.arange(n_steps, dtype=np.float64) * step_vox

    own_f = own.astype(np.float32)
    cbd_f = (phases_crop == CBD).astype(np.float32)
    f = np.empty((n_rays, n_steps))
    h = np.empty((n_rays, n_steps))
    bad = np.empty((n_rays, n_steps), dtype=bool)
    rays_per_pass = max(1, _POINTS_PER_PASS // n_steps)
    upper = crop_shape - 1.0
    for start in range(0, n_rays, rays_per_pass):
        stop = min(n_rays, start + rays_per_pass)
        # (3, rays, steps) crop coordinates of the samples
        points = centre[:, None, None] + directions[start:stop].T[:, :, None] * t[None, None, :]
        f[start:stop] = ndimage.map_coordinates(
            own_f, points, order=1, mode="constant", cval=0.0, prefilter=False, output=np.float64
        )
        h[start:stop] = ndimage.map_coordinates(
            cbd_f, points, order=1, mode="constant", cval=0.0, prefilter=False, output=np.float64
        )
        # outside the crop (where nothing is known) or outside the volume
        outside = np.zeros(points.shape[1:], dtype=bool)
        for axis in range(3):
            p = points[axis]
            outside |= (p < max(0.0, -origin[axis])) | (p > min(upper[axis], volume_hi[axis]))
        index = tuple(
            np.clip(np.rint(points[axis]), 0, phases_crop.shape[axis] - 1).astype(np.intp)
            for axis in range(3)
        )
        label = labels_crop[index]
        phase = phases_crop[index]
        foreign = (phase == GRAPHITE) | ((label != particle) & ((label != 0) | (phase == SILICON)))
        if sample_crop is not None:
            foreign |= ~sample_crop[index]
        bad[start:stop] = outside | foreign

    steps = np.arange(n_steps)
    rows = np.arange(n_rays)
    inside = f >= 0.5
    entered, k_in = _first(inside)
    exited, k_out = _first(~inside & (steps > k_in[:, None]))
    exited &= entered
    k_out = np.maximum(k_out, 1)
    f0, f1 = f[rows, k_out - 1], f[rows, k_out]
    t_s = t[k_out - 1] + step_vox * (f0 - 0.5) / np.where(exited, f0 - f1, 1.0)

    found, k_c = _first((h >= 0.5) & (steps >= k_out[:, None]))
    found &= exited
    k_c = np.maximum(k_c, 1)
    h0, h1 = h[rows, k_c - 1], h[rows, k_c]
    rising = found & (h0 < 0.5)
    t_c = np.where(rising, t[k_c - 1] + step_vox * (0.5 - h0) / np.where(rising, h1 - h0, 1.0), t_s)
    gap = np.maximum(t_c - t_s, 0.0)

    before_cbd = (steps >= k_in[:, None]) & (steps < k_c[:, None])
    blocked = (bad & before_cbd).any(axis=1)
    again = (inside & (steps > k_out[:, None]) & (steps < k_c[:, None])).any(axis=1)
    valid = found & ~blocked & ~again & (gap <= max_length_vox)
    gaps[valid] = gap[valid]
    return gaps


# ---------------------------------------------------------------- measure


def _crop(
    blocks: Sequence[tuple[tuple[int, int, int], np.ndarray]],
    lo: Sequence[int],
    hi: Sequence[int],
) -> np.ndarray:
    """The box ``[lo, hi)`` (global voxel indices) cut from the blocks that cover it, each
    given with the global index of its first voxel: a view of a block that holds all
    of it, else a copy assembled from the blocks."""
    for origin, block in blocks:
        inside = [slice(a - o, b - o) for a, b, o in zip(lo, hi, origin, strict=True)]
        if all(0 <= s.start and s.stop <= n for s, n in zip(inside, block.shape, strict=True)):
            return block[tuple(inside)]
    out = np.empty(tuple(b - a for a, b in zip(lo, hi, strict=True)), blocks[0][1].dtype)
    for origin, block in blocks:
        inside_out, inside_block = [], []
        for axis in range(3):
            start = max(lo[axis], origin[axis])
            stop = min(hi[axis], origin[axis] + block.shape[axis])
            if start >= stop:
                break
            inside_out.append(slice(start - lo[axis], stop - lo[axis]))
            inside_block.append(slice(start - origin[axis], stop - origin[axis]))
        else:
            out[tuple(inside_out)] = block[tuple(inside_block)]
    return out


def _measure_batch(
    jobs: list[tuple[int, tuple[float, float, float], tuple[int, int, int], tuple[int, int, int]]],
    origins: list[tuple[int, int, int]],
    phase_blocks: list[np.ndarray],
    label_blocks: list[np.ndarray],
    sample_blocks: list[np.ndarray] | None,
    directions: np.ndarray,
    max_length_vox: float,
    step_vox: float,
    volume_shape: tuple[int, int, int],
) -> np.ndarray:
    """Rays of a batch of particles: (k, 3) float64 of gap mean, std (voxels), valid rays.

    ``jobs``: per particle its label, centroid and crop ``[lo, hi)``; the crops are cut
    here from the input blocks that cover them (``origins``: each block's first voxel),
    so every block reaches the task once, whatever number of its particles' crops
    it meets."""
    out = np.empty((len(jobs), 3))
    phases_at = list(zip(origins, phase_blocks, strict=True))
    labels_at = list(zip(origins, label_blocks, strict=True))
    sample_at = None if sample_blocks is None else list(zip(origins, sample_blocks, strict=True))
    for row, (particle, centroid, lo, hi) in enumerate(jobs):
        gaps = ray_gaps_kernel(
            _crop(phases_at, lo, hi),
            _crop(labels_at, lo, hi),
            particle,
            centroid,
            directions,
            max_length_vox=max_length_vox,
            step_vox=step_vox,
            sample_crop=None if sample_at is None else _crop(sample_at, lo, hi),
            crop_origin=lo,
            volume_shape=volume_shape,
        )
        valid = gaps[np.isfinite(gaps)]
        if valid.size:
            out[row] = valid.mean(), valid.std(), valid.size
        else:
            out[row] = np.nan, np.nan, 0
    return out


def _read_and_measure(
    jobs: list[tuple[int, tuple[float, float, float], tuple[int, int, int], tuple[int, int, int]]],
    low: tuple[int, int, int],
    high: tuple[int, int, int],
    phases: zarr.Array,
    labels: zarr.Array,
    sample: zarr.Array | None,
    *rays: Any,
) -> np.ndarray:
    """:func:`_measure_batch` on the box ``[low, high)`` read here from the stored
    phases, labels and sample (None: no sample): one task, no input sent to it."""
    return _measure_batch(
        jobs,
        [low],
        [read_box(phases, low, high)],
        [read_box(labels, low, high)],
        None if sample is None else [read_box(sample, low, high)],
        *rays,
    )


def _empty_gaps() -> pd.DataFrame:
    dtypes = {
        "particle": np.int64,
        "centroid_z_um": np.float64,
        "centroid_y_um": np.float64,
        "centroid_x_um": np.float64,
        "radius_um": np.float64,
        "gap_mean_um": np.float64,
        "gap_std_um": np.float64,
        "n_rays": np.int64,
        "touches_border": np.bool_,
        "oversized": np.bool_,
        "spans_box": np.bool_,
        "few_rays": np.bool_,
    }
    return pd.DataFrame({name: np.empty(0, dtype) for name, dtype in dtypes.items()})


def _check_prior_upper(radius_range_um: Any) -> float:
    """The upper bound of a size prior (lo, hi) in µm; inf without a prior."""
    prior = check_size_prior(radius_range_um)
    return math.inf if prior is None else prior[1]


def measure_gaps(
    phases: da.Array | np.ndarray | zarr.Array,
    labels: da.Array | np.ndarray | zarr.Array,
    *,
    voxel_size_um: float,
    n_rays: int = 256,
    max_ray_length_um: float = 3.0,
    sample: da.Array | np.ndarray | zarr.Array | None = None,
    particles_per_task: int = 16,
    radius_range_um: tuple[float, float] | None = None,
    min_valid_ray_fraction: float = MIN_VALID_RAY_FRACTION,
) -> pd.DataFrame:
    """Ray-traced gap between every silicon particle and the CBD (the ``measure`` stage).

    1. :func:`particle_properties` (block-wise reduction) and a check that
       ``phases`` holds CBD at all, in one ``dask.compute``.
    2. Each particle's bounding box widened by ``margin = ceil(L + 0.25) + 2``
       voxels (``L`` the maximum ray length in voxels), clipped to the volume,
       is its crop. Particles are ordered by the block of ``labels`` that holds
       their centroid (then by label), and consecutive ones, at most
       ``particles_per_task``, go to one ``dask.delayed`` task
       (:func:`batch_particles`), which gets ``phases``, ``labels`` and
       ``sample`` cut to the box around their crops, cuts the crops from it
       and runs
       :func:`ray_gaps_kernel` for each with ``n_rays``
       :func:`fibonacci_directions` and steps of 0.25 voxel.
    3. Per particle the valid rays' gaps are averaged.

    Particles that cannot be measured honestly are flagged, not measured
    (DESIGN.md, principle 9): their gap is NaN, their geometry is kept.
    ``oversized``: the equivalent radius exceeds the size prior's upper bound
    (``radius_range_um[1]``) by more than :data:`OVERSIZE_FACTOR` (touching
    particles left unsplit, a network; not a measured radius a few % over);
    ``spans_box``: the bounding box reaches two opposite faces of the volume,
    or of the sample's bounding box when ``sample`` is given, along some axis
    (a percolating object, never one particle). Neither is ray-traced (such
    an object would be cropped whole), so their ``n_rays`` is 0.
    ``few_rays``: fewer than ``ceil(min_valid_ray_fraction × n_rays)`` rays
    are valid (a particle hemmed in by graphite, other particles or the
    sample's edge: its mean would stand for a small part of its surface);
    ``n_rays`` keeps the count of valid rays.

    The margin covers every sample a counted ray needs: the surface crossing
    lies within one voxel of the bounding box (the centroid lies inside it),
    the CBD crossing at most ``L`` further, plus one step and one voxel of
    interpolation support. Crops, centroids (exact integer sums) and rays are
    the same for any chunking of the inputs, so the table is too.
    **Computes** (with the active Dask scheduler) and returns the table.

    A task holds the inputs in the box around its particles' crops (bounding
    box + margin each) and one particle's crops at a time; a batch grows while
    that fits the memory a task may use (:func:`debond.memory.task_bytes`,
    with :func:`task_peak_bytes` for the crop). Neighbours share most of their
    box, which is why they are batched together (sending each its own crops
    moved every crop between workers twice); sending whole blocks instead of
    the box gave a task up to 27 blocks of 128³ (370 MiB) on 1 GiB workers.
    Given Zarr arrays (as the stage gives the stored ones), a task reads its
    box from the store itself, one chunk at a time: one task per batch, no
    input sent between workers. Otherwise (NumPy or Dask, or a mix) the box is
    cut in the graph from the blocks it meets, and those pieces are sent.
    A particle spanning the volume (a percolating network) would need every
    block; such particles are flagged (``spans_box``), not traced.

    Parameters
    ----------
    phases : (z, y, x) dask, NumPy or Zarr array of integers
        Phase codes: 0 pore, 1 graphite, 2 CBD, 3 silicon, 4 SEI.
    labels : (z, y, x) dask, NumPy or Zarr array of integers
        Silicon particles 1..N (0 background), unique over the volume.
    voxel_size_um : float
        Voxel edge, µm, > 0.
    n_rays : int
        Rays per particle, ≥ 1 (default 256).
    max_ray_length_um : float
        Longest gap counted, µm, > 0 (default 3.0); rays finding no CBD within
        it are not counted.
    sample : (z, y, x) dask, NumPy or Zarr array of bool, optional
        True inside the sample (e.g. the milled cylinder); rays that reach a
        voxel outside it before the CBD are not counted. None: the whole volume.
    particles_per_task : int
        Most particles measured by one task, ≥ 1 (default 16); fewer where
        the box around their crops (each the particle's box plus the longest
        ray on every side: 116³ voxels for 3 µm rays at 0.06 µm voxels) would
        not fit a task's memory.
    radius_range_um : (lo, hi) floats, optional
        Size prior of the silicon particles, equivalent radii in µm,
        0 < lo ≤ hi (hi may be inf); particles above ``OVERSIZE_FACTOR × hi``
        are flagged ``oversized``. None (default): nothing is flagged oversized.
    min_valid_ray_fraction : float
        Least fraction of the ``n_rays`` rays that must be valid for a gap to
        be reported, in [0, 1] (default 0.2: a particle with a quarter of its
        surface facing the CBD is measured); below it the particle is
        flagged ``few_rays``. 0 reports any particle with a valid ray.

    Returns
    -------
    pandas.DataFrame
        One row per particle, sorted by label, columns :data:`GAP_COLUMNS`:
        ``particle`` (int64), ``centroid_z_um, centroid_y_um, centroid_x_um,
        radius_um`` (float64, as :func:`particle_properties`), ``gap_mean_um``
        and ``gap_std_um`` (float64, mean and population standard deviation,
        ddof=0, of the valid rays' gaps × voxel size; NaN when no ray is
        valid or the particle is flagged), ``n_rays`` (int64, valid rays; 0
        where not traced), ``touches_border`` (bool, the bounding box reaches a
        face of the volume; still measured), ``oversized``, ``spans_box``,
        ``few_rays`` (bool, see above: gap NaN). No particle in ``labels``:
        an empty table with these columns and dtypes.

    Raises
    ------
    ValueError
        Inputs not 3-D or of different shapes; ``phases`` or ``labels`` not
        integer, ``sample`` not bool; ``voxel_size_um``, ``max_ray_length_um``
        not > 0; ``n_rays`` or ``particles_per_task`` < 1; ``radius_range_um``
        not two radii with 0 < lo ≤ hi; ``min_valid_ray_fraction`` outside
        [0, 1]; a negative label;
        no CBD (phase 2) anywhere in ``phases`` (checked before any ray is
        traced, also when there is no particle).

    Examples
    --------
    >>> z, y, x = np.indices((24, 24, 24)) - 11.5
    >>> r = np.sqrt(z * z + y * y + x * x)
    >>> phases = np.select([r < 5, (r >= 8) & (r < 10)], [3, 2], 0).astype(np.uint8)  # Si, CBD
    >>> labels = (r < 5).astype(np.int32)
    >>> table = measure_gaps(phases, labels, voxel_size_um=0.5, max_ray_length_um=5.0)
    >>> round(float(table.gap_mean_um[0]), 1), int(table.n_rays[0])
    (1.5, 256)
    """
    voxel = _check_voxel_size(voxel_size_um)
    if isinstance(n_rays, bool) or not isinstance(n_rays, int | np.integer) or n_rays < 1:
        raise ValueError(f"n_rays must be an integer ≥ 1 (rays per particle); got {n_rays!r}")
    if (
        isinstance(particles_per_task, bool)
        or not isinstance(particles_per_task, int | np.integer)
        or particles_per_task < 1
    ):
        raise ValueError(f"particles_per_task must be an integer ≥ 1; got {particles_per_task!r}")
    max_length_um = positive(max_ray_length_um, "max_ray_length_um", "µm")
    largest = _check_prior_upper(radius_range_um)
    try:
        fraction = float(min_valid_ray_fraction)
    except (TypeError, ValueError):
        fraction = math.nan
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(
            f"min_valid_ray_fraction must be a number in [0, 1]; got {min_valid_ray_fraction!r}"
        )
    least_rays = math.ceil(fraction * int(n_rays))
    label_volume = _as_volume(labels, "labels")
    shape = tuple(int(s) for s in label_volume.shape)
    phase_volume = _as_volume(phases, "phases", shape)
    _check_integer_dtype(label_volume, "labels", "particle labels")
    _check_integer_dtype(phase_volume, "phases", "phase codes (0 pore … 4 SEI)")
    sample_volume = None
    if sample is not None:
        sample_volume = _as_volume(sample, "sample", shape)
        if sample_volume.dtype != np.bool_:
            raise ValueError(
                f"sample must be a bool mask (True inside the sample); got dtype "
                f"{sample_volume.dtype}"
            )

    # Stored inputs are read by each batch's task itself, one chunk at a time;
    # other inputs are cut in the graph, in pieces that line up at the labels' chunks.
    given = [v for v in (phases, labels, sample) if v is not None]
    in_zarr = [v for v in given if isinstance(v, zarr.Array)]
    stored = len(in_zarr) == len(given)
    if not stored and phase_volume.chunks != label_volume.chunks:
        phase_volume = phase_volume.rechunk(label_volume.chunks)
    if not stored and sample_volume is not None and sample_volume.chunks != label_volume.chunks:
        sample_volume = sample_volume.rechunk(label_volume.chunks)
    # Optimise once: both computations below then see the same task for every
    # input key (a distributed scheduler warns, and may fail, when a later graph
    # brings another definition of a key it has already seen).
    if sample_volume is None:
        label_volume, phase_volume = dask.optimize(label_volume, phase_volume)
    else:
        label_volume, phase_volume, sample_volume = dask.optimize(
            label_volume, phase_volume, sample_volume
        )
    extents: list[Any] = []
    if sample_volume is not None:
        extents = [sample_volume.any(axis=tuple(b for b in range(3) if b != a)) for a in range(3)]
    *parts, has_cbd, extent_z, extent_y, extent_x = dask.compute(
        *_stats_partials(label_volume), (phase_volume == CBD).any(), *(extents or [None] * 3)
    )
    if not bool(has_cbd):
        raise ValueError(
            f"no CBD (phase 2) found in phases of shape {shape}: the gap is measured to the "
            "carbon black-binder domain; check the segmentation's phase codes "
            "(0 pore, 1 graphite, 2 CBD, 3 silicon, 4 SEI)"
        )
    stats = _combine_stats(parts)
    props = _properties_frame(stats, voxel)
    if props.empty:
        return _empty_gaps()

    step = RAY_STEP_VOXELS
    max_length_vox = max_length_um / voxel
    margin = math.ceil(max_length_vox + step) + 2
    directions = fibonacci_directions(int(n_rays))
    # centroids in voxels: the exact integer sums over the count, not via µm and back
    centroids = stats[:, 2:5] / stats[:, 1:2].astype(np.float64)
    bbox = props[["z0", "z1", "y0", "y1", "x0", "x1"]].to_numpy()
    particles = props["particle"].to_numpy()

    touches = (
        (bbox[:, 0] == 0)
        | (bbox[:, 2] == 0)
        | (bbox[:, 4] == 0)
        | (bbox[:, 1] == shape[0])
        | (bbox[:, 3] == shape[1])
        | (bbox[:, 5] == shape[2])
    )
    # The box the particles live in: the volume's, or the sample's bounding box.
    low, high = np.zeros(3, np.int64), np.asarray(shape, np.int64)
    for axis, extent in enumerate((extent_z, extent_y, extent_x)):
        if extent is not None and np.asarray(extent).any():
            inside = np.flatnonzero(extent)
            low[axis], high[axis] = inside[0], inside[-1] + 1
    spans = ((bbox[:, 0::2] <= low) & (bbox[:, 1::2] >= high)).any(axis=1)
    oversized = props["radius_um"].to_numpy() > OVERSIZE_FACTOR * largest
    traced = np.flatnonzero(~(spans | oversized))

    # Batches of neighbours: particles ordered by the block that holds their
    # centroid (then by label), as many per task as fit its memory.
    edges = [block_edges(c) for c in label_volume.chunks]
    home = np.stack(
        [np.searchsorted(edges[a][1:-1], centroids[traced, a], side="right") for a in range(3)],
        axis=1,
    )
    traced = traced[np.lexsort((particles[traced], *home.T[::-1]))]
    measure = dask.delayed(_measure_batch, pure=True)
    jobs = []
    for row in traced:
        lo = [max(0, int(bbox[row, 2 * a]) - margin) for a in range(3)]
        hi = [min(shape[a], int(bbox[row, 2 * a + 1]) + margin) for a in range(3)]
        centroid = (float(centroids[row, 0]), float(centroids[row, 1]), float(centroids[row, 2]))
        jobs.append((int(particles[row]), centroid, (lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2])))
    boxes = np.array([[lo, hi] for *_, lo, hi in jobs], dtype=np.int64).reshape(-1, 2, 3)
    inputs = [v for v in (phase_volume, label_volume, sample_volume) if v is not None]
    chunk_bytes = max(math.prod(v.chunks) * v.dtype.itemsize for v in in_zarr) if stored else 0
    read = dask.delayed(_read_and_measure, pure=True)
    rays = (directions, max_length_vox, step, shape)
    batches = []
    for batch in batch_particles(
        boxes,
        sum(np.dtype(v.dtype).itemsize for v in inputs),
        lambda voxels: max(task_peak_bytes(voxels, int(n_rays), max_length_vox), 2.0 * chunk_bytes),
        int(particles_per_task),
        task_bytes(),
    ):
        low, high = boxes[batch, 0].min(axis=0), boxes[batch, 1].max(axis=0)
        if stored:
            corners = tuple(int(a) for a in low), tuple(int(b) for b in high)
            batches.append(read([jobs[i] for i in batch], *corners, phases, labels, sample, *rays))
            continue
        # the inputs cut to the box around the batch's crops: the pieces of the
        # blocks it meets (a block's piece travels, not the block)
        box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
        pieces = [v[box] for v in inputs]
        starts = [low[a] + np.cumsum((0, *pieces[0].chunks[a][:-1])) for a in range(3)]
        origins = [
            (int(starts[0][i]), int(starts[1][j]), int(starts[2][k]))
            for i, j, k in np.ndindex(*pieces[0].numblocks)
        ]
        parts = [list(piece.to_delayed().ravel()) for piece in pieces]
        batches.append(
            measure(
                [jobs[i] for i in batch],
                origins,
                parts[0],
                parts[1],
                parts[2] if sample_volume is not None else None,
                *rays,
            )
        )
    results = np.full((len(props), 3), np.nan)
    results[:, 2] = 0
    if batches:
        results[traced] = np.concatenate(dask.compute(*batches), axis=0)
    few = (results[:, 2] < least_rays) & ~(spans | oversized)
    results[few | spans | oversized, :2] = np.nan
    table = pd.DataFrame(
        {
            "particle": particles.astype(np.int64),
            "centroid_z_um": props["centroid_z_um"].to_numpy(),
            "centroid_y_um": props["centroid_y_um"].to_numpy(),
            "centroid_x_um": props["centroid_x_um"].to_numpy(),
            "radius_um": props["radius_um"].to_numpy(),
            "gap_mean_um": results[:, 0] * voxel,
            "gap_std_um": results[:, 1] * voxel,
            "n_rays": results[:, 2].astype(np.int64),
            "touches_border": touches.astype(bool),
            "oversized": oversized,
            "spans_box": spans,
            "few_rays": few,
        },
        columns=list(GAP_COLUMNS),
    )
    return table
