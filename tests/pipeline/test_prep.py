"""Prep stages against NumPy/SciPy references, over chunkings, lazily; bad pixels found
and repaired."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import dask
import dask.array as da
import h5py
import numpy as np
import pytest
from dask_image import ndfilters
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from debond.pipeline import prep
from debond.pipeline.blocks import halo_fits, map_exact, merge_chunks
from debond.pipeline.centre import find_centre
from debond.pipeline.ingest import read_data_exchange
from debond.pipeline.prep import (
    BadPixelError,
    BadPixels,
    Normalised,
    check_bad_pixels,
    fill_from_neighbours,
    median_filter,
    median_kernel,
    minus_log_kernel,
    normalise,
    normalise_kernel,
    prepare,
    remove_rings,
    ring_kernel,
    to_sinograms,
    transmission_kernel,
)
from debond.pipeline.recon import reconstruct_block
from tests.helpers import raise_if_dask_computes


def counts(
    shape: tuple[int, int, int] = (9, 13, 17), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projection counts, flats, darks like a beamline's, with a few clipped transmissions
    (no bad pixels: every count finite, every flat above its dark)."""
    rng = np.random.default_rng(seed)
    _, rows, cols = shape
    darks = rng.uniform(90, 110, (4, rows, cols)).astype(np.float32)
    flats = rng.uniform(9000, 11000, (5, rows, cols)).astype(np.float32)
    data = (flats.mean(0) * rng.uniform(0.05, 1.0, shape) + 100).astype(np.float32)
    data[0, 0, :3] = 50.0  # below the dark level: T < 0
    data[1, 2, 4] = 100.0
    darks[:, 2, 4] = 100.0  # at the dark level: T = 0 exactly
    return data, flats, darks


def with_bad_pixels(
    data: np.ndarray, flats: np.ndarray, darks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`counts` with one bad pixel of every kind, in copies."""
    data, flats, darks = data.copy(), flats.copy(), darks.copy()
    data[2, 3, 5] = np.nan
    data[4, 7, 0] = np.inf
    data[4, 12, 16] = -np.inf
    data[6, 9:11, 9:11] = np.nan  # a 2 × 2 blob
    flats[:, 4, 6] = darks[:, 4, 6].max() - 5  # flat below dark: masked in every projection
    flats[:, 5, 7] = darks[:, 5, 7] = 100.0  # dead pixel, F = D
    flats[1, 8, 8] = np.nan  # one flat frame: left out of that pixel's mean
    darks[3, 0, 1] = np.inf
    return data, flats, darks


def direct(
    data: np.ndarray, flats: np.ndarray, darks: np.ndarray, clip_to: float
) -> tuple[np.ndarray, int]:
    """The formula, written out in float64."""
    flat = flats.astype(np.float64).mean(axis=0)
    dark = darks.astype(np.float64).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (data.astype(np.float64) - dark) / (flat - dark)
    bad = ~np.isfinite(t) | (t <= 0)
    return -np.log(np.where(bad, clip_to, t)), int(bad.sum())


def before(
    data: da.Array, flats: np.ndarray, darks: np.ndarray, clip_to: float
) -> tuple[np.ndarray, int]:
    """Normalisation as it was before bad pixels were repaired: means, transmission,
    ``−ln`` with clipping, element by element."""
    chunks = data.chunks[1:]
    flat = da.from_array(flats).rechunk({1: chunks[0], 2: chunks[1]}).mean(axis=0, dtype=np.float64)
    dark = da.from_array(darks).rechunk({1: chunks[0], 2: chunks[1]}).mean(axis=0, dtype=np.float64)
    f, d = dask.compute(flat.astype(np.float32), dark.astype(np.float32))
    t = transmission_kernel(data.compute(), f, d)
    return minus_log_kernel(t, clip_to), int(np.count_nonzero(~(np.isfinite(t) & (t > 0))))


def slow_fill(frame: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Pixel by pixel: the median of the good pixels of the smallest square window holding any."""
    out = frame.astype(np.float64)
    for r, c in zip(*np.nonzero(bad), strict=True):
        for radius in range(1, max(frame.shape)):
            window = np.s_[max(r - radius, 0) : r + radius + 1, max(c - radius, 0) : c + radius + 1]
            good = frame[window][~bad[window]]
            if good.size:
                out[r, c] = np.median(good.astype(np.float64))
                break
    return out


# ------------------------------------------------------------ normalisation


def test_normalise_kernel_matches_the_formula() -> None:
    data, flats, darks = counts()
    expected, n_bad = direct(data, flats, darks, 1e-6)
    got, clipped = normalise_kernel(data, flats.mean(0), darks.mean(0), 1e-6)
    assert got.dtype == np.float32 and clipped == n_bad
    assert n_bad == 3 + 1  # the planted transmissions ≤ 0
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)
    assert np.isfinite(got).all()


