"""Provenance records, completion markers and the "is this output current?" test.

DESIGN.md, principle 6: every output array records, in its Zarr attributes,
what made it, and a completion marker written last::

    "provenance": {"stage": "recon", "parameters": {...}, "inputs": {...},
                   "version": "0.1.0", "created": "2025-01-01T12:00:00.000+00:00",
                   "digest": "3f1c…"}
    "complete":   {"digest": "3f1c…", "at": "2025-01-01T12:03:10.512+00:00",
                   "chunks": 8, "listing_sha256": "9a0e…"}

The digest is the SHA-256 of the canonical JSON (sorted keys, no spaces) of
stage, parameters, input identities and package version: two outputs with
the same digest were made the same way from the same inputs. A write starts
with :func:`record`, which removes any old marker in the same metadata write
that stores the new provenance, and ends with :func:`mark_complete`, called
only after every chunk is stored; an interrupted write therefore never looks
complete, whatever it overwrote.

Complete means every chunk is there and decodes: the marker also records the
number of chunks stored and a digest of their keys and sizes
(:mod:`debond.storage.integrity`), and :func:`status` lists the chunks again
(cheap: no chunk is read), so an array that lost a chunk, or whose chunk was
rewritten or truncated, is ``DAMAGED`` and redone. :func:`chunk_damage` with
``deep=True`` decodes every chunk as well, and :func:`mark_damaged` records
what it found in the marker, so that the array is ``DAMAGED`` from then on.

Inputs are identified by :func:`identify`:

- a file (path or fsspec URL): name, size, modification time in ns and the
  SHA-256 of its first and last MiB (:func:`file_identity`);
- a folder (a TIFF stack): the number of files, their total size and a digest
  of the listing of names, sizes and modification times;
- a list of files (SEM images): the identity of each;
- a Zarr array written by a stage: its own provenance digest
  (:func:`array_identity`), so a change upstream makes everything downstream
  stale. An array redone as it was (after an interrupted write, which
  nothing could read) leaves what follows it current; one written over a
  damaged array is marked repaired, and that mark enters its identity: what
  was made from the damaged one may have read its missing chunk as zeros,
  and is redone;
- a mapping: taken as an identity already (e.g. ``{"seed": 3}``).

Locations are recorded under the key ``"path"`` but left out of digests, so a
campaign folder that is moved or copied with its timestamps stays current.

This module also holds the exception hierarchy of :mod:`debond.storage`
(it is the lowest layer; import the classes from ``debond.storage``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as _distribution_version
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from debond.storage.integrity import Listing, damage, listing

#: Attribute holding the provenance record of an output array.
PROVENANCE_KEY = "provenance"
#: Attribute holding the completion marker, written after every chunk.
COMPLETE_KEY = "complete"
#: Attribute of an array written over a damaged one (the time it replaced it);
#: its completion marker carries it, and so does its identity as an input.
REPAIRED_KEY = "repaired"
#: Key of a completion marker recording damage found by a deep check.
DAMAGED_KEY = "damaged"
#: Bytes read from each end of an input file for its identity hash (1 MiB).
HASHED_END_BYTES = 1 << 20
#: The installed debond's version (package metadata, i.e. pyproject.toml), recorded
#: in every provenance record and store. Read from the metadata rather than imported
#: from ``debond``: storage depends on nothing above it.
PACKAGE_VERSION = _distribution_version("debond")


class StoreError(Exception):
    """Base of every error raised by :mod:`debond.storage`.

    The subclasses also derive from the built-in exception a caller would
    expect (``KeyError``, ``FileNotFoundError`` …), like ``zarr.errors``.
    """

    def __str__(self) -> str:
        # KeyError would print its message quoted; every message here is a sentence.
        return str(self.args[0]) if self.args else ""


class StoreNotFound(StoreError, FileNotFoundError):
    """No campaign store at the given location."""


class StoreFormatError(StoreError, ValueError):
    """The location holds something other than a debond store, or a newer format."""


class NodeNotFound(StoreError, KeyError):
    """A sample or array is not in the store."""


class SampleNotFound(NodeNotFound):
    """No group ``samples/<id>`` in the store."""


class ArrayNotFound(NodeNotFound):
    """No array ``samples/<id>/<name>`` in the store."""


class ArrayExists(StoreError, FileExistsError):
    """An array exists already and overwriting it was not asked for."""


class IncompleteArray(StoreError, RuntimeError):
    """An array has no completion marker: its write was interrupted or is running."""


class DamagedArray(IncompleteArray):
    """A complete array lost chunks, or its chunks changed, since it was completed."""


class MetadataError(StoreError, ValueError):
    """An array's attributes lack something needed (voxel size, provenance) or are malformed."""


