"""Campaign files: validation, path resolution, errors that name the key, writing."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from debond.campaign import CampaignError, load_campaign
from debond.campaign_file import campaign_toml, dump_campaign
from debond.model import Material
from debond.schema import (
    CBD_SURFACE_SD_VOXELS,
    REQUIRED,
    SILICON_SURFACE_SD_VOXELS,
    CampaignFile,
    parameter_table,
)
from debond.stages import REGISTRY
from debond.storage import StoreFormatError, open_store

VALID = """
[campaign]
name = "si-graphite"
store = "si-graphite.zarr"
[material]
volumetric_expansion = 2.8
[[sample]]
id = "c00"
cycles = 0
txm = "raw/c00.h5"
voxel_size_um = 0.0299
sem = ["sem/c00_*.tif"]
sem_pixel_size_um = 0.021
[[sample]]
id = "c03"
cycles = 3
phases = "seg/c03.tif"
phase_codes = {pore = 0, silicon = 85, cbd = 170}
voxel_size_um = 0.0299
rotation_centre_px = 1023.5
[electrochemistry]
cycling = "echem/cycling.csv"
electrode_mass_mg = 2.0
[recon]
algorithm = "fbp"
"""

RAW_FILES = ("raw/c00.h5", "sem/c00_1.tif", "sem/c00_0.tif", "seg/c03.tif", "echem/cycling.csv")


def _folder(tmp_path: Path, text: str = VALID) -> Path:
    for name in RAW_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    path = tmp_path / "campaign.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path, **kwargs: bool) -> str:
    with pytest.raises(CampaignError) as error:
        load_campaign(path, **kwargs)
    text = str(error.value)
    assert str(path) in text, "every error names the campaign file"
    return text


# --------------------------------------------------------------------------- valid files


def test_a_valid_file_loads_with_defaults_and_resolved_paths(tmp_path: Path) -> None:
    campaign = load_campaign(_folder(tmp_path))
    assert campaign.name == "si-graphite"
    assert isinstance(campaign.samples, list)
    assert [(s.id, s.index, s.cycles) for s in campaign.samples] == [("c00", 0, 0), ("c03", 1, 3)]
    c00, c03 = campaign.samples
    assert c00.txm == tmp_path / "raw" / "c00.h5" and c00.phases is None
    assert c00.sem == (tmp_path / "sem" / "c00_0.tif", tmp_path / "sem" / "c00_1.tif")
    assert c00.sem_patterns == ("sem/c00_*.tif",) and c00.sem_pixel_size_um == 0.021
    assert c00.rotation_centre_px is None
    assert c03.phases == tmp_path / "seg" / "c03.tif" and c03.txm is None
    assert c03.phase_codes == {"pore": 0, "silicon": 85, "cbd": 170}
    assert c03.rotation_centre_px == 1023.5
    assert campaign.sample("c03") is c03
    assert campaign.store_location == str(tmp_path / "si-graphite.zarr")
    assert campaign.tables_dir == tmp_path / "tables" / "campaign"
    assert campaign.cycling == tmp_path / "echem" / "cycling.csv"
    assert campaign.electrode_mass_mg == 2.0
    assert campaign.material == Material(volumetric_expansion=2.8, half_cycle_hours=20.0)
    assert campaign.recipe.graphite_fraction == 0.70


def test_stage_parameters_are_plain_dicts_with_every_default(tmp_path: Path) -> None:
    campaign = load_campaign(_folder(tmp_path))
    recon = campaign.stage_parameters("recon")
    assert recon["algorithm"] == "fbp" and recon["iterations"] == 1000
    assert recon["nonnegative"] is True
    assert campaign.stage_parameters("prep")["median_size"] == 1
    assert campaign.stage_parameters("prep")["ring_removal"] is False
    assert campaign.stage_parameters("measure")["n_rays"] == 256
    assert campaign.stage_parameters("fit") == {
        "bootstrap": 2000,
        "seed": 0,
        "sigma_gap_um": None,
        "sigma_retention": None,
        "capacity_population": "auto",
        "silicon_surface_sd_voxels": SILICON_SURFACE_SD_VOXELS,
        "cbd_surface_sd_voxels": CBD_SURFACE_SD_VOXELS,
    }
    for stage in REGISTRY.names:
        assert isinstance(campaign.stage_parameters(stage), dict)
    campaign.stage_parameters("measure")["n_rays"] = 1  # a copy: the campaign is unchanged
    assert campaign.stage_parameters("measure")["n_rays"] == 256
    with pytest.raises(ValueError, match="unknown stage 'reconstruct'.*recon"):
        campaign.stage_parameters("reconstruct")


def test_every_parameter_is_declared_with_type_default_and_help() -> None:
    rows = {(p.section, p.key): p for p in parameter_table()}
    assert all(p.help for p in rows.values())
    assert rows["recon", "iterations"].default == 1000
    assert rows["recon", "algorithm"].type == "'auto' | 'fbp' | 'sirt' | 'cgls'"
    assert rows["sample", "id"].default is REQUIRED
    # required only where something needs them: a volume (voxel size), the fit (cycles)
    assert rows["sample", "voxel_size_um"].default is None
    assert "required with txm or phases" in rows["sample", "voxel_size_um"].help
    assert rows["sample", "cycles"].default is None
    assert "needed by the fit" in rows["sample", "cycles"].help
    assert rows["sample", "voxel_size_um"].unit == "µm"
    assert rows["material", "half_cycle_hours"].unit == "h"
    assert rows["segment", "thresholds"].type == "list of float or none"
    sections = {p.section for p in rows.values()}
    assert sections == {
        "campaign",
        "material",
        "sample",
        "electrochemistry",
        *REGISTRY.names,
        "fit",
    }


def test_a_url_store_is_kept_as_given(tmp_path: Path) -> None:
    text = VALID.replace('store = "si-graphite.zarr"', 'store = "s3://bucket/si.zarr"')
    assert load_campaign(_folder(tmp_path, text)).store_location == "s3://bucket/si.zarr"


def test_an_absolute_store_and_parent_paths(tmp_path: Path) -> None:
    store = tmp_path / "elsewhere" / "x.zarr"
    text = VALID.replace('"si-graphite.zarr"', f'"{store.as_posix()}"')
    text = text.replace('txm = "raw/c00.h5"', 'txm = "../shared/c00.h5"')
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "c00.h5").write_bytes(b"x")
    (tmp_path / "campaigns").mkdir()
    path = _folder(tmp_path, text).rename(tmp_path / "campaigns" / "c.toml")
    for name in ("sem", "seg", "echem"):
        (tmp_path / name).rename(tmp_path / "campaigns" / name)
    campaign = load_campaign(path)
    assert campaign.store_location == str(store)
    assert campaign.samples[0].txm == tmp_path / "shared" / "c00.h5"


def test_sem_globs_expand_sorted_without_repeats(tmp_path: Path) -> None:
    text = VALID.replace(
        'sem = ["sem/c00_*.tif"]', 'sem = ["sem/c00_1.tif", "sem/c00_*.tif", "sem/**/*.tiff"]'
    )
    path = _folder(tmp_path, text)
    (tmp_path / "sem" / "deep" / "er").mkdir(parents=True)
    (tmp_path / "sem" / "deep" / "er" / "b.tiff").write_bytes(b"x")
    (tmp_path / "sem" / "deep" / "a.tiff").write_bytes(b"x")
    (tmp_path / "sem" / "c00_9.tif").mkdir()  # a folder is not an image
    names = [p.relative_to(tmp_path).as_posix() for p in load_campaign(path).samples[0].sem]
    assert names == [
        "sem/c00_1.tif",
        "sem/c00_0.tif",
        "sem/deep/a.tiff",
        "sem/deep/er/b.tiff",
    ]


def test_a_tiff_stack_folder_is_a_valid_txm(tmp_path: Path) -> None:
    path = _folder(tmp_path, VALID.replace('"raw/c00.h5"', '"raw/c00"'))
    (tmp_path / "raw" / "c00").mkdir()
    (tmp_path / "raw" / "c00" / "flat_0.tif").write_bytes(b"x")
    with pytest.raises(
        CampaignError,
        match=r"sample\[0\] \('c00'\)\.txm: folder .* no file matching 'proj_\*\.tif' "
        r"\(ingest\.tiff_projections\)",
    ):
        load_campaign(path)
    (tmp_path / "raw" / "c00" / "proj_0000.tif").write_bytes(b"x")
    assert load_campaign(path).samples[0].txm == tmp_path / "raw" / "c00"


# --------------------------------------------------------------------------- what a sample needs

SEM_ONLY = """
[campaign]
name = "sem"
[material]
silicon_radius_um = [0.3, 1.5]
[[sample]]
id = "c00"
cycles = 0
sem = ["sem/c00_*.tif"]
sem_pixel_size_um = 0.021
"""

RECON_ONLY = """
[campaign]
name = "tooth"
[[sample]]
id = "tooth"
txm = "raw/c00.h5"
voxel_size_um = 1.0
[[sample]]
id = "pristine"
cycles = 0
txm = "raw/c00.h5"
voxel_size_um = 1.0
"""


def test_a_sample_may_bring_sem_images_alone(tmp_path: Path) -> None:
    """No txm, phases or voxel size: no 3D chain (has_volume), its SEM images expanded."""
    (sample,) = load_campaign(_folder(tmp_path, SEM_ONLY)).samples
    assert not sample.has_volume
    assert sample.txm is None and sample.phases is None and sample.voxel_size_um is None
    assert sample.sem == (tmp_path / "sem" / "c00_0.tif", tmp_path / "sem" / "c00_1.tif")
    with pytest.raises(ValueError, match=r"sample\[0\] \('c00'\)\.voxel_size_um: not given"):
        _ = sample.voxel_um
    c00, c03 = load_campaign(_folder(tmp_path)).samples
    assert c00.has_volume and c03.has_volume and c00.voxel_um == 0.0299


def test_a_reconstruction_only_campaign_needs_no_cycles_until_the_fit(tmp_path: Path) -> None:
    """No cycles and no [electrochemistry] load; what needs the cycles names sample and key."""
    campaign = load_campaign(_folder(tmp_path, RECON_ONLY))
    assert [s.cycles for s in campaign.samples] == [None, 0]
    assert campaign.cycling is None
    with pytest.raises(CampaignError) as error:
        campaign.require_cycles("the fit")
    text = str(error.value)
    assert text.startswith(f"{campaign.path}: the fit needs the cycles of every sample")
    assert "sample[0] ('tooth').cycles: missing; expected an integer ≥ 0" in text
    assert "1 sample(s) give none" in text and "sample[1]" not in text
    campaign.require_cycles("the fit", [campaign.sample("pristine")])  # given: no error


# --------------------------------------------------------------------------- missing files


def test_a_missing_raw_file_names_the_sample_and_the_file(tmp_path: Path) -> None:
    path = _folder(tmp_path)
    (tmp_path / "raw" / "c00.h5").unlink()
    text = _error(path)
    assert "1 missing input file" in text
    assert f"sample[0] ('c00').txm: {tmp_path / 'raw' / 'c00.h5'} does not exist" in text


def test_all_missing_files_are_reported_at_once(tmp_path: Path) -> None:
    path = _folder(tmp_path)
    (tmp_path / "raw" / "c00.h5").unlink()
    (tmp_path / "seg" / "c03.tif").unlink()
    (tmp_path / "echem" / "cycling.csv").unlink()
    for sem in (tmp_path / "sem").iterdir():
        sem.unlink()
    text = _error(path)
    assert "4 missing input file(s)" in text
    assert "sample[0] ('c00').txm:" in text
    assert "sample[1] ('c03').phases:" in text and "c03.tif" in text
    assert "sample[0] ('c00').sem[0]: no file matches 'sem/c00_*.tif'" in text
    assert "electrochemistry.cycling:" in text and "cycling.csv" in text
    # without the check the file loads, and the check can be asked for later
    campaign = load_campaign(path, check_files=False)
    assert campaign.samples[0].sem == ()
    assert len(campaign.missing_inputs()) == 4
    with pytest.raises(CampaignError, match="4 missing input file"):
        campaign.check_inputs()


def test_a_missing_campaign_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match=r"campaign file .*nowhere\.toml does not exist"):
        load_campaign(tmp_path / "nowhere.toml")
    with pytest.raises(CampaignError, match="is not a file"):
        load_campaign(tmp_path)


# --------------------------------------------------------------------------- invalid files


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "cycles = 3",
            'cycles = "three"',
            r"  sample\[1\]\.cycles: found 'three' \(string\), expected a valid integer "
            r"\(sample 'c03'\)",
            id="wrong-type",
        ),
        pytest.param(
            "cycles = 3",
            "cycles = 3.0",
            r"sample\[1\]\.cycles: found 3\.0 \(float\), expected a valid integer",
            id="float-for-int",
        ),
        pytest.param(
            "volumetric_expansion = 2.8",
            'volumetric_expansion = "2.8"',
            r"material\.volumetric_expansion: found '2\.8' \(string\), expected a valid number",
            id="string-for-float",
        ),
        pytest.param(
            'algorithm = "fbp"',
            'algorithm = "art"',
            r"recon\.algorithm: found 'art' \(string\), expected 'auto', 'fbp', 'sirt' or 'cgls'",
            id="bad-choice",
        ),
        pytest.param(
            'algorithm = "fbp"',
            "iteration = 10",
            r"recon\.iteration: unknown key; did you mean 'iterations'\? "
            r"Expected one of: centre_search_radius_px, algorithm, iterations, ",
            id="unknown-key",
        ),
        pytest.param(
            "[recon]",
            "[recons]",
            r"  recons: unknown key; did you mean 'recon'\?",
            id="unknown-section",
        ),
        pytest.param(
            "voxel_size_um = 0.0299\nsem",
            "voxel_size_um = -1.0\nsem",
            r"sample\[0\]\.voxel_size_um: found -1\.0 \(float\), expected a value greater than 0",
            id="out-of-range",
        ),
        pytest.param(
            "voxel_size_um = 0.0299\nsem",
            "voxel_size_um = nan\nsem",
            r"sample\[0\]\.voxel_size_um: found nan \(float\), expected a finite number",
            id="nan",
        ),
        pytest.param(
            "voxel_size_um = 0.0299\nsem",
            "sem",
            r"sample\[0\]\.voxel_size_um: missing; expected float: the voxel edge length in "
            r"µm, which the 3D stages of 'txm' need \(debond does not read it from the raw "
            r"file\) \(sample 'c00'\)",
            id="missing-key",
        ),
        pytest.param(
            'id = "c03"',
            'id = "c00"',
            r"  sample: duplicate sample id 'c00' in sample\[0\] and sample\[1\]",
            id="duplicate-id",
        ),
        pytest.param(
            'phases = "seg/c03.tif"',
            'txm = "raw/c00.h5"\nphases = "seg/c03.tif"',
            r"sample\[1\]: found both 'txm' and 'phases'; expected at most one: 'txm' ",
            id="txm-and-phases",
        ),
        pytest.param(
            "voxel_size_um = 0.0299\nrotation_centre_px",
            "rotation_centre_px",
            r"sample\[1\]\.voxel_size_um: missing; expected float: the voxel edge length in "
            r"µm, which the 3D stages of 'phases' need",
            id="phases-without-voxel-size",
        ),
        pytest.param(
            'txm = "raw/c00.h5"\nvoxel_size_um = 0.0299\nsem = ["sem/c00_*.tif"]',
            "",
            r"sample\[0\]: found none of 'txm', 'phases' and 'sem'; expected 'txm' \(raw "
            r"projections\) or 'phases' \(a segmentation\), with or without 'sem' \(SEM "
            r"cross-sections\), or 'sem' alone \(sample 'c00'\)",
            id="none-of-txm-phases-sem",
        ),
        pytest.param(
            "phase_codes = {pore = 0, silicon = 85, cbd = 170}",
            "phase_codes = {pore = 0, silicon = 85}",
            r"sample\[1\]: 'phases' needs 'phase_codes' naming pore, silicon, cbd; missing cbd",
            id="phase-codes-incomplete",
        ),
        pytest.param(
            "cbd = 170}",
            "cbd = 170, binder = 200}",
            r"sample\[1\]\.phase_codes: unknown phase 'binder'; expected names among pore, ",
            id="phase-codes-unknown",
        ),
        pytest.param(
            "cbd = 170}",
            "cbd = 85}",
            r"sample\[1\]\.phase_codes: phases 'silicon' and 'cbd' share the code 85",
            id="phase-codes-shared",
        ),
        pytest.param(
            "electrode_mass_mg = 2.0",
            "",
            r"  electrochemistry: 'cycling' needs 'electrode_mass_mg'",
            id="cycling-without-mass",
        ),
        pytest.param(
            "[recon]",
            "[segment]\nthresholds = [0.1, 0.2, 0.15, 0.3]\n[recon]",
            r"segment\.thresholds: found \[0\.1, 0\.2, 0\.15, 0\.3\], "
            r"expected strictly increasing",
            id="thresholds-order",
        ),
        pytest.param(
            "[recon]",
            "[prep]\nmedian_size = 6\n[recon]",
            r"prep\.median_size: must be odd; found 6",
            id="even-median",
        ),
        pytest.param(
            "[recon]",
            "[prep]\nring_removal = 1\n[recon]",
            r"prep\.ring_removal: found 1 \(integer\), expected a valid boolean",
            id="int-for-bool",
        ),
    ],
)
def test_errors_name_the_file_the_key_found_and_expected(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in VALID
    text = _error(_folder(tmp_path, VALID.replace(old, new, 1)))
    assert "invalid campaign file (1 problem(s)):" in text
    assert len(text.splitlines()) == 2, "one line per problem"
    assert re.search(expected, text), text


def test_every_problem_is_reported_one_per_line(tmp_path: Path) -> None:
    text = VALID.replace("cycles = 3", 'cycles = "three"').replace(
        'algorithm = "fbp"', 'algorithm = "art"\niteration = 10'
    )
    lines = _error(_folder(tmp_path, text)).splitlines()
    assert "(3 problem(s))" in lines[0]
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "sample[1].cycles",
        "recon.algorithm",
        "recon.iteration",
    ]


def test_a_file_without_samples_or_campaign_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[fit]\nseed = 1\n[[sample]]\nid = "a b"\n')
    text = _error(path)
    assert "  campaign: missing; expected CampaignSection" in text
    assert "sample[0].id: found 'a b', which holds ' '; expected a folder name" in text
    assert "cycles" not in text  # asked for by the fit, not on load


def test_a_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = _folder(tmp_path, VALID.replace('name = "si-graphite"', 'name = "si-graphite'))
    text = _error(path)
    assert f"{path}, line 3: not valid TOML:" in text
    assert '  3 | name = "si-graphite' in text


def test_a_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xff\xfe\x00")
    assert "not UTF-8" in _error(path)


@pytest.mark.parametrize(
    ("sample_id", "broken"),
    [
        pytest.param("", "is empty", id="empty"),
        pytest.param(".", "is '.' or '..'", id="dot"),
        pytest.param("..", "is '.' or '..'", id="dot-dot"),
        pytest.param("c/00", "holds '/'", id="slash"),
        pytest.param("c\\00", "holds '\\\\'", id="backslash"),
        pytest.param("c\x0100", "holds a control character", id="control"),
        pytest.param(" c00", "starts or ends with whitespace", id="leading-space"),
        pytest.param("c00\t", "starts or ends with whitespace", id="trailing-tab"),
        pytest.param("c 00", "holds ' '", id="inner-space"),
        pytest.param("__c00", "starts with '__'", id="reserved"),
    ],
)
def test_sample_ids_are_safe_folder_names(tmp_path: Path, sample_id: str, broken: str) -> None:
    """An id names the sample's folder in the store and its table file."""
    text = _error(_folder(tmp_path, VALID.replace('id = "c00"', f"id = {json.dumps(sample_id)}")))
    lines = text.splitlines()
    assert len(lines) == 2, text
    assert lines[1].startswith(f"  sample[0].id: found {sample_id!r}, which {broken}; "), text
    assert "expected a folder name of letters, digits, '_', '.' and '-'" in lines[1]
    assert lines[1].endswith(f"(sample {sample_id!r})")


