"""Campaign files: the TOML that describes an experiment, validated on load.

A campaign file names the samples (raw TXM projections or a ready
segmentation, SEM cross-sections), the cycling data, the material, and the
parameters of every stage. Each parameter is declared once in this module,
with its default, type, unit and help text (:func:`parameter_table` lists
them); unknown keys are errors, so a misspelt parameter never silently falls
back to its default.

On load, relative paths are resolved against the campaign file's folder (the
store too, unless it is a URL such as ``s3://bucket/x.zarr``), SEM globs are
expanded, and every missing raw file is reported at once, before any work
starts. Every error is a :class:`CampaignError` (a ``ValueError``) naming the
file, the key (``sample[2].voxel_size_um``), what was found and what was
expected.

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
    [electrochemistry]
    cycling = "echem/cycling.csv"     # cycle, charge_capacity_mAh
    electrode_mass_mg = 2.0
    [reconstruction]
    algorithm = "sirt"                # fbp | sirt | cgls
    iterations = 1000

>>> from debond.campaign import parameter_table
>>> [p for p in parameter_table() if p.key == "iterations"][0].default
1000
"""

from __future__ import annotations

import difflib
import glob
import itertools
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from debond.model import Material
from debond.model.cycling import Recipe

__all__ = [
    "PHASE_NAMES",
    "STAGES",
    "STAGE_SECTIONS",
    "Campaign",
    "CampaignError",
    "CampaignFile",
    "Parameter",
    "Sample",
    "campaign_toml",
    "dump_campaign",
    "load_campaign",
    "parameter_table",
    "write_campaign_file",
]


class CampaignError(ValueError):
    """A campaign file is invalid or names raw files that do not exist.

    The message names the campaign file and, one line per problem, the key
    (``sample[2].voxel_size_um``), what was found and what was expected.
    """


#: Phase names of ``phase_codes``; their codes in the store's ``phases`` are
#: their positions (DESIGN.md: 0 pore, 1 graphite, 2 CBD, 3 silicon, 4 SEI).
PHASE_NAMES = ("pore", "graphite", "cbd", "silicon", "sei")
#: Phases a given segmentation must name: the gap is pore between silicon and CBD.
REQUIRED_PHASES = ("pore", "silicon", "cbd")

#: Stages of ``debond run``, in order, and their sections in the campaign file.
STAGE_SECTIONS = {
    "ingest": "ingest",
    "prep": "prep",
    "recon": "reconstruction",
    "segment": "segmentation",
    "label": "labelling",
    "measure": "measure",
    "sem": "sem",
}
STAGES = tuple(STAGE_SECTIONS)

_RECIPE = Recipe()
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _param(default: Any, help: str, unit: str = "", **constraints: Any) -> Any:
    """Declare one parameter: default (``...``: required), help, unit ('' if none)."""
    return Field(default, description=help, json_schema_extra={"unit": unit}, **constraints)


def _increasing(values: list[float]) -> list[float]:
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"found {values}, expected strictly increasing values")
    return values


#: Thresholds between grey classes: strictly increasing.
Thresholds = Annotated[list[float], AfterValidator(_increasing)]


class _Section(BaseModel):
    # strict: TOML values are typed, so "3" is not an integer and 1 not a boolean
    # (an integer is still accepted where a float is expected).
    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, validate_default=True, frozen=True
    )


class CampaignSection(_Section):
    """``[campaign]``: the campaign's name and where its store lives."""

    name: str = _param(..., "Campaign name.", min_length=1)
    store: str = _param(
        "store.zarr",
        "Zarr store: a path (relative to the campaign file) or an fsspec URL (s3://…).",
        min_length=1,
    )


class MaterialSection(_Section):
    """``[material]``: silicon and cycling protocol (:class:`debond.model.Material`)."""

    volumetric_expansion: float = _param(
        2.8, "Silicon ΔV/V at full lithiation (2.8 for 280 %).", "", gt=0
    )
    half_cycle_hours: float = _param(20.0, "Duration T of one half-cycle (C/20: 20 h).", "h", gt=0)


PhaseCode = Annotated[int, Field(ge=0)]


