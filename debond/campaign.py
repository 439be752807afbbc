"""Campaign files: the TOML that describes an experiment, validated on load.

A campaign file names the samples (raw TXM projections or a ready
segmentation, SEM cross-sections, or SEM cross-sections alone), the cycling
data, the material, and the parameters of every stage. A sample's keys are
required only where something needs them: ``voxel_size_um`` with a volume
(``txm`` or ``phases``), ``cycles`` by the particle table and the fit
(:meth:`Campaign.require_cycles`), so a reconstruction-only campaign of a
test object gives neither cycles nor ``[electrochemistry]``. Each parameter
is declared once, with its default, type, unit and help text: the campaign's
own sections in :mod:`debond.schema`, each stage's section (named as the
stage, keys named as the stage kernel's keywords) in its module of
:mod:`debond.stages` (:func:`debond.schema.parameter_table` lists them all).
Unknown keys are errors, so a misspelt parameter never silently falls back
to its default, and a key renamed since an earlier version is named with its
new name. Writing campaign files is :mod:`debond.campaign_file`'s job.

On load, relative paths are resolved against the campaign file's folder (the
store too, unless it is a URL such as ``s3://bucket/x.zarr``), SEM globs are
expanded, and every missing raw file is reported at once, before any work
starts. Before anything is written, :meth:`Campaign.check_store` refuses a
store that would become something else: a file, a folder that is not a
debond store, a folder holding the campaign's inputs, a URL whose filesystem
is not installed. Every error is a :class:`CampaignError` (a ``ValueError``)
naming the file, the key (``sample[2].voxel_size_um``), what was found and
what was expected.

Example
-------
.. code-block:: toml

    [campaign]
    name = "si-graphite"
    store = "si-graphite.zarr"        # path or fsspec URL (s3://…, gs://…)
    [material]
    volumetric_expansion = 2.8        # silicon ΔV/V at full lithiation
    half_cycle_hours = 20             # C/20
    [[sample]]
    id = "c03"
    cycles = 3
    txm = "raw/c03.h5"                # Data Exchange HDF5 or a TIFF-stack folder
    voxel_size_um = 0.0299
    sem = ["sem/c03_*.tif"]
    sem_pixel_size_um = 0.021
    [[sample]]
    id = "c10"
    cycles = 10
    phases = "seg/c10.tif"            # a segmentation: starts at `label`
    phase_codes = {pore = 0, silicon = 85, cbd = 170}
    voxel_size_um = 0.0299
    [[sample]]
    id = "c20"
    cycles = 20
    sem = ["sem/c20_*.tif"]           # SEM cross-sections alone: only the `sem` stage
    sem_pixel_size_um = 0.021
    [electrochemistry]
    cycling = "echem/cycling.csv"     # cycle, charge_capacity_mAh
    electrode_mass_mg = 2.0
    [recon]
    algorithm = "auto"                # auto (GPU: SIRT, CPU: FBP) | fbp | sirt | cgls
    iterations = 1000
"""

from __future__ import annotations

import difflib
import glob
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
from fsspec.registry import known_implementations
from pydantic import BaseModel, ValidationError

from debond.model import Material
from debond.model.cycling import Recipe
from debond.schema import (
    MIN_PRIOR_RADIUS_VOXELS,
    CampaignBase,
    campaign_model,
    renamed_keys,
    section_classes,
    type_name,
)
from debond.stages import REGISTRY, Registry
from debond.storage import foreign_content, is_store

__all__ = [
    "Campaign",
    "CampaignError",
    "Sample",
    "load_campaign",
]


class CampaignError(ValueError):
    """A campaign file is invalid or names raw files that do not exist.

    The message names the campaign file and, one line per problem, the key
    (``sample[2].voxel_size_um``), what was found and what was expected.
    """


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


# --------------------------------------------------------------------------- campaign


