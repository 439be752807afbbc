"""Are an array's chunks all there, and do they decode?

A completion marker (:mod:`debond.storage.provenance`) says that every chunk
of an array was written. Chunks can still go missing or be damaged later (a
disk that fills up, a copy that stops half-way, a file edited by hand), and a
missing chunk reads as the fill value without any error. So the marker also
records what was stored when the array was completed
(:func:`listing`): the number of chunks and a digest of their keys and sizes.

Two checks compare an array with its record:

- :func:`damage` (cheap: one listing of the array's chunks, no chunk read):
  chunks missing, or chunks whose size changed since completion (rewritten,
  truncated);
- :func:`undecodable_chunks` (deep: reads and decodes every chunk): arrays
  written by this version carry a CRC-32C checksum in every chunk
  (:data:`CHECKSUM_CODEC`), so a chunk of the same size with other bytes is
  found too.

This module knows Zarr and nothing of debond's markers; it is the layer
under :mod:`debond.storage.provenance`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

__all__ = [
    "CHECKSUM_CODEC",
    "Listing",
    "damage",
    "listing",
    "undecodable_chunks",
]

#: Codec appended after compression to every array: a checksum of each chunk,
#: verified whenever the chunk is read.
CHECKSUM_CODEC = Crc32cCodec()
#: Threads that read chunks at once in :func:`undecodable_chunks`.
READ_THREADS = 8
#: Chunk keys named in a message; the others are counted.
SHOWN_KEYS = 5


@dataclass(frozen=True)
class Listing:
    """What chunks an array holds, as recorded in its completion marker.

    Attributes
    ----------
    chunks : int
        Number of stored chunks.
    sha256 : str
        SHA-256 of the sorted ``"<key> <size in bytes>"`` lines of those chunks.
    """

    chunks: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """The fields as stored in the marker."""
        return {"chunks": self.chunks, "listing_sha256": self.sha256}

    @classmethod
    def from_marker(cls, marker: Mapping[str, Any]) -> Listing | None:
        """The listing recorded in a marker; None for a marker written before listings."""
        chunks, sha = marker.get("chunks"), marker.get("listing_sha256")
        if isinstance(chunks, int) and isinstance(sha, str):
            return cls(chunks, sha)
        return None


def _chunk_coords(array: zarr.Array, key: str) -> tuple[int, ...] | None:
    """The grid position of a chunk key, or None if `key` names no chunk of `array`.

    Decoded here rather than by zarr's ``decode_chunk_key``, which zarr 3.1
    gets wrong for the default encoding with "/" (the separator after "c" is
    kept); a key counts only if it encodes back to itself.
    """
    encoding = array.metadata.chunk_key_encoding  # type: ignore[union-attr]
    separator = str(getattr(encoding, "separator", "/"))
    text = key
    if encoding.name == "default":
        if key == "c":
            return () if array.ndim == 0 else None
        if not key.startswith("c" + separator):
            return None
        text = key[2:]
    try:
        coords = tuple(int(part) for part in text.split(separator))
    except ValueError:
        return None
    grid = array.cdata_shape
    if len(coords) != len(grid) or not all(0 <= c < n for c, n in zip(coords, grid, strict=True)):
        return None
    return coords if encoding.encode_chunk_key(coords) == key else None


def _local_sizes(folder: Path) -> Iterator[tuple[str, int]]:
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # removed while listing
                continue
            yield path.relative_to(folder).as_posix(), size


async def _store_sizes(store: Any, prefix: str) -> dict[str, int]:
    keys = [key async for key in store.list_prefix(prefix)]
    sizes = await asyncio.gather(*(store.getsize(key) for key in keys))
    return {key[len(prefix) :]: int(size) for key, size in zip(keys, sizes, strict=True)}


def _stored_sizes(array: zarr.Array) -> dict[str, int]:
    """Every key under the array's node (relative to it) with its size in bytes.

    One listing: a folder walk for a local store, ``find`` for an fsspec store
    (sizes come with the listing), the store's own listing otherwise.
    """
    store = array.store
    prefix = f"{array.path}/" if array.path else ""
    if isinstance(store, LocalStore):
        return dict(_local_sizes(Path(store.root) / array.path))
    if isinstance(store, FsspecStore):  # its filesystem is asynchronous, as zarr requires
        root = f"{store.path.rstrip('/')}/{prefix}"
        found = sync(store.fs._find(root, detail=True))
        return {path[len(root) :]: int(info.get("size") or 0) for path, info in found.items()}
    return sync(_store_sizes(store, prefix))


def _chunk_sizes(array: zarr.Array) -> dict[str, int]:
    """The array's stored chunks: key -> size in bytes (metadata and stray files left out)."""
    return {
        key: size
        for key, size in _stored_sizes(array).items()
        if _chunk_coords(array, key) is not None
    }


