"""Segmentation: thresholds from the histogram, chunking invariance, the synthetic truth."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from dask_image import ndfilters
from scipy import ndimage
from skimage.feature import hessian_matrix

from debond.cluster import cluster
from debond.memory import TASK_MEMORY_KEY
from debond.pipeline.blocks import halo_fits, map_exact, merge_chunks
from debond.pipeline.levels import (
    CREST_REACH_VOXELS,
    EDGE_SHARE,
    RISE_SHARE,
    Levels,
    SegmentationError,
    drop_small,
    film_crests,
    grow_silicon,
    hessian,
    lower_eigenvalues,
    silicon_cores,
)
from debond.pipeline.segment import (
    CBD,
    PORE,
    SILICON,
    denoise,
    phases_kernel,
    pore_fraction,
    segment,
    thresholds_from_histogram,
)
from debond.pipeline.segment import open_with_ball as open_ball
from debond.storage import open_volume, prepare_write
from debond.synth import ATTENUATION_PER_UM

VOXEL_UM = 0.06


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def truth(small_campaign: Path) -> tuple[np.ndarray, np.ndarray]:
    """Phases of the small synthetic sample c03 and a noisy, slightly blurred attenuation."""
    phases = open_volume(small_campaign / "truth" / "phases.zarr", "c03", "phases").values
    n = phases.shape[-1]
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    inside = np.hypot(y, x) <= 0.45 * (n - 1)
    table = np.zeros(5, dtype=np.float32)
    for code, value in ATTENUATION_PER_UM.items():
        table[code] = value
    values = np.where(inside, table[phases], np.float32(0.0))
    blurred = ndimage.gaussian_filter(values, 0.5)
    noisy = blurred + np.random.default_rng(0).normal(0.0, 0.01, blurred.shape)
    return phases, noisy.astype(np.float32)


def test_thresholds_of_a_five_level_mixture() -> None:
    """Multi-Otsu bounds fall between the levels; class means recover them."""
    rng = np.random.default_rng(1)
    levels = [0.0, 0.05, 0.09, 0.16, 0.30]
    sizes = [40_000, 60_000, 20_000, 20_000, 20_000]
    values = np.concatenate([rng.normal(v, 0.006, n) for v, n in zip(levels, sizes, strict=True)])
    counts, edges = np.histogram(values, bins=256)
    decided = thresholds_from_histogram(counts, edges)
    for low, bound, high in zip(levels, decided.classes, levels[1:], strict=False):
        assert low < bound < high
    assert decided.means == pytest.approx(levels, abs=0.005)
    assert decided.cbd == pytest.approx((0.05 + 0.30) / 2, abs=0.005)


def test_given_thresholds_are_used_and_checked() -> None:
    counts, edges = np.histogram(np.linspace(0, 0.3, 1000), bins=64)
    given = (0.02, 0.07, 0.12, 0.2)
    assert thresholds_from_histogram(counts, edges, given).classes == given
    with pytest.raises(ValueError, match="four increasing numbers"):
        thresholds_from_histogram(counts, edges, (0.02, 0.07, 0.05, 0.2))


DENOISE_CASES = [
    ((12, 10, 11), (12, 10, 11), 1.0),
    ((12, 10, 11), (3, 10, 11), 1.0),  # 3-slice chunks, smaller than the halo of 4
    ((12, 10, 11), (1, 2, 3), 1.0),
    ((12, 10, 11), (5, 4, 11), 0.6),
    ((3, 16, 16), (1, 16, 16), 1.0),  # three slices: shorter than the halo
    ((9, 9, 9), (2, 9, 9), 2.5),  # every axis shorter than the halo of 10
]


@pytest.mark.parametrize(("shape", "chunks", "sigma"), DENOISE_CASES, ids=str)
def test_denoise_equals_scipy(
    shape: tuple[int, int, int], chunks: tuple[int, int, int], sigma: float
) -> None:
    """dask-image's Gaussian where every axis holds the halo, the block-wise filter it
    replaced (same values) where dask-image refuses an axis shorter than the halo."""
    x = np.random.default_rng(4).random(shape).astype(np.float32)
    array = da.from_array(x, chunks=chunks)
    reach = math.ceil(4 * sigma)
    halo = {0: reach, 1: reach, 2: reach}
    expected = ndimage.gaussian_filter(x, sigma, mode="nearest")
    block_wise = map_exact(
        array, ndimage.gaussian_filter, halo, dtype=np.float32, sigma=sigma, mode="nearest"
    )
    np.testing.assert_array_equal(block_wise.compute(), expected)
    got = denoise(array, sigma)
    assert got.dtype == np.float32 and got.chunks == merge_chunks(array, halo).chunks
    if halo_fits(shape, halo):
        library = ndfilters.gaussian_filter(merge_chunks(array, halo), sigma, mode="nearest")
        assert got.name == library.name  # the very same graph
    else:
        with pytest.raises(ValueError, match="is larger than your array"):
            ndfilters.gaussian_filter(array, sigma, mode="nearest")
        assert got.name == block_wise.name
    np.testing.assert_array_equal(got.compute(), expected)


@pytest.mark.parametrize("radius", [1, 2, 3.5])
def test_ball_opening_equals_scipy_with_a_ball_element(radius: float) -> None:
    mask = ndimage.gaussian_filter(np.random.default_rng(2).random((30, 31, 32)), 2) > 0.5
    r = int(np.floor(radius))
    grid = np.arange(-r, r + 1)
    ball = (grid[:, None, None] ** 2 + grid[None, :, None] ** 2 + grid**2) <= radius**2
    # scipy's opening erodes with the border as background; pad so both see the same.
    padded = np.pad(mask, r + 1)
    expected = ndimage.binary_opening(padded, ball)[r + 1 : -r - 1, r + 1 : -r - 1, r + 1 : -r - 1]
    result = open_ball(padded, radius)[r + 1 : -r - 1, r + 1 : -r - 1, r + 1 : -r - 1]
    assert np.array_equal(result, expected)


# 3-voxel chunks (hundreds of blocks) are the heaviest case: in the slow run
@pytest.mark.parametrize("chunks", [48, 16, (5, 20, 23), pytest.param(3, marks=pytest.mark.slow)])
def test_chunking_does_not_change_the_phases(
    truth: tuple[np.ndarray, np.ndarray], chunks: int | tuple[int, ...]
) -> None:
    _, values = truth
    result = segment(
        da.from_array(values, chunks=chunks),
        voxel_size_um=VOXEL_UM,
        sigma_voxels=0.0,
        graphite_min_radius_um=0.2,
        sei_max_um=0.18,
    )
    whole = phases_kernel(values, result.thresholds, sei_max_voxels=3, graphite_min_radius_voxels=3)
    assert np.array_equal(result.phases.compute(), np.where(whole == 255, 0, whole))
    assert np.array_equal(result.sample.compute(), whole != 255)


def test_the_synthetic_truth_is_recovered(truth: tuple[np.ndarray, np.ndarray]) -> None:
    """Noise 0.01/µm, blur 0.5 voxel: silicon and CBD Dice inside the pillar (outside it
    the truth volume still holds painted objects; the attenuation there is air)."""
    phases, values = truth
    result = segment(da.from_array(values, chunks=16), voxel_size_um=VOXEL_UM, sigma_voxels=0.0)
    found = result.phases.compute()
    n = values.shape[-1]
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    inside = np.broadcast_to(np.hypot(y, x) <= 0.45 * (n - 1), values.shape)
    for code in (SILICON, CBD):
        assert dice((found == code) & inside, (phases == code) & inside) >= 0.9
    assert dice(result.sample.compute(), inside) >= 0.95


@pytest.mark.parametrize(
    ("recon", "options", "message"),
    [
        (np.zeros((4, 5)), {}, "recon must be 3D"),
        (np.full((4, 5, 6), 0.1), {}, "no usable grey levels"),
        (np.zeros((4, 5, 6)), {"voxel_size_um": 0.0}, "voxel_size_um must be > 0"),
        (np.zeros((4, 5, 6)), {"bins": 4}, "bins must be ≥ 16"),
    ],
)
def test_bad_input_is_named(recon: np.ndarray, options: dict[str, float], message: str) -> None:
    arguments = {"voxel_size_um": VOXEL_UM, **options}
    with pytest.raises(ValueError, match=message):
        segment(recon, **arguments)  # type: ignore[arg-type]


def test_the_kernel_takes_a_plain_array() -> None:
    """The kernel works on a plain array: whole slices, any z extent."""
    values = np.random.default_rng(3).random((2, 12, 12)).astype(np.float32) * 0.3
    counts, edges = np.histogram(values, bins=64)
    coded = phases_kernel(values, thresholds_from_histogram(counts, edges))
    assert coded.shape == values.shape and coded.dtype == np.uint8


# ----------------------------------------------------------------- with the size prior

PRIOR_SCAN = dict(
    shape=(48, 64, 64),
    radius_um=(0.35, 0.5),
    gap_um=(0.1, 0.2),
    groups=("sphere",) * 4,
    graphite_bodies=1,
    cbd_blobs=12,
    blur_sigma_vox=0.7,
)


def prior_scan(attenuation: tuple[float, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A scene of debond.scans (drawn apart from synth) as attenuation with noise, and its
    true phases: no projection, so the test isolates the segmentation."""
    from debond.scans import Variant, attenuation_volume, draw_scene, render

    variant = Variant("prior", "a test scene", 0.05, attenuation, **PRIOR_SCAN)  # type: ignore[arg-type]
    scene = draw_scene(variant, seed)
    values = attenuation_volume(scene, variant)
    noise = np.random.default_rng(seed).normal(0.0, 0.012, values.shape)
    return render(scene, 1)[0], (values + noise).astype(np.float32)


