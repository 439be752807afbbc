"""Campaign stores: round trips, chunking, lazy xarray views in µm, errors that name things."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import dask.array as da
import fsspec
import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from zarr.codecs import BloscCodec, Crc32cCodec

from debond import __version__
from debond.storage import (
    ArrayExists,
    ArrayNotFound,
    IncompleteArray,
    MetadataError,
    SampleNotFound,
    StoreError,
    StoreFormatError,
    StoreNotFound,
    complete_array,
    create_volume,
    default_chunks,
    foreign_content,
    get_array,
    is_store,
    list_arrays,
    list_samples,
    mark_complete,
    open_dataset,
    open_store,
    open_volume,
    remove_scratch,
    scratch_group,
    set_sample_attrs,
    write_volume,
)
from debond.storage.volumes import CUBE_SIDE, SLAB_CHUNK_BYTES
from tests.helpers import raise_if_dask_computes

DTYPES = ("uint8", "uint16", "int32", "float32", "float64", "bool")
VOXEL = 0.0299


def _memory_url() -> str:
    return f"memory://debond-test-{uuid.uuid4().hex}.zarr"


def _forget(url: str) -> None:
    fs = fsspec.filesystem("memory")
    path = url.removeprefix("memory://")
    if fs.exists(path):
        fs.rm(path, recursive=True)


@pytest.fixture(params=["local", "memory"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store location: a local folder or a memory:// URL."""
    if request.param == "local":
        yield str(tmp_path / "campaign.zarr")
    else:
        url = _memory_url()
        yield url
        _forget(url)


# ------------------------------------------------------------------ chunks


def test_default_chunks_follow_the_purpose() -> None:
    # projections: whole frames, as many as fit in 16 MiB, at least one
    assert default_chunks((1800, 2048, 2048), "projections", "float32") == (1, 2048, 2048)
    assert default_chunks((1800, 1024, 1024), "projections", "float32") == (4, 1024, 1024)
    assert default_chunks((3, 100, 100), "projections", "uint16") == (3, 100, 100)
    # sinograms: whole sinograms (rows, angles, columns)
    assert default_chunks((2048, 1800, 2048), "sinograms", "float32") == (1, 1800, 2048)
    frames = default_chunks((500, 180, 256), "sinograms", "float32")[0]
    assert frames == SLAB_CHUNK_BYTES // (180 * 256 * 4)
    # volumes: cubes of 64–128, capped by the shape
    assert default_chunks((600, 1000, 1000), "volume", "uint8") == (128, 128, 128)
    assert default_chunks((600, 1000, 1000), "volume", "float32") == (128, 128, 128)
    assert default_chunks((600, 1000, 1000), "volume", "float64") == (96, 96, 96)
    assert default_chunks((1, 50, 1000), "volume", "bool") == (1, 50, 128)
    for dtype in DTYPES:
        side = default_chunks((10**4,) * 3, "volume", dtype)[0]
        assert CUBE_SIDE[0] <= side <= CUBE_SIDE[1]


def test_default_chunks_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="purpose.*'slices'"):
        default_chunks((4, 4, 4), "slices", "uint8")
    with pytest.raises(ValueError, match=r"shape must be three integers.*\(4, 4\)"):
        default_chunks((4, 4), "volume", "uint8")
    with pytest.raises(TypeError, match="complex128 is not supported"):
        default_chunks((4, 4, 4), "volume", "complex128")


