"""Campaign stores: Zarr v3 volumes, their chunking, and xarray views in µm.

One Zarr v3 group per campaign (DESIGN.md, "Store"), at a local path or an
fsspec URL (``s3://…``, ``memory://…``)::

    <root>                      attrs {"debond": {"store_format": 2, ...}}
      samples/<id>              attrs: the sample's own (e.g. {"cycles": 3})
        projections             (angle, z, x)   chunks: a few whole projections
        sinograms               (z, angle, x)   chunks: a few whole sinograms
        recon, phases, particles, …   OME-Zarr image groups (NGFF 0.5), each holding
          0                     (z, y, x) chunks: cubes of 64–128 voxels (recon:
                                as deep as one reconstruction task's slab)
          1                     the same, 2× coarser per axis, half-size chunks

Volumes are OME-Zarr multiscale images, so that napari and the OME-Zarr
readers open them with their scale in µm: level ``0`` is the volume the
stages read and write; level ``1`` is written in the same pass over the data
(:func:`prepare_write`): the mean of 2×2×2 voxels for floats, every second
voxel for labels, phases and masks, whose values must stay values of the
volume. Stores of format 1 (flat arrays) are still read.

Every array carries ``voxel_size_um``, its ``purpose`` (which chose its
chunks), its provenance and, once every chunk is written, a completion marker
(:mod:`debond.storage.provenance`). Arrays are compressed with Blosc/zstd,
byte-shuffled (bit-shuffled for one-byte types such as phases and bool masks),
and every chunk carries a CRC-32C checksum; every chunk is stored, even one
that holds only the fill value, so that a missing chunk is always damage.

Coordinates: voxel ``i`` along z, y or x has its centre at ``i * voxel_size_um``
µm, so the first voxel's centre is the origin. This is the convention of
scikit-image ``regionprops(spacing=...)`` and ``scipy.ndimage.center_of_mass``
times the voxel size, so particle centroids in the tables
(``centroid_z_um`` …) and xarray coordinates agree without a half-voxel shift.
Detector rows of projections and sinograms lie along the rotation axis and
share the ``z`` coordinate with the reconstruction; detector columns are
``x``. The angle axis has coordinates (radians) only if the array has an
``angles_rad`` attribute.

Writers never need a whole volume in memory: :func:`create_volume` returns an
empty array to fill region by region, then :func:`mark_complete`;
:func:`write_volume` stores a NumPy or Dask array (chunk by chunk, no
client-side materialisation of Dask input) and marks it complete. Readers get
lazy Dask-backed ``xarray`` objects from :func:`open_volume` and
:func:`open_dataset`.

Examples
--------
>>> import numpy as np
>>> store = open_store("memory://doctest-volumes.zarr", mode="a")
>>> set_sample_attrs(store, "c03", {"cycles": 3})
>>> _ = write_volume(store, "c03", "phases", np.zeros((4, 5, 6), np.uint8),
...                  voxel_size_um=0.03, stage="segment", parameters={"classes": 5})
>>> volume = open_volume(store, "c03", "phases")
>>> volume.dims, float(volume.x[1]), volume.attrs["cycles"], volume.attrs["stage"]
(('z', 'y', 'x'), 0.03, 3, 'segment')
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr
from dask.base import tokenize
from dask.delayed import Delayed
from zarr.codecs import BloscCodec
from zarr.errors import ContainsArrayError
from zarr.storage import LocalStore

from debond.storage.integrity import CHECKSUM_CODEC
from debond.storage.provenance import (
    COMPLETE_KEY,
    PACKAGE_VERSION,
    PROVENANCE_KEY,
    REPAIRED_KEY,
    ArrayExists,
    ArrayNotFound,
    IncompleteArray,
    InputLike,
    MetadataError,
    SampleNotFound,
    Status,
    StoreFormatError,
    StoreNotFound,
    chunk_damage,
    clear_completion,
    make_provenance,
    mark_complete,
    now,
    status,
    store_location,
    to_json_value,
)

#: Root attribute naming the store format (like ome-zarr's ``"ome": {"version"}``).
FORMAT_KEY = "debond"
#: Version of the store layout this module writes and reads (1: volumes were
#: flat arrays, still read; 2: volumes are OME-Zarr image groups).
STORE_FORMAT = 2
#: Group attribute holding OME-Zarr (NGFF) metadata in Zarr v3.
OME_KEY = "ome"
#: The NGFF version of that metadata.
NGFF_VERSION = "0.5"
#: Paths of a volume's resolution levels inside its image group.
LEVELS = ("0", "1")
#: Group holding one group per sample.
SAMPLES = "samples"
#: Group of a sample holding what a stage keeps between its passes (one group per
#: output), removed once the stage is done; not a volume, so never listed.
SCRATCH = "scratch"
#: Array names of DESIGN.md (any other valid name is accepted too).
ARRAY_NAMES = ("projections", "sinograms", "recon", "phases", "particles")
#: Purposes and the dimension names of their arrays.
PURPOSE_DIMS: dict[str, tuple[str, str, str]] = {
    "projections": ("angle", "z", "x"),
    "sinograms": ("z", "angle", "x"),
    "volume": ("z", "y", "x"),
}
#: Dimensions with coordinates in µm.
SPATIAL_DIMS = ("z", "y", "x")
#: Target bytes of a projection or sinogram chunk (whole frames, at least one).
SLAB_CHUNK_BYTES = 16 * 2**20
#: Target bytes of a volume chunk; the cube side is then clipped to CUBE_SIDE.
CUBE_CHUNK_BYTES = 8 * 2**20
#: Smallest and largest side of a volume chunk, in voxels.
CUBE_SIDE = (64, 128)
#: zstd level of the Blosc compressor (1–9; 3 favours speed).
CLEVEL = 3
#: Attributes that the module sets itself and ``attrs=`` may not override.
RESERVED_ATTRS = ("voxel_size_um", "purpose", PROVENANCE_KEY, COMPLETE_KEY, REPAIRED_KEY)
#: The metadata file of a Zarr v3 node; the root one marks a debond store.
ZARR_JSON = "zarr.json"
#: Modes of :func:`open_store`.
MODES = ("r", "r+", "a")

Mode = Literal["r", "r+", "a"]

Location = str | os.PathLike[str]


# --------------------------------------------------------------------- arguments


def _check_key(kind: str, value: object) -> str:
    """A sample id or array name usable as a Zarr node name."""
    if (
        not isinstance(value, str)
        or not value
        or "/" in value
        or value in (".", "..")
        or value.startswith("__")
    ):
        raise ValueError(
            f"{kind} must be a non-empty string without '/', not '.' or '..' and not "
            f"starting with '__'; got {value!r}"
        )
    return value


def _check_shape(shape: Sequence[int], where: str) -> tuple[int, int, int]:
    values = tuple(shape)
    if len(values) != 3 or not all(isinstance(n, int | np.integer) and n >= 1 for n in values):
        raise ValueError(f"{where}: shape must be three integers >= 1 (z, y, x); got {shape!r}")
    z, y, x = (int(n) for n in values)
    return z, y, x


def _check_dtype(dtype: Any, where: str) -> np.dtype[Any]:
    try:
        result = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"{where}: {dtype!r} is not a NumPy dtype") from error
    if result.kind not in "biuf":
        raise TypeError(
            f"{where}: dtype {result} is not supported; use bool, an integer or a float type"
        )
    return result


def _check_voxel_size(value: Any, where: str) -> float:
    try:
        size = float(value)
    except (TypeError, ValueError):
        size = math.nan
    if isinstance(value, bool) or not (math.isfinite(size) and size > 0):
        raise ValueError(f"{where}: voxel_size_um must be a finite number > 0 µm; got {value!r}")
    return size


def _check_purpose(purpose: str | None, name: str) -> str:
    if purpose is None:
        return name if name in PURPOSE_DIMS else "volume"
    if purpose not in PURPOSE_DIMS:
        raise ValueError(
            f"array {name!r}: purpose must be one of {', '.join(PURPOSE_DIMS)}; got {purpose!r}"
        )
    return purpose


def _check_chunks(chunks: Sequence[int], where: str) -> tuple[int, int, int]:
    values = tuple(chunks)
    if len(values) != 3 or not all(isinstance(n, int | np.integer) and n >= 1 for n in values):
        raise ValueError(f"{where}: chunks must be three integers >= 1; got {chunks!r}")
    z, y, x = (int(n) for n in values)
    return z, y, x


def _check_dims(dims: Sequence[str], where: str) -> tuple[str, str, str]:
    values = tuple(dims)
    if len(values) != 3 or len(set(values)) != 3 or not all(isinstance(d, str) for d in values):
        raise ValueError(f"{where}: dims must be three distinct names; got {dims!r}")
    a, b, c = values
    return a, b, c


def _array_path(sample: str, name: str) -> str:
    return f"{SAMPLES}/{_check_key('sample', sample)}/{_check_key('array name', name)}"


# ---------------------------------------------------------------- chunks, codecs


def default_chunks(shape: Sequence[int], purpose: str, dtype: Any) -> tuple[int, int, int]:
    """Chunk shape for an array of the given purpose.

    Parameters
    ----------
    shape : (3,) ints
        Array shape: ``(angles, rows, columns)`` for projections, ``(rows,
        angles, columns)`` for sinograms, ``(z, y, x)`` for volumes.
    purpose : {"projections", "sinograms", "volume"}
        ``"projections"``: whole projections, as many per chunk as fit in
        :data:`SLAB_CHUNK_BYTES` (16 MiB), at least one; per-projection stages
        (normalisation, the 7×7 median) read one chunk per task.
        ``"sinograms"``: whole sinograms (one detector row each), likewise;
        reconstruction reads complete sinograms. ``"volume"``: cubes whose side
        is ``(CUBE_CHUNK_BYTES / itemsize) ** (1/3)`` (8 MiB) rounded down to a
        multiple of 16 and clipped to 64–128 voxels (128 for up to 4-byte
        types, 96 for 8-byte), so overlapping filters and labelling have
        compact blocks.
    dtype : dtype-like

    Returns
    -------
    tuple of 3 ints
        Capped by ``shape`` along every axis.

    Examples
    --------
    >>> default_chunks((1800, 2048, 2048), "projections", "float32")
    (1, 2048, 2048)
    >>> default_chunks((180, 128, 128), "projections", "uint16")
    (180, 128, 128)
    >>> default_chunks((600, 1000, 1000), "volume", "uint8")
    (128, 128, 128)
    >>> default_chunks((40, 1000, 1000), "volume", "float64")
    (40, 96, 96)
    """
    z, y, x = _check_shape(shape, f"{purpose} array")
    itemsize = _check_dtype(dtype, f"{purpose} array").itemsize
    if purpose in ("projections", "sinograms"):
        frames = max(1, SLAB_CHUNK_BYTES // (y * x * itemsize))
        return min(frames, z), y, x
    if purpose == "volume":
        side = int((CUBE_CHUNK_BYTES / itemsize) ** (1 / 3) + 1e-6) // 16 * 16
        side = min(max(side, CUBE_SIDE[0]), CUBE_SIDE[1])
        return min(side, z), min(side, y), min(side, x)
    raise ValueError(f"purpose must be one of {', '.join(PURPOSE_DIMS)}; got {purpose!r}")


def default_compressor(dtype: Any, clevel: int = CLEVEL) -> BloscCodec:
    """Blosc with zstd: byte shuffle, or bit shuffle for one-byte types."""
    one_byte = np.dtype(dtype).itemsize == 1
    return BloscCodec(cname="zstd", clevel=clevel, shuffle="bitshuffle" if one_byte else "shuffle")


# ------------------------------------------------------------------ OME-Zarr levels


def coarser_level(data: da.Array) -> da.Array:
    """The next OME-Zarr level of a volume: 2× coarser along every axis.

    Floats are averaged over 2×2×2 voxels; integers and bools (labels, phases,
    masks) take every second voxel, so that every value is one the volume
    holds. An odd trailing voxel is dropped.

    Parameters
    ----------
    data : (Z, Y, X) dask.array.Array
        Each axis at least 2 voxels.

    Returns
    -------
    (Z // 2, Y // 2, X // 2) dask.array.Array
        Same dtype; lazy, built on ``data``'s own tasks (no second read).

    Examples
    --------
    >>> volume = da.from_array(np.arange(27.0).reshape(3, 3, 3), chunks=2)
    >>> coarser_level(volume).compute().ravel().tolist()
    [6.5]
    >>> coarser_level(volume.astype(np.uint8)).compute().ravel().tolist()
    [0]
    """
    if data.dtype.kind == "f":
        # the sum of eighths: np.mean's sum overflows near the dtype's largest value;
        # scaling by 2**-3 is exact, so elsewhere the result is np.mean's, bit for bit
        eighths = data * data.dtype.type(0.125)
        mean = da.coarsen(np.sum, eighths, dict.fromkeys(range(data.ndim), 2), trim_excess=True)
        return mean.astype(data.dtype)
    return data[tuple(slice(0, n - n % 2, 2) for n in data.shape)]


def level_transforms(voxel_size_um: float, level: int, dtype: Any) -> list[dict[str, Any]]:
    """NGFF coordinate transformations of a level, in µm.

    Voxel ``i`` of level 0 has its centre at ``i * voxel_size_um``. A level-1
    voxel of a float volume averages voxels ``2i`` and ``2i + 1`` (centre half
    a voxel further), one of a label volume is voxel ``2i`` itself.

    Examples
    --------
    >>> level_transforms(0.03, 1, "float32")[1]["translation"]
    [0.015, 0.015, 0.015]
    >>> len(level_transforms(0.03, 1, "uint8")), level_transforms(0.03, 0, "uint8")
    (1, [{'type': 'scale', 'scale': [0.03, 0.03, 0.03]}])
    """
    step = voxel_size_um * 2**level
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [step] * 3}]
    shift = (step - voxel_size_um) / 2 if np.dtype(dtype).kind == "f" else 0.0
    if shift:
        transforms.append({"type": "translation", "translation": [shift] * 3})
    return transforms


def ngff_metadata(
    name: str, voxel_size_um: float, dims: Sequence[str], dtype: Any, levels: int
) -> dict[str, Any]:
    """The ``"ome"`` attribute of a volume's image group (NGFF 0.5 multiscales).

    Parameters
    ----------
    name : str
        The volume's name (``"recon"``, ``"phases"``…), shown by viewers.
    voxel_size_um : float
        Level 0's voxel edge, µm.
    dims : (3,) str
        Axis names, ``("z", "y", "x")``; all spatial, in micrometres.
    dtype : dtype-like
        The volume's type (chooses how level 1 was made).
    levels : int
        How many levels the group holds (1 or 2).
    """
    datasets = [
        {
            "path": LEVELS[level],
            "coordinateTransformations": level_transforms(voxel_size_um, level, dtype),
        }
        for level in range(levels)
    ]
    axes = [{"name": dim, "type": "space", "unit": "micrometer"} for dim in dims]
    multiscale = {"name": name, "axes": axes, "datasets": datasets}
    return {"version": NGFF_VERSION, "multiscales": [multiscale]}


# ------------------------------------------------------------------------ stores


def open_store(
    location: Location | zarr.Group,
    mode: Mode = "r",
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> zarr.Group:
    """Open (or create) a campaign store.

    Parameters
    ----------
    location : path, fsspec URL or zarr.Group
        A folder (``"si-graphite.zarr"``), a URL (``"s3://bucket/c.zarr"``,
        ``"memory://c.zarr"``, which all calls in one process share), or a
        group already open (checked and returned).
    mode : {"r", "r+", "a"}
        Read only; read and write an existing store; read and write,
        creating the store if needed. There is no ``"w"``: delete a store
        explicitly to start over.
    storage_options : mapping, optional
        Passed to fsspec for URLs (credentials, endpoints).

    Returns
    -------
    zarr.Group
        The root group; a new store is created with the attribute
        ``{"debond": {"store_format": 2, "created_by": "debond <version>"}}``
        in its first write, the mark of a debond store (:func:`is_store`).

    Raises
    ------
    StoreNotFound
        (a ``FileNotFoundError``) if nothing is there and ``mode`` is not "a".
    StoreFormatError
        (a ``ValueError``) if the location holds a Zarr array, a Zarr group
        that is not a debond store, or a newer store format; with ``mode="a"``
        also a local file or a folder that is neither empty nor a debond
        store (:func:`foreign_content`), refused before anything is written.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if isinstance(location, zarr.Group):
        group = location
        where = store_location(group.store)
    else:
        where = os.fspath(location)
        found = None if mode != "a" or _is_url(where) else foreign_content(where)
        if found is not None:
            raise StoreFormatError(
                f"{where} is {found}; expected a new folder or a debond campaign store; "
                "nothing was written"
            )
        options = None if storage_options is None else dict(storage_options)
        marker: dict[str, Any] = {
            FORMAT_KEY: {"store_format": STORE_FORMAT, "created_by": f"debond {PACKAGE_VERSION}"}
        }
        try:
            group = zarr.open_group(
                where, mode=mode, zarr_format=3, storage_options=options, attributes=marker
            )
        except FileNotFoundError as error:
            raise StoreNotFound(
                f"no campaign store at {where}; open it with mode='a' to create one"
            ) from error
        except ContainsArrayError as error:
            raise StoreFormatError(f"{where} is a Zarr array, not a campaign store") from error
    return _check_format(group, where)


def _check_format(group: zarr.Group, where: str) -> zarr.Group:
    info = group.attrs.get(FORMAT_KEY)
    if info is None:
        raise StoreFormatError(
            f"{where} is a Zarr group but not a debond campaign store (no {FORMAT_KEY!r} "
            f"attribute); it holds {sorted(group.keys()) or 'nothing'}"
        )
    found = info.get("store_format") if isinstance(info, dict) else None
    if not isinstance(found, int) or found > STORE_FORMAT:
        raise StoreFormatError(
            f"{where}: store format {found!r} is not readable by debond {PACKAGE_VERSION}, "
            f"which reads formats up to {STORE_FORMAT}; upgrade debond"
        )
    return group


def _is_url(where: str) -> bool:
    return "://" in where


def is_store(path: Location) -> bool:
    """Whether a local folder is a debond campaign store.

    The one test: its root ``zarr.json`` is the metadata of a Zarr v3 group
    whose attributes hold the key ``"debond"``, which :func:`open_store`
    writes with the group itself. A store in a newer format is a store too
    (opening it says which format it is).

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> is_store(folder), is_store(open_store(f"{folder}/c.zarr", mode="a").store.root)
    (False, True)
    """
    try:
        metadata = json.loads((Path(path) / ZARR_JSON).read_bytes())
    except (OSError, ValueError):
        return False
    return (
        isinstance(metadata, dict)
        and metadata.get("zarr_format") == 3
        and metadata.get("node_type") == "group"
        and isinstance(metadata.get("attributes"), dict)
        and FORMAT_KEY in metadata["attributes"]
    )


def foreign_content(path: Location, shown: int = 5) -> str | None:
    """What a local path holds that a campaign store must not replace, or None.

    None when nothing is there, an empty folder, or a debond store
    (:func:`is_store`): the places a store may be created in or reopened.

    Parameters
    ----------
    path : path
        The store's folder.
    shown : int
        How many entries of a foreign folder to name.

    Returns
    -------
    str or None
        ``"a file"``, ``"a path under the file …"``, ``"a Zarr array"``, or
        ``"a folder that is not a debond campaign store, holding a.h5, b.tif,
        …"`` (likewise ``"a Zarr group (no 'debond' attribute) that is …"``).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> foreign_content(folder / "new.zarr"), foreign_content(folder)
    (None, None)
    >>> _ = (folder / "c00.h5").write_bytes(b"")
    >>> foreign_content(folder), foreign_content(folder / "c00.h5")
    ('a folder that is not a debond campaign store, holding c00.h5', 'a file')
    """
    where = Path(path)
    if not where.exists() and not where.is_symlink():
        above = next((p for p in where.absolute().parents if p.exists()), None)
        return None if above is None or above.is_dir() else f"a path under the file {above}"
    if not where.is_dir():
        return "a file" if where.is_file() else "something other than a folder"
    if is_store(where):
        return None
    entries = sorted(entry.name for entry in where.iterdir())
    if not entries:
        return None
    kind = "a folder"
    if ZARR_JSON in entries:
        try:
            node = json.loads((where / ZARR_JSON).read_bytes()).get("node_type")
        except (OSError, ValueError, AttributeError):
            node = None
        if node == "array":
            return "a Zarr array"
        if node == "group":
            kind = f"a Zarr group (no {FORMAT_KEY!r} attribute)"
            entries.remove(ZARR_JSON)
    held = ", ".join(entries[:shown]) + (", …" if len(entries) > shown else "")
    return f"{kind} that is not a debond campaign store, holding {held or 'nothing'}"


def _as_group(store: Location | zarr.Group, mode: Mode) -> zarr.Group:
    return store if isinstance(store, zarr.Group) else open_store(store, mode)


def _members(group: zarr.Group, kind: type[zarr.Group] | type[zarr.Array]) -> list[str]:
    """Names of the group's sub-groups or arrays, sorted.

    A write killed mid-way leaves zarr's temporary ``<name>.<uuid>.partial``
    file in a local store, which zarr 3.1 lists as a member and then fails to
    open (zarr-python issue 4161): a local store's folder is listed here
    without such files.
    """
    store = group.store
    if not isinstance(store, LocalStore):
        return sorted(group.group_keys() if kind is zarr.Group else group.array_keys())
    folder = Path(store.root) / group.path
    if not folder.is_dir():
        return []
    names = (
        entry.name
        for entry in folder.iterdir()
        if entry.is_dir() and not entry.name.endswith(".partial")
    )
    return sorted(name for name in names if isinstance(group.get(name), kind))


def list_samples(store: Location | zarr.Group) -> list[str]:
    """Sample ids in the store, sorted."""
    group = _as_group(store, "r")
    samples = group.get(SAMPLES)
    return _members(samples, zarr.Group) if isinstance(samples, zarr.Group) else []


def list_arrays(store: Location | zarr.Group, sample: str) -> list[str]:
    """Array names of a sample, sorted: its arrays and its volumes' image groups.

    Raises
    ------
    SampleNotFound
        (a ``KeyError``) naming the sample and the samples that exist.
    """
    node = _sample_group(_as_group(store, "r"), sample)
    images = [name for name in _members(node, zarr.Group) if _stored_array(node, name) is not None]
    return sorted(_members(node, zarr.Array) + images)


def _sample_group(group: zarr.Group, sample: str, wanted: str | None = None) -> zarr.Group:
    node = group.get(f"{SAMPLES}/{_check_key('sample', sample)}")
    if not isinstance(node, zarr.Group):
        looking = (
            ""
            if wanted is None
            else f" (looking for array {wanted!r}, {SAMPLES}/{sample}/{wanted})"
        )
        raise SampleNotFound(
            f"no sample {sample!r}{looking} in the store {store_location(group.store)}; "
            f"samples there: {', '.join(list_samples(group)) or 'none'}"
        )
    return node


def sample_attrs(store: Location | zarr.Group, sample: str) -> dict[str, Any]:
    """Attributes of a sample group (e.g. ``{"cycles": 3}``)."""
    return dict(_sample_group(_as_group(store, "r"), sample).attrs)


def set_sample_attrs(store: Location | zarr.Group, sample: str, attrs: Mapping[str, Any]) -> None:
    """Add or update attributes of ``samples/<sample>``, creating the group.

    Parameters
    ----------
    store : zarr.Group, path or URL
    sample : str
    attrs : mapping
        JSON-able values, e.g. ``{"cycles": 3}``; they appear in the attributes
        of every volume opened from the sample.
    """
    group = _as_group(store, "a")
    values = to_json_value(dict(attrs), f"attributes of sample {sample!r}")
    node = group.require_group(f"{SAMPLES}/{_check_key('sample', sample)}")
    node.attrs.update(values)


def get_array(store: Location | zarr.Group, sample: str, name: str) -> zarr.Array:
    """The Zarr array ``samples/<sample>/<name>``: a volume's level 0, or the array itself.

    Raises
    ------
    SampleNotFound, ArrayNotFound
        (``KeyError``) naming the sample and array and listing what exists.
    """
    group = _as_group(store, "r")
    path = _array_path(sample, name)
    node = _stored_array(_sample_group(group, sample, name), name)
    if node is None:
        arrays = list_arrays(group, sample)
        raise ArrayNotFound(
            f"no array {name!r} for sample {sample!r} ({path}) in the store "
            f"{store_location(group.store)}; arrays of {sample!r}: {', '.join(arrays) or 'none'}"
        )
    return node


def _require_complete(array: zarr.Array, where: str) -> None:
    if COMPLETE_KEY not in array.attrs:
        raise IncompleteArray(
            f"array {where} is not complete: its write was interrupted or is still running; "
            "rerun its stage, or pass allow_incomplete=True to read it as it is"
        )


def complete_array(store: Location | zarr.Group, sample: str, name: str) -> zarr.Array:
    """:func:`get_array`, for an array whose write completed: for tasks that read
    their own boxes from the store (what :func:`open_volume` checks, without the view).

    Raises
    ------
    SampleNotFound, ArrayNotFound
        As :func:`get_array`.
    IncompleteArray
        (a ``RuntimeError``) if the array has no completion marker.
    MetadataError
        (a ``ValueError``) if the array has no valid ``voxel_size_um``.
    """
    group = _as_group(store, "r")
    array = get_array(group, sample, name)
    where = f"{_array_path(sample, name)} in {store_location(group.store)}"
    _voxel_size_of(array, where)
    _require_complete(array, where)
    return array


def find_array(store: Location | zarr.Group, sample: str, name: str) -> zarr.Array | None:
    """Like :func:`get_array`, but None where the sample or the array does not exist."""
    try:
        return get_array(store, sample, name)
    except (SampleNotFound, ArrayNotFound):
        return None


def volume_status(
    store: Location | zarr.Group,
    sample: str,
    name: str,
    stage: str,
    parameters: Mapping[str, Any] | None,
    inputs: Mapping[str, InputLike] | None,
) -> Status:
    """:func:`~debond.storage.provenance.status` of ``samples/<sample>/<name>``."""
    try:
        array = find_array(store, sample, name)
    except StoreNotFound:
        array = None
    return status(array, stage, parameters, inputs)


# ------------------------------------------------------------------------ writing


def _scratch_path(sample: str, name: str) -> str:
    return f"{_array_path(sample, SCRATCH)}/{_check_key('array name', name)}"


def scratch_group(store: Location | zarr.Group, sample: str, name: str) -> zarr.Group:
    """An empty group ``samples/<sample>/scratch/<name>`` for what a stage writing
    ``name`` keeps between its passes, in the store every worker reads.

    What an earlier run left there (one stopped before it was done) is removed
    first. Remove it with :func:`remove_scratch` once the output is written.
    """
    group = _as_group(store, "a")
    path = _scratch_path(sample, name)
    if path in group:
        del group[path]
    return group.require_group(path)


def remove_scratch(store: Location | zarr.Group, sample: str, name: str) -> None:
    """Remove :func:`scratch_group`'s group (nothing when there is none), and the
    sample's scratch group when it is left empty."""
    group = _as_group(store, "a")
    path = _scratch_path(sample, name)
    if path in group:
        del group[path]
    parent = _array_path(sample, SCRATCH)
    node = group.get(parent)
    if isinstance(node, zarr.Group) and not list(node.keys()):
        del group[parent]


def create_volume(
    store: Location | zarr.Group,
    sample: str,
    name: str,
    shape: Sequence[int],
    dtype: Any,
    *,
    voxel_size_um: float,
    chunks: Sequence[int] | None = None,
    purpose: str | None = None,
    dims: Sequence[str] | None = None,
    attrs: Mapping[str, Any] | None = None,
    stage: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    inputs: Mapping[str, InputLike] | None = None,
    overwrite: bool = False,
    clevel: int = CLEVEL,
) -> zarr.Array:
    """Create an empty array ``samples/<sample>/<name>`` to be filled region by region.

    Nothing is stored but metadata; unwritten chunks read as 0 (False). Write
    regions aligned to ``array.chunks`` when writing in parallel, then call
    :func:`~debond.storage.provenance.mark_complete`.

    Parameters
    ----------
    store : zarr.Group, path or URL
        The campaign store (a location is opened with mode "a").
    sample : str
        Sample id, e.g. ``"c03"``.
    name : str
        Array name: ``projections, sinograms, recon, phases, particles`` or any
        other valid node name.
    shape : (3,) ints
        ``(z, y, x)`` for volumes (see ``purpose`` for the others); each >= 1.
    dtype : dtype-like
        bool, an integer or a float type.
    voxel_size_um : float
        Edge of a voxel (detector pixel for projections), µm, > 0.
    chunks : (3,) ints, optional
        Chunk shape; need not divide ``shape`` and is capped by it. Default
        :func:`default_chunks`.
    purpose : {"projections", "sinograms", "volume"}, optional
        Chooses default chunks and dims; default ``name`` if it is
        "projections" or "sinograms", else "volume".
    dims : (3,) str, optional
        Dimension names stored in the Zarr metadata; default by purpose
        (:data:`PURPOSE_DIMS`).
    attrs : mapping, optional
        Further JSON-able attributes (e.g. ``{"angles_rad": [...]}``); the keys
        of :data:`RESERVED_ATTRS` are set by this function.
    stage, parameters, inputs : optional
        Provenance of the output (see :mod:`debond.storage.provenance`);
        recorded now, before any chunk. Without ``stage`` nothing is
        recorded and the array cannot be marked complete until
        ``record(array, make_provenance(...))`` is called.
    overwrite : bool
        Replace an existing array (its completion marker is removed first,
        then the array with all its chunks). Default False. A complete array
        with damaged chunks (:func:`~debond.storage.provenance.chunk_damage`)
        is replaced by one marked repaired, which changes its identity as an
        input, so that what was made from it is redone.
    clevel : int
        zstd level, 1–9.

    Returns
    -------
    zarr.Array

    Raises
    ------
    ArrayExists
        (a ``FileExistsError``) if the array exists and ``overwrite`` is False.
    ValueError, TypeError
        For invalid arguments, naming the argument; raised before anything is
        written. ``FileNotFoundError`` if a file input does not exist.
    """
    path = _array_path(sample, name)
    shape = _check_shape(shape, f"array {path}")
    dtype = _check_dtype(dtype, f"array {path}")
    voxel = _check_voxel_size(voxel_size_um, f"array {path}")
    purpose = _check_purpose(purpose, name)
    if chunks is None:
        chunks = default_chunks(shape, purpose, dtype)
    else:
        given = _check_chunks(chunks, f"array {path}")
        chunks = (min(given[0], shape[0]), min(given[1], shape[1]), min(given[2], shape[2]))
    dims = PURPOSE_DIMS[purpose] if dims is None else _check_dims(dims, f"array {path}")
    extra = to_json_value(dict(attrs or {}), f"attrs of {path}")
    clash = [key for key in extra if key in RESERVED_ATTRS]
    if clash:
        raise ValueError(f"attrs of {path}: {clash[0]!r} is set by create_volume itself")
    if stage is None and (parameters or inputs):
        raise ValueError(f"array {path}: parameters and inputs need a stage to be recorded")
    provenance = None if stage is None else make_provenance(stage, parameters, inputs)

    group = _as_group(store, "a")
    existing = _stored_array(group, path)
    repaired = None
    if existing is not None:
        if not overwrite:
            raise ArrayExists(
                f"array {path} exists in {store_location(group.store)} (shape {existing.shape}, "
                f"{'complete' if COMPLETE_KEY in existing.attrs else 'incomplete'}); "
                "pass overwrite=True to replace it"
            )
        # written over a damaged array: what was made from it is redone (array_identity)
        repaired = now() if chunk_damage(existing) is not None else None
        clear_completion(existing)
    if path in group:
        del group[path]  # an image group goes with all its levels

    attributes: dict[str, Any] = {"voxel_size_um": voxel, "purpose": purpose, **extra}
    if repaired is not None:
        attributes[REPAIRED_KEY] = repaired
    if provenance is not None:
        attributes[PROVENANCE_KEY] = provenance.to_json()
    options: dict[str, Any] = {
        "dtype": dtype,
        # a checksum after compression: a chunk whose bytes changed fails to decode
        "compressors": [default_compressor(dtype, clevel), CHECKSUM_CODEC],
        "fill_value": False if dtype.kind == "b" else 0,
        "dimension_names": dims,
        # every chunk is stored, even one of fill values: a missing chunk is then
        # damage that the completion record names (debond.storage.integrity)
        "config": {"write_empty_chunks": True},
    }
    if purpose != "volume":
        return group.create_array(
            path, shape=shape, chunks=chunks, attributes=attributes, **options
        )
    _mark_format(group)
    image = group.create_group(
        path, attributes={OME_KEY: ngff_metadata(name, voxel, dims, dtype, levels=1)}
    )
    return image.create_array(
        LEVELS[0], shape=shape, chunks=chunks, attributes=attributes, **options
    )


def _stored_array(group: zarr.Group, path: str) -> zarr.Array | None:
    """The array at ``path``: itself (format 1, projections) or an image's level 0.

    None where nothing is there, or an image group lost its level 0 (a write
    killed between creating the two).
    """
    node = group.get(path)
    if isinstance(node, zarr.Group):
        node = node.get(LEVELS[0])
    return node if isinstance(node, zarr.Array) else None


def _mark_format(group: zarr.Group) -> None:
    """Raise a format-1 store's mark to :data:`STORE_FORMAT` before its first image."""
    root = zarr.open_group(group.store, mode="r+", path="")
    info = dict(cast(dict[str, Any], root.attrs.asdict()).get(FORMAT_KEY) or {})
    if info.get("store_format", STORE_FORMAT) < STORE_FORMAT:
        root.attrs[FORMAT_KEY] = {**info, "store_format": STORE_FORMAT}


def _add_coarser_level(level0: zarr.Array) -> zarr.Array | None:
    """Create level 1 beside an image's level 0 and list it in the NGFF metadata.

    None where an axis is under 2 voxels (no coarser level) or ``level0`` is
    not in an image group.
    """
    if not level0.path.endswith(f"/{LEVELS[0]}") or min(level0.shape) < 2:
        return None
    image = zarr.open_group(level0.store, mode="r+", path=level0.path.rsplit("/", 1)[0])
    if OME_KEY not in image.attrs:
        return None
    attrs = cast(dict[str, Any], level0.attrs.asdict())
    dims = cast(tuple[str, str, str], getattr(level0.metadata, "dimension_names", None))
    name = cast(dict[str, Any], image.attrs.asdict())[OME_KEY]["multiscales"][0]["name"]
    voxel = float(attrs["voxel_size_um"])
    level1 = image.create_array(
        LEVELS[1],
        shape=tuple(n // 2 for n in level0.shape),
        chunks=tuple(max(1, c // 2) for c in level0.chunks),
        dtype=level0.dtype,
        compressors=level0.compressors,
        fill_value=level0.fill_value,
        dimension_names=dims,
        attributes={"voxel_size_um": 2 * voxel, "purpose": "volume"},
        config={"write_empty_chunks": True},
    )
    image.attrs[OME_KEY] = ngff_metadata(name, voxel, dims, level0.dtype, levels=2)
    return level1


@dataclass(frozen=True, eq=False)
class PendingWrite:
    """An array created with its provenance, whose chunks a Dask task will write.

    Compute :attr:`task` (on any scheduler, alone or together with other
    work), then call :meth:`finish`; until then the array is incomplete, so an
    interrupted write is never taken for a finished one.

    Attributes
    ----------
    array : zarr.Array
        The created array (provenance recorded, no completion marker).
    task : dask.delayed.Delayed
        Stores every chunk when computed (one task per Zarr chunk).
    """

    array: zarr.Array
    task: Delayed

    def finish(self, attrs: Mapping[str, Any] | None = None) -> zarr.Array:
        """Add ``attrs`` (results known only after the write) and mark the array complete.

        Call it only once :attr:`task` has been computed without error.
        """
        if attrs:
            extra = to_json_value(dict(attrs), f"attrs of {self.array.path}")
            clash = [key for key in extra if key in RESERVED_ATTRS]
            if clash:
                raise ValueError(f"attrs of {self.array.path}: {clash[0]!r} is reserved")
            self.array.attrs.update(extra)
        mark_complete(self.array)
        return self.array


def _check_data(data: Any, sample: str, name: str) -> None:
    if not isinstance(data, np.ndarray | da.Array):
        raise TypeError(
            f"array {_array_path(sample, name)}: data must be a numpy or dask array; "
            f"got {type(data).__name__}"
        )
    if isinstance(data, da.Array) and any(math.isnan(n) for c in data.chunks for n in c):
        raise ValueError(
            f"array {_array_path(sample, name)}: the dask array has unknown chunk sizes; "
            "call .compute_chunk_sizes() first"
        )


def prepare_write(
    store: Location | zarr.Group,
    sample: str,
    name: str,
    data: np.ndarray[Any, Any] | da.Array,
    *,
    voxel_size_um: float,
    stage: str,
    parameters: Mapping[str, Any] | None = None,
    inputs: Mapping[str, InputLike] | None = None,
    purpose: str | None = None,
    chunks: Sequence[int] | None = None,
    dims: Sequence[str] | None = None,
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> PendingWrite:
    """Create ``samples/<sample>/<name>`` now and return the lazy write of ``data``.

    The deferred form of :func:`write_volume` (same arguments), for runners
    that compute the writes of many arrays together on a cluster and mark
    each complete as it finishes (:meth:`PendingWrite.finish`).

    Returns
    -------
    PendingWrite
        The created array and the task that fills it.
    """
    _check_data(data, sample, name)
    array = create_volume(
        store,
        sample,
        name,
        data.shape,
        data.dtype,
        voxel_size_um=voxel_size_um,
        chunks=chunks,
        purpose=purpose,
        dims=dims,
        attrs=attrs,
        stage=stage,
        parameters=parameters,
        inputs=inputs,
        overwrite=overwrite,
    )
    lazy = data if isinstance(data, da.Array) else da.from_array(data, chunks=array.chunks)
    # One task per Zarr chunk: no two tasks ever write the same chunk, on any
    # scheduler (dask.array.to_zarr would rechunk to "auto" multiples, which a
    # small array.chunk-size setting can misalign).
    level0 = lazy.rechunk(array.chunks)
    sources, targets = [level0], [cast(Any, array)]
    level1 = _add_coarser_level(array)
    if level1 is not None:
        # from level 0's own chunks, in the same graph: one pass over the data
        sources.append(coarser_level(level0).rechunk(level1.chunks))
        targets.append(level1)
    task = da.store(sources, targets, lock=False, compute=False)
    return PendingWrite(array, task)


def write_volume(
    store: Location | zarr.Group,
    sample: str,
    name: str,
    data: np.ndarray[Any, Any] | da.Array,
    **options: Any,
) -> zarr.Array:
    """Store a whole volume with its provenance and mark it complete.

    Parameters
    ----------
    store, sample, name
        As for :func:`create_volume`.
    data : (Z, Y, X) numpy.ndarray or dask.array.Array
        bool, integer or float. A Dask array is rechunked to the array's
        chunks and stored by its own tasks (``dask.array.Array.store``, one task per
        Zarr chunk) on the current scheduler; nothing that scales with the
        volume passes through the caller. It must not read the array it
        replaces.
    **options
        The keywords of :func:`prepare_write`: ``voxel_size_um`` and
        ``stage`` (required), ``parameters`` (the stage's JSON-able
        parameters), ``inputs`` (name -> path, URL, ``zarr.Array`` or identity,
        see :func:`~debond.storage.provenance.identify`), ``purpose``,
        ``chunks``, ``dims``, ``attrs``, ``overwrite``.

    Returns
    -------
    zarr.Array
        The stored array, marked complete.
    """
    pending = prepare_write(store, sample, name, data, **options)
    # NumPy data is already here: write it in this process, not on a cluster.
    dask.compute(pending.task, scheduler="sync" if isinstance(data, np.ndarray) else None)
    return pending.finish()


# ------------------------------------------------------------------------ reading


def _voxel_size_of(array: zarr.Array, where: str) -> float:
    value = array.attrs.get("voxel_size_um")
    if value is None:
        raise MetadataError(
            f"array {where} has no 'voxel_size_um' attribute; every volume needs its voxel "
            "size in µm (write it with create_volume/write_volume(voxel_size_um=...))"
        )
    try:
        return _check_voxel_size(value, f"array {where}")
    except ValueError as error:
        raise MetadataError(str(error)) from error


def _coordinates(
    dims: tuple[str, ...], shape: tuple[int, ...], voxel: float, attrs: Mapping[str, Any]
) -> dict[str, xr.Variable]:
    coords = {}
    for dim, n in zip(dims, shape, strict=True):
        if dim in SPATIAL_DIMS:
            values = np.arange(n, dtype=np.float64) * voxel
            coords[dim] = xr.Variable(dim, values, {"units": "um", "long_name": f"{dim} (µm)"})
        elif dim == "angle" and len(attrs.get("angles_rad") or ()) == n:
            values = np.asarray(attrs["angles_rad"], dtype=np.float64)
            coords[dim] = xr.Variable(dim, values, {"units": "rad"})
    return coords


def _to_data_array(
    group: zarr.Group, sample: str, name: str, allow_incomplete: bool
) -> xr.DataArray:
    array = get_array(group, sample, name)
    where = f"{_array_path(sample, name)} in {store_location(group.store)}"
    stored = dict(array.attrs)
    voxel = _voxel_size_of(array, where)
    if not allow_incomplete:
        _require_complete(array, where)
    names = getattr(array.metadata, "dimension_names", None)
    purpose = stored.get("purpose")
    default = PURPOSE_DIMS.get(purpose if isinstance(purpose, str) else "", SPATIAL_DIMS)
    dims = tuple(str(d) for d in names) if names and None not in names else default
    provenance = cast(dict[str, Any], stored.get(PROVENANCE_KEY) or {})
    marker = cast(dict[str, Any], stored.get(COMPLETE_KEY) or {}).get("at")
    token = tokenize(str(group.store), sample, name, provenance.get("created"), marker)
    data = da.from_zarr(array, name=f"{name}-{token}")
    attrs = {"sample": sample, **sample_attrs(group, sample), **stored}
    attrs |= {"stage": provenance.get("stage"), "parameters": provenance.get("parameters")}
    return xr.DataArray(
        data,
        dims=dims,
        coords=_coordinates(dims, array.shape, voxel, stored),
        name=name,
        attrs=attrs,
    )


def open_volume(
    store: Location | zarr.Group,
    sample: str,
    name: str,
    *,
    allow_incomplete: bool = False,
) -> xr.DataArray:
    """A stored array as a lazy ``xarray.DataArray`` with coordinates in µm.

    Parameters
    ----------
    store : zarr.Group, path or URL
        The campaign store (a location is opened read-only).
    sample, name : str
        Sample id and array name.
    allow_incomplete : bool
        Read an array that has no completion marker (e.g. to watch a running
        stage). Default False.

    Returns
    -------
    xarray.DataArray
        Backed by a Dask array with the stored chunks (``dask.array.from_zarr``;
        nothing is read until computed). Dims ``("z", "y", "x")`` for volumes
        (see the module docstring for projections and sinograms); coordinates
        ``i * voxel_size_um`` µm (voxel centres, the first at 0) with
        ``units = "um"``. Attributes: ``sample``, the sample's attributes, the
        array's (``voxel_size_um``, ``purpose``, ``provenance``, ``complete``
        and any others) and, for convenience, ``stage`` and ``parameters``
        from the provenance.

    Raises
    ------
    SampleNotFound, ArrayNotFound
        (``KeyError``) naming the sample and array and listing what exists.
    IncompleteArray
        (a ``RuntimeError``) if the array is not complete and
        ``allow_incomplete`` is False.
    MetadataError
        (a ``ValueError``) if the array has no valid ``voxel_size_um``.
    """
    return _to_data_array(_as_group(store, "r"), sample, name, allow_incomplete)


def open_dataset(
    store: Location | zarr.Group,
    sample: str,
    names: Sequence[str] | None = None,
    *,
    allow_incomplete: bool = False,
) -> xr.Dataset:
    """Several arrays of one sample as a lazy ``xarray.Dataset``.

    Parameters
    ----------
    store : zarr.Group, path or URL
    sample : str
    names : sequence of str, optional
        The arrays; default every array of the sample whose purpose is
        "volume" (recon, phases, particles …).
    allow_incomplete : bool
        As for :func:`open_volume`.

    Returns
    -------
    xarray.Dataset
        One variable per array (each as from :func:`open_volume`), shared
        coordinates in µm; attributes ``sample`` and the sample's attributes.

    Raises
    ------
    ValueError
        If the arrays differ in shape, dims or voxel size (listing each), or
        there are none. The errors of :func:`open_volume`.
    """
    group = _as_group(store, "r")
    if names is None:
        names = [
            name
            for name in list_arrays(group, sample)
            if get_array(group, sample, name).attrs.get("purpose", "volume") == "volume"
        ]
    if not names:
        raise ValueError(
            f"sample {sample!r} has no volume arrays to put in a dataset; arrays there: "
            f"{', '.join(list_arrays(group, sample)) or 'none'}"
        )
    arrays = [_to_data_array(group, sample, name, allow_incomplete) for name in names]
    layouts = {(a.dims, a.shape, a.attrs["voxel_size_um"]) for a in arrays}
    if len(layouts) > 1:
        found = "; ".join(
            f"{a.name}: dims {a.dims}, shape {a.shape}, voxel {a.attrs['voxel_size_um']} µm"
            for a in arrays
        )
        raise ValueError(
            f"sample {sample!r}: arrays in one dataset must share dims, shape and voxel size; "
            f"found {found}; pass names= with arrays that match"
        )
    return xr.Dataset(
        {str(a.name): a for a in arrays},
        attrs={"sample": sample, **sample_attrs(group, sample)},
    )