class Status(enum.Enum):
    """State of an output array with respect to the parameters and inputs of a run.

    The runner skips ``CURRENT`` outputs and redoes the others.
    """

    #: The array does not exist.
    MISSING = "missing"
    #: The array exists but was never marked complete (interrupted or running).
    INCOMPLETE = "incomplete"
    #: Marked complete, but chunks are missing or changed since (see :func:`chunk_damage`).
    DAMAGED = "damaged"
    #: Complete, but made by another stage, other parameters, inputs or version.
    STALE = "stale"
    #: Complete and made exactly so.
    CURRENT = "current"


@dataclass(frozen=True)
class Provenance:
    """What made an output array.

    Attributes
    ----------
    stage : str
        Stage name (``"recon"``, ``"segment"`` …).
    parameters : dict
        The stage's parameters in canonical JSON form (tuples as lists, NumPy
        scalars as Python numbers).
    inputs : dict
        Input name -> identity (see :func:`identify`).
    version : str
        The writer's package version (:data:`PACKAGE_VERSION`).
    created : str
        ISO 8601 UTC time the record was made.
    digest : str
        SHA-256 (64 hex digits) of stage, parameters, inputs and version;
        ``created`` and input locations do not enter it.
    """

    stage: str
    parameters: dict[str, Any]
    inputs: dict[str, Any]
    version: str
    created: str
    digest: str

    def to_json(self) -> dict[str, Any]:
        """The record as stored in the ``"provenance"`` attribute."""
        return {
            "stage": self.stage,
            "parameters": self.parameters,
            "inputs": self.inputs,
            "version": self.version,
            "created": self.created,
            "digest": self.digest,
        }

    @classmethod
    def from_json(cls, record: Any, source: str) -> Provenance:
        """Read a stored record; ``source`` names the array in errors.

        Raises
        ------
        MetadataError
            If a field is missing or of the wrong type.
        """
        fields = {"stage": str, "parameters": dict, "inputs": dict, "version": str}
        fields |= {"created": str, "digest": str}
        if not isinstance(record, Mapping):
            raise MetadataError(
                f"{source}: attribute {PROVENANCE_KEY!r} must be a mapping; got {record!r}"
            )
        for name, kind in fields.items():
            if not isinstance(record.get(name), kind):
                raise MetadataError(
                    f"{source}: provenance field {name!r} must be a {kind.__name__}; "
                    f"got {record.get(name)!r}"
                )
        return cls(**{name: record[name] for name in fields})


def now() -> str:
    """The current UTC time in ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def to_json_value(value: Any, where: str = "parameters") -> Any:
    """Convert a value to plain JSON types, or fail naming where it sits.

    Mappings with string keys, lists and tuples (-> lists), str, bool, int,
    finite float, None, NumPy scalars and arrays (-> Python numbers and
    lists) and paths (-> str) are accepted.

    Parameters
    ----------
    value : object
    where : str
        Name of the value in error messages, e.g. ``"parameters['sigma']"``.

    Raises
    ------
    TypeError
        For anything else (sets, objects, non-string keys).
    ValueError
        For NaN or infinite floats, which JSON cannot hold.
    """
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not np.isfinite(value):
            raise ValueError(f"{where} must be finite to be recorded; got {value!r}")
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be strings; got {key!r}")
            out[key] = to_json_value(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [to_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(
        f"{where} cannot be recorded as JSON: got {type(value).__name__} {value!r}; "
        "use numbers, strings, booleans, None, lists or mappings"
    )


def canonical_json(value: Any) -> str:
    """Canonical JSON text: sorted keys, no spaces, UTF-8 kept, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _without_locations(value: Any) -> Any:
    """A copy of an identity without its ``"path"`` keys (what a digest covers)."""
    if isinstance(value, Mapping):
        return {k: _without_locations(v) for k, v in value.items() if k != "path"}
    if isinstance(value, list):
        return [_without_locations(v) for v in value]
    return value


def _is_url(location: str) -> bool:
    return "://" in location


