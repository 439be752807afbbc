"""Silicon retention from cycling data (MODEL.md, "Silicon capacity from cycling data")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from debond.model import Recipe, read_cycling, silicon_retention
from debond.model.synthetic import simulate_cycling


def test_retention_round_trips_through_a_cycling_csv(tmp_path) -> None:  # type: ignore[no-untyped-def]
    retention = np.array([1.0, 0.9, 0.75, 0.6, 0.52])
    path = tmp_path / "cycling.csv"
    simulate_cycling(retention, electrode_mass_mg=3.0, noise_mAh=0.0).to_csv(path, index=False)
    series = silicon_retention(read_cycling(path), electrode_mass_mg=3.0)
    np.testing.assert_allclose(series["retention"], retention, atol=1e-12)
    assert series["cycle"].tolist() == [1, 2, 3, 4, 5]


def test_graphite_part_follows_the_recipe() -> None:
    # 2 mg of the paper's recipe: graphite 2e-3 g × 0.70 × 372 mAh/g, silicon × 0.15 × 2275.
    recipe = Recipe()
    assert recipe.graphite_capacity_mAh(2.0) == pytest.approx(2e-3 * 0.70 * 372)
    assert recipe.silicon_capacity_mAh(2.0) == pytest.approx(2e-3 * 0.15 * 2275)
    cycling = pd.DataFrame({"cycle": [1, 2], "charge_capacity_mAh": [1.5, 1.0]})
    series = silicon_retention(cycling, 2.0)
    graphite = 2e-3 * 0.70 * 372
    assert series["retention"].iloc[1] == pytest.approx((1.0 - graphite) / (1.5 - graphite))


@pytest.mark.parametrize(
    ("table", "match"),
    [
        (pd.DataFrame({"cycle": [1, 2]}), "missing column 'charge_capacity_mAh'"),
        (pd.DataFrame({"cycle": [0, 1], "charge_capacity_mAh": [1, 1]}), "start at cycle 1.*got 0"),
        (pd.DataFrame({"cycle": [1, 1], "charge_capacity_mAh": [1, 1]}), "increase"),
        (
            pd.DataFrame({"cycle": [1, 2], "charge_capacity_mAh": [1, -2]}),
            "charge_capacity_mAh.*-2",
        ),
    ],
)
def test_bad_cycling_tables_are_named(tmp_path, table, match) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    with pytest.raises(ValueError, match=match):
        read_cycling(path)


def test_a_mass_that_leaves_no_silicon_is_reported() -> None:
    cycling = pd.DataFrame({"cycle": [1, 2], "charge_capacity_mAh": [0.3, 0.3]})
    with pytest.raises(ValueError, match="silicon part of cycle 1"):
        silicon_retention(cycling, electrode_mass_mg=5.0)
    with pytest.raises(ValueError, match="electrode_mass_mg"):
        silicon_retention(cycling, electrode_mass_mg=0.0)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        read_cycling("nowhere.csv")
