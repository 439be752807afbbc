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
5. **Surface.** Silicon's cores (its band, less the crests of thin bright
   films (:func:`film_crests`), opened) are eroded into seeds,
   so that no blurred SEI between silicon and a brighter CBD stays in them,
   and grown back (:func:`grow_silicon`) through voxels above
   :data:`EDGE_SHARE` of the way from pore to silicon whose grey level does
   not rise away from the seeds: growth stops at the dip of an SEI or gap
   before a brighter coat. The edge blur σ (voxels) is the silicon–pore step
   over the steepest gradient; rims are removed with balls of about that
   radius. Objects under the prior's size, or too thin to hold a ball of
   half its smallest radius (the blurred rim of a CBD film), are not
   particles. The CBD boundary is at the half-height of CBD and pore.

:func:`calibrate` does this on a crop of at most :data:`CALIBRATION_EDGE`
voxels per axis held in memory (a reduction of the volume, DESIGN.md
principle 2); :func:`debond.pipeline.segment.segment` then applies the
:class:`Levels` block by block.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any

import cc3d
import edt
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
    "field_of_view",
    "film_crests",
    "flat_modes",
    "grow_silicon",
    "outward_slope",
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
#: Silicon's surface lies this share of the way from the pore level up to
#: silicon's: the half-height of a bare silicon–pore edge (0.5), moved up by
#: the thin SEI shell that blurs into it (measured on the family of test scans,
#: README "Segmentation").
EDGE_SHARE = 0.58
#: Silicon stops growing where the grey level rises away from it by more than
#: this share of the steepest silicon–pore slope (a brighter phase's edge).
RISE_SHARE = 0.3
#: A particle holds a ball of this share of the prior's smallest radius
#: (an ellipsoid of aspect 1.5 holds 0.76 of its equivalent radius).
INSCRIBED_SHARE = 0.5
#: A film crest curves across faster than this share of silicon's step per
#: voxel² (in silicon's band on the family of test scans and the demo, 90 %
#: of the particles' voxels lie above −0.08, the median of the others' at
#: −0.05 to −0.26) ...
FILM_CURVATURE = 0.1
#: ... and along at most this share of that (a small particle is curved
#: along every axis alike).
FILM_FLATNESS = 0.3
#: How far :func:`film_crests` looks: its Hessian's two Gaussian-derivative
#: passes reach 3 voxels each (:func:`hessian`).
CREST_REACH_VOXELS = 6
#: Voxels whose Hessian eigenvalues :func:`film_crests` computes at once.
EIGEN_CHUNK_VOXELS = 2**12
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
        Ball radii: opening of silicon's band, erosion of its cores into
        seeds (silicon grows back at most twice as far), opening of CBD where
        silicon edges pass through its range (0: none).
    rise_per_voxel : float
        Silicon does not grow where the grey level rises away from its seeds
        by more than this, 1/µm per voxel.
    smallest_radius_voxels : float
        Silicon objects of a smaller equivalent radius are not particles.
    inscribed_radius_voxels : float
        Nor are objects holding no ball of this radius.
    seed_smallest_voxels : float
        Seeds of a smaller equivalent radius are not grown.
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
    rise_per_voxel: float
    cbd_open_voxels: int
    smallest_radius_voxels: float
    inscribed_radius_voxels: float
    core_smallest_voxels: float
    seed_smallest_voxels: float
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
        # film crests, opening, erosion into seeds, growth (the slope's
        # derivative reaches 4 voxels), then whole small objects and the CBD opening
        opened = CREST_REACH_VOXELS + 2 * self.core_radius_voxels + 3 * self.grow_voxels + 4
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


def field_of_view(n_y: int, n_x: int) -> NDArray[np.bool_]:
    """The reconstruction circle of a (n_y, n_x) slice, less its outermost voxel.

    FBP and SIRT fill the circle the detector sees at every angle, not the
    corners.
    """
    y, x = np.mgrid[:n_y, :n_x]
    radius = (min(n_y, n_x) - 1) / 2
    return np.asarray(np.hypot(y - (n_y - 1) / 2, x - (n_x - 1) / 2) <= radius - 1)


