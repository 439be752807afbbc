"""SEM: phases and silicon–CBD gaps of one backscatter cross-section, in 2-D.

The ``sem`` stage of DESIGN.md (SEM cross-sections → 2D phases → 2D gaps)::

    sem/<id>_<k>.tif
      │ read_sem         the image (float32) and its pixel size (argument or TIFF tags)
      │ sem_phases       grey levels from the histogram's modes → five phases
      │ section_gaps     silicon sections (labels) → rays on a circle → in-plane gaps
      ▼
    one row per silicon section: section radius, mean in-plane gap, centroid

The stereological step from sections to spheres is not done here: the table
keeps the raw ``section_radius_um`` and ``section_gap_um``.

**Contrast.** Backscatter intensity rises with the mean atomic number:
SEI (Li, C, O, F) < graphite < bismuth-stained epoxy in the pores < silicon <
copper-stained carbon black-binder domain (CBD). This is the order of the
phases' grey levels; the levels themselves differ between instruments and
images.

**Segmentation** (:func:`sem_phases`; the 3-D method of
:mod:`debond.pipeline.segment` with the SEM contrast):

1. **Denoise**: a Gaussian of ``sigma_px`` (default 1 pixel).
2. **Grey levels** (:func:`flat_histogram`, :func:`sem_thresholds`): the
   modes of the histogram of the image's *flat* pixels (on the image smoothed
   by at least 1 pixel, whatever ``sigma_px``), those whose gradient
   magnitude and absolute Laplacian (Gaussian derivatives of 1 pixel) are
   both at most twice their median over the image. Flat pixels are the
   interiors of the phases; edges, whose blurred values spread between the
   levels, and thin bright or dark lines (a CBD coat of a few pixels, whose
   centre never reaches the CBD level) are left out, so every phase present
   is a sharp peak with empty valleys between. Modes are the peaks of the
   logarithm of the smoothed histogram with a prominence of at least
   :data:`MODE_PROMINENCE`, the five most prominent kept. The brightest mode
   is the CBD; the next one silicon and the one below it the epoxy, unless the
   "silicon" mode holds more pixels than the "epoxy" one (silicon is a few per
   cent of an electrode, the epoxy its porosity): then the field has no
   silicon level. Below the epoxy, two modes are SEI and graphite, one mode is
   the dark level of both (SEI near silicon, graphite elsewhere, step 6), none
   means neither is in the image. The class boundaries are the midpoints
   between adjacent levels: the half-height of a blurred edge between those two
   phases, where the edge really is. Five-class multi-Otsu (the 3-D stage's
   method) is not used: its classes follow the pixel counts, not the phases,
   and where a phase is missing or scarce (no SEI before cycling, little
   graphite in a small field) it splits the large epoxy peak and shifts the
   classes by a phase (epoxy in the graphite class, silicon in the epoxy
   class) on 3 of the 4 images of the ``small`` synthetic campaign (seed 0).
   Four class boundaries can be given instead (``thresholds``), e.g. from a
   histogram pooled over a sample's images.
3. **Silicon**: the silicon class opened by a disc of
   ``silicon_min_radius_px`` (default 2). A blurred CBD edge passes through
   the silicon grey range on its way down to epoxy or SEI; that rim is one to
   four pixels wide and the opening removes it. Of the regions left, those
   whose centre (their pixels deepest inside) is not silicon-like are dropped:
   a centre brighter than the silicon level by a quarter of the way to the
   silicon|CBD boundary is a CBD object smaller than the blur; a centre that is
   a valley (the Hessian's larger eigenvalue above five times the
   noise and over twice the smaller one) is a narrow epoxy channel between two
   CBD regions, blurred to the silicon grey. Then every section grows, by at
   most two pixels, into the neighbouring pixels on the bright side of their
   edge (negative Laplacian of Gaussian, 1 pixel): where silicon meets the dark
   SEI the half-height of the edge lies well below the epoxy|silicon boundary,
   and without this the section comes out about one blur width too small and
   the gap one too wide (1.4 pixels on the synthetic images).
4. **CBD**: above the midpoint of the epoxy and CBD levels (the half-height of
   an epoxy–CBD edge, so thin coats keep their width), silicon excepted.
5. **Dark**: below the graphite|epoxy boundary, neither silicon nor CBD.
6. **SEI**: the connected regions of the SEI class (of the dark class when
   only one dark level was found) that come within ``sei_max_px`` of
   silicon: the weakly scattering layer on a particle, whatever its thickness.
7. **Graphite**: the rest of the dark class, opened by a disc of radius
   ``graphite_min_radius_px``: graphite particles are large and compact; thin
   dark rims on edges (silicon–SEI, SEI–CBD) are not. Dark pixels left over
   and connected to the SEI (its blurred rims, in the graphite grey) are SEI.

**Gaps** (:func:`section_gaps`): the silicon pixels are labelled (4-connected,
:func:`debond.pipeline.label.label_kernel`); from each section's centroid
``n_rays`` rays, evenly spaced on a circle, are traced with
:func:`debond.pipeline.measure.ray_gaps_kernel` on a (1, y, x) view of the
section with directions (0, sin θ, cos θ): the in-plane distance from the
silicon surface to the CBD along each ray (rays that meet graphite, another
section, the image edge or no CBD within ``max_ray_length_um`` are not
counted).

Phase codes (DESIGN.md): 0 pore (epoxy), 1 graphite, 2 CBD, 3 silicon, 4 SEI.
Pixel ``i`` along an axis has its centre at ``i * pixel_size_um`` µm.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from numpy.typing import NDArray
from scipy import ndimage, signal

from debond.pipeline.checks import positive
from debond.pipeline.ingest import IngestError
from debond.pipeline.label import label_kernel
from debond.pipeline.measure import ray_gaps_kernel
from debond.pipeline.segment import CBD, GRAPHITE, PORE, SEI, SILICON, open_with_ball
from debond.storage.tables import usable_rows

__all__ = [
    "MODE_PROMINENCE",
    "SECTION_COLUMNS",
    "SemThresholds",
    "analyse_sem",
    "circle_directions",
    "flat_histogram",
    "read_sem",
    "section_gaps",
    "sem_phases",
    "sem_phases_kernel",
    "sem_thresholds",
    "usable_sections",
]

#: The dtype of each column of :func:`section_gaps`, in order.
_SECTION_DTYPES: dict[str, Any] = {
    "particle": np.int64,
    "centroid_y_um": np.float64,
    "centroid_x_um": np.float64,
    "section_radius_um": np.float64,
    "section_gap_um": np.float64,
    "gap_std_um": np.float64,
    "n_rays": np.int64,
    "touches_border": np.bool_,
}
#: Columns of :func:`section_gaps`, in order (:func:`analyse_sem` puts ``image`` first).
SECTION_COLUMNS = tuple(_SECTION_DTYPES)

#: Smallest prominence of a histogram mode, in natural-log units of the (smoothed)
#: pixel count: the peak holds e ≈ 2.7 times the pixels of the higher valley beside
#: it. On 40 synthetic images the phases' modes have 1.5 (one silicon section of
#: 7.5 pixels) to 11, stray bumps of blurred edges at most 0.3.
MODE_PROMINENCE = 1.0
#: Flat pixels have a gradient magnitude and an absolute Laplacian of at most
#: this many times their medians over the image.
_FLAT_FACTOR = 2.0
#: The histogram's modes are sought on the image smoothed by at least this, pixels.
_MIN_LEVEL_SIGMA_PX = 1.0
#: Scale of the derivatives that tell flat pixels, pixels.
_FLAT_SIGMA_PX = 1.0
#: Gaussian smoothing of the log-count histogram before its modes are sought, bins.
_SMOOTH_BINS = 1.5
#: Growth of silicon towards the half-height of its edges, pixels.
_GROW_PX = 2
#: Scale of the Laplacian of Gaussian that tells the bright side of an edge, pixels.
_LOG_SIGMA_PX = 1.0
#: A region whose centre curves upwards more than this many times the noise
#: (median absolute Laplacian) is a valley, not silicon (step 3).
_VALLEY = 5.0
_CROSS = ndimage.generate_binary_structure(2, 1)
_INCH_UM = 25400.0
_CM_UM = 10000.0
#: Resolution tags at or below this many pixels per inch are a display or print
#: setting (72, 96, 300 dpi …), not a microscope's calibration.
_PRINT_DPI = 1200.0


# ------------------------------------------------------------------- reading


def _resolution_um(tags: Any, source: str) -> float | None:
    """Pixel size (µm) from the TIFF resolution tags, None when they are absent."""
    x_tag, y_tag, unit_tag = (tags.get(n) for n in ("XResolution", "YResolution", "ResolutionUnit"))
    if x_tag is None:
        return None
    unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default: inch
    per_unit = {2: _INCH_UM, 3: _CM_UM}.get(unit)
    if per_unit is None:
        return None  # 1: no absolute unit (an aspect ratio only)

    def pixels_per_unit(tag: Any) -> float:
        value = tag.value
        numerator, denominator = value if isinstance(value, tuple) else (value, 1)
        return float(numerator) / float(denominator) if denominator else math.nan

    x = pixels_per_unit(x_tag)
    y = pixels_per_unit(y_tag) if y_tag is not None else x
    if not (math.isfinite(x) and x > 0 and math.isfinite(y) and y > 0):
        return None
    if x * _INCH_UM / per_unit <= _PRINT_DPI:  # pixels per inch
        return None
    if abs(x - y) > 1e-3 * max(x, y):
        raise IngestError(
            f"{source}: the resolution tags give non-square pixels ({per_unit / x:.6g} µm "
            f"along x, {per_unit / y:.6g} µm along y); expected square pixels. Resample the "
            "image or set sem_pixel_size_um in the campaign",
            path=source,
            dataset="sem",
        )
    return per_unit / x


def read_sem(
    path: str | os.PathLike[str], pixel_size_um: float | None = None
) -> tuple[NDArray[np.float32], float]:
    """Read one SEM image and its pixel size.

    Parameters
    ----------
    path : path-like
        A TIFF file holding one 2-D grey image (any real dtype).
    pixel_size_um : float, optional
        Pixel edge in µm (the campaign's ``sem_pixel_size_um``). Default: from
        the TIFF tags XResolution/YResolution with ResolutionUnit centimetre
        or inch (as :func:`debond.synth.write_sem` writes them). Resolutions
        of 1200 pixels per inch or less are taken for a display or print
        setting (72 or 300 dpi …) and ignored.

    Returns
    -------
    image : (y, x) ndarray of float32
        The grey values as stored (not rescaled).
    pixel_size_um : float

    Raises
    ------
    IngestError (a ValueError)
        Naming the file: missing, unreadable, not one 2-D grey image, not real
        numbers or not finite, non-square pixels, or no pixel size (neither
        given nor in the tags; set ``sem_pixel_size_um`` in the campaign).
    ValueError
        ``pixel_size_um`` given but not a finite number > 0.

    Examples
    --------
    >>> image, pixel = read_sem("sem/c03_0.tif")  # doctest: +SKIP
    >>> image.shape, pixel  # doctest: +SKIP
    ((256, 256), 0.03)
    """
    source = os.fspath(path)
    if pixel_size_um is not None:
        given = positive(pixel_size_um, "pixel_size_um", "µm")
    if not Path(source).is_file():
        what = "is a folder" if Path(source).is_dir() else "no such file"
        raise IngestError(
            f"{source}: {what}; expected an SEM image (TIFF)", path=source, dataset="sem"
        )
    try:
        with tifffile.TiffFile(source) as tif:
            pages = len(tif.pages)
            page = tif.pages.first
            image = np.asarray(page.asarray())
            tags = page.tags
            from_tags = None if pixel_size_um is not None else _resolution_um(tags, source)
    except IngestError:
        raise
    except (OSError, ValueError, IndexError, KeyError, tifffile.TiffFileError) as error:
        raise IngestError(
            f"{source}: cannot be read as TIFF ({error}); expected an SEM image (TIFF)",
            path=source,
            dataset="sem",
        ) from error
    if pages != 1 or image.ndim != 2 or 0 in image.shape:
        found = f"{pages} images" if pages != 1 else f"an image of shape {image.shape}"
        raise IngestError(
            f"{source}: holds {found}; expected one 2-D grey image (rows, columns). "
            "Convert colour images to grey and split stacks into one file per section",
            path=source,
            dataset="sem",
        )
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise IngestError(
            f"{source}: the image has dtype {image.dtype}; expected real numbers (grey values)",
            path=source,
            dataset="sem",
        )
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise IngestError(
            f"{source}: the image holds {np.count_nonzero(~np.isfinite(image))} NaN or "
            "infinite values; expected finite grey values",
            path=source,
            dataset="sem",
        )
    if pixel_size_um is not None:
        return image, given
    if from_tags is None:
        raise IngestError(
            f"{source}: no pixel size: the TIFF has no usable XResolution/YResolution with "
            "ResolutionUnit centimetre or inch; set sem_pixel_size_um (µm) for this sample "
            "in the campaign (or pass pixel_size_um)",
            path=source,
            dataset="sem",
        )
    return image, from_tags


# --------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class SemThresholds:
    """Grey-level decisions of an SEM segmentation, in the image's grey units.

    Attributes
    ----------
    classes : (4,) tuple of float
        Non-decreasing boundaries of the grey classes SEI | graphite | epoxy |
        silicon | CBD. Equal neighbours mean an empty class: ``classes[0] ==
        classes[1]`` one dark level for SEI and graphite (or none below the
        epoxy when both equal the histogram's lower end), ``classes[2] ==
        classes[3]`` no silicon level.
    cbd : float
        CBD above this (midpoint of the epoxy and CBD levels).
    levels : (5,) tuple of float
        Grey level (histogram mode) of SEI, graphite, epoxy, silicon and CBD;
        NaN where not found. A single dark level is both SEI's and graphite's.
    """

    classes: tuple[float, float, float, float]
    cbd: float
    levels: tuple[float, float, float, float, float]


def flat_histogram(
    denoised: NDArray[np.floating],
    bins: int = 256,
    value_range: tuple[float, float] | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Histogram of the flat pixels of a (denoised) SEM image (module docstring, step 2).

    Parameters
    ----------
    denoised : (y, x) array
        The image, denoised as for :func:`sem_phases`.
    bins : int
        Number of bins.
    value_range : (float, float), optional
        Lower and upper edge; default the image's minimum and maximum. Give one
        range to several images to add their histograms.

    Returns
    -------
    counts : (bins,) ndarray of int64
    edges : (bins + 1,) ndarray of float64

    Raises
    ------
    ValueError
        An image with a single grey value (no range).
    """
    image = np.asarray(denoised, dtype=np.float32)
    low, high = (
        (float(image.min()), float(image.max()))
        if value_range is None
        else (float(value_range[0]), float(value_range[1]))
    )
    if not high > low:
        raise ValueError(
            f"image holds a single grey value ({low}); expected an SEM image with contrast"
        )
    gradient = ndimage.gaussian_gradient_magnitude(image, _FLAT_SIGMA_PX, mode="nearest")
    curvature = np.abs(ndimage.gaussian_laplace(image, _FLAT_SIGMA_PX, mode="nearest"))
    # The floor (a hundredth of the grey range per pixel, about the noise of the
    # synthetic images) keeps the interiors of noise-free images flat: their median
    # derivatives are rounding errors.
    floor = 1e-2 * (high - low)
    flat = (gradient <= max(_FLAT_FACTOR * float(np.median(gradient)), floor)) & (
        curvature <= max(_FLAT_FACTOR * float(np.median(curvature)), floor)
    )
    counts, edges = np.histogram(image[flat], bins=int(bins), range=(low, high))
    return counts.astype(np.int64), edges.astype(np.float64)


def _modes(counts: NDArray[np.float64], minimum_prominence: float) -> list[int]:
    """Bins of the histogram's modes, at most five, the most prominent, increasing."""
    pad = 4
    # Smoothing before the logarithm: the one-bin spikes of a noise-free image keep
    # their height (the logarithm of a smoothed spike, not a smoothed logarithm).
    smooth = np.log1p(ndimage.gaussian_filter1d(np.pad(counts, pad), _SMOOTH_BINS, mode="constant"))
    peaks, found = signal.find_peaks(smooth, prominence=minimum_prominence)
    order = np.argsort(-found["prominences"], kind="stable")[:5]
    return sorted(int(peaks[i]) - pad for i in order)


def _population(counts: NDArray[np.float64], modes: list[int], which: int) -> float:
    """Pixels nearer to mode ``which`` than to its neighbouring modes."""
    low = 0 if which == 0 else (modes[which - 1] + modes[which]) // 2 + 1
    high = len(counts) if which == len(modes) - 1 else (modes[which] + modes[which + 1]) // 2 + 1
    return float(counts[low:high].sum())


def _check_classes(classes: Any) -> tuple[float, float, float, float]:
    try:
        bounds = tuple(float(t) for t in classes)
    except (TypeError, ValueError):
        bounds = ()
    if (
        len(bounds) != 4
        or not all(math.isfinite(b) for b in bounds)
        or not (bounds[0] <= bounds[1] < bounds[2] <= bounds[3])
    ):
        raise ValueError(
            "thresholds must be four finite grey values t0 ≤ t1 < t2 ≤ t3, the boundaries "
            "SEI | graphite | epoxy | silicon | CBD (t0 = t1: one dark level for SEI and "
            f"graphite; t2 = t3: no silicon); got {classes!r}"
        )
    return bounds[0], bounds[1], bounds[2], bounds[3]


def sem_thresholds(
    counts: NDArray[np.integer] | NDArray[np.floating],
    edges: NDArray[np.floating],
    classes: Sequence[float] | None = None,
    *,
    min_prominence: float = MODE_PROMINENCE,
) -> SemThresholds:
    """Grey levels and class boundaries of an SEM image from its histogram.

    The levels are the histogram's modes assigned in the SEM order of the
    phases (module docstring, step 2); the boundaries are the midpoints between
    adjacent levels. The histogram may be pooled over several images of one
    sample (same detector settings) and the result passed to
    :func:`sem_phases` for each.

    Parameters
    ----------
    counts : (bins,) array
        Pixels per bin.
    edges : (bins + 1,) array
        Bin edges, increasing, grey units.
    classes : four floats, optional
        Given boundaries t0 ≤ t1 < t2 ≤ t3 (see :class:`SemThresholds`) instead
        of the modes; the levels are then the histogram's mode within each class.
    min_prominence : float
        Smallest prominence of a mode (:data:`MODE_PROMINENCE`).

    Returns
    -------
    SemThresholds

    Raises
    ------
    ValueError
        Fewer than two modes (no epoxy and CBD levels to tell apart): the
        message says to give ``thresholds``; ``classes`` not four
        non-decreasing finite numbers; ``counts`` and ``edges`` of
        inconsistent lengths.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> grey = np.concatenate([rng.normal(m, 0.01, n) for m, n in
    ...     [(0.1, 500), (0.2, 2000), (0.45, 6000), (0.62, 800), (0.9, 700)]])
    >>> counts, edges = np.histogram(grey, bins=256)
    >>> [round(t, 2) for t in sem_thresholds(counts, edges).classes]
    [0.15, 0.32, 0.54, 0.76]
    """
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if counts.ndim != 1 or edges.shape != (counts.size + 1,) or counts.size < 4:
        raise ValueError(
            "counts and edges must be a histogram: (bins,) and (bins + 1,) with bins ≥ 4; got "
            f"shapes {counts.shape} and {edges.shape}"
        )
    centres = 0.5 * (edges[:-1] + edges[1:])
    nan = math.nan
    if classes is not None:
        bounds = _check_classes(classes)
        which = np.digitize(centres, bounds)
        found = []
        for k in range(5):
            inside = which == k
            found.append(float(centres[inside][np.argmax(counts[inside])]) if inside.any() else nan)
        if bounds[0] == bounds[1]:
            found[0] = found[1]
        sei, graphite, pore, silicon, cbd = found
        if bounds[2] == bounds[3]:
            silicon = nan
        midpoint = 0.5 * (pore + cbd)
        return SemThresholds(
            classes=bounds,
            cbd=midpoint if math.isfinite(midpoint) else bounds[3],
            levels=(sei, graphite, pore, silicon, cbd),
        )

    modes = _modes(counts, min_prominence)
    if len(modes) < 2:
        raise ValueError(
            f"the image's histogram has {len(modes)} clear grey level(s); telling epoxy, "
            "silicon and CBD apart needs at least two (is the image empty, saturated or "
            "without contrast?). Give the four class boundaries as thresholds "
            "(the campaign's SEM segmentation thresholds)"
        )
    level = [float(centres[m]) for m in modes]
    top = len(modes) - 1
    cbd = level[top]
    has_silicon = top >= 2 and _population(counts, modes, top - 1) < _population(
        counts, modes, top - 2
    )
    pore_at = top - 2 if has_silicon else top - 1
    pore = level[pore_at]
    silicon = level[top - 1] if has_silicon else nan
    dark = level[max(0, pore_at - 2) : pore_at]
    if len(dark) == 2:
        sei, graphite = dark
    else:  # one dark level stands for both; none: neither is in the image
        sei = graphite = dark[0] if dark else nan
    lowest = float(edges[0])
    t1 = 0.5 * (dark[-1] + pore) if dark else lowest
    t0 = 0.5 * (sei + graphite) if len(dark) == 2 else t1
    t3 = 0.5 * (silicon + cbd) if has_silicon else 0.5 * (pore + cbd)
    t2 = 0.5 * (pore + silicon) if has_silicon else t3
    return SemThresholds(
        classes=(t0, t1, t2, t3),
        cbd=0.5 * (pore + cbd),
        levels=(sei, graphite, pore, silicon, cbd),
    )


# ------------------------------------------------------------------- phases


def _grow(core: NDArray[np.bool_], candidates: NDArray[np.bool_], steps: int) -> NDArray[np.bool_]:
    """``core`` grown by at most ``steps`` 4-neighbour steps through ``candidates``."""
    if steps <= 0 or not core.any():
        return core
    return np.asarray(
        ndimage.binary_dilation(core, _CROSS, iterations=steps, mask=core | candidates)
    )


def _silicon_centres(
    image: NDArray[np.float32], core: NDArray[np.bool_], thresholds: SemThresholds
) -> NDArray[np.bool_]:
    """The regions of ``core`` whose centre looks like silicon (step 3).

    A region's centre is its pixels farthest from its edge (at least
    ``min(3, deepest)`` pixels in). It is not silicon when the centre's mean
    grey lies above the silicon level by more than a quarter of the way to the
    silicon|CBD boundary (a CBD object smaller than the blur), or when the
    centre is a valley: the larger eigenvalue of the Hessian (Gaussian
    derivatives of 1 pixel) above :data:`_VALLEY` times the image's median
    absolute Laplacian (its noise) and more than twice the smaller one (a
    narrow epoxy channel between two CBD regions, blurred to the silicon grey).
    A small section inside a CBD coat is a bowl, curved alike both ways, and
    stays.
    """
    regions, n = ndimage.label(core, _CROSS)
    if n == 0:
        return core
    index = np.arange(1, n + 1)
    depth = ndimage.distance_transform_edt(core)
    deepest = np.zeros(n + 1)
    deepest[1:] = ndimage.maximum(depth, regions, index)
    centre = regions * (depth >= np.minimum(3.0, deepest[regions]))

    def centre_mean(values: NDArray[np.floating]) -> NDArray[np.float64]:
        out = np.zeros(n + 1)
        out[1:] = ndimage.mean(values, centre, index)
        return out

    _, _, t2, t3 = thresholds.classes
    level = thresholds.levels[3]
    if not math.isfinite(level):
        level = 0.5 * (t2 + t3)
    bright = centre_mean(image) > level + 0.25 * (t3 - level)
    yy, xx, yx = (
        ndimage.gaussian_filter(image, 1.0, order=order, mode="nearest")
        for order in ((2, 0), (0, 2), (1, 1))
    )
    mean, half = 0.5 * (yy + xx), np.sqrt((0.5 * (yy - xx)) ** 2 + yx**2)
    largest, smallest = centre_mean(mean + half), centre_mean(mean - half)
    noise = max(float(np.median(np.abs(yy + xx))), 0.01 * (t3 - t2))
    valley = (largest > _VALLEY * noise) & (largest > 2.0 * smallest)
    rejected = bright | valley
    rejected[0] = False
    return core & ~rejected[regions]


def sem_phases_kernel(
    denoised: NDArray[np.floating],
    thresholds: SemThresholds,
    *,
    silicon_min_radius_px: float = 2.0,
    sei_max_px: float = 4.0,
    graphite_min_radius_px: float = 4.0,
) -> NDArray[np.uint8]:
    """Phase codes of a denoised SEM image (steps 3–7 of the module docstring).

    Parameters
    ----------
    denoised : (y, x) array
        The image after denoising, grey units of ``thresholds``.
    thresholds : SemThresholds
    silicon_min_radius_px : float
        Radius of the disc that opens the silicon class, pixels.
    sei_max_px : float
        An SEI region comes within this many pixels of silicon.
    graphite_min_radius_px : float
        Radius of the disc that graphite must contain, pixels (0: no opening).

    Returns
    -------
    (y, x) ndarray of uint8
        0 pore, 1 graphite, 2 CBD, 3 silicon, 4 SEI.
    """
    image = np.asarray(denoised, dtype=np.float32)
    t0, t1, t2, t3 = thresholds.classes
    bright_side = ndimage.gaussian_laplace(image, _LOG_SIGMA_PX, mode="nearest") < 0
    silicon_class = (image >= t2) & (image < t3)
    core = _silicon_centres(image, open_with_ball(silicon_class, silicon_min_radius_px), thresholds)
    silicon = _grow(core, (silicon_class | bright_side) & (image < t3), _GROW_PX)
    cbd = (image >= thresholds.cbd) & ~silicon
    dark = (image < t1) & ~silicon & ~cbd
    sei_class = dark & (image < t0) if t0 < t1 else dark
    sei = np.zeros(image.shape, dtype=bool)
    if silicon.any() and sei_class.any():
        near = ndimage.distance_transform_edt(~silicon) <= sei_max_px
        regions, _ = ndimage.label(sei_class, _CROSS)
        touching = np.unique(regions[near & sei_class])
        sei = np.isin(regions, touching[touching > 0])
    graphite = dark & ~sei
    if graphite_min_radius_px > 0:
        graphite = open_with_ball(graphite, graphite_min_radius_px)
    if t0 < t1 and sei.any():
        # The dark rims of the SEI's edges, in the graphite grey, are SEI too.
        regions, _ = ndimage.label(dark & ~graphite, _CROSS)
        touching = np.unique(regions[sei])
        sei = np.isin(regions, touching[touching > 0])
    phases = np.full(image.shape, PORE, dtype=np.uint8)
    phases[graphite] = GRAPHITE
    phases[sei] = SEI
    phases[cbd] = CBD
    phases[silicon] = SILICON
    return phases


def _as_image(image: Any, name: str = "image") -> NDArray[np.float32]:
    array = np.asarray(image)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{name} must be a 2-D grey image (y, x); got shape {array.shape}")
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise ValueError(f"{name} must hold real grey values; got dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite; it holds NaN or infinite values")
    return array


def sem_phases(
    image: NDArray[Any],
    *,
    thresholds: SemThresholds | Sequence[float] | None = None,
    sigma_px: float = 1.0,
    silicon_min_radius_px: float = 2.0,
    sei_max_px: float = 4.0,
    graphite_min_radius_px: float = 4.0,
    bins: int = 256,
) -> tuple[NDArray[np.uint8], SemThresholds]:
    """Five phases of one SEM backscatter image (module docstring, steps 1–7).

    Parameters
    ----------
    image : (y, x) array of real numbers
        Backscatter intensity, any grey units.
    thresholds : SemThresholds or sequence of four floats, optional
        Grey-class boundaries t0 ≤ t1 < t2 ≤ t3 (SEI | graphite | epoxy |
        silicon | CBD) in the image's units, or a :class:`SemThresholds` (e.g.
        from :func:`sem_thresholds` on a pooled histogram), applied to the
        denoised image. Default: from this image's histogram.
    sigma_px : float
        Gaussian denoising, pixels (0: none; default 1).
    silicon_min_radius_px : float
        The silicon class is opened by a disc of this radius, pixels (default
        2): rims of the CBD's edges (up to about four pixels wide) go, sections
        of a radius above about 2.5 pixels stay.
    sei_max_px : float
        SEI regions come within this many pixels of silicon (default 4);
        others are graphite (if compact) or epoxy.
    graphite_min_radius_px : float
        Graphite contains a disc of this radius, pixels (default 4); smaller
        or thinner dark objects are epoxy.
    bins : int
        Bins of the histogram, ≥ 16 (default 256).

    Returns
    -------
    phases : (y, x) ndarray of uint8
        0 pore (epoxy), 1 graphite, 2 CBD, 3 silicon, 4 SEI.
    thresholds : SemThresholds
        The decisions used.

    Raises
    ------
    ValueError
        ``image`` not 2-D, not real or not finite, without contrast; a
        parameter out of range (named).

    Examples
    --------
    >>> y, x = np.indices((96, 96))
    >>> r = np.hypot(y - 47.5, x - 47.5)  # silicon, SEI, epoxy, CBD rings in epoxy
    >>> image = np.select([r < 14, r < 26, r < 30, r < 42], [0.62, 0.10, 0.45, 0.90], 0.45)
    >>> phases, used = sem_phases(image)
    >>> [round(v, 2) for v in used.levels]  # SEI, graphite (one dark level), epoxy, Si, CBD
    [0.1, 0.1, 0.45, 0.62, 0.9]
    >>> [int(np.count_nonzero(phases == code)) for code in (SILICON, SEI, GRAPHITE)]
    [616, 1480, 0]
    """
    array = _as_image(image)
    sigma = positive(sigma_px, "sigma_px", "pixels", allow_zero=True)
    silicon_radius = positive(
        silicon_min_radius_px, "silicon_min_radius_px", "pixels", allow_zero=True
    )
    sei_max = positive(sei_max_px, "sei_max_px", "pixels", allow_zero=True)
    graphite_radius = positive(
        graphite_min_radius_px, "graphite_min_radius_px", "pixels", allow_zero=True
    )
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 16:
        raise ValueError(f"bins must be an integer ≥ 16; got {bins!r}")
    denoised = ndimage.gaussian_filter(array, sigma, mode="nearest") if sigma > 0 else array
    if isinstance(thresholds, SemThresholds):
        decided = thresholds
    else:
        # Levels are the grey of the phases' interiors, which smoothing keeps: they
        # are found on an image smoothed at least by 1 pixel, whose peaks are sharp.
        levels_from = (
            denoised
            if sigma >= _MIN_LEVEL_SIGMA_PX
            else ndimage.gaussian_filter(array, _MIN_LEVEL_SIGMA_PX, mode="nearest")
        )
        counts, edges = flat_histogram(levels_from, int(bins))
        decided = sem_thresholds(
            counts, edges, None if thresholds is None else _check_classes(thresholds)
        )
    phases = sem_phases_kernel(
        denoised,
        decided,
        silicon_min_radius_px=silicon_radius,
        sei_max_px=sei_max,
        graphite_min_radius_px=graphite_radius,
    )
    return phases, decided


# --------------------------------------------------------------------- gaps


def circle_directions(n: int) -> NDArray[np.float64]:
    """``n`` unit vectors evenly spaced on the circle in the (y, x) plane, as (z, y, x).

    Direction ``k`` has the angle ``θ_k = 2π(k + ½)/n`` from the x axis:
    ``(0, sin θ_k, cos θ_k)`` (the half step keeps the rays off the pixel axes).

    Examples
    --------
    >>> circle_directions(4).round(3).tolist()[0]
    [0.0, 0.707, 0.707]
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n_rays must be an integer ≥ 1 (rays per section); got {n!r}")
    theta = 2.0 * math.pi * (np.arange(int(n), dtype=np.float64) + 0.5) / int(n)
    return np.stack([np.zeros_like(theta), np.sin(theta), np.cos(theta)], axis=1)


def _sections_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Section rows as a table of :data:`SECTION_COLUMNS` in their dtypes (empty too)."""
    return pd.DataFrame(rows, columns=list(SECTION_COLUMNS)).astype(_SECTION_DTYPES)


def section_gaps(
    phases: NDArray[np.integer],
    *,
    pixel_size_um: float,
    n_rays: int = 64,
    max_ray_length_um: float = 3.0,
    min_area_px: int = 20,
) -> pd.DataFrame:
    """In-plane gap between every silicon section and the CBD, by ray tracing.

    Silicon (phase 3) is labelled with 4-connectivity
    (:func:`debond.pipeline.label.label_kernel` on a (1, y, x) view); sections
    of fewer than ``min_area_px`` pixels are dropped (they still block other
    sections' rays). For each section, :func:`circle_directions` rays from its
    centroid run through :func:`debond.pipeline.measure.ray_gaps_kernel` on a
    (1, y, x) crop (the section's bounding box widened by the longest ray)
    with steps of 0.25 pixel; the gap is the mean of the valid rays.

    Parameters
    ----------
    phases : (y, x) array of integers
        Phase codes: 0 pore, 1 graphite, 2 CBD, 3 silicon, 4 SEI.
    pixel_size_um : float
        Pixel edge, µm.
    n_rays : int
        Rays per section, ≥ 1 (default 64).
    max_ray_length_um : float
        Longest gap counted, µm (default 3.0).
    min_area_px : int
        Smallest section kept, pixels (default 12, a disc of radius 2).

    Returns
    -------
    pandas.DataFrame
        One row per section, by label (first appearance in C order), columns
        :data:`SECTION_COLUMNS`: ``particle`` (int64 label),
        ``centroid_y_um, centroid_x_um`` (mean pixel index × pixel size),
        ``section_radius_um`` (√(area/π)), ``section_gap_um`` and
        ``gap_std_um`` (mean and population standard deviation of the valid
        rays' gaps, µm; NaN without valid rays), ``n_rays`` (int64, valid
        rays), ``touches_border`` (bool: a pixel on the image's edge; such a
        section is cut by the field of view and its radius is too small).

    Raises
    ------
    ValueError
        ``phases`` not a 2-D integer array; a parameter out of range (named).

    Examples
    --------
    >>> y, x = np.indices((48, 48))
    >>> r = np.hypot(y - 23.5, x - 23.5)
    >>> phases = np.select([r < 8, (r >= 12) & (r < 15)], [3, 2], 0).astype(np.uint8)
    >>> table = section_gaps(phases, pixel_size_um=0.5)  # 8 px radius, 4 px gap
    >>> table[["section_radius_um", "section_gap_um", "n_rays"]].round(1).values.tolist()
    [[4.1, 1.9, 64.0]]
    """
    codes = np.asarray(phases)
    if codes.ndim != 2 or 0 in codes.shape:
        raise ValueError(f"phases must be a 2-D image (y, x); got shape {codes.shape}")
    if codes.dtype == np.bool_ or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(
            f"phases must hold integer phase codes (0 pore … 4 SEI); got dtype {codes.dtype}"
        )
    pixel = positive(pixel_size_um, "pixel_size_um", "µm")
    directions = circle_directions(n_rays)
    max_length = positive(max_ray_length_um, "max_ray_length_um", "µm")
    if isinstance(min_area_px, bool) or not isinstance(min_area_px, int | np.integer):
        raise ValueError(f"min_area_px must be an integer ≥ 0 (pixels); got {min_area_px!r}")
    if min_area_px < 0:
        raise ValueError(f"min_area_px must be an integer ≥ 0 (pixels); got {min_area_px!r}")

    labels, n = label_kernel((codes == SILICON)[None], connectivity=6)
    if n == 0:
        return _sections_frame([])
    labels2d = labels[0]
    area = np.bincount(labels2d.ravel(), minlength=n + 1)[1:]
    height, width = codes.shape
    y, x = np.indices(codes.shape, dtype=np.float64)
    sum_y = ndimage.sum_labels(y, labels2d, np.arange(1, n + 1))
    sum_x = ndimage.sum_labels(x, labels2d, np.arange(1, n + 1))
    boxes = ndimage.find_objects(labels2d, max_label=n)
    max_length_px = max_length / pixel
    step = 0.25
    margin = math.ceil(max_length_px + step) + 2
    rows = []
    for index in np.flatnonzero(area >= max(min_area_px, 1)):
        particle = int(index) + 1
        box = boxes[index]
        assert box is not None
        y0, y1 = max(box[0].start - margin, 0), min(box[0].stop + margin, height)
        x0, x1 = max(box[1].start - margin, 0), min(box[1].stop + margin, width)
        centroid = (sum_y[index] / area[index], sum_x[index] / area[index])
        gaps = ray_gaps_kernel(
            codes[None, y0:y1, x0:x1],
            labels[:, y0:y1, x0:x1],
            particle,
            (0.0, *centroid),
            directions,
            max_length_vox=max_length_px,
            step_vox=step,
            crop_origin=(0, y0, x0),
            volume_shape=(1, height, width),
        )
        valid = gaps[np.isfinite(gaps)] * pixel
        rows.append(
            {
                "particle": particle,
                "centroid_y_um": centroid[0] * pixel,
                "centroid_x_um": centroid[1] * pixel,
                "section_radius_um": math.sqrt(area[index] / math.pi) * pixel,
                "section_gap_um": float(valid.mean()) if valid.size else math.nan,
                "gap_std_um": float(valid.std()) if valid.size else math.nan,
                "n_rays": int(valid.size),
                "touches_border": bool(
                    box[0].start == 0
                    or box[1].start == 0
                    or box[0].stop == height
                    or box[1].stop == width
                ),
            }
        )
    return _sections_frame(rows)


# ------------------------------------------------------------------ one file


def analyse_sem(
    path: str | os.PathLike[str],
    *,
    pixel_size_um: float | None = None,
    thresholds: SemThresholds | Sequence[float] | None = None,
    sigma_px: float = 1.0,
    silicon_min_radius_px: float = 2.0,
    sei_max_px: float = 4.0,
    graphite_min_radius_px: float = 4.0,
    bins: int = 256,
    n_rays: int = 64,
    max_ray_length_um: float = 3.0,
    min_area_px: int = 20,
) -> pd.DataFrame:
    """The sem stage: phases and section gaps of one SEM image file
    (:func:`read_sem`, :func:`sem_phases`, :func:`section_gaps`).

    Parameters
    ----------
    path : path-like
        A TIFF file with one 2-D grey image.
    pixel_size_um : float, optional
        Pixel edge, µm (the campaign's ``sem_pixel_size_um``); default from
        the TIFF resolution tags.
    thresholds, sigma_px, silicon_min_radius_px, sei_max_px, graphite_min_radius_px, bins
        As for :func:`sem_phases`.
    n_rays, max_ray_length_um, min_area_px
        As for :func:`section_gaps`.

    Returns
    -------
    pandas.DataFrame
        Column ``image`` (the file's name) followed by :data:`SECTION_COLUMNS`,
        one row per silicon section.

    Raises
    ------
    IngestError (a ValueError)
        The file cannot be read or has no pixel size (see :func:`read_sem`).
    ValueError
        The image has no contrast; an option out of range; the message names
        the file.

    Examples
    --------
    >>> table = analyse_sem("sem/c03_0.tif", n_rays=128)  # doctest: +SKIP
    """
    image, pixel = read_sem(path, pixel_size_um)
    source = os.fspath(path)
    try:
        phases, _ = sem_phases(
            image,
            thresholds=thresholds,
            sigma_px=sigma_px,
            silicon_min_radius_px=silicon_min_radius_px,
            sei_max_px=sei_max_px,
            graphite_min_radius_px=graphite_min_radius_px,
            bins=bins,
        )
        table = section_gaps(
            phases,
            pixel_size_um=pixel,
            n_rays=n_rays,
            max_ray_length_um=max_ray_length_um,
            min_area_px=min_area_px,
        )
    except IngestError:
        raise
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error
    table.insert(0, "image", Path(source).name)
    return table


def usable_sections(rows: pd.DataFrame) -> NDArray[np.bool_]:
    """Sections fit for stereology: off the image border and with an in-plane gap.

    Parameters
    ----------
    rows : DataFrame
        Section rows (:data:`SECTION_COLUMNS`, or the particle table's 2D
        rows): ``touches_border``, ``n_rays`` and ``section_gap_um``.

    Returns
    -------
    (len(rows),) ndarray of bool
    """
    return usable_rows(rows) & np.isfinite(rows["section_gap_um"].to_numpy(dtype=np.float64))
