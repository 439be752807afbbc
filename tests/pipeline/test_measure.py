"""Ray-traced gaps: analytic phantoms, scipy references, chunkings, a real electrode."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from dask.callbacks import Callback
from dask.utils import key_split
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.spatial import cKDTree

from debond.memory import TASK_MEMORY_KEY
from debond.pipeline.blocks import read_box
from debond.pipeline.measure import (
    GAP_COLUMNS,
    OVERSIZE_FACTOR,
    PARTICLE_COLUMNS,
    RAY_STEP_VOXELS,
    batch_particles,
    fibonacci_directions,
    measure_gaps,
    particle_properties,
    ray_gaps_kernel,
    task_peak_bytes,
)
from debond.pipeline.segment import CBD, GRAPHITE, PORE, SEI, SILICON

STEP = 0.25  # the step measure_gaps uses, voxels

# ------------------------------------------------------------------ phantoms

Centre = tuple[float, float, float]


def radius_field(shape: tuple[int, int, int], centre: Centre) -> np.ndarray:
    """Distance of every voxel centre from ``centre``, voxels."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)


def paint_sphere(
    phases: np.ndarray,
    labels: np.ndarray,
    label: int,
    centre: Centre,
    radius: float,
    gap: float,
    *,
    sei: float = 3.0,
    cbd: float = 4.0,
    inner: float = 0.0,
) -> np.ndarray:
    """A silicon sphere (shell if ``inner`` > 0), an SEI shell, pore, then a CBD shell
    starting ``gap`` voxels from the silicon surface; returns the distance field."""
    r = radius_field(phases.shape, centre)  # type: ignore[arg-type]
    phases[(r >= radius) & (r < radius + min(sei, gap))] = SEI
    phases[(r >= radius + gap) & (r < radius + gap + cbd)] = CBD
    silicon = (r >= inner) & (r < radius)
    phases[silicon] = SILICON
    labels[silicon] = label
    return r


def sphere_row(
    radius: float, gaps: list[float], seed: int
) -> tuple[np.ndarray, np.ndarray, list[Centre]]:
    """One sphere of ``radius`` per gap, side by side along x, off-grid centres."""
    rng = np.random.default_rng(seed)
    sizes = [math.ceil(2 * (radius + g + 4.0)) + 6 for g in gaps]
    side = max(sizes)
    phases = np.zeros((side, side, sum(sizes)), np.uint8)
    labels = np.zeros(phases.shape, np.int32)
    centres: list[Centre] = []
    start = 0
    for i, (g, size) in enumerate(zip(gaps, sizes, strict=True)):
        jitter = rng.uniform(-0.5, 0.5, 3)
        centre = (side / 2 + jitter[0], side / 2 + jitter[1], start + size / 2 + jitter[2])
        box = np.s_[:, :, start : start + size]
        local = (centre[0], centre[1], size / 2 + jitter[2])
        paint_sphere(phases[box], labels[box], i + 1, local, radius, g)
        centres.append(centre)
        start += size
    return phases, labels, centres