def test_arrays_are_chunked_by_purpose_and_compressed_with_blosc_zstd(location: str) -> None:
    store = open_store(location, "a")
    projections = create_volume(
        store, "c01", "projections", (7, 20, 30), "float32", voxel_size_um=1
    )
    sinograms = create_volume(store, "c01", "sinograms", (20, 7, 30), "float32", voxel_size_um=1)
    phases = create_volume(store, "c01", "phases", (300, 20, 200), "uint8", voxel_size_um=1)
    assert projections.chunks == (7, 20, 30)
    assert sinograms.chunks == (20, 7, 30)
    assert phases.chunks == (128, 20, 128)
    assert projections.attrs["purpose"] == "projections"
    assert phases.attrs["purpose"] == "volume"
    for array, shuffle in ((projections, "shuffle"), (phases, "bitshuffle")):
        codec, checksum = array.compressors
        assert isinstance(codec, BloscCodec) and isinstance(checksum, Crc32cCodec)
        assert codec.cname.value == "zstd" and codec.shuffle is not None
        assert codec.shuffle.value == shuffle
    # the chunks are in the stored metadata, seen by a fresh reader
    assert zarr.open_array(f"{location}/samples/c01/phases/0", mode="r").chunks == (128, 20, 128)


# ------------------------------------------------------------------ stores


def test_open_store_creates_a_versioned_store_and_reopens_it(location: str) -> None:
    store = open_store(location, "a")
    info = store.attrs["debond"]
    assert info == {"store_format": 2, "created_by": f"debond {__version__}"}
    set_sample_attrs(store, "c03", {"cycles": 3})
    again = open_store(location, "r")
    assert list_samples(again) == ["c03"]
    assert again.attrs["debond"] == info
    assert open_store(again) is again


def test_listing_skips_what_a_killed_write_leaves(tmp_path: Path) -> None:
    """A write killed between zarr's temporary file and its rename leaves
    ``zarr.<uuid>.partial`` files; listing the store still gives the samples and arrays."""
    location = tmp_path / "campaign.zarr"
    data = np.zeros((2, 3, 4), np.uint8)
    for sample, name in (("c01", "recon"), ("c01", "phases"), ("c03", "recon")):
        write_volume(str(location), sample, name, data, voxel_size_um=VOXEL, stage="t")
    for folder in ("samples", "samples/c01", "samples/c01/recon"):
        (location / folder / f"zarr.{uuid.uuid4().hex}.partial").write_bytes(b"{")
    store = open_store(str(location), "r")
    assert list_samples(store) == ["c01", "c03"]
    assert list_arrays(store, "c01") == ["phases", "recon"]
    with pytest.raises(KeyError, match="arrays of 'c01': phases, recon"):
        get_array(store, "c01", "sinograms")


def test_a_scratch_group_is_fresh_unlisted_and_removed(location: str) -> None:
    """What a stage keeps between its passes: emptied when made again, never listed
    as an array, and gone with its sample's scratch group once removed."""
    write_volume(
        location, "c01", "phases", np.zeros((2, 3, 4), np.uint8), voxel_size_um=VOXEL, stage="t"
    )
    scratch = scratch_group(location, "c01", "particles")
    scratch.create_array("pieces", shape=(10,), chunks=(4,), dtype="uint16")[:] = 1
    assert list_arrays(location, "c01") == ["phases"]
    again = scratch_group(location, "c01", "particles")  # what a stopped run left
    assert list(again.keys()) == []
    again.create_array("pieces", shape=(3,), chunks=(3,), dtype="uint16")
    remove_scratch(location, "c01", "particles")
    remove_scratch(location, "c01", "particles")  # nothing left: nothing to do
    store = open_store(location, "r")
    assert "scratch" not in store["samples/c01"]
    assert list_arrays(store, "c01") == ["phases"]
    with pytest.raises(ValueError, match="array name"):
        scratch_group(location, "c01", "a/b")


def test_open_store_errors_name_the_location(location: str) -> None:
    with pytest.raises(StoreNotFound, match=r"no campaign store at .*; open it with mode='a'"):
        open_store(location, "r")
    with pytest.raises(FileNotFoundError):  # the built-in it also is
        open_store(location, "r+")
    with pytest.raises(ValueError, match="mode must be one of r, r\\+, a; got 'w'"):
        open_store(location, "w")  # type: ignore[arg-type]
    foreign = zarr.open_group(location, mode="w", zarr_format=3)
    foreign.create_group("something")
    with pytest.raises(StoreFormatError, match=r"not a debond campaign store.*something"):
        open_store(location, "a")
    foreign.attrs["debond"] = {"store_format": 99}
    with pytest.raises(StoreFormatError, match="store format 99 .* reads formats up to 2"):
        open_store(location, "r")