def _sha256_of_ends(head: bytes, tail: bytes) -> str:
    digest = hashlib.sha256(head)
    digest.update(tail)
    return digest.hexdigest()


def file_identity(path: str | os.PathLike[str], name: str = "input") -> dict[str, Any]:
    """Identity of an input file or folder.

    Parameters
    ----------
    path : path or fsspec URL
        A file, or a folder whose files (recursively) are the input.
    name : str
        The input's name, for error messages.

    Returns
    -------
    dict
        For a file ``{"kind": "file", "path", "name", "size" (bytes),
        "mtime_ns", "sha256_ends"}``, where ``sha256_ends`` hashes the first
        and the last :data:`HASHED_END_BYTES` (the whole file if smaller).
        For a folder ``{"kind": "directory", "path", "name", "files",
        "size", "listing_sha256"}``. For an fsspec URL ``mtime_ns`` is
        replaced by ``"modified"``, whatever the filesystem reports (mtime,
        LastModified or ETag), or left out.

    Raises
    ------
    FileNotFoundError
        Naming the input and the path.
    """
    location = os.fspath(path)
    if _is_url(location):
        return _url_identity(location, name)
    target = Path(location)
    if target.is_dir():
        listing = []
        total = 0
        for file in sorted(p for p in target.rglob("*") if p.is_file()):
            stat = file.stat()
            listing.append([file.relative_to(target).as_posix(), stat.st_size, stat.st_mtime_ns])
            total += stat.st_size
        return {
            "kind": "directory",
            "path": location,
            "name": target.name,
            "files": len(listing),
            "size": total,
            "listing_sha256": hashlib.sha256(canonical_json(listing).encode()).hexdigest(),
        }
    try:
        stat = target.stat()
        with target.open("rb") as handle:
            head = handle.read(HASHED_END_BYTES)
            handle.seek(max(stat.st_size - HASHED_END_BYTES, len(head)))
            tail = handle.read()
    except FileNotFoundError as error:
        raise FileNotFoundError(f"input {name!r}: file {location} does not exist") from error
    return {
        "kind": "file",
        "path": location,
        "name": target.name,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256_ends": _sha256_of_ends(head, tail),
    }


def _url_identity(url: str, name: str) -> dict[str, Any]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"input {name!r}: {url} does not exist")
    info = fs.info(path)
    size = int(info.get("size") or 0)
    head = fs.cat_file(path, start=0, end=min(size, HASHED_END_BYTES))
    tail = fs.cat_file(path, start=max(size - HASHED_END_BYTES, len(head)), end=size)
    identity: dict[str, Any] = {
        "kind": "file",
        "path": url,
        "name": path.rstrip("/").rsplit("/", 1)[-1],
        "size": size,
        "sha256_ends": _sha256_of_ends(head, tail),
    }
    for key in ("mtime", "LastModified", "ETag", "created"):
        if info.get(key) is not None:
            identity["modified"] = str(info[key])
            break
    return identity


def _read_attrs(array: zarr.Array) -> dict[str, Any]:
    """The array's attributes as stored now (re-read, not the object's cache)."""
    try:
        fresh = zarr.open_array(array.store_path, mode="r")
    except FileNotFoundError:
        return dict(array.attrs)
    return dict(fresh.attrs)


def store_location(store: Any) -> str:
    """A readable location of a Zarr store: a folder, or an fsspec URL."""
    root = getattr(store, "root", None)  # LocalStore
    if root is not None:
        return str(root)
    fs, path = getattr(store, "fs", None), getattr(store, "path", None)
    if fs is not None and path is not None:
        try:
            return str(fs.unstrip_protocol(path))
        except (AttributeError, TypeError):
            return str(path)
    return str(store)


def _describe(array: zarr.Array) -> str:
    return f"array {array.path!r} in {store_location(array.store)}"


def read_provenance(array: zarr.Array) -> Provenance | None:
    """The provenance recorded on ``array``, or None if there is none.

    Raises
    ------
    MetadataError
        If the record is malformed.
    """
    record = _read_attrs(array).get(PROVENANCE_KEY)
    return None if record is None else Provenance.from_json(record, _describe(array))


def completion(array: zarr.Array) -> dict[str, Any] | None:
    """The completion marker ``{"digest", "at", "chunks", "listing_sha256"}`` of ``array``,
    or None."""
    marker = _read_attrs(array).get(COMPLETE_KEY)
    return marker if isinstance(marker, dict) else None


