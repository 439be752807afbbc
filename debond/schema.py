"""The campaign file's schema: every section, every key, declared once.

The sections of the campaign itself (``[campaign]``, ``[material]``,
``[[sample]]``, ``[electrochemistry]``, ``[fit]``) are declared here; each
stage's section is declared in its stage's module (:mod:`debond.stages`) and
joins the file model through the registry (:func:`campaign_model`). Keys and
sections renamed since earlier versions are listed in :data:`RENAMED`, so an
old file gets an error that names the new key.

>>> rows = {(p.section, p.key): p for p in parameter_table()}
>>> rows["recon", "iterations"].default, rows["segment", "sigma_voxels"].unit
(1000, 'voxels')
"""

from __future__ import annotations

import functools
import string
import types
import typing
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

from debond.model.cycling import Recipe
from debond.pipeline.segment import PHASE_NAMES
from debond.sections import Section, Thresholds, param
from debond.stages import REGISTRY, Registry

__all__ = [
    "RENAMED",
    "REQUIRED",
    "CampaignBase",
    "CampaignFile",
    "Parameter",
    "campaign_model",
    "parameter_table",
    "renamed_keys",
    "section_classes",
]

#: Phases a given segmentation must name: the gap is pore between silicon and CBD.
REQUIRED_PHASES = ("pore", "silicon", "cbd")

#: Keys of a sample that bring a volume for the 3D stages (at most one of them).
VOLUME_SOURCES = ("txm", "phases")

_RECIPE = Recipe()

#: Sections and keys of earlier versions and their names now ("section" or
#: "section.key"). The stage sections carry their stage's name, and their keys
#: the kernel's keyword names.
RENAMED = {
    "reconstruction": "recon",
    "segmentation": "segment",
    "labelling": "label",
    "prep.clip_min": "prep.clip_to",
    "segment.denoise_sigma_voxels": "segment.sigma_voxels",
    "segment.histogram_bins": "segment.bins",
    "sem.denoise_sigma_px": "sem.sigma_px",
    "sem.n_rays_2d": "sem.n_rays",
}


class CampaignSection(Section):
    """``[campaign]``: the campaign's name and where its store lives."""

    name: str = param(..., "Campaign name.", min_length=1)
    store: str = param(
        "store.zarr",
        "Zarr store: a path (relative to the campaign file) or an fsspec URL (s3://…).",
        min_length=1,
    )


class MaterialSection(Section):
    """``[material]``: silicon and cycling protocol (:class:`debond.model.Material`)."""

    volumetric_expansion: float = param(
        2.8, "Silicon ΔV/V at full lithiation (2.8 for 280 %).", "", gt=0
    )
    half_cycle_hours: float = param(20.0, "Duration T of one half-cycle (C/20: 20 h).", "h", gt=0)
    silicon_radius_um: Thresholds | None = param(
        None,
        "Size prior: [smallest, largest] equivalent radius of the silicon particles. "
        "Touching particles are split with it, smaller objects are not particles, larger "
        "ones are flagged (default: none, and no splitting).",
        "µm",
        min_length=2,
        max_length=2,
    )

    @field_validator("silicon_radius_um")
    @classmethod
    def _plausible_radii(cls, radii: list[float] | None) -> list[float] | None:
        if radii is None:
            return None
        low, high = radii
        if low <= 0:
            raise ValueError(f"found {radii}, expected radii above 0 µm")
        if high > MAX_PRIOR_RADIUS_UM:
            raise ValueError(
                f"found {radii}: a silicon particle of {high:g} µm radius; expected µm "
                f"(at most {MAX_PRIOR_RADIUS_UM:g}); were nanometres or voxels given?"
            )
        return radii


#: Largest radius a size prior may name, µm (a larger one is a unit mistake).
MAX_PRIOR_RADIUS_UM = 100.0
#: Smallest radius of a size prior in voxels of a sample (a smaller one cannot be imaged).
MIN_PRIOR_RADIUS_VOXELS = 1.5
#: Default standard uncertainties of where the segmentation places the silicon
#: surface and the CBD's, voxels ([fit]; see FitSection).
SILICON_SURFACE_SD_VOXELS = 0.26
CBD_SURFACE_SD_VOXELS = 0.40

PhaseCode = Annotated[int, Field(ge=0)]

#: What a sample id may be, in words (errors and ``debond params`` quote it).
SAMPLE_ID_RULE = (
    "a folder name of letters, digits, '_', '.' and '-', not '.' or '..' and not starting with '__'"
)
_SAFE_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_.-")