@dataclass(frozen=True)
class Sample:
    """A sample with its paths resolved (absolute) and its SEM globs expanded.

    Attributes
    ----------
    id : str
        Unique identifier (its group ``samples/<id>`` in the store).
    index : int
        Position in the campaign file (``sample[index]``).
    cycles : int or None
        Cycles before imaging, ≥ 0; None when the file gives none (the fit and
        the particle table ask for it: :meth:`Campaign.require_cycles`).
    voxel_size_um : float or None
        Voxel edge, µm; None only for a sample without a volume (SEM alone).
    txm : Path or None
        Data Exchange HDF5 file or TIFF-stack folder (absolute); None with
        `phases` or with SEM images alone.
    phases : Path or None
        A segmented volume (TIFF, absolute); None with `txm` or with SEM
        images alone.
    phase_codes : dict of str to int, or None
        Grey value of each named phase in `phases`.
    rotation_centre_px : float or None
        Manual rotation centre (detector column, px), or None to search for it.
    sem : tuple of Path
        SEM images matched by `sem_patterns`, sorted per pattern, without repeats.
    sem_patterns : tuple of str
        The glob patterns as written in the file.
    sem_pixel_size_um : float or None
        SEM pixel edge, µm, or None to read the TIFFs' resolution tags.
    """

    id: str
    index: int
    cycles: int | None
    voxel_size_um: float | None
    txm: Path | None
    phases: Path | None
    phase_codes: dict[str, int] | None
    rotation_centre_px: float | None
    sem: tuple[Path, ...]
    sem_patterns: tuple[str, ...]
    sem_pixel_size_um: float | None

    @property
    def where(self) -> str:
        """How errors name this sample: ``sample[2] ('c03')``."""
        return f"sample[{self.index}] ({self.id!r})"

    @property
    def has_volume(self) -> bool:
        """Whether the sample brings a volume (`txm` or `phases`) for the 3D stages.

        A sample with SEM images alone has no 3D chain: only its ``sem`` stage runs.
        """
        return self.txm is not None or self.phases is not None

    @property
    def voxel_um(self) -> float:
        """The voxel edge, µm, of a sample with a volume (what the 3D stages store).

        Raises
        ------
        ValueError
            For a sample without a volume, which has no voxel size.
        """
        if self.voxel_size_um is None:
            raise ValueError(
                f"{self.where}.voxel_size_um: not given; a sample with SEM images alone "
                "has no voxel size and no 3D stage"
            )
        return self.voxel_size_um


