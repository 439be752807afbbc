"""``debond init``: a commented campaign file for the raw files found in a folder.

:func:`find_raw_files` walks a folder and recognises what ``debond run`` reads,
by content, with the readers the stages use:

- Data Exchange HDF5 files (``*.h5``, ``*.hdf5``, ``*.hdf``), opened and
  checked by :func:`debond.pipeline.ingest.read_data_exchange` (shapes,
  angles, flats and darks); the voxel size where the file records the
  sample's pixel (:data:`PIXEL_DATASETS`);
- folders of TIFF projections (the ``[ingest]`` default patterns
  ``proj_*.tif``, ``flat_*.tif``, ``dark_*.tif`` and ``theta.txt``), checked by
  :func:`debond.pipeline.ingest.read_tiff_stack`; a pixel size in their tags
  is only offered (a camera tags its own pixel, not the sample's);
- 3-D TIFF files of a few grey values: segmentations, which a sample brings
  as ``phases`` and starts at ``label``;
- SEM images (2-D TIFF files), read by :func:`debond.pipeline.sem.read_sem`
  with their pixel size from the resolution tags; an image joins the sample
  whose id starts its name (``c03_0.tif``, as ``debond synth`` names them) or
  names its folder, and the other images are samples of SEM images alone;
- cycling data: a CSV with the columns ``cycle`` and ``charge_capacity_mAh``,
  checked by :func:`debond.model.read_cycling`.

:func:`campaign_text` writes the campaign file with every parameter at its
default and its help as a comment (:func:`debond.campaign_file.campaign_toml`),
and each value only the user knows (cycles, a voxel size the file does not
give, phase codes, the electrode mass, the size prior) as a ``# CHOOSE:``
line in place of its key, never a placeholder value: what needs the key
(loading the file, the particle table, the fit) says so by name until it is
set. :func:`write_init` never overwrites a file.
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import pandas as pd
import tifffile
import tomlkit
from tomlkit.items import AoT, Table

from debond.campaign_file import campaign_toml
from debond.model import read_cycling
from debond.pipeline.ingest import IngestError, read_data_exchange, read_tiff_stack
from debond.pipeline.sem import read_sem
from debond.schema import section_classes, unsafe_segment
from debond.stages.ingest import Parameters as IngestParameters

__all__ = [
    "CHOOSE",
    "PIXEL_DATASETS",
    "TO_LOAD",
    "Choice",
    "CyclingFile",
    "Found",
    "InitError",
    "InitResult",
    "Scan",
    "SemImage",
    "campaign_text",
    "data_exchange_pixel_um",
    "find_raw_files",
    "write_init",
]

#: The mark of a value the user must set, at the start of its comment line.
CHOOSE = "CHOOSE:"

#: Data Exchange datasets that record the effective pixel (the voxel edge), tried in order.
PIXEL_DATASETS = ("measurement/instrument/detection_system/objective/resolution",)

#: Unit attribute of a length → µm per unit (absent: µm, the Data Exchange unit).
_LENGTH_UM = {
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "mm": 1e3,
    "m": 1e6,
}

_HDF5 = {".h5", ".hdf5", ".hdf"}
_TIFF = {".tif", ".tiff"}
_CSV = {".csv"}

#: A 3-D TIFF with at most this many grey values in its first slice is a segmentation.
MAX_PHASE_VALUES = 8

#: What init looks for, in words (the error when it finds nothing).
LOOKED_FOR = (
    "Data Exchange HDF5 files (*.h5, *.hdf5, *.hdf with exchange/data, data_white, "
    "data_dark, theta); folders of TIFF projections (proj_*.tif, flat_*.tif, dark_*.tif, "
    "theta.txt); 3-D TIFF segmentations (a few grey values); SEM images (2-D TIFF); "
    "a cycling CSV (columns cycle, charge_capacity_mAh)"
)


class InitError(ValueError):
    """``debond init`` cannot write a campaign file; the message names the file or folder."""


# ----------------------------------------------------------------- what is found


@dataclass(frozen=True)
class Scan:
    """One sample's 3-D images: raw projections (``txm``) or a segmentation (``phases``).

    Attributes
    ----------
    id : str
        The sample id: the file's stem or the folder's name, made a safe id.
    path : Path
        The file (Data Exchange, segmentation) or the TIFF-stack folder.
    key : {"txm", "phases"}
        The campaign key that names `path`.
    summary : str
        What the file holds, one line (shapes, angles, flats and darks).
    voxel_size_um : float or None
        The voxel edge where the file records it, µm.
    voxel_note : str
        Where `voxel_size_um` was read, or what was looked for.
    grey_values : tuple of int
        A segmentation's grey values (in its first slice).
    """

    id: str
    path: Path
    key: Literal["txm", "phases"]
    summary: str
    voxel_size_um: float | None = None
    voxel_note: str = ""
    grey_values: tuple[int, ...] = ()


@dataclass(frozen=True)
class SemImage:
    """One SEM image: its shape and its pixel size from the TIFF tags (µm), if any."""

    path: Path
    shape: tuple[int, int]
    pixel_size_um: float | None
    note: str = ""


@dataclass(frozen=True)
class CyclingFile:
    """A cycling CSV: its cycles and first and last charge capacities (mAh)."""

    path: Path
    cycles: int
    first_mAh: float
    last_mAh: float


@dataclass(frozen=True)
class Found:
    """The raw files of a folder, as :func:`find_raw_files` recognised them.

    Attributes
    ----------
    folder : Path
    scans : tuple of Scan
        In natural order of their paths.
    sem : tuple of SemImage
    cycling : tuple of CyclingFile
    skipped : tuple of (Path, str)
        Files of a recognised kind that cannot be used, and why.
    """

    folder: Path
    scans: tuple[Scan, ...] = ()
    sem: tuple[SemImage, ...] = ()
    cycling: tuple[CyclingFile, ...] = ()
    skipped: tuple[tuple[Path, str], ...] = ()


#: A choice without which the campaign file does not load.
TO_LOAD = "loading the file"


@dataclass(frozen=True)
class Choice:
    """A value left to the user: where (``"sample c03"``, ``"material"``), its key, and
    what needs it (:data:`TO_LOAD`, ``"the particle table and the fit"``, …; ``""``
    when it is optional)."""

    where: str
    key: str
    needed_by: str = ""

    @property
    def required(self) -> bool:
        """Whether the campaign file does not load until it is set."""
        return self.needed_by == TO_LOAD


@dataclass(frozen=True)
class InitResult:
    """What :func:`write_init` wrote: the file, what it found and the choices left open."""

    path: Path
    found: Found
    choices: tuple[Choice, ...] = field(default_factory=tuple)


# ----------------------------------------------------------------- finding


def _natural(path: str | os.PathLike[str]) -> list[Any]:
    """Sort key: digit runs compare as numbers (c2 before c10)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", os.fspath(path))]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _pixel_um(value: Any, units: Any) -> float | None:
    """A length dataset's value in µm; None when it is not one finite positive number."""
    array = np.asarray(value, dtype=np.float64) if np.size(value) == 1 else None
    if array is None:
        return None
    unit = units.decode() if isinstance(units, bytes) else units
    scale = _LENGTH_UM.get(str(unit).strip().lower()) if unit is not None else 1.0
    number = float(array.reshape(())) * scale if scale is not None else math.nan
    return number if math.isfinite(number) and number > 0 else None


