"""Phase levels of a reconstruction, found with the size prior.

The paper separates the phases "using a priori knowledge about particle size
and porosity". Ranking grey classes (multi-Otsu's five classes taken as air <
pore < SEI < silicon < CBD) fails on scans whose phase fractions or
attenuation order differ: silicon is a few % of the volume, and CBD may be
brighter or darker than silicon. Here the phases are found by what they are:

1. **Levels.** The histogram of *flat* voxels (gradient and Laplacian
   magnitudes at most their medians in the sample) has a mode at each phase
   thick enough to have a plateau; the blurred edges between phases, which
   fill the histogram between the modes, are left out. Modes are peaks of the
   smoothed log-histogram with a prominence of at least
   :data:`MODE_PROMINENCE` (lowered until three are found).
2. **Pore** is the lowest level (pore filling, or vacuum in open pores).
3. **Silicon** is the level whose grey band, opened by a ball (so the
   partial-volume rims of brighter phases' edges are gone), holds the most
   compact objects of the prior's size (equivalent radius 0.85·lo to 1.6·hi,
   a cluster of touching particles included), weighted by how much of their
   surroundings, a gap away, is the brightest other phase (the CBD that coats
   silicon). Only levels in the upper part of the range
   (:data:`SILICON_MIN_SHARE`) are candidates: silicon absorbs far more than
   graphite, the SEI and the pore filling.
4. **CBD** is the brightest phase but silicon; its plateau is the 99.5th
   percentile of the sample away from silicon (thin coats never reach their
   plateau, so they make no mode).
5. **Edges.** Silicon's surface is placed between the half-height of silicon
   and pore and the grey level of the steepest voxels at the particles'
   edges (a thin SEI shell shifts the steepest edge outward, the pore
   half-height inward); the CBD boundary at the half-height of CBD and pore.
   The edge blur σ (voxels) is the silicon–pore step over the steepest
   gradient; rims are removed with balls of about that radius.

:func:`calibrate` does this on a crop of at most :data:`CALIBRATION_EDGE`
voxels per axis held in memory (a reduction of the volume, DESIGN.md
principle 2); :func:`debond.pipeline.segment.segment` then applies the
:class:`Levels` block by block.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import cc3d
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.signal import find_peaks
from skimage.morphology import convex_hull_image

__all__ = [
    "CALIBRATION_EDGE",
    "Levels",
    "SegmentationError",
    "ball",
    "calibrate",
    "check_size_prior",
    "drop_small",
    "flat_modes",
    "sample_slices",
    "silicon_cores",
]

#: Largest crop edge (voxels) the levels are calibrated on.
CALIBRATION_EDGE = 160
#: Smallest prominence of a histogram mode, natural-log units of the smoothed count.
MODE_PROMINENCE = 1.0
#: A silicon level lies above pore + this share of the range up to the brightest voxels.
SILICON_MIN_SHARE = 0.35
#: Silicon objects whose equivalent radius is under this share of the prior's
#: smallest radius are not particles.
SMALLEST_SHARE = 0.8
#: The sample's solid phases lie above this share of the way from the lowest
#: level to the brightest voxels.
SOLID_SHARE = 0.3
#: Silicon cores (the band opened) under this share of the smallest radius are
#: not grown into particles: rims that survived the opening.
CORE_SHARE = 0.6
#: Reach of the enclosure test: the CBD coat lies within this of a particle, µm.
COAT_REACH_UM = 0.6


class SegmentationError(ValueError):
    """The phases cannot be told apart; the message says what was found."""


@dataclass(frozen=True)
class Levels:
    """What :func:`calibrate` found: phase levels (1/µm) and the decisions made from them.

    Attributes
    ----------
    pore, silicon, cbd : float
        Attenuation of each phase's plateau, 1/µm.
    silicon_low, silicon_high : float
        Silicon is grown from its cores through voxels in [low, high].
    core_low : float
        Lower edge of silicon's grey band (its cores).
    cbd_low, cbd_high : float
        CBD is the voxels in [low, high] (high is inf when CBD is the brightest).
    solid : float
        Sample mask: the hull of each slice's voxels above this.
    edge_sigma_voxels : float
        Blur of a silicon edge.
    core_radius_voxels, grow_voxels, cbd_open_voxels : int
        Ball radii: opening of silicon's band, growth of its cores, opening of
        CBD where silicon edges pass through its range (0: none).
    smallest_radius_voxels : float
        Silicon objects of a smaller equivalent radius are not particles.
    core_smallest_voxels : float
        Silicon cores of a smaller equivalent radius are not grown.
    sei_low : float
        Near silicon, non-silicon voxels above this are SEI.
    modes : tuple of float
        Every level found, ascending.
    scores : tuple of float
        The silicon score of each mode.
    """

    pore: float
    silicon: float
    cbd: float
    silicon_low: float
    silicon_high: float
    core_low: float
    cbd_low: float
    cbd_high: float
    solid: float
    edge_sigma_voxels: float
    core_radius_voxels: int
    grow_voxels: int
    cbd_open_voxels: int
    smallest_radius_voxels: float
    core_smallest_voxels: float
    sei_low: float
    modes: tuple[float, ...]
    scores: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        """Plain values for provenance (inf as a string)."""
        return {
            k: ("inf" if isinstance(v, float) and math.isinf(v) else v)
            for k, v in asdict(self).items()
        }

    @property
    def halo(self) -> int:
        """Deepest reach of the block kernel's neighbourhood operations, voxels."""
        opened = 2 * self.core_radius_voxels + self.grow_voxels
        small = math.ceil(2 * self.smallest_radius_voxels) + 1
        return opened + small + 2 * self.cbd_open_voxels + 2