def test_open_store_creates_or_reopens_only_a_store(tmp_path: Path) -> None:
    """A store is created in a new or empty folder with its mark in the first write;
    a file or a foreign folder is refused and left as it was."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "c00.h5").write_bytes(b"x")
    refused = {
        raw: "a folder that is not a debond campaign store, holding c00.h5",
        raw / "c00.h5": "a file",
    }
    for where, found in refused.items():
        with pytest.raises(StoreFormatError, match=rf"is {found}; expected a new folder"):
            open_store(where, "a")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["c00.h5", "raw"]
    (tmp_path / "empty").mkdir()
    for where in (tmp_path / "empty", tmp_path / "new.zarr"):
        open_store(where, "a")
        metadata = json.loads((where / "zarr.json").read_text())
        assert metadata["attributes"]["debond"]["store_format"] == 2
        assert is_store(where) and foreign_content(where) is None
    zarr.open_group(tmp_path / "bare.zarr", mode="w", zarr_format=3)
    with pytest.raises(StoreFormatError, match=r"no 'debond' attribute\) that is not a debond"):
        open_store(tmp_path / "bare.zarr", "a")


def test_memory_urls_are_shared_between_calls() -> None:
    url = _memory_url()
    try:
        data = np.arange(60, dtype=np.int32).reshape(3, 4, 5)
        write_volume(url, "c01", "recon", data, voxel_size_um=VOXEL, stage="t")
        np.testing.assert_array_equal(open_volume(url, "c01", "recon").values, data)
        assert list_arrays(url, "c01") == ["recon"]
    finally:
        _forget(url)


# ------------------------------------------------------------------ round trips


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("round-trips")


@st.composite
def _volumes(draw: st.DrawFn) -> tuple[np.ndarray, tuple[int, int, int], tuple[int, ...]]:
    """A 3D array (size-1 axes included), zarr chunks and dask chunks (any, non-dividing)."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(st.tuples(*[st.integers(1, 9)] * 3))
    data = draw(hnp.arrays(dtype, shape))
    chunks = tuple(draw(st.integers(1, n + 2)) for n in shape)
    dask_chunks = tuple(draw(st.integers(1, n)) for n in shape)
    return data, chunks, dask_chunks  # type: ignore[return-value]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    volume=_volumes(),
    lazy=st.booleans(),
    backend=st.sampled_from(["local", "memory"]),
)
def test_round_trip_keeps_values_dtype_chunks_coordinates_and_attrs(
    scratch: Path,
    volume: tuple[np.ndarray, tuple[int, int, int], tuple[int, ...]],
    lazy: bool,
    backend: str,
) -> None:
    data, chunks, dask_chunks = volume
    url = str(scratch / f"{uuid.uuid4().hex}.zarr") if backend == "local" else _memory_url()
    try:
        set_sample_attrs(url, "c07", {"cycles": 7})
        written = write_volume(
            url,
            "c07",
            "recon",
            da.from_array(data, chunks=dask_chunks) if lazy else data,
            voxel_size_um=VOXEL,
            chunks=chunks,
            stage="test",
            parameters={"lazy": lazy},
        )
        assert written.chunks == tuple(min(c, n) for c, n in zip(chunks, data.shape, strict=True))
        back = open_volume(url, "c07", "recon")
        assert isinstance(back.data, da.Array)
        assert back.data.chunks == da.core.normalize_chunks(written.chunks, data.shape)
        assert back.dtype == data.dtype
        assert back.dims == ("z", "y", "x")
        np.testing.assert_array_equal(back.values, data)
        for axis, dim in enumerate(back.dims):
            np.testing.assert_allclose(back[dim].values, np.arange(data.shape[axis]) * VOXEL)
        assert back.attrs["voxel_size_um"] == VOXEL
        assert back.attrs["cycles"] == 7
        assert back.attrs["stage"] == "test"
        assert back.attrs["parameters"] == {"lazy": lazy}
        assert back.attrs["complete"]["digest"] == back.attrs["provenance"]["digest"]
    finally:
        if backend == "memory":
            _forget(url)