@pytest.mark.parametrize(
    "chunks", [(9, 13, 17), (1, 13, 17), (2, 5, 4), (4, 1, 17)], ids=lambda c: "x".join(map(str, c))
)
def test_normalise_over_chunkings(chunks: tuple[int, int, int]) -> None:
    data, flats, darks = counts()
    expected, n_bad = direct(data, flats, darks, 1e-3)
    result = normalise(da.from_array(data, chunks=chunks), flats, darks, clip_to=1e-3)
    assert isinstance(result, Normalised) and result.clip_to == 1e-3
    # The angle chunks of the input, whole projections (the repair needs them).
    assert result.data.dtype == np.float32 and result.data.chunks[1:] == ((13,), (17,))
    assert result.data.chunks[0] == da.empty(data.shape, chunks=chunks).chunks[0]
    values, clipped = dask.compute(result.data, result.clipped)
    assert clipped.dtype == np.int64 and int(clipped) == n_bad
    np.testing.assert_allclose(values, expected, rtol=2e-5, atol=2e-5)
    assert values.max() == pytest.approx(-np.log(1e-3), rel=1e-6)


@pytest.mark.parametrize(
    "chunks", [(9, 13, 17), (1, 13, 17), (2, 5, 4), (3, 1, 2)], ids=lambda c: "x".join(map(str, c))
)
def test_a_clean_input_reports_zero_counts_and_is_bit_identical(
    chunks: tuple[int, int, int],
) -> None:
    """Without bad pixels nothing is repaired: the values and the clipped count are those
    of normalisation before bad pixels were handled, bit for bit."""
    data, flats, darks = counts()
    lazy = da.from_array(data, chunks=chunks)
    result = normalise(lazy, flats, darks)
    values, clipped, bad = dask.compute(result.data, result.clipped, result.bad)
    expected, expected_clipped = before(lazy, flats, darks, 1e-6)
    np.testing.assert_array_equal(values, expected)
    assert int(clipped) == expected_clipped == 4
    assert bad.pixels == 13 * 17
    for counted in (bad.nan, bad.inf, bad.dark_ge_flat, bad.flats, bad.darks, bad.repaired):
        assert not np.any(counted)
    assert bad.nan.shape == bad.inf.shape == bad.repaired.shape == (9,)
    assert bad.flats.shape == (5,) and bad.darks.shape == (4,)