# --------------------------------------------------------------------------- the store


def _listing(folder: Path) -> list[tuple[str, int]]:
    """Every path under `folder` with its size: what a refused store must leave as it was."""
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*"))


def _nothing(folder: Path) -> None:
    pass


@pytest.mark.parametrize(
    "prepare",
    [
        pytest.param(_nothing, id="new"),
        pytest.param(lambda folder: (folder / "si-graphite.zarr").mkdir(), id="empty-folder"),
        pytest.param(
            lambda folder: open_store(folder / "si-graphite.zarr", mode="a"), id="debond-store"
        ),
    ],
)
def test_a_store_is_a_new_or_empty_folder_or_a_debond_store(
    tmp_path: Path, prepare: Callable[[Path], None]
) -> None:
    campaign = load_campaign(_folder(tmp_path))
    prepare(tmp_path)
    campaign.check_store()


def _foreign_group(folder: Path) -> None:
    zarr.open_group(folder / "other.zarr", mode="w", zarr_format=3)


def _mark_raw_as_a_store(folder: Path) -> None:
    """A debond store's marker written into the folder of the raw inputs."""
    zarr.open_group(
        folder / "raw", mode="a", zarr_format=3, attributes={"debond": {"store_format": 1}}
    )


def _notes(folder: Path) -> None:
    (folder / "notes.txt").write_text("x")


