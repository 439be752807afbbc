"""The family of independent test scans: analytic truth, rendering, scoring, files.

Truth gaps are checked against closed forms (a sphere with a uniform gap, a
gap open on a half or on a cap) and against the measure stage run on the
rendered truth; the scorer against the truth itself and a perturbed copy;
one small variant is written and read back as a campaign. The ``slow`` case
runs the pipeline on every variant and records its scores.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from debond import scans
from debond.campaign import load_campaign
from debond.pipeline.ingest import read_data_exchange
from debond.pipeline.measure import fibonacci_directions, measure_gaps
from debond.scans import CBD, PORE, SEI, SILICON, Particle, Scene, Variant
from debond.storage import create_volume, mark_complete

VOXEL = 0.05
TINY = Variant(
    "tiny",
    "a small scan for the file tests",
    0.06,
    (0.03, 0.06, 0.32, 0.18, 0.10),
    shape=(40, 48, 48),
    n_angles=60,
    radius_um=(0.3, 0.35),
    gap_um=(0.1, 0.15),
    coat_um=0.12,
    groups=("sphere", "sphere"),
    graphite_bodies=0,
    cbd_blobs=4,
)


def sphere_scene(
    *,
    radius: float = 0.5,
    sei: float = 0.05,
    gap: float = 0.15,
    cos_open: float = -2.0,
    opening: tuple[float, float, float] = (1.0, 0.0, 0.0),
    shape: tuple[int, int, int] = (48, 48, 48),
) -> Scene:
    """One silicon sphere in the middle of a box, with SEI, gap and coat; no sample edge."""
    centre = (np.asarray(shape, dtype=float) - 1.0) * VOXEL / 2.0
    particle = Particle(
        centre=centre,
        rotation=np.eye(3),
        axes=np.full(3, radius),
        sei=sei,
        gap=gap,
        coat=0.15,
        shape_kind="sphere",
        gap_kind="uniform" if cos_open <= -1 else "cap",
        group=0,
        opening=np.asarray(opening, dtype=float),
        cos_open=cos_open,
    )
    return Scene(VOXEL, shape, "box", [particle], [], np.zeros((0, 4)), np.zeros((0, 7)))


# ------------------------------------------------------------- truth gaps


def test_uniform_gap_of_a_sphere_is_sei_plus_gap_on_every_ray() -> None:
    scene = sphere_scene(sei=0.05, gap=0.15)
    gaps = scans.truth_gaps(scene, 0, fibonacci_directions(64))
    np.testing.assert_allclose(gaps, 0.20, atol=1e-4)


@pytest.mark.parametrize("cos_open", [0.0, math.cos(math.radians(60.0))])
def test_gap_open_on_part_of_the_surface_is_the_expectation_over_rays(cos_open: float) -> None:
    opening = np.array([0.0, 0.6, 0.8])
    scene = sphere_scene(sei=0.04, gap=0.2, cos_open=cos_open, opening=tuple(opening))
    directions = fibonacci_directions(256)
    gaps = scans.truth_gaps(scene, 0, directions)
    open_rays = directions @ opening >= cos_open
    expected = 0.04 + 0.2 * open_rays
    np.testing.assert_allclose(gaps, expected, atol=1e-4)
    table = scans.truth_table(scene, n_rays=256)
    assert table["gap_um"].iloc[0] == pytest.approx(0.04 + 0.2 * open_rays.mean(), abs=1e-4)
    assert table["n_rays"].iloc[0] == 256


def test_rays_into_graphite_or_out_of_the_volume_do_not_count() -> None:
    scene = sphere_scene(radius=0.5, sei=0.05, gap=0.15)
    particle = scene.particles[0]
    # A graphite slab beyond the coat on the +z side takes the coat's place there.
    scene.graphite.append(
        (particle.centre + np.array([0.8, 0.0, 0.0]), np.eye(3), np.array([0.2, 2.0, 2.0]))
    )
    directions = fibonacci_directions(128)
    gaps = scans.truth_gaps(scene, 0, directions)
    assert np.isnan(gaps[directions[:, 0] > 0.9]).all()
    assert np.isfinite(gaps[directions[:, 0] < 0]).all()
    flat = scans.truth_gaps(sphere_scene(shape=(24, 48, 48)), 0, directions)
    assert np.isnan(flat[np.abs(directions[:, 0]) > 0.9]).all()  # the coat lies beyond z
    assert np.isfinite(flat[np.abs(directions[:, 0]) < 0.2]).all()


def test_truth_gaps_agree_with_the_measure_stage_on_the_rendered_truth() -> None:
    scene = sphere_scene(radius=0.4, sei=0.05, gap=0.12, cos_open=0.0, opening=(0.0, 0.0, 1.0))
    codes, owner = scans.render(scene)
    table = measure_gaps(codes, (owner + 1).astype(np.int32), voxel_size_um=VOXEL)
    truth = scans.truth_table(scene)
    assert table["gap_mean_um"].iloc[0] == pytest.approx(truth["gap_um"].iloc[0], abs=0.5 * VOXEL)
    assert table["radius_um"].iloc[0] == pytest.approx(truth["radius_um"].iloc[0], rel=0.03)


# -------------------------------------------------------------- rendering


def test_rendered_sphere_has_the_analytic_volume_and_layers() -> None:
    scene = sphere_scene(radius=0.5, sei=0.05, gap=0.15)
    codes, owner = scans.render(scene)
    volume = float((codes == SILICON).sum()) * VOXEL**3
    assert volume == pytest.approx(4.0 / 3.0 * math.pi * 0.5**3, rel=0.03)
    assert np.array_equal(owner == 0, codes == SILICON)
    shell = float(((codes == SILICON) | (codes == SEI)).sum()) * VOXEL**3
    assert shell == pytest.approx(4.0 / 3.0 * math.pi * 0.55**3, rel=0.03)
    assert (codes == CBD).any() and (codes == PORE).any()
    radius = scans.truth_table(scene)["radius_um"].iloc[0]
    assert radius == pytest.approx(0.5, rel=0.005)


def test_render_and_phase_at_describe_one_geometry() -> None:
    scene = scans.draw_scene(scans.variant("touching_clusters"), seed=1)
    codes, owner = scans.render(scene)
    rng = np.random.default_rng(0)
    index = rng.integers(0, np.asarray(scene.shape), (5000, 3))
    at, who = scans.phase_at(scene, index * scene.voxel_size_um)
    np.testing.assert_array_equal(at, codes[tuple(index.T)])
    np.testing.assert_array_equal(who, owner[tuple(index.T)])


def test_touching_particles_share_silicon_contact_and_cracks_are_pore() -> None:
    scene = scans.draw_scene(scans.variant("touching_clusters"), seed=0)
    groups = pd.Series([p.group for p in scene.particles]).value_counts()
    assert groups.max() >= 2
    group = int(groups.index[0])
    members = [p for p in scene.particles if p.group == group]
    a, b = members[0], members[1]
    assert np.linalg.norm(a.centre - b.centre) < a.axes[0] + b.axes[0]
    cracked = scans.draw_scene(scans.variant("cracked"), seed=0)
    truth = scans.truth_table(cracked, n_rays=128)
    rng = np.random.default_rng(0)
    for i, p in enumerate(cracked.particles):
        if p.crack_normal is None:
            continue
        points = p.centre + rng.uniform(-1, 1, (20000, 3)) * p.axes.max()
        codes, owner = scans.phase_at(cracked, points)
        in_crack = p.silicon(points) & (codes == PORE)
        assert in_crack.any() and not (in_crack & (owner == i)).any()
        assert truth["n_rays"].iloc[i] < 128  # rays that cross the crack re-enter: not counted


# ---------------------------------------------------------------- variants


def test_the_family_spans_what_real_scans_show() -> None:
    family = scans.VARIANTS
    assert len(family) >= 12
    assert len({v.name for v in family}) == len(family)
    voxels = [v.voxel_size_um for v in family]
    assert min(voxels) <= 0.025 and max(voxels) >= 0.08
    photons = [v.photons for v in family]
    assert min(photons) <= 2000 and max(photons) >= 50000
    blur = [v.blur_sigma_vox for v in family]
    assert min(blur) <= 0.5 and max(blur) >= 1.5
    mu = np.array([v.attenuation_per_um for v in family])  # pore, graphite, CBD, Si, SEI
    assert (mu[:, 2] == mu.max(axis=1)).any() and (mu[:, 3] == mu.max(axis=1)).any()
    assert (np.abs(mu[:, 1] - mu[:, 0]) <= 0.1 * mu[:, 1]).any()
    assert (np.abs(mu[:, 3] - mu[:, 4]) <= 0.15 * mu[:, 3]).any()
    kinds = {kind for v in family for kind in v.groups}
    assert kinds == set(scans.SHAPE_KINDS)
    assert {"uniform", "cap", "half"} <= {kind for v in family for kind in v.gap_kinds}
    assert any(v.zingers_per_projection > 0 and v.bad_columns > 0 for v in family)
    for v in family:
        scene = scans.draw_scene(v)
        radii = np.array([p.axes.mean() for p in scene.particles]) / v.voxel_size_um
        assert len(scene.particles) >= 3, v.name
        assert radii.min() >= 5 and radii.max() <= 40, v.name


def test_a_bad_variant_is_refused_with_the_reason() -> None:
    with pytest.raises(scans.ScanError, match="voxel_size_um must lie in 0.02–0.1"):
        dataclasses.replace(TINY, voxel_size_um=0.5)
    with pytest.raises(scans.ScanError, match="groups must be non-empty"):
        dataclasses.replace(TINY, groups=("donut",))
    with pytest.raises(KeyError, match="known: baseline_60nm"):
        scans.variant("nope")


# ----------------------------------------------------------------- scoring


def truth_of(scene: Scene) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    codes, owner = scans.render(scene)
    return scans.truth_table(scene, n_rays=64), (owner + 1).astype(np.int32), codes


def reported_from(truth: pd.DataFrame) -> pd.DataFrame:
    return truth.rename(columns={"gap_um": "gap_mean_um"})


@pytest.fixture(scope="module")
def family_truth() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    return truth_of(scans.draw_scene(dataclasses.replace(TINY, groups=("sphere",) * 3)))


def test_the_truth_scores_perfectly(
    family_truth: tuple[pd.DataFrame, np.ndarray, np.ndarray],
) -> None:
    truth, labels, codes = family_truth
    got = scans.score(truth, labels, codes, reported_from(truth), codes, TINY.voxel_size_um)
    assert (got.found, got.spurious, got.silicon_dice) == (1.0, 0.0, 1.0)
    assert got.gap_mae_vox == 0.0 and got.radius_error == 0.0
    assert got.radius_bias_vox == 0.0 and got.gap_bias_vox == 0.0
    assert got.n_matched == got.n_true == got.n_reported == len(truth)
    assert got.n_duplicates == got.n_merged == 0


def test_a_perturbed_result_scores_imperfectly(
    family_truth: tuple[pd.DataFrame, np.ndarray, np.ndarray],
) -> None:
    truth, labels, codes = family_truth
    assert len(truth) >= 2
    reported = reported_from(truth).iloc[1:].copy()  # one particle missed
    reported["gap_mean_um"] += TINY.voxel_size_um  # one voxel too wide
    reported["radius_um"] *= 0.9
    spurious = reported.iloc[:1].copy()
    spurious[["centroid_z_um", "centroid_y_um", "centroid_x_um"]] = 0.0  # a corner: no particle
    reported = pd.concat([reported, spurious], ignore_index=True)
    eroded = codes.copy()
    eroded[(codes == SILICON) & (np.indices(codes.shape)[0] % 3 == 0)] = SEI
    got = scans.score(truth, labels, codes, reported, eroded, TINY.voxel_size_um)
    assert got.found == pytest.approx((len(truth) - 1) / len(truth))
    assert got.spurious == pytest.approx(1 / len(reported))
    assert 0.5 < got.silicon_dice < 1.0
    assert got.gap_mae_vox == pytest.approx(1.0, abs=0.01)
    assert got.radius_error == pytest.approx(0.1, abs=0.01)
    # the signed medians: the gap 1 voxel wide, the radii 10 % small
    assert got.gap_bias_vox == pytest.approx(1.0, abs=0.01)
    small = -0.1 * np.median(truth["radius_um"].iloc[1:]) / TINY.voxel_size_um
    assert got.radius_bias_vox == pytest.approx(small, rel=0.01)


def test_a_particle_the_field_of_view_cuts_is_left_out(
    family_truth: tuple[pd.DataFrame, np.ndarray, np.ndarray],
) -> None:
    truth, labels, codes = family_truth
    cut = labels.copy()
    cut[:, 0, 0] = truth["particle"].iloc[0]  # its silicon reaches a corner, outside the circle
    unreported = reported_from(truth).iloc[1:]
    got = scans.score(truth, cut, codes, unreported, codes, TINY.voxel_size_um)
    assert (got.n_cut, got.n_true) == (1, len(truth) - 1)
    assert (got.found, got.spurious) == (1.0, 0.0)
    reported = scans.score(truth, cut, codes, reported_from(truth), codes, TINY.voxel_size_um)
    assert (reported.spurious, reported.n_duplicates) == (0.0, 0)


def test_nothing_reported_is_nothing_found() -> None:
    truth, labels, codes = truth_of(sphere_scene())
    got = scans.score(truth, labels, codes, reported_from(truth).iloc[:0], codes * 0, VOXEL)
    assert (got.found, got.spurious, got.silicon_dice) == (0.0, 0.0, 0.0)
    assert math.isnan(got.gap_mae_vox) and got.n_reported == 0


# -------------------------------------------------------------- the files


@pytest.fixture(scope="module")
def tiny_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scans.write_scan(tmp_path_factory.mktemp("scan") / "tiny", TINY, seed=3)


def test_a_written_scan_reads_back_as_a_campaign(tiny_scan: Path) -> None:
    campaign = load_campaign(tiny_scan)
    (sample,) = campaign.samples
    assert sample.id == scans.SAMPLE_ID and sample.voxel_size_um == TINY.voxel_size_um
    assert campaign.stage_parameters("recon")["algorithm"] == "auto"  # a default left as is
    assert campaign.size_prior_um == TINY.size_prior_um
    raw = read_data_exchange(tiny_scan.parent / "raw" / "scan.h5")
    assert raw.data.shape == (TINY.n_angles, TINY.shape[0], TINY.shape[2])
    assert float(raw.theta_rad[-1]) == pytest.approx(math.pi * (1 - 1 / TINY.n_angles))
    truth = pd.read_parquet(tiny_scan.parent / "truth" / "particles.parquet")
    assert {"particle", "radius_um", "gap_um", "shape_kind", "gap_kind"} <= set(truth.columns)
    assert len(truth) >= 1 and truth["gap_um"].notna().all()
    phases = np.load(tiny_scan.parent / "truth" / "phases" / "scan.npy")
    assert phases.shape == TINY.shape and phases.dtype == np.uint8
    again = scans.write_scan(tiny_scan.parent.parent / "again", TINY, seed=3)
    assert np.array_equal(np.load(again.parent / "truth" / "phases" / "scan.npy"), phases)


def test_score_run_reads_the_store_and_tables(tiny_scan: Path) -> None:
    folder = tiny_scan.parent
    campaign = load_campaign(tiny_scan)
    codes = np.load(folder / "truth" / "phases" / "scan.npy")
    array = create_volume(
        campaign.store_location,
        "scan",
        "phases",
        codes.shape,
        np.uint8,
        voxel_size_um=TINY.voxel_size_um,
        stage="segment",
        overwrite=True,
    )
    array[...] = codes
    mark_complete(array)
    truth = pd.read_parquet(folder / "truth" / "particles.parquet")
    rows = reported_from(truth).assign(n_rays=truth["n_rays"], touches_border=False)
    flagged = rows.iloc[:1].assign(n_rays=0, centroid_z_um=0.0)  # unmeasured: not reported
    table = campaign.tables_dir / "samples" / "scan.parquet"
    table.parent.mkdir(parents=True)
    pd.concat([rows, flagged], ignore_index=True).to_parquet(table)
    got = scans.score_run(tiny_scan)
    assert (got.found, got.spurious, got.silicon_dice) == (1.0, 0.0, 1.0)
    assert got.n_reported == len(truth)


def test_score_run_without_a_run_says_so(tmp_path: Path) -> None:
    campaign = scans.write_scan(tmp_path / "tiny", TINY)
    with pytest.raises(scans.ScanError, match="run `debond run"):
        scans.score_run(campaign)


# ------------------------------------------------------------ the pipeline


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    from debond.cluster import cluster

    with cluster(workers=2) as connected:
        yield connected


#: The goals of the image stages on every variant (default settings, the voxel
#: size and the size prior given): found ≥, spurious ≤, Dice ≥, gap error ≤
#: (voxels), radius error ≤.
GOALS = {
    "found": (0.95, ">="),
    "spurious": (0.05, "<="),
    "silicon_dice": (0.9, ">="),
    "gap_mae_vox": (1.0, "<="),
    "radius_error": (0.05, "<="),
}
#: Variants the image stages do not yet meet the goals on, with what falls
#: short at seed 0 (README, "Scans it was not tuned on").
SHORT: dict[str, str] = {
    "silicon_near_sei": "silicon_dice 0.826; gap_mae_vox 1.13; radius_error 0.085",
    "touching_clusters": "found 0.889; silicon_dice 0.870; radius_error 0.071",
    "low_contrast": "gap_mae_vox 1.03",
}


def shortfalls(score: scans.Score) -> list[str]:
    """The goals a score misses, as readable lines (empty: every goal met)."""
    missed = []
    for name, (goal, way) in GOALS.items():
        value = float(getattr(score, name))
        met = value >= goal if way == ">=" else value <= goal
        if not met or not math.isfinite(value):
            missed.append(f"{name} {value:.3g} (goal {way} {goal})")
    return missed


def test_shortfalls_name_each_missed_goal() -> None:
    perfect = scans.Score(1.0, 0.0, 1.0, 0.2, 0.01, 5, 5, 5, 5)
    assert shortfalls(perfect) == []
    poor = dataclasses.replace(perfect, found=0.8, gap_mae_vox=math.nan)
    assert [line.split()[0] for line in shortfalls(poor)] == ["found", "gap_mae_vox"]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(v, marks=pytest.mark.xfail(reason=SHORT[v.name], strict=False))
        if v.name in SHORT
        else v
        for v in scans.VARIANTS
    ],
    ids=lambda v: v.name,
)
def test_the_pipeline_meets_the_goals_on_every_variant(
    variant: Variant, client: object, tmp_path: Path
) -> None:
    """`debond run` at default settings, given only the voxel size and the size prior."""
    from debond.runner import run_campaign

    campaign = scans.write_scan(tmp_path / variant.name, variant)
    run_campaign(load_campaign(campaign), client, echo=lambda line: None)  # type: ignore[arg-type]
    got = scans.score_run(campaign)
    print(variant.name, got.as_dict())
    assert not shortfalls(got), f"{variant.name}: " + "; ".join(shortfalls(got))