def _recorded_damage(array: zarr.Array, marker: dict[str, Any]) -> str | None:
    """Damage recorded in the marker by a deep check, or found by listing the chunks.

    None when there is none; markers written before chunk listings were
    recorded cannot be checked by a listing.
    """
    found = marker.get(DAMAGED_KEY)
    if isinstance(found, str):
        return found
    recorded = Listing.from_marker(marker)
    return None if recorded is None else damage(array, recorded)


def chunk_damage(array: zarr.Array, *, deep: bool = False) -> str | None:
    """What is wrong with the chunks of a complete array, or None.

    Parameters
    ----------
    array : zarr.Array
        An array with a completion marker (an incomplete one gives None).
    deep : bool
        Also read and decode every chunk, naming those that fail
        (:func:`debond.storage.integrity.undecodable_chunks`): as expensive as
        reading the array. Default: only list the chunks and compare them with
        the record of the marker.

    Returns
    -------
    str or None
        One line naming the missing or undecodable chunks (or the damage a
        deep check recorded, :func:`mark_damaged`); None when the array is
        intact (or not complete).
    """
    marker = completion(array)
    if marker is None:
        return None
    if not deep:
        return _recorded_damage(array, marker)
    found = damage(array, Listing.from_marker(marker), deep=True)
    recorded = marker.get(DAMAGED_KEY)
    return found if found is not None or not isinstance(recorded, str) else recorded


def mark_damaged(array: zarr.Array, found: str) -> None:
    """Record in a complete array's marker what a deep check found wrong with it.

    The array is ``DAMAGED`` from then on (:func:`status`): the next run
    redoes it, as when a listing shows the damage, and what was made from it.
    """
    marker = completion(array)
    if marker is not None:
        array.attrs[COMPLETE_KEY] = marker | {DAMAGED_KEY: found}


def array_identity(array: zarr.Array, name: str = "input") -> dict[str, Any]:
    """Identity of an input array: its path and provenance digest (and its repair mark).

    An array written over a damaged one carries the time it replaced it
    (``"repaired"``): what was made from the damaged array is then a stale
    output of a changed input.

    Raises
    ------
    IncompleteArray
        If the array has no completion marker: its stage must finish first.
    DamagedArray
        (an ``IncompleteArray``) if chunks went missing or changed since it was
        completed (:func:`chunk_damage`): its stage must run again.
    """
    marker = completion(array)
    if marker is None:
        raise IncompleteArray(
            f"input {name!r}: {_describe(array)} is not complete (no completion marker); "
            "run the stage that writes it first"
        )
    found = _recorded_damage(array, marker)
    if found is not None:
        raise DamagedArray(
            f"input {name!r}: {_describe(array)} is damaged: {found}; "
            "run the stage that writes it again"
        )
    identity = {"kind": "array", "path": array.path, "digest": marker["digest"]}
    return identity | ({REPAIRED_KEY: marker[REPAIRED_KEY]} if REPAIRED_KEY in marker else {})


#: What an input may be: a path or URL, a list of them, a Zarr array or an identity.
InputLike = (
    str | os.PathLike[str] | zarr.Array | Sequence[str | os.PathLike[str]] | Mapping[str, Any]
)


def identify(inputs: Mapping[str, InputLike] | None) -> dict[str, Any]:
    """Identities of a stage's inputs (see the module docstring).

    Parameters
    ----------
    inputs : mapping or None
        Input name -> path, fsspec URL, list of paths, ``zarr.Array`` or an
        identity mapping (JSON-able, taken as is).

    Returns
    -------
    dict
        Input name -> identity, JSON-able.

    Raises
    ------
    FileNotFoundError
        If a file input does not exist.
    IncompleteArray
        If an array input is not complete.
    TypeError
        For an input of another kind.
    """
    out: dict[str, Any] = {}
    for name, value in (inputs or {}).items():
        if not isinstance(name, str):
            raise TypeError(f"input names must be strings; got {name!r}")
        if isinstance(value, zarr.Array):
            out[name] = array_identity(value, name)
        elif isinstance(value, str | os.PathLike):
            out[name] = file_identity(value, name)
        elif isinstance(value, Mapping):
            out[name] = to_json_value(value, f"inputs[{name!r}]")
        elif isinstance(value, Sequence):
            items = [file_identity(item, f"{name}[{i}]") for i, item in enumerate(value)]
            out[name] = {"kind": "files", "items": items}
        else:
            raise TypeError(
                f"input {name!r}: expected a path, URL, list of paths, zarr.Array or "
                f"identity mapping; got {type(value).__name__}"
            )
    return out


