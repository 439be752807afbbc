"""Deterministic mechanics of one particle (MODEL.md, "Mechanics of one particle").

References are independent of the closed form under test: MODEL.md's table of
reference values, and a time-stepping oracle (``tests/model/oracle.py``) that
integrates MODEL.md's ODE numerically with event location.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from debond.model import PAPER_PARAMETERS, Material, Parameters, gaps, iter_gaps
from tests.model.oracle import integrate, oracle_gaps

# MODEL.md, "Reference values": α0 = 0.83, κ0 = 0.02 µm, δ0 = 0.12 µm, ε = 0.56049.
MODEL_MD = Parameters(alpha0=0.83, kappa0=0.02, delta0=0.12, zeta0=0.163)
MODEL_MD_STRAIN = 0.56049
# (cycle, gap in µm) for r = 0.2 and 1.0 µm, as printed (four decimals).
REFERENCE = {
    0.2: {1: 0.1200, 3: 0.3600, 10: 1.2000},
    1.0: {1: 0.3280, 3: 0.6572, 10: 1.5158},
}
TABLE_TOLERANCE_UM = 1e-4

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)

alpha0s = st.floats(min_value=0.05, max_value=5.0, allow_nan=False)
kappa0s = st.floats(min_value=0.0, max_value=0.1, allow_nan=False)
delta0s = st.floats(min_value=0.0, max_value=0.3, allow_nan=False)
radii = st.floats(min_value=0.02, max_value=3.0, allow_nan=False)
expansions = st.floats(min_value=0.2, max_value=3.0, allow_nan=False)


def strain_of(volumetric_expansion: float) -> float:
    """MODEL.md: ε = (1 + ΔV/V)^(1/3) − 1."""
    return float((1.0 + volumetric_expansion) ** (1.0 / 3.0) - 1.0)


# --- material and parameters -------------------------------------------------------


def test_strain_follows_the_volumetric_expansion() -> None:
    assert Material(volumetric_expansion=2.8).strain == pytest.approx(MODEL_MD_STRAIN, abs=5e-6)
    assert Material().strain == pytest.approx(strain_of(2.8), rel=1e-14)
    assert Material(volumetric_expansion=7.0).strain == pytest.approx(1.0, rel=1e-14)
    assert Material(volumetric_expansion=0.331).strain == pytest.approx(0.1, rel=1e-12)


def test_paper_parameters_are_the_fitted_values_of_model_md() -> None:
    assert PAPER_PARAMETERS.alpha0 == pytest.approx(0.83)
    assert PAPER_PARAMETERS.kappa0 == pytest.approx(0.02)
    assert PAPER_PARAMETERS.delta0 == pytest.approx(0.12)
    assert PAPER_PARAMETERS.zeta0 == pytest.approx(0.163)


# --- MODEL.md's reference table -------------------------------------------------------


@pytest.mark.parametrize("radius", sorted(REFERENCE))
def test_closed_form_reproduces_the_reference_table(radius: float) -> None:
    d = gaps(radius, 10, MODEL_MD, Material(volumetric_expansion=2.8))
    assert d.shape == (10,)
    for cycle, expected in REFERENCE[radius].items():
        assert d[cycle - 1] == pytest.approx(expected, abs=TABLE_TOLERANCE_UM), cycle


def test_reference_table_radii_evaluated_together() -> None:
    d = gaps([0.2, 1.0], 10, MODEL_MD, Material(volumetric_expansion=2.8))
    assert d.shape == (10, 2)
    for column, radius in enumerate([0.2, 1.0]):
        for cycle, expected in REFERENCE[radius].items():
            assert d[cycle - 1, column] == pytest.approx(expected, abs=TABLE_TOLERANCE_UM)


@pytest.mark.parametrize("radius", sorted(REFERENCE))
def test_oracle_reproduces_the_reference_table(radius: float) -> None:
    """The oracle is validated against MODEL.md before it is used as a reference."""
    d = oracle_gaps(radius, 10, alpha0=0.83, kappa0=0.02, delta0=0.12, strain=MODEL_MD_STRAIN)
    for cycle, expected in REFERENCE[radius].items():
        assert d[cycle - 1] == pytest.approx(expected, abs=TABLE_TOLERANCE_UM), cycle


def test_oracle_regimes_of_the_reference_particles() -> None:
    """r = 0.2 µm never detaches (SEI only); r = 1.0 µm detaches and re-contacts each cycle."""
    small = integrate(0.2, 10, alpha0=0.83, kappa0=0.02, delta0=0.12, strain=MODEL_MD_STRAIN)
    assert small.switches == []
    assert all(small.attached)
    np.testing.assert_allclose(small.gaps, 0.12 * np.arange(1, 11), atol=1e-9)

    large = integrate(1.0, 10, alpha0=0.83, kappa0=0.02, delta0=0.12, strain=MODEL_MD_STRAIN)
    assert not any(large.attached)
    assert large.count("detach") == 10
    assert large.count("contact") == 9  # cycle 1 starts attached
    # Detachment only while shrinking: switches alternate contact, detach.
    kinds = [what for _, what, _ in large.switches]
    assert kinds == ["detach"] + ["contact", "detach"] * 9


# --- the closed form against the time-stepping oracle ---------------------------------


def assert_matches_oracle(
    radius: float,
    n_cycles: int,
    alpha0: float,
    kappa0: float,
    delta0: float,
    volumetric_expansion: float = 2.8,
) -> None:
    parameters = Parameters(alpha0=alpha0, kappa0=kappa0, delta0=delta0, zeta0=0.1)
    material = Material(volumetric_expansion=volumetric_expansion)
    closed = gaps(radius, n_cycles, parameters, material)
    reference = oracle_gaps(
        radius,
        n_cycles,
        alpha0=alpha0,
        kappa0=kappa0,
        delta0=delta0,
        strain=strain_of(volumetric_expansion),
    )
    assert closed.shape == (n_cycles,)
    np.testing.assert_allclose(closed, reference, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("radius", "alpha0", "kappa0", "delta0", "regime"),
    [
        (0.2, 0.83, 0.02, 0.12, "never detaches"),
        (1.0, 0.83, 0.02, 0.12, "detaches every cycle"),
        (1.0, 0.2, 0.07, 0.08, "detaches after attached cycles"),
        (2.5, 5.0, 0.0, 0.0, "no adhesion, no SEI"),
        (3.0, 0.05, 0.1, 0.3, "slow relaxation"),
        (0.02, 4.0, 0.0, 0.3, "tiny particle, no adhesion"),
    ],
)
def test_closed_form_matches_the_oracle_in_each_regime(
    radius: float, alpha0: float, kappa0: float, delta0: float, regime: str
) -> None:
    run = integrate(radius, 10, alpha0=alpha0, kappa0=kappa0, delta0=delta0, strain=strain_of(2.8))
    if regime == "never detaches":
        assert run.switches == []
    elif regime == "detaches every cycle":
        assert {cycle for cycle, what, _ in run.switches if what == "detach"} == set(range(1, 11))
    elif regime == "detaches after attached cycles":
        first = min(cycle for cycle, what, _ in run.switches if what == "detach")
        assert first > 1 and run.attached[: first - 1] == [True] * (first - 1)
    assert_matches_oracle(radius, 10, alpha0, kappa0, delta0)


@PROPERTY
@given(
    radius=radii,
    n_cycles=st.integers(min_value=1, max_value=10),
    alpha0=alpha0s,
    kappa0=kappa0s,
    delta0=delta0s,
    expansion=expansions,
)
def test_closed_form_agrees_with_the_time_stepping_oracle(
    radius: float, n_cycles: int, alpha0: float, kappa0: float, delta0: float, expansion: float
) -> None:
    assert_matches_oracle(radius, n_cycles, alpha0, kappa0, delta0, expansion)


# --- invariants ---------------------------------------------------------------------

RADIUS_GRID = np.geomspace(0.02, 3.0, 41)


@PROPERTY
@given(alpha0=alpha0s, kappa0=kappa0s, delta0=delta0s, n_cycles=st.integers(1, 15))
def test_gaps_never_shrink_and_never_fall_below_the_sei(
    alpha0: float, kappa0: float, delta0: float, n_cycles: int
) -> None:
    parameters = Parameters(alpha0=alpha0, kappa0=kappa0, delta0=delta0, zeta0=0.0)
    d = gaps(RADIUS_GRID, n_cycles, parameters, Material())
    assert d.shape == (n_cycles, RADIUS_GRID.size)
    assert np.all(np.isfinite(d))
    assert np.all(d[0] >= 0.0)
    assert np.all(np.diff(d, axis=0) >= -1e-12)
    sei = delta0 * np.arange(1, n_cycles + 1)[:, None]
    assert np.all(d >= sei - 1e-12)


@PROPERTY
@given(
    alpha0=alpha0s,
    kappa0=kappa0s,
    delta0=delta0s,
    fraction=st.floats(min_value=0.0, max_value=1.0),
    n_cycles=st.integers(1, 15),
)
def test_particles_below_the_detachment_threshold_show_the_sei_alone(
    alpha0: float, kappa0: float, delta0: float, fraction: float, n_cycles: int
) -> None:
    """ε·r/α0 ≤ κ0: the tension never exceeds adhesion, the gap is k·δ0 (the plateau)."""
    material = Material()
    radius = fraction * alpha0 * kappa0 / material.strain
    parameters = Parameters(alpha0=alpha0, kappa0=kappa0, delta0=delta0, zeta0=0.0)
    d = gaps(radius, n_cycles, parameters, material)
    np.testing.assert_allclose(d, delta0 * np.arange(1, n_cycles + 1), rtol=1e-12, atol=1e-12)


def test_zero_radius_shows_the_sei_alone() -> None:
    d = gaps(0.0, 5, MODEL_MD, Material())
    np.testing.assert_allclose(d, 0.12 * np.arange(1, 6), atol=1e-12)
    d = gaps(0.0, 5, MODEL_MD.replace(delta0=0.0, kappa0=0.0), Material())
    np.testing.assert_array_equal(d, np.zeros(5))


def test_large_particles_ratchet_a_growing_gap_beyond_the_sei() -> None:
    d = gaps([1.0, 2.0, 3.0], 10, MODEL_MD, Material())
    sei = 0.12 * np.arange(1, 11)[:, None]
    assert np.all(d > sei + 0.1)
    assert np.all(np.diff(d, axis=0) > 0)


def test_zero_cycles_give_an_empty_history() -> None:
    assert gaps(1.0, 0, MODEL_MD, Material()).shape == (0,)
    assert gaps([0.5, 1.0, 2.0], 0, MODEL_MD, Material()).shape == (0, 3)


# --- broadcasting ------------------------------------------------------------------------


def test_parameter_sets_broadcast_against_radii() -> None:
    rng = np.random.default_rng(7)
    n_sets, n_radii, n_cycles = 5, 7, 6
    alpha0 = rng.uniform(0.05, 5.0, (n_sets, 1))
    kappa0 = rng.uniform(0.0, 0.1, (n_sets, 1))
    delta0 = rng.uniform(0.0, 0.3, (n_sets, 1))
    radius = rng.uniform(0.02, 3.0, n_radii)
    batched = gaps(radius, n_cycles, Parameters(alpha0, kappa0, delta0, 0.163), Material())
    assert batched.shape == (n_cycles, n_sets, n_radii)
    for b in range(n_sets):
        scalar = Parameters(float(alpha0[b, 0]), float(kappa0[b, 0]), float(delta0[b, 0]), 0.163)
        for i in range(n_radii):
            np.testing.assert_allclose(
                batched[:, b, i], gaps(float(radius[i]), n_cycles, scalar, Material()), atol=1e-14
            )


def test_mixed_parameter_shapes_broadcast() -> None:
    """A scalar κ0 with arrays of α0 and δ0, radii of shape (N,)."""
    alpha0 = np.array([[0.4], [0.83], [2.0]])
    delta0 = np.array([[0.05], [0.12], [0.2]])
    radius = np.array([0.1, 0.7, 1.5, 2.9])
    batched = gaps(radius, 4, Parameters(alpha0, 0.02, delta0, 0.1), Material())
    assert batched.shape == (4, 3, 4)
    for b in range(3):
        for i in range(4):
            single = Parameters(float(alpha0[b, 0]), 0.02, float(delta0[b, 0]), 0.1)
            np.testing.assert_allclose(
                batched[:, b, i], gaps(float(radius[i]), 4, single, Material()), atol=1e-14
            )


def test_iter_gaps_streams_the_same_history() -> None:
    radius = np.array([0.2, 0.6, 1.0, 2.4])
    stream = iter_gaps(radius, MODEL_MD, Material())
    history = np.stack([next(stream) for _ in range(12)])
    np.testing.assert_allclose(history, gaps(radius, 12, MODEL_MD, Material()), atol=1e-15)


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"alpha0": 0.0}, "alpha0"),
        ({"alpha0": -0.5}, r"alpha0.*-0\.5"),
        ({"alpha0": [0.5, -1.0]}, r"alpha0.*-1\.0"),
        ({"alpha0": np.nan}, "alpha0"),
        ({"kappa0": -0.01}, r"kappa0.*-0\.01"),
        ({"delta0": -0.1}, "delta0"),
        ({"zeta0": -1.0}, "zeta0"),
        ({"kappa0": np.inf}, "kappa0"),
    ],
)
def test_bad_parameters_are_rejected_by_name(changes: dict[str, object], match: str) -> None:
    values: dict[str, object] = {"alpha0": 0.83, "kappa0": 0.02, "delta0": 0.12, "zeta0": 0.163}
    values.update(changes)
    with pytest.raises(ValueError, match=match):
        Parameters(**values)


@pytest.mark.parametrize(
    ("field", "value"),
    [("volumetric_expansion", 0.0), ("volumetric_expansion", -1.0), ("half_cycle_hours", 0.0)],
)
def test_bad_material_is_rejected_by_name(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        Material(**{field: value})


@pytest.mark.parametrize(
    ("radius", "match"),
    [
        (np.nan, "radius_um.*nan"),
        (-0.5, r"radius_um.*-0\.5"),
        ([0.5, -0.1, 1.0], r"radius_um.*-0\.1"),
        ([0.5, np.inf], "radius_um.*inf"),
    ],
)
def test_bad_radius_is_rejected_by_name(radius: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gaps(radius, 3, MODEL_MD, Material())  # type: ignore[arg-type]


@pytest.mark.parametrize("n_cycles", [-1, 2.5, "3"])
def test_bad_cycle_count_is_rejected_by_name(n_cycles: object) -> None:
    with pytest.raises(ValueError, match="n_cycles"):
        gaps(1.0, n_cycles, MODEL_MD, Material())  # type: ignore[arg-type]


def test_scalar_radius_and_bad_cycle_counts() -> None:
    from debond.model.synthetic import imaged_gaps

    np.testing.assert_allclose(
        gaps(0.2, 3, PAPER_PARAMETERS, Material()).ravel(), [0.12, 0.24, 0.36], atol=1e-12
    )
    for bad in (float("inf"), float("nan"), 2.5, -1, True):
        with pytest.raises(ValueError, match="n_cycles"):
            gaps(1.0, bad, PAPER_PARAMETERS, Material())  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    assert imaged_gaps(np.float64(0.5), 3, PAPER_PARAMETERS, Material(), rng).shape == ()
    assert imaged_gaps(np.full((2, 3), 0.5), 3, PAPER_PARAMETERS, Material(), rng).shape == (2, 3)