class SampleSection(_Section):
    """``[[sample]]``: one imaged electrode."""

    id: str = _param(
        ...,
        "Sample identifier, unique; names the sample's group in the store.",
        pattern=r"^[A-Za-z0-9_.-]+$",
    )
    cycles: int = _param(..., "Electrochemical cycles before imaging (0: pristine).", ge=0)
    txm: str | None = _param(
        None, "Raw projections: a Data Exchange HDF5 file or a folder of TIFF projections."
    )
    phases: str | None = _param(
        None, "Instead of txm: a segmented volume (TIFF) that starts at the label stage."
    )
    phase_codes: dict[str, PhaseCode] | None = _param(
        None,
        "Grey value of each phase in `phases`, e.g. {pore = 0, silicon = 85, cbd = 170}; "
        "names: " + ", ".join(PHASE_NAMES) + ".",
    )
    voxel_size_um: float = _param(..., "Voxel edge length.", "µm", gt=0)
    rotation_centre_px: float | None = _param(
        None,
        "Rotation centre on the detector (column); overrides the automatic search.",
        "px",
        ge=0,
    )
    sem: list[str] = Field(
        default_factory=list,
        description="Glob patterns of SEM cross-section TIFFs (relative to the campaign file).",
        json_schema_extra={"unit": ""},
    )
    sem_pixel_size_um: float | None = _param(
        None, "SEM pixel edge length (default: the TIFFs' resolution tags).", "µm", gt=0
    )

    @field_validator("phase_codes")
    @classmethod
    def _known_distinct_phases(cls, codes: dict[str, int] | None) -> dict[str, int] | None:
        if codes is None:
            return None
        unknown = [name for name in codes if name not in PHASE_NAMES]
        if unknown:
            raise ValueError(
                f"unknown phase {unknown[0]!r}; expected names among {', '.join(PHASE_NAMES)}"
            )
        seen: dict[int, str] = {}
        for name, code in codes.items():
            if code in seen:
                raise ValueError(f"phases {seen[code]!r} and {name!r} share the code {code}")
            seen[code] = name
        return codes

    @model_validator(mode="after")
    def _one_source(self) -> SampleSection:
        if (self.txm is None) == (self.phases is None):
            found = "both 'txm' and" if self.txm is not None else "neither 'txm' nor"
            raise ValueError(
                f"found {found} 'phases'; expected exactly one: 'txm' (raw projections) "
                "or 'phases' (a segmentation)"
            )
        if self.phases is not None:
            missing = [p for p in REQUIRED_PHASES if p not in (self.phase_codes or {})]
            if missing:
                raise ValueError(
                    f"'phases' needs 'phase_codes' naming {', '.join(REQUIRED_PHASES)}; "
                    f"missing {', '.join(missing)} "
                    "(e.g. phase_codes = {pore = 0, silicon = 85, cbd = 170})"
                )
        elif self.phase_codes is not None:
            raise ValueError("'phase_codes' applies to 'phases' only; this sample has 'txm'")
        return self


class ElectrochemistrySection(_Section):
    """``[electrochemistry]``: cycling data and the electrode recipe."""

    cycling: str | None = _param(
        None, "Cycling data: CSV with columns cycle, charge_capacity_mAh (or a BioLogic export)."
    )
    electrode_mass_mg: float | None = _param(
        None, "Coating mass of the cycled electrode (needed with `cycling`).", "mg", gt=0
    )
    silicon_fraction: float = _param(
        _RECIPE.silicon_fraction, "Mass fraction of the silicon (SiOx) material.", "", gt=0, le=1
    )
    silicon_capacity_mAh_per_g: float = _param(
        _RECIPE.silicon_capacity_mAh_per_g,
        "Specific capacity of the silicon material.",
        "mAh/g",
        gt=0,
    )
    graphite_fraction: float = _param(
        _RECIPE.graphite_fraction, "Mass fraction of graphite.", "", ge=0, lt=1
    )
    graphite_capacity_mAh_per_g: float = _param(
        _RECIPE.graphite_capacity_mAh_per_g, "Specific capacity of graphite.", "mAh/g", gt=0
    )

    @model_validator(mode="after")
    def _consistent(self) -> ElectrochemistrySection:
        if self.cycling is not None and self.electrode_mass_mg is None:
            raise ValueError("'cycling' needs 'electrode_mass_mg' (coating mass, mg)")
        total = self.silicon_fraction + self.graphite_fraction
        if total > 1:
            raise ValueError(
                f"silicon_fraction + graphite_fraction must not exceed 1; found "
                f"{self.silicon_fraction} + {self.graphite_fraction} = {total:g}"
            )
        return self


