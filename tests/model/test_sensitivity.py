"""The paper's Fig. 4d: improving α0, κ0 and δ0 slows the silicon capacity fade."""

from __future__ import annotations

import numpy as np

from debond.model import PAPER_PARAMETERS, Material, capacity_retention, sensitivity
from debond.model.synthetic import draw_radii


def test_improving_all_three_about_doubles_capacity_after_ten_cycles() -> None:
    """Paper: from ~20 % to almost 40 % of the silicon capacity after 10 cycles."""
    radii = draw_radii(np.random.default_rng(0), 4000)
    curves = sensitivity(radii, 10, PAPER_PARAMETERS, Material())
    baseline, improved = curves["baseline"][-1], curves["all three"][-1]
    assert 0.15 <= baseline <= 0.25
    assert 0.30 <= improved <= 0.45
    assert 1.6 <= improved / baseline <= 2.4


def test_each_improvement_alone_helps_and_all_three_help_most() -> None:
    radii = draw_radii(np.random.default_rng(1), 2000)
    curves = sensitivity(radii, 10, PAPER_PARAMETERS, Material())
    final = {label: curve[-1] for label, curve in curves.items()}
    for label, value in final.items():
        if label != "baseline":
            assert value > final["baseline"], label
    assert final["all three"] == max(final.values())


def test_scenarios_equal_direct_evaluations() -> None:
    radii = np.array([0.3, 0.8, 1.5])
    curves = sensitivity(radii, 6, PAPER_PARAMETERS, Material(), factor=4.0)
    direct = capacity_retention(radii, 6, PAPER_PARAMETERS.replace(delta0=0.03), Material())
    np.testing.assert_allclose(curves["δ0 ×0.25 (less SEI)"], direct)