def data_exchange_pixel_um(path: Path) -> tuple[float | None, str]:
    """The voxel edge a Data Exchange file records (µm), and where it was read.

    Returns
    -------
    (float or None, str)
        The size from the first of :data:`PIXEL_DATASETS` that holds one
        finite positive length (units attribute µm, nm, mm or m; µm when
        absent), and ``"<dataset> of <file>"``; or None and what was looked for.
    """
    with h5py.File(path, "r") as f:
        for name in PIXEL_DATASETS:
            node = f.get(name)
            if isinstance(node, h5py.Dataset):
                size = _pixel_um(node[()], node.attrs.get("units"))
                if size is not None:
                    return size, f"{name} of {path.name}"
    return None, f"{path.name} records none; looked for {', '.join(PIXEL_DATASETS)}"


def _tags_pixel_um(path: Path) -> tuple[float | None, str]:
    """The pixel edge of a 2-D TIFF from its resolution tags, as the SEM stage reads it,
    or None and why (the reader's words, without the path)."""
    try:
        _, pixel = read_sem(path)
    except IngestError as error:
        return None, _first_line(error).removeprefix(f"{path}: ")
    return pixel, f"the resolution tags of {path.name}"


def _degrees(theta_rad: np.ndarray) -> str:
    low, high = np.degrees([theta_rad.min(), theta_rad.max()])
    return f"θ {low:.4g}° to {high:.4g}°"