@pytest.mark.parametrize(
    ("store", "prepare", "found", "storage_refuses"),
    [
        pytest.param(
            "raw",
            _nothing,
            r"a folder that is not a debond campaign store, holding c00\.h5",
            True,
            id="raw",
        ),
        pytest.param(
            ".",
            _nothing,
            r"a folder that is not a debond campaign store, holding campaign\.toml",
            True,
            id="campaign-folder",
        ),
        pytest.param(
            "../..",
            _nothing,
            r"a folder that is not a debond campaign store, holding ",
            True,
            id="parents",
        ),
        pytest.param("raw/c00.h5", _nothing, r"a file", True, id="file"),
        pytest.param(
            "notes.txt/s.zarr",
            _notes,
            r"a path under the file .*notes\.txt",
            True,
            id="under-a-file",
        ),
        pytest.param(
            "other.zarr",
            _foreign_group,
            r"a Zarr group \(no 'debond' attribute\) that is not a debond campaign store, "
            r"holding nothing",
            True,
            id="foreign-zarr",
        ),
        pytest.param(
            "raw",
            _mark_raw_as_a_store,
            r"a debond store that holds sample\[0\] \('c00'\)\.txm",
            False,
            id="holds-raw",
        ),
        pytest.param(
            "raw/c00.h5/s.zarr",
            _nothing,
            r"a path under the file .*c00\.h5",
            True,
            id="inside-raw-file",
        ),
        pytest.param("tables", _nothing, r"the same path as the tables folder", False, id="tables"),
    ],
)
def test_a_store_that_is_something_else_is_refused_before_anything_is_written(
    tmp_path: Path, store: str, prepare: Callable[[Path], None], found: str, storage_refuses: bool
) -> None:
    folder = tmp_path / "campaign"
    folder.mkdir()
    path = _folder(folder, VALID.replace('"si-graphite.zarr"', json.dumps(store)))
    prepare(folder)
    before = _listing(tmp_path)
    campaign = load_campaign(path)
    with pytest.raises(CampaignError) as error:
        campaign.check_store()
    message = str(error.value)
    assert message.splitlines() == [message]
    assert message.startswith(f"{path}: [campaign] store = {store!r} ")
    assert re.search(found, message), message
    assert "expected a new folder or a debond store" in message
    assert _listing(tmp_path) == before
    if storage_refuses:  # the storage layer refuses it too
        with pytest.raises(StoreFormatError, match="nothing was written"):
            open_store(campaign.store_location, mode="a")
        assert _listing(tmp_path) == before