def digest(
    stage: str,
    parameters: Mapping[str, Any] | None,
    inputs: Mapping[str, InputLike] | None,
    version: str | None = None,
) -> str:
    """SHA-256 identifying an output: stage, parameters, input identities, version.

    Parameters
    ----------
    stage : str
    parameters : mapping or None
        JSON-able (see :func:`to_json_value`); None is the same as ``{}``.
    inputs : mapping or None
        Inputs as for :func:`identify`, or identities already made by it.
    version : str, optional
        Package version; :data:`PACKAGE_VERSION` (the installed debond's) by default.

    Returns
    -------
    str
        64 hexadecimal digits.

    Examples
    --------
    >>> digest("recon", {"iterations": 10}, {}, "0.1.0") == digest(
    ...     "recon", {"iterations": 10}, None, "0.1.0")
    True
    >>> digest("recon", {"iterations": 10}, {}) == digest("recon", {"iterations": 20}, {})
    False
    """
    return make_provenance(stage, parameters, inputs, version).digest


def _digest_of(stage: str, parameters: Any, inputs: Any, version: str) -> str:
    document = {
        "stage": stage,
        "parameters": parameters,
        "inputs": _without_locations(inputs),
        "version": version,
    }
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


def make_provenance(
    stage: str,
    parameters: Mapping[str, Any] | None,
    inputs: Mapping[str, InputLike] | None,
    version: str | None = None,
) -> Provenance:
    """Build the provenance record of an output (nothing is written).

    Parameters are as for :func:`digest`. Raises ``ValueError`` for an empty
    stage name and the errors of :func:`to_json_value` and :func:`identify`.
    """
    if not isinstance(stage, str) or not stage:
        raise ValueError(f"stage must be a non-empty string; got {stage!r}")
    params = to_json_value(dict(parameters or {}), "parameters")
    identities = identify(inputs)
    version = PACKAGE_VERSION if version is None else version
    return Provenance(
        stage=stage,
        parameters=params,
        inputs=identities,
        version=version,
        created=now(),
        digest=_digest_of(stage, params, identities, version),
    )


def record(array: zarr.Array, provenance: Provenance) -> None:
    """Store ``provenance`` on ``array`` and remove its completion marker.

    Both happen in one metadata write (all other attributes are kept), so
    the array is never complete with a provenance it was not made with.
    Call it before writing the first chunk.
    """
    attrs = dict(array.attrs)
    attrs.pop(COMPLETE_KEY, None)
    attrs[PROVENANCE_KEY] = provenance.to_json()
    array.attrs.put(attrs)


def clear_completion(array: zarr.Array) -> None:
    """Remove the completion marker of ``array`` if it has one."""
    if COMPLETE_KEY in array.attrs:
        del array.attrs[COMPLETE_KEY]


def mark_complete(array: zarr.Array) -> dict[str, Any]:
    """Write the completion marker; call it only after every chunk is stored.

    The chunks are listed once (:func:`debond.storage.integrity.listing`),
    so that a chunk lost later is found (:func:`status`).

    Returns
    -------
    dict
        The marker, ``{"digest": <provenance digest>, "at": <UTC time>,
        "chunks": <number of chunks stored>, "listing_sha256": <digest of
        their keys and sizes>}``, and ``"repaired"`` for an array written
        over a damaged one (its attribute of that name).

    Raises
    ------
    MetadataError
        If the array has no provenance: record it (:func:`record`, or
        ``create_volume(..., stage=...)``) before writing.
    """
    provenance = read_provenance(array)
    if provenance is None:
        raise MetadataError(
            f"{_describe(array)} has no provenance to mark complete; create it with "
            "create_volume(..., stage=..., parameters=..., inputs=...) or call record() first"
        )
    marker = {"digest": provenance.digest, "at": now(), **listing(array).to_json()}
    repaired = _read_attrs(array).get(REPAIRED_KEY)
    if repaired is not None:
        marker[REPAIRED_KEY] = repaired
    array.attrs[COMPLETE_KEY] = marker
    return marker