@dataclass(frozen=True)
class Campaign:
    """A validated campaign file; obtain one with :func:`load_campaign`.

    Attributes
    ----------
    path : Path
        The campaign file (absolute).
    declared : CampaignBase
        The file's content as declared, defaults filled, paths as written
        (one section per stage of `registry`).
    samples : list of Sample
        The samples, in file order, paths resolved.
    registry : Registry
        The stages the campaign runs (:data:`debond.stages.REGISTRY`).
    """

    path: Path
    declared: CampaignBase
    samples: list[Sample]
    registry: Registry = field(default=REGISTRY)

    @property
    def name(self) -> str:
        """The campaign's name."""
        return self.declared.campaign.name

    @property
    def folder(self) -> Path:
        """The folder of the campaign file, against which relative paths resolve."""
        return self.path.parent

    @property
    def store_location(self) -> str:
        """The store: an absolute path, or a URL (``s3://…``) as given."""
        store = self.declared.campaign.store
        return store if _is_url(store) else str(_resolve(self.folder, store))

    @property
    def tables_dir(self) -> Path:
        """This campaign's tables: ``tables/<file name without .toml>/`` beside its file.

        The particle table, each sample's rows, the fit's results. Two
        campaign files in one folder have two names, so their tables never
        mix; the name, not ``[campaign] name``, since two files may well
        declare the same name, and not the store, which two files may share.
        """
        return self.folder / TABLES / self.path.stem

    def earlier_tables(self) -> list[Path]:
        """Tables in the layout of an earlier version, shared by every campaign in the folder.

        What an earlier version wrote directly into ``tables/``
        (:data:`EARLIER_TABLES`), other than the folder of a campaign file there.
        """
        root = self.folder / TABLES
        if not root.is_dir():
            return []
        own = {path.stem for path in campaign_files(self.folder)} | {self.path.stem}
        return [root / n for n in EARLIER_TABLES if n not in own and (root / n).exists()]

    def adopt_earlier_tables(self) -> str | None:
        """Move tables of an earlier version into :attr:`tables_dir` when they can only be ours.

        They are moved when this campaign file is the only one in its folder;
        with others there, nobody can tell whose they are, and they are left
        where they are (not read: the run remakes this campaign's).

        Returns
        -------
        str or None
            What was done, for the console; None when there was nothing to do.
        """
        found = self.earlier_tables()
        if not found:
            return None
        names = ", ".join(path.name for path in found)
        others = [path.name for path in campaign_files(self.folder) if path != self.path]
        if others:
            return (
                f"{self.folder / TABLES} holds tables of an earlier version ({names}), which "
                f"every campaign file of the folder shared ({self.path.name}, "
                f"{', '.join(others)}); they are not read: this campaign's tables are in "
                f"{self.tables_dir} (move yours there, or the run remakes them)"
            )
        moved = []
        for path in found:
            target = self.tables_dir / path.name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
                moved.append(path.name)
        kept = [path.name for path in found if path.name not in moved]
        note = f"; kept {', '.join(kept)}: {self.tables_dir} has its own" if kept else ""
        return (
            f"moved the tables of an earlier version ({', '.join(moved) or 'none'}) from "
            f"{self.folder / TABLES} into {self.tables_dir}, this campaign's own{note}"
        )

    @property
    def material(self) -> Material:
        """The ``[material]`` section as a :class:`debond.model.Material`."""
        m = self.declared.material
        return Material(
            volumetric_expansion=m.volumetric_expansion, half_cycle_hours=m.half_cycle_hours
        )

    @property
    def recipe(self) -> Recipe:
        """The electrode recipe of ``[electrochemistry]`` (:class:`debond.model.Recipe`)."""
        e = self.declared.electrochemistry
        return Recipe(
            silicon_fraction=e.silicon_fraction,
            silicon_capacity_mAh_per_g=e.silicon_capacity_mAh_per_g,
            graphite_fraction=e.graphite_fraction,
            graphite_capacity_mAh_per_g=e.graphite_capacity_mAh_per_g,
        )

    @property
    def cycling(self) -> Path | None:
        """The cycling CSV (absolute), or None when the file names none."""
        cycling = self.declared.electrochemistry.cycling
        return None if cycling is None else _resolve(self.folder, cycling)

    @property
    def size_prior_um(self) -> tuple[float, float] | None:
        """``[material] silicon_radius_um``: the silicon particles' radius range, µm (or None)."""
        radii = self.declared.material.silicon_radius_um
        return None if radii is None else (float(radii[0]), float(radii[1]))

    @property
    def electrode_mass_mg(self) -> float | None:
        """Coating mass of the cycled electrode, mg (None without cycling data)."""
        return self.declared.electrochemistry.electrode_mass_mg

    def stage_parameters(self, stage: str) -> dict[str, Any]:
        """The parameters of a stage (its section) as a plain dict, defaults filled.

        Parameters
        ----------
        stage : str
            A stage of the registry (``ingest, prep, recon, segment, label,
            measure, sem``) or ``fit``.

        Returns
        -------
        dict
            A fresh dict of plain Python values (str, int, float, bool, list,
            None), keyed by the stage kernel's keyword names.
        """
        known = [*self.registry.names, "fit"]
        if stage not in known:
            raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(known)}")
        model: BaseModel = getattr(self.declared, stage)
        return model.model_dump()

    def require_cycles(self, needed_by: str, samples: Sequence[Sample] | None = None) -> None:
        """Raise :class:`CampaignError` unless the samples give their ``cycles``.

        The image stages do not need them; the particle table's ``cycles``
        column and the fit do.

        Parameters
        ----------
        needed_by : str
            What asks for them, for the message (``"the fit"``).
        samples : sequence of Sample, optional
            The samples concerned (default: every sample).

        Raises
        ------
        CampaignError
            Naming the campaign file, what needs the cycles and, one line
            each, every sample without ``cycles``.
        """
        missing = [s for s in (self.samples if samples is None else samples) if s.cycles is None]
        if missing:
            lines = [
                f"{s.where}.cycles: missing; expected an integer ≥ 0 (cycles before imaging, "
                "0: pristine)"
                for s in missing
            ]
            raise CampaignError(
                f"{self.path}: {needed_by} needs the cycles of every sample it holds; "
                f"{len(missing)} sample(s) give none:\n  " + "\n  ".join(lines)
            )

    def sample(self, sample_id: str) -> Sample:
        """The sample with this id; ``KeyError`` naming the ids there are."""
        for sample in self.samples:
            if sample.id == sample_id:
                return sample
        raise KeyError(
            f"{self.path}: no sample {sample_id!r}; samples: "
            f"{', '.join(s.id for s in self.samples)}"
        )

    def missing_inputs(self) -> list[str]:
        """Every raw input that is absent now, one line each (empty: all present).

        Checks each sample's `txm` (a file, or a folder holding files that
        match ``ingest.tiff_projections``), `phases` (a file) and SEM patterns
        (each matches at least one file), and the cycling CSV.
        """
        problems = []
        projections = self.stage_parameters("ingest")["tiff_projections"]
        for sample, declared in zip(self.samples, self.declared.sample, strict=True):
            if sample.txm is not None:
                if not sample.txm.exists():
                    problems.append(f"{sample.where}.txm: {sample.txm} does not exist")
                elif sample.txm.is_dir() and not _expand(sample.txm, projections):
                    problems.append(
                        f"{sample.where}.txm: folder {sample.txm} holds no file matching "
                        f"{projections!r} (ingest.tiff_projections); expected a TIFF stack "
                        "or a Data Exchange HDF5 file"
                    )
            if sample.phases is not None and not sample.phases.is_file():
                found = "is a folder" if sample.phases.is_dir() else "does not exist"
                problems.append(
                    f"{sample.where}.phases: {sample.phases} {found}; expected a TIFF file"
                )
            for i, pattern in enumerate(declared.sem):
                if not _expand(self.folder, pattern):
                    problems.append(
                        f"{sample.where}.sem[{i}]: no file matches {pattern!r} "
                        f"(relative to {self.folder})"
                    )
        cycling = self.cycling
        if cycling is not None and not cycling.is_file():
            problems.append(f"electrochemistry.cycling: {cycling} does not exist")
        return problems

    def check_inputs(self) -> None:
        """Raise :class:`CampaignError` listing every missing raw input at once."""
        problems = self.missing_inputs()
        if problems:
            raise CampaignError(
                f"{self.path}: {len(problems)} missing input file(s); nothing was run:\n  "
                + "\n  ".join(problems)
            )

    def inputs(self) -> list[tuple[str, Path]]:
        """Every file the campaign reads, named as errors name them, with its path.

        Each sample's `txm` and `phases`, its SEM images (as expanded), the
        cycling CSV, and the campaign file itself.
        """
        named: list[tuple[str, Path]] = []
        for sample in self.samples:
            for key, path in (("txm", sample.txm), ("phases", sample.phases)):
                if path is not None:
                    named.append((f"{sample.where}.{key}", path))
            named += [(f"{sample.where}.sem", path) for path in sample.sem]
        if self.cycling is not None:
            named.append(("electrochemistry.cycling", self.cycling))
        return [*named, ("the campaign file", self.path)]

    def check_store(self) -> None:
        """Raise :class:`CampaignError` unless the store may be created or reopened.

        A local store must be a new or empty folder or a debond store
        (:func:`debond.storage.is_store`), apart from every input
        (:meth:`inputs`) and the tables folder; a URL must name a filesystem
        that is installed. Nothing is written.
        """
        location = self.store_location
        key = f"{self.path}: [campaign] store = {self.declared.campaign.store!r}"
        if _is_url(location):
            problem = _url_problem(location)
            if problem is not None:
                raise CampaignError(f"{key}: {problem}")
            return
        problem = _path_problem(
            Path(location), [*self.inputs(), ("the tables folder", self.folder / TABLES)]
        )
        if problem is not None:
            raise CampaignError(f"{key} {problem}")