def test_a_store_inside_a_tiff_stack_folder_is_refused(tmp_path: Path) -> None:
    path = _folder(
        tmp_path,
        VALID.replace('"raw/c00.h5"', '"raw/c00"').replace(
            '"si-graphite.zarr"', '"raw/c00/s.zarr"'
        ),
    )
    (tmp_path / "raw" / "c00").mkdir()
    (tmp_path / "raw" / "c00" / "proj_0000.tif").write_bytes(b"x")
    with pytest.raises(
        CampaignError, match=r"a folder inside sample\[0\] \('c00'\)\.txm \(.*raw/c00\)"
    ):
        load_campaign(path).check_store()


@pytest.mark.parametrize(
    ("url", "package"), [("s3://bucket/c.zarr", "s3fs"), ("gs://bucket/c.zarr", "gcsfs")]
)
def test_a_store_url_without_its_filesystem_says_what_to_install(
    tmp_path: Path, url: str, package: str
) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    path = _folder(tmp_path, VALID.replace('"si-graphite.zarr"', f'"{url}"'))
    with pytest.raises(CampaignError) as error:
        load_campaign(path).check_store()
    message = str(error.value)
    assert message.splitlines() == [message]
    assert message.startswith(f"{path}: [campaign] store = {url!r}: ")
    assert f"needs the package {package}, which is not installed" in message
    assert "pip install 'debond[remote]'" in message