def check_size_prior(radius_range_um: Any) -> tuple[float, float] | None:
    """A size prior as two radii (lo, hi) in µm, 0 < lo ≤ hi (hi may be inf); None stays None.

    Raises
    ------
    ValueError
        Anything else, naming what was given.
    """
    if radius_range_um is None:
        return None
    try:
        low, high = (float(v) for v in radius_range_um)
    except (TypeError, ValueError):
        low = high = math.nan
    if not (math.isfinite(low) and low > 0 and high >= low):
        raise ValueError(
            "radius_range_um must be two radii (lo, hi) in µm with 0 < lo ≤ hi (hi may be "
            f"inf); got {radius_range_um!r}"
        )
    return low, high


def ball(radius: float) -> NDArray[np.bool_]:
    """A Euclidean ball of `radius` voxels as a structuring element."""
    r = int(radius)
    grid = np.arange(-r, r + 1)
    return np.asarray(
        (grid[:, None, None] ** 2 + grid[None, :, None] ** 2 + grid**2) <= radius * radius + 1e-9
    )


def flat_modes(
    values: NDArray[np.floating], prominence: float = MODE_PROMINENCE, bins: int = 256
) -> NDArray[np.float64]:
    """Grey levels of the peaks of a smoothed log-histogram, ascending.

    Parameters
    ----------
    values : 1-D array
        Grey values (1/µm).
    prominence : float
        Smallest peak prominence, natural-log units.
    bins : int
        Histogram bins over the 0.05th–99.95th percentiles.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> v = np.concatenate([rng.normal(0.1, 0.01, 9000), rng.normal(0.3, 0.01, 1000)])
    >>> np.round(flat_modes(v), 1)
    array([0.1, 0.3])
    """
    if values.size == 0:
        return np.zeros(0)
    low, high = np.percentile(values, [0.05, 99.95])
    if not high > low:
        return np.array([float(low)])
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    smooth = ndimage.gaussian_filter1d(np.log1p(counts.astype(np.float64)), 2.0)
    peaks, _ = find_peaks(np.pad(smooth, 1), prominence=prominence)
    return np.sort(centres[peaks - 1])