def unsafe_segment(text: str) -> str | None:
    """Why `text` cannot name a folder of the store, or None when it can.

    A sample id becomes the store's group ``samples/<id>`` and the table
    ``tables/samples/<id>.parquet``, so it must be one path segment that no
    filesystem or Zarr reads otherwise (Zarr reserves names starting with
    ``__``).

    Returns
    -------
    str or None
        The first rule `text` breaks, as "is empty", "holds '/'" …

    Examples
    --------
    >>> unsafe_segment("c03"), unsafe_segment(".."), unsafe_segment("c 03")
    (None, "is '.' or '..'", "holds ' '")
    """
    if not text:
        return "is empty"
    if text in (".", ".."):
        return "is '.' or '..'"
    if text != text.strip():
        return "starts or ends with whitespace"
    for character in text:
        if character in "/\\":
            return f"holds {character!r}"
        if unicodedata.category(character) == "Cc":
            return "holds a control character"
        if character not in _SAFE_CHARACTERS:
            return f"holds {character!r}"
    if text.startswith("__"):
        return "starts with '__'"
    return None


class SampleSection(Section):
    """``[[sample]]``: one imaged electrode.

    Its images are a volume for the 3D stages (``txm``, raw projections, or
    ``phases``, a segmentation; at most one, with ``voxel_size_um``), SEM
    cross-sections for the ``sem`` stage (``sem``), or both. ``cycles`` is
    asked for only by what needs it: the particle table and the fit.
    """

    id: str = param(
        ...,
        "Sample identifier, unique; names the sample's group in the store and its table "
        "files: " + SAMPLE_ID_RULE + ".",
    )
    cycles: int | None = param(
        None,
        "Electrochemical cycles before imaging (0: pristine); needed by the fit and the "
        "particle table, not by the image stages (a reconstruction-only campaign may omit it).",
        ge=0,
    )
    txm: str | None = param(
        None,
        "Raw projections: a Data Exchange HDF5 file or a folder of TIFF projections "
        "(a sample needs txm, phases or sem).",
    )
    phases: str | None = param(
        None, "Instead of txm: a segmented volume (TIFF) that starts at the label stage."
    )
    phase_codes: dict[str, PhaseCode] | None = param(
        None,
        "Grey value of each phase in `phases`, e.g. {pore = 0, silicon = 85, cbd = 170}; "
        "names: " + ", ".join(PHASE_NAMES) + ".",
    )
    voxel_size_um: float | None = param(
        None,
        "Voxel edge length; required with txm or phases (not read from the raw file), "
        "unused by a sample with SEM images alone.",
        "µm",
        gt=0,
    )
    rotation_centre_px: float | None = param(
        None,
        "Rotation centre on the detector (column); overrides the automatic search.",
        "px",
        ge=0,
    )
    sem: list[str] = Field(
        default_factory=list,
        description="Glob patterns of SEM cross-section TIFFs (relative to the campaign file); "
        "a sample may bring these alone, without txm or phases.",
        json_schema_extra={"unit": ""},
    )
    sem_pixel_size_um: float | None = param(
        None, "SEM pixel edge length (default: the TIFFs' resolution tags).", "µm", gt=0
    )

    @field_validator("id")
    @classmethod
    def _safe_id(cls, sample_id: str) -> str:
        broken = unsafe_segment(sample_id)
        if broken is not None:
            raise ValueError(f"found {sample_id!r}, which {broken}; expected {SAMPLE_ID_RULE}")
        return sample_id

    @field_validator("voxel_size_um")
    @classmethod
    def _voxel_size_for_a_volume(cls, voxel: float | None, info: ValidationInfo) -> float | None:
        # txm and phases are declared (so validated) before voxel_size_um.
        volume = [key for key in VOLUME_SOURCES if info.data.get(key) is not None]
        if voxel is None and volume:
            raise ValueError(
                f"missing; expected float: the voxel edge length in µm, which the 3D stages "
                f"of {volume[0]!r} need (debond does not read it from the raw file)"
            )
        return voxel

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
        if self.txm is not None and self.phases is not None:
            raise ValueError(
                "found both 'txm' and 'phases'; expected at most one: 'txm' (raw projections) "
                "or 'phases' (a segmentation)"
            )
        if self.txm is None and self.phases is None and not self.sem:
            raise ValueError(
                "found none of 'txm', 'phases' and 'sem'; expected 'txm' (raw projections) "
                "or 'phases' (a segmentation), with or without 'sem' (SEM cross-sections), "
                "or 'sem' alone"
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


class ElectrochemistrySection(Section):
    """``[electrochemistry]``: cycling data and the electrode recipe."""

    cycling: str | None = param(
        None, "Cycling data: CSV with columns cycle, charge_capacity_mAh (or a BioLogic export)."
    )
    electrode_mass_mg: float | None = param(
        None, "Coating mass of the cycled electrode (needed with `cycling`).", "mg", gt=0
    )
    silicon_fraction: float = param(
        _RECIPE.silicon_fraction, "Mass fraction of the silicon (SiOx) material.", "", gt=0, le=1
    )
    silicon_capacity_mAh_per_g: float = param(
        _RECIPE.silicon_capacity_mAh_per_g,
        "Specific capacity of the silicon material.",
        "mAh/g",
        gt=0,
    )
    graphite_fraction: float = param(
        _RECIPE.graphite_fraction, "Mass fraction of graphite.", "", ge=0, lt=1
    )
    graphite_capacity_mAh_per_g: float = param(
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


class FitSection(Section):
    """``[fit]``: the model fit and its bootstrap (:func:`debond.model.fit`)."""

    bootstrap: int = param(2000, "Bootstrap replicates (0: the full-data fit alone).", ge=0)
    seed: int = param(0, "Seed of the resampling; a seed gives the same result.", ge=0)
    sigma_gap_um: float | None = param(
        None, "Measurement noise of a mean gap (default: estimated).", "µm", gt=0
    )
    sigma_retention: float | None = param(
        None, "Residual scale of the capacity retention (default: estimated).", "", gt=0
    )
    capacity_population: Literal["auto", "3d", "sections"] = param(
        "auto",
        "Particles of the capacity term: the 3D particles, or the 3D size distribution "
        "unfolded from the SEM sections (auto: the sections where there are any).",
    )
    # Defaults: the root mean square of the offsets measured on the 15 scans of
    # debond.scans.VARIANTS (benchmarks/family.py; README, "Accuracy").
    silicon_surface_sd_voxels: float = param(
        SILICON_SURFACE_SD_VOXELS,
        "Standard uncertainty of where the segmentation places a particle's silicon "
        "surface, in the sample's voxels; the intervals hold it (0: none).",
        "voxel",
        ge=0,
        le=2,
    )
    cbd_surface_sd_voxels: float = param(
        CBD_SURFACE_SD_VOXELS,
        "Standard uncertainty of where the segmentation places the CBD's surface across "
        "a particle's gap, in the sample's voxels; the intervals hold it (0: none).",
        "voxel",
        ge=0,
        le=2,
    )


class CampaignBase(Section):
    """The sections of every campaign file; :func:`campaign_model` adds the stages'."""

    campaign: CampaignSection = Field(description="Name and store.")
    material: MaterialSection = Field(default_factory=MaterialSection)
    sample: list[SampleSection] = Field(min_length=1, description="The samples.")
    electrochemistry: ElectrochemistrySection = Field(default_factory=ElectrochemistrySection)

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


@functools.cache
def campaign_model(registry: Registry = REGISTRY) -> type[CampaignBase]:
    """The model of a whole campaign file: the base sections, one per stage, then ``[fit]``.

    Parameters
    ----------
    registry : Registry
        The stages whose sections the file holds (default: every stage).
    """
    stages: dict[str, Any] = {
        stage.name: (stage.parameters, Field(default_factory=stage.parameters))
        for stage in registry
    }
    return create_model(
        "CampaignFile",
        __base__=CampaignBase,
        __doc__="The whole campaign file, as declared (paths as written, relative or not).",
        **stages,
        fit=(FitSection, Field(default_factory=FitSection)),
    )


#: The campaign file of every stage in :data:`debond.stages.REGISTRY`.
CampaignFile = campaign_model()


def section_classes(model: type[CampaignBase] = CampaignFile) -> dict[str, type[Section]]:
    """Section name → its model class (``sample`` → :class:`SampleSection`)."""
    out: dict[str, type[Section]] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if typing.get_origin(annotation) is list:
            annotation = typing.get_args(annotation)[0]
        assert isinstance(annotation, type) and issubclass(annotation, Section)
        out[name] = annotation
    return out


def renamed_keys(raw: Mapping[str, Any]) -> list[str]:
    """Sections and keys of an earlier version found in a raw campaign document.

    Returns
    -------
    list of str
        One line per old name: ``"[reconstruction] is now [recon]"``,
        ``"prep.clip_min is now prep.clip_to"``.

    Examples
    --------
    >>> for line in renamed_keys({"segmentation": {"denoise_sigma_voxels": 1.0}}):
    ...     print(line)
    [segmentation] is now [segment]
    segmentation.denoise_sigma_voxels is now segment.sigma_voxels
    """
    found = []
    for section, content in raw.items():
        new_section = RENAMED.get(section)
        if new_section is not None:
            found.append(f"[{section}] is now [{new_section}]")
        if not isinstance(content, Mapping):
            continue
        for key in content:
            new_key = RENAMED.get(f"{new_section or section}.{key}")
            if new_key is not None:
                found.append(f"{section}.{key} is now {new_key}")
    return found


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Parameter:
    """One declared parameter of the campaign file.

    Attributes
    ----------
    section : str
        Its table (``"recon"``; ``"sample"`` for ``[[sample]]`` keys).
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


def type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return type_name(args[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " | ".join(names) + (" or none" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"table of {type_name(args[1])}"
    return getattr(annotation, "__name__", str(annotation))


def _unit(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    unit = extra.get("unit", "") if isinstance(extra, dict) else ""
    return str(unit)


def _default(field: FieldInfo) -> Any:
    if field.is_required():
        return REQUIRED
    return field.get_default(call_default_factory=True)


def parameter_table(model: type[CampaignBase] = CampaignFile) -> list[Parameter]:
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
    (1, 'px')
    """
    rows = []
    for section, declared in section_classes(model).items():
        for key, field in declared.model_fields.items():
            rows.append(
                Parameter(
                    section,
                    key,
                    type_name(field.annotation),
                    _default(field),
                    _unit(field),
                    field.description or "",
                )
            )
    return rows
