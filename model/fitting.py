"""Fitting the model to particle gaps and capacity retention, with bootstrap.

Implements MODEL.md, "Fitting". The objective is

    Σ_i w_i·((g_i − m_{n_i}(r_i))/σ_g)² + Σ_n ((C_obs(n) − C(n))/σ_C)²

over measured particles i (cycles n_i ≥ 1) and capacity cycles n ≥ 2 (C(1) = 1
by definition). m_n(r) is tabulated on a geometric radius grid and
interpolated linearly to the particles; the capacity term sums survival over
the particle population with weights r³, which the same interpolation folds
onto the grid. That population is the table's 3D particles, or a
:class:`SizePopulation` given to :func:`fit` (the size distribution unfolded
from 2D sections, for instance).

The bootstrap is parametric by default: each replicate draws every fitted
particle's gap anew from the model at the estimate (its law of disconnection,
MODEL.md, plus the measurement noise σ_0 of its stratum, estimated by maximum
likelihood under that law: :func:`noise_scale`), keeping its radius; the
capacity term's population is resampled with replacement inside each
(cycles, modality) stratum (a multinomial count per particle; a given
:class:`SizePopulation` brings its own replicates), and the capacity
residuals of the best fit are resampled. ``method="particles"`` is the
paper's Supplementary Note 11 instead: the particles themselves resampled
(their gaps with them). Each replicate's fit starts near, not at, the
estimate (:func:`replicate_starts`). All B replicates are solved together by
:func:`debond.model.solver.least_squares_batched`: arrays with a leading
replicate axis, in chunks that bound memory.

A 2D row (an SEM section converted to a sphere) carries a radius that is only
an estimate, E[R | r]: a section of radius r may be the cap of a large sphere.
Given the sections' unfolded size distribution (``section_sizes``), such a
row is fitted through the law of its sphere's radius instead
(:func:`section_kernel`): its predicted gap is the model, as the row's
conversion sees it (:func:`converted_gap`), averaged over p(R | r); its
spread and noise law are that mixture's (:func:`section_gap_law`), and the
parametric bootstrap draws its sphere before its gap. At a point radius, a
model whose detachment is a threshold in R was pulled by the caps of
detached spheres (README, "Accuracy").

A 3D row whose gap no particle of its (cycles, modality) stratum can show at
the fitted noise is a blunder (:func:`noise_law`): a spurious object, a ray
trace gone astray. It is left out of the fit (its σ_i is infinite) and named
(:attr:`FitResult.blunders`), rather than setting its stratum's σ_0.

Gaps and radii measured on images also share systematic errors: where the
segmentation places the surfaces. A silicon surface placed a distance b
outside the true one makes a particle's radius b too large and its gap b too
narrow; the CBD's surface placed c further from the particle makes the gap c
wider. Each is shared by the particles of a scan (one rule places them
all), so no resample can see it. Given the standard uncertainty of each
placement (``silicon_surface_sd_um``, ``cbd_surface_sd_um``, per sample),
the full-data fit is repeated with every 3D surface of the kind moved out and
in by it (:func:`moved_surfaces`), and each replicate is moved along those
lines by draws Z ~ N(0, 1), one per kind shared by the whole table
(:func:`surface_shifts`): the intervals then hold the placements'
uncertainty, to first order on each side.

Why (``benchmarks/coverage.py``, README "Accuracy"): resampling particles,
with replicates started at the estimate and σ_0 from moments, gave 16–84 %
intervals that held the truth in 47–65 % of data sets drawn from the model.
Three causes were measured: σ_0 fell to its floor in small groups (a
Gaussian moment estimate where the imaged gap takes a few distant values);
replicates started at the estimate stayed on its tread of the staircase
objective and spread 10–30 % less than the estimator; and the particle
resample of 15 gaps a group under-represents their spread.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import scipy.special
from numpy.typing import ArrayLike, NDArray

from debond.model.cycling import check_cycle_series
from debond.model.disconnection import disconnection_probability, imaged_statistics
from debond.model.mechanics import gaps as model_gaps
from debond.model.parameters import (
    PARAMETER_NAMES,
    FloatArray,
    Material,
    Parameters,
)
from debond.model.solver import Residuals, least_squares_batched
from debond.storage.tables import check_particles, three_d_rows, usable_rows

#: Box bounds of α0, κ0 (µm), δ0 (µm), ζ0 (1/µm).
LOWER = np.array([1e-3, 0.0, 0.0, 0.0])
UPPER = np.array([50.0, 2.0, 2.0, 20.0])
#: Typical magnitudes: difference steps near zero, step-size convergence.
TYPICAL = np.array([0.1, 0.01, 0.01, 0.01])
#: Relative difference step of the Jacobian. The exact objective is a staircase
#: (it jumps wherever a particle crosses a detachment threshold); a 1 % step sees
#: the trend across the stairs where 1e-5 sees flat treads, and converges in
#: fewer iterations.
DIFFERENCE_STEP = 1e-2
#: Convergence tolerances (relative cost decrease, relative step). Tighter ones
#: change the bootstrap percentiles of the demo in the fifth digit only and
#: cost 1.7 times the evaluations.
FTOL = 1e-6
XTOL = 1e-6
#: Starting points of the full-data fit (every combination is tried, in one batch).
STARTS = {
    "alpha0": (0.2, 0.8, 3.0),
    "kappa0": (0.005, 0.05),
    "delta0": (0.05, 0.2),
    "zeta0": (0.05, 0.2, 0.8),
}
#: Log-normal spread of the replicate fits' starting points around the
#: estimate, and the most κ0's start is shifted up, µm (see replicate_starts).
START_SPREAD = 0.2
START_KAPPA_UM = 0.01
#: The surfaces whose placement may carry an uncertainty (see fit()).
SURFACES = ("silicon", "cbd")
#: How the bootstrap draws its replicates (see fit()).
BOOTSTRAP_METHODS = ("parametric", "particles")
#: Relative standard deviation of a measured effective radius (see fit()); off
#: by default: a 5 % error neither changes the estimates nor the bootstrap
#: intervals measurably and costs three times the grid.
RADIUS_SD = 0.0
#: Floors of the residual scales, so a perfect fit cannot claim infinite weight.
SIGMA_GAP_FLOOR_UM = 1e-3
SIGMA_RETENTION_FLOOR = 1e-3
#: Points of each of the two grids on which noise_scale searches σ_0.
NOISE_GRID = 25
#: Blunder fractions ε tried per stratum (see noise_law), and the least gain of
#: log-likelihood over ε = 0 that admits blunders (half the 95 % point of χ²
#: with one degree of freedom: a likelihood-ratio test).
BLUNDER_FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
BLUNDER_EVIDENCE = 3.84 / 2


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    parameters : dict
        ``name -> (median, 16th percentile, 84th percentile)`` over the
        bootstrap replicates, for α0, κ0 (µm), δ0 (µm), ζ0 (1/µm).
    samples : DataFrame
        One row per bootstrap replicate: the four parameters, ``cost`` and
        ``converged``.
    estimate : Parameters
        The best fit to the full data set.
    sigma_gap_um : dict
        Measurement noise σ_0 per ``(cycles, modality)`` stratum, in µm; each
        particle is weighted by 1/σ_i with σ_i² = s_n(r_i)² + σ_0².
    sigma_retention : float or None
        Residual scale σ_C of the capacity term (None without capacity data).
    material : Material
    n_bootstrap : int
    seed : int
    capacity_population : dict
        What the capacity term summed over: ``source`` (``"3d particles"``,
        ``"all particles"`` or a given population's source), ``particles`` (their
        number), ``volume_weighted_radius_um`` (Σr⁴/Σr³, µm), and the
        population itself as ``radius_um`` and ``count`` (lists).
    method : str
        How the bootstrap drew its replicates (``fit``'s ``method``).
    blunders : list of dict
        The fitted rows whose gap the fit read as a blunder and left out
        (:func:`noise_law`): ``sample``, ``particle``, ``cycles``,
        ``modality``, ``radius_um`` and ``gap_um``.
    section_rows : str
        How the 2D rows were fitted: ``"law of R given r"`` (each through the
        law of its sphere's radius, ``fit``'s ``section_sizes``), ``"point
        radius"`` (at their table radius) or ``"none"`` (no 2D row fitted).
    surface : dict
        The surface-placement uncertainties the intervals hold, by kind
        (``"silicon"``, ``"cbd"``; none: empty): ``sd_um`` (sample → µm, 3D
        rows), and ``outward`` and ``inward``, the full-data estimates with
        every 3D surface of that kind moved out or in by it (name → value).
        See :func:`fit`'s ``silicon_surface_sd_um``.
    """

    parameters: dict[str, tuple[float, float, float]]
    samples: pd.DataFrame
    estimate: Parameters
    sigma_gap_um: dict[tuple[int, str], float]
    sigma_retention: float | None
    material: Material
    n_bootstrap: int
    seed: int
    capacity_population: dict[str, Any] = field(default_factory=dict)
    method: str = "parametric"
    section_rows: str = "none"
    blunders: list[dict[str, Any]] = field(default_factory=list)
    surface: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The ``fit.json`` document of DESIGN.md (value = median, lower/upper = 16th/84th)."""
        half_cycle = self.material.half_cycle_hours
        alpha = self.parameters["alpha0"]
        delta = self.parameters["delta0"]
        return {
            "parameters": {
                name: {"value": v, "lower": lo, "upper": hi}
                for name, (v, lo, hi) in self.parameters.items()
            },
            "units": {"alpha0": "1", "kappa0": "um", "delta0": "um", "zeta0": "1/um"},
            "derived": {
                "elastic_over_viscous_per_h": [a / half_cycle for a in alpha],
                "sei_rate_nm_per_h": [1000.0 * d / half_cycle for d in delta],
            },
            "estimate": {n: float(getattr(self.estimate, n)) for n in PARAMETER_NAMES},
            "bootstrap": self.n_bootstrap,
            "bootstrap_method": self.method,
            "converged_fraction": float(self.samples["converged"].mean())
            if len(self.samples)
            else None,
            "seed": self.seed,
            "sigma_gap_um": {f"{c}/{m}": s for (c, m), s in self.sigma_gap_um.items()},
            "sigma_retention": self.sigma_retention,
            "capacity_population": self.capacity_population,
            "section_rows": self.section_rows,
            "blunders": self.blunders,
            "surface": self.surface,
            "material": {
                "volumetric_expansion": self.material.volumetric_expansion,
                "half_cycle_hours": self.material.half_cycle_hours,
            },
        }


def check_capacity(capacity: pd.DataFrame, source: str = "capacity") -> pd.DataFrame:
    """Validate a capacity-retention series: ``cycle`` (1, 2, …) and ``retention``.

    See :func:`debond.model.cycling.check_cycle_series` for the errors raised.
    """
    series: pd.DataFrame = check_cycle_series(capacity, "retention", source)
    return series


@dataclass(frozen=True)
class SizePopulation:
    """The capacity term's particles as size classes, with their bootstrap replicates.

    For a population known as a distribution rather than as rows of the
    particle table, such as the 3D sizes unfolded from 2D sections
    (:func:`debond.pipeline.stereology.unfold_radii`).

    Parameters
    ----------
    radius_um : (M,) array of float
        Radius of each class, µm, > 0.
    count : (M,) array of float
        Number of particles in each class (any scale: only proportions
        matter), ≥ 0, not all 0.
    replicates : (B, M) array of float, optional
        The counts again in each of B bootstrap replicates of the data the
        population came from; :func:`fit` pairs replicate b with its own
        b-th resample. None: the population is taken as exact.
    source : str
        What the population is, in words (recorded in ``fit.json``).
    """

    radius_um: FloatArray
    count: FloatArray
    replicates: FloatArray | None = None
    source: str = "size population"

    def __post_init__(self) -> None:
        radius = np.asarray(self.radius_um, dtype=np.float64)
        count = np.asarray(self.count, dtype=np.float64)
        if radius.ndim != 1 or radius.size == 0 or count.shape != radius.shape:
            raise ValueError(
                "size population: radius_um and count must be 1-D of one length ≥ 1; "
                f"got shapes {radius.shape} and {count.shape}"
            )
        if not (np.isfinite(radius).all() and (radius > 0).all()):
            raise ValueError("size population: radius_um must be finite and > 0 (µm)")
        if not (np.isfinite(count).all() and (count >= 0).all() and count.sum() > 0):
            raise ValueError("size population: count must be finite, ≥ 0 and not all 0")
        object.__setattr__(self, "radius_um", radius)
        object.__setattr__(self, "count", count)
        if self.replicates is not None:
            reps = np.asarray(self.replicates, dtype=np.float64)
            if reps.ndim != 2 or reps.shape[1] != radius.size:
                raise ValueError(
                    f"size population: replicates must have shape (B, {radius.size}); "
                    f"got {reps.shape}"
                )
            if not (np.isfinite(reps).all() and (reps >= 0).all() and (reps.sum(axis=1) > 0).all()):
                raise ValueError(
                    "size population: every replicate's counts must be finite, ≥ 0, not all 0"
                )
            object.__setattr__(self, "replicates", reps)


class SectionSizes(Protocol):
    """What the fit needs of the 3D size distribution behind 2D sections.

    :class:`debond.pipeline.stereology.SizeDistribution` is one (the
    sections' unfolded distribution, :func:`~debond.pipeline.stereology.unfold_radii`).
    """

    def conditional_law(
        self, section_radius: ArrayLike, cuts: ArrayLike = ()
    ) -> tuple[FloatArray, FloatArray]:
        """Radii (µm) and probabilities of the sphere behind each section of radius r (µm),
        both of shape ``r.shape + (M,)``, the probabilities summing to 1; no part of
        the law straddles one of the ``cuts`` (µm)."""
        ...


@dataclass(frozen=True)
class _Data:
    """Fit data laid out for the batched residuals."""

    grid: FloatArray  # (G,) radius grid, µm
    group_cycles: tuple[int, ...]  # cycle count of each gap group
    particle_group: NDArray[np.intp]  # (N,) group of each fitted particle
    particle_kernel: FloatArray  # (N, G) weights of the grid nodes for each particle
    gap: FloatArray  # (N,) measured mean gap, µm
    radius: FloatArray  # (N,) measured radius, µm
    row_sample: NDArray[np.object_]  # (N,) sample of each fitted particle ("" if unnamed)
    row_particle: NDArray[np.int64]  # (N,) its particle label (-1 if unnamed)
    section_rows: NDArray[np.bool_]  # (N,) fitted through their law of R (section_kernel)
    section_law: FloatArray  # (S, G) P(R = grid node | r) of those rows (section_kernel)
    section_reference: FloatArray  # (S,) their table radius R̂ (the gap's conversion), µm
    strata: tuple[tuple[int, str], ...]  # (cycles, modality) of each stratum
    particle_stratum: NDArray[np.intp]  # (N,)
    population_stratum: NDArray[np.intp]  # (Q,) stratum of each population particle
    population_to_grid: FloatArray  # (Q, G) r³-weighted kernel rows of all particles
    classes_to_grid: FloatArray  # (M, G) r³-weighted kernel rows of a SizePopulation's classes
    classes: SizePopulation | None  # the capacity term's population when given
    population_radius: FloatArray  # radii of the table rows in the population, µm
    population_source: str  # "3d particles", "all particles" or the given population's
    capacity_cycles: NDArray[np.int64]  # (C,) cycles ≥ 2 with data
    retention: FloatArray  # (C,)

    @property
    def n_survival(self) -> int:
        return int(self.capacity_cycles.max()) - 1 if self.capacity_cycles.size else 0

    def population(self) -> FloatArray:
        """The full data's capacity population on the grid (r³ weights), shape (G,)."""
        if self.classes is not None:
            return np.asarray(self.classes.count @ self.classes_to_grid)
        return np.asarray(self.population_to_grid.sum(axis=0))


def radius_kernel(grid: FloatArray, radius: FloatArray, radius_sd: float) -> FloatArray:
    """Weights of grid nodes that give the model at measured radii, shape (N, G).

    With ``radius_sd`` = σ > 0 the prediction at a measured radius r is the
    model averaged over the true radius r·exp(σZ), Z ~ N(0, 1) (a relative
    measurement error of the radius): Gaussian weights in log r, normalised.
    With σ = 0 it is linear interpolation between the two nearest nodes.
    """
    if radius_sd > 0:
        z = (np.log(grid)[None, :] - np.log(radius)[:, None]) / radius_sd
        weights = np.exp(-0.5 * z * z)
        return np.asarray(weights / weights.sum(axis=1, keepdims=True), dtype=np.float64)
    cell = np.clip(np.searchsorted(grid, radius, side="right") - 1, 0, grid.size - 2)
    frac = np.clip((radius - grid[cell]) / (grid[cell + 1] - grid[cell]), 0.0, 1.0)
    weights = np.zeros((radius.size, grid.size))
    rows = np.arange(radius.size)
    weights[rows, cell] = 1.0 - frac
    weights[rows, cell + 1] = frac
    return weights


def radius_grid(radius: FloatArray, radius_sd: float, grid_size: int) -> FloatArray:
    """Geometric grid covering the radii ± 4σ, fine enough to resolve σ (µm)."""
    low = max(float(radius.min()), 1e-3) * np.exp(-4.0 * radius_sd)
    high = max(float(radius.max()) * np.exp(4.0 * radius_sd), low * 1.001)
    if radius_sd > 0:
        grid_size = max(grid_size, int(np.ceil(np.log(high / low) / (radius_sd / 2.0))) + 1)
    return np.geomspace(low, high, grid_size)


def section_kernel(
    grid: FloatArray, law_radius: FloatArray, law_probability: FloatArray
) -> FloatArray:
    """The law of a 2D row's sphere radius on the grid nodes, (S, G).

    Parameters
    ----------
    grid : (G,) array
        Radius grid, µm.
    law_radius, law_probability : (S, M) arrays
        Each row's law of R given its section radius (``SectionSizes``).

    Returns
    -------
    (S, G) array
        P(R = node | r), each row summing to 1: a point of the law between
        two nodes is shared between them as by linear interpolation.
    """
    rows, points = law_radius.shape
    nodes = radius_kernel(grid, law_radius.ravel(), 0.0).reshape(rows, points, grid.size)
    return np.asarray(np.einsum("sm,smg->sg", law_probability, nodes))


def converted_gap(radius: FloatArray, gap: FloatArray, reference: FloatArray) -> FloatArray:
    """The gap a 2D row holds when its sphere has radius R and gap D, µm.

    The section's gap was converted at the row's table radius R̂ (E[R | r]):
    ``g = √((r + g₂)² + R̂² − r²) − R̂``; the sphere's section shows
    ``(r + g₂)² = r² + 2RD + D²``, so

        y = √(R̂² + 2RD + D²) − R̂ = (2RD + D²)/(√(R̂² + 2RD + D²) + R̂),

    whatever r: r enters only through the law of R. y = D where R = R̂.
    Arguments broadcast.
    """
    grown = 2.0 * radius * gap + gap * gap
    return np.asarray(grown / (np.sqrt(reference * reference + grown) + reference))


def section_gap_law(
    data: _Data, theta: FloatArray, material: Material
) -> tuple[FloatArray, FloatArray]:
    """The gap law of the rows fitted through their law of R: values and probabilities.

    R takes the grid nodes with p(R | r) (:func:`section_kernel`), D the
    imaged gap's law at R (:func:`imaged_gap_law`), and the row holds
    y = :func:`converted_gap` (R, D, R̂).

    Returns
    -------
    support, probability : (K·G, S) arrays
        K the largest cycle count, G the grid's nodes, S the rows; each
        column's probabilities sum to 1.
    """
    rows = np.flatnonzero(data.section_rows)
    cycles = np.array(data.group_cycles)[data.particle_group[rows]]
    nodes = data.grid.size
    radius = np.tile(data.grid, rows.size)
    support, probability = imaged_gap_law(radius, np.repeat(cycles, nodes), theta, material)
    k = support.shape[0]
    d = support.reshape(k, rows.size, nodes)
    y = converted_gap(data.grid[None, None, :], d, data.section_reference[None, :, None])
    p = probability.reshape(k, rows.size, nodes) * data.section_law[None]
    # (K, S, G) → (K·G, S): one column of atoms per row.
    return (
        np.ascontiguousarray(y.transpose(0, 2, 1).reshape(k * nodes, rows.size)),
        np.ascontiguousarray(p.transpose(0, 2, 1).reshape(k * nodes, rows.size)),
    )


def _section_radii(
    table: pd.DataFrame, fitted: NDArray[np.bool_], section_sizes: SectionSizes | None
) -> tuple[NDArray[np.bool_], FloatArray]:
    """Which fitted rows go through their law of R (the 2D rows, given ``section_sizes``),
    and their section radii, µm."""
    two_d = (table["modality"] == "2d").to_numpy()[fitted]
    if section_sizes is None or not two_d.any():
        return np.zeros(two_d.size, dtype=bool), np.zeros(0)
    if "section_radius_um" not in table:
        raise ValueError(
            "particle table: 2D rows fitted through their law of R need column "
            "'section_radius_um' (µm); it is missing"
        )
    r = table["section_radius_um"].to_numpy(dtype=np.float64)[fitted][two_d]
    if not (np.isfinite(r).all() and (r >= 0).all()):
        bad = int(np.flatnonzero(~(np.isfinite(r) & (r >= 0)))[0])
        raise ValueError(
            "particle table: section_radius_um must be finite and ≥ 0 (µm) on every usable "
            f"2D row; found {r[bad]!r}"
        )
    return two_d, r


def _prepare(
    particles: pd.DataFrame,
    capacity: pd.DataFrame | None,
    grid_size: int,
    radius_sd: float,
    population: SizePopulation | None = None,
    section_sizes: SectionSizes | None = None,
) -> _Data:
    table = check_particles(particles)
    if "modality" not in table:
        table["modality"] = "3d"
    table = table[usable_rows(table)]
    if len(table) == 0:
        raise ValueError(
            "particle table: no usable rows (all have n_rays = 0, touch the border or are "
            "flagged oversized, spans_box or few_rays)"
        )
    radius_all = table["radius_um"].to_numpy()
    fitted = table["cycles"].to_numpy() > 0
    if not fitted.any():
        raise ValueError("particle table: column 'cycles' holds no cycled sample (all are 0)")

    classes = np.zeros(0) if population is None else population.radius_um
    section_rows, section_radius = _section_radii(table, fitted, section_sizes)
    behind = np.zeros(0)
    if section_sizes is not None and section_rows.any():
        law_radius, law_probability = section_sizes.conditional_law(section_radius)
        behind = np.asarray(law_radius)[np.asarray(law_probability) > 0]
    # The grid reaches the given population's largest classes and the largest
    # spheres behind the sections; classes below the smallest measured radius
    # (next to nothing of the silicon volume) sit on its first node rather
    # than stretching it.
    larger = classes[classes > radius_all.min()]
    grid = radius_grid(np.concatenate([radius_all, larger, behind]), radius_sd, grid_size)
    # The capacity term's size population, unless one is given: the 3D
    # particles where there are any. A 2D row's radius is a per-section
    # estimate (E[R | r], shrunk towards the mean), whose r³ weights would
    # understate the large particles.
    three_d = (table["modality"] == "3d").to_numpy()
    in_population = three_d if three_d.any() else np.ones(len(table), dtype=bool)

    strata = sorted(set(zip(table["cycles"], table["modality"], strict=True)))
    stratum_of = {s: i for i, s in enumerate(strata)}
    stratum = np.array(
        [stratum_of[s] for s in zip(table["cycles"], table["modality"], strict=True)], dtype=np.intp
    )
    group_cycles = tuple(sorted({int(c) for c in table["cycles"][fitted]}))
    group_of = {c: i for i, c in enumerate(group_cycles)}
    kernel = radius_kernel(grid, radius_all, radius_sd)
    particle_kernel = kernel[fitted]
    section_law = np.zeros((0, grid.size))
    if section_sizes is not None and section_rows.any():
        # Cut at the grid's nodes: no part of a law straddles a grid cell.
        law_radius, law_probability = section_sizes.conditional_law(section_radius, grid)
        section_law = section_kernel(
            grid, np.asarray(law_radius, np.float64), np.asarray(law_probability, np.float64)
        )
    # A section row's mean over its law of R, as a placeholder: its prediction
    # is converted_gap's average over the law (_predict).
    particle_kernel[section_rows] = section_law

    if capacity is not None:
        series = check_capacity(capacity)
        later = series["cycle"].to_numpy() >= 2
        capacity_cycles = series["cycle"].to_numpy()[later]
        retention = series["retention"].to_numpy()[later]
    else:
        capacity_cycles, retention = np.zeros(0, np.int64), np.zeros(0)

    return _Data(
        grid=grid,
        group_cycles=group_cycles,
        particle_group=np.array([group_of[c] for c in table["cycles"][fitted]], dtype=np.intp),
        particle_kernel=particle_kernel,
        gap=table["gap_mean_um"].to_numpy()[fitted],
        radius=radius_all[fitted],
        row_sample=(
            table["sample"].astype(str).to_numpy(dtype=object)
            if "sample" in table
            else np.full(len(table), "", dtype=object)
        )[fitted],
        row_particle=(
            table["particle"].to_numpy(dtype=np.int64)
            if "particle" in table
            else np.full(len(table), -1, dtype=np.int64)
        )[fitted],
        section_rows=section_rows,
        section_law=section_law,
        section_reference=radius_all[fitted][section_rows],
        strata=tuple((int(c), str(m)) for c, m in strata),
        particle_stratum=stratum[fitted],
        population_stratum=stratum,
        population_to_grid=kernel * (radius_all**3 * in_population)[:, None],
        classes_to_grid=radius_kernel(grid, classes, radius_sd) * (classes**3)[:, None],
        classes=population,
        population_radius=radius_all[in_population],
        population_source=population.source
        if population is not None
        else "3d particles"
        if three_d.any()
        else "all particles",
        capacity_cycles=capacity_cycles,
        retention=retention,
    )


def _at_particles(data: _Data, table: FloatArray) -> FloatArray:
    """Interpolate a (groups, K, G) grid table to the fitted particles: (K, N)."""
    out = np.empty((table.shape[1], data.particle_group.size))
    for group in range(table.shape[0]):
        members = data.particle_group == group
        out[:, members] = table[group] @ data.particle_kernel[members].T
    return out


def _predict(
    data: _Data, theta: FloatArray, material: Material, population: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Model gaps at the fitted particles (K, N) and capacity (K, C) for K parameter sets.

    ``population`` is (K, G) or (1, G): r³ weights of the imaged particles on the grid.
    """
    params = Parameters.from_array(theta[:, None, :])
    stats = imaged_statistics(
        data.grid, data.group_cycles, params, material, n_survival=data.n_survival
    )
    if data.capacity_cycles.size:
        survival = stats.survival[data.capacity_cycles - 2]  # S(n − 1): (C, K, G)
        weight = population / population.sum(axis=-1, keepdims=True)
        retention = np.einsum("ckg,kg->kc", survival, np.broadcast_to(weight, survival.shape[1:]))
    else:
        retention = np.zeros((theta.shape[0], 0))
    gaps = _at_particles(data, stats.mean)
    if data.section_rows.any():
        gaps[:, data.section_rows] = _section_means(data, stats.mean)
    return gaps, retention


def _section_means(data: _Data, mean: FloatArray) -> FloatArray:
    """Expected gaps of the rows fitted through their law of R, (K, S).

    Σ_R p(R | r)·y(R, m(R)) (:func:`converted_gap`), m the model's mean gap at
    the node: exact where the imaged gap at R is one value, and nearly so
    otherwise, y being nearly linear in D.
    """
    rows = np.flatnonzero(data.section_rows)
    m = mean[data.particle_group[rows]]  # (S, K, G)
    y = converted_gap(data.grid[None, None, :], m, data.section_reference[:, None, None])
    return np.asarray(np.einsum("skg,sg->ks", y, data.section_law))


@dataclass(frozen=True)
class _Replicates:
    """Per-replicate data: particle multiplicities and capacity observations."""

    gap: FloatArray  # (R, N) observed (or simulated) mean gap of each fitted particle, µm
    weight_sqrt: FloatArray  # (R, N) √(count)/σ of each fitted particle
    population: FloatArray  # (R, G) r³ weights of the resampled population
    retention: FloatArray  # (R, C) observed (or resampled) retention
    retention_scale: float  # σ_C


def _residual_function(data: _Data, reps: _Replicates, material: Material) -> Residuals:
    def residuals(theta: FloatArray, rows: NDArray[np.intp]) -> FloatArray:
        gaps, retention = _predict(data, theta, material, reps.population[rows])
        gap_part = (reps.gap[rows] - gaps) * reps.weight_sqrt[rows]
        cap_part = (reps.retention[rows] - retention) / reps.retention_scale
        return np.concatenate([gap_part, cap_part], axis=1)

    return residuals


def _solve(
    data: _Data,
    reps: _Replicates,
    theta0: FloatArray,
    material: Material,
    chunk: int,
) -> tuple[FloatArray, FloatArray, NDArray[np.bool_]]:
    """Solve every replicate, ``chunk`` at a time (memory is linear in the chunk)."""
    n = theta0.shape[0]
    theta, cost = np.empty_like(theta0), np.empty(n)
    converged = np.empty(n, dtype=bool)
    for start in range(0, n, chunk):
        part = slice(start, min(start + chunk, n))
        sub = _Replicates(
            reps.gap[part],
            reps.weight_sqrt[part],
            reps.population[part],
            reps.retention[part],
            reps.retention_scale,
        )
        solution = least_squares_batched(
            _residual_function(data, sub, material),
            theta0[part],
            LOWER,
            UPPER,
            TYPICAL,
            relative_step=DIFFERENCE_STEP,
            ftol=FTOL,
            xtol=XTOL,
        )
        theta[part], cost[part], converged[part] = solution.theta, solution.cost, solution.converged
    return theta, cost, converged


def _residual_scales(
    data: _Data,
    theta: FloatArray,
    material: Material,
    sigma_gap_um: float | None,
    sigma_retention: float | None,
) -> tuple[FloatArray, FloatArray, float, FloatArray, NDArray[np.bool_]]:
    """Per-particle σ_i, per-stratum σ_0 and σ_C at a fit; the capacity residuals; blunders.

    σ_i² = s_n(r_i)² + σ_0², with s_n the model's own spread of the imaged gap
    (stochastic disconnection) and σ_0 the measurement noise of the particle's
    (cycles, modality) stratum: given, or its maximum-likelihood estimate under
    the model's law of the imaged gap, blunders allowed (:func:`noise_law`).
    A blunder's σ_i is infinite: it weighs nothing in the fit.
    """
    population = data.population()[None, :]
    params = Parameters.from_array(theta[None, None, :])
    spread = _at_particles(
        data, imaged_statistics(data.grid, data.group_cycles, params, material).sd
    )[0]
    _, retention = _predict(data, theta[None, :], material, population)
    cycles = np.array(data.group_cycles)[data.particle_group]
    support, probability = imaged_gap_law(data.radius, cycles, theta, material)
    sections = data.section_rows
    if sections.any():
        # A 2D row's spread is that of its mixture over the spheres behind it.
        s_support, s_probability = section_gap_law(data, theta, material)
        mean = np.sum(s_support * s_probability, axis=0)
        second = np.sum(s_support**2 * s_probability, axis=0)
        spread[sections] = np.sqrt(np.clip(second - mean**2, 0.0, None))
    noise = np.zeros(len(data.strata))
    blunder = np.zeros(data.gap.size, dtype=bool)
    for s in range(len(data.strata)):
        members = data.particle_stratum == s
        if not members.any():
            continue
        # A stratum is one modality, so its rows are all section rows or none.
        if sections[members].all():
            law = s_support[:, members[sections]], s_probability[:, members[sections]]
        else:
            law = support[:, members], probability[:, members]
        # Blunders are told only in 3D strata, where the law of the gap is the
        # model's alone: a 2D row's radius is uncertain (a cap of a large sphere
        # at its point radius; the unfolding's error, its tail from a hundred
        # sections ending short of the largest spheres, through its law).
        three_d = data.strata[s][1] == "3d"
        noise[s], _, blunder[members] = noise_law(
            data.gap[members], *law, blunders=sigma_gap_um is None and three_d
        )
    if sigma_gap_um is not None:
        noise[:] = sigma_gap_um
    noise = np.maximum(noise, SIGMA_GAP_FLOOR_UM)
    sigma = np.sqrt(spread**2 + noise[data.particle_stratum] ** 2)
    sigma[blunder] = np.inf
    cap_residual = data.retention - retention[0]
    if sigma_retention is not None:
        sigma_c = sigma_retention
    elif cap_residual.size:
        sigma_c = max(float(np.sqrt(np.mean(cap_residual**2))), SIGMA_RETENTION_FLOOR)
    else:
        sigma_c = 1.0
    return sigma, noise, sigma_c, cap_residual, blunder


def imaged_gap_law(
    radius_um: FloatArray,
    cycles: NDArray[np.int64],
    theta: FloatArray,
    material: Material,
) -> tuple[FloatArray, FloatArray]:
    """The imaged gap's distribution per particle: its values and their probabilities.

    MODEL.md: a sample imaged after n cycles shows D = d_K, K = min(cycle of
    disconnection, n), P(K = k) = p_k·∏_{j<k}(1 − p_j) for k < n and
    P(K = n) = ∏_{j<n}(1 − p_j), p_k = min(1, ζ0·d_k).

    Parameters
    ----------
    radius_um : (N,) array
        Radii, µm.
    cycles : (N,) int array
        Cycle count n ≥ 1 of each particle's sample.
    theta : (4,) array
        α0, κ0 (µm), δ0 (µm), ζ0 (1/µm).
    material : Material

    Returns
    -------
    support : (n_max, N) array
        d_1 … d_{n_max} per particle, µm (n_max the largest cycle count).
    probability : (n_max, N) array
        P(K = k); 0 for k beyond the particle's own n; each column sums to 1.
    """
    params = Parameters.from_array(np.asarray(theta, dtype=np.float64))
    last = int(cycles.max())
    support = model_gaps(radius_um, last, params, material)
    p = disconnection_probability(support, params.zeta0)
    alive = np.cumprod(np.vstack([np.ones((1, radius_um.size)), 1.0 - p[:-1]]), axis=0)
    k = np.arange(1, last + 1)[:, None]
    probability = np.where(k < cycles[None, :], alive * p, np.where(k == cycles[None, :], alive, 0))
    return support, probability


def noise_scale(gap: FloatArray, support: FloatArray, probability: FloatArray) -> float:
    """Maximum-likelihood measurement noise σ_0 of one stratum's measured gaps, µm.

    Each measured gap is the imaged gap D (a discrete law: ``support`` and
    ``probability`` from :func:`imaged_gap_law`) plus Gaussian noise N(0, σ_0²),
    clipped at 0 (a measured 0 has the probability of D + noise ≤ 0). A
    Gaussian likelihood with variance s² + σ_0² instead (s the model's spread
    of D) is no estimate here: D at 3 or 10 cycles is a few distant values,
    and it puts σ_0 near 0 where the truth is tens of nm. No blunders: see
    :func:`noise_law`.

    Parameters
    ----------
    gap : (N,) array
        Measured gaps, µm.
    support, probability : (K, N) arrays
        The law of each particle's D at the fitted parameters.

    Returns
    -------
    float
        σ_0 in µm (at least :data:`SIGMA_GAP_FLOOR_UM`).
    """
    return _search_noise(gap, support, probability, (0.0,))[0]


def noise_law(
    gap: FloatArray, support: FloatArray, probability: FloatArray, *, blunders: bool = True
) -> tuple[float, float, NDArray[np.bool_]]:
    """Measurement noise σ_0 and blunders of one stratum's measured gaps.

    As :func:`noise_scale`, after leaving out the blunders: gaps that no
    particle of the stratum can show at any noise that fits (a spurious
    object of two voxels with a gap of 1.6 µm after one cycle, where the
    largest particle's is 0.45 µm; a ray trace that ran into another
    particle). One such gap otherwise sets σ_0 for its whole stratum (0.43 µm
    where the others need 0.035 µm) and the fit then all but ignores the
    stratum.

    A gap is judged by the better of two laws: its own particle's, and the
    stratum's pooled law (every particle's atoms, each with its share). Its
    own alone would not do: near a detachment threshold, the fitted model may
    give a particle no chance of a gap that its true parameters gave it, and
    with little noise such a gap would look impossible. The pooled law alone
    would not either: the largest particle's gap has no neighbours in it. A
    fraction ε of the gaps may be blunders, uniform on (0, largest gap]; σ
    and ε (:data:`BLUNDER_FRACTIONS`) are fitted together by maximum
    likelihood, and ε > 0 is admitted only when it raises the log-likelihood
    by :data:`BLUNDER_EVIDENCE` or more (a likelihood-ratio test at 95 %). A
    gap is a blunder where its posterior probability of being one exceeds
    1/2. σ_0 is then :func:`noise_scale` of the other gaps.

    Parameters
    ----------
    gap : (N,) array
        Measured gaps, µm.
    support, probability : (K, N) arrays
        The law of each particle's D at the fitted parameters.
    blunders : bool
        Whether blunders are looked for (False: none).

    Returns
    -------
    sigma : float
        σ_0, µm (at least :data:`SIGMA_GAP_FLOOR_UM`).
    fraction : float
        ε (0 when there are no blunders).
    blunder : (N,) array of bool
        The gaps read as blunders.
    """
    if not blunders or gap.size < 2:
        return noise_scale(gap, support, probability), 0.0, np.zeros(gap.size, dtype=bool)
    # The own law alone first: a larger regular likelihood only weakens the
    # evidence for blunders, so where the own law finds none, none are, and
    # its σ_0 (at ε = 0) is noise_scale's.
    sigma, fraction, blunder = _search_noise(gap, support, probability, BLUNDER_FRACTIONS)
    if fraction > 0:
        # The pooled law's atoms, merged on a 1 nm grid (a few hundred at most).
        atoms, where = np.unique(np.round(support.ravel(), 3), return_inverse=True)
        weight = np.bincount(where, weights=probability.ravel() / gap.size, minlength=atoms.size)
        pooled: tuple[FloatArray, FloatArray] = (
            np.broadcast_to(atoms[:, None], (atoms.size, gap.size)),
            np.broadcast_to(weight.astype(np.float64)[:, None], (atoms.size, gap.size)),
        )
        _, fraction, blunder = _search_noise(
            gap, support, probability, BLUNDER_FRACTIONS, pooled=pooled
        )
        sigma = noise_scale(gap[~blunder], support[:, ~blunder], probability[:, ~blunder])
    return sigma, fraction, blunder


def _search_noise(
    gap: FloatArray,
    support: FloatArray,
    probability: FloatArray,
    fractions: tuple[float, ...],
    pooled: tuple[FloatArray, FloatArray] | None = None,
) -> tuple[float, float, NDArray[np.bool_]]:
    """Maximum-likelihood σ_0 and blunder fraction ε (one of `fractions`), and the blunders.

    With ``pooled`` (a second law, (K', N) arrays), each gap's regular
    likelihood is the larger of its two laws' (see :func:`noise_law`).
    """
    support, probability = _possible_atoms(support, probability)
    laws = [(support, probability)]
    if pooled is not None:
        laws.append(_possible_atoms(*pooled))

    def regular_likelihood(candidates: FloatArray) -> FloatArray:  # (S, N)
        return np.asarray(np.max([_row_likelihood(candidates, gap, *law) for law in laws], axis=0))

    spread = float(np.max(np.abs(gap[None, :] - support), initial=0.0))
    high = max(spread, 2 * SIGMA_GAP_FLOOR_UM)
    eps = np.array(fractions)[:, None, None]
    # A blunder's density: uniform on (0, largest gap]; a measured 0 is none.
    uniform = np.where(gap > 0, 1.0 / max(float(gap.max(initial=0.0)), SIGMA_GAP_FLOOR_UM), 0.0)

    def losses(candidates: FloatArray) -> FloatArray:  # (ε, σ) → −log L
        each = (1 - eps) * regular_likelihood(candidates)[None]
        return np.asarray(-np.sum(np.log(np.maximum(each + eps * uniform, 1e-300)), axis=-1))

    # A coarse geometric grid, then a fine one between the best point's
    # neighbours (steps of 1.33 then 1.024: finer than 200 even steps, at a
    # quarter of the likelihood evaluations), for each ε.
    coarse = np.geomspace(SIGMA_GAP_FLOOR_UM, high, NOISE_GRID)
    first = np.argmin(losses(coarse), axis=1)
    best_loss = np.empty(eps.size)
    best_sigma = np.empty(eps.size)
    for e, b in enumerate(first):
        fine = np.geomspace(coarse[max(b - 1, 0)], coarse[min(b + 1, coarse.size - 1)], NOISE_GRID)
        loss = losses(fine)[e]
        best_loss[e], best_sigma[e] = loss.min(), fine[np.argmin(loss)]
    chosen = int(np.argmin(best_loss))
    if best_loss[0] - best_loss[chosen] < BLUNDER_EVIDENCE:
        chosen = 0
    sigma, fraction = float(best_sigma[chosen]), float(eps.ravel()[chosen])
    if fraction == 0.0:
        return sigma, 0.0, np.zeros(gap.size, dtype=bool)
    regular = (1 - fraction) * regular_likelihood(np.array([sigma]))[0]
    return sigma, fraction, np.asarray(fraction * uniform > regular)


def _possible_atoms(support: FloatArray, probability: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The law's atoms that some particle can take, (K', N): a section row's law has one
    per grid node and cycle, most of them impossible for it."""
    order = np.argsort(-probability, axis=0, kind="stable")
    kept = max(int((probability > 0).sum(axis=0).max(initial=1)), 1)
    return (
        np.take_along_axis(support, order[:kept], axis=0),
        np.take_along_axis(probability, order[:kept], axis=0),
    )


def _row_likelihood(
    candidates: FloatArray, gap: FloatArray, support: FloatArray, probability: FloatArray
) -> FloatArray:
    """Likelihood of each measured gap at each candidate σ_0, (S, N) (see noise_scale)."""
    sigma = candidates[:, None, None]
    out = np.empty((candidates.size, gap.size))
    # Particles in chunks of about 2 million (σ, atom, particle) terms: a
    # section row's law has an atom per grid node and cycle.
    step = max(1, 2_000_000 // (candidates.size * max(support.shape[0], 1)))
    for start in range(0, gap.size, step):
        part = slice(start, start + step)
        z = (gap[None, None, part] - support[None, :, part]) / sigma  # (S, K, n)
        density = np.exp(-0.5 * z * z) / (np.sqrt(2.0 * np.pi) * sigma)
        clipped = scipy.special.ndtr(-support[None, :, part] / sigma)
        each = np.where(gap[None, None, part] <= 0.0, clipped, density)
        out[:, part] = np.einsum("skn,kn->sn", each, probability[:, part])
    return out


def _full_data_replicates(
    data: _Data, sigma_gap: FloatArray, sigma_retention: float, copies: int
) -> _Replicates:
    weight = 1.0 / sigma_gap
    return _Replicates(
        np.broadcast_to(data.gap, (copies, weight.size)),
        np.broadcast_to(weight, (copies, weight.size)),
        np.broadcast_to(data.population(), (copies, data.grid.size)),
        np.broadcast_to(data.retention, (copies, data.retention.size)),
        sigma_retention,
    )


def fit(
    particles: pd.DataFrame,
    capacity: pd.DataFrame | None = None,
    n_bootstrap: int = 2000,
    seed: int = 0,
    material: Material | None = None,
    *,
    sigma_gap_um: float | None = None,
    sigma_retention: float | None = None,
    radius_sd: float = RADIUS_SD,
    grid_size: int = 48,
    chunk: int = 1024,
    population: SizePopulation | None = None,
    method: str = "parametric",
    section_sizes: SectionSizes | None = None,
    silicon_surface_sd_um: float | Mapping[str, float] = 0.0,
    cbd_surface_sd_um: float | Mapping[str, float] = 0.0,
) -> FitResult:
    """Fit α0, κ0, δ0 and ζ0 to particle gaps and capacity retention, with bootstrap.

    Parameters
    ----------
    particles : DataFrame
        The particle table (DESIGN.md): at least ``cycles``, ``radius_um`` (µm)
        and ``gap_mean_um`` (µm); ``modality`` (``"3d"``/``"2d"``, default
        ``"3d"``). Rows with ``n_rays == 0`` or ``touches_border`` are left
        out; pristine rows (cycles 0) only enter the size population of the
        capacity term.
    capacity : DataFrame or None
        Silicon capacity retention: ``cycle`` (1, 2, …) and ``retention``
        (relative to cycle 1), e.g. from :func:`debond.model.cycling.silicon_retention`.
    n_bootstrap : int
        Number of bootstrap replicates B (0: the full-data fit alone).
    seed : int
        Seed of the resampling; the result is deterministic for a seed.
    material : Material, optional
        Default ``Material()`` (ΔV/V = 2.8, T = 20 h).
    sigma_gap_um : float, optional
        Measurement noise σ_0 of a mean gap in µm. Each particle's residual is
        scaled by σ_i = √(s_n(r_i)² + σ_0²), s_n the model's spread of the
        imaged gap at a first fit. Default: σ_0 estimated per (cycles,
        modality) stratum from that fit's residuals.
    sigma_retention : float, optional
        Residual scale σ_C of the retention. Default: the RMS residual of a
        first fit.
    radius_sd : float
        Relative standard deviation σ of a measured radius: the model is
        averaged over r·exp(σZ) (see :func:`radius_kernel`). Besides being
        real, this error smooths the objective, whose exact form jumps by κ0
        wherever a particle crosses a detachment threshold; 0 switches it off.
    grid_size : int
        Least number of radius-grid nodes on which m_n(r) is tabulated.
    chunk : int
        Replicates solved together; memory grows linearly with it.
    population : SizePopulation, optional
        The capacity term's particle population, in place of the table's
        rows; its replicates (at least ``n_bootstrap`` of them, when given)
        enter the bootstrap. Default: the table's 3D particles (all rows
        when it has none).
    method : {"parametric", "particles"}
        How the bootstrap draws its replicates: gaps drawn anew from the
        fitted model (default), or the particles resampled with replacement
        (the paper's Supplementary Note 11). See the module's notes.
    section_sizes : SectionSizes, optional
        The 3D size distribution behind the 2D rows (usually the unfolded
        sections, :func:`debond.pipeline.stereology.unfold_radii`): each
        fitted 2D row is then fitted through the law of its sphere's radius
        given its ``section_radius_um`` (see the module's notes), its
        ``radius_um`` being the R̂ its gap was converted at. None: 2D rows
        are fitted at ``radius_um`` like 3D rows.
    silicon_surface_sd_um, cbd_surface_sd_um : float or mapping of str to float
        Standard uncertainty of where the images place a 3D particle's
        silicon surface, and the CBD's surface across its gap, µm: one value,
        or one per sample (``sample`` → µm). The intervals then hold them
        (see the module's notes and :attr:`FitResult.surface`); 0 (default):
        the table's radii and gaps are taken as free of systematic error. 2D
        rows are not moved.

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError
        Bad tables (see :func:`debond.storage.tables.check_particles` and
        :func:`check_capacity`) or arguments.
    """
    material = material or Material()
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be an integer >= 0; got {n_bootstrap!r}")
    for name, value in (("sigma_gap_um", sigma_gap_um), ("sigma_retention", sigma_retention)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and > 0; got {value!r}")
    if not (np.isfinite(radius_sd) and radius_sd >= 0):
        raise ValueError(f"radius_sd must be finite and >= 0; got {radius_sd!r}")
    if method not in BOOTSTRAP_METHODS:
        raise ValueError(f"method must be one of {', '.join(BOOTSTRAP_METHODS)}; got {method!r}")
    if population is not None and population.replicates is not None:
        if population.replicates.shape[0] < n_bootstrap:
            raise ValueError(
                f"population has {population.replicates.shape[0]} bootstrap replicates; "
                f"n_bootstrap = {n_bootstrap} needs at least as many"
            )
    data = _prepare(particles, capacity, grid_size, radius_sd, population, section_sizes)
    offsets = {
        "silicon": surface_offsets(particles, silicon_surface_sd_um, "silicon_surface_sd_um"),
        "cbd": surface_offsets(particles, cbd_surface_sd_um, "cbd_surface_sd_um"),
    }

    # Full-data fit from a grid of starts with one σ per stratum (the spread of
    # its gaps); then per-particle σ_i from that fit, and refits (weights
    # settle in two rounds).
    starts = np.array(list(itertools.product(*STARTS.values())), dtype=np.float64)
    spread = np.array(
        [
            np.std(data.gap[data.particle_stratum == s])
            if (data.particle_stratum == s).any()
            else 1.0
            for s in range(len(data.strata))
        ]
    )
    sig_g = np.maximum(spread, SIGMA_GAP_FLOOR_UM)[data.particle_stratum]
    reps = _full_data_replicates(data, sig_g, sigma_retention or 0.02, len(starts))
    theta, cost, _ = _solve(data, reps, starts, material, chunk)
    best = theta[np.argmin(cost)]
    for _ in range(2):
        sig_g, noise, sig_c, _, _ = _residual_scales(
            data, best, material, sigma_gap_um, sigma_retention
        )
        reps = _full_data_replicates(data, sig_g, sig_c, 1)
        best = _solve(data, reps, best[None, :], material, chunk)[0][0]
    _, noise, _, cap_residual, blunder = _residual_scales(
        data, best, material, sigma_gap_um, sigma_retention
    )
    sig_g = np.where(blunder, np.inf, sig_g)
    moved: dict[str, dict[str, FloatArray]] = {}
    for kind, offset in offsets.items():
        if not offset.any():
            continue
        moved[kind] = {}
        for side, sign in (("outward", 1.0), ("inward", -1.0)):
            moved_data = _prepare(
                moved_surfaces(particles, **{f"{kind}_um": sign * offset}),
                capacity,
                grid_size,
                radius_sd,
                population,
                section_sizes,
            )
            reps = _full_data_replicates(moved_data, sig_g, sig_c, len(starts) + 1)
            theta, cost, _ = _solve(moved_data, reps, np.vstack([best, starts]), material, chunk)
            moved[kind][side] = theta[np.argmin(cost)]

    samples = _bootstrap(
        data,
        best,
        sig_g,
        noise,
        sig_c,
        cap_residual,
        n_bootstrap,
        seed,
        material,
        chunk,
        method,
    )
    if moved and len(samples):
        # One draw per kind of surface and replicate, drawn for both kinds always
        # (a seed gives the silicon draws whether or not the CBD's is given).
        z = np.random.default_rng([seed, 1]).standard_normal((len(samples), len(SURFACES)))
        shifted = samples[list(PARAMETER_NAMES)].to_numpy(copy=True)
        for k, kind in enumerate(SURFACES):
            if kind in moved:
                shifted += surface_shifts(
                    best, moved[kind]["outward"], moved[kind]["inward"], z[:, k]
                )
                samples[f"surface_z_{kind}"] = z[:, k]
        samples[list(PARAMETER_NAMES)] = np.clip(shifted, LOWER, UPPER)
    values = samples[list(PARAMETER_NAMES)].to_numpy()
    if len(samples):
        pct = np.percentile(values, [50, 16, 84], axis=0)
    else:
        pct = np.repeat(best[None, :], 3, axis=0)
    return FitResult(
        parameters={
            n: (float(pct[0, i]), float(pct[1, i]), float(pct[2, i]))
            for i, n in enumerate(PARAMETER_NAMES)
        },
        samples=samples,
        estimate=Parameters.from_array(best),
        sigma_gap_um={s: float(v) for s, v in zip(data.strata, noise, strict=True) if s[0] > 0},
        sigma_retention=float(sig_c) if data.capacity_cycles.size else None,
        material=material,
        n_bootstrap=int(n_bootstrap),
        seed=int(seed),
        capacity_population=_describe_population(data),
        method=method,
        section_rows=_describe_section_rows(data),
        blunders=_describe_blunders(data, blunder),
        surface=_describe_surface(particles, offsets, moved),
    )


def surface_offsets(
    particles: pd.DataFrame,
    surface_sd_um: float | Mapping[str, float],
    name: str = "surface_sd_um",
) -> FloatArray:
    """Each row's surface-placement uncertainty (:func:`fit`'s ``*_surface_sd_um``), µm.

    ``name`` is the argument's name in messages.

    Returns
    -------
    (len(particles),) ndarray
        The sample's value on 3D rows (a table without ``modality`` is all
        3D), 0 on 2D rows.

    Raises
    ------
    ValueError
        A negative or non-finite value, a per-sample mapping that lacks a
        sample of the 3D rows (or a table without ``sample``), or a value not
        small against the smallest 3D radius.

    Examples
    --------
    >>> table = pd.DataFrame({"sample": ["a", "b", "b"], "modality": ["3d", "3d", "2d"],
    ...                       "radius_um": [0.5, 0.6, 0.4]})
    >>> surface_offsets(table, {"a": 0.003, "b": 0.004}).tolist()
    [0.003, 0.004, 0.0]
    """
    n = len(particles)
    three_d = three_d_rows(particles)
    if isinstance(surface_sd_um, Mapping):
        given = {str(k): float(v) for k, v in surface_sd_um.items()}
        if "sample" not in particles:
            raise ValueError(
                f"{name} is given per sample, but the particle table has no 'sample' column"
            )
        names = particles["sample"].astype(str)
        missing = sorted(set(names[three_d]) - set(given))
        if missing:
            raise ValueError(
                f"{name} has no value for sample(s) {', '.join(missing)} "
                f"(given: {', '.join(sorted(given)) or 'none'})"
            )
        values = names.map(given).fillna(0.0).to_numpy(dtype=np.float64)
    else:
        values = np.full(n, float(surface_sd_um))
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        raise ValueError(f"{name} must be finite and >= 0 µm; got {values[bad][0]!r}")
    values = np.where(three_d, values, 0.0)
    radius = particles["radius_um"].to_numpy(dtype=np.float64)
    large = values > radius / 2
    if large.any():
        i = int(np.flatnonzero(large)[0])
        raise ValueError(
            f"{name} = {values[i]:g} µm is not small against a 3D radius of "
            f"{radius[i]:g} µm (row {i}); it is the uncertainty of a surface's place, "
            "a fraction of a voxel"
        )
    return np.asarray(values)


def moved_surfaces(
    particles: pd.DataFrame, silicon_um: ArrayLike = 0.0, cbd_um: ArrayLike = 0.0
) -> pd.DataFrame:
    """The particle table as measured with each row's surfaces moved outward.

    Parameters
    ----------
    particles : DataFrame
        ``radius_um`` and ``gap_mean_um``, µm.
    silicon_um, cbd_um : float or (len(particles),) array
        Outward move (away from the particle's centre; negative: inward) of
        each row's silicon surface and of the CBD's surface across its gap, µm.

    Returns
    -------
    DataFrame
        A copy with ``radius_um`` + silicon and ``gap_mean_um`` − silicon +
        CBD (at least 0, like a measured distance).

    Examples
    --------
    >>> table = pd.DataFrame({"radius_um": [0.5], "gap_mean_um": [0.1]})
    >>> moved = moved_surfaces(table, silicon_um=0.01, cbd_um=0.003)
    >>> [round(v, 6) for v in moved.iloc[0]]
    [0.51, 0.093]
    """
    silicon = np.asarray(silicon_um, dtype=np.float64)
    moved = particles.copy()
    moved["radius_um"] = particles["radius_um"].to_numpy(dtype=np.float64) + silicon
    gap = particles["gap_mean_um"].to_numpy(dtype=np.float64) - silicon + np.asarray(cbd_um)
    moved["gap_mean_um"] = np.clip(gap, 0.0, None)
    return moved


def surface_shifts(
    best: FloatArray, outward: FloatArray, inward: FloatArray, z: FloatArray
) -> FloatArray:
    """Parameter shifts of replicates whose surfaces lie z standard uncertainties out, (B, 4).

    Linear on each side of the estimate ``best`` (4,): z > 0 towards the
    estimate with every surface moved out by one uncertainty (``outward``),
    z < 0 towards ``inward``; a staircase objective may answer unevenly.

    Examples
    --------
    >>> best, out, inw = np.zeros(4), np.array([1.0, 0, 0, 0]), np.array([-2.0, 0, 0, 0])
    >>> surface_shifts(best, out, inw, np.array([0.5, -0.5]))[:, 0].tolist()
    [0.5, -1.0]
    """
    z = np.asarray(z, dtype=np.float64)[:, None]
    return np.asarray(np.where(z > 0, z * (outward - best), -z * (inward - best)))


def statistical_samples(result: FitResult) -> pd.DataFrame:
    """The bootstrap replicates as solved, before the surfaces' moves (:func:`surface_shifts`).

    Where the moves pushed a parameter past its bound (and it was clipped there),
    the value is approximate.

    Returns
    -------
    DataFrame
        ``result.samples`` with the parameters less each replicate's moves
        (the same table when the fit held no surface uncertainty).
    """
    if not result.surface or not len(result.samples):
        return result.samples
    best = result.estimate.as_array()
    values = result.samples[list(PARAMETER_NAMES)].to_numpy(copy=True)
    for kind, line in result.surface.items():
        outward, inward = (
            np.array([line[side][n] for n in PARAMETER_NAMES]) for side in ("outward", "inward")
        )
        z = result.samples[f"surface_z_{kind}"].to_numpy()
        values -= surface_shifts(best, outward, inward, z)
    solved = result.samples.copy()
    solved[list(PARAMETER_NAMES)] = values
    return solved


def _describe_surface(
    particles: pd.DataFrame,
    offsets: Mapping[str, FloatArray],
    moved: Mapping[str, Mapping[str, FloatArray]],
) -> dict[str, Any]:
    """The surface-placement uncertainties held by the intervals (:attr:`FitResult.surface`)."""
    samples = (
        particles["sample"].astype(str).to_numpy()
        if "sample" in particles
        else np.full(len(particles), "")
    )
    out: dict[str, Any] = {}
    for kind, sides in moved.items():
        offset = offsets[kind]
        out[kind] = {
            "sd_um": {
                str(s): float(offset[samples == s].max()) for s in np.unique(samples[offset > 0])
            },
            **{
                side: {n: float(v) for n, v in zip(PARAMETER_NAMES, theta, strict=True)}
                for side, theta in sides.items()
            },
        }
    return out


def _describe_blunders(data: _Data, blunder: NDArray[np.bool_]) -> list[dict[str, Any]]:
    """The rows read as blunders (:attr:`FitResult.blunders`)."""
    return [
        {
            "sample": str(data.row_sample[i]),
            "particle": int(data.row_particle[i]),
            "cycles": data.strata[data.particle_stratum[i]][0],
            "modality": data.strata[data.particle_stratum[i]][1],
            "radius_um": float(data.radius[i]),
            "gap_um": float(data.gap[i]),
        }
        for i in np.flatnonzero(blunder)
    ]


def _describe_section_rows(data: _Data) -> str:
    """How the fit took its 2D rows (:attr:`FitResult.section_rows`)."""
    if data.section_rows.any():
        return "law of R given r"
    return "point radius" if any(m == "2d" for c, m in data.strata if c > 0) else "none"


def _describe_population(data: _Data) -> dict[str, Any]:
    """The capacity term's population in words and numbers (for fit.json)."""
    if data.classes is not None:
        radius, count = data.classes.radius_um, data.classes.count
    else:
        radius = data.population_radius
        count = np.ones(radius.size)
    return {
        "source": data.population_source,
        "particles": float(count.sum()),
        "volume_weighted_radius_um": float((count * radius**4).sum() / (count * radius**3).sum()),
        "radius_um": radius.tolist(),
        "count": count.tolist(),
    }


def simulated_gaps(
    data: _Data,
    theta: FloatArray,
    noise: FloatArray,
    material: Material,
    rng: np.random.Generator,
    copies: int,
) -> FloatArray:
    """Draws of the fitted particles' measured gaps from the model at ``theta``, shape (B, N), µm.

    Each particle keeps its radius and cycle count; its imaged gap D is drawn
    from its law (:func:`imaged_gap_law`), and Gaussian measurement noise of
    its (cycles, modality) stratum's σ_0 (``noise``, µm) is added; the sum is
    clipped at 0 like a measured distance. A row fitted through its law of R
    draws its sphere first (:func:`section_gap_law`).
    """
    cycles = np.array(data.group_cycles)[data.particle_group]
    support, probability = imaged_gap_law(data.radius, cycles, theta, material)
    cumulative = np.cumsum(probability, axis=0)  # (K, N)
    u = rng.random((copies, data.radius.size))
    k = (u[:, None, :] > cumulative[None, :-1, :]).sum(axis=1)  # (B, N)
    drawn = support[k, np.arange(data.radius.size)[None, :]]
    if data.section_rows.any():
        s_support, s_probability = section_gap_law(data, theta, material)
        s_cumulative = np.cumsum(s_probability, axis=0)
        for column, row in enumerate(np.flatnonzero(data.section_rows)):
            atom = np.searchsorted(s_cumulative[:, column], u[:, row], side="right")
            drawn[:, row] = s_support[np.minimum(atom, s_support.shape[0] - 1), column]
    drawn = drawn + rng.normal(size=drawn.shape) * noise[data.particle_stratum][None, :]
    return np.asarray(np.clip(drawn, 0.0, None))


def replicate_starts(best: FloatArray, copies: int, rng: np.random.Generator) -> FloatArray:
    """Starting points of the replicate fits, scattered around the full-data estimate, (B, 4).

    The objective is a staircase (a particle's gap jumps by κ0 where it
    crosses a detachment threshold), with many near-equal minima inside the
    noise; which of them the full-data fit ends on is set by its starts. A
    replicate started at the estimate itself stays on the estimate's own
    tread, and the replicates spread less than the estimator does (on the
    paper-size data sets of ``benchmarks/coverage.py``, by 10–30 %). Each
    replicate therefore starts at θ̂·exp(s·Z) (Z standard normal, s =
    :data:`START_SPREAD`), κ0 also shifted up by up to :data:`START_KAPPA_UM`
    (its estimate may be 0).
    """
    scale = np.exp(START_SPREAD * rng.standard_normal((copies, best.size)))
    theta0 = best[None, :] * scale
    theta0[:, 1] += START_KAPPA_UM * rng.random(copies)
    return np.asarray(np.clip(theta0, LOWER, UPPER))


def _bootstrap(
    data: _Data,
    best: FloatArray,
    sigma_gap: FloatArray,
    noise: FloatArray,
    sigma_retention: float,
    cap_residual: FloatArray,
    n_bootstrap: int,
    seed: int,
    material: Material,
    chunk: int,
    method: str,
) -> pd.DataFrame:
    """Resample and refit B replicates; one row per replicate."""
    rng = np.random.default_rng(seed)
    n_population = data.population_stratum.size
    counts = np.zeros((n_bootstrap, n_population))
    for s in range(len(data.strata)):
        members = np.flatnonzero(data.population_stratum == s)
        counts[:, members] = rng.multinomial(
            members.size, np.full(members.size, 1.0 / members.size), size=n_bootstrap
        )
    # Fitted particles are the population rows with cycles > 0, in order.
    fitted = np.array([data.strata[s][0] > 0 for s in data.population_stratum])
    if method == "particles":
        weight_sqrt = np.sqrt(counts[:, fitted]) / sigma_gap
        gap = np.broadcast_to(data.gap, weight_sqrt.shape)
    else:
        weight_sqrt = np.broadcast_to(1.0 / sigma_gap, (n_bootstrap, sigma_gap.size))
        gap = simulated_gaps(data, best, noise, material, rng, n_bootstrap)
    if data.classes is None:
        population = counts @ data.population_to_grid
    elif data.classes.replicates is None:
        population = np.broadcast_to(data.population(), (n_bootstrap, data.grid.size))
    else:
        population = data.classes.replicates[:n_bootstrap] @ data.classes_to_grid

    population_fit = data.population()[None, :]
    _, fitted_retention = _predict(data, best[None, :], material, population_fit)
    if cap_residual.size:
        draw = rng.integers(0, cap_residual.size, size=(n_bootstrap, cap_residual.size))
        retention = fitted_retention + cap_residual[draw]
    else:
        retention = np.zeros((n_bootstrap, 0))
    reps = _Replicates(gap, weight_sqrt, population, retention, sigma_retention)
    theta0 = replicate_starts(best, n_bootstrap, rng)
    theta, cost, converged = _solve(data, reps, theta0, material, chunk)
    samples = pd.DataFrame(theta, columns=list(PARAMETER_NAMES))
    samples.insert(0, "replicate", np.arange(n_bootstrap))
    samples["cost"] = cost
    samples["converged"] = converged
    return samples