def _circle(n_y: int, n_x: int) -> NDArray[np.bool_]:
    """The reconstruction circle of a slice (FBP and SIRT fill it, not the corners)."""
    y, x = np.mgrid[:n_y, :n_x]
    radius = (min(n_y, n_x) - 1) / 2
    return np.asarray(np.hypot(y - (n_y - 1) / 2, x - (n_x - 1) / 2) <= radius - 1)


def sample_slices(volume: NDArray[np.floating], solid: float) -> NDArray[np.bool_]:
    """The imaged sample: per z-slice, the convex hull of the voxels above `solid`.

    A pillar is convex in every slice, and the pores at its surface belong to
    it (they hold the same filling as those inside, which a grey level cannot
    tell from the air). Specks (a voxel opened away) do not count.
    """
    circle = _circle(*volume.shape[1:])
    out = np.zeros(volume.shape, dtype=bool)
    for k, plane in enumerate(volume):
        above = ndimage.binary_opening((plane > solid) & circle)
        if above.sum() >= 3:
            out[k] = convex_hull_image(above) & circle
    return out


def _components(
    mask: NDArray[np.bool_],
) -> tuple[NDArray[Any], NDArray[np.float64], NDArray[np.float64]]:
    """Labels, equivalent radii (voxels) and compactness (volume / its box's ellipsoid)."""
    labels, n = cc3d.connected_components(mask, connectivity=6, return_N=True)
    if n == 0:
        return labels, np.zeros(0), np.zeros(0)
    sizes = np.bincount(labels.ravel())[1:].astype(np.float64)
    boxes = cc3d.statistics(labels)["bounding_boxes"][1:]
    extent = np.array([[s.stop - s.start for s in box] for box in boxes], dtype=np.float64)
    compact = sizes / (np.pi / 6 * extent.prod(axis=1))
    return labels, (3 * sizes / (4 * np.pi)) ** (1 / 3), compact


def drop_small(
    mask: NDArray[np.bool_], radius_voxels: float, *, keep_faces: bool = False
) -> NDArray[np.bool_]:
    """`mask` without its 6-connected components of equivalent radius under `radius_voxels`.

    With `keep_faces`, components touching the first or last z-slice are kept:
    in a block whose halo is deeper than such an object, a small one never does.
    """
    labels, n = cc3d.connected_components(mask, connectivity=6, return_N=True)
    if n == 0:
        return mask
    small = np.bincount(labels.ravel()) < 4 / 3 * np.pi * radius_voxels**3
    small[0] = False
    if keep_faces:
        small[np.unique(labels[[0, -1]])] = False
    return np.asarray(mask & ~small[labels])


def silicon_cores(
    band: NDArray[np.bool_], radius: int, smallest_voxels: float, *, keep_faces: bool = False
) -> NDArray[np.bool_]:
    """Silicon's grey band opened by a ball of `radius` (partial-volume rims go), without
    the cores of equivalent radius under `smallest_voxels` (rims that survived)."""
    core = ndimage.binary_opening(band, ball(radius))
    return drop_small(core, smallest_voxels, keep_faces=keep_faces)


def _keep(labels: NDArray[Any], keep: NDArray[np.bool_]) -> NDArray[np.bool_]:
    return np.asarray(np.concatenate([[False], keep])[labels])


def _band_edges(modes: NDArray[np.float64], i: int, top: float) -> tuple[float, float]:
    """Silicon band of mode i: halfway to its neighbours (or to the brightest voxels)."""
    level = modes[i]
    low = (modes[i - 1] + level) / 2
    if i + 1 < len(modes):
        return low, (modes[i + 1] + level) / 2
    brighter = top > level + 0.25 * (level - modes[0])
    return low, (level + top) / 2 if brighter else math.inf


