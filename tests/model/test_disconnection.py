"""Stochastic disconnection and capacity retention (MODEL.md, "Disconnection").

References are built here from MODEL.md's formulas on top of the deterministic
gaps d_1 … d_n (tested in ``test_mechanics.py``): an exact enumeration of
P(K = k), a Monte Carlo of the imaged gap, and a direct sum for C(n).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from debond.model import (
    Material,
    Parameters,
    capacity_retention,
    gap_distribution,
    gaps,
    imaged_statistics,
)
from debond.model.synthetic import imaged_gaps

PAPER = Parameters(alpha0=0.83, kappa0=0.02, delta0=0.12, zeta0=0.163)
MATERIAL = Material()

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)

alpha0s = st.floats(min_value=0.05, max_value=5.0, allow_nan=False)
kappa0s = st.floats(min_value=0.0, max_value=0.1, allow_nan=False)
delta0s = st.floats(min_value=0.0, max_value=0.3, allow_nan=False)
# Up to ζ0·d ≈ 1 and beyond, so that p = min(1, ζ0·d) is clipped in some draws.
zeta0s = st.floats(min_value=0.0, max_value=3.0, allow_nan=False)
radii = st.floats(min_value=0.02, max_value=3.0, allow_nan=False)


def parameters_strategy() -> st.SearchStrategy[Parameters]:
    return st.builds(Parameters, alpha0=alpha0s, kappa0=kappa0s, delta0=delta0s, zeta0=zeta0s)


def probability(gap: float, zeta0: float) -> float:
    """MODEL.md: p_k = min(1, ζ0·d_k)."""
    return min(1.0, zeta0 * gap)


def cycle_distribution(d: list[float], zeta0: float) -> list[float]:
    """MODEL.md: P(K = k) for k = 1 … n, n = len(d).

    P(K = k) = p_k·∏_{j<k}(1 − p_j) for k < n, P(K = n) = ∏_{j<n}(1 − p_j).
    """
    n = len(d)
    p = [probability(g, zeta0) for g in d]
    out = []
    for k in range(1, n + 1):
        before = math.prod(1.0 - p[j - 1] for j in range(1, k))
        out.append(p[k - 1] * before if k < n else before)
    return out


def exact_moments(d: list[float], zeta0: float) -> tuple[float, float]:
    """E[D] and sd[D] of the imaged gap D = d_K, by enumerating K."""
    if not d:
        return 0.0, 0.0
    weights = cycle_distribution(d, zeta0)
    assert math.fsum(weights) == pytest.approx(1.0, abs=1e-12)
    mean = math.fsum(w * g for w, g in zip(weights, d, strict=True))
    variance = math.fsum(w * (g - mean) ** 2 for w, g in zip(weights, d, strict=True))
    return mean, math.sqrt(variance)


def scalar(parameters: Parameters, index: tuple[int, ...]) -> Parameters:
    """One parameter set out of arrays of them."""
    return Parameters(
        *(
            float(np.asarray(getattr(parameters, f))[index])
            for f in ("alpha0", "kappa0", "delta0", "zeta0")
        )
    )


def gap_history(radius: float, n: int, parameters: Parameters) -> list[float]:
    return [float(g) for g in gaps(radius, n, parameters, MATERIAL)]


# --- imaged gap: exact enumeration -----------------------------------------------------


@pytest.mark.parametrize("radius", [0.2, 0.6, 1.0, 2.5])
@pytest.mark.parametrize("n_cycles", [1, 2, 3, 10])
def test_gap_distribution_matches_exact_enumeration(radius: float, n_cycles: int) -> None:
    mean, sd = gap_distribution(radius, n_cycles, PAPER, MATERIAL)
    expected_mean, expected_sd = exact_moments(gap_history(radius, n_cycles, PAPER), 0.163)
    assert float(mean) == pytest.approx(expected_mean, rel=1e-12, abs=1e-14)
    assert float(sd) == pytest.approx(expected_sd, rel=1e-9, abs=1e-9)


@PROPERTY
@given(parameters=parameters_strategy(), radius=radii, n_cycles=st.integers(0, 12))
def test_gap_distribution_matches_exact_enumeration_for_any_parameters(
    parameters: Parameters, radius: float, n_cycles: int
) -> None:
    mean, sd = gap_distribution(radius, n_cycles, parameters, MATERIAL)
    d = gap_history(radius, n_cycles, parameters)
    expected_mean, expected_sd = exact_moments(d, float(parameters.zeta0))
    assert float(mean) == pytest.approx(expected_mean, rel=1e-10, abs=1e-12)
    assert float(sd) == pytest.approx(expected_sd, rel=1e-6, abs=1e-6)
    if d:
        # E[D] is a weighted average of d_1 … d_n.
        assert min(d) - 1e-12 <= float(mean) <= max(d) + 1e-12
        assert float(sd) <= (max(d) - min(d)) / 2 + 1e-9


def test_one_cycle_shows_d1_without_spread() -> None:
    """After one cycle every particle shows d_1, whether it disconnects or not."""
    radius = np.array([0.2, 1.0, 2.0])
    mean, sd = gap_distribution(radius, 1, PAPER, MATERIAL)
    np.testing.assert_allclose(mean, gaps(radius, 1, PAPER, MATERIAL)[0], rtol=1e-14)
    np.testing.assert_allclose(sd, 0.0, atol=1e-12)


def test_certain_disconnection_after_the_first_cycle_freezes_d1() -> None:
    """ζ0·d_1 ≥ 1: every particle disconnects after cycle 1 and shows d_1 for ever."""
    radius = np.array([0.5, 1.0, 2.0])
    parameters = PAPER.replace(zeta0=1e3)
    mean, sd = gap_distribution(radius, 10, parameters, MATERIAL)
    np.testing.assert_allclose(mean, gaps(radius, 1, parameters, MATERIAL)[0], rtol=1e-14)
    np.testing.assert_allclose(sd, 0.0, atol=1e-7)


def test_no_disconnection_shows_the_last_gap() -> None:
    radius = np.array([0.2, 1.0, 2.0])
    mean, sd = gap_distribution(radius, 7, PAPER.replace(zeta0=0.0), MATERIAL)
    np.testing.assert_allclose(mean, gaps(radius, 7, PAPER, MATERIAL)[-1], rtol=1e-14)
    np.testing.assert_allclose(sd, 0.0, atol=1e-7)


def test_pristine_sample_has_no_gap() -> None:
    mean, sd = gap_distribution(1.0, 0, PAPER, MATERIAL)
    assert float(mean) == 0.0 and float(sd) == 0.0
    mean, sd = gap_distribution([0.2, 1.0, 2.0], 0, PAPER, MATERIAL)
    np.testing.assert_array_equal(mean, np.zeros(3))
    np.testing.assert_array_equal(sd, np.zeros(3))


def test_gap_distribution_broadcasts_parameter_sets_against_radii() -> None:
    rng = np.random.default_rng(3)
    sets, n_radii, n_cycles = 4, 5, 6
    parameters = Parameters(
        alpha0=rng.uniform(0.05, 5.0, (sets, 1)),
        kappa0=rng.uniform(0.0, 0.1, (sets, 1)),
        delta0=rng.uniform(0.0, 0.3, (sets, 1)),
        zeta0=rng.uniform(0.0, 1.0, (sets, 1)),
    )
    radius = rng.uniform(0.02, 3.0, n_radii)
    mean, sd = gap_distribution(radius, n_cycles, parameters, MATERIAL)
    assert mean.shape == sd.shape == (sets, n_radii)
    for b in range(sets):
        single = scalar(parameters, (b, 0))
        for i in range(n_radii):
            expected = exact_moments(gap_history(float(radius[i]), n_cycles, single), single.zeta0)
            assert mean[b, i] == pytest.approx(expected[0], rel=1e-12)
            assert sd[b, i] == pytest.approx(expected[1], rel=1e-8, abs=1e-9)


def test_imaged_statistics_reports_every_cycle_count_and_the_survival() -> None:
    radius = np.array([0.3, 1.0, 2.2])
    cycles = [0, 1, 3, 10]
    stats = imaged_statistics(radius, cycles, PAPER, MATERIAL, n_survival=10)
    assert stats.mean.shape == stats.sd.shape == (4, 3)
    assert stats.survival.shape == (10, 3)
    for row, n in enumerate(cycles):
        for i, r in enumerate(radius):
            expected_mean, expected_sd = exact_moments(gap_history(float(r), n, PAPER), 0.163)
            assert stats.mean[row, i] == pytest.approx(expected_mean, rel=1e-12, abs=1e-15)
            assert stats.sd[row, i] == pytest.approx(expected_sd, rel=1e-9, abs=1e-9)
    for i, r in enumerate(radius):
        p = [probability(g, 0.163) for g in gap_history(float(r), 10, PAPER)]
        expected = [math.prod(1.0 - q for q in p[:k]) for k in range(1, 11)]
        np.testing.assert_allclose(stats.survival[:, i], expected, rtol=1e-12)


# --- imaged gap: Monte Carlo -------------------------------------------------------------


@pytest.mark.parametrize(("radius", "n_cycles"), [(1.0, 10), (0.5, 3), (2.0, 6)])
def test_monte_carlo_of_imaged_gaps_matches_the_distribution(radius: float, n_cycles: int) -> None:
    draws = 200_000
    rng = np.random.default_rng(20240601)
    sample = imaged_gaps(np.full(draws, radius), n_cycles, PAPER, MATERIAL, rng)
    assert sample.shape == (draws,)

    # The imaged gap is one of d_1 … d_n, each with MODEL.md's P(K = k).
    d = gap_history(radius, n_cycles, PAPER)
    assert len(set(d)) == n_cycles  # these particles' gaps grow strictly
    weights = cycle_distribution(d, 0.163)
    matched = np.zeros(draws, dtype=bool)
    for g, w in zip(d, weights, strict=True):
        hits = np.isclose(sample, g, rtol=0, atol=1e-12)
        matched |= hits
        se = math.sqrt(w * (1.0 - w) / draws)
        assert abs(hits.mean() - w) <= 5 * se + 1e-12, (g, hits.mean(), w)
    assert matched.all()

    # Mean and sd against gap_distribution, within five standard errors.
    mean, sd = gap_distribution(radius, n_cycles, PAPER, MATERIAL)
    sample_mean = sample.mean()
    sample_var = sample.var()
    se_mean = math.sqrt(sample_var / draws)
    assert abs(sample_mean - float(mean)) <= 5 * se_mean
    fourth = float(np.mean((sample - sample_mean) ** 4))
    se_var = math.sqrt(max(fourth - sample_var**2, 0.0) / draws)
    assert abs(sample_var - float(sd) ** 2) <= 5 * se_var + 1e-12


def test_imaged_gaps_of_a_pristine_sample_are_zero() -> None:
    rng = np.random.default_rng(0)
    out = imaged_gaps(np.array([0.2, 1.0, 2.0]), 0, PAPER, MATERIAL, rng)
    np.testing.assert_array_equal(out, np.zeros(3))


# --- capacity retention -----------------------------------------------------------------


def retention_reference(radii: list[float], n_cycles: int, parameters: Parameters) -> list[float]:
    """MODEL.md: C(n) = Σ_i r_i³·S_i(n−1) / Σ_i r_i³, S_i(k) = ∏_{j≤k}(1 − p_j(r_i))."""
    zeta0 = float(parameters.zeta0)
    survival = []
    for r in radii:
        p = [probability(g, zeta0) for g in gap_history(r, max(n_cycles - 1, 0), parameters)]
        survival.append([math.prod(1.0 - q for q in p[:k]) for k in range(n_cycles)])
    total = math.fsum(r**3 for r in radii)
    return [
        math.fsum(r**3 * s[n - 1] for r, s in zip(radii, survival, strict=True)) / total
        for n in range(1, n_cycles + 1)
    ]


def test_capacity_retention_matches_the_direct_sum() -> None:
    rng = np.random.default_rng(11)
    population = rng.lognormal(np.log(0.6), 0.5, 300).clip(0.1, 3.0)
    got = capacity_retention(population, 10, PAPER, MATERIAL)
    assert got.shape == (10,)
    expected = retention_reference(population.tolist(), 10, PAPER)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    assert got[0] == 1.0


@PROPERTY
@given(
    parameters=parameters_strategy(),
    population=st.lists(radii, min_size=1, max_size=25),
    n_cycles=st.integers(1, 12),
)
def test_capacity_retention_starts_at_one_and_never_rises(
    parameters: Parameters, population: list[float], n_cycles: int
) -> None:
    got = capacity_retention(np.array(population), n_cycles, parameters, MATERIAL)
    assert got.shape == (n_cycles,)
    assert got[0] == 1.0
    assert np.all(np.diff(got) <= 1e-15)
    assert np.all((got >= 0.0) & (got <= 1.0))
    np.testing.assert_allclose(
        got, retention_reference(population, n_cycles, parameters), rtol=1e-10, atol=1e-14
    )


def test_no_disconnection_keeps_all_capacity() -> None:
    population = np.linspace(0.1, 3.0, 50)
    got = capacity_retention(population, 12, PAPER.replace(zeta0=0.0), MATERIAL)
    np.testing.assert_array_equal(got, np.ones(12))


def test_capacity_retention_of_one_cycle_is_one() -> None:
    got = capacity_retention([0.5, 1.0], 1, PAPER, MATERIAL)
    np.testing.assert_array_equal(got, [1.0])


def test_capacity_retention_weights_particles_by_volume() -> None:
    """A big particle that is lost costs its r³ share: two radii, checked by hand."""
    small, large = 0.2, 2.0
    parameters = PAPER.replace(zeta0=1e3)  # the large one disconnects after cycle 1
    d_small = gap_history(small, 1, parameters)[0]
    p_small = min(1.0, 1e3 * d_small)
    got = capacity_retention([small, large], 2, parameters, MATERIAL)
    expected = small**3 * (1.0 - p_small) / (small**3 + large**3)
    assert got[1] == pytest.approx(expected, abs=1e-15)


def test_capacity_retention_evaluates_parameter_sets_together() -> None:
    rng = np.random.default_rng(5)
    sets = 6
    parameters = Parameters(
        alpha0=rng.uniform(0.05, 5.0, sets),
        kappa0=rng.uniform(0.0, 0.1, sets),
        delta0=rng.uniform(0.0, 0.3, sets),
        zeta0=rng.uniform(0.0, 1.0, sets),
    )
    population = rng.uniform(0.05, 3.0, 40)
    batched = capacity_retention(population, 8, parameters, MATERIAL)
    assert batched.shape == (8, sets)
    for b in range(sets):
        single = scalar(parameters, (b,))
        np.testing.assert_allclose(
            batched[:, b], capacity_retention(population, 8, single, MATERIAL), rtol=1e-13
        )
        np.testing.assert_allclose(
            batched[:, b], retention_reference(population.tolist(), 8, single), rtol=1e-11
        )


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("radius", "match"),
    [(np.nan, "radius_um.*nan"), (-1.0, r"radius_um.*-1\.0"), ([0.5, np.nan], "radius_um")],
)
def test_gap_distribution_rejects_bad_radii(radius: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gap_distribution(radius, 3, PAPER, MATERIAL)  # type: ignore[arg-type]


@pytest.mark.parametrize("n_cycles", [-1, 1.5])
def test_gap_distribution_rejects_bad_cycle_counts(n_cycles: object) -> None:
    with pytest.raises(ValueError, match="cycles"):
        gap_distribution(1.0, n_cycles, PAPER, MATERIAL)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("radii", "match"),
    [
        ([0.5, np.nan], "radii_um.*nan"),
        ([0.5, -0.2], r"radii_um.*-0\.2"),
        ([], "radii_um"),
        ([0.0, 0.0], "radii_um"),
    ],
)
def test_capacity_retention_rejects_bad_populations(radii: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        capacity_retention(radii, 5, PAPER, MATERIAL)


@pytest.mark.parametrize("n_cycles", [0, -3, 2.5])
def test_capacity_retention_rejects_bad_cycle_counts(n_cycles: object) -> None:
    with pytest.raises(ValueError, match="n_cycles"):
        capacity_retention([0.5, 1.0], n_cycles, PAPER, MATERIAL)  # type: ignore[arg-type]


@pytest.mark.parametrize(("radius", "match"), [(np.nan, "radius_um"), (-1.0, "radius_um")])
def test_imaged_gaps_rejects_bad_radii(radius: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        imaged_gaps(np.array([0.5, radius]), 3, PAPER, MATERIAL, np.random.default_rng(0))


@pytest.mark.parametrize("n_cycles", [-1, 0.5])
def test_imaged_gaps_rejects_bad_cycle_counts(n_cycles: object) -> None:
    with pytest.raises(ValueError, match="n_cycles"):
        imaged_gaps(np.array([0.5]), n_cycles, PAPER, MATERIAL, np.random.default_rng(0))  # type: ignore[arg-type]


def test_capacity_retention_counts_repeat_particles() -> None:
    """A class of count k is k copies of the particle; a count of 0 drops it."""
    radii = np.array([0.3, 0.8, 1.4])
    copies = np.repeat(radii, [2, 0, 3])
    np.testing.assert_allclose(
        capacity_retention(radii, 8, PAPER, MATERIAL, counts=[2, 0, 3]),
        capacity_retention(copies, 8, PAPER, MATERIAL),
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match=r"one per radius \(3\); got shape \(2,\)"):
        capacity_retention(radii, 8, PAPER, MATERIAL, counts=[1, 1])
    with pytest.raises(ValueError, match="at least one particle"):
        capacity_retention(radii, 8, PAPER, MATERIAL, counts=[0, 0, 0])