def _is_url(location: str) -> bool:
    return _URL.match(location) is not None


#: Folder beside the campaign files holding one folder of tables per campaign file.
TABLES = "tables"
#: What an earlier version wrote directly into ``tables/``, shared by every campaign there.
EARLIER_TABLES = ("particles.parquet", "samples", "sections", "fit.json", "bootstrap.parquet")


def campaign_files(folder: Path) -> list[Path]:
    """The campaign files in a folder: its ``*.toml`` files with a ``[campaign]`` table, sorted."""
    found = []
    for path in sorted(folder.glob("*.toml")):
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        if isinstance(document.get("campaign"), dict):
            found.append(path.absolute())
    return found


#: What a store must be, in the words of its errors.
STORE_RULE = (
    "expected a new folder or a debond store (a Zarr v3 group whose zarr.json has the "
    "attribute 'debond'), apart from the campaign's inputs; nothing was written"
)


def _path_problem(store: Path, inputs: list[tuple[str, Path]]) -> str | None:
    """What is wrong with a local store beside the campaign's `inputs`, or None."""
    found = foreign_content(store)
    if found is None:
        real = Path(os.path.realpath(store))
        for key, path in inputs:
            other = Path(os.path.realpath(path))
            if other == real:
                found = f"the same path as {key}"
            elif other.is_relative_to(real):
                kind = "debond store" if is_store(real) else "folder"
                found = f"a {kind} that holds {key} ({path})"
            elif real.is_relative_to(other):
                found = f"a folder inside {key} ({path})"
            if found is not None:
                break
    return None if found is None else f"is {store}: {found}; {STORE_RULE}"


