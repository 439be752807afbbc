"""`debond init`: a campaign file for the raw files of a folder, and a run from it."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
import tomlkit
from tomlkit.items import Comment, Table
from typer.testing import CliRunner

from debond.campaign import CampaignError, load_campaign
from debond.cli import app
from debond.init import CHOOSE, PIXEL_DATASETS, TO_LOAD, InitError, find_raw_files, write_init
from debond.schema import section_classes
from debond.stages import REGISTRY
from debond.synth import LARGEST_RADIUS_UM, SMALLEST_RADIUS_UM

runner = CliRunner()
CHOSEN = re.compile(rf"^#\s*{CHOOSE}\s*(\w+)\s*=")


def raw_folder(campaign: Path, target: Path) -> Path:
    """The raw files of a synthetic campaign as a beamline leaves them: no campaign file,
    no store, no truth."""
    target.mkdir(parents=True)
    for name in ("raw", "sem", "echem"):
        shutil.copytree(campaign / name, target / name)
    return target


def open_choices(table: Table) -> list[str]:
    """The keys a table's ``# CHOOSE:`` lines stand for."""
    keys = []
    for key, item in table.value.body:
        if key is None and isinstance(item, Comment):
            found = CHOSEN.match(item.as_string().strip())
            if found:
                keys.append(found.group(1))
    return keys


def fill(path: Path, values: dict[str, dict[str, object]]) -> dict[str, list[str]]:
    """Set ``# CHOOSE:`` keys of a campaign file, `values` by table ("material",
    "sample c03", "electrochemistry"). Returns the keys each table marked."""
    document = tomlkit.parse(path.read_text())
    tables: dict[str, Table] = {"material": document["material"]}  # type: ignore[dict-item]
    tables["electrochemistry"] = document["electrochemistry"]  # type: ignore[assignment]
    for sample in document["sample"]:  # type: ignore[union-attr]
        tables[f"sample {sample['id']}"] = sample
    marked = {}
    for where, table in tables.items():
        marked[where] = open_choices(table)
        for key in marked[where]:
            if key in values.get(where, {}):  # an optional choice may stay open
                table[key] = values[where][key]
    path.write_text(tomlkit.dumps(document))
    return marked


def small_choices(truth: dict[str, object], samples: list[str]) -> dict[str, dict[str, object]]:
    """What the user of the small synthetic campaign knows: cycles, voxel, mass, prior."""
    values: dict[str, dict[str, object]] = {
        "material": {"silicon_radius_um": [SMALLEST_RADIUS_UM, LARGEST_RADIUS_UM]},
        "electrochemistry": {"electrode_mass_mg": truth["electrode_mass_mg"]},
    }
    for sample in samples:
        values[f"sample {sample}"] = {"cycles": int(sample[1:]), "voxel_size_um": 0.06}
    return values


# ----------------------------------------------------------------- a run from init


@pytest.mark.distributed
def test_init_then_the_marked_choices_give_a_campaign_that_runs(
    small_campaign: Path, tmp_path: Path
) -> None:
    folder = raw_folder(small_campaign, tmp_path / "beamtime")
    result = runner.invoke(app, ["init", str(folder)])
    assert result.exit_code == 0, result.output
    path = folder / "campaign.toml"
    assert f"wrote {path}" in result.output
    # the file does not load before the required choices are made, and says which
    with pytest.raises(CampaignError, match=r"sample\[0\]\.voxel_size_um: missing"):
        load_campaign(path)

    truth = json.loads((small_campaign / "truth" / "parameters.json").read_text())
    samples = ["c00", "c01", "c03", "c10"]
    marked = fill(path, small_choices(truth, samples))
    assert marked["material"] == ["silicon_radius_um"]
    assert marked["electrochemistry"] == ["electrode_mass_mg"]
    for sample in samples:  # no voxel size in the synthetic files; SEM pixels in their tags
        assert marked[f"sample {sample}"] == ["cycles", "voxel_size_um"]

    campaign = load_campaign(path)
    assert [s.id for s in campaign.samples] == samples
    for sample in campaign.samples:
        assert sample.txm == folder / "raw" / f"{sample.id}.h5"
        assert [p.name for p in sample.sem] == [f"{sample.id}_0.tif"]
        assert sample.sem_pixel_size_um == pytest.approx(truth_pixel(small_campaign))
    assert campaign.cycling == folder / "echem" / "cycling.csv"
    # every other value is the project's default, none of the synthetic campaign's own
    declared = campaign.declared.model_dump()
    for name in [*REGISTRY.names, "fit"]:
        assert declared[name] == section_classes()[name]().model_dump(), name

    result = runner.invoke(app, ["run", str(path), "--workers", "2"])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(folder / "tables" / "campaign" / "particles.parquet")
    assert set(table["sample"]) == set(samples)
    assert set(table["modality"]) == {"3d", "2d"}
    assert dict(zip(table["sample"], table["cycles"], strict=True)) == {
        s: int(s[1:]) for s in samples
    }


