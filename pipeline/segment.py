"""Segmentation: a reconstructed attenuation volume into five phases.

Phase codes (DESIGN.md): 0 pore, 1 graphite, 2 carbon black-binder domain
(CBD), 3 silicon, 4 SEI; and a ``sample`` mask, False in the air (or vacuum)
around the imaged pillar.

The method (every parameter is a keyword of :func:`segment` and a key of the
campaign's ``[segmentation]`` section):

1. **Denoise** (optional): a Gaussian of ``sigma_voxels``.
2. **Grey classes** from one global histogram, reduced over the whole Dask
   volume: multi-Otsu with five classes, air < pore and graphite < SEI <
   silicon < CBD, or four ``thresholds`` given in the campaign (1/µm).
   The histogram also gives each class's mean attenuation.
3. **Sample**: per z-slice, everything not air with its holes filled.
4. **Silicon**: the silicon class opened by the 6-neighbourhood (erosion
   then dilation). Blurred CBD edges pass through the silicon grey range
   on their way down to pore; those rims are one voxel thin and the opening
   removes them, while particles survive.
5. **CBD**: above the midpoint of the pore and CBD class means (the
   half-height of a pore–CBD edge, so thin coats keep their width), silicon
   excepted.
6. **SEI**: the intermediate class within ``sei_max_voxels`` of silicon (the
   weakly absorbing layer between a particle and its gap); elsewhere that
   grey level is the partial volume of CBD edges and counts as pore.
7. **Graphite vs pore** (they absorb almost alike): graphite is large and
   compact. Voxels whose local mean (a Gaussian of 2 voxels) lies in the low
   class and above the Otsu threshold of the low class's own histogram,
   opened by a ball of ``graphite_min_radius_voxels``: smaller or thinner
   objects are pore.

The sample mask (step 3) is a pass over slabs of whole z-slices (a slice's
holes and hull are the slice's own): a plane of booleans per slice. The slabs
split the blocks' z-ranges, so a block's mask comes from its own slabs. Given
the stored reconstruction (a ``zarr.Array``), each slab task reads its slices
(and the Gaussian's reach beyond them) from the store and denoises them
itself: slabs are never cut from the denoised cubes, which would hold whole
slices as deep as a cube (512 MiB at 1024² float32). Steps 4–7
run block by block in one kernel (:func:`phases_kernel`) on that mask and the
attenuation, with a halo deep enough for every neighbourhood operation; a
block is the largest cube whose task fits the memory a task may use
(:func:`debond.memory.task_bytes`, from the workers' limit;
:func:`kernel_peak_bytes` is the kernel's memory model). The result equals
the kernel on the whole volume, whatever the chunking and the blocks.

The phase pass runs in one graph with the sample pass
(:attr:`Segmentation.phases`), or, once the sample mask is stored, from the
store (:attr:`Segmentation.from_store`): each block's task then reads its own
padded box of the reconstruction and of the mask and denoises the box itself,
so it depends on no other task. In one graph at 1024³ on workers of 1 GiB, the
denoised volume's padded blocks ran far ahead of the slower phase kernel and
were spilled (18 GB); tasks without dependencies are held back by the
scheduler until a worker is free for them.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import edt
import numpy as np
import zarr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from dask.typing import Key
from dask_image import ndfilters
from numpy.typing import NDArray
from scipy import ndimage
from skimage.filters import threshold_multiotsu, threshold_otsu

from debond.memory import largest_block, task_bytes
from debond.pipeline.blocks import block_location, halo_fits, map_exact, merge_chunks, read_box
from debond.pipeline.levels import (
    CALIBRATION_EDGE,
    EIGEN_CHUNK_VOXELS,
    Levels,
    ball,
    calibrate,
    drop_small,
    film_crests,
    grow_silicon,
    sample_slices,
    silicon_cores,
)
from debond.storage import default_chunks

__all__ = [
    "CBD",
    "GRAPHITE",
    "PHASE_NAMES",
    "PORE",
    "POROSITY_TOLERANCE",
    "SEI",
    "SILICON",
    "Segmentation",
    "StoredPhases",
    "Thresholds",
    "denoise",
    "gaussian_reach",
    "import_phases",
    "kernel_peak_bytes",
    "open_with_ball",
    "phases_kernel",
    "pore_fraction",
    "prior_phases_kernel",
    "ranked_sample",
    "segment",
    "stored_block_peak_bytes",
    "thresholds_from_histogram",
]

PORE, GRAPHITE, CBD, SILICON, SEI = 0, 1, 2, 3, 4
#: Phase names; a phase's code is its position (DESIGN.md).
PHASE_NAMES = ("pore", "graphite", "cbd", "silicon", "sei")
#: Largest difference between the segmented pore fraction and a known porosity
#: before a segmentation is flagged.
POROSITY_TOLERANCE = 0.05
#: Smoothing (voxels) of the local mean that separates graphite from pore.
GRAPHITE_SIGMA_VOXELS = 2.0
_SIX = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class Thresholds:
    """Grey-level decisions of a segmentation, attenuation in 1/µm.

    Attributes
    ----------
    classes : (4,) tuple of float
        Increasing boundaries of the five grey classes: air | pore+graphite |
        SEI | silicon | CBD.
    cbd : float
        CBD above this (midpoint of the pore and CBD class means).
    graphite : float
        Local mean above which low-class voxels may be graphite.
    means : (5,) tuple of float
        Mean attenuation of each grey class (NaN for an empty class).
    """

    classes: tuple[float, float, float, float]
    cbd: float
    graphite: float
    means: tuple[float, ...]


@dataclass(frozen=True)
class Segmentation:
    """Lazy phases and sample mask with the thresholds that made them.

    Attributes
    ----------
    phases : (z, y, x) dask array of uint8
        Phase codes (module docstring).
    sample : (z, y, x) dask array of bool
        True inside the imaged sample.
    thresholds : Thresholds or None
        The grey classes, when the phases were ranked (no size prior).
    porosity : float or None
        The known porosity the pore fraction is checked against.
    levels : Levels or None
        The phase levels, when the size prior found them
        (:func:`debond.pipeline.levels.calibrate`).
    from_store : StoredPhases or None
        Given the stored ``sample``, the phases again, each block read from
        the store by its own task (module docstring); None unless the
        reconstruction was a Zarr array.
    """

    phases: da.Array
    sample: da.Array
    thresholds: Thresholds | None
    porosity: float | None = None
    levels: Levels | None = None
    from_store: StoredPhases | None = None

    @property
    def pore_fraction(self) -> da.Array:
        """Pore voxels over sample voxels (0-d, lazy; :func:`pore_fraction`)."""
        return pore_fraction(self.phases, self.sample)

    def porosity_warning(self, pore_fraction: float) -> str:
        """A warning when the computed pore fraction is far from the known porosity ('' if not)."""
        if self.porosity is None:
            return ""
        off = abs(pore_fraction - self.porosity)
        if off <= POROSITY_TOLERANCE:
            return ""
        return (
            f"WARNING: pore fraction {pore_fraction:.3f} is {off:.3f} from "
            f"segment.porosity = {self.porosity}: check the thresholds"
        )


def pore_fraction(phases: da.Array, sample: da.Array) -> da.Array:
    """Pore voxels over sample voxels (0-d, lazy).

    Parameters
    ----------
    phases : (z, y, x) dask array of uint8
        Phase codes.
    sample : (z, y, x) dask array of bool
        The sample mask; chunked as ``phases`` for one task per block.
    """
    inside = sample.sum()
    pores = ((phases == PORE) & sample).sum()
    return pores / da.maximum(inside, 1)


def thresholds_from_histogram(
    counts: NDArray[np.integer] | NDArray[np.floating],
    edges: NDArray[np.floating],
    classes: Sequence[float] | None = None,
) -> Thresholds:
    """Grey classes, CBD and graphite thresholds from a global histogram.

    Parameters
    ----------
    counts : (bins,) array
        Voxels per bin.
    edges : (bins + 1,) array
        Bin edges, 1/µm.
    classes : four increasing floats, optional
        Given class boundaries; default multi-Otsu (five classes).

    Returns
    -------
    Thresholds

    Raises
    ------
    ValueError
        A histogram without enough distinct grey levels for five classes, or
        ``classes`` not four increasing numbers.
    """
    counts = np.asarray(counts, dtype=np.float64)
    centres = 0.5 * (edges[:-1] + edges[1:])
    if classes is None:
        if np.count_nonzero(counts) < 5:
            raise ValueError(
                f"the volume's histogram has {np.count_nonzero(counts)} non-empty bins; "
                "five grey classes need at least 5 (is the reconstruction empty or constant?)"
            )
        bounds = tuple(float(t) for t in threshold_multiotsu(hist=(counts, centres), classes=5))
    else:
        bounds = tuple(float(t) for t in classes)
    if len(bounds) != 4 or not all(a < b for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"thresholds must be four increasing numbers (1/µm); got {classes!r}")
    which = np.digitize(centres, bounds)
    means = []
    for k in range(5):
        weight = counts[which == k].sum()
        means.append(float((counts * centres)[which == k].sum() / weight) if weight else math.nan)
    low, cbd = means[1], means[4]
    cbd_threshold = 0.5 * (low + cbd) if math.isfinite(low + cbd) else bounds[3]
    in_low = which == 1
    if np.count_nonzero(counts[in_low]) >= 2:
        graphite = float(threshold_otsu(hist=(counts[in_low], centres[in_low])))
    else:
        graphite = bounds[1]
    return Thresholds(
        classes=(bounds[0], bounds[1], bounds[2], bounds[3]),
        cbd=float(cbd_threshold),
        graphite=graphite,
        means=tuple(means),
    )


def open_with_ball(mask: NDArray[np.bool_], radius: float) -> NDArray[np.bool_]:
    """Morphological opening of ``mask`` by a Euclidean ball, through distance transforms.

    Erosion keeps voxels farther than ``radius`` from the background; the
    dilation of that by the same ball is everything within ``radius`` of it.
    Exact for Euclidean balls and linear in the volume, where a structuring
    element of a large ball would cost its (2r + 1)³ voxels per voxel.
    """
    if radius <= 0 or not mask.any():
        return mask.copy()
    core = edt.edt(mask) > radius
    if not core.any():
        return core
    return np.asarray(edt.edt(~core) <= radius)


def ranked_sample(block: NDArray[np.floating], thresholds: Thresholds) -> NDArray[np.bool_]:
    """The sample of whole z-slices, ranked grey classes: per slice, not air, holes filled."""
    return np.stack([ndimage.binary_fill_holes(s) for s in block >= thresholds.classes[0]])


def phases_kernel(
    block: NDArray[np.floating],
    thresholds: Thresholds,
    sample: NDArray[np.bool_] | None = None,
    *,
    sei_max_voxels: int = 3,
    graphite_min_radius_voxels: int = 4,
) -> NDArray[np.uint8]:
    """Phase codes of a block (steps 3–7 of the module docstring).

    Parameters
    ----------
    block : (z, y, x) array
        Attenuation, 1/µm (denoised already if wanted).
    thresholds : Thresholds
    sample : (z, y, x) array of bool, optional
        The sample mask of the block (:func:`ranked_sample` of the whole
        slices); default: that of `block`, which must then hold whole slices.
    sei_max_voxels : int
        Intermediate grey within this many voxels of silicon is SEI.
    graphite_min_radius_voxels : int
        Radius of the ball that graphite must contain.

    Returns
    -------
    (z, y, x) ndarray of uint8
        Phase codes, with 255 outside the sample (see :func:`segment`).
    """
    _, t_low, t_sei, t_si = thresholds.classes
    if sample is None:
        sample = ranked_sample(block, thresholds)
    silicon = ndimage.binary_opening((block >= t_sei) & (block < t_si), _SIX)
    cbd = (block >= thresholds.cbd) & ~silicon
    near = ndimage.binary_dilation(silicon, _SIX, iterations=sei_max_voxels)
    sei = (block >= t_low) & (block < t_sei) & near & ~cbd
    local = ndimage.gaussian_filter(block.astype(np.float32), GRAPHITE_SIGMA_VOXELS, mode="nearest")
    # On the local mean, not the voxel: noise would pierce graphite with holes
    # that the opening then widens until nothing is left.
    graphite = (local >= thresholds.graphite) & (local < t_low) & ~silicon & ~cbd & ~sei
    if graphite_min_radius_voxels > 0:
        graphite = open_with_ball(graphite, graphite_min_radius_voxels)
    phases = np.full(block.shape, PORE, dtype=np.uint8)
    phases[graphite] = GRAPHITE
    phases[sei] = SEI
    phases[cbd] = CBD
    phases[silicon] = SILICON
    phases[~sample] = 255
    return phases


def prior_phases_kernel(
    block: NDArray[np.floating],
    levels: Levels,
    sample: NDArray[np.bool_] | None = None,
    *,
    sei_max_voxels: int = 3,
) -> NDArray[np.uint8]:
    """Phase codes of a block from the levels the size prior found.

    Sample: `sample`, by default each slice's hull
    (:func:`debond.pipeline.levels.sample_slices`; `block` must then hold
    whole slices). Silicon: its grey band less the crests of thin films
    (:func:`debond.pipeline.levels.film_crests`), opened by a ball (rims
    go), eroded into seeds and grown back to its surface
    (:func:`debond.pipeline.levels.grow_silicon`);
    objects under the prior's size, or too thin to hold a ball of it, are
    dropped (whole in the block's halo, see :attr:`Levels.halo`; those touching
    a face of the block are kept: in the halo, deeper than a small object, they
    are large). CBD: above
    its half-height, silicon excepted (opened where silicon edges pass through
    its range). SEI: near silicon, above ``levels.sei_low``. Graphite is not
    told from pore here.

    Returns
    -------
    (z, y, x) ndarray of uint8
        Phase codes, 255 outside the sample.
    """
    if sample is None:
        sample = sample_slices(block, levels.solid)
    faces = tuple(range(block.ndim))
    band = (block > levels.core_low) & (block <= levels.silicon_high) & sample
    band &= ~film_crests(block, levels.silicon - levels.pore)
    core = silicon_cores(
        band, levels.core_radius_voxels, levels.core_smallest_voxels, keep_faces=faces
    )
    silicon = grow_silicon(block, core, levels, keep_faces=faces) & sample
    silicon = drop_small(
        silicon,
        levels.smallest_radius_voxels,
        inscribed_voxels=levels.inscribed_radius_voxels,
        keep_faces=faces,
    )
    cbd = (block >= levels.cbd_low) & (block <= levels.cbd_high) & sample & ~silicon
    if levels.cbd_open_voxels:
        cbd = ndimage.binary_opening(cbd, ball(levels.cbd_open_voxels))
    near = edt.edt(~silicon) <= sei_max_voxels if silicon.any() else silicon
    sei = near & ~silicon & ~cbd & (block > levels.sei_low) & sample
    phases = np.full(block.shape, PORE, dtype=np.uint8)
    phases[sei] = SEI
    phases[cbd] = CBD
    phases[silicon] = SILICON
    phases[~sample] = 255
    return phases


def gaussian_reach(sigma_voxels: float) -> int:
    """How far a Gaussian of ``sigma_voxels`` reaches, voxels (scipy's and
    dask-image's truncate=4; 0 for none).

    Examples
    --------
    >>> gaussian_reach(1.0), gaussian_reach(0.0)
    (4, 0)
    """
    return math.ceil(4.0 * sigma_voxels) if sigma_voxels > 0 else 0


def _halo(sei_max_voxels: int, graphite_min_radius_voxels: int) -> int:
    """Deepest reach of the kernel's neighbourhood operations, voxels."""
    gaussian = gaussian_reach(GRAPHITE_SIGMA_VOXELS)
    return max(2, sei_max_voxels + 2, gaussian + 2 * graphite_min_radius_voxels)


def denoise(volume: da.Array, sigma_voxels: float) -> da.Array:
    """Gaussian of ``sigma_voxels`` on every axis (step 1), lazily; float32.

    Equal to ``scipy.ndimage.gaussian_filter(whole, sigma_voxels,
    mode="nearest")`` for any chunking: ``dask_image.ndfilters.gaussian_filter``
    with its halo of ``ceil(4 σ)`` voxels after chunks shorter than the halo are
    merged.

    Parameters
    ----------
    volume : (z, y, x) dask array
    sigma_voxels : float
        > 0, voxels.

    Returns
    -------
    (z, y, x) dask array of float32

    Examples
    --------
    >>> x = np.random.default_rng(0).random((6, 5, 5)).astype(np.float32)
    >>> got = denoise(da.from_array(x, chunks=(1, 5, 5)), 0.5).compute()
    >>> np.array_equal(got, ndimage.gaussian_filter(x, 0.5, mode="nearest"))
    True
    """
    volume = volume.astype(np.float32)
    reach = gaussian_reach(sigma_voxels)
    depth = {0: reach, 1: reach, 2: reach}
    volume = merge_chunks(volume, depth)
    if halo_fits(volume.shape, depth):
        return ndfilters.gaussian_filter(volume, float(sigma_voxels), mode="nearest")
    # dask-image passes its halo to map_overlap, which refuses an axis shorter
    # than the halo (a thin volume under a wide Gaussian); map_exact takes that
    # axis as one chunk without a halo, and scipy's result is the same.
    return map_exact(
        volume,
        ndimage.gaussian_filter,
        depth,
        dtype=np.float32,
        sigma=float(sigma_voxels),
        mode="nearest",
    )


def segment(
    recon: da.Array | NDArray[np.floating] | zarr.Array,
    *,
    voxel_size_um: float,
    sigma_voxels: float = 1.0,
    bins: int = 256,
    thresholds: Sequence[float] | None = None,
    sei_max_um: float = 0.6,
    graphite_min_radius_um: float = 1.0,
    porosity: float | None = None,
    radius_range_um: tuple[float, float] | None = None,
) -> Segmentation:
    """Five phases and the sample mask of a reconstruction (module docstring).

    Computes two small reductions (the volume's range and histogram); the
    phases and the mask stay lazy.

    Parameters
    ----------
    recon : (z, y, x) dask, NumPy or Zarr array
        Attenuation, 1/µm. A Zarr array (the stored ``recon``) is read in
        cubes, and the sample pass reads its slabs from it (module docstring).
    voxel_size_um : float
        Voxel edge, µm.
    sigma_voxels : float
        Gaussian denoising before everything else, voxels (0: none).
    bins : int
        Bins of the global histogram, ≥ 16.
    thresholds : four increasing floats, optional
        Grey-class boundaries (1/µm) instead of multi-Otsu.
    sei_max_um : float
        Farthest an SEI voxel lies from silicon, µm.
    graphite_min_radius_um : float
        Graphite objects contain a ball of this radius, µm; smaller
        low-attenuation objects are pore.
    porosity : float, optional
        Known porosity (volume fraction): :meth:`Segmentation.porosity_warning`
        flags a pore fraction more than :data:`POROSITY_TOLERANCE` from it.
    radius_range_um : (float, float), optional
        The size prior (smallest, largest equivalent radius of the silicon
        particles, µm). Without ``thresholds``, the phases are found by what
        they are (:mod:`debond.pipeline.levels`, on a crop of the volume) and
        applied block by block (:func:`prior_phases_kernel`); without a prior
        either, the grey classes are ranked (multi-Otsu, steps 2–7).

    Returns
    -------
    Segmentation
        ``phases`` and ``sample`` in blocks sized to a task's memory
        (:func:`debond.memory.task_bytes`); with a Zarr ``recon``, also
        ``from_store``, the phase pass for when the sample mask is stored.

    Raises
    ------
    ValueError
        Not 3D, non-finite range, a parameter out of range (named).
    debond.pipeline.levels.SegmentationError
        With a prior: no grey level holds objects of its size (the message
        gives the levels found).
    """
    stored = recon if isinstance(recon, zarr.Array) else None
    if stored is not None:
        volume = da.from_zarr(stored, chunks=default_chunks(stored.shape, "volume", np.float32))
    else:
        volume = recon if isinstance(recon, da.Array) else da.asarray(np.asarray(recon))
    if volume.ndim != 3:
        raise ValueError(f"recon must be 3D (z, y, x); got shape {volume.shape}")
    if not voxel_size_um > 0:
        raise ValueError(f"voxel_size_um must be > 0 (µm); got {voxel_size_um!r}")
    if sigma_voxels < 0:
        raise ValueError(f"sigma_voxels must be ≥ 0; got {sigma_voxels!r}")
    if bins < 16:
        raise ValueError(f"bins must be ≥ 16; got {bins!r}")
    volume = volume.astype(np.float32)
    if sigma_voxels > 0:
        volume = denoise(volume, sigma_voxels)
    source = _SlabSource(volume, stored, sigma_voxels)
    sei_voxels = max(1, round(sei_max_um / voxel_size_um))
    if thresholds is None and radius_range_um is not None:
        return _segment_with_prior(
            volume, source, voxel_size_um, radius_range_um, sei_voxels, porosity
        )
    low, high = (float(v) for v in dask.compute(volume.min(), volume.max()))
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        raise ValueError(
            f"recon holds no usable grey levels (min {low}, max {high}); "
            "expected a reconstruction with contrast"
        )
    counts, edges = da.histogram(volume, bins=bins, range=(low, high))
    decided = thresholds_from_histogram(counts.compute(), edges, thresholds)
    graphite_voxels = max(0, round(graphite_min_radius_um / voxel_size_um))
    halo = _halo(sei_voxels, graphite_voxels)
    peak = functools.partial(kernel_peak_bytes, prior=False)
    keywords = {
        "thresholds": decided,
        "sei_max_voxels": sei_voxels,
        "graphite_min_radius_voxels": graphite_voxels,
    }
    blocks = _blocks(volume, halo, peak)
    sample = source.slices(blocks.chunks[0], ranked_sample, thresholds=decided)
    return Segmentation(
        phases=_blockwise(blocks, sample, phases_kernel, halo, **keywords),
        sample=sample,
        thresholds=decided,
        porosity=porosity,
        from_store=source.phases(phases_kernel, halo, peak, keywords),
    )


#: Peak bytes per voxel of :func:`phases_kernel`'s block, halo included, float32
#: input (its boolean masks, the float32 local mean and distances; measured with
#: tracemalloc, tests/test_memory.py).
RANKED_BYTES_PER_VOXEL = 16.0
#: Peak bytes per voxel of :func:`prior_phases_kernel`'s block, halo included:
#: the Hessian's six float32 components of the film crests dominate ...
PRIOR_BYTES_PER_VOXEL = 33.0
#: ... with their eigenvalues' float64 temporaries, a chunk at a time.
CREST_CHUNK_BYTES = 128.0 * EIGEN_CHUNK_VOXELS
#: Bytes per voxel of a slab of whole slices in the sample pass (the float32
#: input, the mask and its result) ...
SAMPLE_BYTES_PER_VOXEL = 6.0
#: ... and per voxel of one slice, for the slice in hand (its masks and the
#: convex hull's coordinates: 40 bytes traced, the ranked pass's 3).
SAMPLE_BYTES_PER_PLANE_VOXEL = 40.0
#: Bytes per voxel of a box read from the store and denoised by its own task,
#: the Gaussian's reach included: the box as read and its Gaussian (float32;
#: 8.0 traced for a slab of the sample pass) ...
STORED_READ_BYTES_PER_VOXEL = 8.0
#: ... and, in the phase pass, what a block's task holds beside the kernel: the
#: Gaussian (float32) and the block's sample mask (bool).
STORED_BLOCK_BYTES_PER_VOXEL = 5.0


def kernel_peak_bytes(block_shape: Sequence[int], *, prior: bool) -> float:
    """Peak memory of one block of the phase kernel, bytes.

    Parameters
    ----------
    block_shape : (3,) ints
        The block, halo included.
    prior : bool
        :func:`prior_phases_kernel` (the size prior's levels) rather than
        :func:`phases_kernel` (ranked grey classes).

    Returns
    -------
    float
        Bytes: the block's voxels times :data:`PRIOR_BYTES_PER_VOXEL` (and
        :data:`CREST_CHUNK_BYTES`) or :data:`RANKED_BYTES_PER_VOXEL`.
    """
    if prior:
        return PRIOR_BYTES_PER_VOXEL * math.prod(block_shape) + CREST_CHUNK_BYTES
    return RANKED_BYTES_PER_VOXEL * math.prod(block_shape)


def stored_block_peak_bytes(block_shape: Sequence[int], reach: int, kernel: float) -> float:
    """Peak memory of one block's task of the phase pass from the store, bytes.

    Parameters
    ----------
    block_shape : (3,) ints
        The block, halo included.
    reach : int
        Voxels read beyond the block on every side for the denoising Gaussian
        (:func:`gaussian_reach`; fewer at the volume's faces).
    kernel : float
        The kernel's own peak on the block, bytes (:func:`kernel_peak_bytes`).

    Returns
    -------
    float
        The larger of the read (:data:`STORED_READ_BYTES_PER_VOXEL`) and the
        kernel beside what the task holds (:data:`STORED_BLOCK_BYTES_PER_VOXEL`),
        per voxel read.
    """
    read = math.prod(n + 2 * reach for n in block_shape)
    return max(STORED_READ_BYTES_PER_VOXEL * read, STORED_BLOCK_BYTES_PER_VOXEL * read + kernel)


def _slab_depths(z_chunks: Sequence[int], depth: int) -> tuple[int, ...]:
    """Slabs at most ``depth`` deep that split each of ``z_chunks`` evenly.

    Examples
    --------
    >>> _slab_depths((100, 40), 30)
    (25, 25, 25, 25, 20, 20)
    """
    slabs: list[int] = []
    for chunk in z_chunks:
        count = -(-chunk // max(1, depth))
        base, extra = divmod(chunk, count)
        slabs += [base + 1] * extra + [base] * (count - extra)
    return tuple(slabs)


@dataclass(frozen=True)
class _SlabSource:
    """Where the sample pass's slabs of whole slices come from, and the phase
    pass's blocks once the sample is stored.

    ``volume``'s slabs (denoised already), cut in the graph from its blocks;
    or, with ``stored``, each read from the store and denoised by its own
    task as :func:`denoise` did ``volume``.
    """

    volume: da.Array
    stored: zarr.Array | None
    sigma_voxels: float

    @property
    def reach(self) -> int:
        """The Gaussian's reach beyond a slab, slices (:func:`denoise`'s halo)."""
        return gaussian_reach(self.sigma_voxels)

    def depth(self) -> int:
        """The deepest slab whose task fits :func:`task_bytes`, slices."""
        plane = self.volume.shape[1] * self.volume.shape[2]
        room = task_bytes() - SAMPLE_BYTES_PER_PLANE_VOXEL * plane
        if self.stored is None:
            return max(1, int(room // (SAMPLE_BYTES_PER_VOXEL * plane)))
        # the slab as read is freed before the kernel's own 6 bytes a voxel
        read = max(STORED_READ_BYTES_PER_VOXEL, SAMPLE_BYTES_PER_VOXEL)
        room -= math.prod(self.stored.chunks) * self.stored.dtype.itemsize
        return max(1, int(room // (read * plane)) - 2 * self.reach)

    def slices(
        self, z_chunks: Sequence[int], kernel: Callable[..., NDArray[np.bool_]], **kwargs: Any
    ) -> da.Array:
        """``kernel`` over slabs of whole z-slices that split ``z_chunks``; bool."""
        slabs = _slab_depths(z_chunks, self.depth())
        meta = np.empty((0, 0, 0), dtype=bool)
        if self.stored is None:
            return self.volume.rechunk({0: slabs, 1: -1, 2: -1}).map_blocks(
                kernel, dtype=bool, meta=meta, **kwargs
            )
        _, n_y, n_x = self.volume.shape
        stops = itertools.accumulate(slabs)
        read = functools.partial(_stored_slab, self.stored, self.sigma_voxels, kernel)
        return da.concatenate(
            [
                da.from_delayed(
                    dask.delayed(read, pure=True)(stop - n, stop, **kwargs),
                    (n, n_y, n_x),
                    dtype=bool,
                    meta=meta,
                )
                for n, stop in zip(slabs, stops, strict=True)
            ]
        )

    def phases(
        self,
        kernel: Callable[..., NDArray[np.uint8]],
        halo: int,
        peak: Callable[[tuple[int, ...]], float],
        keywords: Mapping[str, Any],
    ) -> StoredPhases | None:
        """The phase pass from the store (None without one), in the largest
        blocks whose task fits :func:`task_bytes`; `peak` is the kernel's."""
        if self.stored is None:
            return None

        def task(block: tuple[int, ...]) -> float:
            return stored_block_peak_bytes(block, self.reach, peak(block))

        chunks = _blocks(self.volume, halo, task).chunks
        return StoredPhases(self.stored, self.sigma_voxels, chunks, kernel, halo, dict(keywords))


@dataclass(frozen=True)
class StoredPhases:
    """The phase pass from the store, in blocks of its own, given the stored sample.

    Attributes
    ----------
    recon : zarr.Array
        The stored reconstruction, 1/µm.
    sigma_voxels : float
        Its denoising Gaussian, voxels.
    chunks : tuple of tuples of int
        The blocks (dask chunks of the phases).
    kernel : callable
        :func:`phases_kernel` or :func:`prior_phases_kernel`.
    halo : int
        Voxels read beyond a block (:func:`_blockwise`'s halo).
    keywords : dict
        The kernel's keywords but ``sample``.
    """

    recon: zarr.Array
    sigma_voxels: float
    chunks: tuple[tuple[int, ...], ...]
    kernel: Callable[..., NDArray[np.uint8]]
    halo: int
    keywords: Mapping[str, Any]

    def __call__(self, sample: zarr.Array) -> da.Array:
        """Phase codes, lazy, with :data:`PORE` outside ``sample``: one task per block,
        without dependencies, equal to :attr:`Segmentation.phases`.

        Raises
        ------
        ValueError
            ``sample`` not the reconstruction's shape.
        """
        if tuple(sample.shape) != tuple(self.recon.shape):
            raise ValueError(
                f"the stored sample mask has shape {tuple(sample.shape)}; expected the "
                f"reconstruction's {tuple(self.recon.shape)}"
            )
        task = functools.partial(
            _stored_block,
            self.recon,
            sample,
            self.sigma_voxels,
            self.halo,
            self.kernel,
            self.keywords,
        )
        name = f"stored-phases-{tokenize(self, sample)}"
        graph: dict[Key, Any] = {}
        for index in itertools.product(*(range(len(c)) for c in self.chunks)):
            where = list(block_location(self.chunks, index))
            graph[(name, *index)] = (functools.partial(task, where),)
        # a layer of its own, not a blockwise one: a reduction over the phases
        # computed beside their write (the pore fraction) would otherwise fuse a
        # copy of every block's kernel into its own tasks
        layer = HighLevelGraph.from_collections(name, graph, dependencies=())
        meta = np.empty((0, 0, 0), dtype=np.uint8)
        return da.Array(layer, name, self.chunks, dtype=np.uint8, meta=meta)


def _read_denoised(
    stored: zarr.Array, start: Sequence[int], stop: Sequence[int], sigma_voxels: float
) -> NDArray[np.float32]:
    """The box ``[start, stop)`` of the stored volume as :func:`denoise` makes it.

    The box is read with the Gaussian's reach on every side (clipped at the
    volume's faces, where ``mode="nearest"`` pads as it does on the whole
    volume), so its Gaussian is :func:`denoise`'s exactly.
    """
    reach = gaussian_reach(sigma_voxels)
    low = [max(0, a - reach) for a in start]
    high = [min(n, b + reach) for b, n in zip(stop, stored.shape, strict=True)]
    box = read_box(stored, low, high).astype(np.float32, copy=False)
    if sigma_voxels > 0:
        box = ndimage.gaussian_filter(box, sigma_voxels, mode="nearest")
    return box[tuple(slice(a - lo, b - lo) for a, b, lo in zip(start, stop, low, strict=True))]


def _stored_slab(
    stored: zarr.Array,
    sigma_voxels: float,
    kernel: Callable[..., NDArray[np.bool_]],
    start: int,
    stop: int,
    **kwargs: Any,
) -> NDArray[np.bool_]:
    """``kernel`` on slices ``[start, stop)`` of the stored volume, denoised here."""
    _, n_y, n_x = stored.shape
    return kernel(_read_denoised(stored, (start, 0, 0), (stop, n_y, n_x), sigma_voxels), **kwargs)


def _stored_block(
    recon: zarr.Array,
    sample: zarr.Array,
    sigma_voxels: float,
    halo: int,
    kernel: Callable[..., NDArray[np.uint8]],
    keywords: Mapping[str, Any],
    where: Sequence[tuple[int, int]],
) -> NDArray[np.uint8]:
    """:func:`_on_block` on the block ``where`` (first and past-last voxel per axis)
    of the stored volume and sample, read with ``halo`` beyond it (clipped at the
    faces, as :func:`_blockwise`'s), then trimmed."""
    start = [max(0, a - halo) for a, _ in where]
    stop = [min(n, b + halo) for (_, b), n in zip(where, recon.shape, strict=True)]
    block = _read_denoised(recon, start, stop, sigma_voxels)
    phases = _on_block(block, read_box(sample, start, stop), kernel=kernel, **keywords)
    return phases[tuple(slice(a - s, b - s) for (a, b), s in zip(where, start, strict=True))]


def _blocks(volume: da.Array, halo: int, peak: Callable[[tuple[int, ...]], float]) -> da.Array:
    """``volume`` in the largest cubes (:func:`debond.memory.largest_block`) whose
    task, halo included, fits :func:`debond.memory.task_bytes` by `peak` (bytes
    of a padded block's task)."""
    block = largest_block(volume.shape, (halo,) * 3, peak, task_bytes())
    return merge_chunks(volume.rechunk(block), dict.fromkeys(range(3), halo))


def _blockwise(
    volume: da.Array,
    sample: da.Array,
    kernel: Callable[..., NDArray[np.uint8]],
    halo: int,
    **kwargs: Any,
) -> da.Array:
    """``kernel(block, …, sample=…)`` over the blocks of ``volume`` (:func:`_blocks`),
    with halos, and :data:`PORE` outside the sample.

    An axis taken whole needs no halo. The result is the kernel's on the
    whole volume whatever the blocks (the halo is deeper than the kernel's
    reach).
    """
    depth = {axis: halo for axis in range(3)}
    volume = merge_chunks(volume, depth)
    sample = sample.rechunk(volume.chunks)
    halos = {axis: (halo if len(volume.chunks[axis]) > 1 else 0) for axis in range(3)}
    return da.map_overlap(
        _on_block,
        volume,
        sample,
        depth=halos,
        boundary="none",
        trim=True,
        align_arrays=False,
        allow_rechunk=False,
        dtype=np.uint8,
        meta=np.empty((0, 0, 0), dtype=np.uint8),
        kernel=kernel,
        **kwargs,
    )


def _on_block(
    block: NDArray[np.floating],
    sample: NDArray[np.bool_],
    *,
    kernel: Callable[..., NDArray[np.uint8]],
    **kwargs: Any,
) -> NDArray[np.uint8]:
    """``kernel(block, sample=sample, **kwargs)`` and :data:`PORE` outside the sample:
    what each task of :func:`_blockwise` runs."""
    return np.where(sample, kernel(block, sample=sample, **kwargs), np.uint8(PORE))


def _central(volume: da.Array, edge: int) -> da.Array:
    """The central crop of `volume`, at most `edge` voxels along each axis."""
    index = tuple(
        slice(max(0, (n - edge) // 2), max(0, (n - edge) // 2) + min(n, edge)) for n in volume.shape
    )
    return volume[index]


def _segment_with_prior(
    volume: da.Array,
    source: _SlabSource,
    voxel_size_um: float,
    radius_range_um: tuple[float, float],
    sei_voxels: int,
    porosity: float | None,
) -> Segmentation:
    """Levels calibrated on a central crop, then applied block by block."""
    levels = calibrate(
        np.asarray(_central(volume, CALIBRATION_EDGE).compute()), voxel_size_um, radius_range_um
    )
    halo = levels.halo + sei_voxels
    peak = functools.partial(kernel_peak_bytes, prior=True)
    keywords = {"levels": levels, "sei_max_voxels": sei_voxels}
    blocks = _blocks(volume, halo, peak)
    sample = source.slices(blocks.chunks[0], sample_slices, solid=levels.solid)
    return Segmentation(
        _blockwise(blocks, sample, prior_phases_kernel, halo, **keywords),
        sample,
        None,
        porosity=porosity,
        levels=levels,
        from_store=source.phases(prior_phases_kernel, halo, peak, keywords),
    )


def import_phases(grey: da.Array, phase_codes: Mapping[str, int], *, source: str) -> da.Array:
    """Phase codes of a segmentation brought by the user.

    Parameters
    ----------
    grey : (z, y, x) dask array of integers
        The segmentation as stored (e.g. uint8 with pore 0, silicon 85, cbd 170).
    phase_codes : mapping of str to int
        Grey value of each named phase (:data:`PHASE_NAMES`); other values are pore.
    source : str
        How errors name the volume (file and campaign key).

    Returns
    -------
    (z, y, x) dask array of uint8
        Phase codes (DESIGN.md), lazy, chunked as `grey`.

    Raises
    ------
    ValueError
        Not integer grey values, an unknown phase, or a code out of the dtype's range.

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> grey = da.from_array(np.array([[[0, 85, 170]]], np.uint8))
    >>> import_phases(grey, {"pore": 0, "silicon": 85, "cbd": 170}, source="x").compute()
    array([[[0, 3, 2]]], dtype=uint8)
    """
    if grey.dtype.kind not in "ui":
        raise ValueError(
            f"{source} holds {grey.dtype} values; expected integer grey values "
            "(e.g. uint8 with pore 0, silicon 85, cbd 170)"
        )
    table = np.zeros(int(np.iinfo(grey.dtype).max) + 1, np.uint8)
    for name, value in phase_codes.items():
        if name not in PHASE_NAMES:
            raise ValueError(f"{source}: unknown phase {name!r}; expected one of {PHASE_NAMES}")
        if not 0 <= value < table.size:
            raise ValueError(
                f"{source}: phase_codes.{name} = {value} does not fit the volume's "
                f"{grey.dtype} values"
            )
        table[value] = PHASE_NAMES.index(name)
    return da.map_blocks(table.__getitem__, grey, dtype=np.uint8)
