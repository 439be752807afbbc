"""Independent test scans: a family of scan variants with analytic truth, and a scorer.

The image stages of debond are tuned on :mod:`debond.synth`. The scans here
are drawn differently on purpose, so that a stage that only learned synth's
habits shows it: other attenuation orders (CBD brightest, silicon brightest,
graphite nearly equal to pore, silicon close to SEI), point-spread blur,
photon counts from 2,000 to 50,000 per pixel, zingers and miscalibrated
detector columns (rings), voxels from 25 to 80 nm, and particles that are
spheres, ellipsoids, touching pairs and triples, cracked, or leaning on
graphite, each with an SEI shell and a CBD coat beyond a pore gap that opens
all round, on a spherical cap or on one half only.

A scene is a set of analytic solids in µm (z, y, x), painted in layers, each
overwriting the ones before::

    CBD       blobs, struts between blobs (a network) and each particle's coat
    graphite  free bodies and bodies a particle leans on
    pore      each particle's gap (where it is open; elsewhere the coat
              touches the SEI)
    SEI       each particle's shell
    silicon   each particle (the owner of a silicon point is its particle)
    pore      cracks through silicon and SEI

The same layers answer "which phase is at this point" for any points
(:func:`phase_at`) and render voxel grids (:func:`render`), so the rendered
volume and the truth gaps describe one geometry. What a beamline would record
is computed from the attenuation volume (supersampled 2 × 2 × 2, so edges
carry partial volume, then blurred): parallel-beam projections with ASTRA's
CPU projector slice by slice (:func:`debond.synth.project`), Beer–Lambert
attenuation of a flat field with Poisson noise, hot pixels and columns whose
gain differs from the flats', in Data Exchange HDF5.

Truth gaps follow the measure stage's ray definition
(:func:`debond.pipeline.measure.ray_gaps_kernel`) on the analytic shapes:
rays in the same Fibonacci directions leave the true centre; the gap of a ray
is the distance from where it leaves its silicon to where it meets the CBD;
rays that meet graphite, another particle's silicon, the outside of the
sample or of the volume before the CBD, re-enter their particle, or find no
CBD within the maximum length do not count; a particle's gap is the mean of
its valid rays.

:func:`score_run` compares a ``debond run`` of a written scan with its truth.

Phase codes (DESIGN.md): 0 pore, 1 graphite, 2 CBD, 3 silicon, 4 SEI.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial.transform import Rotation

from debond.campaign import load_campaign
from debond.campaign_file import dump_campaign
from debond.pipeline.levels import field_of_view
from debond.pipeline.measure import fibonacci_directions
from debond.storage import open_volume
from debond.storage.tables import usable_rows
from debond.synth import project, projection_geometry

__all__ = [
    "GAP_KINDS",
    "SHAPE_KINDS",
    "VARIANTS",
    "Layer",
    "Particle",
    "ScanError",
    "Scene",
    "Score",
    "Variant",
    "attenuation_volume",
    "detector_counts",
    "draw_scene",
    "phase_at",
    "render",
    "sample_mask",
    "score",
    "score_run",
    "truth_gaps",
    "truth_table",
    "variant",
    "write_data_exchange",
    "write_scan",
]

PORE, GRAPHITE, CBD, SILICON, SEI = 0, 1, 2, 3, 4
PHASE_NAMES = {PORE: "pore", GRAPHITE: "graphite", CBD: "cbd", SILICON: "silicon", SEI: "sei"}

#: How silicon particles come: alone (sphere, ellipsoid, cracked, on graphite) or in groups.
SHAPE_KINDS = ("sphere", "ellipsoid", "pair", "triple", "cracked", "on_graphite")
#: Where the pore gap opens: all round, on a spherical cap, on a half, nowhere.
GAP_KINDS = ("uniform", "cap", "half", "closed")

#: The sample's one id in a scan's campaign.
SAMPLE_ID = "scan"
#: Measure-stage defaults the truth gaps follow (campaign ``[measure]``).
N_RAYS = 256
MAX_RAY_LENGTH_UM = 3.0


class ScanError(ValueError):
    """A variant, scene or run that cannot be written or scored."""


# ------------------------------------------------------------------ variants


@dataclass(frozen=True)
class Variant:
    """Parameters of one kind of scan.

    Attributes
    ----------
    name : str
        Identifier (letters, digits, ``_``); names the campaign.
    description : str
        What the variant tests, one line.
    voxel_size_um : float
        Voxel edge, µm (0.02–0.1).
    attenuation_per_um : (5,) tuple of float
        X-ray attenuation of pore, graphite, CBD, silicon and SEI, 1/µm (air
        outside the sample: 0).
    shape : (int, int, int)
        Volume (z, y, x) in voxels, y = x (the detector's width), each ≤ 128.
    n_angles : int
        Projections over 180°.
    blur_sigma_vox : float
        Gaussian point-spread of the attenuation volume before projecting, voxels.
    photons : float
        Mean flat-field counts per detector pixel (Poisson noise).
    zingers_per_projection : float
        Mean number of hot pixels per projection (counts × 3–10).
    bad_columns : int
        Detector columns whose gain in the projections differs from the flats'
        by ± ``column_gain_error`` (rings in the reconstruction).
    column_gain_error : float
        Relative gain error of the bad columns.
    axis_shift_px : float
        Rotation axis off the detector centre, pixels.
    radius_um : (float, float)
        Range of the particles' equivalent radii, µm.
    sei_um : (float, float)
        Range of SEI thicknesses, µm.
    gap_um : (float, float)
        Range of pore gaps where the gap is open (beyond the SEI), µm.
    coat_um : float
        Thickness of the CBD coat beyond the gap, µm.
    aspect_max : float
        Largest ratio of an ellipsoid's longest to shortest semi-axis (≤ 1.5).
    groups : tuple of str
        The particle groups placed, one entry per group, from :data:`SHAPE_KINDS`
        (``pair`` and ``triple`` place 2 and 3 touching particles).
    gap_kinds : tuple of str
        Gap kinds from :data:`GAP_KINDS`, given to the particles in turn.
    graphite_bodies : int
        Free graphite bodies (besides those particles lean on).
    cbd_blobs : int
        CBD blobs; each is joined to its nearest neighbour by a strut.
    sample : {"pillar", "box"}
        A cylindrical pillar along z with air outside, or material filling
        the whole field of view (local tomography).

    The size prior of the campaign (when it takes one) is ``radius_um``.
    """

    name: str
    description: str
    voxel_size_um: float
    attenuation_per_um: tuple[float, float, float, float, float]
    shape: tuple[int, int, int] = (96, 96, 96)
    n_angles: int = 150
    blur_sigma_vox: float = 0.8
    photons: float = 10000.0
    zingers_per_projection: float = 0.0
    bad_columns: int = 0
    column_gain_error: float = 0.0
    axis_shift_px: float = 0.6
    radius_um: tuple[float, float] = (0.4, 0.8)
    sei_um: tuple[float, float] = (0.03, 0.08)
    gap_um: tuple[float, float] = (0.1, 0.25)
    coat_um: float = 0.25
    aspect_max: float = 1.0
    groups: tuple[str, ...] = ("sphere",) * 8
    gap_kinds: tuple[str, ...] = ("uniform",)
    graphite_bodies: int = 2
    cbd_blobs: int = 40
    sample: str = "pillar"

    def __post_init__(self) -> None:
        problems = []
        if not self.name.replace("_", "").isalnum():
            problems.append(f"name must be letters, digits and '_'; got {self.name!r}")
        if not 0.02 <= self.voxel_size_um <= 0.1:
            problems.append(f"voxel_size_um must lie in 0.02–0.1 µm; got {self.voxel_size_um}")
        if len(self.attenuation_per_um) != 5 or min(self.attenuation_per_um) < 0:
            problems.append(
                "attenuation_per_um must be 5 values ≥ 0 (pore, graphite, CBD, silicon, SEI; "
                f"1/µm); got {self.attenuation_per_um}"
            )
        if len(self.shape) != 3 or self.shape[1] != self.shape[2] or max(self.shape) > 128:
            problems.append(f"shape must be (z, n, n) with every edge ≤ 128; got {self.shape}")
        if min(self.shape) < 16:
            problems.append(f"shape must be at least 16 voxels on every edge; got {self.shape}")
        if self.photons < 100 or self.n_angles < 16:
            problems.append(
                f"photons must be ≥ 100 and n_angles ≥ 16; got {self.photons}, {self.n_angles}"
            )
        if not 0 <= self.blur_sigma_vox <= 3:
            problems.append(f"blur_sigma_vox must lie in 0–3 voxels; got {self.blur_sigma_vox}")
        for label, (lo, hi) in (
            ("radius_um", self.radius_um),
            ("sei_um", self.sei_um),
            ("gap_um", self.gap_um),
        ):
            if not 0 <= lo <= hi:
                problems.append(f"{label} must be a range 0 ≤ low ≤ high (µm); got {(lo, hi)}")
        if self.radius_um[0] <= 0:
            problems.append(f"radius_um must be > 0; got {self.radius_um}")
        if self.coat_um < self.voxel_size_um:
            problems.append(
                f"coat_um must be at least one voxel ({self.voxel_size_um} µm) so rays sampled "
                f"every quarter voxel cannot step over it; got {self.coat_um}"
            )
        if not 1.0 <= self.aspect_max <= 1.5:
            problems.append(f"aspect_max must lie in 1–1.5; got {self.aspect_max}")
        unknown = [g for g in self.groups if g not in SHAPE_KINDS]
        unknown += [g for g in self.gap_kinds if g not in GAP_KINDS]
        if unknown or not self.groups or not self.gap_kinds:
            problems.append(
                f"groups must be non-empty, from {SHAPE_KINDS}, and gap_kinds from {GAP_KINDS}; "
                f"got groups {self.groups}, gap_kinds {self.gap_kinds}"
            )
        if self.sample not in ("pillar", "box"):
            problems.append(f"sample must be 'pillar' or 'box'; got {self.sample!r}")
        if problems:
            raise ScanError(f"variant {self.name!r}: " + "; ".join(problems))

    @property
    def size_prior_um(self) -> tuple[float, float]:
        """Range of particle radii a campaign may be told to expect, µm."""
        return self.radius_um

    def attenuation(self) -> dict[int, float]:
        """Phase code → attenuation, 1/µm."""
        return dict(zip((PORE, GRAPHITE, CBD, SILICON, SEI), self.attenuation_per_um, strict=True))


#: The paper's order (CBD brightest) with other ratios: pore, graphite, CBD, silicon, SEI (1/µm).
_CBD_BRIGHT = (0.02, 0.07, 0.45, 0.20, 0.11)
_SILICON_BRIGHT = (0.03, 0.07, 0.15, 0.32, 0.10)
_GRAPHITE_AS_PORE = (0.060, 0.064, 0.26, 0.17, 0.11)
_SILICON_NEAR_SEI = (0.04, 0.07, 0.30, 0.16, 0.14)

_SPHERES = ("sphere",) * 8

VARIANTS: tuple[Variant, ...] = (
    Variant(
        "baseline_60nm",
        "paper-like contrast at 60 nm, spheres with uniform gaps, mild blur",
        0.06,
        (0.03, 0.06, 0.32, 0.18, 0.10),
        blur_sigma_vox=0.5,
        photons=20000,
        radius_um=(0.35, 0.75),
        groups=_SPHERES,
    ),
    Variant(
        "fine_25nm",
        "25 nm voxels, small particles (10–16 voxels), gaps open on a cap",
        0.025,
        _CBD_BRIGHT,
        radius_um=(0.25, 0.4),
        sei_um=(0.02, 0.04),
        gap_um=(0.05, 0.12),
        coat_um=0.1,
        groups=("sphere", "sphere", "ellipsoid", "sphere"),
        gap_kinds=("cap", "uniform"),
        graphite_bodies=1,
        cbd_blobs=15,
        aspect_max=1.3,
    ),
    Variant(
        "coarse_80nm",
        "80 nm voxels, large particles, touching pairs, gaps open on one half",
        0.08,
        _CBD_BRIGHT,
        blur_sigma_vox=0.7,
        photons=30000,
        zingers_per_projection=2.0,
        bad_columns=2,
        column_gain_error=0.03,
        radius_um=(0.6, 1.5),
        gap_um=(0.15, 0.35),
        coat_um=0.3,
        groups=("pair", "sphere", "sphere", "sphere", "sphere", "sphere"),
        gap_kinds=("half", "uniform"),
        cbd_blobs=30,
    ),
    Variant(
        "silicon_brightest",
        "silicon brighter than CBD (no staining), 50 nm",
        0.05,
        _SILICON_BRIGHT,
        radius_um=(0.3, 0.7),
        groups=("sphere", "ellipsoid") * 4,
        gap_kinds=("uniform", "cap"),
        aspect_max=1.4,
    ),
    Variant(
        "graphite_as_pore",
        "graphite nearly as absorbing as the pore filling; particles lean on graphite",
        0.06,
        _GRAPHITE_AS_PORE,
        radius_um=(0.35, 0.75),
        groups=("on_graphite", "on_graphite", "sphere", "sphere", "sphere", "sphere"),
        gap_kinds=("uniform", "half"),
        graphite_bodies=1,
    ),
    Variant(
        "silicon_near_sei",
        "SEI almost as absorbing as silicon (the surface is ill-defined), 40 nm",
        0.04,
        _SILICON_NEAR_SEI,
        zingers_per_projection=2.0,
        bad_columns=2,
        column_gain_error=0.03,
        radius_um=(0.3, 0.6),
        sei_um=(0.05, 0.1),
        gap_um=(0.08, 0.2),
        coat_um=0.15,
        groups=_SPHERES,
        gap_kinds=("uniform", "cap"),
    ),
    Variant(
        "heavy_blur",
        "point-spread σ = 1.5 voxel at 50 nm",
        0.05,
        (0.03, 0.06, 0.35, 0.19, 0.10),
        blur_sigma_vox=1.5,
        photons=40000,
        radius_um=(0.3, 0.7),
        groups=("sphere", "ellipsoid") * 4,
        gap_kinds=("uniform",),
        aspect_max=1.3,
    ),
    Variant(
        "low_dose",
        "2,000 photons per pixel at 40 nm",
        0.04,
        (0.03, 0.07, 0.35, 0.20, 0.11),
        photons=2000,
        blur_sigma_vox=0.6,
        radius_um=(0.3, 0.6),
        coat_um=0.15,
        groups=_SPHERES,
        gap_kinds=("uniform", "half"),
    ),
    Variant(
        "zingers_rings",
        "hot pixels in every projection and miscalibrated columns (rings), 60 nm",
        0.06,
        (0.03, 0.06, 0.32, 0.18, 0.10),
        photons=15000,
        zingers_per_projection=6.0,
        bad_columns=5,
        column_gain_error=0.05,
        axis_shift_px=1.3,
        radius_um=(0.35, 0.75),
        groups=_SPHERES,
        gap_kinds=("uniform", "cap"),
    ),
    Variant(
        "touching_clusters",
        "touching pairs and triples whose silicon meets, 50 nm",
        0.05,
        (0.03, 0.06, 0.35, 0.19, 0.10),
        photons=20000,
        radius_um=(0.25, 0.45),
        coat_um=0.18,
        groups=("triple", "pair", "pair", "triple", "sphere", "sphere"),
        gap_kinds=("uniform", "cap", "half"),
        cbd_blobs=30,
    ),
    Variant(
        "cracked",
        "particles with a thin planar crack from the surface past the centre, 45 nm",
        0.045,
        (0.03, 0.06, 0.33, 0.19, 0.10),
        photons=20000,
        blur_sigma_vox=0.6,
        radius_um=(0.4, 0.8),
        groups=("cracked", "cracked", "cracked", "sphere", "cracked", "sphere"),
        gap_kinds=("uniform", "half"),
    ),
    Variant(
        "ellipsoids",
        "ellipsoids of aspect up to 1.5 in random orientation, 35 nm",
        0.035,
        (0.03, 0.06, 0.36, 0.2, 0.11),
        radius_um=(0.25, 0.45),
        coat_um=0.15,
        gap_um=(0.07, 0.18),
        aspect_max=1.5,
        groups=("ellipsoid",) * 8,
        gap_kinds=("uniform", "cap"),
    ),
    Variant(
        "filled_field",
        "material fills the field of view (local tomography, no air), 70 nm",
        0.07,
        (0.03, 0.06, 0.32, 0.18, 0.10),
        photons=25000,
        radius_um=(0.45, 1.1),
        coat_um=0.25,
        gap_um=(0.14, 0.3),
        groups=("sphere", "sphere", "pair", "ellipsoid", "sphere", "sphere", "sphere"),
        gap_kinds=("uniform", "half"),
        aspect_max=1.4,
        sample="box",
    ),
    Variant(
        "low_contrast",
        "weak contrast between every phase, 5,000 photons, σ = 1.2 voxel, 30 nm",
        0.03,
        (0.05, 0.07, 0.14, 0.11, 0.085),
        photons=5000,
        blur_sigma_vox=1.2,
        radius_um=(0.25, 0.42),
        sei_um=(0.03, 0.05),
        gap_um=(0.06, 0.14),
        coat_um=0.12,
        groups=("sphere", "sphere", "ellipsoid", "sphere", "sphere"),
        gap_kinds=("uniform",),
        aspect_max=1.3,
        cbd_blobs=20,
    ),
    Variant(
        "open_pores",
        "pores not infiltrated: pore as transparent as the air around the pillar, 55 nm",
        0.055,
        (0.0, 0.07, 0.30, 0.18, 0.10),
        photons=50000,
        zingers_per_projection=2.0,
        bad_columns=2,
        column_gain_error=0.03,
        radius_um=(0.3, 0.75),
        groups=("sphere", "on_graphite", "sphere", "cracked", "sphere", "sphere", "ellipsoid"),
        gap_kinds=("uniform", "cap"),
        aspect_max=1.3,
    ),
)


def variant(name: str) -> Variant:
    """The variant of :data:`VARIANTS` called ``name``.

    Raises
    ------
    KeyError
        Naming the known variants.

    Examples
    --------
    >>> v = variant("cracked")
    >>> v.voxel_size_um, v.groups[0], v.size_prior_um
    (0.045, 'cracked', (0.4, 0.8))
    """
    for v in VARIANTS:
        if v.name == name:
            return v
    raise KeyError(f"no variant {name!r}; known: {', '.join(v.name for v in VARIANTS)}")


# ------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Particle:
    """A silicon particle with its SEI shell, pore gap and CBD coat; lengths in µm.

    The silicon is an ellipsoid of semi-axes ``axes`` along the columns of
    ``rotation`` (body axes in (z, y, x)). SEI, gap and coat are the
    ellipsoids of semi-axes ``axes + t`` for t = sei, sei + g(u) and
    sei + g(u) + coat, where u is the unit direction from the centre and
    g(u) = ``gap`` where the gap is open (``u · opening ≥ cos_open``), else 0
    (the CBD touches the SEI there).
    """

    centre: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3)
    axes: np.ndarray  # (3,)
    sei: float
    gap: float
    coat: float
    shape_kind: str
    gap_kind: str
    group: int
    opening: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    cos_open: float = -2.0  # ≤ −1: open all round
    #: crack: unit normal, offset of its mid-plane from the centre, half-width,
    #: and the direction it runs from the surface (it stops ``crack_depth`` short of the far side)
    crack_normal: np.ndarray | None = None
    crack_offset: float = 0.0
    crack_half_width: float = 0.0
    crack_from: np.ndarray | None = None
    crack_stop: float = 0.0

    @property
    def reach(self) -> float:
        """Radius of a sphere around the centre that holds the whole coat, µm."""
        return float(self.axes.max() + self.sei + self.gap + self.coat)

    def _rho(self, points: np.ndarray, extra: np.ndarray | float) -> np.ndarray:
        """Normalised ellipsoid radius of points (N, 3) for semi-axes ``axes + extra``."""
        local = (points - self.centre) @ self.rotation  # body coordinates
        extra = np.asarray(extra, dtype=np.float64)
        axes = self.axes + (extra[:, None] if extra.ndim else extra)
        return np.sqrt(np.sum((local / axes) ** 2, axis=-1))

    def open_gap(self, points: np.ndarray) -> np.ndarray:
        """Gap thickness g(u) at the directions of points (N, 3), µm."""
        if self.cos_open <= -1.0:
            return np.full(points.shape[0], self.gap)
        d = points - self.centre
        norm = np.linalg.norm(d, axis=-1)
        cosine = (d @ self.opening) / np.where(norm > 0, norm, 1.0)
        return np.where(cosine >= self.cos_open, self.gap, 0.0)

    def silicon(self, points: np.ndarray) -> np.ndarray:
        return self._rho(points, 0.0) <= 1.0

    def sei_body(self, points: np.ndarray) -> np.ndarray:
        return self._rho(points, self.sei) <= 1.0

    def gap_body(self, points: np.ndarray) -> np.ndarray:
        return self._rho(points, self.sei + self.open_gap(points)) <= 1.0

    def coat_body(self, points: np.ndarray) -> np.ndarray:
        return self._rho(points, self.sei + self.open_gap(points) + self.coat) <= 1.0

    def crack(self, points: np.ndarray) -> np.ndarray:
        """Points in the crack (inside the SEI's outer surface), bool (N,)."""
        if self.crack_normal is None or self.crack_from is None:
            return np.zeros(points.shape[0], dtype=bool)
        d = points - self.centre
        slab = np.abs(d @ self.crack_normal - self.crack_offset) <= self.crack_half_width
        reach = d @ self.crack_from >= -self.crack_stop
        return slab & reach & self.sei_body(points)


def _ellipsoid(
    centre: np.ndarray, rotation: np.ndarray, axes: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    def contains(points: np.ndarray) -> np.ndarray:
        local = (points - centre) @ rotation
        return np.sum((local / axes) ** 2, axis=-1) <= 1.0

    return contains


def _capsule(a: np.ndarray, b: np.ndarray, radius: float) -> Callable[[np.ndarray], np.ndarray]:
    axis = b - a
    length2 = max(float(axis @ axis), 1e-12)

    def contains(points: np.ndarray) -> np.ndarray:
        s = np.clip((points - a) @ axis / length2, 0.0, 1.0)
        nearest = a + s[:, None] * axis
        return np.sum((points - nearest) ** 2, axis=-1) <= radius * radius

    return contains


@dataclass(frozen=True)
class Layer:
    """One solid painted with one phase code (and owner) over what lies below.

    ``lo`` and ``hi`` bound the solid (µm, (z, y, x)); ``owner`` is the
    particle index for silicon, −1 otherwise.
    """

    code: int
    owner: int
    lo: np.ndarray
    hi: np.ndarray
    contains: Callable[[np.ndarray], np.ndarray]


@dataclass
class Scene:
    """The analytic geometry of one scan; lengths in µm, axes (z, y, x).

    Voxel ``i`` along an axis has its centre at ``i × voxel_size_um``; the
    volume spans ``0 … (n − 1) × voxel_size_um`` (``box_um``).
    """

    voxel_size_um: float
    shape: tuple[int, int, int]
    sample: str
    particles: list[Particle]
    graphite: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # centre, rotation, axes
    blobs: np.ndarray  # (K, 4): centre z, y, x, radius
    struts: np.ndarray  # (S, 7): a (3), b (3), radius

    @property
    def box_um(self) -> np.ndarray:
        return (np.asarray(self.shape, dtype=np.float64) - 1.0) * self.voxel_size_um

    @property
    def pillar_radius_um(self) -> float:
        return 0.45 * float(self.box_um[1])

    def in_sample(self, points: np.ndarray) -> np.ndarray:
        """True inside the sample (the pillar, or everywhere for a box), bool (N,)."""
        if self.sample == "box":
            return np.ones(points.shape[0], dtype=bool)
        axis = self.box_um[1:] / 2.0
        return np.sum((points[:, 1:] - axis) ** 2, axis=-1) <= self.pillar_radius_um**2

    def layers(self) -> list[Layer]:
        """The solids in painting order (module docstring)."""
        out: list[Layer] = []
        for centre_r in self.blobs:
            c, r = centre_r[:3], float(centre_r[3])
            out.append(Layer(CBD, -1, c - r, c + r, _ellipsoid(c, np.eye(3), np.full(3, r))))
        for s in self.struts:
            a, b, r = s[:3], s[3:6], float(s[6])
            out.append(
                Layer(CBD, -1, np.minimum(a, b) - r, np.maximum(a, b) + r, _capsule(a, b, r))
            )
        for p in self.particles:
            out.append(Layer(CBD, -1, p.centre - p.reach, p.centre + p.reach, p.coat_body))
        for c, rotation, axes in self.graphite:
            r = float(axes.max())
            out.append(Layer(GRAPHITE, -1, c - r, c + r, _ellipsoid(c, rotation, axes)))
        for p in self.particles:
            r = float(p.axes.max() + p.sei + p.gap)
            out.append(Layer(PORE, -1, p.centre - r, p.centre + r, p.gap_body))
        for p in self.particles:
            r = float(p.axes.max() + p.sei)
            out.append(Layer(SEI, -1, p.centre - r, p.centre + r, p.sei_body))
        for i, p in enumerate(self.particles):
            r = float(p.axes.max())
            out.append(Layer(SILICON, i, p.centre - r, p.centre + r, p.silicon))
        for p in self.particles:
            if p.crack_normal is not None:
                r = float(p.axes.max() + p.sei)
                out.append(Layer(PORE, -1, p.centre - r, p.centre + r, p.crack))
        return out


def phase_at(
    scene: Scene, points: np.ndarray, layers: Sequence[Layer] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Phase code and silicon owner at arbitrary points.

    Parameters
    ----------
    scene : Scene
    points : (N, 3) ndarray
        Positions (z, y, x), µm.
    layers : sequence of Layer, optional
        The layers to paint (default all of ``scene.layers()``); pass a subset
        near the points to save time.

    Returns
    -------
    codes : (N,) ndarray of uint8
        Phase codes; pore outside the sample.
    owner : (N,) ndarray of int64
        Index of the particle whose silicon holds the point, −1 elsewhere.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    codes = np.zeros(points.shape[0], dtype=np.uint8)
    owner = np.full(points.shape[0], -1, dtype=np.int64)
    for layer in scene.layers() if layers is None else layers:
        near = np.flatnonzero(np.all((points >= layer.lo) & (points <= layer.hi), axis=1))
        if near.size == 0:
            continue
        hit = near[layer.contains(points[near])]
        codes[hit] = layer.code
        owner[hit] = layer.owner
    outside = ~scene.in_sample(points)
    codes[outside] = PORE
    owner[outside] = -1
    return codes, owner


def render(scene: Scene, supersample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Phase codes and silicon owners on a grid of ``supersample``³ points per voxel.

    Parameters
    ----------
    scene : Scene
    supersample : int
        Points per voxel edge (1: the voxel centres). Sub-voxel points sit at
        ``(i + (j + 0.5)/s − 0.5) × voxel`` µm, j = 0 … s − 1.

    Returns
    -------
    codes : (s·Z, s·Y, s·X) ndarray of uint8
    owner : (s·Z, s·Y, s·X) ndarray of int32
        Particle index (the truth label − 1) where silicon, −1 elsewhere.
    """
    s = int(supersample)
    if s < 1:
        raise ScanError(f"supersample must be an integer ≥ 1; got {supersample!r}")
    spacing = scene.voxel_size_um / s
    start = (0.5 / s - 0.5) * scene.voxel_size_um
    shape = tuple(n * s for n in scene.shape)
    codes = np.zeros(shape, dtype=np.uint8)
    owner = np.full(shape, -1, dtype=np.int32)
    for layer in scene.layers():
        low = np.maximum(np.floor((layer.lo - start) / spacing).astype(int), 0)
        high = np.minimum(np.ceil((layer.hi - start) / spacing).astype(int) + 1, shape)
        if np.any(high <= low):
            continue
        axes = [start + np.arange(low[a], high[a]) * spacing for a in range(3)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        inside = layer.contains(grid).reshape(tuple(high - low))
        region = tuple(slice(low[a], high[a]) for a in range(3))
        codes[region][inside] = layer.code
        owner[region][inside] = layer.owner
    axis = scene.box_um[1:] / 2.0
    y = start + np.arange(shape[1]) * spacing - axis[0]
    x = start + np.arange(shape[2]) * spacing - axis[1]
    if scene.sample == "pillar":
        outside = (y[:, None] ** 2 + x[None, :] ** 2) > scene.pillar_radius_um**2
        codes[:, outside] = PORE
        owner[:, outside] = -1
    return codes, owner


def sample_mask(scene: Scene, supersample: int = 1) -> np.ndarray:
    """(s·Y, s·X) bool: inside the sample, per z-slice (the same for every slice)."""
    s = int(supersample)
    spacing = scene.voxel_size_um / s
    start = (0.5 / s - 0.5) * scene.voxel_size_um
    n = scene.shape[1] * s
    if scene.sample == "box":
        return np.ones((n, n), dtype=bool)
    c = scene.box_um[1] / 2.0
    y = start + np.arange(n) * spacing - c
    return np.asarray(y[:, None] ** 2 + y[None, :] ** 2 <= scene.pillar_radius_um**2)


# -------------------------------------------------------------- drawing


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _particle(
    rng: np.random.Generator,
    variant: Variant,
    centre: np.ndarray,
    radius: float,
    shape_kind: str,
    gap_kind: str,
    group: int,
    *,
    sphere: bool,
) -> Particle:
    """One particle of equivalent radius ``radius`` (µm) at ``centre``."""
    rotation = Rotation.random(random_state=rng).as_matrix()
    if sphere or variant.aspect_max <= 1.0:
        axes = np.full(3, radius)
    else:
        aspect = rng.uniform(1.15, variant.aspect_max) if variant.aspect_max > 1.15 else 1.0
        middle = rng.uniform(1.0, aspect)
        ratios = np.array([aspect, middle, 1.0])
        axes = radius * ratios / np.cbrt(np.prod(ratios))  # same volume as the sphere
    sei = rng.uniform(*variant.sei_um)
    gap = 0.0 if gap_kind == "closed" else rng.uniform(*variant.gap_um)
    cos_open = {"uniform": -2.0, "closed": -2.0, "half": 0.0}.get(gap_kind)
    if cos_open is None:  # cap: opening half-angle 40–75°
        cos_open = math.cos(math.radians(rng.uniform(40.0, 75.0)))
    extra: dict[str, Any] = {}
    if shape_kind == "cracked":
        normal = _unit(rng)
        along = _unit(rng)
        along -= (along @ normal) * normal
        along /= np.linalg.norm(along)
        extra = {
            "crack_normal": normal,
            "crack_offset": float(rng.uniform(0.1, 0.3) * radius),
            "crack_half_width": max(0.5 * variant.voxel_size_um, 0.02 * radius),
            "crack_from": along,
            "crack_stop": float(0.5 * radius),
        }
    return Particle(
        centre=np.asarray(centre, dtype=np.float64),
        rotation=rotation,
        axes=axes,
        sei=float(sei),
        gap=float(gap),
        coat=variant.coat_um,
        shape_kind=shape_kind,
        gap_kind=gap_kind,
        group=group,
        opening=_unit(rng),
        cos_open=float(cos_open),
        **extra,
    )


def _group_offsets(rng: np.random.Generator, radii: np.ndarray) -> np.ndarray:
    """Centres (relative, µm) of touching spheres: each touches the one before.

    Centres lie 0.97 × the sum of radii apart, so the silicon meets in a small
    lens (a contact, not a point).
    """
    offsets = [np.zeros(3)]
    for k in range(1, radii.size):
        for _ in range(100):
            candidate = offsets[k - 1] + _unit(rng) * 0.97 * (radii[k - 1] + radii[k])
            clear = all(
                np.linalg.norm(candidate - offsets[j]) >= 0.97 * (radii[j] + radii[k])
                for j in range(k - 1)
            )
            if clear:
                break
        offsets.append(candidate)
    return np.asarray(offsets)


def draw_scene(variant: Variant, seed: int = 0) -> Scene:
    """Draw the analytic geometry of one scan of ``variant``.

    Particle groups are placed largest first, by random sequential addition
    of the spheres that hold their coats, inside the sample and one coat
    away from the volume's faces; graphite bodies and CBD blobs follow.

    Parameters
    ----------
    variant : Variant
    seed : int
        The same seed draws the same scene.

    Returns
    -------
    Scene

    Raises
    ------
    ScanError
        If not a single particle group fits in the volume.
    """
    rng = np.random.default_rng([seed, sum(map(ord, variant.name))])
    voxel = variant.voxel_size_um
    box = (np.asarray(variant.shape, dtype=np.float64) - 1.0) * voxel
    scene = Scene(voxel, variant.shape, variant.sample, [], [], np.zeros((0, 4)), np.zeros((0, 7)))
    axis = box[1:] / 2.0
    margin_um = 2.0 * voxel

    def inside(centre: np.ndarray, reach: float) -> bool:
        if np.any(centre - reach < 0) or np.any(centre + reach > box):
            return False
        if variant.sample == "pillar":
            return bool(np.linalg.norm(centre[1:] - axis) + reach <= scene.pillar_radius_um)
        return True

    spheres: list[tuple[np.ndarray, float]] = []  # placed (centre, reach): nothing overlaps

    def free(centre: np.ndarray, reach: float) -> bool:
        return all(np.linalg.norm(centre - c) >= reach + r for c, r in spheres)

    plans = []
    for index, kind in enumerate(variant.groups):
        n = {"pair": 2, "triple": 3}.get(kind, 1)
        radii = rng.uniform(*variant.radius_um, n)
        plans.append((index, kind, radii))
    plans.sort(key=lambda plan: -plan[2].sum())
    stretch = variant.aspect_max ** (2 / 3)  # longest semi-axis / equivalent radius
    gap_cycle = 0
    for group, kind, radii in plans:
        offsets = _group_offsets(rng, radii)
        offsets -= offsets.mean(axis=0)
        spread = np.linalg.norm(offsets, axis=1)
        # Silicon and SEI stay two voxels inside the volume and the sample; the
        # gaps of different groups never overlap (their coats may merge).
        extent = float(np.max(spread + radii * stretch + variant.sei_um[1])) + margin_um
        core = float(np.max(spread + radii * stretch + variant.sei_um[1] + variant.gap_um[1]))
        for _ in range(400):
            centre = rng.uniform(extent, np.maximum(extent, box - extent))
            if inside(centre, extent) and free(centre, core):
                break
        else:
            continue
        spheres.append((centre, core))
        for k, radius in enumerate(radii):
            gap_kind = variant.gap_kinds[gap_cycle % len(variant.gap_kinds)]
            gap_cycle += 1
            new = _particle(
                rng,
                variant,
                centre + offsets[k],
                float(radius),
                kind,
                gap_kind,
                group,
                sphere=kind in ("sphere", "pair", "triple", "on_graphite"),
            )
            scene.particles.append(new)
        if kind == "on_graphite":
            # An oblate graphite body whose short axis points at the particle,
            # touching the outer surface of its coat.
            direction = _unit(rng)
            axes = np.array([0.5, 1.0, 1.0]) * rng.uniform(1.4, 2.0) * float(radii[0])
            second = np.cross(direction, _unit(rng))
            second /= np.linalg.norm(second)
            rotation = np.stack([direction, second, np.cross(direction, second)], axis=1)
            g_centre = new.centre + direction * (new.reach + axes[0])
            scene.graphite.append((g_centre, rotation, axes))
            spheres.append((g_centre, float(axes.max())))  # later groups stay clear of it
    if not scene.particles:
        raise ScanError(
            f"variant {variant.name!r}: no particle group fits in {variant.shape} voxels of "
            f"{voxel} µm; use a larger volume or smaller radius_um"
        )

    # Free graphite bodies: oblate, random orientation, clear of every gap.
    for _ in range(variant.graphite_bodies):
        axes = np.array([0.45, 1.0, 1.0]) * rng.uniform(0.2, 0.3) * box[1]
        for _ in range(200):
            centre = rng.uniform(0, 1, 3) * box
            rotation = Rotation.random(random_state=rng).as_matrix()
            if all(
                np.linalg.norm((p.centre - centre) @ rotation / (axes + p.reach - p.coat)) >= 1.0
                for p in scene.particles
            ):
                scene.graphite.append((centre, rotation, axes))
                break

    # CBD blobs anywhere in the sample (a particle's gap and graphite paint over
    # them), each joined to its nearest neighbour (blob or particle) by a strut.
    blob_r = rng.uniform(max(3 * voxel, 0.12), max(6 * voxel, 0.3), variant.cbd_blobs)
    blob_c = rng.uniform(0, 1, (variant.cbd_blobs, 3)) * box
    keep = scene.in_sample(blob_c)
    blobs = np.column_stack([blob_c[keep], blob_r[keep]])
    anchors = np.concatenate([blobs[:, :3], [p.centre for p in scene.particles]])
    struts = []
    for j, b in enumerate(blobs):
        distance = np.linalg.norm(anchors - b[:3], axis=1)
        distance[j] = np.inf
        nearest = anchors[int(np.argmin(distance))]
        struts.append([*b[:3], *nearest, max(1.5 * voxel, 0.5 * b[3])])
    scene.blobs = blobs
    scene.struts = np.asarray(struts, dtype=np.float64).reshape(-1, 7)
    return scene


# ------------------------------------------------------------- truth gaps


def _near_layers(scene: Scene, centre: np.ndarray, reach: float) -> list[Layer]:
    return [
        layer
        for layer in scene.layers()
        if np.all(layer.lo <= centre + reach) and np.all(layer.hi >= centre - reach)
    ]


def _bisect(
    test: Callable[[np.ndarray], np.ndarray],
    origin: np.ndarray,
    directions: np.ndarray,
    t_false: np.ndarray,
    t_true: np.ndarray,
    iterations: int,
) -> np.ndarray:
    """Where along each ray ``test`` switches, between t_false (False) and t_true (True)."""
    a, b = t_false.copy(), t_true.copy()
    for _ in range(iterations):
        middle = 0.5 * (a + b)
        hit = test(origin + directions * middle[:, None])
        b = np.where(hit, middle, b)
        a = np.where(hit, a, middle)
    return 0.5 * (a + b)


def truth_gaps(
    scene: Scene,
    index: int,
    directions: np.ndarray,
    *,
    max_length_um: float = MAX_RAY_LENGTH_UM,
    step_vox: float = 0.05,
    refine: int = 20,
) -> np.ndarray:
    """The gap along each ray of one particle, from its true centre, µm.

    The ray model of :func:`debond.pipeline.measure.ray_gaps_kernel` on the
    analytic phases: samples every ``step_vox`` voxels from the centre; the
    entry is the first sample in the particle's silicon, the surface the
    first sample after it outside, the CBD the first sample from there on in
    CBD; both crossings are refined by bisection on the analytic shapes
    (``refine`` halvings). A ray is invalid (NaN) when a sample from the
    entry up to the CBD lies outside the volume or the sample, in graphite or
    in another particle's silicon, when it re-enters its particle before the
    CBD, finds no CBD, or its gap exceeds ``max_length_um``.

    Parameters
    ----------
    scene : Scene
    index : int
        The particle (index into ``scene.particles``).
    directions : (n, 3) ndarray
        Unit vectors (z, y, x), e.g. :func:`~debond.pipeline.measure.fibonacci_directions`.
    max_length_um : float
        Longest gap counted, µm (the measure stage's ``max_ray_length_um``).
    step_vox : float
        Sampling step, voxels (≤ 0.05 keeps a crossing within 1/40 voxel
        before the bisection).
    refine : int
        Bisection steps on each crossing.

    Returns
    -------
    (n,) ndarray of float64
        Gaps in µm (≥ 0), NaN for invalid rays.

    Examples
    --------
    A sphere of 0.5 µm with 0.05 µm of SEI and a 0.15 µm gap open all round:
    every ray measures SEI and gap.

    >>> p = Particle(np.full(3, 1.2), np.eye(3), np.full(3, 0.5), 0.05, 0.15, 0.1,
    ...              "sphere", "uniform", 0)
    >>> scene = Scene(0.05, (49, 49, 49), "box", [p], [], np.zeros((0, 4)), np.zeros((0, 7)))
    >>> gaps = truth_gaps(scene, 0, fibonacci_directions(8))
    >>> bool(np.allclose(gaps, 0.2, atol=1e-4))
    True
    """
    if not 0 <= index < len(scene.particles):
        raise ScanError(f"index must be in 0 … {len(scene.particles) - 1}; got {index}")
    particle = scene.particles[index]
    centre = particle.centre
    step = step_vox * scene.voxel_size_um
    length = float(particle.axes.max()) + max_length_um + 2 * step
    layers = _near_layers(scene, centre, length)
    t = np.arange(math.ceil(length / step) + 1) * step
    directions = np.asarray(directions, dtype=np.float64)
    n_rays = directions.shape[0]
    gaps = np.full(n_rays, np.nan)
    box = scene.box_um

    def classify(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        codes, owner = phase_at(scene, points, layers)
        own = owner == index
        bad = (
            (codes == GRAPHITE)
            | ((codes == SILICON) & ~own)
            | ~scene.in_sample(points)
            | np.any((points < 0) | (points > box), axis=1)
        )
        return own, codes == CBD, bad

    # Rays in groups, so a group's samples stay below ~2 million points.
    per_pass = max(1, (1 << 21) // t.size)
    for first in range(0, n_rays, per_pass):
        d = directions[first : first + per_pass]
        points = centre + d[:, None, :] * t[None, :, None]
        own, cbd, bad = (a.reshape(d.shape[0], t.size) for a in classify(points.reshape(-1, 3)))
        steps = np.arange(t.size)
        entered = own.any(axis=1)
        k_in = own.argmax(axis=1)
        after = ~own & (steps > k_in[:, None])
        exited = entered & after.any(axis=1)
        k_out = np.maximum(after.argmax(axis=1), 1)
        hit = cbd & (steps >= k_out[:, None])
        found = exited & hit.any(axis=1)
        k_c = np.maximum(hit.argmax(axis=1), 1)
        before = (steps >= k_in[:, None]) & (steps < k_c[:, None])
        blocked = (bad & before).any(axis=1)
        again = (own & (steps > k_out[:, None]) & (steps < k_c[:, None])).any(axis=1)
        valid = found & ~blocked & ~again
        if not valid.any():
            continue
        rows = np.flatnonzero(valid)
        dv = d[rows]
        t_s = _bisect(
            lambda p: ~classify(p)[0], centre, dv, t[k_out[rows] - 1], t[k_out[rows]], refine
        )
        t_c = _bisect(lambda p: classify(p)[1], centre, dv, t[k_c[rows] - 1], t[k_c[rows]], refine)
        gap = np.maximum(t_c - t_s, 0.0)
        gap[gap > max_length_um] = np.nan
        gaps[first + rows] = gap
    return gaps


def _equivalent_radius(scene: Scene, index: int, rng: np.random.Generator, n: int) -> float:
    """(3V/4π)^(1/3) of the particle's own silicon (Monte Carlo in its bounding box), µm."""
    p = scene.particles[index]
    r = float(p.axes.max())
    points = p.centre + rng.uniform(-r, r, (n, 3))
    _, owner = phase_at(scene, points, _near_layers(scene, p.centre, r))
    volume = (owner == index).mean() * (2 * r) ** 3
    return float(np.cbrt(3.0 * volume / (4.0 * math.pi)))


def truth_table(
    scene: Scene,
    *,
    n_rays: int = N_RAYS,
    max_length_um: float = MAX_RAY_LENGTH_UM,
    step_vox: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per true particle: centre, equivalent radius, gap by the measure definition.

    Columns: ``sample, particle`` (1-based, the truth label), ``centroid_z_um,
    centroid_y_um, centroid_x_um`` (the true centre), ``radius_um``
    (equivalent radius of its silicon), ``gap_um`` (mean of the valid rays'
    gaps, silicon surface to CBD, SEI included; NaN without a valid ray),
    ``gap_std_um``, ``n_rays`` (valid rays), ``sei_um``, ``pore_gap_um`` (the
    drawn gap where it is open), ``shape_kind``, ``gap_kind``, ``group``,
    ``aspect`` (longest/shortest semi-axis).
    """
    directions = fibonacci_directions(int(n_rays))
    rng = np.random.default_rng(seed)
    rows = []
    for i, p in enumerate(scene.particles):
        gaps = truth_gaps(scene, i, directions, max_length_um=max_length_um, step_vox=step_vox)
        valid = gaps[np.isfinite(gaps)]
        rows.append(
            {
                "sample": SAMPLE_ID,
                "particle": i + 1,
                "centroid_z_um": p.centre[0],
                "centroid_y_um": p.centre[1],
                "centroid_x_um": p.centre[2],
                "radius_um": _equivalent_radius(scene, i, rng, 200_000),
                "gap_um": valid.mean() if valid.size else np.nan,
                "gap_std_um": valid.std() if valid.size else np.nan,
                "n_rays": int(valid.size),
                "sei_um": p.sei,
                "pore_gap_um": p.gap,
                "shape_kind": p.shape_kind,
                "gap_kind": p.gap_kind,
                "group": p.group,
                "aspect": float(p.axes.max() / p.axes.min()),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- writing


def attenuation_volume(scene: Scene, variant: Variant, supersample: int = 2) -> np.ndarray:
    """Attenuation (Z, Y, X) in 1/µm, float32: supersampled phases averaged, then blurred.

    Air (0) outside the sample; blur σ = ``variant.blur_sigma_vox`` voxels.
    """
    codes, _ = render(scene, supersample)
    table = np.asarray(variant.attenuation_per_um, dtype=np.float32)
    mu = table[codes]
    mu[:, ~sample_mask(scene, supersample)] = 0.0
    s = supersample
    z, y, x = scene.shape
    mu = mu.reshape(z, s, y, s, x, s).mean(axis=(1, 3, 5))
    if variant.blur_sigma_vox > 0:
        mu = ndimage.gaussian_filter(mu, variant.blur_sigma_vox, mode="nearest")
    return mu.astype(np.float32)


def detector_counts(
    mu: np.ndarray, variant: Variant, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the detector records of an attenuation volume.

    Parameters
    ----------
    mu : (Z, Y, X) ndarray
        Attenuation, 1/µm.
    variant : Variant
    rng : numpy.random.Generator

    Returns
    -------
    data : (angles, Z, X) float32
        Projections, counts (Poisson, darks added, hot pixels, bad columns).
    white, dark : (10, Z, X) float32
        Flat and dark fields, counts.
    theta_deg : (angles,) float64
        Angles over [0, 180).
    """
    n_z, _, n_x = mu.shape
    geometry = projection_geometry(variant.n_angles, n_x, variant.axis_shift_px)
    line = project(mu * np.float32(variant.voxel_size_um), geometry)  # (angles, z, columns)
    profile = 1.0 + 0.04 * np.cos(np.linspace(0.0, 2.5 * np.pi, n_x))
    flat = variant.photons * profile[None, :] * np.ones((n_z, 1))
    gain = np.ones(n_x)
    if variant.bad_columns:
        columns = rng.choice(np.arange(n_x // 8, n_x - n_x // 8), variant.bad_columns, False)
        gain[columns] += rng.choice([-1.0, 1.0], columns.size) * variant.column_gain_error
    dark_level = 100.0
    data = rng.poisson(flat[None] * gain[None, None, :] * np.exp(-line)).astype(np.float32)
    data += rng.poisson(dark_level, data.shape).astype(np.float32)
    n_hot = rng.poisson(variant.zingers_per_projection * variant.n_angles)
    if n_hot:
        where = tuple(rng.integers(0, s, n_hot) for s in data.shape)
        data[where] = (flat[where[1], where[2]] * rng.uniform(3.0, 10.0, n_hot)).astype(np.float32)
    white = rng.poisson(flat[None], (10, n_z, n_x)).astype(np.float32)
    white += rng.poisson(dark_level, white.shape).astype(np.float32)
    dark = rng.poisson(dark_level, (10, n_z, n_x)).astype(np.float32)
    theta = np.linspace(0.0, 180.0, variant.n_angles, endpoint=False)
    return data, white, dark, theta


def write_data_exchange(
    path: Path, data: np.ndarray, white: np.ndarray, dark: np.ndarray, theta_deg: np.ndarray
) -> Path:
    """Write projections, flats, darks and angles (degrees) as Data Exchange HDF5.

    The layout :func:`debond.pipeline.ingest.read_data_exchange` reads:
    ``exchange/data`` (angles, rows, columns), ``exchange/data_white``,
    ``exchange/data_dark`` and ``exchange/theta`` with ``units = "degrees"``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("implements", data="exchange:measurement")
        exchange = f.create_group("exchange")
        exchange.create_dataset("title", data="tomography_raw_projections")
        projections = exchange.create_dataset(
            "data", data=data, chunks=(1, data.shape[1], data.shape[2])
        )
        projections.attrs.update(axes="theta:y:x", description="transmission", units="counts")
        exchange.create_dataset("data_white", data=white).attrs.update(
            axes="theta_white:y:x", units="counts"
        )
        exchange.create_dataset("data_dark", data=dark).attrs.update(
            axes="theta_dark:y:x", units="counts"
        )
        exchange.create_dataset("theta", data=theta_deg).attrs["units"] = "degrees"
        f.create_group("measurement/sample").create_dataset("name", data=path.stem)
    return path


def _campaign_document(variant: Variant) -> dict[str, Any]:
    return {
        "campaign": {"name": variant.name, "store": "store.zarr"},
        "sample": [
            {
                "id": SAMPLE_ID,
                "cycles": 1,
                "txm": f"raw/{SAMPLE_ID}.h5",
                "voxel_size_um": variant.voxel_size_um,
            }
        ],
        # The size prior: the one thing besides the voxel size a user is asked
        # for; every stage parameter is left at its default.
        "material": {"silicon_radius_um": list(variant.size_prior_um)},
    }


_CAMPAIGN_NOTE = (
    "# An independent test scan (debond.scans). Only the voxel size and the\n"
    "# size prior are given. The truth is in truth/ beside this file.\n"
)


def write_scan(folder: str | os.PathLike[str], variant: Variant, *, seed: int = 0) -> Path:
    """Write one scan of ``variant``: raw projections, campaign file and truth.

    Parameters
    ----------
    folder : path
        Output folder (created): ``raw/scan.h5`` (Data Exchange),
        ``campaign.toml``, ``truth/particles.parquet`` (:func:`truth_table`),
        ``truth/phases/scan.npy`` ((Z, Y, X) uint8 phase codes at the voxel
        centres), ``truth/labels/scan.npy`` ((Z, Y, X) int32, particle 1..N
        where its silicon is, 0 elsewhere) and ``truth/scan.json`` (the
        variant, the seed, the size prior in µm, the rotation centre).
    variant : Variant
    seed : int
        The same seed writes the same files.

    Returns
    -------
    Path
        The campaign file.

    Examples
    --------
    >>> campaign = write_scan("scans/cracked", variant("cracked"))  # doctest: +SKIP
    >>> # debond run scans/cracked/campaign.toml, then:
    >>> score_run(campaign).silicon_dice  # doctest: +SKIP
    0.43...
    """
    out = Path(folder)
    truth = out / "truth"
    for sub in ("phases", "labels"):
        (truth / sub).mkdir(parents=True, exist_ok=True)
    scene = draw_scene(variant, seed)
    rng = np.random.default_rng([seed, 1, sum(map(ord, variant.name))])
    codes, owner = render(scene, 1)
    np.save(truth / "phases" / f"{SAMPLE_ID}.npy", codes)
    np.save(truth / "labels" / f"{SAMPLE_ID}.npy", (owner + 1).astype(np.int32))
    truth_table(scene, seed=seed).to_parquet(truth / "particles.parquet", index=False)
    data, white, dark, theta = detector_counts(attenuation_volume(scene, variant), variant, rng)
    write_data_exchange(out / "raw" / f"{SAMPLE_ID}.h5", data, white, dark, theta)
    facts = {
        "variant": asdict(variant),
        "seed": seed,
        "sample": SAMPLE_ID,
        "size_prior_um": list(variant.size_prior_um),
        "rotation_centre_px": (variant.shape[2] - 1) / 2.0 + variant.axis_shift_px,
        "phase_codes": {name: code for code, name in PHASE_NAMES.items()},
        "measure": {"n_rays": N_RAYS, "max_ray_length_um": MAX_RAY_LENGTH_UM},
    }
    (truth / "scan.json").write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    campaign = dump_campaign(_campaign_document(variant), out / "campaign.toml")
    campaign.write_text(_CAMPAIGN_NOTE + campaign.read_text(encoding="utf-8"), encoding="utf-8")
    return campaign


# ---------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Score:
    """How a run compares with the truth of a scan.

    Attributes
    ----------
    found : float
        Fraction of true particles matched by a reported particle (its
        centroid inside the true particle's silicon or within its equivalent
        radius of the true centre).
    spurious : float
        Fraction of reported particles that match no true particle (0 when
        nothing is reported).
    silicon_dice : float
        Dice of phase 3 against the true phase 3, voxel by voxel, inside the
        reconstruction circle (:func:`debond.pipeline.levels.field_of_view`).
    gap_mae_vox : float
        Mean |measured − true gap| over matched particles with both gaps, voxels
        (NaN when there is none).
    radius_error : float
        Median |r_measured − r_true| / r_true over matched particles (NaN when
        there is none).
    radius_bias_vox, gap_bias_vox : float
        Median signed r_measured − r_true and gap_measured − gap_true over the
        same pairs, voxels (NaN when there is none). A silicon surface placed
        inside the true one makes the first negative and the second positive.
    n_true, n_reported, n_matched, n_gaps : int
        True particles in view, reported particles (usable rows), true
        particles matched, matched pairs with both gaps.
    n_cut : int
        True particles the field of view cuts (their silicon reaches outside
        the reconstruction circle or onto the first or last slice). They
        cannot be measured, so they are left out of `found`, `gap_mae_vox`
        and `radius_error`, and reported particles matching them are not
        spurious.
    n_duplicates : int
        Reported particles that match a true particle already paired with a
        nearer one (fragments of a split particle); neither spurious nor scored.
    n_merged : int
        Reported particles that match more than one true particle (touching
        particles labelled as one).
    """

    found: float
    spurious: float
    silicon_dice: float
    gap_mae_vox: float
    radius_error: float
    n_true: int
    n_reported: int
    n_matched: int
    n_gaps: int
    n_cut: int = 0
    n_duplicates: int = 0
    n_merged: int = 0
    radius_bias_vox: float = math.nan
    gap_bias_vox: float = math.nan

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


_CENTROIDS = ["centroid_z_um", "centroid_y_um", "centroid_x_um"]


def score(
    truth: pd.DataFrame,
    truth_labels: np.ndarray,
    truth_phases: np.ndarray,
    reported: pd.DataFrame,
    phases: np.ndarray,
    voxel_size_um: float,
) -> Score:
    """Score reported particles and phases against the truth of one sample.

    Parameters
    ----------
    truth : DataFrame
        :func:`truth_table` rows: ``particle, centroid_*_um, radius_um, gap_um``.
    truth_labels : (Z, Y, X) ndarray of int
        True particle labels (0 background).
    truth_phases, phases : (Z, Y, X) ndarray of int
        True and segmented phase codes.
    reported : DataFrame
        Reported particles (usable rows only): ``centroid_*_um, radius_um,
        gap_mean_um``.
    voxel_size_um : float
        Voxel edge, µm.

    Returns
    -------
    Score
        Each true particle is paired with the nearest reported centroid that
        matches it.
    """
    if truth_phases.shape != phases.shape or truth_labels.shape != phases.shape:
        raise ScanError(
            f"phases of shape {phases.shape} cannot be scored against truth of shape "
            f"{truth_phases.shape} (labels {truth_labels.shape}); expected one shape"
        )
    view = np.broadcast_to(field_of_view(*phases.shape[1:]), phases.shape)
    si_true, si = (truth_phases == SILICON) & view, (phases == SILICON) & view
    total = int(si_true.sum() + si.sum())
    dice = 2.0 * float((si_true & si).sum()) / total if total else 1.0

    centres = truth[_CENTROIDS].to_numpy(dtype=np.float64).reshape(-1, 3)
    radii = truth["radius_um"].to_numpy(dtype=np.float64)
    ids = truth["particle"].to_numpy()
    cut_labels = np.union1d(np.unique(truth_labels[:, ~view[0]]), np.unique(truth_labels[[0, -1]]))
    in_view = ~np.isin(ids, cut_labels)
    points = reported[_CENTROIDS].to_numpy(dtype=np.float64).reshape(-1, 3)
    index = np.clip(np.rint(points / voxel_size_um).astype(np.int64), 0, np.array(phases.shape) - 1)
    label_at = truth_labels[tuple(index.T)] if len(points) else np.zeros(0, np.int64)
    distance = np.linalg.norm(points[:, None, :] - centres[None, :, :], axis=2)
    matches = (distance <= radii[None, :]) | (label_at[:, None] == ids[None, :])

    matched = matches.any(axis=0) & in_view
    n_reported = len(points)
    spurious = float((~matches.any(axis=1)).mean()) if n_reported else 0.0
    gap_errors, radius_errors, paired = [], [], set()
    radius_offsets, gap_offsets = [], []  # signed, voxels
    for j in np.flatnonzero(matched):
        candidates = np.flatnonzero(matches[:, j])
        best = candidates[np.argmin(distance[candidates, j])]
        paired.add(int(best))
        row = reported.iloc[best]
        radius_errors.append(abs(float(row["radius_um"]) - radii[j]) / radii[j])
        radius_offsets.append((float(row["radius_um"]) - radii[j]) / voxel_size_um)
        measured, true = float(row["gap_mean_um"]), float(truth["gap_um"].iloc[j])
        if np.isfinite(measured) and np.isfinite(true):
            gap_errors.append(abs(measured - true) / voxel_size_um)
            gap_offsets.append((measured - true) / voxel_size_um)
    to_cut = matches[:, ~in_view].any(axis=1)
    return Score(
        found=float(matched.sum() / in_view.sum()) if in_view.any() else 1.0,
        spurious=spurious,
        silicon_dice=dice,
        gap_mae_vox=float(np.mean(gap_errors)) if gap_errors else math.nan,
        radius_error=float(np.median(radius_errors)) if radius_errors else math.nan,
        n_true=int(in_view.sum()),
        n_reported=n_reported,
        n_matched=int(matched.sum()),
        n_gaps=len(gap_errors),
        n_cut=int((~in_view).sum()),
        n_duplicates=int((matches.any(axis=1) & ~to_cut).sum()) - len(paired),
        n_merged=int((matches.sum(axis=1) > 1).sum()),
        radius_bias_vox=float(np.median(radius_offsets)) if radius_offsets else math.nan,
        gap_bias_vox=float(np.median(gap_offsets)) if gap_offsets else math.nan,
    )


def score_run(campaign_path: str | os.PathLike[str]) -> Score:
    """Score a finished ``debond run`` of a scan written by :func:`write_scan`.

    Reads the store's ``phases`` (:func:`debond.storage.open_volume`) and the
    sample's measured rows (``tables/<campaign>/samples/scan.parquet``, else the scan's
    3D rows of ``tables/<campaign>/particles.parquet``); only the rows the fit would use
    (:func:`debond.storage.tables.usable_rows`) count as reported.

    Parameters
    ----------
    campaign_path : path
        The scan's ``campaign.toml`` (its ``truth/`` lies beside it).

    Returns
    -------
    Score

    Raises
    ------
    ScanError
        When the truth or the run's outputs are missing.
    """
    path = Path(campaign_path)
    campaign = load_campaign(path, check_files=False)
    truth_dir = path.parent / "truth"
    truth_file = truth_dir / "particles.parquet"
    if not truth_file.is_file():
        raise ScanError(f"{truth_file}: no truth; score_run scores scans written by write_scan")
    truth = pd.read_parquet(truth_file)
    sample = campaign.samples[0]
    table = campaign.tables_dir / "samples" / f"{sample.id}.parquet"
    gathered = campaign.tables_dir / "particles.parquet"
    if table.is_file():
        reported = pd.read_parquet(table)
    elif gathered.is_file():
        reported = pd.read_parquet(gathered)
        reported = reported[(reported["sample"] == sample.id) & (reported["modality"] == "3d")]
    else:
        raise ScanError(f"{table}: not found; run `debond run {path}` before scoring")
    reported = reported[usable_rows(reported)].reset_index(drop=True)
    try:
        phases = np.asarray(open_volume(campaign.store_location, sample.id, "phases").values)
    except (KeyError, RuntimeError) as error:
        raise ScanError(f"{path}: the run's phases cannot be read ({error})") from error
    return score(
        truth[truth["sample"] == sample.id].reset_index(drop=True),
        np.load(truth_dir / "labels" / f"{sample.id}.npy"),
        np.load(truth_dir / "phases" / f"{sample.id}.npy"),
        reported,
        phases,
        sample.voxel_um,
    )
