"""The built-in demonstration: data drawn from the model, fitted back.

Draws a particle table (samples after 0, 1, 3 and 10 cycles, stochastic
disconnection and measurement noise) and a cycling CSV from the paper's
parameters, reads the CSV as a user's file would be read, fits with bootstrap
and compares the recovered parameters with the true ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from debond.model import (
    PAPER_PARAMETERS,
    FitResult,
    Material,
    Parameters,
    fit,
    read_cycling,
    silicon_retention,
)
from debond.model.synthetic import simulate_campaign, simulate_cycling
from debond.outputs import write_fit, write_json
from debond.storage.tables import PARTICLES_SCHEMA, read_particles, write_table

#: Coating mass of the demo electrode, mg.
DEMO_ELECTRODE_MASS_MG = 2.0


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its files, and the fit."""

    directory: Path
    result: FitResult
    truth: Parameters
    files: dict[str, Path]
    seconds: float


def run_demo(
    directory: str | os.PathLike[str],
    *,
    n_bootstrap: int = 2000,
    seed: int = 0,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Draw a campaign from the model, fit it, write tables and figures.

    Parameters
    ----------
    directory : path
        Output folder: ``tables/`` (particles.parquet, fit.json,
        bootstrap.parquet), ``echem/cycling.csv``, ``truth/parameters.json``
        and ``figures/``.
    n_bootstrap : int
        Bootstrap replicates.
    seed : int
        Seed of the drawn data and of the bootstrap.
    echo : callable
        Receives progress lines.

    Returns
    -------
    DemoResult
    """
    start = time.perf_counter()
    directory = Path(directory)
    truth, material = PAPER_PARAMETERS, Material()
    echo(f"drawing a campaign from the model (seed {seed}) into {directory}")
    campaign = simulate_campaign(truth, material, seed=seed)
    particles_path = write_table(
        campaign.particles, directory / "tables" / "particles.parquet", PARTICLES_SCHEMA
    )
    cycling_path = directory / "echem" / "cycling.csv"
    cycling_path.parent.mkdir(parents=True, exist_ok=True)
    cycling = simulate_cycling(
        campaign.capacity["retention_true"].to_numpy(), DEMO_ELECTRODE_MASS_MG, seed=seed
    )
    cycling.to_csv(cycling_path, index=False)
    write_json(
        {
            **{n: float(getattr(truth, n)) for n in ("alpha0", "kappa0", "delta0", "zeta0")},
            "volumetric_expansion": material.volumetric_expansion,
            "half_cycle_hours": material.half_cycle_hours,
            "electrode_mass_mg": DEMO_ELECTRODE_MASS_MG,
        },
        directory / "truth" / "parameters.json",
    )

    particles = read_particles(particles_path)
    capacity = silicon_retention(read_cycling(cycling_path), DEMO_ELECTRODE_MASS_MG)
    n_rows = len(particles)
    echo(
        f"fitting {n_rows} particles and {len(capacity)} cycles, {n_bootstrap} bootstrap replicates"
    )
    tick = time.perf_counter()
    result = fit(particles, capacity, n_bootstrap=n_bootstrap, seed=seed, material=material)
    echo(f"fitted in {time.perf_counter() - tick:.1f} s")
    files = write_fit(
        result, particles, capacity, directory / "tables", directory / "figures", truth=truth
    )
    files.update(particles=particles_path, cycling=cycling_path)
    return DemoResult(directory, result, truth, files, time.perf_counter() - start)