def truth_pixel(campaign: Path) -> float:
    """The SEM pixel size the synthetic campaign wrote into its campaign file."""
    return float(
        tomlkit.parse((campaign / "campaign.toml").read_text())["sample"][0]["sem_pixel_size_um"]
    )  # type: ignore[index,arg-type]


# ----------------------------------------------------------------- what init reads


def test_init_reads_a_real_data_exchange_scan() -> None:
    folder = os.environ.get("DEBOND_REAL_DATA")
    if not folder or not (Path(folder) / "tooth.h5").is_file():
        pytest.skip("DEBOND_REAL_DATA is unset or has no tooth.h5")
    found = find_raw_files(Path(folder))
    (scan,) = [s for s in found.scans if s.path.name == "tooth.h5"]
    assert scan.id == "tooth" and scan.key == "txm"
    assert scan.summary == (
        "Data Exchange HDF5: 181 projections of 2 × 640 px, θ 0° to 179°, 10 flats, 10 darks"
    )
    assert scan.voxel_size_um is None  # the file records no pixel size
    assert PIXEL_DATASETS[0] in scan.voxel_note


def test_init_writes_the_tooth_scan_with_its_choices_marked(tmp_path: Path) -> None:
    folder = os.environ.get("DEBOND_REAL_DATA")
    if not folder or not (Path(folder) / "tooth.h5").is_file():
        pytest.skip("DEBOND_REAL_DATA is unset or has no tooth.h5")
    shutil.copy(Path(folder) / "tooth.h5", tmp_path / "tooth.h5")
    result = write_init(tmp_path)
    text = result.path.read_text()
    assert 'txm = "tooth.h5"' in text
    assert "# tooth.h5: Data Exchange HDF5: 181 projections of 2 × 640 px" in text
    assert [(c.where, c.key, c.needed_by) for c in result.choices] == [
        ("material", "silicon_radius_um", ""),
        ("sample tooth", "cycles", "the particle table and the fit"),
        ("sample tooth", "voxel_size_um", TO_LOAD),
    ]
    assert "[electrochemistry]" in text and "no cycling CSV found" in text
    marked = fill(
        result.path,
        {
            "material": {"silicon_radius_um": [5.0, 50.0]},
            "sample tooth": {"cycles": 0, "voxel_size_um": 3.0},
            "electrochemistry": {},
        },
    )
    assert marked["sample tooth"] == ["cycles", "voxel_size_um"]
    campaign = load_campaign(result.path)
    assert campaign.samples[0].voxel_size_um == 3.0 and campaign.size_prior_um == (5.0, 50.0)


def test_a_recorded_pixel_size_becomes_the_voxel_size(small_campaign: Path, tmp_path: Path) -> None:
    raw = tmp_path / "c00.h5"
    shutil.copy(small_campaign / "raw" / "c00.h5", raw)
    with h5py.File(raw, "a") as f:
        f.create_dataset(PIXEL_DATASETS[0], data=65.0).attrs["units"] = "nm"
    result = write_init(tmp_path)
    assert [c.key for c in result.choices if c.where == "sample c00"] == ["cycles"]
    text = result.path.read_text()
    assert f"# voxel_size_um: {PIXEL_DATASETS[0]} of c00.h5" in text
    fill(result.path, {"sample c00": {"cycles": 0}, "material": {"silicon_radius_um": [0.2, 2]}})
    assert load_campaign(result.path).samples[0].voxel_size_um == pytest.approx(0.065)