def test_a_store_url_of_an_unknown_filesystem_is_refused(tmp_path: Path) -> None:
    path = _folder(tmp_path, VALID.replace('"si-graphite.zarr"', '"s4://bucket/c.zarr"'))
    with pytest.raises(CampaignError, match=r"store = 's4://bucket/c\.zarr': no filesystem 's4'"):
        load_campaign(path).check_store()


# --------------------------------------------------------------------------- writing


def test_dump_then_load_round_trips(tmp_path: Path) -> None:
    original = load_campaign(_folder(tmp_path))
    again = dump_campaign(original, tmp_path / "again.toml")
    reloaded = load_campaign(again)
    assert reloaded.declared == original.declared
    assert reloaded.samples == original.samples
    text = again.read_text(encoding="utf-8")
    assert "[[sample]]" in text and "phase_codes = {pore = 0, silicon = 85, cbd = 170}" in text
    assert "iterations = 1000  # Iterations of SIRT or CGLS" in text
    assert "voxel_size_um = 0.0299  # Voxel edge length; required with txm or phases" in text
    assert "rotation_centre_px" in text.split("[[sample]]")[2]
    assert "rotation_centre_px" not in text.split("[[sample]]")[1], "None is left out"
    second = text.split("[[sample]]")[2].split("[electrochemistry]")[0]
    assert "#" in text.split("[[sample]]")[1] and "#" not in second