def _data_exchange(path: Path) -> Scan:
    raw = read_data_exchange(path)
    n, rows, columns = raw.data.shape
    size, note = data_exchange_pixel_um(path)
    summary = (
        f"Data Exchange HDF5: {n} projections of {rows} × {columns} px, {_degrees(raw.theta_rad)}, "
        f"{raw.flats.shape[0]} flats, {raw.darks.shape[0]} darks"
    )
    return Scan(path.stem, path, "txm", summary, size, note)


def _tiff_stack(folder: Path, patterns: Mapping[str, str]) -> Scan:
    raw = read_tiff_stack(
        folder,
        projections=patterns["tiff_projections"],
        flats=patterns["tiff_flats"],
        darks=patterns["tiff_darks"],
        theta_file=patterns["tiff_theta_file"],
    )
    n, rows, columns = raw.data.shape
    first = sorted(folder.glob(patterns["tiff_projections"]), key=_natural)[0]
    # A camera records its own pixel in the tags, not the sample's (that one over the
    # magnification): a tagged size is offered, never written.
    size, _ = _tags_pixel_um(first)
    note = f"{first.name}'s resolution tags give " + (
        "none" if size is None else f"{size:.6g} µm: the sample's voxel or the camera's pixel?"
    )
    summary = (
        f"TIFF stack: {n} projections of {rows} × {columns} px, {_degrees(raw.theta_rad)}, "
        f"{raw.flats.shape[0]} flats, {raw.darks.shape[0]} darks"
    )
    return Scan(folder.name, folder, "txm", summary, None, note)


def _tiff_layout(path: Path) -> tuple[int, tuple[int, ...], np.ndarray]:
    """Pages, the shape of the first series and the first page's pixels of a TIFF file."""
    with tifffile.TiffFile(path) as tif:
        return len(tif.pages), tuple(tif.series[0].shape), np.asarray(tif.pages.first.asarray())


def _segmentation(path: Path, shape: tuple[int, ...], first: np.ndarray) -> Scan:
    """A 3-D TIFF of a few integer grey values (judged on its first slice) as a
    segmentation; anything else is refused with what it looks like."""
    size = " × ".join(map(str, shape))
    values = np.unique(first) if np.issubdtype(first.dtype, np.integer) else None
    if len(shape) != 3 or values is None or values.size > MAX_PHASE_VALUES:
        found = f"{first.dtype} values" if values is None else f"{values.size} grey values"
        raise IngestError(
            f"a {size} image of {found} in its first slice; expected a segmentation (3-D, "
            f"integers, at most {MAX_PHASE_VALUES} values) or raw projections (Data Exchange "
            "HDF5, or a folder of one TIFF per projection)"
        )
    summary = f"segmentation: {size} voxels, {first.dtype}"
    note = f"{path.name} records none"
    return Scan(path.stem, path, "phases", summary, None, note, tuple(int(v) for v in values))