def test_opening_is_lazy(location: str) -> None:
    data = np.random.default_rng(0).random((6, 8, 10)).astype(np.float32)
    write_volume(location, "c01", "recon", data, voxel_size_um=VOXEL, stage="t", chunks=(2, 4, 5))
    write_volume(location, "c01", "phases", data > 0.5, voxel_size_um=VOXEL, stage="t")
    with raise_if_dask_computes():
        volume = open_volume(location, "c01", "recon")
        dataset = open_dataset(location, "c01")
        selected = (volume.sel(z=slice(0.05, 0.1)) * dataset["phases"]).mean("x")
    assert volume.data.npartitions == 3 * 2 * 2
    expected = (data[2:4] * (data[2:4] > 0.5)).mean(axis=2)
    np.testing.assert_allclose(selected.values, expected, rtol=1e-6)


def test_coordinates_are_voxel_centres_from_zero_in_um(location: str) -> None:
    write_volume(location, "c01", "recon", np.zeros((2, 3, 4)), voxel_size_um=0.5, stage="t")
    volume = open_volume(location, "c01", "recon")
    assert volume.x.values.tolist() == [0.0, 0.5, 1.0, 1.5]
    assert volume.y.values.tolist() == [0.0, 0.5, 1.0]
    assert volume.z.values.tolist() == [0.0, 0.5]
    assert volume.x.attrs["units"] == "um"
    assert float(volume.sel(x=1.0, y=0.5, z=0.5, method="nearest").x) == 1.0


def test_projections_and_sinograms_have_an_angle_axis(location: str) -> None:
    angles = np.linspace(0, np.pi, 5, endpoint=False)
    write_volume(
        location,
        "c01",
        "projections",
        np.ones((5, 3, 4), np.float32),
        voxel_size_um=0.25,
        stage="ingest",
        attrs={"angles_rad": angles},
    )
    write_volume(location, "c01", "sinograms", np.ones((3, 5, 4)), voxel_size_um=0.25, stage="p")
    projections = open_volume(location, "c01", "projections")
    assert projections.dims == ("angle", "z", "x")
    np.testing.assert_allclose(projections.angle.values, angles)
    assert projections.z.values.tolist() == [0.0, 0.25, 0.5]
    sinograms = open_volume(location, "c01", "sinograms")
    assert sinograms.dims == ("z", "angle", "x")
    assert "angle" not in sinograms.coords  # no angles_rad attribute


def test_writing_block_by_block_then_marking_complete(location: str) -> None:
    data = np.random.default_rng(1).integers(0, 5, (10, 12, 14), dtype=np.uint8)
    array = create_volume(
        location,
        "c02",
        "phases",
        data.shape,
        data.dtype,
        voxel_size_um=VOXEL,
        chunks=(3, 12, 14),
        stage="segment",
        parameters={"classes": 5},
    )
    for start in range(0, 10, 3):
        array[start : start + 3] = data[start : start + 3]
    with pytest.raises(IncompleteArray, match=r"samples/c02/phases .* is not complete"):
        open_volume(location, "c02", "phases")
    with pytest.raises(IncompleteArray, match=r"samples/c02/phases .* is not complete"):
        complete_array(location, "c02", "phases")
    partial = open_volume(location, "c02", "phases", allow_incomplete=True)
    np.testing.assert_array_equal(partial.values, data)
    mark_complete(array)
    np.testing.assert_array_equal(open_volume(location, "c02", "phases").values, data)
    np.testing.assert_array_equal(complete_array(location, "c02", "phases")[...], data)