def _summarise(sizes: Mapping[str, int]) -> Listing:
    lines = "\n".join(f"{key} {sizes[key]}" for key in sorted(sizes))
    return Listing(len(sizes), hashlib.sha256(lines.encode()).hexdigest())


def listing(array: zarr.Array) -> Listing:
    """The chunks `array` holds now: their number and the digest of their keys and sizes.

    Examples
    --------
    >>> import numpy as np, zarr
    >>> array = zarr.create_array({}, shape=(4,), chunks=(2,), dtype="i4")
    >>> array[:] = np.arange(4)
    >>> listing(array).chunks
    2
    """
    return _summarise(_chunk_sizes(array))


def _keys(keys: list[str], separator: str = ", ") -> str:
    """The first few keys (or keys with reasons), and how many more."""
    shown = separator.join(keys[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def _grid_keys(array: zarr.Array) -> Iterator[str]:
    encode = array.metadata.chunk_key_encoding.encode_chunk_key  # type: ignore[union-attr]
    for coords in np.ndindex(*array.cdata_shape):
        yield encode(coords)


def damage(array: zarr.Array, recorded: Listing | None, *, deep: bool = False) -> str | None:
    """What is wrong with the array's chunks against the listing recorded at completion.

    Parameters
    ----------
    array : zarr.Array
    recorded : Listing or None
        From the array's completion marker (:meth:`Listing.from_marker`);
        None for a marker written before listings (only ``deep`` can check it).
    deep : bool
        Also decode every chunk (:func:`undecodable_chunks`), naming those that
        fail. Default: list the chunks only.

    Returns
    -------
    str or None
        None when the same chunks are stored with the same sizes (and, deep,
        all decode); else one line: the chunks missing (named when the record
        covers the whole grid), the chunks that do not decode, or that chunks
        changed since completion.

    Examples
    --------
    >>> import numpy as np, pathlib, tempfile, zarr
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> array = zarr.create_array(folder, shape=(4,), chunks=(2,), dtype="i4")
    >>> array[:] = np.arange(1, 5)
    >>> recorded = listing(array)
    >>> damage(array, recorded) is None
    True
    >>> (folder / "c" / "1").unlink()
    >>> damage(array, recorded)
    '1 of 2 chunks missing: c/1'
    """
    found = []
    changed = False
    if recorded is not None:
        sizes = _chunk_sizes(array)
        now = _summarise(sizes)
        if now.chunks < recorded.chunks:
            lost = recorded.chunks - now.chunks
            named = f" ({now.chunks} stored)"
            if recorded.chunks == int(np.prod(array.cdata_shape)):
                named = ": " + _keys([key for key in _grid_keys(array) if key not in sizes])
            found.append(f"{lost} of {recorded.chunks} chunks missing{named}")
        changed = now.chunks >= recorded.chunks and now != recorded
    bad = undecodable_chunks(array) if deep else []
    if bad:
        found.append(f"{len(bad)} chunk(s) do not decode: " + _keys(bad, "; "))
    elif changed:
        found.append("its chunks changed since it was completed (rewritten, truncated or added)")
    return "; ".join(found) or None


def _region(array: zarr.Array, coords: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(
        slice(c * size, min((c + 1) * size, n))
        for c, size, n in zip(coords, array.chunks, array.shape, strict=True)
    )


def _decode_error(array: zarr.Array, key: str) -> str | None:
    coords = _chunk_coords(array, key)
    assert coords is not None
    try:
        array[_region(array, coords)]
    except Exception as error:  # whatever the codecs raise on bad bytes
        return f"{key} ({type(error).__name__}: {error})"
    return None


def undecodable_chunks(array: zarr.Array) -> list[str]:
    """Every stored chunk of `array` that does not decode, with the reason.

    Reads and decodes each chunk (a few threads at once): as expensive as
    reading the whole array. With :data:`CHECKSUM_CODEC` among the array's
    codecs, a chunk whose bytes changed fails its checksum; without it (arrays
    written before the checksum), only bytes the decompressor rejects are found.

    Returns
    -------
    list of str
        ``"<key> (<error>)"`` per bad chunk, sorted by key; empty when all decode.

    Examples
    --------
    >>> import numpy as np, pathlib, tempfile, zarr
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> array = zarr.create_array(folder, shape=(4,), chunks=(2,), dtype="i4",
    ...                           compressors=[CHECKSUM_CODEC])
    >>> array[:] = np.arange(1, 5)
    >>> undecodable_chunks(array)
    []
    >>> _ = (folder / "c" / "1").write_bytes(b"garbage!")
    >>> [bad.split(" ")[0] for bad in undecodable_chunks(array)]
    ['c/1']
    """
    keys = sorted(_chunk_sizes(array))
    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="debond-verify") as pool:
        errors = pool.map(lambda key: _decode_error(array, key), keys)
        return [error for error in errors if error is not None]
