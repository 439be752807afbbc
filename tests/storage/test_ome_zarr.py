"""Volumes are OME-Zarr images (NGFF 0.5): checked with the ome-zarr reader itself."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Multiscales, Reader
from ome_zarr_models.v05.image import Image
from skimage.transform import downscale_local_mean

from debond.storage import open_store, open_volume, write_volume
from debond.storage.volumes import get_array, list_arrays

VOXEL_UM = 0.03


def _volume(dtype: Any, shape: tuple[int, int, int] = (9, 12, 17)) -> np.ndarray:
    values = np.random.default_rng(3).uniform(0, 200, shape)
    return values.astype(dtype)


def _write(store: Path | str, name: str, data: Any, chunks: tuple[int, int, int]) -> zarr.Array:
    return write_volume(
        store, "c01", name, data, voxel_size_um=VOXEL_UM, stage="segment", chunks=chunks
    )


def _read_with_ome_zarr(folder: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Levels and metadata of an image group, as the ome-zarr reader gives them."""
    location = parse_url(str(folder), mode="r")
    assert location is not None, f"ome-zarr finds no Zarr group at {folder}"
    nodes = list(Reader(location)())
    assert nodes and any(isinstance(spec, Multiscales) for spec in nodes[0].specs)
    return [np.asarray(level) for level in nodes[0].data], nodes[0].metadata


@pytest.mark.parametrize("dtype", ["float32", "uint8", "int32", "bool"])
def test_the_ome_zarr_reader_opens_a_volume_at_two_levels(tmp_path: Path, dtype: str) -> None:
    data = _volume(dtype)
    _write(tmp_path / "c.zarr", "recon", data, chunks=(4, 6, 8))
    levels, metadata = _read_with_ome_zarr(tmp_path / "c.zarr/samples/c01/recon")

    assert [level.shape for level in levels] == [(9, 12, 17), (4, 6, 8)]
    np.testing.assert_array_equal(levels[0], data)
    if dtype == "float32":  # the mean of 2×2×2 voxels, by scikit-image
        expected = downscale_local_mean(data[:8, :12, :16].astype(np.float64), (2, 2, 2))
        np.testing.assert_allclose(levels[1], expected, rtol=1e-6)
    else:  # labels keep their values: every second voxel
        np.testing.assert_array_equal(levels[1], data[:8:2, :12:2, :16:2])
    assert [axis["name"] for axis in metadata["axes"]] == ["z", "y", "x"]
    assert {axis["unit"] for axis in metadata["axes"]} == {"micrometer"}
    scales = [t[0]["scale"] for t in metadata["coordinateTransformations"]]
    assert scales == [[VOXEL_UM] * 3, [2 * VOXEL_UM] * 3]


def test_the_metadata_is_valid_ngff_05(tmp_path: Path) -> None:
    """ome-zarr-models, the NGFF schema's own models, accept the image group."""
    _write(tmp_path / "c.zarr", "recon", _volume("float32"), chunks=(4, 6, 8))
    group = zarr.open_group(tmp_path / "c.zarr/samples/c01/recon", mode="r")
    image = Image.from_zarr(group)
    multiscale = image.ome_attributes.multiscales[0]
    assert [dataset.path for dataset in multiscale.datasets] == ["0", "1"]


def test_level_one_centres_lie_between_the_voxels_they_average(tmp_path: Path) -> None:
    """Float level 1 is shifted by half a voxel; labels (voxel 2i itself) are not."""
    _write(tmp_path / "c.zarr", "recon", _volume("float32"), chunks=(4, 6, 8))
    _write(tmp_path / "c.zarr", "phases", _volume("uint8"), chunks=(4, 6, 8))
    root = open_store(tmp_path / "c.zarr")
    recon = root["samples/c01/recon"].attrs["ome"]["multiscales"][0]["datasets"][1]
    phases = root["samples/c01/phases"].attrs["ome"]["multiscales"][0]["datasets"][1]
    assert recon["coordinateTransformations"][1]["translation"] == pytest.approx([VOXEL_UM / 2] * 3)
    assert len(phases["coordinateTransformations"]) == 1


def test_level_one_is_written_in_the_same_pass_over_the_data(tmp_path: Path) -> None:
    """Each chunk of the stage's output is computed once, for both levels."""
    computed: list[tuple[int, ...]] = []
    lock = threading.Lock()

    def block(x: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
        assert block_info is not None
        with lock:
            computed.append(tuple(block_info[None]["chunk-location"]))
        return x + 1

    source = da.from_array(_volume("float32", (16, 16, 16)), chunks=8)
    with dask.config.set(scheduler="threads"):
        _write(
            tmp_path / "c.zarr",
            "recon",
            source.map_blocks(block, dtype=source.dtype),
            chunks=(8, 8, 8),
        )
    assert sorted(computed) == sorted(set(computed)) and len(computed) == 8
    assert get_array(tmp_path / "c.zarr", "c01", "recon").path == "samples/c01/recon/0"


def test_a_volume_too_thin_for_a_coarser_level_has_one(tmp_path: Path) -> None:
    _write(tmp_path / "c.zarr", "recon", _volume("float32", (1, 6, 6)), chunks=(1, 6, 6))
    levels, _ = _read_with_ome_zarr(tmp_path / "c.zarr/samples/c01/recon")
    assert [level.shape for level in levels] == [(1, 6, 6)]


def test_a_format_1_store_with_flat_arrays_is_still_read(tmp_path: Path) -> None:
    """Stores written before volumes became image groups open as they were."""
    root = open_store(tmp_path / "c.zarr", "a")
    root.attrs["debond"] = {"store_format": 1, "created_by": "debond 0.1.0"}
    old = root.create_array("samples/c01/phases", shape=(2, 3, 4), dtype="uint8")
    old[...] = 7
    old.attrs.update({"voxel_size_um": VOXEL_UM, "purpose": "volume"})
    assert list_arrays(root, "c01") == ["phases"]
    assert int(open_volume(root, "c01", "phases", allow_incomplete=True).max()) == 7
    # a new volume in it raises the store's mark: older readers refuse it plainly
    _write(tmp_path / "c.zarr", "recon", _volume("float32"), chunks=(4, 6, 8))
    assert open_store(tmp_path / "c.zarr").attrs["debond"]["store_format"] == 2
    assert list_arrays(root, "c01") == ["phases", "recon"]


def test_overwriting_a_volume_replaces_both_levels(tmp_path: Path) -> None:
    _write(tmp_path / "c.zarr", "recon", _volume("float32", (8, 8, 8)), chunks=(4, 4, 4))
    write_volume(
        tmp_path / "c.zarr",
        "c01",
        "recon",
        np.full((6, 6, 6), 5, np.float32),
        voxel_size_um=VOXEL_UM,
        stage="segment",
        overwrite=True,
    )
    levels, _ = _read_with_ome_zarr(tmp_path / "c.zarr/samples/c01/recon")
    assert [level.shape for level in levels] == [(6, 6, 6), (3, 3, 3)]
    assert all(np.all(level == 5) for level in levels)