def test_tiff_stacks_segmentations_and_sem_images_are_recognised(
    small_campaign: Path, tmp_path: Path
) -> None:
    with h5py.File(small_campaign / "raw" / "c00.h5") as f:
        data, white, dark = (f[f"exchange/{n}"][:10] for n in ("data", "data_white", "data_dark"))
        theta = f["exchange/theta"][:10]
    stack = tmp_path / "scans" / "p1"
    stack.mkdir(parents=True)
    for role, frames in (("proj", data), ("flat", white), ("dark", dark)):
        for i, frame in enumerate(frames):
            tifffile.imwrite(stack / f"{role}_{i}.tif", frame)
    (stack / "theta.txt").write_text("\n".join(f"{t:g}" for t in theta))
    volume = np.zeros((6, 16, 16), np.uint8)
    volume[:, 4:12, 4:12] = 85
    volume[:, 6:10, 6:10] = 170
    tifffile.imwrite(tmp_path / "scans" / "seg-2.tif", volume)
    tifffile.imwrite(tmp_path / "p1_a.tif", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    tifffile.imwrite(tmp_path / "other.tif", np.ones((32, 32), np.uint8))
    (tmp_path / "notes.csv").write_text("when,what\n1,2\n")

    result = write_init(tmp_path)
    scans = {s.id: s for s in result.found.scans}
    assert scans["p1"].key == "txm" and scans["p1"].path == stack
    assert scans["p1"].summary.startswith("TIFF stack: 10 projections of 48 × 64 px")
    assert scans["seg-2"].key == "phases" and scans["seg-2"].grey_values == (0, 85, 170)
    assert {(c.where, c.key) for c in result.choices if c.required} == {
        ("sample p1", "voxel_size_um"),
        ("sample seg-2", "voxel_size_um"),
        ("sample seg-2", "phase_codes"),
    }
    # an SEM image without resolution tags leaves its pixel size to choose; the image
    # that names no scan is a sample of SEM images alone
    assert {(c.where, c.key) for c in result.choices if c.key != "cycles"} >= {
        ("sample p1", "sem_pixel_size_um"),
        ("sample other", "sem_pixel_size_um"),
    }
    assert {c.where for c in result.choices if c.key == "cycles"} == {
        "sample p1",
        "sample seg-2",
        "sample other",
    }
    text = result.path.read_text()
    assert 'sem = ["p1_*.tif"]' in text and 'sem = ["other.tif"]' in text
    assert "(found: 0, 85, 170)" in text
    assert "# SEM images alone (no 3-D scan is named other)" in text
    assert "# not used: notes.csv: columns when, what; a cycling file has the columns" in text
    fill(
        result.path,
        {
            "material": {},
            "electrochemistry": {},
            "sample p1": {"cycles": 0, "voxel_size_um": 0.06, "sem_pixel_size_um": 0.03},
            "sample other": {"cycles": 1, "sem_pixel_size_um": 0.03},
            "sample seg-2": {
                "cycles": 3,
                "voxel_size_um": 0.06,
                "phase_codes": {"pore": 0, "silicon": 85, "cbd": 170},
            },
        },
    )
    campaign = load_campaign(result.path)
    assert campaign.sample("p1").txm == stack
    assert campaign.sample("seg-2").phase_codes == {"pore": 0, "silicon": 85, "cbd": 170}
    assert not campaign.sample("other").has_volume


# ----------------------------------------------------------------- refusals


def test_init_never_overwrites_a_file(small_campaign: Path, tmp_path: Path) -> None:
    folder = raw_folder(small_campaign, tmp_path / "beamtime")
    existing = folder / "campaign.toml"
    existing.write_text("# mine\n")
    with pytest.raises(InitError, match=re.escape(f"{existing} exists")):
        write_init(folder)
    result = runner.invoke(app, ["init", str(folder)])
    assert result.exit_code == 2
    assert "never overwrites" in result.output and str(existing) in result.output
    assert existing.read_text() == "# mine\n"
    other = write_init(folder, folder / "mine.toml")
    assert other.path == folder / "mine.toml" and existing.read_text() == "# mine\n"


def test_init_on_a_folder_without_raw_files_says_what_it_looked_for(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("beamtime notes")
    (tmp_path / "log.csv").write_text("time,temperature\n0,21\n")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    result = runner.invoke(app, ["init", str(tmp_path)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    for looked in ("Data Exchange HDF5", "proj_*.tif", "SEM images", "cycle, charge_capacity_mAh"):
        assert looked in text
    assert "log.csv: columns time, temperature" in text
    assert "broken.h5: cannot be opened as HDF5" in text
    assert not (tmp_path / "campaign.toml").exists()