def _cycling(path: Path) -> CyclingFile | str:
    """A cycling CSV, or why the CSV is not one."""
    try:
        columns = list(pd.read_csv(path, nrows=0).columns)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        return f"cannot be read as CSV ({_first_line(error)})"
    if "cycle" not in columns or "charge_capacity_mAh" not in columns:
        return (
            f"columns {', '.join(map(str, columns)) or 'none'}; a cycling file has the columns "
            "cycle, charge_capacity_mAh"
        )
    try:
        table = read_cycling(path)
    except (ValueError, FileNotFoundError) as error:
        return _first_line(error)
    capacity = table["charge_capacity_mAh"].to_numpy()
    return CyclingFile(path, len(table), float(capacity[0]), float(capacity[-1]))


def _safe_id(name: str, taken: set[str]) -> str:
    """A sample id from a file or folder name: unsafe characters become '_', ids unique."""
    text = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip("_.") or "sample"
    base, n = text, 2
    while text in taken or unsafe_segment(text) is not None:
        text, n = f"{base}-{n}", n + 1
    taken.add(text)
    return text


def _named(scan: Scan, taken: set[str]) -> Scan:
    """The scan with a safe, unique sample id made from its file or folder name."""
    return replace(scan, id=_safe_id(scan.id, taken))


def _pruned(name: str) -> bool:
    """Folders never walked: hidden ones and Zarr stores (a campaign's outputs)."""
    return name.startswith(".") or name.endswith(".zarr")


def _stack_patterns() -> dict[str, str]:
    """The ``[ingest]`` defaults that name a TIFF stack's files."""
    fields = IngestParameters.model_fields
    return {key: str(fields[key].default) for key in fields if key.startswith("tiff_")}


def _why(error: BaseException, path: Path) -> str:
    """A reader's error in one line, without the path it starts with."""
    return _first_line(error).removeprefix(f"{path}: ")


def _stack_files(folder: Path, patterns: Mapping[str, str]) -> set[str]:
    """The names of a TIFF stack's files in `folder` (empty when it holds no projection)."""
    if not any(folder.glob(patterns["tiff_projections"])):
        return set()
    roles = ("tiff_projections", "tiff_flats", "tiff_darks")
    names = {p.name for role in roles for p in folder.glob(patterns[role])}
    return names | {patterns["tiff_theta_file"]}


def _tiff(path: Path) -> Scan | SemImage:
    """A TIFF file: a 3-D segmentation, or a 2-D SEM image with its pixel size if tagged."""
    pages, shape, first = _tiff_layout(path)
    if pages > 1 or (len(shape) > 2 and shape[-1] not in (3, 4)):  # not RGB(A)
        return _segmentation(path, shape, first)
    size, note = _tags_pixel_um(path)
    if size is None:  # without a pixel size the image may still be usable: is it?
        read_sem(path, 1.0)
    return SemImage(path, (int(shape[0]), int(shape[1])), size, note)


def _read(path: Path) -> Scan | SemImage | CyclingFile | str | None:
    """What a file is to a run, checked by the reader the run uses; why it cannot be
    used (str); or None for a file of a kind init does not read."""
    suffix = path.suffix.lower()
    try:
        if suffix in _HDF5:
            return _data_exchange(path)
        if suffix in _TIFF:
            return _tiff(path)
        if suffix in _CSV:
            return _cycling(path)
    except (IngestError, OSError, ValueError, tifffile.TiffFileError) as error:
        return _why(error, path)
    return None