@pytest.mark.parametrize(
    "chunks", [(9, 13, 17), (1, 13, 17), (2, 5, 4), (3, 1, 2)], ids=lambda c: "x".join(map(str, c))
)
def test_bad_pixels_are_counted_by_kind_and_repaired_for_any_chunking(
    chunks: tuple[int, int, int],
) -> None:
    data, flats, darks = with_bad_pixels(*counts())
    # 6 of 221 pixels in projection 6: 2.7 %
    result = normalise(da.from_array(data, chunks=chunks), flats, darks, max_bad_fraction=0.05)
    values, clipped, bad = dask.compute(result.data, result.clipped, result.bad)
    assert bad.nan.tolist() == [0, 0, 1, 0, 0, 0, 4, 0, 0]
    assert bad.inf.tolist() == [0, 0, 0, 0, 2, 0, 0, 0, 0]
    assert int(bad.dark_ge_flat) == 2  # (4, 6) flat below dark, (5, 7) flat = dark
    assert bad.flats.tolist() == [0, 1, 0, 0, 0] and bad.darks.tolist() == [0, 0, 0, 1]
    assert bad.repaired.tolist() == [2, 2, 3, 2, 4, 2, 6, 2, 2]
    assert int(clipped) == 4  # the transmissions ≤ 0 of good pixels only
    assert np.isfinite(values).all()
    # The same values whatever the chunking.
    one_chunk = normalise(data, flats, darks, max_bad_fraction=0.05).data
    np.testing.assert_array_equal(values, one_chunk.compute())
    # Good pixels as the formula gives them; bad ones the median of their nearest good pixels.
    finite_flat = np.nanmean(np.where(np.isfinite(flats), flats, np.nan), axis=0)
    finite_dark = np.nanmean(np.where(np.isfinite(darks), darks, np.nan), axis=0)
    mask = np.zeros(data.shape, bool)
    mask[~np.isfinite(data)] = True
    mask[:, 4, 6] = mask[:, 5, 7] = True
    formula, _ = direct(np.nan_to_num(data), finite_flat[None], finite_dark[None], 1e-6)
    expected = np.stack([slow_fill(f, m) for f, m in zip(formula, mask, strict=True)])
    np.testing.assert_allclose(values, expected, rtol=2e-5, atol=2e-5)


def test_normalise_accepts_dask_and_mean_frames() -> None:
    data, flats, darks = counts()
    expected, _ = direct(data, flats, darks, 1e-6)
    lazy = normalise(
        data, da.from_array(flats, chunks=(2, 4, 17)), da.from_array(darks, chunks=(1, 13, 5))
    )
    np.testing.assert_allclose(lazy.data.compute(), expected, rtol=2e-5, atol=2e-5)
    means = normalise(data, flats.mean(0), darks.mean(0))
    np.testing.assert_allclose(means.data.compute(), expected, rtol=2e-5, atol=2e-5)


def test_normalise_rejects_bad_input() -> None:
    data, flats, darks = counts()
    with pytest.raises(ValueError, match=r"data must be 3-D \(angles, rows, columns\); got shape"):
        normalise(data[0], flats, darks)
    with pytest.raises(
        ValueError,
        match=r"flats must be \(frames ≥ 1, 13, 17\) or \(13, 17\).*got shape \(5, 13, 16\)",
    ):
        normalise(data, flats[..., :16], darks)
    with pytest.raises(ValueError, match=r"darks must be .*got shape \(4, 12, 17\)"):
        normalise(data, flats, darks[:, 1:])
    with pytest.raises(ValueError, match=r"clip_to must be a transmission in \(0, 1\]; got 0"):
        normalise(data, flats, darks, clip_to=0)
    with pytest.raises(TypeError, match="data must hold real numbers; got dtype complex"):
        normalise(data.astype(complex), flats, darks)