def mixed_phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Several particles in one volume: a plain sphere, a hollow shell, a blocked
    sphere, one touching the border; with a sample mask cutting one of them."""
    shape = (40, 44, 120)
    phases = np.zeros(shape, np.uint8)
    labels = np.zeros(shape, np.int32)
    paint_sphere(phases, labels, 1, (19.6, 21.3, 18.2), 6.0, 3.0)
    paint_sphere(phases, labels, 2, (20.2, 22.1, 48.7), 9.0, 2.0, inner=5.0)
    r = paint_sphere(phases, labels, 3, (19.4, 20.8, 80.3), 7.0, 5.0, sei=0.0)
    x = np.arange(shape[2])[None, None, :]
    phases[(r >= 7.0) & (r < 12.0) & (x > 80.3)] = GRAPHITE
    paint_sphere(phases, labels, 4, (3.0, 22.2, 107.1), 6.5, 2.5)
    sample = np.ones(shape, bool)
    sample[:, :, 114:] = False
    return phases, labels, sample


# ---------------------------------------------------------- the reference


def reference_ray(
    phases: np.ndarray,
    labels: np.ndarray,
    particle: int,
    centre: Centre,
    direction: np.ndarray,
    max_length: float,
    sample: np.ndarray | None = None,
) -> float:
    """One ray on the whole volume, step by step: the ray model of DESIGN/measure written
    independently (explicit trilinear formula, a state machine instead of masks)."""
    shape = phases.shape

    def trilinear(indicator: Callable[[int, int, int], float], p: list[float]) -> float:
        corner = [min(math.floor(p[a]), shape[a] - 2) for a in range(3)]
        frac = [p[a] - corner[a] for a in range(3)]
        value = 0.0
        for dz in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    weight = (
                        (frac[0] if dz else 1 - frac[0])
                        * (frac[1] if dy else 1 - frac[1])
                        * (frac[2] if dx else 1 - frac[2])
                    )
                    if weight:
                        value += weight * indicator(corner[0] + dz, corner[1] + dy, corner[2] + dx)
        return value

    def own(i: int, j: int, k: int) -> float:
        return 1.0 if labels[i, j, k] == particle else 0.0

    def cbd(i: int, j: int, k: int) -> float:
        return 1.0 if phases[i, j, k] == CBD else 0.0

    state = "seek"  # → "inside" (entered the particle) → "gap" (left it)
    previous = (0.0, 0.0)
    surface = 0.0
    k = 0
    while True:
        t = k * STEP
        p = [centre[a] + float(direction[a]) * t for a in range(3)]
        in_volume = all(0.0 <= p[a] <= shape[a] - 1 for a in range(3))
        f = trilinear(own, p) if in_volume else 0.0
        h = trilinear(cbd, p) if in_volume else 0.0
        if state == "seek":
            if f >= 0.5:
                state = "inside"
            elif not in_volume:
                return math.nan
        if state != "seek":
            if state == "inside" and f < 0.5:
                f0 = previous[0]
                surface = (k - 1) * STEP + STEP * (f0 - 0.5) / (f0 - f)
                state = "gap"
            if state == "gap":
                if h >= 0.5:
                    h0 = previous[1]
                    crossing = (
                        (k - 1) * STEP + STEP * (0.5 - h0) / (h - h0) if h0 < 0.5 else surface
                    )
                    gap = max(crossing - surface, 0.0)
                    return gap if gap <= max_length else math.nan
                if f >= 0.5 or t - surface > max_length:
                    return math.nan
            if not in_volume:
                return math.nan
            i, j, m = (round(c) for c in p)
            label, phase = labels[i, j, m], phases[i, j, m]
            if phase == GRAPHITE or (label != particle and (label != 0 or phase == SILICON)):
                return math.nan
            if sample is not None and not sample[i, j, m]:
                return math.nan
        previous = (f, h)
        k += 1


def reference_gaps(
    phases: np.ndarray,
    labels: np.ndarray,
    particle: int,
    n_rays: int,
    max_length: float,
    sample: np.ndarray | None = None,
) -> np.ndarray:
    """All rays of one particle by :func:`reference_ray`, voxels; centroid from scipy."""
    centre = ndimage.center_of_mass(labels == particle)
    directions = fibonacci_directions(n_rays)
    return np.array(
        [reference_ray(phases, labels, particle, centre, d, max_length, sample) for d in directions]
    )


# ---------------------------------------------------------------- directions


@pytest.mark.parametrize("n", [64, 256, 1000])
def test_fibonacci_directions_are_unit_and_quasi_uniform(n: int) -> None:
    d = fibonacci_directions(n)
    assert d.shape == (n, 3) and d.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-12)
    assert np.abs(d.mean(axis=0)).max() < 2.0 / n
    # nearest-neighbour angles: all close to the spacing of n equal areas √(4π/n)
    chord = cKDTree(d).query(d, k=2)[0][:, 1]
    angle = 2 * np.arcsin(chord / 2) / math.sqrt(4 * math.pi / n)
    assert 0.8 < angle.min() and angle.max() < 1.05 and angle.std() / angle.mean() < 0.05
    # any cap of half-angle 60° holds a quarter of the sphere's area, so of the directions
    rng = np.random.default_rng(n)
    for axis in rng.normal(size=(20, 3)):
        fraction = np.mean(d @ (axis / np.linalg.norm(axis)) > 0.5)
        assert fraction == pytest.approx(0.25, abs=3.0 / math.sqrt(n))


def test_fibonacci_directions_rejects_bad_n() -> None:
    assert fibonacci_directions(1).shape == (1, 3)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=r"n must be a positive integer \(directions\); got"):
            fibonacci_directions(bad)  # type: ignore[arg-type]


# -------------------------------------------------------- particle properties


def random_labels(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Blobs labelled by scipy, renumbered to sparse large labels in shuffled order."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    blobs, n = ndimage.label(smooth > 0.08)
    new = np.zeros(n + 1, np.int64)
    new[1:] = rng.permutation(n) * 7 + 1000
    return new[blobs].astype(np.int32)


@pytest.mark.parametrize(
    "chunks",
    [(30, 26, 34), (8, 8, 8), (5, 26, 3), (17, 9, 34)],
    ids=lambda c: "x".join(map(str, c)),
)
def test_particle_properties_match_scipy(chunks: tuple[int, int, int]) -> None:
    labels = random_labels((30, 26, 34), seed=2)
    index = np.unique(labels[labels > 0])
    assert index.size > 20
    table = particle_properties(da.from_array(labels, chunks=chunks), voxel_size_um=0.03)
    assert list(table.columns) == list(PARTICLE_COLUMNS)
    np.testing.assert_array_equal(table["particle"], index)
    volume = ndimage.sum_labels(np.ones(labels.shape), labels, index)
    np.testing.assert_array_equal(table["volume_voxels"], volume)
    centroids = np.array(ndimage.center_of_mass(np.ones(labels.shape), labels, index)) * 0.03
    got = table[["centroid_z_um", "centroid_y_um", "centroid_x_um"]].to_numpy()
    np.testing.assert_allclose(got, centroids, rtol=1e-12, atol=1e-15)
    boxes = ndimage.find_objects(labels)
    expected = [[s for sl in boxes[i - 1] for s in (sl.start, sl.stop)] for i in index]
    np.testing.assert_array_equal(table[["z0", "z1", "y0", "y1", "x0", "x1"]], expected)
    radius = np.cbrt(3 * volume * 0.03**3 / (4 * math.pi))
    np.testing.assert_allclose(table["radius_um"], radius, rtol=1e-12)
    assert table["particle"].dtype == np.int64 and table["volume_voxels"].dtype == np.int64


def test_particle_properties_on_numpy_and_without_particles() -> None:
    labels = random_labels((12, 10, 14), seed=3)
    lazy = particle_properties(da.from_array(labels, chunks=4), voxel_size_um=1.0)
    pd.testing.assert_frame_equal(particle_properties(labels, voxel_size_um=1.0), lazy)
    empty = particle_properties(np.zeros((4, 5, 6), np.uint16), voxel_size_um=1.0)
    assert empty.empty and list(empty.columns) == list(PARTICLE_COLUMNS)


class TaskCounter(Callback):
    """Counts the tasks that local schedulers run, per ``dask.compute``."""

    def __init__(self) -> None:
        super().__init__()
        self.per_compute: list[int] = []
        self.names: list[list[str]] = []

    def _start(self, dsk: Any) -> None:
        self.per_compute.append(0)
        self.names.append([])

    def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
        self.per_compute[-1] += 1
        self.names[-1].append(key_split(key))  # "_measure_batch-…" splits as "measure_batch"

    def batches(self) -> list[int]:
        """The ray-tracing tasks of each compute."""
        return [
            names.count("measure_batch") + names.count("read_and_measure") for names in self.names
        ]


def test_particle_properties_is_one_task_per_block_not_per_particle() -> None:
    labels = np.zeros((32, 32, 32), np.int32)
    labels[::2, ::2, ::2] = np.arange(1, 16**3 + 1).reshape(16, 16, 16)  # 4096 particles
    with TaskCounter() as counter:
        table = particle_properties(da.from_array(labels, chunks=16), voxel_size_um=1.0)
    assert len(table) == 4096 and (table["volume_voxels"] == 1).all()
    # 8 blocks: a few tasks each, whatever the number of particles
    assert len(counter.per_compute) == 1 and counter.per_compute[0] <= 3 * 8


def test_particle_properties_rejects_bad_input() -> None:
    labels = np.ones((3, 4, 5), np.int32)
    with pytest.raises(ValueError, match=r"labels must be 3-D \(z, y, x\); got shape \(4, 5\)"):
        particle_properties(labels[0], voxel_size_um=1.0)
    with pytest.raises(
        ValueError, match="labels must hold integer particle labels; got dtype float"
    ):
        particle_properties(labels.astype(float), voxel_size_um=1.0)
    with pytest.raises(
        ValueError, match="labels must hold integer particle labels; got dtype bool"
    ):
        particle_properties(labels.astype(bool), voxel_size_um=1.0)
    with pytest.raises(
        ValueError, match=r"voxel_size_um must be a finite number > 0 \(µm\); got 0"
    ):
        particle_properties(labels, voxel_size_um=0)
    with pytest.raises(ValueError, match=r"voxel_size_um must be .*got nan"):
        particle_properties(labels, voxel_size_um=math.nan)
    with pytest.raises(ValueError, match=r"labels must be ≥ 0 .*found label -2"):
        particle_properties(-2 * labels, voxel_size_um=1.0)


# ---------------------------------------------------------- analytic phantoms

PHANTOM_GAPS = [0.0, 0.5, 2.0, 5.0, 12.0, 25.0, 40.0]


@pytest.mark.parametrize("radius", [6, 10, 15, 25])
def test_sphere_phantoms_give_the_gap_and_radius(radius: int) -> None:
    voxel = 0.03
    phases, labels, centres = sphere_row(radius, PHANTOM_GAPS, seed=radius)
    table = measure_gaps(phases, labels, voxel_size_um=voxel, max_ray_length_um=45 * voxel)
    assert list(table.columns) == list(GAP_COLUMNS)
    np.testing.assert_array_equal(table["particle"], np.arange(1, len(PHANTOM_GAPS) + 1))
    assert (table["n_rays"] == 256).all() and not table["touches_border"].any()
    error = table["gap_mean_um"].to_numpy() / voxel - np.array(PHANTOM_GAPS)
    assert np.abs(error).max() < 0.5, error  # measured: < 0.07 voxel
    assert table["gap_mean_um"].iloc[0] < 1e-9  # CBD touching the silicon
    assert (table["gap_std_um"] / voxel < 0.5).all()  # ray to ray, from voxelisation only
    # radius: exactly the equivalent sphere of the voxel count, and within 2 % of R
    volume = np.bincount(labels.ravel())[1:] * voxel**3
    np.testing.assert_allclose(table["radius_um"], np.cbrt(3 * volume / (4 * math.pi)), rtol=1e-12)
    np.testing.assert_allclose(table["radius_um"] / voxel, radius, rtol=0.02)
    got = table[["centroid_z_um", "centroid_y_um", "centroid_x_um"]].to_numpy() / voxel
    np.testing.assert_allclose(got, np.array(centres), atol=0.1)


def test_hollow_particle_is_measured_from_its_outer_surface() -> None:
    """Centroid outside the particle (a shell): rays first enter, then leave it."""
    phases = np.zeros((36, 36, 36), np.uint8)
    labels = np.zeros(phases.shape, np.int32)
    paint_sphere(phases, labels, 5, (17.7, 17.2, 17.4), 10.0, 4.0, inner=5.0)
    assert labels[18, 17, 17] == 0  # the centroid lies in the cavity
    table = measure_gaps(phases, labels, voxel_size_um=1.0, max_ray_length_um=10.0)
    assert table["n_rays"].iloc[0] == 256
    assert table["gap_mean_um"].iloc[0] == pytest.approx(4.0, abs=0.5)


def walled_sphere() -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A sphere of 8 voxels off the grid, a 6-voxel gap and CBD beyond, in a 44³ box:
    phases, labels, each voxel's distance from the centre, and the centre."""
    shape, centre = (44, 44, 44), (21.3, 21.8, 22.15)
    phases = np.zeros(shape, np.uint8)
    labels = np.zeros(shape, np.int32)
    r = paint_sphere(phases, labels, 1, centre, 8.0, 6.0, sei=0.0)
    return phases, labels, r, centre