def find_raw_files(folder: str | os.PathLike[str]) -> Found:
    """Every raw file under `folder` that ``debond run`` can read, checked as it reads them.

    Parameters
    ----------
    folder : path-like
        Walked recursively; hidden folders and Zarr stores are left out.

    Returns
    -------
    Found
        Scans (raw projections or segmentations), SEM images, cycling CSVs,
        and the files of these kinds that could not be used, with why.

    Raises
    ------
    InitError
        `folder` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise InitError(f"{root} {what}; expected the folder that holds the raw files")
    patterns = _stack_patterns()
    taken: set[str] = set()
    scans: list[Scan] = []
    sem: list[SemImage] = []
    cycling: list[CyclingFile] = []
    skipped: list[tuple[Path, str]] = []
    for here, folders, names in os.walk(root):
        folders[:] = sorted((d for d in folders if not _pruned(d)), key=_natural)
        place = Path(here)
        stack = _stack_files(place, patterns)
        if stack:
            try:
                scans.append(_named(_tiff_stack(place, patterns), taken))
            except IngestError as error:
                skipped.append((place, _why(error, place)))
        for name in sorted(names, key=_natural):
            if name in stack or name.startswith("."):
                continue
            found = _read(place / name)
            if isinstance(found, Scan):
                scans.append(_named(found, taken))
            elif isinstance(found, SemImage):
                sem.append(found)
            elif isinstance(found, CyclingFile):
                cycling.append(found)
            elif isinstance(found, str):
                skipped.append((place / name, found))
    return Found(root, tuple(scans), tuple(sem), tuple(cycling), tuple(skipped))


# ----------------------------------------------------------------- writing


def _relative(path: Path, base: Path) -> str:
    """`path` relative to the campaign file's folder, with '/' (as the campaign reads it)."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix()


def _owner(image: Path, ids: Sequence[str]) -> str | None:
    """The sample an SEM image belongs to: the longest id that starts its name
    (followed by '_', '-', '.' or ' ') or names its folder."""
    stem = image.stem

    def owns(sample_id: str) -> bool:
        if stem == sample_id or image.parent.name == sample_id:
            return True
        return stem.startswith(sample_id) and stem[len(sample_id)] in "_-. "

    matches = [sample_id for sample_id in ids if owns(sample_id)]
    return max(matches, key=len) if matches else None


def _sem_patterns(images: Sequence[Path], sample_id: str, base: Path) -> list[str]:
    """Glob patterns for a sample's SEM images: one pattern that matches exactly them
    (``sem/c03_*.tif``), else each file's path escaped."""
    exact = {Path(os.path.abspath(p)) for p in images}
    folders = {p.parent for p in images}
    suffixes = {p.suffix for p in images}
    if len(folders) == 1 and len(suffixes) == 1:
        folder = _relative(folders.pop(), base)
        suffix = glob.escape(suffixes.pop())
        prefix = "" if folder == "." else glob.escape(folder) + "/"
        candidates = [prefix + glob.escape(sample_id) + sep + "*" + suffix for sep in "_-."]
        candidates.append(prefix + "*" + suffix)
        for pattern in candidates:
            matched = {Path(os.path.abspath(base / m)) for m in glob.glob(pattern, root_dir=base)}
            if matched == exact:
                return [pattern]
    return [glob.escape(_relative(p, base)) for p in sorted(images, key=_natural)]


def _help(section: str, key: str) -> str:
    """A key's help and unit, as the campaign file's comments give them."""
    declared = section_classes()[section].model_fields[key]
    extra = declared.json_schema_extra
    unit = str(extra.get("unit", "")) if isinstance(extra, dict) else ""
    return (declared.description or "") + (f" [{unit}]" if unit else "")


def _choose(section: str, key: str, placeholder: str, why: str = "") -> str:
    """The comment that stands for a key the user must set."""
    text = f"{CHOOSE} {key} = {placeholder}  {_help(section, key)}"
    return text + (f" {why}" if why else "")


def _marked(table: Table, section: _Section) -> Table:
    """`table` with each chosen key replaced by its CHOOSE comment, in the section's key
    order, and the section's notes (comments) first."""
    out = tomlkit.table()
    for note in section.notes:
        out.add(tomlkit.comment(note))
    present = {key.key: item for key, item in table.value.body if key is not None}
    for name in section_classes()[section.name].model_fields:
        if name in section.choices:
            out.add(tomlkit.comment(section.choices[name]))
        elif name in present:
            out.add(name, present[name])
    return out