def test_the_kernel_repairs_as_normalise_does() -> None:
    data, flats, darks = with_bad_pixels(*counts())
    flat = np.nanmean(np.where(np.isfinite(flats), flats, np.nan), axis=0).astype(np.float32)
    dark = np.nanmean(np.where(np.isfinite(darks), darks, np.nan), axis=0).astype(np.float32)
    got, clipped = normalise_kernel(data, flat, dark, max_bad_fraction=0.05)
    assert clipped == 4 and np.isfinite(got).all()
    lazy = normalise(data, flats, darks, max_bad_fraction=0.05).data.compute()
    np.testing.assert_allclose(got, lazy, rtol=1e-6, atol=1e-6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fill_from_neighbours_is_the_median_of_the_nearest_good_pixels(
    data: st.DataObject,
) -> None:
    rows, columns = data.draw(st.integers(1, 12), label="rows"), data.draw(st.integers(2, 12))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    frame = rng.normal(size=(rows, columns)).astype(np.float32)
    bad = rng.random((rows, columns)) < data.draw(st.sampled_from([0.05, 0.3, 0.7]))
    bad[rng.integers(rows), rng.integers(columns)] = False  # at least one good pixel
    frame[bad] = np.nan
    got = fill_from_neighbours(frame, bad)
    assert got.dtype == np.float32
    assert not np.shares_memory(got, frame) or not bad.any()
    np.testing.assert_allclose(got, slow_fill(frame, bad), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[~bad], frame[~bad])


def test_fill_from_neighbours_repairs_columns_blobs_and_edges() -> None:
    frame = np.add.outer(np.arange(8.0), 10 * np.arange(9.0))  # a plane: medians are exact
    bad = np.zeros(frame.shape, bool)
    bad[:, 4] = True  # a dead column: the columns beside it
    bad[0, 0] = True  # a corner
    bad[2:7, 6:9] = True  # a blob at the edge, wider than 3 × 3
    got = fill_from_neighbours(np.where(bad, np.nan, frame), bad)
    np.testing.assert_allclose(got[1:-1, 4], frame[1:-1, 4])  # exact inside: a plane
    np.testing.assert_allclose(got[[0, -1], 4], [40.5, 46.5])  # the window is cut at the edge
    assert got[0, 0] == 10.0  # the median of 1, 10 and 11
    assert np.isfinite(got).all()
    with pytest.raises(BadPixelError, match="all 4 pixels of a projection are bad"):
        fill_from_neighbours(np.zeros((2, 2)), np.ones((2, 2), bool))
    clean = np.ones((3, 3))
    assert fill_from_neighbours(clean, np.zeros((3, 3), bool)) is clean


def test_too_many_bad_pixels_stop_naming_the_frame_and_the_count() -> None:
    data, flats, darks = counts()
    data[5, :3, :] = np.nan  # 51 of 221 pixels: 23 %
    result = normalise(da.from_array(data, chunks=(2, 5, 4)), flats, darks)
    (bad,) = dask.compute(result.bad)
    with pytest.raises(
        BadPixelError,
        match=r"^raw/x\.h5 \(exchange/data\): projection 5 has 51 bad pixels of 221 \(23\.1 %: "
        r"51 NaN, 0 ±Inf, 0 detector pixels whose mean dark ≥ mean flat\); at most "
        r"max_bad_fraction = 0\.02 \(4 px\) may be repaired.*raise \[prep\] max_bad_fraction; "
        r"1 of 9 projections are over the limit$",
    ):
        check_bad_pixels(bad, 0.02, "raw/x.h5 (exchange/data)")
    check_bad_pixels(bad, 0.25, "raw/x.h5 (exchange/data)")  # under a larger limit
    # Computing the data without the check still refuses the projection.
    with pytest.raises(BadPixelError, match=r"projections: projection 5 has 51 bad pixels"):
        result.data.compute()
    allowed = normalise(data, flats, darks, max_bad_fraction=0.25).data.compute()
    assert np.isfinite(allowed).all()


def test_normalise_rejects_a_bad_max_bad_fraction() -> None:
    data, flats, darks = counts()
    for value in (-0.1, 0.6, float("nan")):
        with pytest.raises(ValueError, match=r"max_bad_fraction must be a share .* \[0, 0\.5\]"):
            normalise(data, flats, darks, max_bad_fraction=value)


# --------------------------------------------------- bad pixels in a synthetic scan


def scan(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Counts, flats, darks and angles (radians) of a synthetic Data Exchange file."""
    with h5py.File(path, "r") as f:
        return (
            f["exchange/data"][...],
            f["exchange/data_white"][...],
            f["exchange/data_dark"][...],
            np.deg2rad(f["exchange/theta"][...]),
        )


def centre_and_recon(
    data: np.ndarray, flats: np.ndarray, darks: np.ndarray, angles: np.ndarray
) -> tuple[float, np.ndarray, BadPixels]:
    """Prep (projections chunked by 8 angles and 16 rows), the centre by Vo's method and FBP."""
    result = prepare(da.from_array(data, chunks=(8, 16, 64)), flats, darks)
    sinograms, bad = dask.compute(result.data, result.bad)
    centre = find_centre(sinograms, angles)
    return (
        centre,
        reconstruct_block(sinograms, angles, centre, algorithm="fbp", voxel_size_um=0.06),
        bad,
    )


@pytest.fixture(scope="module")
def synthetic(small_campaign: Path) -> tuple[tuple[np.ndarray, ...], float, np.ndarray]:
    """One sample of the small synthetic campaign (90 × 48 × 64 px), clean: its centre and FBP."""
    raw = scan(small_campaign / "raw" / "c00.h5")
    centre, recon, bad = centre_and_recon(*raw)
    assert not np.any(bad.repaired)
    return raw, centre, recon


def _nan_block(data: np.ndarray, flats: np.ndarray, darks: np.ndarray) -> None:
    data[17, 20:24, 30:34] = np.nan  # 16 pixels of one projection, inside the pillar


def _one_inf(data: np.ndarray, flats: np.ndarray, darks: np.ndarray) -> None:
    data[40, 25, 31] = np.inf


def _dark_column(data: np.ndarray, flats: np.ndarray, darks: np.ndarray) -> None:
    darks[:, :, 29] = flats[:, :, 29].max() + 100  # one column of 64: 1.6 % of each projection


@pytest.mark.parametrize(
    ("corrupt", "kind", "count", "recon_rms"),
    [
        (_nan_block, "nan", {17: 16}, 0.001),
        (_one_inf, "inf", {40: 1}, 0.001),
        (_dark_column, "dark_ge_flat", 48, 0.005),
    ],
    ids=["nan-in-one-projection", "one-inf", "dark-above-flat-column"],
)
def test_a_repaired_scan_reconstructs_like_the_clean_one(
    synthetic: tuple[tuple[np.ndarray, ...], float, np.ndarray],
    corrupt: Callable[..., None],
    kind: str,
    count: object,
    recon_rms: float,
) -> None:
    """Found, counted by kind and projection, repaired: the centre within 0.02 px of the
    clean scan's and the reconstruction within ``recon_rms`` 1/µm rms of it (silicon
    against pore is 0.11 1/µm). Unrepaired, these moved the centre by 3 px or the
    reconstruction by 1.4 1/µm."""
    (data, flats, darks, angles), clean_centre, clean = synthetic
    data, flats, darks = data.copy(), flats.copy(), darks.copy()
    corrupt(data, flats, darks)
    centre, recon, bad = centre_and_recon(data, flats, darks, angles)
    found = {
        "nan": {int(i): int(bad.nan[i]) for i in np.flatnonzero(bad.nan)},
        "inf": {int(i): int(bad.inf[i]) for i in np.flatnonzero(bad.inf)},
        "dark_ge_flat": int(bad.dark_ge_flat),
    }
    assert found.pop(kind) == count
    assert not any(found.values())  # nothing else
    assert centre == pytest.approx(clean_centre, abs=0.02)
    assert np.sqrt(np.mean((recon - clean) ** 2)) < recon_rms
    assert np.abs(recon - clean).max() < 0.1


def test_a_scan_with_dark_above_flat_in_ten_columns_is_refused(
    synthetic: tuple[tuple[np.ndarray, ...], float, np.ndarray],
) -> None:
    (data, flats, darks, _), _, _ = synthetic
    darks = darks.copy()
    columns = [3, 9, 15, 21, 27, 33, 39, 45, 51, 57]
    darks[:, :, columns] = flats[:, :, columns].max() + 100
    (bad,) = dask.compute(prepare(data, flats, darks).bad)
    assert int(bad.dark_ge_flat) == 480 and (bad.repaired == 480).all()
    with pytest.raises(
        BadPixelError,
        match=r"c00\.h5: projection 0 has 480 bad pixels of 3072 \(15\.6 %: 0 NaN, 0 ±Inf, "
        r"480 detector pixels whose mean dark ≥ mean flat\).*90 of 90 projections",
    ):
        check_bad_pixels(bad, 0.02, "c00.h5")


# ----------------------------------------------------------------- median

MEDIAN_CASES = [
    ((4, 23, 19), (4, 23, 19)),
    ((4, 23, 19), (1, 8, 8)),
    ((4, 23, 19), (3, 2, 19)),  # 2-row chunks, smaller than the halo
    ((4, 23, 19), (2, 2, 2)),
    ((4, 23, 19), (1, 5, 3)),
    ((3, 2, 40), (1, 2, 7)),  # a 2-row detector (tooth.h5): shorter than the halo
    ((3, 2, 40), (1, 1, 40)),
    ((2, 9, 5), (2, 4, 1)),
]


@pytest.mark.parametrize(("shape", "chunks"), MEDIAN_CASES, ids=lambda v: "x".join(map(str, v)))
def test_median_equals_scipy(shape: tuple[int, int, int], chunks: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32)
    expected = ndimage.median_filter(x, size=(1, 7, 7))
    got = median_filter(da.from_array(x, chunks=chunks))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.compute(), expected)
    np.testing.assert_array_equal(median_kernel(x), expected)


@pytest.mark.parametrize(("shape", "chunks"), MEDIAN_CASES, ids=lambda v: "x".join(map(str, v)))
def test_median_is_dask_image_where_its_halo_fits(
    shape: tuple[int, int, int], chunks: tuple[int, int, int]
) -> None:
    """dask-image's median where every axis holds the halo; the block-wise filter it
    replaced gives the same values there, and is kept for the axes dask-image refuses."""
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    array = da.from_array(x, chunks=chunks)
    halo = {1: 3, 2: 3}
    expected = ndimage.median_filter(x, size=(1, 7, 7))
    block_wise = map_exact(
        array, median_kernel, halo, dtype=array.dtype, size=7, mode="reflect", cval=0.0
    )
    np.testing.assert_array_equal(block_wise.compute(), expected)
    got = median_filter(array)
    merged = merge_chunks(array, halo)
    assert got.chunks == merged.chunks == block_wise.chunks
    if halo_fits(shape, halo):
        library = ndfilters.median_filter(merged, size=(1, 7, 7), mode="reflect", cval=0.0)
        assert got.name == library.name  # the very same graph
    else:
        with pytest.raises(ValueError, match="overlapping depth 3 is larger than your array"):
            ndfilters.median_filter(array, size=(1, 7, 7))
        assert got.name == block_wise.name
    np.testing.assert_array_equal(got.compute(), expected)


@pytest.mark.parametrize("mode", prep.MEDIAN_MODES)
@pytest.mark.parametrize("size", [1, 3, 4, 7])
def test_median_modes_and_sizes(mode: str, size: int) -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 50, (3, 14, 11)).astype(np.uint16)
    expected = ndimage.median_filter(x, size=(1, size, size), mode=mode, cval=7)
    got = median_filter(da.from_array(x, chunks=(2, 3, 4)), size, mode=mode, cval=7)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got.compute(), expected)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_median_equals_scipy_for_any_chunking(data: st.DataObject) -> None:
    shape = data.draw(st.tuples(*(st.integers(1, n) for n in (3, 20, 20))), label="shape")
    chunks = tuple(data.draw(st.integers(1, n), label=f"chunk {i}") for i, n in enumerate(shape))
    size = data.draw(st.sampled_from([3, 5, 7]), label="size")
    x = np.random.default_rng(data.draw(st.integers(0, 2**16))).random(shape)
    np.testing.assert_array_equal(
        median_filter(da.from_array(x, chunks=chunks), size).compute(),
        ndimage.median_filter(x, size=(1, size, size)),
    )


