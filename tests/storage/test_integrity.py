"""Complete means every chunk is there and decodes: chunks lost, rewritten or garbled."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
import zarr

from debond.storage import (
    DamagedArray,
    Status,
    chunk_damage,
    identify,
    mark_damaged,
    open_store,
    status,
    write_volume,
)
from debond.storage.integrity import Listing, listing, undecodable_chunks
from debond.storage.provenance import COMPLETE_KEY, REPAIRED_KEY, clear_completion, completion

PARAMETERS = {"classes": 5}


@pytest.fixture(params=["local", "memory"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store: a local folder or a memory:// URL (an fsspec store)."""
    if request.param == "local":
        yield str(tmp_path / "campaign.zarr")
        return
    url = f"memory://debond-integrity-{uuid.uuid4().hex}.zarr"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url.removeprefix("memory://")):
        fs.rm(url.removeprefix("memory://"), recursive=True)


def _phases(location: str) -> zarr.Array:
    """A complete (6, 4, 4) array in chunks of (2, 4, 4): three chunks, one all zeros."""
    data = np.zeros((6, 4, 4), np.uint8)
    data[2:] = np.arange(64, dtype=np.uint8).reshape(4, 4, 4)
    return write_volume(
        location,
        "c01",
        "phases",
        data,
        voxel_size_um=0.05,
        chunks=(2, 4, 4),
        stage="segment",
        parameters=PARAMETERS,
    )


def _phases_again(location: str) -> zarr.Array:
    """The same array written again over the one there."""
    return write_volume(
        location,
        "c01",
        "phases",
        np.asarray(open_store(location)["samples/c01/phases/0"][...]),
        voxel_size_um=0.05,
        chunks=(2, 4, 4),
        stage="segment",
        parameters=PARAMETERS,
        overwrite=True,
    )


def _chunk(location: str, key: str) -> str:
    return f"{location}/samples/c01/phases/0/{key}"


def _fs(location: str) -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("memory" if location.startswith("memory://") else "file")


def test_the_marker_records_every_chunk_even_one_of_zeros(location: str) -> None:
    array = _phases(location)
    marker = completion(array)
    assert marker is not None
    assert marker["chunks"] == 3 == array.nchunks
    assert Listing.from_marker(marker) == listing(array)
    assert status(array, "segment", PARAMETERS, None) is Status.CURRENT
    assert chunk_damage(array) is None and chunk_damage(array, deep=True) is None


def test_a_deleted_chunk_is_damage_named_by_its_key(location: str) -> None:
    array = _phases(location)
    downstream = write_volume(
        location,
        "c01",
        "particles",
        np.zeros((6, 4, 4), np.int32),
        voxel_size_um=0.05,
        stage="label",
        inputs={"phases": array},
    )
    _fs(location).rm(_chunk(location, "c/0/0/0"))
    assert status(array, "segment", PARAMETERS, None) is Status.DAMAGED
    assert chunk_damage(array) == "1 of 3 chunks missing: c/0/0/0"
    with pytest.raises(DamagedArray, match=r"input 'phases': .*samples/c01/phases.* c/0/0/0"):
        identify({"phases": array})
    # what was made from it is not current any more
    assert status(downstream, "label", {}, {"phases": array}) is Status.STALE


def test_what_was_made_from_a_damaged_array_is_redone_after_it(location: str) -> None:
    """Written over a damaged array, an array is marked repaired: what was made from the
    damaged one (which may have read its lost chunk as zeros) is stale. Written over an
    interrupted one, which nothing could read, it leaves what follows it current."""
    array = _phases(location)
    inputs = {"phases": array}
    downstream = write_volume(
        location, "c01", "particles", np.zeros((6, 4, 4), np.int32), voxel_size_um=0.05,
        stage="label", inputs=inputs,
    )  # fmt: skip
    before = identify(inputs)["phases"]
    assert REPAIRED_KEY not in before
    clear_completion(array)  # an interrupted write
    array = _phases_again(location)
    assert identify({"phases": array})["phases"] == before
    assert status(downstream, "label", {}, {"phases": array}) is Status.CURRENT
    _fs(location).rm(_chunk(location, "c/0/0/0"))  # damage
    array = _phases_again(location)
    marker = completion(array)
    assert marker is not None and isinstance(marker[REPAIRED_KEY], str)
    assert identify({"phases": array})["phases"] == before | {REPAIRED_KEY: marker[REPAIRED_KEY]}
    assert status(array, "segment", PARAMETERS, None) is Status.CURRENT
    assert status(downstream, "label", {}, {"phases": array}) is Status.STALE


def test_a_garbage_chunk_is_damage_and_does_not_decode(location: str) -> None:
    array = _phases(location)
    _fs(location).pipe_file(_chunk(location, "c/1/0/0"), b"not a zstd chunk")
    assert status(array, "segment", PARAMETERS, None) is Status.DAMAGED
    assert "rewritten, truncated or added" in str(chunk_damage(array))
    (bad,) = undecodable_chunks(array)
    assert bad.startswith("c/1/0/0 (")
    found = chunk_damage(array, deep=True)
    assert found is not None and found.startswith("1 chunk(s) do not decode: c/1/0/0 (")


def test_a_changed_byte_is_found_only_by_the_deep_check(location: str) -> None:
    """Same size, other bytes: the listing cannot see it; the chunk's checksum can."""
    array = _phases(location)
    fs = _fs(location)
    data = bytearray(fs.cat_file(_chunk(location, "c/2/0/0")))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(_chunk(location, "c/2/0/0"), bytes(data))
    assert status(array, "segment", PARAMETERS, None) is Status.CURRENT
    assert chunk_damage(array) is None
    found = chunk_damage(array, deep=True)
    assert found is not None and found.startswith("1 chunk(s) do not decode: c/2/0/0 (")
    assert "checksum" in found
    mark_damaged(array, found)  # recorded: from now on the array is damaged for everyone
    assert status(array, "segment", PARAMETERS, None) is Status.DAMAGED
    assert chunk_damage(array) == found
    with pytest.raises(DamagedArray, match=r"c/2/0/0"):
        identify({"phases": array})


def test_a_marker_written_before_listings_is_not_checked(location: str) -> None:
    array = _phases(location)
    marker = completion(array)
    assert marker is not None
    array.attrs[COMPLETE_KEY] = {"digest": marker["digest"], "at": marker["at"]}
    _fs(location).rm(_chunk(location, "c/0/0/0"))
    assert status(array, "segment", PARAMETERS, None) is Status.CURRENT
    assert chunk_damage(array) is None


def test_stray_files_in_an_array_are_not_chunks(tmp_path: Path) -> None:
    location = str(tmp_path / "campaign.zarr")
    array = _phases(location)
    Path(_chunk(location, "c/notes.txt")).write_text("hello")
    Path(_chunk(location, "c/0/0/0.partial")).write_bytes(b"")
    assert status(open_store(location)["samples/c01/phases/0"], "segment", PARAMETERS, None) is (
        Status.CURRENT
    )
    assert listing(array).chunks == 3