def _sem_pixel(images: Sequence[SemImage]) -> tuple[float | None, str, bool]:
    """A sample's SEM pixel size: (value to write, note, whether the user must choose)."""
    lacking = [image for image in images if image.pixel_size_um is None]
    if lacking:
        names = ", ".join(image.path.name for image in lacking)
        return None, f"none in {names}: {lacking[0].note}", True
    distinct = sorted({round(float(image.pixel_size_um or 0), 12) for image in images})
    if len(distinct) == 1:
        return distinct[0], f"from the resolution tags of {len(images)} image(s)", False
    shown = ", ".join(f"{s:g}" for s in distinct)
    return None, f"the images' resolution tags differ ({shown} µm); each image's own is used", False


def _placeholder_codes(values: Sequence[int]) -> dict[str, int]:
    """Phase codes that validate, for a segmentation whose codes the user chooses."""
    picked = list(values[:3]) if len(values) >= 3 else [0, 1, 2]
    return dict(zip(("pore", "silicon", "cbd"), picked, strict=True))


@dataclass
class _Section:
    """One table of the file being written: values that validate (placeholders where a
    choice is open), the CHOOSE comments that replace keys and what needs each, and
    notes on what was found."""

    name: str
    values: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)
    needs: dict[str, str] = field(default_factory=dict)

    def choose(self, key: str, placeholder: str, needed_by: str, why: str = "") -> None:
        """Leave `key` to the user: a CHOOSE comment in its place."""
        self.choices[key] = _choose(self.name, key, placeholder, why)
        self.needs[key] = needed_by


#: What needs a sample's cycles (the image stages do not).
_CYCLES_NEEDED_BY = "the particle table and the fit"


def _add_sem(out: _Section, sample_id: str, images: Sequence[SemImage], base: Path) -> None:
    """A sample's SEM images: their patterns and pixel size, or its choice."""
    out.values["sem"] = _sem_patterns([image.path for image in images], sample_id, base)
    pixel, note, open_choice = _sem_pixel(images)
    out.values["sem_pixel_size_um"] = pixel
    if open_choice:
        out.choose("sem_pixel_size_um", "…", "the sem stage", note)
    else:
        out.notes.append(f"sem: {len(images)} image(s); sem_pixel_size_um {note}")


def _sample(scan: Scan, images: Sequence[SemImage], base: Path) -> _Section:
    """A ``[[sample]]`` table for a scan and its SEM images."""
    where = _relative(scan.path, base)
    out = _Section(
        "sample",
        {"id": scan.id, "cycles": 0, scan.key: where, "voxel_size_um": scan.voxel_size_um or 1.0},
        [f"{where}: {scan.summary}"],
    )
    out.choose("cycles", "…", _CYCLES_NEEDED_BY)
    if scan.voxel_size_um is None:
        out.choose("voxel_size_um", "…", TO_LOAD, scan.voxel_note)
    else:
        out.notes.append(f"voxel_size_um: {scan.voxel_note}")
    if scan.key == "phases":
        out.values["phase_codes"] = _placeholder_codes(scan.grey_values)
        found = ", ".join(map(str, scan.grey_values))
        out.choose("phase_codes", "{pore = …, silicon = …, cbd = …}", TO_LOAD, f"(found: {found})")
    if images:
        _add_sem(out, scan.id, images, base)
    return out


def _sem_base(image: Path) -> str:
    """The sample an SEM image names: its stem without a trailing number (``c03_2``)."""
    return re.sub(r"[_\-. ]\d+$", "", image.stem) or image.stem


