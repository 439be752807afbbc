"""The capacity term's population from SEM sections: unfolding, bootstrap, choices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from debond.analysis import (
    CLASSES_PER_BIN,
    capacity_population,
    image_caveat,
    section_population,
)
from debond.model import PAPER_PARAMETERS
from debond.model.synthetic import draw_radii, simulate_campaign
from debond.pipeline.stereology import sample_sections, unfold_radii
from debond.schema import CBD_SURFACE_SD_VOXELS, SILICON_SURFACE_SD_VOXELS, FitSection


def _sections(rng: np.random.Generator, n: int, sample: str) -> pd.DataFrame:
    """2D rows as the particle table holds them: section radius and gap, usable."""
    r, g2, _ = sample_sections(draw_radii(rng, 20_000), 0.1, n, rng)
    return pd.DataFrame(
        {
            "sample": sample,
            "cycles": 1,
            "modality": "2d",
            "particle": np.arange(1, n + 1),
            "radius_um": r * 4 / np.pi,
            "gap_mean_um": g2,
            "n_rays": 64,
            "touches_border": False,
            "section_radius_um": r,
            "section_gap_um": g2,
        }
    )


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """3D rows of a simulated campaign and 2D rows of two samples."""
    rng = np.random.default_rng(3)
    three_d = simulate_campaign(PAPER_PARAMETERS, seed=3).particles.assign(
        modality="3d", n_rays=256, touches_border=False
    )
    return pd.concat(
        [three_d, _sections(rng, 300, "a"), _sections(rng, 200, "b")], ignore_index=True
    )


def test_section_population_is_the_unfolded_distribution(table: pd.DataFrame) -> None:
    """Counts sum to the sections in the estimate and every replicate; the classes carry
    the unfolded distribution's volume-weighted radius."""
    population = section_population(table, 50, seed=0)
    assert population is not None and population.replicates is not None
    sections = table[table["modality"] == "2d"]
    distribution = unfold_radii(sections["section_radius_um"].to_numpy())
    assert population.radius_um.size == distribution.bins * CLASSES_PER_BIN
    assert population.count.sum() == pytest.approx(len(sections))
    np.testing.assert_allclose(population.replicates.sum(axis=1), len(sections))
    assert np.all(population.radius_um > 0)
    assert population.radius_um.max() < distribution.edges[-1]
    weighted = (population.count * population.radius_um**4).sum() / (
        population.count * population.radius_um**3
    ).sum()
    assert weighted == pytest.approx(distribution.volume_weighted_mean(), rel=0.01)
    assert population.replicates.std(axis=0).max() > 0


def test_unusable_sections_stay_out(table: pd.DataFrame) -> None:
    """Sections on the border or without a gap change nothing."""
    junk = table[table["modality"] == "2d"].head(40).copy()
    junk["section_radius_um"] *= 3.0
    junk.loc[junk.index[:20], "touches_border"] = True
    junk.loc[junk.index[20:], "n_rays"] = 0
    base = section_population(table, 10, seed=1)
    again = section_population(pd.concat([table, junk], ignore_index=True), 10, seed=1)
    assert base is not None and again is not None
    np.testing.assert_array_equal(base.count, again.count)


def test_capacity_population_choices(table: pd.DataFrame) -> None:
    three_d_only = table[table["modality"] == "3d"]
    assert capacity_population(table, "3d", 10, 0) is None
    assert capacity_population(three_d_only, "auto", 10, 0) is None
    chosen = capacity_population(table, "sections", 10, 0)
    assert chosen is not None and chosen.count.sum() == pytest.approx(500)
    with pytest.raises(ValueError, match="'sections', but the particle table holds no usable"):
        capacity_population(three_d_only, "sections", 10, 0)
    with pytest.raises(ValueError, match="expected auto, 3d or sections; got 'all'"):
        capacity_population(table, "all", 10, 0)
    bare = three_d_only.drop(columns=["modality"])
    assert section_population(bare, 10, 0) is None


def test_the_image_caveat_says_what_the_intervals_hold() -> None:
    """[fit]'s surface uncertainties held (the defaults), or not (either set to 0)."""
    defaults = FitSection().model_dump()
    held = image_caveat(defaults)
    assert "hold the uncertainty of where the images place" in held
    assert f"silicon_surface_sd_voxels = {SILICON_SURFACE_SD_VOXELS:g}" in held
    assert f"cbd_surface_sd_voxels = {CBD_SURFACE_SD_VOXELS:g}" in held
    for kind in ("silicon", "cbd"):
        none = image_caveat({**defaults, f"{kind}_surface_sd_voxels": 0.0})
        assert "statistical error only" in none and "too narrow" in none