def _silicon_score(
    volume: NDArray[np.floating],
    inside: NDArray[np.bool_],
    band: NDArray[np.bool_],
    radius: int,
    prior_voxels: tuple[float, float],
    bright: NDArray[np.bool_],
    reach: int,
) -> float:
    """How much the objects of a grey band look like silicon particles (0: not at all)."""
    lo, hi = prior_voxels
    core = ndimage.binary_opening(band, ball(radius))
    labels, radii, compact = _components(core)
    ok = (radii >= 0.85 * lo) & (radii <= 1.6 * hi) & (compact >= 0.3)
    if not ok.any():
        return 0.0
    kept = _keep(labels, ok)
    shell = ndimage.binary_dilation(kept, ball(reach)) & ~ndimage.binary_dilation(kept, ball(1))
    shell &= inside
    enclosure = float(bright[shell].mean()) if shell.any() else 0.0
    volume_share = float((4 / 3 * np.pi * radii[ok] ** 3).sum() / max(core.sum(), 1))
    return float(ok.sum()) * min(volume_share, 1.0) * enclosure


def _edge_sigma(volume: NDArray[np.floating], silicon: NDArray[np.bool_], step: float) -> float:
    """Blur of silicon's edges, voxels: the step over √(2π) times the steepest gradient."""
    edge = ndimage.binary_dilation(silicon) & ~ndimage.binary_erosion(silicon)
    if not edge.any():
        return 1.0
    steepest = float(np.percentile(ndimage.gaussian_gradient_magnitude(volume, 0.7)[edge], 90))
    if steepest <= 0:
        return 1.0
    return float(np.clip(abs(step) / (math.sqrt(2 * math.pi) * steepest), 0.5, 4.0))