def _url_problem(url: str) -> str | None:
    """What is wrong with a store URL (its filesystem unknown or not installed), or None."""
    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError:
        package = known_implementations[protocol]["class"].split(".")[0]
        return (
            f"the {protocol}:// filesystem needs the package {package}, which is not "
            f"installed; expected a local path, or install {package} "
            "(pip install 'debond[remote]' brings s3fs and gcsfs)"
        )
    except ValueError:
        return (
            f"no filesystem {protocol!r} is known to fsspec; expected a local path or a URL "
            "such as s3://bucket/store.zarr"
        )
    return None


def _resolve(base: Path, path: str) -> Path:
    """An absolute path: `path` (``~`` expanded) against `base`, ``..`` collapsed."""
    return Path(os.path.abspath(base / os.path.expanduser(path)))


def _expand(base: Path, pattern: str) -> list[Path]:
    """Files matching a glob pattern (``**`` recursive) relative to `base`, sorted."""
    expanded = os.path.expanduser(pattern)
    if os.path.isabs(expanded):
        matches = glob.glob(expanded, recursive=True)
    else:  # root_dir: the base folder's own name is never read as a pattern
        matches = [
            os.path.join(base, m) for m in glob.glob(expanded, root_dir=base, recursive=True)
        ]
    return sorted(Path(os.path.abspath(m)) for m in matches if os.path.isfile(m))


def _samples(folder: Path, declared: CampaignBase) -> list[Sample]:
    samples = []
    for index, s in enumerate(declared.sample):
        sem: list[Path] = []
        for pattern in s.sem:
            sem += [p for p in _expand(folder, pattern) if p not in sem]
        samples.append(
            Sample(
                id=s.id,
                index=index,
                cycles=s.cycles,
                voxel_size_um=s.voxel_size_um,
                txm=None if s.txm is None else _resolve(folder, s.txm),
                phases=None if s.phases is None else _resolve(folder, s.phases),
                phase_codes=None if s.phase_codes is None else dict(s.phase_codes),
                rotation_centre_px=s.rotation_centre_px,
                sem=tuple(sem),
                sem_patterns=tuple(s.sem),
                sem_pixel_size_um=s.sem_pixel_size_um,
            )
        )
    return samples


