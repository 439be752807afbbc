"""Fitting a run campaign: its particle table, cycling data and settings to fit.json.

The library side of ``debond fit CAMPAIGN.toml`` and of the demo. What is
fitted is read once, by :func:`fit_inputs`, for ``debond fit`` and ``debond
report`` alike: the particle table, the rows the fit uses
(:func:`debond.storage.tables.usable_rows`) and the silicon capacity
retention.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from debond.campaign import Campaign
from debond.model import (
    FitResult,
    Parameters,
    SizePopulation,
    fit,
    read_cycling,
    silicon_retention,
)
from debond.model.fitting import SURFACES
from debond.outputs import write_fit
from debond.pipeline.sem import usable_sections
from debond.pipeline.stereology import SizeDistribution, unfold_radii, unfold_radii_bootstrap
from debond.storage.tables import read_particles, three_d_rows, usable_rows

__all__ = [
    "CampaignFit",
    "FitInputs",
    "campaign_capacity",
    "capacity_population",
    "fit_campaign",
    "fit_inputs",
    "image_caveat",
    "section_population",
    "section_sizes",
    "surface_uncertainties",
    "synthetic_truth",
    "table_warnings",
]

#: What an interval from gaps measured on images holds, or misses without the
#: surface-placement uncertainties (README, "Accuracy": 20 campaigns of the
#: digital twin run through every stage and fitted; the 15 scans of
#: debond.scans.VARIANTS for the offsets).
SURFACES_HELD_CAVEAT = (
    "The intervals hold the uncertainty of where the images place the silicon and CBD "
    "surfaces ([fit] silicon_surface_sd_voxels = {silicon:g}, cbd_surface_sd_voxels = "
    "{cbd:g} voxel; the defaults are the root mean square of the offsets measured on 15 "
    "test scans made apart from the digital twin). On 20 campaigns of the twin, whose "
    "surfaces the segmentation places within 0.06 voxel, the default intervals held the "
    "truth in 95–100 % of them at 16–84 % (nominal 68 %): wider than the twin needs. A "
    "campaign whose placement has been measured (a phantom, a twin of its own scans) may "
    'set smaller values (README, "Accuracy").'
)
STATISTICAL_ONLY_CAVEAT = (
    "The intervals hold the fit's statistical error only ([fit] silicon_surface_sd_voxels "
    "= {silicon:g}, cbd_surface_sd_voxels = {cbd:g} voxel). Gaps measured on images also "
    "carry the systematic error of where the surfaces are placed: on 20 campaigns of the "
    "digital twin, α0 came out about 0.03 (4 %) high, 1.3 times its 16–84 % half-width, and "
    "that interval held the true α0 in 35 % of them (δ0 50 %, ζ0 55 %; README, "
    '"Accuracy"). Read the intervals as too narrow.'
)


def image_caveat(settings: Mapping[str, Any]) -> str:
    """What the intervals of a campaign's image-derived table hold, per its ``[fit]`` section.

    Examples
    --------
    >>> image_caveat({"silicon_surface_sd_voxels": 0.0, "cbd_surface_sd_voxels": 0.4})[:48]
    "The intervals hold the fit's statistical error o"
    """
    values = {kind: float(settings[f"{kind}_surface_sd_voxels"]) for kind in SURFACES}
    held = all(v > 0 for v in values.values())
    return (SURFACES_HELD_CAVEAT if held else STATISTICAL_ONLY_CAVEAT).format(**values)


#: Size classes per bin of the unfolded distribution given to the capacity term
#: (the radius is uniform within a bin; its survival is not).
CLASSES_PER_BIN = 8


@dataclass(frozen=True)
class FitInputs:
    """The data a campaign's fit uses, read once for ``debond fit`` and ``debond report``.

    Attributes
    ----------
    table : Path
        ``tables/<campaign>/particles.parquet``.
    particles : DataFrame
        Every row of the particle table.
    capacity : DataFrame or None
        Silicon capacity retention per cycle (None without cycling data).
    warnings : list of dict
        What the fit should say about the table: each campaign sample that
        has no row in it, and rows of samples that are not the campaign's
        (:func:`table_warnings`).
    """

    table: Path
    particles: pd.DataFrame
    capacity: pd.DataFrame | None
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def usable(self) -> pd.DataFrame:
        """The rows the fit uses: measured (a valid ray) and whole (off the border)."""
        return self.particles[usable_rows(self.particles)]


def table_warnings(
    campaign: Campaign, particles: pd.DataFrame, table: Path
) -> list[dict[str, Any]]:
    """Samples of the campaign without rows in the particle table, and rows of other samples.

    A sample without rows failed or was never measured, and the fit goes on
    without it; rows of a sample the campaign does not name are not its own.

    Returns
    -------
    list of dict
        As :func:`debond.model.diagnostics.diagnose`'s entries: ``cause``
        (``"sample_without_rows"`` or ``"rows_of_another_sample"``),
        ``message`` (one line naming the sample) and ``value`` (its id).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "c0.tif").write_bytes(b"")
    >>> _ = (folder / "c.toml").write_text('''
    ... [campaign]
    ... name = "x"
    ... [[sample]]
    ... id = "c0"
    ... cycles = 0
    ... phases = "c0.tif"
    ... phase_codes = {pore = 0, silicon = 1, cbd = 2}
    ... voxel_size_um = 0.03
    ... ''')
    >>> from debond.campaign import load_campaign
    >>> found = table_warnings(load_campaign(folder / "c.toml"),
    ...                        pd.DataFrame({"sample": ["b1"]}), pathlib.Path("particles.parquet"))
    >>> [(w["cause"], w["value"]) for w in found]
    [('sample_without_rows', 'c0'), ('rows_of_another_sample', 'b1')]
    >>> found[0]["message"]  # doctest: +NORMALIZE_WHITESPACE
    "sample 'c0' has no rows in particles.parquet: its measure and sem stages failed or have
     not run (`debond run` says which); the fit goes on without it"
    """
    if "sample" not in particles:
        return []
    found = set(particles["sample"].astype(str))
    named = [sample.id for sample in campaign.samples]
    warnings = [
        {
            "cause": "sample_without_rows",
            "message": f"sample {sample!r} has no rows in {table}: its measure and sem stages "
            "failed or have not run (`debond run` says which); the fit goes on without it",
            "value": sample,
        }
        for sample in named
        if sample not in found
    ]
    warnings += [
        {
            "cause": "rows_of_another_sample",
            "message": f"{table} holds rows of sample {sample!r}, which the campaign does not name",
            "value": sample,
        }
        for sample in sorted(found - set(named))
    ]
    return warnings


def fit_inputs(campaign: Campaign) -> FitInputs:
    """The particle table and capacity data of a run campaign.

    Raises
    ------
    CampaignError
        A sample without ``cycles`` (the fit needs every sample's), named
        with the key; checked first, before the table is looked for.
    FileNotFoundError
        No particle table yet; the message says to run ``debond run``.
    ValueError
        Bad cycling data or a table that does not validate.
    """
    campaign.require_cycles("the fit")
    table = campaign.tables_dir / "particles.parquet"
    if not table.is_file():
        earlier = ", ".join(path.name for path in campaign.earlier_tables())
        note = (
            f" (tables of an earlier version lie directly in {table.parent.parent}: {earlier}; "
            "the run moves them here when this is the folder's only campaign file)"
            if earlier
            else ""
        )
        raise FileNotFoundError(
            f"{table} does not exist; run `debond run {campaign.path}` first to measure "
            f"the particles{note}"
        )
    particles = read_particles(table)
    return FitInputs(
        table,
        particles,
        campaign_capacity(campaign),
        table_warnings(campaign, particles, table),
    )


def surface_uncertainties(
    campaign: Campaign, settings: Mapping[str, Any], particles: pd.DataFrame, table: Path
) -> dict[str, dict[str, float]]:
    """:func:`debond.model.fit`'s surface-placement uncertainties of a campaign, µm.

    ``[fit] silicon_surface_sd_voxels`` and ``cbd_surface_sd_voxels`` times
    each sample's voxel edge, for the samples with a volume (their 3D rows;
    SEM rows are not moved).

    Returns
    -------
    dict
        Per kind of surface (:data:`debond.model.fitting.SURFACES`): sample id → µm.

    Raises
    ------
    ValueError
        3D rows of the particle table (`table`, for the message) whose sample
        the campaign does not list with a volume.
    """
    voxels = {s.id: s.voxel_um for s in campaign.samples if s.has_volume}
    rows = particles[three_d_rows(particles)]
    unknown = sorted(set(rows["sample"].astype(str)) - set(voxels))
    if unknown:
        raise ValueError(
            f"{table}: 3D rows of sample(s) {', '.join(unknown)}, which {campaign.path} does "
            f"not list with a volume (its samples with one: {', '.join(voxels) or 'none'}); "
            "run `debond run` again after changing the samples"
        )
    return {
        kind: {
            sample: float(settings[f"{kind}_surface_sd_voxels"]) * voxel
            for sample, voxel in voxels.items()
        }
        for kind in SURFACES
    }


@dataclass(frozen=True)
class CampaignFit:
    """A fitted campaign and the files written.

    Attributes
    ----------
    result : FitResult
    particles : DataFrame
        The particle table fitted.
    capacity : DataFrame or None
        Silicon capacity retention per cycle (None without cycling data).
    truth : Parameters or None
        The true parameters of a synthetic campaign.
    files : dict of str to Path
        What :func:`debond.outputs.write_fit` wrote.
    warnings : list of dict
        About the particle table (:func:`table_warnings`); also in ``fit.json``.
    caveats : list of str
        What the intervals hold and do not (:func:`image_caveat` for a
        campaign's image-derived table); also in ``fit.json``.
    """

    result: FitResult
    particles: pd.DataFrame
    capacity: pd.DataFrame | None
    truth: Parameters | None
    files: dict[str, Path]
    warnings: list[dict[str, Any]] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)


def synthetic_truth(folder: Path) -> Parameters | None:
    """The true parameters of a synthetic campaign (``truth/parameters.json``), if any."""
    path = folder / "truth" / "parameters.json"
    if not path.is_file():
        return None
    values = json.loads(path.read_text())
    return Parameters(*(float(values[n]) for n in ("alpha0", "kappa0", "delta0", "zeta0")))


def campaign_capacity(campaign: Campaign) -> pd.DataFrame | None:
    """Silicon capacity retention from the campaign's cycling CSV and recipe (MODEL.md)."""
    if campaign.cycling is None:
        return None
    if campaign.electrode_mass_mg is None:
        raise ValueError(f"{campaign.path}: electrochemistry.cycling needs electrode_mass_mg")
    return silicon_retention(
        read_cycling(campaign.cycling), campaign.electrode_mass_mg, campaign.recipe
    )


def _usable_sections(particles: pd.DataFrame) -> pd.DataFrame:
    """The particle table's 2D rows fit for stereology (none without the columns)."""
    if not {"modality", "section_radius_um", "touches_border", "n_rays"} <= set(particles):
        return particles.iloc[:0]
    rows = particles[particles["modality"] == "2d"]
    return rows[usable_sections(rows)]


def section_sizes(particles: pd.DataFrame) -> SizeDistribution | None:
    """The 3D size distribution behind the table's usable SEM sections, unfolded.

    The same unfolding as the table's conversion of the sections
    (:func:`debond.particles.convert_sections`), so that the fit's law of R
    given r (:func:`debond.model.fit`, ``section_sizes``) is the one whose mean
    gave each 2D row its ``radius_um``. None when there is no usable section.
    """
    rows = _usable_sections(particles)
    if rows.empty:
        return None
    return unfold_radii(rows["section_radius_um"].to_numpy())


def section_population(
    particles: pd.DataFrame, n_bootstrap: int, seed: int
) -> SizePopulation | None:
    """The capacity term's particles as the 3D size distribution of the SEM sections.

    The usable 2D rows' section radii are unfolded
    (:func:`debond.pipeline.stereology.unfold_radii_bootstrap`), with
    ``n_bootstrap`` replicates that resample the sections inside each sample,
    as the fit's bootstrap resamples its particles. Each size bin becomes
    :data:`CLASSES_PER_BIN` classes at equal steps across it, and the number
    fractions become counts of the sections' particles.

    Parameters
    ----------
    particles : DataFrame
        The particle table; its rows with ``modality == "2d"`` are used.
    n_bootstrap : int
        Replicates (the fit's).
    seed : int
        Seed of the resampling.

    Returns
    -------
    SizePopulation or None
        None when the table has no usable section.
    """
    rows = _usable_sections(particles)
    if rows.empty:
        return None
    distribution, replicates = unfold_radii_bootstrap(
        rows["section_radius_um"].to_numpy(),
        n_bootstrap,
        np.random.default_rng([seed, 2]),
        groups=rows["sample"].to_numpy(),
    )
    lo, hi = distribution.edges[:-1, None], distribution.edges[1:, None]
    steps = (np.arange(CLASSES_PER_BIN) + 0.5) / CLASSES_PER_BIN
    radius = (lo + (hi - lo) * steps).ravel()
    share = len(rows) / CLASSES_PER_BIN  # sections per unit fraction, per class

    def spread(fraction: np.ndarray) -> np.ndarray:
        return np.repeat(fraction * share, CLASSES_PER_BIN, axis=-1)

    return SizePopulation(
        radius_um=radius,
        count=spread(distribution.number_fraction),
        replicates=spread(replicates),
        source="SEM sections, unfolded",
    )


def capacity_population(
    particles: pd.DataFrame, choice: str, n_bootstrap: int, seed: int
) -> SizePopulation | None:
    """The capacity term's particles for ``[fit] capacity_population``.

    Parameters
    ----------
    particles : DataFrame
        The particle table.
    choice : {"auto", "3d", "sections"}
        ``"3d"``: the table's 3D particles (None is returned: :func:`fit`'s
        default); ``"sections"``: the unfolded SEM sections
        (:func:`section_population`); ``"auto"``: the sections where the table
        has any, else the 3D particles.
    n_bootstrap, seed : int
        The fit's replicates and seed.

    Raises
    ------
    ValueError
        ``"sections"`` for a table without a usable section, or an unknown choice.
    """
    if choice not in ("auto", "3d", "sections"):
        raise ValueError(f"capacity_population: expected auto, 3d or sections; got {choice!r}")
    if choice == "3d":
        return None
    population = section_population(particles, n_bootstrap, seed)
    if population is None and choice == "sections":
        raise ValueError(
            "capacity_population = 'sections', but the particle table holds no usable SEM section "
            "(2D rows off the image border, with a gap)"
        )
    return population


def fit_campaign(
    campaign: Campaign,
    *,
    bootstrap: int | None = None,
    seed: int | None = None,
    output: Path | None = None,
    method: str = "parametric",
    surface_sd_voxels: Mapping[str, float] | None = None,
) -> CampaignFit:
    """Fit the model to a run campaign and write ``fit.json``, ``bootstrap.parquet`` and figures.

    Parameters
    ----------
    campaign : Campaign
    bootstrap, seed : int, optional
        Override ``[fit] bootstrap`` and ``seed``.
    output : Path, optional
        Folder for the tables (figures in ``output/figures``); default the
        campaign's ``tables/`` and ``figures/``.
    method : {"parametric", "particles"}
        How the bootstrap draws its replicates (:func:`debond.model.fit`).
    surface_sd_voxels : mapping, optional
        Override ``[fit] silicon_surface_sd_voxels`` and ``cbd_surface_sd_voxels``
        (keys ``"silicon"``, ``"cbd"``; voxels).

    Returns
    -------
    CampaignFit

    Raises
    ------
    ValueError
        A sample without ``cycles`` (a :class:`~debond.campaign.CampaignError`
        naming it), no particle table yet (the message says to run ``debond
        run``), or bad data.
    """
    settings = campaign.stage_parameters("fit")
    for kind, value in (surface_sd_voxels or {}).items():
        settings[f"{kind}_surface_sd_voxels"] = value
    try:
        inputs = fit_inputs(campaign)
    except FileNotFoundError as error:
        raise ValueError(str(error)) from None
    particles, capacity, table = inputs.particles, inputs.capacity, inputs.table
    n_bootstrap = settings["bootstrap"] if bootstrap is None else bootstrap
    seed = settings["seed"] if seed is None else seed
    try:
        population = capacity_population(
            particles, settings["capacity_population"], n_bootstrap, seed
        )
    except ValueError as error:
        raise ValueError(f"{campaign.path}: fit.{error} ({table})") from None
    surface = surface_uncertainties(campaign, settings, particles, table)
    result = fit(
        particles,
        capacity,
        n_bootstrap=n_bootstrap,
        seed=seed,
        material=campaign.material,
        sigma_gap_um=settings["sigma_gap_um"],
        sigma_retention=settings["sigma_retention"],
        population=population,
        method=method,
        section_sizes=section_sizes(particles),
        silicon_surface_sd_um=surface["silicon"],
        cbd_surface_sd_um=surface["cbd"],
    )
    truth = synthetic_truth(campaign.folder)
    caveats = [image_caveat(settings)]
    tables = output or campaign.tables_dir
    figures = output / "figures" if output else campaign.folder / "figures"
    files = write_fit(
        result,
        particles,
        capacity,
        tables,
        figures,
        truth=truth,
        warnings=inputs.warnings,
        caveats=caveats,
    )
    return CampaignFit(result, particles, capacity, truth, files, inputs.warnings, caveats)