def test_median_rejects_bad_arguments() -> None:
    x = da.zeros((2, 8, 8), chunks=(1, 4, 4))
    with pytest.raises(ValueError, match="size must be a positive integer"):
        median_filter(x, 0)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        median_filter(x, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be one of reflect, nearest, mirror, constant"):
        median_filter(x, mode="wrap")
    with pytest.raises(ValueError, match=r"projections must be 3-D"):
        median_filter(x[0])


# -------------------------------------------------------------- sinograms


def test_to_sinograms_holds_no_block_larger_than_an_input_or_an_output_block() -> None:
    """Every block the rechunk makes, measured as the tasks return it: at most the
    larger of a projection block and a sinogram block. Left to dask's array.chunk-size
    (128 MiB) the rechunk merged the whole stack into one block first."""
    from dask.callbacks import Callback

    x = da.random.random((64, 16, 16), chunks=(1, 16, 16)).astype(np.float32)
    made: list[int] = []

    class Sizes(Callback):  # type: ignore[misc]
        def _posttask(self, key, result, dsk, state, id):  # type: ignore[no-untyped-def]
            if isinstance(key, tuple) and "rechunk" in key[0]:
                made.append(np.asarray(result).nbytes)

    sinograms = to_sinograms(x, rows_per_chunk=1)
    with Sizes():
        found = sinograms.compute(scheduler="sync")
    np.testing.assert_array_equal(found, x.compute().transpose(1, 0, 2))
    assert made and max(made) <= max(16 * 16 * 4, 1 * 64 * 16 * 4)


def test_to_sinograms_transposes_into_whole_sinograms() -> None:
    x = np.random.default_rng(3).random((10, 7, 6)).astype(np.float32)
    sino = to_sinograms(da.from_array(x, chunks=(3, 2, 6)), rows_per_chunk=2)
    assert sino.shape == (7, 10, 6) and sino.dtype == np.float32
    assert sino.chunks == ((2, 2, 2, 1), (10,), (6,))
    assert not any("p2p" in name for name in sino.dask.layers)  # no distributed client here
    np.testing.assert_array_equal(sino.compute(), x.transpose(1, 0, 2))
    assert to_sinograms(x).chunks == ((7,), (10,), (6,))  # 16 MiB of sinograms per chunk
    with pytest.raises(ValueError, match="rows_per_chunk must be a positive integer"):
        to_sinograms(x, rows_per_chunk=0)


def test_to_sinograms_uses_p2p_under_a_distributed_client() -> None:
    distributed = pytest.importorskip("distributed")
    x = np.random.default_rng(4).random((12, 5, 4))
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address="127.0.0.1:0"
    ):
        sino = to_sinograms(da.from_array(x, chunks=(2, 5, 4)), rows_per_chunk=2)
        assert any("rechunk-p2p" in name for name in sino.dask.layers)
        np.testing.assert_array_equal(sino.compute(), x.transpose(1, 0, 2))
        # A client that is not the active scheduler is not used.
        with dask.config.set(scheduler="threads"):
            local = to_sinograms(da.from_array(x, chunks=(2, 5, 4)), rows_per_chunk=2)
            assert not any("p2p" in name for name in local.dask.layers)