@pytest.mark.parametrize(
    "attenuation",
    [(0.03, 0.06, 0.32, 0.18, 0.10), (0.03, 0.07, 0.15, 0.32, 0.10)],
    ids=["cbd-brightest", "silicon-brightest"],
)
def test_the_prior_finds_silicon_whatever_the_attenuation_order(
    attenuation: tuple[float, ...],
) -> None:
    """Silicon is found by the size of its objects, not by the rank of its grey level."""
    truth, values = prior_scan(attenuation)
    result = segment(
        da.from_array(values, chunks=(16, -1, -1)), voxel_size_um=0.05, radius_range_um=(0.35, 0.5)
    )
    assert result.thresholds is None and result.levels is not None
    assert result.levels.silicon == pytest.approx(attenuation[SILICON], abs=0.03)
    found = result.phases.compute()
    assert dice(found == SILICON, truth == SILICON) >= 0.85
    # a multi-Otsu ranking of the same volume does not find it in the second order
    ranked = segment(values, voxel_size_um=0.05).phases.compute()
    if attenuation[SILICON] > attenuation[CBD]:
        assert dice(ranked == SILICON, truth == SILICON) < 0.5


def test_the_prior_path_does_not_depend_on_the_chunking() -> None:
    _, values = prior_scan((0.03, 0.06, 0.32, 0.18, 0.10), seed=1)
    whole = segment(values, voxel_size_um=0.05, radius_range_um=(0.35, 0.5))
    chunked = segment(
        da.from_array(values, chunks=(7, -1, -1)), voxel_size_um=0.05, radius_range_um=(0.35, 0.5)
    )
    assert np.array_equal(whole.phases.compute(), chunked.phases.compute())
    assert np.array_equal(whole.sample.compute(), chunked.sample.compute())


