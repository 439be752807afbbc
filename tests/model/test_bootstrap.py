"""The parametric bootstrap's pieces: the imaged gap's law, its draws, and the noise estimate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from debond.model import PAPER_PARAMETERS, Material, fit, fitting
from debond.model.synthetic import imaged_gaps, simulate_campaign
from tests.model.oracle import oracle_gaps

THETA = np.array([0.83, 0.02, 0.12, 0.163])


def test_the_imaged_gap_law_follows_model_md_written_out_per_particle() -> None:
    """Support from the time-stepping oracle; P(K = k) = p_k·∏(1 − p_j), P(K = n) = ∏(1 − p_j)."""
    radius = np.array([0.2, 0.7, 1.4])
    cycles = np.array([1, 3, 10])
    support, probability = fitting.imaged_gap_law(radius, cycles, THETA, Material())
    assert support.shape == probability.shape == (10, 3)
    for i, (r, n) in enumerate(zip(radius, cycles, strict=True)):
        d = oracle_gaps(r, 10, alpha0=0.83, kappa0=0.02, delta0=0.12, strain=Material().strain)
        np.testing.assert_allclose(support[:, i], d, atol=1e-6)
        p = np.minimum(1.0, 0.163 * d)
        expected = np.zeros(10)
        for k in range(1, n + 1):
            before = np.prod(1.0 - p[: k - 1])
            expected[k - 1] = before * p[k - 1] if k < n else before
        np.testing.assert_allclose(probability[:, i], expected, atol=1e-6)
        assert probability[:, i].sum() == pytest.approx(1.0)


def test_drawn_gaps_follow_the_law_the_simulator_draws() -> None:
    """The bootstrap's draws against debond.model.synthetic's particle-by-particle process:
    a two-sample Kolmogorov–Smirnov test per cycle group, and the noise's standard deviation."""
    sim = simulate_campaign(PAPER_PARAMETERS, cycles=(1, 3, 10), particles_per_sample=4, seed=0)
    data = fitting._prepare(sim.particles, None, 48, 0.0)
    noise = np.full(len(data.strata), 0.03)
    drawn = fitting.simulated_gaps(data, THETA, noise, Material(), np.random.default_rng(1), 20000)
    rng = np.random.default_rng(2)
    cycles = np.array(data.group_cycles)[data.particle_group]
    for i in range(data.radius.size):
        reference = imaged_gaps(
            np.full(20000, data.radius[i]), int(cycles[i]), PAPER_PARAMETERS, Material(), rng
        )
        reference = np.clip(reference + rng.normal(0.0, 0.03, reference.size), 0.0, None)
        assert stats.ks_2samp(drawn[:, i], reference).pvalue > 1e-3, i


def test_the_noise_estimate_maximises_the_mixture_likelihood() -> None:
    """σ_0 from a sample drawn with known noise: close to the truth, and at the maximum
    of the likelihood written independently (scipy.stats.norm, scalar optimiser)."""
    rng = np.random.default_rng(3)
    support = np.array([[0.1] * 300, [0.4] * 300])
    probability = np.array([[0.7] * 300, [0.3] * 300])
    which = rng.random(300) < 0.3
    gap = np.where(which, 0.4, 0.1) + rng.normal(0.0, 0.03, 300)
    found = fitting.noise_scale(gap, support, probability)

    def loss(sigma: float) -> float:
        like = 0.7 * stats.norm.pdf(gap, 0.1, sigma) + 0.3 * stats.norm.pdf(gap, 0.4, sigma)
        return float(-np.log(like).sum())

    best = optimize.minimize_scalar(loss, bounds=(1e-3, 0.5), method="bounded").x
    assert found == pytest.approx(best, rel=0.03)
    assert found == pytest.approx(0.03, rel=0.15)


def test_an_unknown_bootstrap_method_is_named() -> None:
    sim = simulate_campaign(PAPER_PARAMETERS, cycles=(1,), particles_per_sample=10, seed=0)
    with pytest.raises(ValueError, match="method must be one of parametric, particles; got 'x'"):
        fit(sim.particles, n_bootstrap=0, method="x")


def test_both_methods_record_themselves_in_fit_json() -> None:
    sim = simulate_campaign(PAPER_PARAMETERS, cycles=(1, 3), particles_per_sample=20, seed=0)
    for method in fitting.BOOTSTRAP_METHODS:
        result = fit(sim.particles, n_bootstrap=20, seed=0, method=method)
        assert result.summary()["bootstrap_method"] == method
        assert len(result.samples) == 20