def test_rays_blocked_by_graphite_or_other_silicon_are_not_counted() -> None:
    """Graphite fills the gap for x > cx, another particle (and unlabelled silicon) for
    x ≤ cx, z > cz: only rays with d_x < 0 and d_z < 0, a quarter, reach the CBD."""
    phases, labels, r, centre = walled_sphere()
    z, y, x = np.ogrid[: phases.shape[0], : phases.shape[1], : phases.shape[2]]
    gap = (r >= 8.0) & (r < 14.0)
    phases[gap & (x > centre[2])] = GRAPHITE
    other = gap & (x <= centre[2]) & (z > centre[0])
    phases[other] = SILICON
    labels[other & (y > centre[1])] = 2  # the other half of `other` is silicon without a label
    table = measure_gaps(phases, labels, voxel_size_um=1.0, max_ray_length_um=20.0)
    row = table.set_index("particle").loc[1]
    d = fibonacci_directions(256)
    quadrant = int(np.sum((d[:, 0] < 0) & (d[:, 2] < 0)))
    assert quadrant == 64  # the analytic quarter of 256
    # the planes x = cx, z = cz are voxelised (and the centroid of the voxelised sphere
    # is off the true centre by a fraction of a voxel): rays grazing them may go either way
    assert abs(row["n_rays"] - quadrant) <= 8
    assert row["gap_mean_um"] == pytest.approx(6.0, abs=0.5)