def sample_slices(volume: NDArray[np.floating], solid: float) -> NDArray[np.bool_]:
    """The imaged sample: per z-slice, the convex hull of the voxels above `solid`.

    A pillar is convex in every slice, and the pores at its surface belong to
    it (they hold the same filling as those inside, which a grey level cannot
    tell from the air). Specks (a voxel opened away) do not count.
    """
    circle = field_of_view(*volume.shape[1:])
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
    mask: NDArray[np.bool_],
    radius_voxels: float,
    *,
    inscribed_voxels: float = 0.0,
    keep_faces: bool | tuple[int, ...] = False,
) -> NDArray[np.bool_]:
    """`mask` without its 6-connected components smaller than a particle.

    A component goes when its equivalent radius is under `radius_voxels`, or
    when the largest ball it contains has a radius under `inscribed_voxels`:
    a thin shell (the partial-volume rim of a bright phase, a blurred thin CBD
    film) can hold as many voxels as a particle but no ball of its size.

    With `keep_faces`, components touching the first or last slice along the
    axes it names (True: axis 0, the z-slices) are kept: in a block whose halo
    is deeper than such an object, a small one never does.
    """
    labels, n = cc3d.connected_components(mask, connectivity=6, return_N=True)
    if n == 0:
        return mask
    small = np.bincount(labels.ravel()) < 4 / 3 * np.pi * radius_voxels**3
    if inscribed_voxels > 0:
        depth = edt.edt(mask)
        deepest = ndimage.maximum(depth, labels, np.arange(n + 1))
        small |= np.asarray(deepest) < inscribed_voxels
    small[0] = False
    for axis in _face_axes(keep_faces):
        small[np.unique(np.take(labels, [0, -1], axis=axis))] = False
    return np.asarray(mask & ~small[labels])


def _face_axes(keep_faces: bool | tuple[int, ...]) -> tuple[int, ...]:
    """The axes whose faces keep their components: True is axis 0, False none."""
    if isinstance(keep_faces, bool):
        return (0,) if keep_faces else ()
    return tuple(keep_faces)


def silicon_cores(
    band: NDArray[np.bool_],
    radius: int,
    smallest_voxels: float,
    *,
    keep_faces: bool | tuple[int, ...] = False,
) -> NDArray[np.bool_]:
    """Silicon's grey band opened by a ball of `radius` (partial-volume rims go), without
    the cores of equivalent radius under `smallest_voxels` (rims that survived)."""
    core = ndimage.binary_opening(band, ball(radius))
    return drop_small(core, smallest_voxels, keep_faces=keep_faces)


def film_crests(volume: NDArray[np.floating], step: float) -> NDArray[np.bool_]:
    """Voxels on the crest of a thin bright film: curved steeply across, flat along.

    A CBD coat thinner than the blur peaks near silicon's grey level, and its
    flanks pass through silicon's band; a particle, even a small one, is a
    blob (curved along every axis) or a plateau (curved along none). With the
    Hessian's eigenvalues λ₁ ≤ λ₂ ≤ λ₃ (:func:`hessian`, σ = 1 voxel), a
    crest has λ₁ < −:data:`FILM_CURVATURE` · `step` and λ₂ > :data:`FILM_FLATNESS` · λ₁.

    Parameters
    ----------
    volume : (z, y, x) ndarray
        Denoised attenuation, 1/µm.
    step : float
        Silicon level minus pore level, 1/µm.

    Returns
    -------
    (z, y, x) ndarray of bool
        Depends on the voxels within :data:`CREST_REACH_VOXELS` of each voxel.
    """
    components = [h.ravel() for h in hessian(volume)]
    crests = np.empty(volume.size, dtype=bool)
    for start in range(0, volume.size, EIGEN_CHUNK_VOXELS):
        part = slice(start, start + EIGEN_CHUNK_VOXELS)
        lowest, middle = lower_eigenvalues(*(h[part] for h in components))
        crests[part] = (lowest < -FILM_CURVATURE * abs(step)) & (middle > FILM_FLATNESS * lowest)
    return crests.reshape(volume.shape)