def test_blunders_are_told_from_the_noise_and_only_where_there_are_some() -> None:
    """Gaps drawn from a two-valued law with 0.03 µm noise, and the same with four
    gaps replaced by values the law cannot give: σ_0 and the blunders found, against
    the likelihood written independently (scipy.stats) with the blunders left out."""
    rng = np.random.default_rng(4)
    support = np.array([[0.1] * 200, [0.4] * 200])
    probability = np.array([[0.7] * 200, [0.3] * 200])
    gap = np.where(rng.random(200) < 0.3, 0.4, 0.1) + rng.normal(0.0, 0.03, 200)
    sigma, fraction, blunder = fitting.noise_law(gap, support, probability)
    assert fraction == 0.0 and not blunder.any()
    assert sigma == fitting.noise_scale(gap, support, probability)

    spoiled = gap.copy()
    wrong = np.array([5, 50, 120, 190])
    spoiled[wrong] = [1.0, 1.65, 0.9, 1.3]  # a spurious object's gap, µm
    sigma, fraction, blunder = fitting.noise_law(spoiled, support, probability)
    assert fraction > 0
    np.testing.assert_array_equal(np.flatnonzero(blunder), wrong)

    def loss(s: float) -> float:
        rest = np.delete(spoiled, wrong)
        like = 0.7 * stats.norm.pdf(rest, 0.1, s) + 0.3 * stats.norm.pdf(rest, 0.4, s)
        return float(-np.log(like).sum())

    best = optimize.minimize_scalar(loss, bounds=(1e-3, 0.5), method="bounded").x
    assert sigma == pytest.approx(best, rel=0.1)
    # without the blunder model, the four gaps set the noise of all 200
    assert fitting.noise_scale(spoiled, support, probability) > 3 * sigma


def test_spurious_particles_are_left_out_of_the_fit_and_named() -> None:
    """Three spurious 3D rows (two-voxel objects with 1–1.6 µm gaps, as a noisy
    segmentation gives) added to a drawn table: the fit names exactly them in
    fit.json and its estimate stays at the clean table's; without them named, the
    1-cycle group's noise would be set by them."""
    sim = simulate_campaign(PAPER_PARAMETERS, cycles=(0, 1, 3, 10), particles_per_sample=40, seed=5)
    clean = sim.particles
    spurious = (
        clean[clean["cycles"] == 1]
        .head(3)
        .assign(
            particle=[900, 901, 902], radius_um=[0.13, 0.14, 0.13], gap_mean_um=[1.0, 1.65, 1.02]
        )
    )
    table = pd.concat([clean, spurious], ignore_index=True)
    capacity = sim.capacity[["cycle", "retention"]]
    base = fit(clean, capacity, n_bootstrap=200)
    found = fit(table, capacity, n_bootstrap=0)
    assert base.blunders == []
    assert sorted(b["particle"] for b in found.blunders) == [900, 901, 902]
    assert found.summary()["blunders"] == found.blunders
    # α0, δ0, ζ0 at the clean estimate; κ0 (a staircase: near-equal minima) inside
    # the clean fit's 2.5–97.5 % interval
    for i in (0, 2, 3):
        assert found.estimate.as_array()[i] == pytest.approx(base.estimate.as_array()[i], rel=0.05)
    kappa = np.percentile(base.samples["kappa0"], [2.5, 97.5])
    assert kappa[0] <= found.estimate.kappa0 <= kappa[1]
    assert found.sigma_gap_um[(1, "3d")] == pytest.approx(base.sigma_gap_um[(1, "3d")], rel=0.2)


def _surface_campaign() -> tuple[pd.DataFrame, pd.DataFrame]:
    sim = simulate_campaign(PAPER_PARAMETERS, cycles=(0, 1, 3, 10), particles_per_sample=40, seed=4)
    return sim.particles, sim.capacity[["cycle", "retention"]]