def test_particles_without_a_valid_ray_get_nan_and_zero() -> None:
    """CBD beyond the maximum length; a particle walled in by graphite; no warnings."""
    phases = np.zeros((40, 40, 80), np.uint8)
    labels = np.zeros(phases.shape, np.int32)
    paint_sphere(phases, labels, 1, (19.5, 20.2, 19.8), 6.0, 12.0)
    r = paint_sphere(phases, labels, 2, (19.8, 19.6, 59.3), 6.0, 5.0, sei=0.0)
    phases[(r >= 6.0) & (r < 8.0)] = GRAPHITE
    table = measure_gaps(phases, labels, voxel_size_um=0.1, max_ray_length_um=1.0)
    assert (table["n_rays"] == 0).all()
    assert table["gap_mean_um"].isna().all() and table["gap_std_um"].isna().all()
    longer = measure_gaps(phases, labels, voxel_size_um=0.1, max_ray_length_um=1.5)
    assert longer["n_rays"].tolist() == [256, 0]
    assert longer["gap_mean_um"].iloc[0] == pytest.approx(1.2, abs=0.05)


def test_sample_mask_and_border() -> None:
    phases, labels, sample = mixed_phantom()
    table = measure_gaps(phases, labels, voxel_size_um=1.0, max_ray_length_um=12.0, sample=sample)
    rows = table.set_index("particle")
    assert rows["touches_border"].tolist() == [False, False, False, True]
    assert rows.loc[1, "n_rays"] == 256 and rows.loc[2, "n_rays"] == 256
    assert rows.loc[1, "gap_mean_um"] == pytest.approx(3.0, abs=0.5)
    assert rows.loc[2, "gap_mean_um"] == pytest.approx(2.0, abs=0.5)
    assert abs(rows.loc[3, "n_rays"] - 128) <= 10  # graphite on the +x half
    # particle 4 is cut by the z = 0 face: rays through it leave the volume
    assert 0 < rows.loc[4, "n_rays"] < 256
    # the sample ends at x = 114: particle 4's rays towards +x are lost as well
    whole = measure_gaps(phases, labels, voxel_size_um=1.0, max_ray_length_um=12.0)
    assert whole.set_index("particle").loc[4, "n_rays"] > rows.loc[4, "n_rays"]
    pd.testing.assert_frame_equal(whole.iloc[:3], table.iloc[:3])
    for particle in (3, 4):
        expected = reference_gaps(phases, labels, particle, 256, 12.0, sample)
        assert rows.loc[particle, "n_rays"] == np.isfinite(expected).sum()
        assert rows.loc[particle, "gap_mean_um"] == pytest.approx(np.nanmean(expected), abs=1e-9)


@pytest.mark.parametrize(
    "chunks",
    [(40, 44, 120), (8, 8, 8), (13, 17, 11), (40, 5, 31)],
    ids=lambda c: "x".join(map(str, c)),
)
def test_table_does_not_depend_on_chunking(chunks: tuple[int, int, int]) -> None:
    phases, labels, sample = mixed_phantom()
    kwargs: dict[str, Any] = {"voxel_size_um": 0.05, "max_ray_length_um": 0.6, "n_rays": 100}
    expected = measure_gaps(phases, labels, sample=sample, particles_per_task=64, **kwargs)
    got = measure_gaps(
        da.from_array(phases, chunks=chunks),
        da.from_array(labels, chunks=chunks[::-1]),
        sample=da.from_array(sample, chunks=chunks),
        particles_per_task=3,
        **kwargs,
    )
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert (expected["n_rays"] > 0).all()