class IngestSection(_Section):
    """``[ingest]``: raw projections, flats, darks and angles (:mod:`debond.pipeline.ingest`)."""

    angles_per_chunk: int | None = _param(
        None,
        "Projections per chunk (default: as many whole frames as fit in 16 MiB).",
        "projections",
        ge=1,
    )
    tiff_projections: str = _param(
        "proj_*.tif", "In a TIFF-stack folder: glob of the projections (natural order)."
    )
    tiff_flats: str = _param("flat_*.tif", "In a TIFF-stack folder: glob of the flat fields.")
    tiff_darks: str = _param("dark_*.tif", "In a TIFF-stack folder: glob of the dark fields.")
    tiff_theta_file: str = _param(
        "theta.txt", "In a TIFF-stack folder: file of the angles, one per projection, in degrees."
    )


class PrepSection(_Section):
    """``[prep]``: flat/dark normalisation, median filter, sinograms."""

    median_size: int = _param(
        7, "Median filter of each projection, size × size (the paper: 7).", "px", ge=1
    )
    ring_removal: bool = _param(False, "Remove ring artefacts in sinogram space.")
    clip_min: float = _param(
        1e-6,
        "Smallest transmission kept before −log (guards against log(0)).",
        "",
        gt=0,
        lt=1,
    )

    @field_validator("median_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"must be odd; found {value}")
        return value


class ReconstructionSection(_Section):
    """``[reconstruction]``: rotation centre and ASTRA reconstruction."""

    algorithm: Literal["fbp", "sirt", "cgls"] = _param(
        "sirt", "ASTRA algorithm (CUDA variant where a GPU is present)."
    )
    iterations: int = _param(1000, "Iterations of SIRT or CGLS (the paper: 1000).", ge=1)
    nonnegative: bool = _param(True, "Clip negative attenuation during SIRT.")
    fbp_filter: Literal["ram-lak", "shepp-logan", "cosine", "hamming", "hann"] = _param(
        "ram-lak", "Filter of FBP."
    )
    centre_search_radius_px: float | None = _param(
        None,
        "How far from the detector centre the rotation-centre search looks "
        "(default: a quarter of the detector width).",
        "px",
        ge=0.5,
    )
    slab_rows: int = _param(
        8, "Sinogram rows reconstructed together in one task (one GPU call).", "rows", ge=1
    )


class SegmentationSection(_Section):
    """``[segmentation]``: five-phase segmentation of the reconstruction."""

    denoise_sigma_voxels: float = _param(
        1.0, "Gaussian denoising before thresholding (0: none).", "voxels", ge=0
    )
    histogram_bins: int = _param(
        256, "Bins of the global histogram that multi-Otsu thresholds.", ge=16
    )
    thresholds: Thresholds | None = _param(
        None,
        "Four increasing attenuation thresholds between the five grey classes; "
        "default: multi-Otsu of the volume's histogram.",
        "1/µm",
        min_length=4,
        max_length=4,
    )
    graphite_min_radius_um: float = _param(
        1.0,
        "Low-attenuation objects at least this large are graphite, smaller ones pore.",
        "µm",
        gt=0,
    )
    sei_max_um: float = _param(
        0.6, "Intermediate grey within this distance of silicon is SEI, elsewhere pore.", "µm", gt=0
    )
    porosity: float | None = _param(
        None,
        "Known porosity (volume fraction): the run warns when the segmented pore fraction "
        "differs by more than 0.05.",
        "",
        gt=0,
        lt=1,
    )


class LabellingSection(_Section):
    """``[labelling]``: silicon particles as connected components."""

    min_volume_voxels: int = _param(27, "Smaller particles are dropped.", "voxels", ge=1)
    connectivity: Literal[6, 18, 26] = _param(
        6, "Neighbours that connect voxels: faces (6), edges (18) or corners (26)."
    )
    split_touching: bool = _param(False, "Split touching particles (distance watershed).")


class MeasureSection(_Section):
    """``[measure]``: ray-traced gaps between silicon and CBD."""

    n_rays: int = _param(256, "Rays per particle (Fibonacci sphere).", "rays", ge=6)
    max_ray_length_um: float = _param(
        3.0, "Rays that meet no CBD within this length are not counted.", "µm", gt=0
    )


class SemSection(_Section):
    """``[sem]``: 2D segmentation and gaps of SEM cross-sections."""

    denoise_sigma_px: float = _param(1.0, "Gaussian denoising (0: none).", "px", ge=0)
    thresholds: Thresholds | None = _param(
        None,
        "Four backscatter-intensity boundaries SEI | graphite | epoxy | silicon | CBD; "
        "default: from the grey levels of each image's flat regions.",
        "grey value",
        min_length=4,
        max_length=4,
    )
    min_area_px: int = _param(20, "Smaller silicon sections are dropped.", "px", ge=1)
    n_rays_2d: int = _param(64, "In-plane rays per silicon section.", "rays", ge=4)
    max_ray_length_um: float = _param(
        3.0, "Rays that meet no CBD within this length are not counted.", "µm", gt=0
    )


class FitSection(_Section):
    """``[fit]``: the model fit and its bootstrap (:func:`debond.model.fit`)."""

    bootstrap: int = _param(2000, "Bootstrap replicates (0: the full-data fit alone).", ge=0)
    seed: int = _param(0, "Seed of the resampling; a seed gives the same result.", ge=0)
    sigma_gap_um: float | None = _param(
        None, "Measurement noise of a mean gap (default: estimated).", "µm", gt=0
    )
    sigma_retention: float | None = _param(
        None, "Residual scale of the capacity retention (default: estimated).", "", gt=0
    )
    capacity_population: Literal["auto", "3d", "sections"] = _param(
        "auto",
        "Particles of the capacity term: the 3D particles, or the 3D size distribution "
        "unfolded from the SEM sections (auto: the sections where there are any).",
    )


class CampaignFile(_Section):
    """The whole campaign file, as declared (paths as written, relative or not)."""

    campaign: CampaignSection = Field(description="Name and store.")
    material: MaterialSection = Field(default_factory=MaterialSection)
    sample: list[SampleSection] = Field(min_length=1, description="The samples.")
    electrochemistry: ElectrochemistrySection = Field(default_factory=ElectrochemistrySection)
    ingest: IngestSection = Field(default_factory=IngestSection)
    prep: PrepSection = Field(default_factory=PrepSection)
    reconstruction: ReconstructionSection = Field(default_factory=ReconstructionSection)
    segmentation: SegmentationSection = Field(default_factory=SegmentationSection)
    labelling: LabellingSection = Field(default_factory=LabellingSection)
    measure: MeasureSection = Field(default_factory=MeasureSection)
    sem: SemSection = Field(default_factory=SemSection)
    fit: FitSection = Field(default_factory=FitSection)

    @field_validator("sample")
    @classmethod
    def _unique_ids(cls, samples: list[SampleSection]) -> list[SampleSection]:
        first: dict[str, int] = {}
        for index, sample in enumerate(samples):
            if sample.id in first:
                raise ValueError(
                    f"duplicate sample id {sample.id!r} in sample[{first[sample.id]}] "
                    f"and sample[{index}]; expected unique ids"
                )
            first[sample.id] = index
        return samples


def _section_classes() -> dict[str, type[_Section]]:
    """Section name → its model class (``sample`` → :class:`SampleSection`)."""
    out: dict[str, type[_Section]] = {}
    for name, field in CampaignFile.model_fields.items():
        annotation = field.annotation
        if typing.get_origin(annotation) is list:
            annotation = typing.get_args(annotation)[0]
        assert isinstance(annotation, type) and issubclass(annotation, _Section)
        out[name] = annotation
    return out


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Parameter:
    """One declared parameter of the campaign file.

    Attributes
    ----------
    section : str
        Its table (``"reconstruction"``; ``"sample"`` for ``[[sample]]`` keys).
    key : str
        Its key (``"iterations"``).
    type : str
        Its type in words (``"int"``, ``"'fbp' | 'sirt' | 'cgls'"``, ``"list of float or none"``).
    default : object
        Its default; ``None`` when absent by default; :data:`REQUIRED` when required.
    unit : str
        Its unit (``"µm"``), ``""`` when dimensionless or not a quantity.
    help : str
        What it does.
    """

    section: str
    key: str
    type: str
    default: Any
    unit: str
    help: str


class _Required:
    def __repr__(self) -> str:
        return "required"


#: The default of a required parameter in :func:`parameter_table`.
REQUIRED: Any = _Required()


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " | ".join(names) + (" or none" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"table of {_type_name(args[1])}"
    return getattr(annotation, "__name__", str(annotation))


def _unit(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    unit = extra.get("unit", "") if isinstance(extra, dict) else ""
    return str(unit)


def _default(field: FieldInfo) -> Any:
    if field.is_required():
        return REQUIRED
    return field.get_default(call_default_factory=True)


def parameter_table() -> list[Parameter]:
    """Every key of the campaign file, in file order, with type, default, unit and help.

    Returns
    -------
    list of Parameter
        One row per key of every section; ``[[sample]]`` keys under section
        ``"sample"``.

    Examples
    --------
    >>> rows = {(p.section, p.key): p for p in parameter_table()}
    >>> rows["prep", "median_size"].default, rows["prep", "median_size"].unit
    (7, 'px')
    """
    rows = []
    for section, model in _section_classes().items():
        for key, field in model.model_fields.items():
            rows.append(
                Parameter(
                    section,
                    key,
                    _type_name(field.annotation),
                    _default(field),
                    _unit(field),
                    field.description or "",
                )
            )
    return rows


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
    cycles : int
        Cycles before imaging, ≥ 0.
    voxel_size_um : float
        Voxel edge, µm.
    txm : Path or None
        Data Exchange HDF5 file or TIFF-stack folder (absolute); None with `phases`.
    phases : Path or None
        A segmented volume (TIFF, absolute); None with `txm`.
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
    cycles: int
    voxel_size_um: float
    txm: Path | None
    phases: Path | None
    phase_codes: dict[str, int] | None
    rotation_centre_px: float | None
    sem: tuple[Path, ...]
    sem_patterns: tuple[str, ...]
    sem_pixel_size_um: float | None

    @property
    def first_stage(self) -> str:
        """The first 3D stage this sample runs: ``"ingest"``, or ``"label"`` with `phases`."""
        return "ingest" if self.txm is not None else "label"

    @property
    def where(self) -> str:
        """How errors name this sample: ``sample[2] ('c03')``."""
        return f"sample[{self.index}] ({self.id!r})"


@dataclass(frozen=True)
class Campaign:
    """A validated campaign file; obtain one with :func:`load_campaign`.

    Attributes
    ----------
    path : Path
        The campaign file (absolute).
    declared : CampaignFile
        The file's content as declared, defaults filled, paths as written.
    samples : list of Sample
        The samples, in file order, paths resolved.
    """

    path: Path
    declared: CampaignFile
    samples: list[Sample]

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
        """``tables/`` beside the campaign file (particle table, fit results)."""
        return self.folder / "tables"

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
    def electrode_mass_mg(self) -> float | None:
        """Coating mass of the cycled electrode, mg (None without cycling data)."""
        return self.declared.electrochemistry.electrode_mass_mg

    def stage_parameters(self, stage: str) -> dict[str, Any]:
        """The parameters of a stage as a plain dict, defaults filled (for provenance).

        Parameters
        ----------
        stage : str
            A stage of ``debond run`` (``ingest, prep, recon, segment, label,
            measure, sem``), ``fit``, or a section name (``reconstruction``).

        Returns
        -------
        dict
            A fresh dict of plain Python values (str, int, float, bool, list, None).
        """
        section = STAGE_SECTIONS.get(stage, stage)
        if section not in {*STAGE_SECTIONS.values(), "fit"}:
            raise ValueError(
                f"unknown stage {stage!r}; expected one of {', '.join([*STAGES, 'fit'])}"
            )
        model: BaseModel = getattr(self.declared, section)
        return model.model_dump()

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
        projections = self.declared.ingest.tiff_projections
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


def _is_url(location: str) -> bool:
    return _URL.match(location) is not None


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


def _samples(folder: Path, declared: CampaignFile) -> list[Sample]:
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


def _model_at(location: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The section model that holds the key at `location`, if any."""
    if len(location) == 1:
        return CampaignFile
    sections = _section_classes()
    name = location[0]
    if not isinstance(name, str) or name not in sections:
        return None
    depth = 3 if name == "sample" else 2
    return sections[name] if len(location) == depth else None


def _describe(problem: Mapping[str, Any]) -> str:
    """One pydantic error as "found …, expected …"."""
    location = tuple(problem["loc"])
    kind, message = problem["type"], str(problem["msg"])
    model = _model_at(location)
    if kind == "extra_forbidden":
        keys = list(model.model_fields) if model is not None else []
        text = "unknown key"
        close = difflib.get_close_matches(str(location[-1]), keys, n=1)
        if close:
            text += f"; did you mean {close[0]!r}?"
        return text + (f" Expected one of: {', '.join(keys)}" if keys else "")
    if kind == "missing":
        field = None if model is None else model.model_fields.get(str(location[-1]))
        what = "" if field is None else f" {_type_name(field.annotation)}: {field.description}"
        return "missing; expected" + (what or " a value")
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if message.startswith("Input should be "):
        expected = message.removeprefix("Input should be ")
        if expected.startswith(("greater", "less")):
            expected = "a value " + expected
        return f"found {_found(problem.get('input'))}, expected {expected}"
    return f"{message}; found {_found(problem.get('input'))}"


def _explain(path: Path, error: ValidationError, raw: Mapping[str, Any]) -> CampaignError:
    problems = error.errors()
    lines = [f"{path}: invalid campaign file ({len(problems)} problem(s)):"]
    for problem in problems:
        location = tuple(problem["loc"])
        line = f"  {_key(location) or '(top level)'}: {_describe(problem)}"
        if len(location) >= 2 and location[0] == "sample" and isinstance(location[1], int):
            samples = raw.get("sample")
            entry = samples[location[1]] if isinstance(samples, list) else None
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                line += f" (sample {entry['id']!r})"
        lines.append(line)
    return CampaignError("\n".join(lines))


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


def load_campaign(path: str | os.PathLike[str], *, check_files: bool = True) -> Campaign:
    """Read and validate a campaign file.

    Parameters
    ----------
    path : str or path-like
        The TOML file. Relative paths inside it resolve against its folder.
    check_files : bool, default True
        Check that every raw input exists (each sample's `txm` or `phases`,
        each SEM glob matching at least one file, the cycling CSV) and report
        all missing ones at once. With False, see :meth:`Campaign.check_inputs`.

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
        sample ids, a sample with neither or both of `txm` and `phases`;
        a TOML syntax error with its line; missing raw files.

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
    >>> campaign.samples[0].first_stage, campaign.stage_parameters("recon")["iterations"]
    ('label', 1000)
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
    try:
        declared = CampaignFile.model_validate(raw)
    except ValidationError as error:
        raise _explain(path, error, raw) from None
    campaign = Campaign(path, declared, _samples(path.parent, declared))
    if check_files:
        campaign.check_inputs()
    return campaign


# --------------------------------------------------------------------------- writing

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}
_ESCAPES["\r"] = "\\r"


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    """One TOML value: string, integer, float, boolean, array or inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest round-tripping form: 0.1, 1e-06, 20.0
    if isinstance(value, str | os.PathLike):
        return _toml_string(os.fspath(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = [f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items()]
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML: {value!r}")


def _comment(field: FieldInfo | None) -> str:
    if field is None or not field.description:
        return ""
    unit = _unit(field)
    return f"  # {field.description}" + (f" [{unit}]" if unit else "")


def _table(header: str, entry: Mapping[str, Any], model: type[BaseModel] | None) -> list[str]:
    lines = [header]
    for key, value in entry.items():
        if value is None:  # absent: TOML has no null
            continue
        field = None if model is None else model.model_fields.get(key)
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}{_comment(field)}")
    return lines


def _rebased(campaign: Campaign, folder: Path) -> CampaignFile:
    """The declared file with relative paths made absolute, for a file in another folder."""
    declared = campaign.declared
    if folder == campaign.folder:
        return declared
    old = campaign.folder

    def absolute(value: str | None) -> str | None:
        return None if value is None else str(_resolve(old, value))

    def pattern(value: str) -> str:
        expanded = os.path.expanduser(value)
        return expanded if os.path.isabs(expanded) else os.path.join(glob.escape(str(old)), value)

    store = declared.campaign.store
    samples = [
        s.model_copy(
            update={
                "txm": absolute(s.txm),
                "phases": absolute(s.phases),
                "sem": [pattern(p) for p in s.sem],
            }
        )
        for s in declared.sample
    ]
    e = declared.electrochemistry
    return declared.model_copy(
        update={
            "campaign": declared.campaign.model_copy(
                update={"store": store if _is_url(store) else absolute(store)}
            ),
            "sample": samples,
            "electrochemistry": e.model_copy(update={"cycling": absolute(e.cycling)}),
        }
    )


def _declared(document: Campaign | CampaignFile | Mapping[str, Any], where: str) -> CampaignFile:
    if isinstance(document, Campaign):
        return document.declared
    if isinstance(document, CampaignFile):
        return document
    try:
        return CampaignFile.model_validate(dict(document))
    except ValidationError as error:
        raise _explain(Path(where), error, document) from None


def campaign_toml(
    document: Campaign | CampaignFile | Mapping[str, Any], *, comments: bool = True
) -> str:
    """The text of a campaign file: sections as tables, samples as ``[[sample]]``.

    Parameters
    ----------
    document : Campaign, CampaignFile or mapping
        What to write. A mapping is validated first (as if loaded), so the
        text holds every parameter with its default filled in.
    comments : bool, default True
        Follow each key with its help text and unit as a comment (in
        ``[[sample]]``, on the first sample only).

    Returns
    -------
    str
        TOML that :func:`load_campaign` reads back to the same declaration.
        Absent optional values (``None``) are left out; TOML has no null.

    Raises
    ------
    CampaignError
        When a mapping does not validate.

    Examples
    --------
    >>> text = campaign_toml({"campaign": {"name": "x"}, "sample": [
    ...     {"id": "c0", "cycles": 0, "txm": "c0.h5", "voxel_size_um": 0.03}]})
    >>> text.splitlines()[3:5]
    ['[campaign]', 'name = "x"  # Campaign name.']
    """
    declared = _declared(document, "<campaign document>")
    models = _section_classes()
    lines = [
        "# debond campaign file. Every key, its default, unit and meaning:",
        "# debond.campaign.parameter_table().",
        "",
    ]
    for section, content in declared.model_dump().items():
        model = models[section] if comments else None
        entries = content if isinstance(content, list) else [content]
        header = f"[[{section}]]" if isinstance(content, list) else f"[{section}]"
        for i, entry in enumerate(entries):  # samples: help on the first only
            lines += [*_table(header, entry, model if i == 0 else None), ""]
    return "\n".join(lines)


def dump_campaign(
    document: Campaign | CampaignFile | Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    comments: bool = True,
) -> Path:
    """Validate a campaign and write it as a TOML campaign file.

    Parameters
    ----------
    document : Campaign, CampaignFile or mapping
        What to write (see :func:`campaign_toml`). A loaded :class:`Campaign`
        written into another folder gets its relative paths made absolute,
        so the new file names the same raw files and store.
    path : str or path-like
        The file to write (its folder must exist).
    comments : bool, default True
        Follow each key with its help text and unit.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    CampaignError
        When a mapping does not validate (named after `path`).
    """
    target = Path(os.path.abspath(path))
    declared: Campaign | CampaignFile = (
        _rebased(document, target.parent)
        if isinstance(document, Campaign)
        else _declared(document, str(target))
    )
    target.write_text(campaign_toml(declared, comments=comments), encoding="utf-8")
    return target


#: The former name of :func:`dump_campaign` (used by :mod:`debond.synth`).
write_campaign_file = dump_campaign
