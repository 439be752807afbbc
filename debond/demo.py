"""The built-in demonstration: a synthetic campaign from raw files to fitted parameters.

``debond demo [DIR]`` (and ``make demo``) writes the ``demo`` synthetic
campaign (four samples after 0, 1, 3 and 10 cycles, with known ground
truth), runs every image stage on an embedded Dask cluster, fits the model to
the measured particles and the cycling data with bootstrap, writes the HTML
report, and compares the recovered parameters with the true ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from debond.analysis import CampaignFit, fit_campaign
from debond.campaign import load_campaign
from debond.cluster import cluster
from debond.report import write_report
from debond.runner import run_campaign
from debond.synth import write_campaign

__all__ = ["DemoResult", "run_demo"]


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its files, the fit, and how long each step took.

    Attributes
    ----------
    directory : Path
        The campaign folder (``campaign.toml``, ``raw/``, ``store.zarr``,
        ``tables/campaign/``, ``figures/``, ``report.html``, ``truth/``).
    fitted : CampaignFit
    report : Path
    seconds : dict of str to float
        Wall time of ``synth``, ``run``, ``fit`` and ``report``, s.
    """

    directory: Path
    fitted: CampaignFit
    report: Path
    seconds: dict[str, float]


def run_demo(
    directory: str | os.PathLike[str],
    *,
    n_bootstrap: int = 2000,
    seed: int = 0,
    workers: int | None = None,
    preset: str = "demo",
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Synthesise, run, fit and report the demo campaign.

    Parameters
    ----------
    directory : path
        Output folder (created; an earlier demo there is resumed: current
        outputs are kept).
    n_bootstrap : int
        Bootstrap replicates of the fit.
    seed : int
        Seed of the synthetic campaign and of the bootstrap.
    workers : int, optional
        Worker processes of the embedded cluster (default: one per core).
    preset : str
        Synthetic preset (``demo``; ``small`` for a quick look).
    echo : callable
        Receives progress lines.

    Returns
    -------
    DemoResult
    """
    directory = Path(directory)
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    campaign_file = directory / "campaign.toml"
    if campaign_file.is_file():
        echo(f"using the synthetic campaign already in {directory}")
    else:
        echo(f"writing the {preset!r} synthetic campaign (seed {seed}) into {directory}")
        write_campaign(directory, preset, seed, progress=echo)
    seconds["synth"] = time.perf_counter() - tick

    tick = time.perf_counter()
    campaign = load_campaign(campaign_file)
    with cluster(workers=workers, echo=echo) as client:
        run_campaign(campaign, client, echo=echo)
    seconds["run"] = time.perf_counter() - tick

    tick = time.perf_counter()
    echo(f"fitting the particle table with {n_bootstrap} bootstrap replicates")
    fitted = fit_campaign(campaign, bootstrap=n_bootstrap, seed=seed)
    seconds["fit"] = time.perf_counter() - tick

    tick = time.perf_counter()
    report = write_report(campaign, echo=echo)
    seconds["report"] = time.perf_counter() - tick
    return DemoResult(directory, fitted, report, seconds)