def test_measure_gaps_batches_particles_per_task() -> None:
    phases, labels, _ = mixed_phantom()
    with TaskCounter() as counter:
        per_one = measure_gaps(phases, labels, voxel_size_um=1.0, particles_per_task=1)
        per_all = measure_gaps(phases, labels, voxel_size_um=1.0, particles_per_task=4)
    pd.testing.assert_frame_equal(per_one, per_all, check_exact=True)
    # two computes each (properties and the CBD check; the rays): one batch task, not four
    assert counter.batches() == [0, 4, 0, 1]


def test_batches_fit_a_tasks_memory_and_give_the_same_gaps() -> None:
    """A budget that holds two particles' crops: more tasks, each within it, the same table."""
    phases, labels, sample = mixed_phantom()
    kwargs: dict[str, Any] = {"voxel_size_um": 1.0, "max_ray_length_um": 6.0, "n_rays": 64}
    lazy = [da.from_array(v, chunks=(20, 22, 40)) for v in (phases, labels, sample)]
    with TaskCounter() as counter:
        whole = measure_gaps(*lazy[:2], sample=lazy[2], particles_per_task=64, **kwargs)
        props = particle_properties(labels, voxel_size_um=1.0)
        margin = math.ceil(6.0 + RAY_STEP_VOXELS) + 2
        sizes = [
            (min(labels.shape[a], int(r[f"{c}1"]) + margin) - max(0, int(r[f"{c}0"]) - margin))
            for _, r in props.iterrows()
            for a, c in enumerate("zyx")
        ]
        crops = np.prod(np.reshape(sizes, (-1, 3)), axis=1)
        work = task_peak_bytes(int(crops.max()), 64, 6.0)
        budget = work + 6.0 * 2.5 * crops.max()  # inputs are 6 bytes a voxel
        with dask.config.set({TASK_MEMORY_KEY: budget}):
            split = measure_gaps(*lazy[:2], sample=lazy[2], particles_per_task=64, **kwargs)
    pd.testing.assert_frame_equal(split, whole, check_exact=True)
    assert counter.batches()[1] == 1 and 1 < counter.batches()[-1] < len(props)


def test_stored_inputs_are_read_by_each_batch_and_give_the_same_gaps(tmp_path: Path) -> None:
    """Zarr inputs (chunks unlike the labels' or each other's): one task per batch,
    which reads its box; the table of the NumPy inputs, exactly."""
    phases, labels, sample = mixed_phantom()
    kwargs: dict[str, Any] = {"voxel_size_um": 1.0, "max_ray_length_um": 6.0, "n_rays": 64}
    stored = [
        zarr.create_array(tmp_path / name, data=v, chunks=chunks)
        for name, v, chunks in (
            ("phases", phases, (16, 16, 16)),
            ("labels", labels, (13, 17, 11)),
            ("sample", sample, (40, 5, 31)),
        )
    ]
    expected = measure_gaps(phases, labels, sample=sample, particles_per_task=3, **kwargs)
    with TaskCounter() as counter:
        got = measure_gaps(*stored[:2], sample=stored[2], particles_per_task=3, **kwargs)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert counter.batches()[-1] == math.ceil(len(expected) / 3)
    # the rays' compute runs the batches and nothing else: no block, no piece of one
    assert counter.per_compute[-1] == counter.batches()[-1]


def test_a_box_is_read_chunk_by_chunk_as_one_slice(tmp_path: Path) -> None:
    volume = np.random.default_rng(5).integers(0, 1000, (30, 41, 52), dtype=np.int32)
    array = zarr.create_array(tmp_path / "v", data=volume, chunks=(7, 16, 13))
    for low, high in (
        ((0, 0, 0), (30, 41, 52)),
        ((6, 15, 12), (8, 17, 40)),
        ((3, 4, 5), (4, 5, 6)),
    ):
        box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
        np.testing.assert_array_equal(read_box(array, low, high), volume[box])


def test_a_particle_too_large_for_the_budget_goes_alone() -> None:
    boxes = np.array([[[0, 0, 0], [10, 10, 10]], [[0, 0, 0], [2, 2, 2]], [[1, 1, 1], [3, 3, 3]]])
    work = lambda voxels: 2.0 * voxels  # noqa: E731
    # the first alone needs 1000 + 2000 bytes: over the budget, alone in its batch
    assert batch_particles(boxes, 1.0, work, most=8, budget=100.0) == [[0], [1, 2]]
    assert batch_particles(boxes, 1.0, work, most=1, budget=1e9) == [[0], [1], [2]]
    assert batch_particles(boxes, 1.0, work, most=8, budget=3000.0) == [[0, 1, 2]]


def test_measure_gaps_without_particles_returns_an_empty_table() -> None:
    phases = np.full((6, 7, 8), CBD, np.uint8)
    table = measure_gaps(phases, np.zeros(phases.shape, np.int32), voxel_size_um=1.0)
    assert table.empty and list(table.columns) == list(GAP_COLUMNS)
    assert table["n_rays"].dtype == np.int64 and table["touches_border"].dtype == bool
    assert table["gap_mean_um"].dtype == np.float64