@pytest.mark.parametrize("prior", [False, True])
def test_a_stored_recon_gives_the_phases_of_the_whole_array(tmp_path: Path, prior: bool) -> None:
    """The stored recon (chunks unlike the blocks), denoised, in a small task memory:
    the sample pass reads and denoises its own slabs, which split the blocks'
    z-ranges, and nothing of it is cut from the denoised volume; the result is the
    whole array's, exactly. So are the phases from the store, given the stored
    mask (other chunks again): one task per block, which depends on no other."""
    if prior:
        values = prior_scan((0.03, 0.06, 0.32, 0.18, 0.10), seed=1)[1]
    else:
        values = np.random.default_rng(3).random((40, 48, 44)).astype(np.float32)
        values[:, :6] = 0.0  # air in the first rows: the sample is not everything
    stored = zarr.create_array(tmp_path / "recon", data=values, chunks=(3, 20, 17))
    kwargs: dict[str, Any] = {"voxel_size_um": 0.05, "sigma_voxels": 1.0}
    if prior:
        kwargs["radius_range_um"] = (0.35, 0.5)
    else:
        kwargs.update(graphite_min_radius_um=0.1, sei_max_um=0.1)
    whole = segment(values, **kwargs)
    with dask.config.set({TASK_MEMORY_KEY: "300 KiB"}):
        got = segment(stored, **kwargs)
    assert len(got.sample.chunks[0]) > len(got.phases.chunks[0])
    blocks = np.cumsum(got.phases.chunks[0])
    assert set(blocks) <= set(np.cumsum(got.sample.chunks[0]))
    assert not [name for name in got.sample.dask.layers if "rechunk" in name]
    assert np.array_equal(got.sample.compute(), whole.sample.compute())
    assert np.array_equal(got.phases.compute(), whole.phases.compute())
    mask = zarr.create_array(tmp_path / "sample", data=whole.sample.compute(), chunks=(7, 9, 30))
    assert got.from_store is not None
    stored_phases = got.from_store(mask)
    # one layer, of one task per block, that depends on nothing
    assert stored_phases.dask.dependencies == {stored_phases.name: set()}
    assert len(stored_phases.dask) == stored_phases.npartitions
    assert prior or stored_phases.npartitions > 8  # the prior's halo fills its scene
    assert np.array_equal(stored_phases.compute(), whole.phases.compute())
    assert whole.from_store is None


