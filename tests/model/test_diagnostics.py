"""Intervals at bounds and degenerate fits: what fit.json, the console and the report say."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from debond.model import Material, Parameters, fit
from debond.model.diagnostics import diagnose, intervals
from debond.model.synthetic import simulate_campaign
from debond.outputs import fit_document, parameter_table
from debond.report import fit_banner
from tests.model.oracle import oracle_gaps

HEALTHY = Parameters(alpha0=0.83, kappa0=0.1, delta0=0.12, zeta0=0.163)


@pytest.fixture(scope="module")
def healthy() -> tuple[object, pd.DataFrame]:
    """κ0 well away from its bound, 100 particles a group, 0.01 µm gap noise."""
    sim = simulate_campaign(
        HEALTHY, cycles=(1, 3, 10), particles_per_sample=100, gap_noise_um=0.01, seed=0
    )
    return fit(sim.particles, sim.capacity[["cycle", "retention"]], n_bootstrap=200), sim.particles


def test_a_healthy_fit_has_no_warning_and_no_banner(healthy: tuple[object, pd.DataFrame]) -> None:
    result, particles = healthy
    assert diagnose(result, particles) == []  # type: ignore[arg-type]
    assert {iv.side for iv in intervals(result).values()} == {"two-sided"}  # type: ignore[arg-type]
    document = fit_document(result, particles)  # type: ignore[arg-type]
    assert document["warnings"] == [] and fit_banner(document) == ""
    assert "WARNING" not in parameter_table(result, particles=particles)  # type: ignore[arg-type]


def test_a_parameter_on_its_bound_is_one_sided_in_fit_json_the_console_and_the_report(
    healthy: tuple[object, pd.DataFrame],
) -> None:
    """The same fit with 40 % of its κ0 replicates moved onto the bound 0."""
    result, particles = healthy
    samples = result.samples.copy()  # type: ignore[attr-defined]
    samples.loc[samples.index[: int(0.4 * len(samples))], "kappa0"] = 0.0
    forced = dataclasses.replace(result, samples=samples)  # type: ignore[type-var]
    kappa = intervals(forced)["kappa0"]
    assert (kappa.side, kappa.bound) == ("upper", 0.0)
    assert kappa.upper == pytest.approx(np.percentile(samples["kappa0"], 84))
    assert kappa.text().startswith("< ")
    document = fit_document(forced, particles)
    assert document["parameters"]["kappa0"]["side"] == "upper"
    assert [w["cause"] for w in document["warnings"]] == ["at_bound"]
    assert "kappa0 sits on its bound 0 in 40 %" in fit_banner(document)
    table = parameter_table(forced, particles=particles)
    (row,) = [line for line in table.splitlines() if line.startswith("κ0")]
    assert "< " in row and "(+0/−0)" not in row
    assert "WARNING: kappa0 sits on its bound" in table


def test_each_cause_is_named_with_its_number(healthy: tuple[object, pd.DataFrame]) -> None:
    result, particles = healthy
    samples = result.samples.copy()  # type: ignore[attr-defined]
    samples["converged"] = True
    samples.loc[samples.index[:20], "converged"] = False  # 10 % of 200
    samples["zeta0"] = samples["alpha0"] * 0.2  # moves with α0
    floors = {stratum: 1e-3 for stratum in result.sigma_gap_um}  # type: ignore[attr-defined]
    blunders = [
        {
            "sample": "c01",
            "particle": 7,
            "cycles": 1,
            "modality": "3d",
            "radius_um": 0.13,
            "gap_um": 1.65,
        }
    ]
    sick = dataclasses.replace(  # type: ignore[type-var]
        result, samples=samples, sigma_gap_um=floors, blunders=blunders
    )
    few = particles[(particles["cycles"] != 3) | (particles.index % 50 == 0)]
    found = {w["cause"]: w["message"] for w in diagnose(sick, few)}
    assert set(found) == {
        "not_converged",
        "inseparable",
        "scale_on_floor",
        "few_particles",
        "blunders",
    }
    assert "1 particle(s) hold gaps" in found["blunders"] and "c01/7 (1.65 µm)" in found["blunders"]
    assert "10.0 % of the 200 replicates" in found["not_converged"]
    assert "alpha0 and zeta0" in found["inseparable"]
    assert "the 3-cycle group has" in found["few_particles"]


def test_an_old_fit_json_is_read_with_a_clear_message() -> None:
    old = {"parameters": {"alpha0": {"value": 1.0, "lower": 0.9, "upper": 1.1}}, "bootstrap": 9}
    assert "written by an earlier version" in fit_banner(old)


def test_a_version_2_fit_json_says_its_intervals_are_not_calibrated() -> None:
    """A healthy fit.json of layout 2 (no bootstrap_method) still gets a banner, naming why."""
    old = {"fit_json_version": 2, "parameters": {}, "warnings": []}
    banner = fit_banner(old)
    assert "layout version 2" in banner and "Run debond fit again" in banner


def _own_campaign(seed: int, kappa0: float, noise_um: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Data drawn by this test from MODEL.md: gaps integrated by the time-stepping oracle,
    disconnection with p = ζ0·d at the end of every cycle, capacity C(n) = Σr³S/Σr³."""
    rng = np.random.default_rng(seed)
    truth = dict(alpha0=0.83, kappa0=kappa0, delta0=0.12)
    zeta0, strain = 0.163, Material().strain
    rows, survival, volumes = [], [], []
    for cycles in (1, 3, 10):
        for radius in rng.uniform(0.2, 1.2, 40):
            d = oracle_gaps(radius, 10, strain=strain, **truth)
            p = np.minimum(1.0, zeta0 * d)
            alive = np.cumprod(1.0 - p)
            stop = np.flatnonzero(rng.random(10) < p)
            k = min(int(stop[0]) + 1 if stop.size else 10, cycles)
            rows.append((cycles, radius, d[k - 1] + rng.normal(0.0, noise_um)))
            survival.append(np.concatenate([[1.0], alpha_prefix(alive)]))
            volumes.append(radius**3)
    particles = pd.DataFrame(rows, columns=["cycles", "radius_um", "gap_mean_um"])
    particles["n_rays"] = 64
    weights = np.array(volumes)
    retention = (np.array(survival) * weights[:, None]).sum(0) / weights.sum()
    capacity = pd.DataFrame(
        {"cycle": np.arange(1, 11), "retention": retention + rng.normal(0, 0.01, 10)}
    )
    return particles, capacity


def alpha_prefix(alive: np.ndarray) -> np.ndarray:
    """S(1) … S(9): the survival after each of the first nine cycles."""
    return alive[:9]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kappa0_reported_interval_holds_its_true_value(seed: int) -> None:
    """κ0 = 0.02 µm with 0.03 µm gap noise: the reported interval (one-sided on the bound,
    two-sided otherwise) contains 0.02 — never "0 (+0/−0)"."""
    particles, capacity = _own_campaign(seed, kappa0=0.02, noise_um=0.03)
    kappa = intervals(fit(particles, capacity, n_bootstrap=300, seed=seed))["kappa0"]
    low = kappa.bound if kappa.side == "upper" else kappa.lower
    high = kappa.bound if kappa.side == "lower" else kappa.upper
    assert low <= 0.02 <= high, kappa
    assert high > low