def test_measure_gaps_rejects_bad_input() -> None:
    phases, labels, sample = mixed_phantom()
    ok: dict[str, Any] = {"voxel_size_um": 1.0}
    with pytest.raises(ValueError, match=r"labels must be 3-D \(z, y, x\); got shape \(44, 120\)"):
        measure_gaps(phases, labels[0], **ok)
    with pytest.raises(
        ValueError,
        match=r"phases must have the shape of labels, \(40, 44, 120\); got shape \(40, 44, 119\)",
    ):
        measure_gaps(phases[..., 1:], labels, **ok)
    with pytest.raises(
        ValueError, match="labels must hold integer particle labels; got dtype float"
    ):
        measure_gaps(phases, labels.astype(np.float32), **ok)
    with pytest.raises(ValueError, match="phases must hold integer phase codes .*got dtype float"):
        measure_gaps(phases.astype(float), labels, **ok)
    with pytest.raises(ValueError, match=r"sample must be a bool mask .*got dtype uint8"):
        measure_gaps(phases, labels, sample=sample.astype(np.uint8), **ok)
    with pytest.raises(ValueError, match=r"sample must have the shape of labels"):
        measure_gaps(phases, labels, sample=sample[1:], **ok)
    with pytest.raises(ValueError, match=r"voxel_size_um must be a finite number > 0 .*got -1"):
        measure_gaps(phases, labels, voxel_size_um=-1)
    with pytest.raises(ValueError, match=r"n_rays must be an integer ≥ 1 .*got 0"):
        measure_gaps(phases, labels, n_rays=0, **ok)
    with pytest.raises(ValueError, match=r"max_ray_length_um must be a finite number > 0 .*got 0"):
        measure_gaps(phases, labels, max_ray_length_um=0, **ok)
    with pytest.raises(ValueError, match=r"particles_per_task must be an integer ≥ 1; got 0"):
        measure_gaps(phases, labels, particles_per_task=0, **ok)
    no_cbd = np.where(phases == CBD, PORE, phases).astype(np.uint8)
    with pytest.raises(ValueError, match=r"no CBD \(phase 2\) found in phases of shape"):
        measure_gaps(no_cbd, labels, **ok)
    with pytest.raises(ValueError, match=r"no CBD \(phase 2\) found"):  # also without particles
        measure_gaps(no_cbd, np.zeros_like(labels), **ok)


# -------------------------------------------------------------- the kernel


def test_kernel_on_a_crop_equals_the_whole_volume() -> None:
    phases, labels, sample = mixed_phantom()
    directions = fibonacci_directions(200)
    centre = ndimage.center_of_mass(labels == 3)
    common: dict[str, Any] = {"max_length_vox": 6.0, "volume_shape": phases.shape}
    whole = ray_gaps_kernel(phases, labels, 3, centre, directions, sample_crop=sample, **common)
    assert abs(np.isfinite(whole).sum() - 100) <= 10  # graphite on the +x half
    # the crop measure_gaps takes: bounding box [13:27, 14:28, 74:88] ± ceil(6 + 0.25) + 2
    box = np.s_[4:36, 5:37, 65:97]
    crop = ray_gaps_kernel(
        phases[box],
        labels[box],
        3,
        centre,
        directions,
        sample_crop=sample[box],
        crop_origin=(4, 5, 65),
        **common,
    )
    np.testing.assert_allclose(crop, whole, rtol=0, atol=1e-9)
    reference = [reference_ray(phases, labels, 3, centre, d, 6.0, sample) for d in directions]
    np.testing.assert_allclose(whole, reference, rtol=0, atol=1e-9)
    # a crop too small for the maximum length loses rays rather than inventing gaps
    tight = np.s_[10:30, 10:32, 72:89]
    lost = ray_gaps_kernel(
        phases[tight], labels[tight], 3, centre, directions, crop_origin=(10, 10, 72), **common
    )
    assert np.isnan(lost).sum() > np.isnan(whole).sum()
    kept = np.isfinite(lost)
    np.testing.assert_allclose(lost[kept], whole[kept], atol=1e-9)


def test_kernel_rejects_bad_input_and_handles_absent_particle() -> None:
    phases, labels, _ = mixed_phantom()
    d = fibonacci_directions(8)
    kwargs: dict[str, Any] = {"max_length_vox": 5.0, "volume_shape": phases.shape}
    assert np.isnan(ray_gaps_kernel(phases, labels, 99, (0, 0, 0), d, **kwargs)).all()
    with pytest.raises(ValueError, match=r"phases_crop and labels_crop must be 3-D of one shape"):
        ray_gaps_kernel(phases, labels[1:], 1, (0, 0, 0), d, **kwargs)
    with pytest.raises(ValueError, match=r"directions must be \(n_rays, 3\); got shape \(8, 2\)"):
        ray_gaps_kernel(phases, labels, 1, (0, 0, 0), d[:, :2], **kwargs)
    with pytest.raises(ValueError, match=r"sample_crop must have the crops' shape"):
        ray_gaps_kernel(phases, labels, 1, (0, 0, 0), d, sample_crop=np.ones(3, bool), **kwargs)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), max_length=st.floats(0.5, 12.0))
def test_gaps_are_never_negative_nor_longer_than_the_maximum(seed: int, max_length: float) -> None:
    rng = np.random.default_rng(seed)
    phases = rng.choice([PORE, GRAPHITE, CBD, SEI], size=(14, 15, 16), p=[0.6, 0.1, 0.2, 0.1])
    phases = phases.astype(np.uint8)
    labels = np.zeros(phases.shape, np.int32)
    paint_sphere(phases, labels, 1, tuple(rng.uniform(5, 9, 3)), rng.uniform(1, 4), 0.0, cbd=0)
    centre = ndimage.center_of_mass(labels == 1)
    directions = fibonacci_directions(50)
    gaps = ray_gaps_kernel(
        phases, labels, 1, centre, directions, max_length_vox=max_length, volume_shape=phases.shape
    )
    valid = gaps[np.isfinite(gaps)]
    assert (valid >= 0).all() and (valid <= max_length).all()