def test_overwrite_is_explicit_and_replaces_every_chunk(location: str) -> None:
    write_volume(location, "c01", "recon", np.full((4, 4, 4), 7.0), voxel_size_um=1, stage="t")
    with pytest.raises(ArrayExists, match=r"samples/c01/recon exists .*complete.*overwrite=True"):
        write_volume(location, "c01", "recon", np.ones((4, 4, 4)), voxel_size_um=1, stage="t")
    assert open_volume(location, "c01", "recon").values.max() == 7.0  # untouched
    array = create_volume(
        location, "c01", "recon", (4, 4, 4), "float64", voxel_size_um=1, stage="t", overwrite=True
    )
    array[:2] = 1.0
    mark_complete(array)
    values = open_volume(location, "c01", "recon").values
    assert values[:2].min() == 1.0 and values[2:].max() == 0.0  # no stale chunks


def test_open_dataset_combines_arrays_that_share_a_grid(location: str) -> None:
    store = open_store(location, "a")
    set_sample_attrs(store, "c10", {"cycles": 10})
    recon = np.random.default_rng(2).random((4, 5, 6))
    write_volume(store, "c10", "recon", recon, voxel_size_um=VOXEL, stage="recon")
    write_volume(
        store, "c10", "phases", (recon > 0.5).astype(np.uint8), voxel_size_um=VOXEL, stage="s"
    )
    write_volume(store, "c10", "projections", np.ones((3, 4, 6)), voxel_size_um=VOXEL, stage="i")
    dataset = open_dataset(location, "c10")
    assert sorted(dataset.data_vars) == ["phases", "recon"]  # projections are not volumes
    assert dataset.attrs == {"sample": "c10", "cycles": 10}
    assert dataset["phases"].attrs["stage"] == "s"
    xr.testing.assert_equal(
        dataset["recon"].compute(), open_volume(store, "c10", "recon").compute()
    )
    write_volume(store, "c10", "other", np.ones((4, 5, 7)), voxel_size_um=VOXEL, stage="s")
    with pytest.raises(ValueError, match=r"share dims, shape and voxel size.*other: .*\(4, 5, 7\)"):
        open_dataset(store, "c10", ["recon", "other"])
    write_volume(store, "c10", "coarse", np.ones((4, 5, 6)), voxel_size_um=2 * VOXEL, stage="s")
    with pytest.raises(ValueError, match=r"coarse: .*voxel 0.0598"):
        open_dataset(store, "c10", ["recon", "coarse"])


# ------------------------------------------------------------------ errors


def test_unknown_samples_and_arrays_are_named_with_what_exists(location: str) -> None:
    store = open_store(location, "a")
    write_volume(store, "c01", "recon", np.zeros((2, 2, 2)), voxel_size_um=1, stage="t")
    write_volume(store, "c01", "phases", np.zeros((2, 2, 2), np.uint8), voxel_size_um=1, stage="t")
    with pytest.raises(
        SampleNotFound,
        match=r"no sample 'c09' \(looking for array 'recon', samples/c09/recon\).*there: c01",
    ) as sample:
        open_volume(store, "c09", "recon")
    with pytest.raises(
        ArrayNotFound, match=r"no array 'labels' for sample 'c01'.*arrays of 'c01': phases, recon"
    ) as array:
        open_volume(location, "c01", "labels")
    for error in (sample.value, array.value):
        assert isinstance(error, KeyError) and isinstance(error, StoreError)
        assert not str(error).startswith("'")  # a sentence, not a quoted key