def lower_eigenvalues(
    zz: NDArray[np.floating],
    zy: NDArray[np.floating],
    zx: NDArray[np.floating],
    yy: NDArray[np.floating],
    yx: NDArray[np.floating],
    xx: NDArray[np.floating],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The lowest and middle eigenvalues of symmetric 3 × 3 matrices, in closed form.

    Smith's trigonometric solution of the characteristic cubic, in float64:
    with q the trace over 3 and p the deviator's norm over √6, the
    eigenvalues are q + 2p cos(φ + 2πk/3), φ = arccos(det((A − qI)/p)/2)/3.
    ``numpy.linalg.eigvalsh`` gives the same to 10⁻⁷ of the largest
    eigenvalue at about a tenth of the speed.

    Parameters
    ----------
    zz, zy, zx, yy, yx, xx : (n,) arrays
        The upper triangle of each matrix (:func:`hessian`'s order).

    Returns
    -------
    lowest, middle : (n,) float64 arrays
    """
    zz, zy, zx, yy, yx, xx = (np.asarray(a, dtype=np.float64) for a in (zz, zy, zx, yy, yx, xx))
    q = (zz + yy + xx) / 3.0
    dz, dy, dx = zz - q, yy - q, xx - q
    off = zy * zy + zx * zx + yx * yx
    p = np.sqrt((dz * dz + dy * dy + dx * dx + 2.0 * off) / 6.0)
    flat = p == 0.0  # a multiple of the identity: three equal eigenvalues
    scale = np.where(flat, 1.0, p)
    det = dz * (dy * dx - yx * yx) - zy * (zy * dx - yx * zx) + zx * (zy * yx - dy * zx)
    half = np.clip(det / (2.0 * scale**3), -1.0, 1.0)
    phi = np.arccos(half) / 3.0
    highest = q + 2.0 * p * np.cos(phi)
    lowest = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    return lowest, 3.0 * q - highest - lowest


def hessian(volume: NDArray[np.floating], sigma: float = 1.0) -> list[NDArray[np.float32]]:
    """Second derivatives of `volume` at scale `sigma`, as two Gaussian first derivatives.

    Each pass is a first Gaussian derivative of σ/√2 along one axis and a
    Gaussian of σ/√2 along the others, truncated at 4 σ/√2 (3 voxels at σ = 1),
    with zeros outside the volume: ``skimage.feature.hessian_matrix(volume,
    sigma, use_gaussian_derivatives=True)``, whose kernels reach 71 voxels for
    weights under 10⁻⁶ of their peak, within 10⁻⁵ of its largest value. Two passes reach
    :data:`CREST_REACH_VOXELS` at σ = 1, which keeps a block's halo exact.

    Parameters
    ----------
    volume : (z, y, x) ndarray
    sigma : float
        Scale, voxels.

    Returns
    -------
    list of six (z, y, x) float32 arrays
        H_zz, H_zy, H_zx, H_yy, H_yx, H_xx.
    """
    image = np.asarray(volume, dtype=np.float32)
    options: dict[str, Any] = {"sigma": sigma / math.sqrt(2), "mode": "constant", "truncate": 4.0}
    axes = range(image.ndim)
    orders = [tuple(int(a == d) for a in axes) for d in axes]
    components = []
    for first in axes:
        gradient = ndimage.gaussian_filter(image, order=orders[first], **options)
        components += [
            ndimage.gaussian_filter(gradient, order=orders[second], **options)
            for second in axes[first:]
        ]
    return components


def outward_slope(volume: NDArray[np.floating], seeds: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Slope of `volume` along the direction away from `seeds`, grey units per voxel.

    The direction is the gradient of the distance to the seeds; the slope is
    the Gaussian derivative (σ = 1 voxel) projected on it. Positive where the
    grey level rises away from the seeds.
    """
    away = np.gradient(edt.edt(~seeds))  # float32
    norm = np.sqrt(sum(a * a for a in away)) + 1e-9
    slope = np.zeros(volume.shape, dtype=np.float32)
    for axis, direction in enumerate(away):
        order = tuple(int(i == axis) for i in range(volume.ndim))
        slope += ndimage.gaussian_filter(volume, 1.0, order=order) * (direction / norm)
    return slope


def grow_silicon(
    volume: NDArray[np.floating],
    cores: NDArray[np.bool_],
    levels: Levels,
    *,
    keep_faces: bool | tuple[int, ...] = True,
) -> NDArray[np.bool_]:
    """Silicon grown from its cores to its surface.

    The seeds are the cores eroded by ``levels.grow_voxels`` (a core can hold
    a blurred SEI between silicon and a brighter CBD, which no grey level
    tells from silicon), less those under ``levels.seed_smallest_voxels``
    (what is left of a brighter phase's rim: a particle at the prior's
    smallest radius leaves a seed twice as large). From them, silicon grows at most twice that far,
    through voxels within [silicon_low, silicon_high] whose grey level does
    not rise away from the seeds by more than ``levels.rise_per_voxel``: it
    stops at the dip of an SEI or gap before a brighter coat. Seeds touching
    the faces named by `keep_faces` (:func:`drop_small`) are kept whatever their size.
    """
    seeds = ndimage.binary_erosion(cores, ball(levels.grow_voxels))
    seeds = drop_small(seeds, levels.seed_smallest_voxels, keep_faces=keep_faces)
    if not seeds.any():
        return seeds
    passable = (volume >= levels.silicon_low) & (volume <= levels.silicon_high)
    passable &= ndimage.binary_dilation(seeds, ball(2 * levels.grow_voxels))
    passable &= outward_slope(volume, seeds) <= levels.rise_per_voxel
    return np.asarray(ndimage.binary_propagation(seeds & passable, mask=passable))


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
    circle = np.broadcast_to(field_of_view(*volume.shape[1:]), volume.shape)
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
    if math.isfinite(silicon_high):
        # A brighter phase caps the band: make it no wider below silicon than
        # above, so the blurred edges of that phase, which cross the whole
        # band on their way down to the pore, leave rims thin enough to open
        # away (at weak contrast the band's lower half is most of such an edge).
        core_low = max(core_low, 2 * silicon - silicon_high)
    band = (volume > core_low) & (volume <= silicon_high) & inside
    core = silicon_cores(band, radius, CORE_SHARE * lo)
    sigma = _edge_sigma(volume, core, silicon - pore)
    wider = int(np.clip(math.ceil(1.2 * sigma), 1, max(1, int(0.5 * lo))))
    if wider > radius:  # rims as thick as the blur: open with a ball as wide
        radius = wider
        core = silicon_cores(band, radius, CORE_SHARE * lo)
    # Seeds are the cores eroded by `grow`; a particle at the prior's smallest
    # radius must keep one.
    grow = int(min(math.ceil(1.5 * sigma), max(1, math.floor(0.5 * lo))))
    silicon_low = pore + EDGE_SHARE * (silicon - pore)
    rise = RISE_SHARE * abs(silicon - pore) / (math.sqrt(2 * math.pi) * sigma)
    inscribed = max(1.5, INSCRIBED_SHARE * lo)
    provisional = Levels(
        pore=pore,
        silicon=silicon,
        cbd=math.nan,
        silicon_low=float(silicon_low),
        silicon_high=float(silicon_high),
        core_low=float(core_low),
        cbd_low=math.nan,
        cbd_high=math.nan,
        solid=solid,
        edge_sigma_voxels=sigma,
        core_radius_voxels=radius,
        grow_voxels=grow,
        rise_per_voxel=float(rise),
        cbd_open_voxels=0,
        smallest_radius_voxels=SMALLEST_SHARE * lo,
        inscribed_radius_voxels=float(inscribed),
        core_smallest_voxels=CORE_SHARE * lo,
        seed_smallest_voxels=max(1.0, 0.5 * (lo - grow)),
        sei_low=float((pore + silicon_low) / 2),
        modes=tuple(float(m) for m in modes),
        scores=tuple(float(s) for s in scores),
    )
    grown = grow_silicon(volume, core, provisional)
    away = inside & ~ndimage.binary_dilation(grown, ball(2))
    cbd = float(np.percentile(volume[away], 99.5)) if away.any() else top
    return dataclasses.replace(
        provisional,
        cbd=cbd,
        cbd_low=float((cbd + pore) / 2),
        cbd_high=float((cbd + silicon) / 2 if cbd < silicon else math.inf),
        cbd_open_voxels=max(1, math.ceil(sigma)) if cbd < silicon else 0,
    )