def counted_kernel(calls: Path, block: np.ndarray, **kwargs: Any) -> np.ndarray:
    """:func:`phases_kernel`, with a line written to ``calls`` per call (from any process)."""
    with calls.open("a", encoding="ascii") as f:
        f.write(f"{block.shape}\n")
    return phases_kernel(block, **kwargs)


def test_the_phases_written_with_their_pore_fraction_run_each_block_once(tmp_path: Path) -> None:
    """As the stage computes them on the cluster: the write and the pore fraction
    beside it share the blocks' tasks; a copy of the kernel fused into the
    reduction's tasks would run every block twice."""
    values = np.random.default_rng(3).random((40, 48, 44)).astype(np.float32)
    values[:, :6] = 0.0
    stored = zarr.create_array(tmp_path / "recon", data=values, chunks=(8, 16, 16))
    with dask.config.set({TASK_MEMORY_KEY: "300 KiB"}):
        got = segment(stored, voxel_size_um=0.05, graphite_min_radius_um=0.1, sei_max_um=0.1)
    mask = zarr.create_array(tmp_path / "sample", data=got.sample.compute(), chunks=(8, 16, 16))
    assert got.from_store is not None
    calls = tmp_path / "calls.txt"
    counting = dataclasses.replace(got.from_store, kernel=functools.partial(counted_kernel, calls))
    phases = counting(mask)
    write = prepare_write(
        tmp_path / "store.zarr", "s", "phases", phases, voxel_size_um=0.05, stage="segment",
        purpose="volume",
    )  # fmt: skip
    fraction = pore_fraction(phases, da.from_zarr(mask, chunks=phases.chunks))
    with cluster(workers=1) as client:
        _, found = client.gather(client.compute([write.task, fraction]))
    assert len(calls.read_text(encoding="ascii").splitlines()) == phases.npartitions > 8
    whole = got.phases.compute()
    inside = got.sample.compute()
    assert found == pytest.approx(np.count_nonzero((whole == PORE) & inside) / inside.sum())
    assert np.array_equal(write.array[...], whole)


