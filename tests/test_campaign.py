"""Campaign files: validation, path resolution, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from debond.campaign import CampaignError, campaign_toml, load_campaign, write_campaign_file

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
[electrochemistry]
cycling = "echem/cycling.csv"
electrode_mass_mg = 2.0
[reconstruction]
algorithm = "fbp"
"""


def _folder(tmp_path: Path, text: str = VALID) -> Path:
    for name in (
        "raw/c00.h5",
        "sem/c00_0.tif",
        "sem/c00_1.tif",
        "seg/c03.tif",
        "echem/cycling.csv",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    path = tmp_path / "campaign.toml"
    path.write_text(text)
    return path


def test_a_valid_file_loads_with_defaults_and_resolved_paths(tmp_path: Path) -> None:
    campaign = load_campaign(_folder(tmp_path))
    assert [s.id for s in campaign.samples] == ["c00", "c03"]
    c00 = campaign.sample("c00")
    assert c00.txm == (tmp_path / "raw" / "c00.h5").resolve()
    assert [p.name for p in c00.sem] == ["c00_0.tif", "c00_1.tif"]
    assert campaign.store_location == str((tmp_path / "si-graphite.zarr").resolve())
    assert campaign.tables_dir == tmp_path.resolve() / "tables"
    assert campaign.material.half_cycle_hours == 20.0
    recon = campaign.stage_parameters("recon")
    assert recon["algorithm"] == "fbp" and recon["iterations"] == 1000
    assert campaign.stage_parameters("prep")["median_size"] == 7
    assert campaign.recipe.graphite_fraction == 0.70


def test_a_url_store_is_kept_as_given(tmp_path: Path) -> None:
    text = VALID.replace('store = "si-graphite.zarr"', 'store = "s3://bucket/si.zarr"')
    assert load_campaign(_folder(tmp_path, text)).store_location == "s3://bucket/si.zarr"


def test_missing_files_are_all_reported_with_their_sample(tmp_path: Path) -> None:
    path = _folder(tmp_path)
    (tmp_path / "raw" / "c00.h5").unlink()
    (tmp_path / "seg" / "c03.tif").unlink()
    for sem in (tmp_path / "sem").iterdir():
        sem.unlink()
    with pytest.raises(CampaignError) as error:
        load_campaign(path)
    text = str(error.value)
    assert "sample[0] (c00).txm" in text and "c00.h5" in text
    assert "sample[1] (c03).phases" in text
    assert "sem/c00_*.tif" in text
    assert load_campaign(path, check_files=False).sample("c03").phases is not None


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (("cycles = 3", 'cycles = "three"'), r"sample\[1\]\.cycles: .*integer.*'three'"),
        (
            ('algorithm = "fbp"', 'algorithm = "art"'),
            r"reconstruction\.algorithm: .*'fbp'.*'sirt'.*'cgls'.*'art'",
        ),
        (('algorithm = "fbp"', "iteration = 10"), r"reconstruction\.iteration: unknown key"),
        (
            ("voxel_size_um = 0.0299\nsem", "voxel_size_um = -1.0\nsem"),
            r"sample\[0\]\.voxel_size_um: .*greater than 0.*-1",
        ),
        (('id = "c03"', 'id = "c00"'), r"duplicate sample id 'c00' in sample\[0\] and sample\[1\]"),
        (
            ('phases = "seg/c03.tif"', 'txm = "raw/c00.h5"\nphases = "seg/c03.tif"'),
            r"sample\[1\]: give exactly one of 'txm'",
        ),
        (("electrode_mass_mg = 2.0", ""), r"electrochemistry: 'cycling' needs 'electrode_mass_mg'"),
        (('name = "si-graphite"', 'name = "si-graphite'), r"not valid TOML.*line 3"),
    ],
)
def test_errors_name_the_file_the_key_and_the_value(tmp_path: Path, change, match) -> None:  # type: ignore[no-untyped-def]
    path = _folder(tmp_path, VALID.replace(*change))
    with pytest.raises(CampaignError, match=match) as error:
        load_campaign(path)
    assert str(path) in str(error.value)


def test_a_missing_campaign_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match="nowhere.toml"):
        load_campaign(tmp_path / "nowhere.toml")


def test_written_files_load_back_identically(tmp_path: Path) -> None:
    original = load_campaign(_folder(tmp_path))
    again = write_campaign_file(original.declared, tmp_path / "again.toml")
    assert load_campaign(again).declared == original.declared
    assert "[[sample]]" in campaign_toml(original.declared)