# ---------------------------------------------------------------- real data


def test_electrode_gaps_match_a_per_ray_reference() -> None:
    """A real segmented microstructure (TauFactor's NMC electrode; its active
    material stands in for silicon): the 20 largest particles that do not touch the
    border and 4 that do, in a cylindrical sample, against :func:`reference_ray`."""
    folder = os.environ.get("DEBOND_REAL_DATA")
    if not folder or not (Path(folder) / "electrode.tiff").is_file():
        pytest.skip("DEBOND_REAL_DATA is unset or has no electrode.tiff")
    tifffile = pytest.importorskip("tifffile")
    raw = tifffile.imread(Path(folder) / "electrode.tiff")
    assert raw.shape == (256, 256, 256) and set(np.unique(raw)) == {0, 85, 170}
    phases = np.select([raw == 85, raw == 170], [SILICON, CBD], PORE).astype(np.uint8)
    every, n = ndimage.label(raw == 85)  # 6-connectivity
    sizes = np.bincount(every.ravel())
    boxes = ndimage.find_objects(every)
    border = np.array(
        [any(s.start == 0 or s.stop == raw.shape[a] for a, s in enumerate(b)) for b in boxes]
    )
    by_size = np.argsort(-sizes[1:], kind="stable") + 1
    inner = [int(i) for i in by_size if not border[i - 1]][:20]
    outer = [int(i) for i in by_size if border[i - 1]][1:5]  # not the percolating network
    keep = np.zeros(n + 1, np.int32)
    keep[inner + outer] = inner + outer
    labels = keep[every]  # the other active material stays phase 3: it blocks rays
    yy, xx = np.ogrid[:256, :256]
    sample = np.broadcast_to(((yy - 127.5) ** 2 + (xx - 127.5) ** 2 < 125.0**2)[None], raw.shape)

    voxel, max_length_um, n_rays = 0.05, 1.0, 128
    table = measure_gaps(
        da.from_array(phases, chunks=(64, 100, 128)),
        da.from_array(labels, chunks=(80, 64, 64)),
        sample=da.from_array(sample, chunks=(128, 128, 128)),
        voxel_size_um=voxel,
        max_ray_length_um=max_length_um,
        n_rays=n_rays,
        particles_per_task=5,
        min_valid_ray_fraction=0.0,  # the ray model itself is compared: no particle flagged
    ).set_index("particle")
    assert sorted(table.index) == sorted(inner + outer)
    assert not table.loc[inner, "touches_border"].any() and table.loc[outer, "touches_border"].all()

    reference_mean, reference_count = [], []
    for particle in inner + outer:
        gaps = reference_gaps(phases, labels, particle, n_rays, max_length_um / voxel, sample)
        valid = gaps[np.isfinite(gaps)]
        reference_count.append(valid.size)
        reference_mean.append(valid.mean() * voxel if valid.size else math.nan)
    got = table.loc[inner + outer]
    # Same ray model, independent code: equal counts, means equal to rounding.
    np.testing.assert_array_equal(got["n_rays"], reference_count)
    np.testing.assert_allclose(got["gap_mean_um"], reference_mean, rtol=0, atol=1e-9)
    # particles outside the cylinder have no valid ray; most inside keep most rays
    outside = [p for p in inner + outer if not sample[labels == p].any()]
    assert (got.loc[outside, "n_rays"] == 0).all()
    assert got["n_rays"].drop(outside).median() > 0.5 * n_rays
    assert 0 < got["gap_mean_um"].median() < max_length_um


# ------------------------------------------------ particles not measured


def flags(row: Any) -> tuple[bool, bool, bool]:
    return bool(row["oversized"]), bool(row["spans_box"]), bool(row["few_rays"])


def test_a_particle_above_the_prior_is_flagged_oversized_not_measured() -> None:
    # one large (r = 9 vox) and one small (r = 4 vox) particle, 0.1 µm voxels, 3-voxel gaps
    phases = np.zeros((40, 40, 70), np.uint8)
    labels = np.zeros(phases.shape, np.int32)
    paint_sphere(phases, labels, 1, (19.6, 20.3, 19.8), 9.0, 3.0)
    paint_sphere(phases, labels, 2, (20.1, 19.7, 54.4), 4.0, 3.0)
    prior = (0.2, 0.6)  # µm: radii 2 to 6 voxels
    table = measure_gaps(
        phases, labels, voxel_size_um=0.1, max_ray_length_um=1.0, radius_range_um=prior
    ).set_index("particle")
    big, small_row = table.loc[1], table.loc[2]
    assert flags(big) == (True, False, False)
    assert big["radius_um"] == pytest.approx(0.9, rel=0.03)  # geometry kept
    assert math.isnan(big["gap_mean_um"]) and math.isnan(big["gap_std_um"])
    assert big["n_rays"] == 0  # not traced
    assert flags(small_row) == (False, False, False)
    assert small_row["gap_mean_um"] == pytest.approx(0.3, abs=0.05)
    # without a prior nothing is oversized and the large one is measured
    plain = measure_gaps(phases, labels, voxel_size_um=0.1, max_ray_length_um=1.0)
    assert not plain["oversized"].any()
    assert plain.set_index("particle").loc[1, "gap_mean_um"] == pytest.approx(0.3, abs=0.05)