def test_a_volume_without_objects_of_the_prior_size_says_what_it_found() -> None:
    """Two phases in slabs: no grey level holds particles of 0.3–0.5 µm."""
    values = np.full((32, 48, 48), 0.03, np.float32)
    values[:, :, 24:] = 0.3
    values += np.random.default_rng(0).normal(0, 0.01, values.shape).astype(np.float32)
    with pytest.raises(SegmentationError, match=r"no grey level holds objects of the size prior"):
        segment(values, voxel_size_um=0.05, radius_range_um=(0.3, 0.5))


def test_a_thin_shell_is_not_a_particle_but_a_ball_of_its_volume_is() -> None:
    """A blurred CBD film's rim holds many voxels but no ball of the prior's size."""
    z, y, x = np.indices((64, 40, 40)) - np.array([20, 20, 20])[:, None, None, None]
    r = np.sqrt(z**2 + y**2 + x**2)
    shell = (r >= 12) & (r < 14)  # 2 voxels thick, ~4,200 voxels
    z2 = np.indices((64, 40, 40))[0] - 50
    ball = np.sqrt(z2**2 + y**2 + x**2) <= 6  # 905 voxels
    kept = drop_small(shell | ball, 4.0, inscribed_voxels=3.0)
    assert np.array_equal(kept, ball)
    assert np.array_equal(drop_small(shell | ball, 4.0), shell | ball)  # by volume alone, both stay


def _levels(pore: float, silicon: float, cbd: float, sigma: float) -> Levels:
    low = pore + EDGE_SHARE * (silicon - pore)
    return Levels(
        pore=pore, silicon=silicon, cbd=cbd, silicon_low=low,
        silicon_high=(silicon + cbd) / 2, core_low=(pore + silicon) / 2,
        cbd_low=(pore + cbd) / 2, cbd_high=math.inf, solid=pore,
        edge_sigma_voxels=sigma, core_radius_voxels=2, grow_voxels=2,
        rise_per_voxel=RISE_SHARE * (silicon - pore) / (math.sqrt(2 * math.pi) * sigma),
        cbd_open_voxels=0, smallest_radius_voxels=4.0, inscribed_radius_voxels=3.0,
        core_smallest_voxels=3.0, seed_smallest_voxels=1.0, sei_low=(pore + low) / 2,
        modes=(pore, silicon, cbd), scores=(0.0, 1.0, 0.0),
    )  # fmt: skip


def test_silicon_stops_at_the_dip_before_a_brighter_coat() -> None:
    """Silicon (R = 9 voxels) in a 2-voxel SEI shell in contact with a brighter CBD coat:
    the blur lifts the SEI into silicon's grey range, but its grey level rises again."""
    radius = 9.0
    r = np.sqrt(((np.indices((40, 40, 40)) - 19.5) ** 2).sum(axis=0))
    values = np.select([r <= radius, r <= radius + 2, r <= radius + 6], [0.18, 0.10, 0.32], 0.03)
    values = ndimage.gaussian_filter(values.astype(np.float32), 1.5)
    levels = _levels(0.03, 0.18, 0.32, 1.5)
    band = (values > levels.core_low) & (values <= levels.silicon_high)
    cores = silicon_cores(band, levels.core_radius_voxels, levels.core_smallest_voxels)
    grown = grow_silicon(values, cores, levels)
    equivalent = (3 * grown.sum() / (4 * math.pi)) ** (1 / 3)
    assert equivalent == pytest.approx(radius, abs=0.75)
    # everything in silicon's range near the cores reaches into the SEI
    near = ndimage.binary_dilation(cores, iterations=2 * levels.grow_voxels)
    plain = near & (values >= levels.silicon_low) & (values <= levels.silicon_high)
    assert (3 * plain.sum() / (4 * math.pi)) ** (1 / 3) > radius + 1