def calibrate(
    volume: NDArray[np.floating], voxel_size_um: float, radius_range_um: tuple[float, float]
) -> Levels:
    """Phase levels and decisions from a (denoised) crop of a reconstruction.

    Parameters
    ----------
    volume : (z, y, x) ndarray
        Denoised attenuation, 1/µm, whole slices (the reconstruction circle
        is found from the slice shape).
    voxel_size_um : float
        Voxel edge, µm.
    radius_range_um : (float, float)
        The size prior: smallest and largest equivalent radius of the
        silicon particles, µm.

    Returns
    -------
    Levels

    Raises
    ------
    SegmentationError
        Fewer than two levels, or no level holding objects of the prior's size
        (the message gives the levels and scores found).
    """
    lo, hi = (r / voxel_size_um for r in radius_range_um)
    volume = np.asarray(volume, dtype=np.float32)
    circle = np.broadcast_to(_circle(*volume.shape[1:]), volume.shape)
    sampled = volume[::2, ::2, ::2][circle[::2, ::2, ::2]]
    for prominence in (MODE_PROMINENCE, 0.5, 0.25):
        everything = flat_modes(sampled, prominence)
        if len(everything) >= 2:
            break
    if len(everything) < 2:
        raise SegmentationError(
            f"the reconstruction shows one grey level ({everything}); expected several phases"
        )
    # Solid: a third of the way from the lowest level (pore filling or air) to
    # the brightest voxels, so the hull holds every solid phase whichever is
    # brightest (a level halfway to the next mode can leave CBD out).
    brightest = float(np.percentile(volume[circle], 99.5))
    solid = float(everything[0] + SOLID_SHARE * (brightest - everything[0]))
    inside = sample_slices(volume, solid)
    if inside.sum() < 1000:
        inside = circle.copy()
    gradient = ndimage.gaussian_gradient_magnitude(volume, 1.0)
    laplace = np.abs(ndimage.gaussian_laplace(volume, 1.0))
    flat = inside & (gradient <= np.median(gradient[inside]))
    flat &= laplace <= np.median(laplace[inside])
    modes = np.zeros(0)
    for prominence in (MODE_PROMINENCE, 0.5, 0.25, 0.1):
        modes = flat_modes(volume[flat], prominence)
        if len(modes) >= 3:
            break
    if len(modes) < 2:
        raise SegmentationError(
            f"the sample's flat regions show {len(modes)} grey level(s) {np.round(modes, 4)} "
            "1/µm; expected pore, silicon and CBD"
        )
    pore = float(modes[0])
    top = float(np.percentile(volume[inside], 99.5))
    radius = int(np.clip(round(0.35 * lo), 1, 4))
    reach = int(min(8, math.ceil(COAT_REACH_UM / voxel_size_um)))
    scores = []
    for i, level in enumerate(modes):
        if i == 0 or level < pore + SILICON_MIN_SHARE * (top - pore):
            scores.append(0.0)
            continue
        low, high = _band_edges(modes, i, top)
        band = (volume > low) & (volume <= high) & inside
        others = np.delete(modes, [0, i])
        coat = top if level < 0.9 * top or not len(others) else float(others.max())
        bright = (volume >= (coat + pore) / 2) & ~band
        scores.append(_silicon_score(volume, inside, band, radius, (lo, hi), bright, reach))
    best = int(np.argmax(scores))
    if scores[best] <= 0:
        raise SegmentationError(
            f"no grey level holds objects of the size prior ({radius_range_um[0]:g}–"
            f"{radius_range_um[1]:g} µm, {lo:.1f}–{hi:.1f} voxels): levels "
            f"{', '.join(f'{m:.4g}' for m in modes)} 1/µm found no silicon particles"
        )
    silicon = float(modes[best])
    core_low, silicon_high = _band_edges(modes, best, top)
    band = (volume > core_low) & (volume <= silicon_high) & inside
    core = silicon_cores(band, radius, CORE_SHARE * lo)
    sigma = _edge_sigma(volume, core, silicon - pore)
    wider = int(np.clip(math.ceil(1.2 * sigma), 1, max(1, int(0.5 * lo))))
    if wider > radius:  # rims as thick as the blur: open with a ball as wide
        radius = wider
        core = silicon_cores(band, radius, CORE_SHARE * lo)
    grow = math.ceil(1.5 * sigma)
    half = (silicon + pore) / 2
    zone = ndimage.binary_dilation(core, ball(grow)) & ~ndimage.binary_erosion(core) & inside
    if zone.any():
        steep_values = volume[zone]
        steep = ndimage.gaussian_gradient_magnitude(volume, 0.7)[zone]
        steepest = float(np.median(steep_values[steep >= np.percentile(steep, 80)]))
    else:
        steepest = half
    span = abs(silicon - pore)
    steepest = float(
        np.clip(steepest, min(silicon, pore) + 0.2 * span, max(silicon, pore) - 0.2 * span)
    )
    silicon_low = (steepest + half) / 2
    grown = ndimage.binary_dilation(core, ball(grow)) & (volume >= silicon_low)
    grown &= volume <= silicon_high
    away = inside & ~ndimage.binary_dilation(grown, ball(2))
    cbd = float(np.percentile(volume[away], 99.5)) if away.any() else top
    cbd_low = (cbd + pore) / 2
    cbd_high = (cbd + silicon) / 2 if cbd < silicon else math.inf
    cbd_open = max(1, math.ceil(sigma)) if cbd < silicon else 0
    return Levels(
        pore=pore,
        silicon=silicon,
        cbd=cbd,
        silicon_low=float(silicon_low),
        silicon_high=float(silicon_high),
        core_low=float(core_low),
        cbd_low=float(cbd_low),
        cbd_high=float(cbd_high),
        solid=solid,
        edge_sigma_voxels=sigma,
        core_radius_voxels=radius,
        grow_voxels=grow,
        cbd_open_voxels=cbd_open,
        smallest_radius_voxels=SMALLEST_SHARE * lo,
        core_smallest_voxels=CORE_SHARE * lo,
        sei_low=float((pore + silicon_low) / 2),
        modes=tuple(float(m) for m in modes),
        scores=tuple(float(s) for s in scores),
    )