def test_a_volume_without_voxel_size_is_refused_naming_it(location: str) -> None:
    store = open_store(location, "a")
    store.create_array("samples/c01/legacy", shape=(2, 2, 2), dtype="uint8")
    with pytest.raises(MetadataError, match=r"samples/c01/legacy .*no 'voxel_size_um'"):
        open_volume(store, "c01", "legacy", allow_incomplete=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"shape": (4, 4)}, ValueError, r"samples/c01/recon: shape must be three integers"),
        ({"shape": (4, 0, 4)}, ValueError, r"shape must be three integers >= 1"),
        ({"dtype": "complex64"}, TypeError, r"samples/c01/recon: dtype complex64"),
        ({"dtype": "U3"}, TypeError, r"dtype <U3 is not supported"),
        ({"voxel_size_um": 0.0}, ValueError, r"voxel_size_um must be a finite number > 0"),
        ({"voxel_size_um": float("nan")}, ValueError, r"voxel_size_um .* got nan"),
        ({"voxel_size_um": "thin"}, ValueError, r"voxel_size_um .* got 'thin'"),
        ({"chunks": (2, 2)}, ValueError, r"chunks must be three integers >= 1"),
        ({"purpose": "slices"}, ValueError, r"purpose must be one of .* got 'slices'"),
        ({"dims": ("z", "z", "x")}, ValueError, r"dims must be three distinct names"),
        ({"attrs": {"purpose": "x"}}, ValueError, r"'purpose' is set by create_volume"),
        ({"attrs": {"s": {1, 2}}}, TypeError, r"attrs of samples/c01/recon\['s'\] cannot be"),
        ({"parameters": {"a": 1}}, ValueError, r"parameters and inputs need a stage"),
        ({"stage": "t", "inputs": {"raw": "/no/such.h5"}}, FileNotFoundError, r"'raw'.*such"),
    ],
)
def test_bad_arguments_fail_before_anything_is_written(
    location: str, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    arguments: dict[str, object] = {"shape": (4, 4, 4), "dtype": "float32", "voxel_size_um": 1.0}
    arguments |= kwargs
    with pytest.raises(error, match=match):
        create_volume(location, "c01", "recon", **arguments)  # type: ignore[arg-type]
    with pytest.raises(StoreNotFound):
        open_store(location, "r")  # nothing was created


@pytest.mark.parametrize("name", ["", "a/b", "..", "__x"])
def test_bad_node_names_are_refused(location: str, name: str) -> None:
    with pytest.raises(ValueError, match="must be a non-empty string without '/'"):
        create_volume(location, name, "recon", (1, 1, 1), "uint8", voxel_size_um=1)
    with pytest.raises(ValueError, match="array name must be"):
        create_volume(location, "c01", name, (1, 1, 1), "uint8", voxel_size_um=1)


def test_write_volume_refuses_other_data() -> None:
    with pytest.raises(TypeError, match=r"samples/c01/recon: data must be a numpy or dask array"):
        write_volume("memory://unused.zarr", "c01", "recon", [[[1]]], voxel_size_um=1, stage="t")  # type: ignore[arg-type]
    unknown = da.from_array(np.arange(8).reshape(2, 2, 2), chunks=1)
    unknown = unknown[unknown > 3][:, None, None]
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        write_volume("memory://unused.zarr", "c01", "recon", unknown, voxel_size_um=1, stage="t")


def test_dask_input_is_stored_by_its_own_tasks_one_per_chunk(
    location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write_volume never turns the Dask array into one NumPy array on the client."""
    data = da.random.default_rng(3).random((9, 10, 11), chunks=(4, 5, 6))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the whole Dask array was materialised")

    expected = data.compute()
    monkeypatch.setattr(da.Array, "__array__", refuse)
    monkeypatch.setattr(da.Array, "compute", refuse)
    array = write_volume(
        location, "c01", "recon", data, voxel_size_um=1, chunks=(3, 3, 3), stage="t"
    )
    monkeypatch.undo()
    assert array.nchunks_initialized == 3 * 4 * 4
    np.testing.assert_array_equal(array[...], expected)
