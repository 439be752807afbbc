"""Fitting a run campaign: its particle table, cycling data and settings to fit.json.

The library side of ``debond fit CAMPAIGN.toml`` and of the demo.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from debond.campaign import Campaign
from debond.model import FitResult, Parameters, fit, read_cycling, silicon_retention
from debond.outputs import write_fit
from debond.storage.tables import read_particles

__all__ = ["CampaignFit", "campaign_capacity", "fit_campaign", "synthetic_truth"]


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
    """

    result: FitResult
    particles: pd.DataFrame
    capacity: pd.DataFrame | None
    truth: Parameters | None
    files: dict[str, Path]


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


def fit_campaign(
    campaign: Campaign,
    *,
    bootstrap: int | None = None,
    seed: int | None = None,
    output: Path | None = None,
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

    Returns
    -------
    CampaignFit

    Raises
    ------
    ValueError
        No particle table yet (the message says to run ``debond run``), or bad data.
    """
    settings = campaign.stage_parameters("fit")
    table = campaign.tables_dir / "particles.parquet"
    if not table.is_file():
        raise ValueError(
            f"{table} does not exist; run `debond run {campaign.path}` first to measure "
            "the particles"
        )
    particles = read_particles(table)
    capacity = campaign_capacity(campaign)
    result = fit(
        particles,
        capacity,
        n_bootstrap=settings["bootstrap"] if bootstrap is None else bootstrap,
        seed=settings["seed"] if seed is None else seed,
        material=campaign.material,
        sigma_gap_um=settings["sigma_gap_um"],
        sigma_retention=settings["sigma_retention"],
    )
    truth = synthetic_truth(campaign.folder)
    tables = output or campaign.tables_dir
    figures = output / "figures" if output else campaign.folder / "figures"
    files = write_fit(result, particles, capacity, tables, figures, truth=truth)
    return CampaignFit(result, particles, capacity, truth, files)