def test_a_radius_a_few_percent_over_the_prior_is_measured() -> None:
    """The prior bounds true radii; a measured one a little above it is not a second particle."""
    phases = np.zeros((40, 40, 40), np.uint8)
    labels = np.zeros(phases.shape, np.int32)
    paint_sphere(phases, labels, 1, (19.6, 20.3, 19.8), 9.0, 3.0)
    for upper, flagged in ((0.85, False), (0.9 / OVERSIZE_FACTOR - 0.02, True)):
        table = measure_gaps(
            phases, labels, voxel_size_um=0.1, max_ray_length_um=1.0, radius_range_um=(0.2, upper)
        )
        assert bool(table["oversized"].iloc[0]) is flagged, upper


def rod(shape: tuple[int, int, int], axis_range: slice) -> tuple[np.ndarray, np.ndarray]:
    """A silicon rod along x over ``axis_range`` in a CBD sheath with a 2-voxel gap."""
    phases = np.zeros(shape, np.uint8)
    z, y = np.ogrid[: shape[0], : shape[1]]
    r = np.sqrt((z - shape[0] / 2 + 0.3) ** 2 + (y - shape[1] / 2 + 0.1) ** 2)[:, :, None]
    r = np.broadcast_to(r, shape)
    x = np.zeros(shape[2], bool)
    x[axis_range] = True
    phases[(r >= 6) & (r < 9) & x] = CBD
    phases[(r < 4) & x] = SILICON
    labels = ((r < 4) & x).astype(np.int32)
    return phases, labels


def test_a_particle_spanning_the_volume_or_the_sample_is_flagged() -> None:
    phases, labels = rod((24, 24, 40), slice(None))
    table = measure_gaps(phases, labels, voxel_size_um=1.0, max_ray_length_um=5.0)
    row = table.iloc[0]
    assert flags(row) == (False, True, False) and row["touches_border"]
    assert math.isnan(row["gap_mean_um"]) and row["n_rays"] == 0
    assert row["radius_um"] > 0
    # a rod from one end of the sample to the other, off the volume's faces
    phases, labels = rod((24, 24, 40), slice(3, 37))
    sample = np.zeros(phases.shape, bool)
    sample[:, :, 3:37] = True
    inside = measure_gaps(
        phases, labels, voxel_size_um=1.0, max_ray_length_um=5.0, sample=sample
    ).iloc[0]
    assert flags(inside) == (False, True, False) and not inside["touches_border"]
    assert math.isnan(inside["gap_mean_um"])
    # the same rod in a longer sample spans nothing; its rays along the rod's axis
    # see no CBD, the rest do
    sample[:, :, 1:39] = True
    free = measure_gaps(
        phases, labels, voxel_size_um=1.0, max_ray_length_um=5.0, sample=sample
    ).iloc[0]
    assert flags(free) == (False, False, False)
    assert free["gap_mean_um"] == pytest.approx(2.0, abs=0.5)


def test_a_particle_with_few_valid_rays_is_flagged() -> None:
    """Graphite around three quarters of the sphere: about a quarter of the rays count."""
    phases, labels, r, centre = walled_sphere()
    z, _, x = np.ogrid[: phases.shape[0], : phases.shape[1], : phases.shape[2]]
    phases[(r >= 8.0) & (r < 14.0) & ((x > centre[2]) | (z > centre[0]))] = GRAPHITE
    kw: dict[str, Any] = {"voxel_size_um": 1.0, "max_ray_length_um": 20.0}
    measured = measure_gaps(phases, labels, **kw).iloc[0]  # default: a fifth suffices
    assert flags(measured) == (False, False, False)
    assert 48 <= measured["n_rays"] <= 72
    assert measured["gap_mean_um"] == pytest.approx(6.0, abs=0.5)
    flagged = measure_gaps(phases, labels, min_valid_ray_fraction=0.5, **kw).iloc[0]
    assert flags(flagged) == (False, False, True)
    assert flagged["n_rays"] == measured["n_rays"]  # the valid rays are still counted
    assert math.isnan(flagged["gap_mean_um"]) and math.isnan(flagged["gap_std_um"])
    assert flagged["radius_um"] == measured["radius_um"]
    every = measure_gaps(phases, labels, min_valid_ray_fraction=0.0, **kw).iloc[0]
    assert not every["few_rays"]


def test_measure_gaps_rejects_bad_priors_and_fractions() -> None:
    phases, labels, _ = sphere_row(5.0, [2.0], seed=1)
    for bad in ((0.5, 0.2), (0.0, 1.0), (1.0,), "wide"):
        with pytest.raises(ValueError, match="radius_range_um"):
            measure_gaps(phases, labels, voxel_size_um=1.0, radius_range_um=bad)  # type: ignore[arg-type]
    for fraction in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="min_valid_ray_fraction"):
            measure_gaps(phases, labels, voxel_size_um=1.0, min_valid_ray_fraction=fraction)


def test_gap_columns_and_flags_are_in_the_particle_schema() -> None:
    from debond.pipeline.measure import NOT_MEASURED
    from debond.storage.tables import NOT_MEASURED as SCHEMA_FLAGS
    from debond.storage.tables import PARTICLES_SCHEMA

    assert set(GAP_COLUMNS) <= set(PARTICLES_SCHEMA.names)
    assert NOT_MEASURED == SCHEMA_FLAGS
    for flag in NOT_MEASURED:
        assert str(PARTICLES_SCHEMA.field(flag).type) == "bool"
