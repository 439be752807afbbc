"""Campaign files: the TOML that describes an experiment, validated on load.

One declaration per parameter (default, type, unit, help) in pydantic models;
unknown keys are errors. Relative paths are resolved against the campaign
file's folder, SEM globs are expanded, and every missing raw file is reported
at once, before any work starts.

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
    [electrochemistry]
    cycling = "echem/cycling.csv"
    electrode_mass_mg = 2.0
    [reconstruction]
    algorithm = "sirt"
    iterations = 1000
"""

from __future__ import annotations

import glob
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from debond.model import Material
from debond.model.cycling import Recipe


class CampaignError(ValueError):
    """A campaign file is invalid or names files that do not exist."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class CampaignSection(_Section):
    name: str = Field(description="Campaign name.")
    store: str = Field(
        "store.zarr", description="Zarr store: a path (relative to this file) or a URL."
    )


class MaterialSection(_Section):
    volumetric_expansion: float = Field(2.8, gt=0, description="Silicon ΔV/V at full lithiation.")
    half_cycle_hours: float = Field(20.0, gt=0, description="Duration of one half-cycle, h.")


class SampleSection(_Section):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Sample identifier.")
    cycles: int = Field(ge=0, description="Electrochemical cycles before imaging (0: pristine).")
    txm: str | None = Field(None, description="Data Exchange HDF5 file or TIFF-stack folder.")
    phases: str | None = Field(None, description="A segmented volume (TIFF) to start at `label`.")
    phase_codes: dict[str, int] | None = Field(
        None,
        description="Grey values of the phases in `phases`, e.g. {pore = 0, silicon = 85}.",
    )
    voxel_size_um: float = Field(gt=0, description="Voxel edge, µm.")
    rotation_centre_px: float | None = Field(
        None, description="Rotation centre (detector column, px); overrides the automatic search."
    )
    sem: list[str] = Field(default_factory=list, description="Glob patterns of SEM TIFF images.")
    sem_pixel_size_um: float | None = Field(
        None, gt=0, description="SEM pixel size, µm (default: the TIFF's resolution tags)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> SampleSection:
        if (self.txm is None) == (self.phases is None):
            raise ValueError(
                "give exactly one of 'txm' (raw projections) or 'phases' (a segmentation)"
            )
        if self.phases is not None and not self.phase_codes:
            raise ValueError(
                "'phases' needs 'phase_codes', e.g. {pore = 0, silicon = 85, cbd = 170}"
            )
        return self


class ElectrochemistrySection(_Section):
    cycling: str | None = Field(None, description="CSV with cycle, charge_capacity_mAh.")
    electrode_mass_mg: float | None = Field(None, gt=0, description="Coating mass, mg.")
    silicon_fraction: float = Field(Recipe.silicon_fraction, gt=0, le=1)
    silicon_capacity_mAh_per_g: float = Field(Recipe.silicon_capacity_mAh_per_g, gt=0)
    graphite_fraction: float = Field(Recipe.graphite_fraction, ge=0, lt=1)
    graphite_capacity_mAh_per_g: float = Field(Recipe.graphite_capacity_mAh_per_g, gt=0)

    @model_validator(mode="after")
    def _mass_with_cycling(self) -> ElectrochemistrySection:
        if self.cycling is not None and self.electrode_mass_mg is None:
            raise ValueError("'cycling' needs 'electrode_mass_mg' (coating mass, mg)")
        return self


class IngestSection(_Section):
    projections_per_chunk: int = Field(
        8, ge=1, description="Projections per chunk of `projections`."
    )


class PrepSection(_Section):
    median_size: int = Field(7, ge=1, description="Median filter per projection, pixels (odd).")
    ring_removal: bool = Field(False, description="Remove ring artefacts in sinogram space.")

    @field_validator("median_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"must be odd; got {value}")
        return value


class ReconstructionSection(_Section):
    algorithm: Literal["fbp", "sirt", "cgls"] = Field("sirt", description="ASTRA algorithm.")
    iterations: int = Field(1000, ge=1, description="Iterations of SIRT / CGLS (the paper: 1000).")
    nonnegative: bool = Field(True, description="Clip negative attenuation during SIRT.")
    rows_per_task: int = Field(8, ge=1, description="Sinogram rows reconstructed per task.")


class SegmentationSection(_Section):
    denoise_sigma_voxels: float = Field(1.0, ge=0, description="Gaussian denoising, voxels.")
    thresholds: list[float] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="Attenuation thresholds (1/µm) pore|SEI|silicon|CBD; default multi-Otsu.",
    )
    graphite_min_radius_um: float = Field(1.0, gt=0, description="Smallest graphite particle, µm.")
    porosity: float | None = Field(
        None, gt=0, lt=1, description="Known porosity (volume fraction)."
    )


class LabellingSection(_Section):
    min_volume_voxels: int = Field(27, ge=1, description="Smaller particles are dropped, voxels.")
    split_touching: bool = Field(False, description="Split touching particles (watershed).")


class MeasureSection(_Section):
    n_rays: int = Field(256, ge=6, description="Rays per particle (Fibonacci sphere).")
    max_ray_length_um: float = Field(3.0, gt=0, description="Longer rays are not counted, µm.")
    margin_voxels: int = Field(
        4, ge=0, description="Margin of particle crops beyond the longest ray."
    )


class SemSection(_Section):
    thresholds: list[float] | None = Field(
        None, description="Intensity thresholds; default multi-Otsu."
    )
    n_rays: int = Field(64, ge=4, description="In-plane rays per section.")


class FitSection(_Section):
    bootstrap: int = Field(2000, ge=0, description="Bootstrap replicates.")
    seed: int = Field(0, description="Seed of the resampling.")


class CampaignFile(_Section):
    """The whole campaign file, as declared."""

    campaign: CampaignSection
    material: MaterialSection = Field(default_factory=MaterialSection)
    sample: list[SampleSection] = Field(min_length=1)
    electrochemistry: ElectrochemistrySection = Field(default_factory=ElectrochemistrySection)
    ingest: IngestSection = Field(default_factory=IngestSection)
    prep: PrepSection = Field(default_factory=PrepSection)
    reconstruction: ReconstructionSection = Field(default_factory=ReconstructionSection)
    segmentation: SegmentationSection = Field(default_factory=SegmentationSection)
    labelling: LabellingSection = Field(default_factory=LabellingSection)
    measure: MeasureSection = Field(default_factory=MeasureSection)
    sem: SemSection = Field(default_factory=SemSection)
    fit: FitSection = Field(default_factory=FitSection)


#: Stage names of `debond run` and their sections in the campaign file.
STAGE_SECTIONS = {
    "ingest": "ingest",
    "prep": "prep",
    "recon": "reconstruction",
    "segment": "segmentation",
    "label": "labelling",
    "measure": "measure",
    "sem": "sem",
}


@dataclass(frozen=True)
class Sample:
    """A sample with its paths resolved (absolute) and its SEM globs expanded."""

    id: str
    cycles: int
    voxel_size_um: float
    txm: Path | None
    phases: Path | None
    phase_codes: dict[str, int] | None
    rotation_centre_px: float | None
    sem: tuple[Path, ...]
    sem_patterns: tuple[str, ...]
    sem_pixel_size_um: float | None


@dataclass(frozen=True)
class Campaign:
    """A validated campaign file."""

    path: Path
    declared: CampaignFile
    samples: tuple[Sample, ...]

    @property
    def name(self) -> str:
        return self.declared.campaign.name

    @property
    def store_location(self) -> str:
        """The store: an absolute path, or a URL as given."""
        store = self.declared.campaign.store
        return store if "://" in store else str(_resolve(self.path.parent, store))

    @property
    def tables_dir(self) -> Path:
        """``tables/`` beside the campaign file."""
        return self.path.parent / "tables"

    @property
    def material(self) -> Material:
        m = self.declared.material
        return Material(m.volumetric_expansion, m.half_cycle_hours)

    @property
    def recipe(self) -> Recipe:
        e = self.declared.electrochemistry
        return Recipe(
            e.silicon_fraction,
            e.silicon_capacity_mAh_per_g,
            e.graphite_fraction,
            e.graphite_capacity_mAh_per_g,
        )

    @property
    def cycling(self) -> Path | None:
        cycling = self.declared.electrochemistry.cycling
        return None if cycling is None else _resolve(self.path.parent, cycling)

    def stage_parameters(self, stage: str) -> dict[str, Any]:
        """The parameters of a stage as a plain dict (for provenance)."""
        if stage not in STAGE_SECTIONS:
            raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_SECTIONS)}")
        section: BaseModel = getattr(self.declared, STAGE_SECTIONS[stage])
        return section.model_dump()

    def sample(self, sample_id: str) -> Sample:
        for sample in self.samples:
            if sample.id == sample_id:
                return sample
        raise KeyError(
            f"{self.path}: no sample {sample_id!r}; samples: "
            f"{', '.join(s.id for s in self.samples)}"
        )


def _resolve(base: Path, path: str) -> Path:
    expanded = Path(os.path.expanduser(path))
    return expanded if expanded.is_absolute() else (base / expanded).resolve()


def _key(location: tuple[int | str, ...]) -> str:
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _explain(path: Path, error: ValidationError) -> CampaignError:
    lines = [f"{path}: invalid campaign file"]
    for problem in error.errors():
        location = tuple(p for p in problem["loc"] if p not in ("function-after",))
        key = _key(location) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        elif problem["type"] != "missing" and "input" in problem:
            message += f" (found {problem['input']!r})"
        lines.append(f"  {key}: {message}")
    return CampaignError("\n".join(lines))


def load_campaign(path: str | os.PathLike[str], *, check_files: bool = True) -> Campaign:
    """Read and validate a campaign file.

    Parameters
    ----------
    path : path
        The TOML file.
    check_files : bool
        Report raw files (txm, phases, cycling CSV, SEM globs) that do not
        exist, all at once.

    Returns
    -------
    Campaign

    Raises
    ------
    CampaignError
        (a ``ValueError``) naming the file, each offending key (e.g.
        ``sample[2].voxel_size_um``), what was found and what was expected;
        a TOML syntax error with its line; duplicate sample ids; missing files.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise CampaignError(f"campaign file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise CampaignError(f"{path}: not valid TOML: {error}") from error
    try:
        declared = CampaignFile.model_validate(raw)
    except ValidationError as error:
        raise _explain(path, error) from None

    seen: dict[str, int] = {}
    for index, sample in enumerate(declared.sample):
        if sample.id in seen:
            raise CampaignError(
                f"{path}: duplicate sample id {sample.id!r} in sample[{seen[sample.id]}] "
                f"and sample[{index}]"
            )
        seen[sample.id] = index

    base = path.parent
    samples = []
    missing = []
    for index, s in enumerate(declared.sample):
        files = []
        for pattern in s.sem:
            matches = sorted(glob.glob(str(_resolve(base, pattern))))
            if not matches:
                missing.append(f"sample[{index}] ({s.id}).sem: no file matches {pattern!r}")
            files += [Path(m) for m in matches]
        txm = None if s.txm is None else _resolve(base, s.txm)
        phases = None if s.phases is None else _resolve(base, s.phases)
        for key, target in (("txm", txm), ("phases", phases)):
            if target is not None and not target.exists():
                missing.append(f"sample[{index}] ({s.id}).{key}: {target} does not exist")
        samples.append(
            Sample(
                s.id,
                s.cycles,
                s.voxel_size_um,
                txm,
                phases,
                s.phase_codes,
                s.rotation_centre_px,
                tuple(files),
                tuple(s.sem),
                s.sem_pixel_size_um,
            )
        )
    campaign = Campaign(path, declared, tuple(samples))
    if campaign.cycling is not None and not campaign.cycling.is_file():
        missing.append(f"electrochemistry.cycling: {campaign.cycling} does not exist")
    if check_files and missing:
        raise CampaignError(f"{path}: missing input files\n  " + "\n  ".join(missing))
    return campaign


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML: {value!r}")


def campaign_toml(document: CampaignFile | dict[str, Any]) -> str:
    """A campaign file's text: sections as tables, samples as ``[[sample]]``.

    ``None`` values are left out (they mean "not given").
    """
    data = document.model_dump() if isinstance(document, CampaignFile) else document
    lines: list[str] = []
    for section, content in data.items():
        entries = content if isinstance(content, list) else [content]
        for entry in entries:
            lines.append(f"[[{section}]]" if isinstance(content, list) else f"[{section}]")
            for key, value in entry.items():
                if value is not None:
                    lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
    return "\n".join(lines)


def write_campaign_file(
    document: CampaignFile | dict[str, Any], path: str | os.PathLike[str]
) -> Path:
    """Validate a campaign document and write it as TOML."""
    declared = (
        document if isinstance(document, CampaignFile) else CampaignFile.model_validate(document)
    )
    path = Path(path)
    path.write_text(campaign_toml(declared), encoding="utf-8")
    return path