def _sem_alone(images: Sequence[SemImage], taken: set[str], base: Path) -> list[_Section]:
    """Samples of SEM images alone: the images that match no scan, grouped by the name
    they share (``c05_0.tif``, ``c05_1.tif``: sample ``c05``)."""
    groups: dict[str, list[SemImage]] = {}
    for image in images:
        groups.setdefault(_sem_base(image.path), []).append(image)
    samples = []
    for name, group in groups.items():
        sample_id = _safe_id(name, taken)
        out = _Section("sample", {"id": sample_id, "cycles": 0})
        out.notes.append(
            f"SEM images alone (no 3-D scan is named {sample_id}); delete this sample if "
            "they are not one"
        )
        out.choose("cycles", "…", _CYCLES_NEEDED_BY)
        _add_sem(out, sample_id, group, base)
        samples.append(out)
    return samples


def _electrochemistry(files: Sequence[CyclingFile], base: Path) -> _Section:
    """The ``[electrochemistry]`` table: the cycling CSV found, and the electrode mass."""
    if len(files) == 1:
        csv = files[0]
        where = _relative(csv.path, base)
        out = _Section(
            "electrochemistry",
            {"cycling": where, "electrode_mass_mg": 1.0},
            [f"{where}: {csv.cycles} cycles, charge {csv.first_mAh:.4g} to {csv.last_mAh:.4g} mAh"],
        )
        out.choose("electrode_mass_mg", "…", TO_LOAD)
        return out
    if files:
        listed = ", ".join(_relative(f.path, base) for f in files)
        out = _Section("electrochemistry", {})
        out.choose("cycling", '"…"', "the fit's capacity term", f"(one of: {listed})")
        out.choose("electrode_mass_mg", "…", "the fit's capacity term (with cycling)")
        return out
    note = "no cycling CSV found (columns cycle, charge_capacity_mAh): the fit uses the gaps alone"
    return _Section("electrochemistry", {}, [note])


def _material() -> _Section:
    """The ``[material]`` table at its defaults, with the size prior to choose."""
    out = _Section("material", {})
    why = "Without it the segmentation ranks grey levels instead of finding the silicon by size."
    out.choose("silicon_radius_um", "[smallest, largest]", "", why)
    return out


def _sem_owners(
    found: Found,
) -> tuple[dict[str, list[SemImage]], list[SemImage]]:
    """Each scan's SEM images, and the images that belong to no scan."""
    ids = [scan.id for scan in found.scans]
    owned: dict[str, list[SemImage]] = {sample_id: [] for sample_id in ids}
    orphans: list[SemImage] = []
    for image in found.sem:
        owner = _owner(image.path, ids)
        (owned[owner] if owner is not None else orphans).append(image)
    return owned, orphans


def campaign_text(found: Found, target: str | os.PathLike[str]) -> tuple[str, list[Choice]]:
    """The text of a campaign file for what was found, and the choices it leaves open.

    Parameters
    ----------
    found : Found
        From :func:`find_raw_files`: at least one scan or SEM image.
    target : path-like
        Where the file will be written: its paths are relative to its folder.

    Returns
    -------
    text : str
        TOML: every parameter at its default with its help as a comment
        (:func:`debond.campaign_file.campaign_toml`), what was found in
        comments, and a ``# CHOOSE:`` line for every value to set. Each scan
        is a sample with the SEM images named after it; the other SEM
        images are samples of SEM images alone, one per name they share.
    choices : list of Choice
        The ``# CHOOSE:`` lines, in file order.
    """
    base = Path(os.path.abspath(target)).parent
    owned, orphans = _sem_owners(found)
    samples = [_sample(scan, owned[scan.id], base) for scan in found.scans]
    samples += _sem_alone(orphans, {scan.id for scan in found.scans}, base)
    sections = {"material": _material(), "electrochemistry": _electrochemistry(found.cycling, base)}
    document = {
        "campaign": {"name": found.folder.resolve().name or "campaign", "store": "store.zarr"},
        "sample": [sample.values for sample in samples],
        **{name: section.values for name, section in sections.items()},
    }
    parsed = tomlkit.parse(campaign_toml(document))
    out = tomlkit.document()
    for line in _header(found, base):
        out.add(tomlkit.comment(line))
    out.add(tomlkit.nl())
    for key, item in parsed.body:
        if key is None:
            out.add(item)
        elif key.key in sections and isinstance(item, Table):
            out.add(key.key, _marked(item, sections[key.key]))
        elif key.key == "sample" and isinstance(item, AoT):
            tables = tomlkit.aot()
            for table, sample in zip(item, samples, strict=True):
                tables.append(_marked(table, sample))
            out.add(key.key, tables)
        else:
            out.add(key.key, item)
    ordered = [sections["material"], *samples, sections["electrochemistry"]]
    choices = [
        Choice(_where(section), key, section.needs[key])
        for section in ordered
        for key in section.choices
    ]
    return tomlkit.dumps(out), choices


