"""Ingest: Data Exchange HDF5 and TIFF stacks to lazy arrays, and errors that name things."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import tifffile

from debond.pipeline.ingest import (
    DARKS,
    DATA,
    FLATS,
    THETA,
    IngestError,
    Projections,
    read_data_exchange,
    read_tiff_stack,
    read_tiff_volume,
)
from debond.synth import PRESETS
from tests.helpers import raise_if_dask_computes

ANGLES, ROWS, COLS = 12, 6, 10


def raw_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        DATA: rng.uniform(200, 900, (ANGLES, ROWS, COLS)).astype(np.float32),
        FLATS: rng.uniform(950, 1050, (4, ROWS, COLS)).astype(np.float32),
        DARKS: rng.uniform(5, 15, (3, ROWS, COLS)).astype(np.float32),
        THETA: np.linspace(0.0, 180.0, ANGLES, endpoint=False),
    }


def write_exchange(
    path: Path,
    arrays: dict[str, Any] | None = None,
    *,
    units: str | None = "degrees",
    drop: tuple[str, ...] = (),
) -> Path:
    """A small Data Exchange file; ``arrays`` override the defaults, ``drop`` leaves out."""
    values = {**raw_arrays(), **(arrays or {})}
    with h5py.File(path, "w") as f:
        for name, value in values.items():
            if name in drop:
                continue
            dataset = f.create_dataset(name, data=value)
            if name == THETA and units is not None:
                dataset.attrs["units"] = units
    return path


# ------------------------------------------------------------ Data Exchange


def test_synthetic_campaign_ingests_with_the_right_shapes(small_campaign: Path) -> None:
    preset = PRESETS["small"]
    n_z, _, n_x = preset.shape
    path = small_campaign / "raw" / "c03.h5"
    raw = read_data_exchange(path)
    assert isinstance(raw, Projections)
    assert raw.layout == "data-exchange" and raw.source == path and raw.rows == (0, n_z)
    assert raw.data.shape == (preset.n_angles, n_z, n_x) and raw.data.dtype == np.float32
    assert raw.flats.shape == (preset.n_flats, n_z, n_x) and raw.flats.dtype == np.float32
    assert raw.darks.shape == (preset.n_darks, n_z, n_x)
    np.testing.assert_allclose(
        raw.theta_rad, np.linspace(0.0, np.pi, preset.n_angles, endpoint=False), rtol=0, atol=1e-12
    )
    assert raw.theta_rad.dtype == np.float64
    # Chunked by angle, whole frames per chunk.
    assert raw.data.chunks[1:] == ((n_z,), (n_x,))
    with h5py.File(path) as f:
        np.testing.assert_array_equal(raw.data.compute(), f[DATA][()])
        np.testing.assert_array_equal(raw.flats.compute(), f[FLATS][()])
        np.testing.assert_array_equal(raw.darks.compute(), f[DARKS][()])


def test_row_window_and_chunking(tmp_path: Path) -> None:
    path = write_exchange(tmp_path / "raw.h5")
    values = raw_arrays()
    raw = read_data_exchange(path, rows=slice(2, 5), angles_per_chunk=5)
    assert raw.rows == (2, 5)
    assert raw.data.chunks == ((5, 5, 2), (3,), (COLS,))
    np.testing.assert_array_equal(raw.data.compute(), values[DATA][:, 2:5])
    np.testing.assert_array_equal(raw.flats.compute(), values[FLATS][:, 2:5])
    np.testing.assert_array_equal(raw.darks.compute(), values[DARKS][:, 2:5])
    # A window of the lazy array reads only that window, and gives the same values.
    np.testing.assert_array_equal(raw.data[3:7, 1:, 2:8].compute(), values[DATA][3:7, 3:5, 2:8])
    assert read_data_exchange(path, rows=(1, 4)).rows == (1, 4)


def test_integer_counts_and_radian_units(tmp_path: Path) -> None:
    values = raw_arrays()
    counts = values[DATA].astype(np.uint16)
    theta = np.linspace(0.0, np.pi, ANGLES)
    path = write_exchange(tmp_path / "raw.h5", {DATA: counts, THETA: theta}, units="radians")
    raw = read_data_exchange(path)
    assert raw.data.dtype == np.float32
    np.testing.assert_array_equal(raw.data.compute(), counts.astype(np.float32))
    np.testing.assert_array_equal(raw.theta_rad, theta)
    # No units attribute: Data Exchange's default, degrees.
    path = write_exchange(tmp_path / "bare.h5", units=None)
    np.testing.assert_allclose(read_data_exchange(path).theta_rad[-1], np.deg2rad(165.0))


def test_tasks_open_the_file_by_path(tmp_path: Path) -> None:
    """The graph holds no open h5py handle: it pickles (as for a distributed worker)
    and computes after the pickle round trip, in a fresh context."""
    path = write_exchange(tmp_path / "raw.h5")
    raw = read_data_exchange(path, angles_per_chunk=4)
    for array in (raw.data, raw.flats, raw.darks):
        clone = pickle.loads(pickle.dumps(array))
        np.testing.assert_array_equal(clone.compute(), array.compute())
    # Deterministic names: the same file gives the same graph keys.
    assert read_data_exchange(path, angles_per_chunk=4).data.name == raw.data.name


def test_ingest_is_lazy(tmp_path: Path) -> None:
    path = write_exchange(tmp_path / "raw.h5")
    with raise_if_dask_computes():
        raw = read_data_exchange(path)
        _ = raw.data[1:3] + 1
    tiffs = write_tiffs(tmp_path / "stack")
    with raise_if_dask_computes():
        read_tiff_stack(tiffs)


def test_file_removed_after_ingest_names_the_file(tmp_path: Path) -> None:
    path = write_exchange(tmp_path / "raw.h5")
    raw = read_data_exchange(path)
    path.unlink()
    with pytest.raises(IngestError, match=rf"{path}: reading {DATA}\[0:{ANGLES}"):
        raw.data.compute()


def real_data() -> Path:
    folder = os.environ.get("DEBOND_REAL_DATA")
    if not folder or not (Path(folder) / "tooth.h5").is_file():
        pytest.skip("DEBOND_REAL_DATA is unset or has no tooth.h5")
    return Path(folder) / "tooth.h5"


def test_tooth_ingests_with_angles_in_radians() -> None:
    raw = read_data_exchange(real_data())
    assert raw.data.shape == (181, 2, 640) and raw.data.dtype == np.float32
    assert raw.flats.shape == (10, 2, 640) and raw.darks.shape == (10, 2, 640)
    assert raw.theta_rad.shape == (181,)
    assert raw.theta_rad[0] == 0.0
    # 181 angles over 0 … 179.0055° (TomoPy's example), i.e. just under π.
    np.testing.assert_allclose(raw.theta_rad[-1], np.deg2rad(179.00552486187846), rtol=1e-12)
    assert np.all(np.diff(raw.theta_rad) > 0) and raw.theta_rad[-1] < np.pi


# ---------------------------------------------------------- errors that name things


def test_missing_file_folder_and_non_hdf5(tmp_path: Path) -> None:
    missing = tmp_path / "nope.h5"
    with pytest.raises(IngestError, match=rf"{missing}: no such file") as info:
        read_data_exchange(missing)
    assert info.value.path == str(missing)
    with pytest.raises(IngestError, match=r"is a folder.*read_tiff_stack"):
        read_data_exchange(tmp_path)
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5 at all")
    with pytest.raises(IngestError, match=rf"{text}: cannot be opened as HDF5"):
        read_data_exchange(text)


def test_truncated_file(tmp_path: Path) -> None:
    path = write_exchange(tmp_path / "raw.h5")
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(IngestError, match=rf"{path}: cannot be opened as HDF5.*truncated") as info:
        read_data_exchange(path)
    assert isinstance(info.value, ValueError) and isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize(
    ("arrays", "drop", "message"),
    [
        ({}, (DATA,), rf"no dataset '{DATA}'; expected projections"),
        (
            {DATA: np.ones((ANGLES, ROWS), np.float32)},
            (),
            rf"{DATA} has shape \({ANGLES}, {ROWS}\); expected 3-D \(angles, rows, columns\)",
        ),
        ({DATA: np.array([["a"]], dtype="S1")}, (), rf"{DATA} has dtype \|S1; expected real"),
        ({}, (THETA,), rf"no dataset '{THETA}'; expected angles, shape \({ANGLES},\)"),
        (
            {THETA: np.linspace(0, 180, ANGLES + 1)},
            (),
            rf"{THETA} has shape \({ANGLES + 1},\); expected \({ANGLES},\), one angle per "
            rf"projection \({ANGLES} in {DATA}\)",
        ),
        (
            {THETA: np.where(np.arange(ANGLES) == 4, np.nan, 1.0)},
            (),
            rf"{THETA} has 1 non-finite angles \(first at index 4\)",
        ),
        ({}, (FLATS,), rf"no dataset '{FLATS}'; expected flat fields"),
        ({}, (DARKS,), rf"no dataset '{DARKS}'; expected dark fields"),
        (
            {FLATS: np.ones((4, ROWS + 1, COLS), np.float32)},
            (),
            rf"{FLATS} has shape \(4, {ROWS + 1}, {COLS}\); expected \(frames ≥ 1, {ROWS}, "
            rf"{COLS}\): flat fields with the projections' frame shape",
        ),
        (
            {DARKS: np.ones((ROWS, COLS), np.float32)},
            (),
            rf"{DARKS} has shape \({ROWS}, {COLS}\); expected \(frames ≥ 1",
        ),
        (
            {FLATS: np.concatenate([np.ones((2, ROWS, COLS)), np.zeros((1, ROWS, COLS))])},
            (),
            rf"{FLATS} frame 2 is all zero; expected a flat field",
        ),
        (
            {FLATS: np.full((2, ROWS, COLS), 5.0)},
            (),
            rf"the mean of {FLATS} is not above the mean of {DARKS} at any pixel",
        ),
        (
            {DARKS: np.where(np.arange(COLS) == 3, np.inf, 1.0) * np.ones((2, ROWS, 1))},
            (),
            rf"{DARKS} frame 0 has {ROWS} non-finite values",
        ),
    ],
    ids=[
        "no-data",
        "data-2d",
        "data-strings",
        "no-theta",
        "theta-length",
        "theta-nan",
        "no-flats",
        "no-darks",
        "flats-shape",
        "darks-2d",
        "zero-flat",
        "flat-below-dark",
        "dark-inf",
    ],
)
def test_bad_datasets_are_named(
    tmp_path: Path, arrays: dict[str, Any], drop: tuple[str, ...], message: str
) -> None:
    path = write_exchange(tmp_path / "raw.h5", arrays, drop=drop)
    with pytest.raises(IngestError, match=rf"^{path}: {message}") as info:
        read_data_exchange(path)
    assert info.value.path == str(path)
    assert info.value.dataset in (DATA, FLATS, DARKS, THETA)


def test_unknown_theta_units(tmp_path: Path) -> None:
    path = write_exchange(tmp_path / "raw.h5", units="gradians")
    with pytest.raises(IngestError, match=rf"{THETA} has units 'gradians'; expected 'degrees'"):
        read_data_exchange(path)


def test_bad_arguments(tmp_path: Path) -> None:
    path = write_exchange(tmp_path / "raw.h5")
    with pytest.raises(ValueError, match=rf"has {ROWS} detector rows; rows \[4, 9\)"):
        read_data_exchange(path, rows=(4, 9))
    with pytest.raises(ValueError, match="only contiguous rows"):
        read_data_exchange(path, rows=slice(0, 4, 2))
    with pytest.raises(TypeError, match="rows must be a slice"):
        read_data_exchange(path, rows=[0, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="angles_per_chunk must be a positive integer"):
        read_data_exchange(path, angles_per_chunk=0)


# --------------------------------------------------------------- TIFF stacks


def write_tiffs(folder: Path, *, padded: bool = False, theta: bool = True, seed: int = 0) -> Path:
    values = raw_arrays(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for role, name in (("proj", DATA), ("flat", FLATS), ("dark", DARKS)):
        for i, frame in enumerate(values[name]):
            label = f"{i:04d}" if padded else str(i)
            tifffile.imwrite(folder / f"{role}_{label}.tif", frame)
    if theta:
        (folder / "theta.txt").write_text("\n".join(f"{t:.6f}" for t in values[THETA]))
    return folder


def test_tiff_stack_ingests_in_natural_order(tmp_path: Path) -> None:
    folder = write_tiffs(tmp_path / "stack")  # proj_0 … proj_11, not zero-padded
    values = raw_arrays()
    raw = read_tiff_stack(folder, angles_per_chunk=5)
    assert raw.layout == "tiff" and raw.source == folder
    assert raw.data.chunks == ((5, 5, 2), (ROWS,), (COLS,))
    np.testing.assert_array_equal(raw.data.compute(), values[DATA])
    np.testing.assert_array_equal(raw.flats.compute(), values[FLATS])
    np.testing.assert_array_equal(raw.darks.compute(), values[DARKS])
    np.testing.assert_allclose(raw.theta_rad, np.deg2rad(values[THETA]), atol=1e-9)
    windowed = read_tiff_stack(folder, rows=(1, 4))
    np.testing.assert_array_equal(windowed.data[2:9, :, 3:].compute(), values[DATA][2:9, 1:4, 3:])
    clone = pickle.loads(pickle.dumps(windowed.data))
    np.testing.assert_array_equal(clone.compute(), values[DATA][:, 1:4])


def test_tiff_theta_argument_and_patterns(tmp_path: Path) -> None:
    folder = write_tiffs(tmp_path / "stack", padded=True, theta=False)
    angles = np.linspace(0, 90, ANGLES)
    raw = read_tiff_stack(folder, theta_deg=angles)
    np.testing.assert_allclose(raw.theta_rad, np.deg2rad(angles))
    only = read_tiff_stack(folder, theta_deg=angles[:4], projections="proj_000[0-3].tif")
    np.testing.assert_array_equal(only.data.compute(), raw_arrays()[DATA][:4])


def test_tiff_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "none"
    with pytest.raises(IngestError, match=rf"{missing}: no such folder"):
        read_tiff_stack(missing)
    folder = write_tiffs(tmp_path / "stack", theta=False)
    with pytest.raises(IngestError, match=rf"{folder / 'theta.txt'}: no such file.*\({ANGLES}\)"):
        read_tiff_stack(folder)
    with pytest.raises(IngestError, match=rf"theta_deg has shape \(3,\); expected \({ANGLES},\)"):
        read_tiff_stack(folder, theta_deg=[0, 1, 2])
    with pytest.raises(IngestError, match=r"no flats files match 'white_\*.tif'"):
        read_tiff_stack(folder, theta_deg=np.zeros(ANGLES), flats="white_*.tif")
    (folder / "theta.txt").write_text("0 1 two")
    with pytest.raises(IngestError, match=r"theta.txt: could not convert"):
        read_tiff_stack(folder)
    theta = np.zeros(ANGLES)

    odd = folder / "flat_1.tif"
    tifffile.imwrite(odd, np.ones((ROWS + 2, COLS), np.float32))
    with pytest.raises(
        IngestError,
        match=rf"{odd}: flats image has shape \({ROWS + 2}, {COLS}\); "
        rf"expected \({ROWS}, {COLS}\)",
    ):
        read_tiff_stack(folder, theta_deg=theta)
    tifffile.imwrite(odd, np.zeros((ROWS, COLS), np.float32))
    with pytest.raises(IngestError, match=rf"{folder}: flats frame 1 is all zero"):
        read_tiff_stack(folder, theta_deg=theta)
    odd.write_bytes(b"II*\x00garbage")
    with pytest.raises(IngestError, match=rf"{odd}: cannot be read as TIFF"):
        read_tiff_stack(folder, theta_deg=theta)
    tifffile.imwrite(odd, np.ones((2, ROWS, COLS), np.float32), metadata=None)
    with pytest.raises(IngestError, match=rf"{odd}: holds 2 images; expected one 2-D flats"):
        read_tiff_stack(folder, theta_deg=theta)
    tifffile.imwrite(odd, np.ones((ROWS, COLS, 3), np.uint8), photometric="rgb")
    with pytest.raises(IngestError, match=rf"{odd}: flats image has shape \({ROWS}, {COLS}, 3\)"):
        read_tiff_stack(folder, theta_deg=theta)


def test_a_tiff_volume_is_read_lazily_page_by_page(tmp_path: Path) -> None:
    volume = np.random.default_rng(4).integers(0, 3, (7, 5, 6)).astype(np.uint8) * 85
    path = tmp_path / "phases.tif"
    tifffile.imwrite(path, volume)
    with raise_if_dask_computes():
        lazy = read_tiff_volume(path, pages_per_chunk=3)
    assert lazy.chunks == ((3, 3, 1), (5,), (6,))
    assert np.array_equal(lazy.compute(), volume)
    assert np.array_equal(lazy[2:5, 1:4].compute(), volume[2:5, 1:4])


def test_a_bad_tiff_volume_is_named(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"no such file"):
        read_tiff_volume(tmp_path / "none.tif")
    text = tmp_path / "text.tif"
    text.write_text("no tiff")
    with pytest.raises(IngestError, match=rf"{text}: cannot be read as TIFF"):
        read_tiff_volume(text)
    odd = tmp_path / "odd.tif"
    with tifffile.TiffWriter(odd) as writer:
        writer.write(np.zeros((4, 5), np.uint8))
        writer.write(np.zeros((4, 6), np.uint8))
    with pytest.raises(IngestError, match=r"page 1 is uint8 of shape \(4, 6\)"):
        read_tiff_volume(odd)