def test_dump_into_another_folder_keeps_naming_the_same_files(tmp_path: Path) -> None:
    original = load_campaign(_folder(tmp_path))
    (tmp_path / "copy").mkdir()
    moved = load_campaign(dump_campaign(original, tmp_path / "copy" / "campaign.toml"))
    assert [s.txm for s in moved.samples] == [s.txm for s in original.samples]
    assert [s.phases for s in moved.samples] == [s.phases for s in original.samples]
    assert [s.sem for s in moved.samples] == [s.sem for s in original.samples]
    assert moved.samples[0].sem_patterns == (f"{tmp_path}/sem/c00_*.tif",)
    assert moved.cycling == original.cycling
    assert moved.store_location == original.store_location
    assert moved.tables_dir == tmp_path / "copy" / "tables" / "campaign"


def test_a_dict_is_validated_filled_and_written(tmp_path: Path) -> None:
    document = {
        "campaign": {"name": "synthetic", "store": "store.zarr"},
        "sample": [{"id": "c01", "cycles": 1, "txm": "raw/c01.h5", "voxel_size_um": 0.03}],
        "recon": {"iterations": 50},
    }
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "c01.h5").write_bytes(b"x")
    path = dump_campaign(document, tmp_path / "campaign.toml", comments=False)
    assert "#" not in path.read_text(encoding="utf-8").split("\n", 3)[3]
    campaign = load_campaign(path)
    assert campaign.stage_parameters("recon")["iterations"] == 50
    assert campaign.stage_parameters("recon")["algorithm"] == "auto"
    bad = {**document, "sample": [{"id": "c01", "cycles": -1, "txm": "raw/c01.h5"}]}
    with pytest.raises(CampaignError, match=r"bad\.toml.*\n  sample\[0\]\.cycles: found -1"):
        dump_campaign(bad, tmp_path / "bad.toml")
    assert not (tmp_path / "bad.toml").exists()


_TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    name=_TEXT,
    voxel=st.floats(min_value=1e-300, max_value=1e300, exclude_min=False),
    cycles=st.integers(min_value=0, max_value=2**62),
    sem=st.lists(_TEXT, max_size=3),
)
def test_the_writer_round_trips_any_string_and_number(
    name: str, voxel: float, cycles: int, sem: list[str]
) -> None:
    declared = CampaignFile.model_validate(
        {
            "campaign": {"name": name, "store": name},
            "sample": [
                {
                    "id": "s",
                    "cycles": cycles,
                    "phases": name,
                    "phase_codes": {"pore": 0, "silicon": 1, "cbd": 2},
                    "voxel_size_um": voxel,
                    "sem": sem,
                }
            ],
        }
    )
    assert CampaignFile.model_validate(tomllib.loads(campaign_toml(declared))) == declared
    assert tomllib.loads(campaign_toml(declared, comments=False))["campaign"]["name"] == name


# --------------------------------------------------------------------------- tables


def test_two_campaign_files_in_one_folder_have_their_own_tables(tmp_path: Path) -> None:
    first = load_campaign(_folder(tmp_path))
    (tmp_path / "other.toml").write_text(VALID.replace("si-graphite.zarr", "other.zarr"))
    second = load_campaign(tmp_path / "other.toml")
    assert first.tables_dir == tmp_path / "tables" / "campaign"
    assert second.tables_dir == tmp_path / "tables" / "other"
    assert first.name == second.name  # the same declared name does not matter