def _where(section: _Section) -> str:
    """A table as choices name it: ``"material"``, ``"sample c03"``."""
    return f"sample {section.values['id']}" if section.name == "sample" else section.name


def _header(found: Found, base: Path) -> list[str]:
    """The file's first comments: how to finish it, and the files found but not used."""
    lines = [
        f"Written by `debond init` for the raw files in {found.folder} (paths are relative",
        "to this file). Each line that starts `# CHOOSE:` stands for a value only you know:",
        "replace it by `key = value`. The file does not load until each scan's voxel size is",
        "set (and a segmentation's phase_codes, the electrode mass with cycling data); the",
        "particle table and the fit need every sample's cycles; the size prior may stay open.",
        "The other values are the defaults. Then: `debond run --dry-run` with this file.",
    ]
    for path, why in found.skipped:
        lines.append(f"not used: {_relative(path, base)}: {why}")
    return lines


def write_init(
    folder: str | os.PathLike[str], output: str | os.PathLike[str] | None = None
) -> InitResult:
    """Find the raw files in `folder` and write a commented campaign file for them.

    Parameters
    ----------
    folder : path-like
        The folder holding the raw files (walked recursively).
    output : path-like, optional
        The campaign file to write; default ``<folder>/campaign.toml``.

    Returns
    -------
    InitResult
        The file written, what was found and the choices left to the user.

    Raises
    ------
    InitError
        `output` exists (nothing is overwritten), its folder does not, or
        `folder` holds no images (raw projections, a segmentation or SEM
        images): the message says what was looked for and what was found.

    Examples
    --------
    >>> result = write_init("beamtime-2024")  # doctest: +SKIP
    >>> [f"{c.where}: {c.key}" for c in result.choices if c.required]  # doctest: +SKIP
    ['sample c03: voxel_size_um']
    """
    root = Path(folder)
    target = Path(output) if output is not None else root / "campaign.toml"
    if target.exists():
        raise InitError(
            f"{target} exists; debond init never overwrites a file: move it away, or name "
            "another file with --output"
        )
    if not target.parent.is_dir():
        raise InitError(
            f"{target.parent} does not exist; expected the folder to write {target.name} into"
        )
    found = find_raw_files(root)
    if not found.scans and not found.sem:
        raise InitError(_nothing_found(found))
    text, choices = campaign_text(found, target)
    try:
        with open(target, "x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:  # written by someone else meanwhile
        raise InitError(f"{target} exists; debond init never overwrites a file") from None
    return InitResult(target, found, tuple(choices))


def _nothing_found(found: Found) -> str:
    """The error for a folder without images: what was looked for, what was there."""
    lines = [
        f"{found.folder}: no raw projections, segmentation or SEM image found, so no sample "
        f"(each needs `txm`, `phases` or `sem`). Looked for: {LOOKED_FOR}."
    ]
    if found.cycling:
        lines.append(f"Found {len(found.cycling)} cycling file(s), which need samples.")
    lines += [f"  not used: {path}: {why}" for path, why in found.skipped]
    return "\n".join(lines)