def test_film_crests_are_the_thin_films_not_the_particles() -> None:
    """A 2-voxel CBD film, a silicon ball of radius 2 and one of radius 8, blurred (σ 1.2):
    the film's crest is found; neither ball, however curved, is a film."""
    grid = np.indices((48, 48, 64)).astype(np.float64)
    values = np.full(grid.shape[1:], 0.05)
    film = np.abs(grid[2] - 8) < 1.0  # a plane 2 voxels thick at x = 8
    values[film] = 0.30
    small = np.sqrt(((grid - np.array([24, 24, 24])[:, None, None, None]) ** 2).sum(0)) <= 2
    large = np.sqrt(((grid - np.array([24, 24, 46])[:, None, None, None]) ** 2).sum(0)) <= 8
    values[small | large] = 0.16
    blurred = ndimage.gaussian_filter(values, 1.2).astype(np.float32)
    crests = film_crests(blurred, 0.16 - 0.05)
    on_film = crests[:, :, 6:11]
    assert on_film[8:40, 8:40].mean() > 0.5  # away from the volume's faces
    assert not crests[small].any() and not crests[large].any()


def test_the_hessian_is_scikit_images_with_shorter_kernels() -> None:
    """``skimage.feature.hessian_matrix`` (its kernels reach 71 voxels at σ = 1)."""
    rng = np.random.default_rng(3)
    values = ndimage.gaussian_filter(rng.random((20, 24, 28)), 1.5).astype(np.float32)
    ours = hessian(values)
    theirs = hessian_matrix(values, sigma=1.0, order="rc", use_gaussian_derivatives=True)
    largest = max(float(np.abs(h).max()) for h in theirs)
    for mine, reference in zip(ours, theirs, strict=True):
        assert np.abs(mine - reference).max() < 1e-5 * largest


def test_closed_form_eigenvalues_equal_lapacks() -> None:
    """Random symmetric matrices, multiples of the identity and repeated eigenvalues."""
    rng = np.random.default_rng(4)
    upper = rng.normal(size=(5000, 6))
    upper[:100] = 0.0
    upper[100:200] = [2.5, 0.0, 0.0, 2.5, 0.0, 2.5]  # 2.5 I
    upper[200:300, [1, 2, 4]] = 0.0  # diagonal, two entries equal
    upper[200:300, 3] = upper[200:300, 0]
    rows, cols = np.triu_indices(3)
    matrices = np.zeros((len(upper), 3, 3))
    matrices[:, rows, cols] = upper
    matrices[:, cols, rows] = upper
    reference = np.linalg.eigvalsh(matrices)  # ascending
    lowest, middle = lower_eigenvalues(*upper.T)
    scale = np.abs(reference).max(axis=1) + 1e-300
    assert np.max(np.abs(lowest - reference[:, 0]) / scale) < 1e-7
    assert np.max(np.abs(middle - reference[:, 1]) / scale) < 1e-7


def test_film_crests_see_no_farther_than_their_reach() -> None:
    """A crop with ``CREST_REACH_VOXELS`` of margin gives the whole volume's Hessian and
    crests inside; with one voxel less, the Hessian differs (the reach is not overstated)."""
    rng = np.random.default_rng(5)
    values = ndimage.gaussian_filter(rng.random((40, 44, 48)), 1.2).astype(np.float32)
    whole = film_crests(values, 0.05)
    assert 0.01 < whole.mean() < 0.99
    crop = (slice(8, 32), slice(8, 36), slice(12, 40))
    for margin in (CREST_REACH_VOXELS, CREST_REACH_VOXELS - 1):
        grown = tuple(slice(c.start - margin, c.stop + margin) for c in crop)
        inner = tuple(slice(margin, -margin) for _ in crop)
        same = [
            np.array_equal(part[inner], h[crop])
            for part, h in zip(hessian(values[grown]), hessian(values), strict=True)
        ]
        assert all(same) == (margin == CREST_REACH_VOXELS)
        if margin == CREST_REACH_VOXELS:
            assert np.array_equal(film_crests(values[grown], 0.05)[inner], whole[crop])