def _earlier_tables(folder: Path) -> list[str]:
    """Tables as an earlier version wrote them, directly in tables/."""
    (folder / "tables" / "samples").mkdir(parents=True)
    for name in ("particles.parquet", "fit.json", "samples/c00.parquet"):
        (folder / "tables" / name).write_text(name)
    return ["particles.parquet", "samples", "fit.json"]


def test_tables_of_an_earlier_version_move_into_the_only_campaigns_folder(
    tmp_path: Path,
) -> None:
    campaign = load_campaign(_folder(tmp_path))
    names = _earlier_tables(tmp_path)
    assert [p.name for p in campaign.earlier_tables()] == names
    said = campaign.adopt_earlier_tables()
    assert said == (
        f"moved the tables of an earlier version ({', '.join(names)}) from "
        f"{tmp_path / 'tables'} into {campaign.tables_dir}, this campaign's own"
    )
    assert (campaign.tables_dir / "samples" / "c00.parquet").read_text() == "samples/c00.parquet"
    assert (campaign.tables_dir / "particles.parquet").read_text() == "particles.parquet"
    assert campaign.earlier_tables() == [] and campaign.adopt_earlier_tables() is None


def test_tables_of_an_earlier_version_shared_by_two_campaigns_are_left_and_named(
    tmp_path: Path,
) -> None:
    campaign = load_campaign(_folder(tmp_path))
    (tmp_path / "other.toml").write_text(VALID.replace("si-graphite.zarr", "other.zarr"))
    (tmp_path / "notes.toml").write_text("[plot]\ncolour = 'red'\n")  # not a campaign file
    names = _earlier_tables(tmp_path)
    said = campaign.adopt_earlier_tables()
    assert said is not None
    assert said.startswith(
        f"{tmp_path / 'tables'} holds tables of an earlier version ({', '.join(names)}), which "
        "every campaign file of the folder shared (campaign.toml, other.toml); they are not read"
    )
    assert (tmp_path / "tables" / "particles.parquet").is_file()
    assert not campaign.tables_dir.exists()