def test_surfaces_moved_by_the_fit_are_tables_measured_with_moved_surfaces() -> None:
    """fit()'s outward and inward estimates against its own full-data fit of a table whose
    surfaces the test moved itself (radius + b and gap − b for silicon, gap + c for CBD)."""
    particles, capacity = _surface_campaign()
    fixed = {"sigma_gap_um": 0.03, "sigma_retention": 0.01}
    b, c = 0.01, 0.02
    result = fit(
        particles,
        capacity,
        n_bootstrap=0,
        silicon_surface_sd_um=b,
        cbd_surface_sd_um=c,
        **fixed,
    )
    best = result.estimate.as_array()
    for side, sign in (("outward", 1.0), ("inward", -1.0)):
        tables = {
            "silicon": particles.assign(
                radius_um=particles["radius_um"] + sign * b,
                gap_mean_um=(particles["gap_mean_um"] - sign * b).clip(lower=0.0),
            ),
            "cbd": particles.assign(
                gap_mean_um=(particles["gap_mean_um"] + sign * c).clip(lower=0.0)
            ),
        }
        for kind, table in tables.items():
            direct = fit(table, capacity, n_bootstrap=0, **fixed).estimate.as_array()
            moved = np.array([result.surface[kind][side][n] for n in fitting.PARAMETER_NAMES])
            assert set(result.surface[kind]["sd_um"].values()) == {b if kind == "silicon" else c}
            # α0, δ0, ζ0 (κ0 sits on a staircase); the fit keeps the full data's weights
            for i in (0, 2, 3):
                assert abs(moved[i] - direct[i]) <= 0.15 * abs(moved[i] - best[i]) + 1e-3, (
                    kind,
                    side,
                    fitting.PARAMETER_NAMES[i],
                )


def test_replicates_are_moved_along_the_surface_lines() -> None:
    """Each replicate is the same replicate without the uncertainty, moved by
    surface_shifts for its recorded draws, and its intervals are wider."""
    particles, capacity = _surface_campaign()
    plain = fit(particles, capacity, n_bootstrap=60, seed=2)
    held = fit(
        particles,
        capacity,
        n_bootstrap=60,
        seed=2,
        silicon_surface_sd_um=0.01,
        cbd_surface_sd_um=0.02,
    )
    names = list(fitting.PARAMETER_NAMES)
    best = held.estimate.as_array()
    expected = plain.samples[names].to_numpy()
    for kind in fitting.SURFACES:
        line = [
            np.array([held.surface[kind][side][n] for n in names]) for side in ("outward", "inward")
        ]
        expected = expected + fitting.surface_shifts(
            best, *line, held.samples[f"surface_z_{kind}"].to_numpy()
        )
    np.testing.assert_allclose(
        held.samples[names].to_numpy(), np.clip(expected, fitting.LOWER, fitting.UPPER)
    )
    # and the replicates as solved are recovered (the diagnostics judge those)
    solved = fitting.statistical_samples(held)[names].to_numpy()
    inside = (expected > fitting.LOWER) & (expected < fitting.UPPER)
    np.testing.assert_allclose(solved[inside], plain.samples[names].to_numpy()[inside], atol=1e-12)
    assert fitting.statistical_samples(plain) is plain.samples
    assert np.std(held.samples["surface_z_silicon"]) == pytest.approx(1.0, abs=0.3)
    for name in ("alpha0", "delta0"):
        plain_width, held_width = (
            r.parameters[name][2] - r.parameters[name][1] for r in (plain, held)
        )
        assert held_width > plain_width
    # none given: no draws, nothing recorded
    assert plain.surface == {} and "surface_z_silicon" not in plain.samples


def test_surface_uncertainties_are_checked() -> None:
    particles, _ = _surface_campaign()
    with pytest.raises(ValueError, match="silicon_surface_sd_um must be finite and >= 0"):
        fit(particles, n_bootstrap=0, silicon_surface_sd_um=-0.01)
    with pytest.raises(ValueError, match="cbd_surface_sd_um has no value for sample.*c10"):
        fit(particles, n_bootstrap=0, cbd_surface_sd_um={"c00": 0.01, "c01": 0.01, "c03": 0.01})
    with pytest.raises(ValueError, match="not small against a 3D radius"):
        fit(particles, n_bootstrap=0, silicon_surface_sd_um=1.0)
    no_sample = particles.drop(columns="sample")
    with pytest.raises(ValueError, match="per sample, but the particle table has no 'sample'"):
        fit(no_sample, n_bootstrap=0, silicon_surface_sd_um={"c00": 0.01})
    # 2D rows are not moved: a per-sample mapping need not name their samples
    sections = particles.assign(modality=np.where(particles["sample"] == "c03", "2d", "3d"))
    offsets = fitting.surface_offsets(sections, {"c00": 0.01, "c01": 0.01, "c10": 0.02})
    assert offsets[sections["sample"].to_numpy() == "c03"].max() == 0.0
    assert offsets[sections["sample"].to_numpy() == "c10"].min() == 0.02