def _resolve(target: zarr.Array | str | os.PathLike[str] | None) -> zarr.Array | None:
    if target is None or isinstance(target, zarr.Array):
        return target
    try:
        node = zarr.open(os.fspath(target), mode="r", zarr_format=3)
    except FileNotFoundError:
        return None
    if isinstance(node, zarr.Group) and "ome" in node.attrs:
        # a volume's OME-Zarr image: its level 0 (debond.storage.volumes)
        level0 = node.get("0")
        if isinstance(level0, zarr.Array):
            return level0
    if not isinstance(node, zarr.Array):
        raise StoreFormatError(f"{os.fspath(target)} is a Zarr group, not an array")
    return node


def status(
    target: zarr.Array | str | os.PathLike[str] | None,
    stage: str,
    parameters: Mapping[str, Any] | None,
    inputs: Mapping[str, InputLike] | None,
    version: str | None = None,
) -> Status:
    """Is this output complete and made with these parameters and inputs?

    Parameters
    ----------
    target : zarr.Array, path, fsspec URL or None
        The output array (a path or URL leads to the array itself, e.g.
        ``"campaign.zarr/samples/c03/recon"``); None or a location with
        nothing there is ``MISSING``.
    stage, parameters, inputs, version
        As for :func:`digest`: what the output would be made with now.

    Returns
    -------
    Status
        ``MISSING``, ``INCOMPLETE`` (no marker, or a marker that does not
        match the recorded provenance), ``DAMAGED`` (chunks missing or changed
        since the marker was written: one listing of the chunks, none read),
        ``STALE`` (another digest, or an input array that is itself
        incomplete or damaged) or ``CURRENT``.

    Raises
    ------
    FileNotFoundError
        If an input file does not exist (bad input is an error, not staleness).
    """
    array = _resolve(target)
    if array is None:
        return Status.MISSING
    attrs = _read_attrs(array)
    marker = attrs.get(COMPLETE_KEY)
    recorded = attrs.get(PROVENANCE_KEY)
    if (
        not isinstance(marker, dict)
        or not isinstance(recorded, dict)
        or marker.get("digest") != recorded.get("digest")
    ):
        return Status.INCOMPLETE
    if _recorded_damage(array, marker) is not None:
        return Status.DAMAGED
    try:
        expected = digest(stage, parameters, inputs, version)
    except IncompleteArray:
        return Status.STALE
    return Status.CURRENT if marker["digest"] == expected else Status.STALE


def is_current(
    target: zarr.Array | str | os.PathLike[str] | None,
    stage: str,
    parameters: Mapping[str, Any] | None,
    inputs: Mapping[str, InputLike] | None,
    version: str | None = None,
) -> bool:
    """True if :func:`status` is ``CURRENT``: the output can be skipped."""
    return status(target, stage, parameters, inputs, version) is Status.CURRENT


def changes(
    target: zarr.Array | str | os.PathLike[str],
    stage: str,
    parameters: Mapping[str, Any] | None,
    inputs: Mapping[str, InputLike] | None,
    version: str | None = None,
) -> list[str]:
    """What differs between the recorded provenance and a run's, for logs.

    Returns
    -------
    list of str
        One line per difference, e.g. ``"parameters['iterations']: 1000 -> 500"``
        or ``"inputs['txm']: changed"``; empty if nothing differs (or nothing
        was recorded, which :func:`status` reports as missing or incomplete).
    """
    array = _resolve(target)
    recorded = None if array is None else read_provenance(array)
    if recorded is None:
        return []
    try:
        expected = make_provenance(stage, parameters, inputs, version)
    except IncompleteArray as error:
        return [str(error)]
    lines = []
    if recorded.stage != expected.stage:
        lines.append(f"stage: {recorded.stage!r} -> {expected.stage!r}")
    if recorded.version != expected.version:
        lines.append(f"version: {recorded.version} -> {expected.version}")
    for key in sorted(recorded.parameters.keys() | expected.parameters.keys()):
        old = recorded.parameters.get(key, "<unset>")
        new = expected.parameters.get(key, "<unset>")
        if canonical_json(old) != canonical_json(new):
            lines.append(f"parameters[{key!r}]: {old!r} -> {new!r}")
    for key in sorted(recorded.inputs.keys() | expected.inputs.keys()):
        old = _without_locations(recorded.inputs.get(key))
        new = _without_locations(expected.inputs.get(key))
        if canonical_json(old) != canonical_json(new):
            lines.append(f"inputs[{key!r}]: changed")
    return lines