# --------------------------------------------------------------------------- errors

_TOML_TYPES = {
    bool: "boolean",
    int: "integer",
    float: "float",
    str: "string",
    list: "array",
    dict: "table",
}


def _found(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    kind = _TOML_TYPES.get(type(value))
    return f"{text} ({kind})" if kind else text


def _key(location: tuple[int | str, ...]) -> str:
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(location: tuple[int | str, ...], model: type[CampaignBase]) -> type[BaseModel] | None:
    """The section model that holds the key at `location`, if any."""
    if len(location) == 1:
        return model
    sections = section_classes(model)
    name = location[0]
    if not isinstance(name, str) or name not in sections:
        return None
    depth = 3 if name == "sample" else 2
    return sections[name] if len(location) == depth else None


#: Keys that would carry a store's credentials or client options (refused, with where they go).
_CREDENTIAL_KEY = re.compile(
    r"(^|_)(key|secret|token|password|credentials?|storage_options|endpoint(_url)?|profile)$",
    re.IGNORECASE,
)


def _describe(problem: Mapping[str, Any], file_model: type[CampaignBase]) -> str:
    """One pydantic error as "found …, expected …"."""
    location = tuple(problem["loc"])
    kind, message = problem["type"], str(problem["msg"])
    model = _model_at(location, file_model)
    if kind == "extra_forbidden":
        keys = list(model.model_fields) if model is not None else []
        if _CREDENTIAL_KEY.search(str(location[-1])):
            return (
                "credentials and storage options are never read from the campaign file; "
                "expected them in the environment of the run and of every worker "
                "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, or FSSPEC_S3_*)"
            )
        text = "unknown key"
        close = difflib.get_close_matches(str(location[-1]), keys, n=1)
        if close:
            text += f"; did you mean {close[0]!r}?"
        return text + (f" Expected one of: {', '.join(keys)}" if keys else "")
    if kind == "missing":
        field = None if model is None else model.model_fields.get(str(location[-1]))
        what = "" if field is None else f" {type_name(field.annotation)}: {field.description}"
        return "missing; expected" + (what or " a value")
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if message.startswith("Input should be "):
        expected = message.removeprefix("Input should be ")
        if expected.startswith(("greater", "less")):
            expected = "a value " + expected
        return f"found {_found(problem.get('input'))}, expected {expected}"
    return f"{message}; found {_found(problem.get('input'))}"


def explain(
    path: Path, error: ValidationError, raw: Mapping[str, Any], model: type[CampaignBase]
) -> CampaignError:
    """A pydantic validation error as a :class:`CampaignError`, one line per problem."""
    problems = error.errors()
    lines = [f"{path}: invalid campaign file ({len(problems)} problem(s)):"]
    for problem in problems:
        location = tuple(problem["loc"])
        line = f"  {_key(location) or '(top level)'}: {_describe(problem, model)}"
        if len(location) >= 2 and location[0] == "sample" and isinstance(location[1], int):
            samples = raw.get("sample")
            entry = samples[location[1]] if isinstance(samples, list) else None
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                line += f" (sample {entry['id']!r})"
        lines.append(line)
    return CampaignError("\n".join(lines))


def _check_prior(campaign: Campaign) -> None:
    """A size prior that every sample can resolve (a prior in voxels is caught here)."""
    prior = campaign.size_prior_um
    if prior is None:
        return
    for sample in campaign.samples:
        if sample.voxel_size_um is None:  # SEM images alone: no voxel
            continue
        if prior[0] / sample.voxel_size_um < MIN_PRIOR_RADIUS_VOXELS:
            raise CampaignError(
                f"{campaign.path}: material.silicon_radius_um = {list(prior)} µm: the smallest "
                f"radius is {prior[0] / sample.voxel_size_um:.2g} voxels of {sample.where} "
                f"(voxel {sample.voxel_size_um:g} µm); expected radii in µm of at least "
                f"{MIN_PRIOR_RADIUS_VOXELS} voxels"
            )


def validate(raw: Mapping[str, Any], path: Path, model: type[CampaignBase]) -> CampaignBase:
    """A raw campaign document (parsed TOML or a dict) validated against `model`.

    Raises
    ------
    CampaignError
        Naming `path`: sections or keys of an earlier version with their new
        names, or every validation problem, one per line.
    """
    renamed = renamed_keys(raw)
    if renamed:
        raise CampaignError(
            f"{path}: written for an earlier version of debond; rename:\n  " + "\n  ".join(renamed)
        )
    try:
        return model.model_validate(dict(raw))
    except ValidationError as error:
        raise explain(path, error, raw, model) from None


def _toml_error(path: Path, text: str, error: tomllib.TOMLDecodeError) -> CampaignError:
    message = str(error)
    at = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if at is None:
        return CampaignError(f"{path}: not valid TOML: {message}")
    number = int(at.group(1))
    lines = text.splitlines()
    shown = f"\n  {number} | {lines[number - 1]}" if number <= len(lines) else ""
    return CampaignError(
        f"{path}, line {number}: not valid TOML: {message[: at.start()].strip()} "
        f"(column {at.group(2)}){shown}"
    )


# --------------------------------------------------------------------------- loading


def load_campaign(
    path: str | os.PathLike[str], *, check_files: bool = True, registry: Registry = REGISTRY
) -> Campaign:
    """Read and validate a campaign file.

    Parameters
    ----------
    path : str or path-like
        The TOML file. Relative paths inside it resolve against its folder.
    check_files : bool, default True
        Check that every raw input exists (each sample's `txm` or `phases`,
        each SEM glob matching at least one file, the cycling CSV) and report
        all missing ones at once. With False, see :meth:`Campaign.check_inputs`.
    registry : Registry, optional
        The stages whose sections the file may hold (default: every stage).

    Returns
    -------
    Campaign
        Defaults filled, paths absolute, SEM globs expanded (sorted).

    Raises
    ------
    CampaignError
        A ``ValueError`` naming the file and, one line per problem, the key
        (e.g. ``sample[2].voxel_size_um``), what was found and what was
        expected: wrong types, values out of range, unknown keys, duplicate
        sample ids, a sample with both `txm` and `phases` or with none of
        `txm`, `phases` and `sem`, a volume without `voxel_size_um`;
        a TOML syntax error with its line; missing raw files; a section or
        key of an earlier version (the message names its new name).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "c0.tif").write_bytes(b"")
    >>> _ = (folder / "c.toml").write_text('''
    ... [campaign]
    ... name = "x"
    ... [[sample]]
    ... id = "c0"
    ... cycles = 0
    ... phases = "c0.tif"
    ... phase_codes = {pore = 0, silicon = 1, cbd = 2}
    ... voxel_size_um = 0.03
    ... ''')
    >>> campaign = load_campaign(folder / "c.toml")
    >>> campaign.samples[0].phases.name, campaign.stage_parameters("recon")["iterations"]
    ('c0.tif', 1000)
    """
    path = Path(os.path.abspath(path))
    if not path.exists():
        raise CampaignError(f"campaign file {path} does not exist")
    if not path.is_file():
        raise CampaignError(f"campaign file {path} is not a file; expected a TOML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CampaignError(f"{path}: not UTF-8 text ({error}); expected a TOML file") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise _toml_error(path, text, error) from None
    declared = validate(raw, path, campaign_model(registry))
    campaign = Campaign(path, declared, _samples(path.parent, declared), registry)
    _check_prior(campaign)
    if check_files:
        campaign.check_inputs()
    return campaign
