"""Segmentation: thresholds from the histogram, chunking invariance, the synthetic truth."""

from __future__ import annotations

import math
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from dask_image import ndfilters
from scipy import ndimage

from debond.pipeline.blocks import halo_fits, map_exact, merge_chunks
from debond.pipeline.levels import SegmentationError
from debond.pipeline.segment import (
    CBD,
    SILICON,
    denoise,
    phases_kernel,
    segment,
    thresholds_from_histogram,
)
from debond.pipeline.segment import open_with_ball as open_ball
from debond.storage import open_volume
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


@pytest.mark.parametrize("chunks", [48, 16, (5, 20, 23), 3])
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


def test_a_volume_without_objects_of_the_prior_size_says_what_it_found() -> None:
    """Two phases in slabs: no grey level holds particles of 0.3–0.5 µm."""
    values = np.full((32, 48, 48), 0.03, np.float32)
    values[:, :, 24:] = 0.3
    values += np.random.default_rng(0).normal(0, 0.01, values.shape).astype(np.float32)
    with pytest.raises(SegmentationError, match=r"no grey level holds objects of the size prior"):
        segment(values, voxel_size_um=0.05, radius_range_um=(0.3, 0.5))