# ----------------------------------------------------------- ring removal


def disc_sinogram(n_angles: int = 180, n_cols: int = 256) -> np.ndarray:
    """Exact parallel-beam sinogram (angles, columns) of three discs: chord lengths × µ.

    A centred pillar (its edges are kinks in every projection) and two
    off-centre inclusions."""
    theta = np.linspace(0, np.pi, n_angles, endpoint=False)[:, None]
    s = np.arange(n_cols) - (n_cols - 1) / 2
    sino = np.zeros((n_angles, n_cols))
    for x0, y0, r, mu in (
        (0.0, 0.0, 100.0, 0.01),
        (25.0, -10.0, 40.0, 0.02),
        (-50.0, 30.0, 25.0, 0.05),
    ):
        centre = x0 * np.cos(theta) + y0 * np.sin(theta)
        sino += mu * 2 * np.sqrt(np.clip(r**2 - (s - centre) ** 2, 0, None))
    return sino


def test_remove_rings_removes_stripes_and_keeps_a_clean_sinogram() -> None:
    clean = np.stack([disc_sinogram(), 0.8 * disc_sinogram()]).astype(np.float32)
    columns = [10, 20, 120, 121, 150, 160, 236, 245]  # in air, and across the sample
    heights = np.array([0.1, 0.15, -0.1, -0.1, 0.08, 0.12, -0.05, 0.1], np.float32)
    offsets = np.zeros(clean.shape[2], np.float32)
    offsets[columns] = heights  # miscalibrated detector columns
    fixed = remove_rings(da.from_array(clean + offsets, chunks=(1, 180, 256))).compute()
    residual = (fixed - clean).mean(axis=1)[:, columns]  # what is left of each stripe
    slope = np.abs(np.gradient(clean.mean(axis=1), axis=1))[:, columns]
    # Removed where the mean profile is flat (air); on the sample's slopes reduced to
    # about the profile's change over the stripe's width (ring_kernel's documented limit).
    flat = slope[0] < 1e-3
    assert flat.sum() == 4
    assert np.all(np.abs(residual[:, flat]) < 0.02 * np.abs(heights[flat]))
    assert np.all(np.abs(residual) < 0.6 * np.abs(heights))
    assert np.sqrt(np.mean(residual**2)) < 0.3 * np.sqrt(np.mean(heights**2))
    # A stripe-free sinogram is nearly unchanged.
    unchanged = remove_rings(clean).compute()
    assert np.abs(unchanged - clean).max() < 0.01 * clean.max()
    assert np.sqrt(np.mean((unchanged - clean) ** 2)) < 0.002 * clean.max()


@pytest.mark.parametrize("chunks", [(1, 180, 96), (2, 180, 96), (1, 60, 40)], ids=str)
def test_remove_rings_over_chunkings(chunks: tuple[int, int, int]) -> None:
    x = np.random.default_rng(5).random((3, 180, 96)).astype(np.float32)
    got = remove_rings(da.from_array(x, chunks=chunks), size=9)
    assert got.dtype == np.float32 and got.chunks[1:] == ((180,), (96,))
    np.testing.assert_array_equal(got.compute(), ring_kernel(x, 9))


def test_remove_rings_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="sinograms must be floating point"):
        remove_rings(np.zeros((2, 3, 4), np.uint16))
    with pytest.raises(ValueError, match="size must be an integer ≥ 3"):
        remove_rings(np.zeros((2, 3, 4)), size=1)


# ------------------------------------------------------------- laziness, real data


def test_the_chain_stays_lazy(tmp_path: Path) -> None:
    data, flats, darks = counts()
    with raise_if_dask_computes():
        result = normalise(da.from_array(data, chunks=(2, 5, 17)), flats, darks)
        filtered = median_filter(result.data, 7)
        sino = remove_rings(to_sinograms(filtered, rows_per_chunk=3))
        assert sino.shape == (13, 9, 17)
        assert result.clipped.shape == ()
        assert result.bad.nan.shape == result.bad.repaired.shape == (9,)
        prepared = prepare(da.from_array(data, chunks=(2, 5, 17)), flats, darks, median_size=3)
        assert isinstance(prepared.bad.dark_ge_flat, da.Array)


def test_tooth_normalises_to_sane_line_integrals() -> None:
    folder = os.environ.get("DEBOND_REAL_DATA")
    if not folder or not (Path(folder) / "tooth.h5").is_file():
        pytest.skip("DEBOND_REAL_DATA is unset or has no tooth.h5")
    raw = read_data_exchange(Path(folder) / "tooth.h5", angles_per_chunk=40)
    result = normalise(raw.data, raw.flats, raw.darks)
    values, clipped, bad = dask.compute(result.data, result.clipped, result.bad)
    assert clipped == 0 and np.isfinite(values).all()
    assert not any(np.any(counted) for counted in bad[:-1])  # no bad pixel, nothing repaired
    # A tooth in air: line integrals from about 0 (air, noise either side) to ~2.
    low, high = np.percentile(values, [1, 99])
    assert -0.1 < low < 0.2 and 0.5 < high < 3.0
    assert 0.95 < np.mean((values > -0.1) & (values < 3.0))
    filtered = median_filter(result.data).compute()
    np.testing.assert_array_equal(filtered, ndimage.median_filter(values, size=(1, 7, 7)))
    sino = to_sinograms(median_filter(result.data))
    assert sino.shape == (2, 181, 640) and sino.chunks == ((2,), (181,), (640,))
