"""`debond run`: the 3D stages on real Dask clusters, resumed, and refusing bad input.

One small synthetic campaign (4 samples, 48 × 64 × 64 voxels, 90 angles; its
campaign file asks for a 3 × 3 median and FBP) is run once on an embedded
cluster; the other runs are compared with that one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import fsspec
import h5py
import numpy as np
import pandas as pd
import psutil
import pytest
import tifffile
import zarr
from distributed import Client, LocalCluster
from scipy import ndimage
from scipy.spatial import cKDTree
from typer.testing import CliRunner

from debond.campaign import Campaign, CampaignError, Sample, load_campaign
from debond.campaign_file import campaign_toml, dump_campaign
from debond.cli import app
from debond.cluster import cluster
from debond.particles import particle_table
from debond.pipeline.measure import measure_gaps
from debond.pipeline.segment import CBD, SILICON, segment
from debond.pipeline.sem import analyse_sem
from debond.pipeline.stereology import sections_to_spheres, unfold_radii
from debond.report import write_report
from debond.runner import Outcome, RunError, parse_stages, preview_run, run_campaign
from debond.stages import REGISTRY
from debond.stages.base import Plan, Registry, Stage, Work
from debond.storage import get_array, list_arrays, list_samples, open_store, open_volume
from debond.storage.lock import Holder
from debond.storage.provenance import completion, read_provenance
from debond.storage.tables import read_metadata, read_particles
from debond.synth import ATTENUATION_PER_UM, write_campaign
from tests.pipeline.references import normalised
from tests.pipeline.test_recon import VOXEL_UM, astra_loop

pytestmark = pytest.mark.distributed

SAMPLES = ("c00", "c01", "c03", "c10")
OUTPUTS = (
    "flats",
    "darks",
    "projections",
    "sinograms",
    "recon",
    "sample",
    "phases",
    "particles",
)


# ----------------------------------------------------------------- helpers


def copy_campaign(source: Path, target: Path) -> Path:
    """The campaign's inputs (raw, sem, echem, campaign.toml) without its store."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("store.zarr", "truth"))
    return target / "campaign.toml"


def run(
    campaign_file: Path, client: Client, registry: Registry = REGISTRY, **options: object
) -> list[Outcome]:
    lines: list[str] = []
    campaign = load_campaign(campaign_file, registry=registry)
    outcomes = run_campaign(campaign, client, echo=lines.append, **options)  # type: ignore[arg-type]
    return outcomes


def replan(name: str, planner: object) -> Registry:
    """The registry with one stage's planner replaced."""
    return Registry(
        [dataclasses.replace(s, plan=planner) if s.name == name else s for s in REGISTRY]  # type: ignore[arg-type]
    )


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def states(outcomes: list[Outcome], stage: str) -> set[str]:
    return {o.state for o in outcomes if o.stage == stage}


def complete_arrays(store: Path | str) -> list[str]:
    """Every array in the store (a folder or a URL) that carries a completion marker."""
    if isinstance(store, Path) and not store.exists():
        return []
    group = open_store(store, mode="r")
    return [
        f"{sample}/{name}"
        for sample in list_samples(group)
        for name in list_arrays(group, sample)
        if completion(get_array(group, sample, name)) is not None
    ]


def reference_recon(raw: Path, centre: float, median: int) -> np.ndarray:
    """Normalised in NumPy, scipy's median of each projection ((median, 1, median) in
    sinogram order), ASTRA's FBP called directly at ``centre``; 1/µm for 0.06 µm voxels."""
    sinograms, angles = normalised(raw)
    filtered = ndimage.median_filter(sinograms, size=(median, 1, median))
    return astra_loop(filtered, angles, centre, "fbp", 1)


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with cluster(workers=2) as connected:
        yield connected


@pytest.fixture(scope="module")
def pristine(small_campaign: Path) -> Path:
    """The shared small campaign; tests run copies of it (:func:`copy_campaign`)."""
    return small_campaign


@pytest.fixture(scope="module")
def local_run(
    pristine: Path, client: Client, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[Outcome]]:
    """The whole small campaign, run once on the embedded cluster."""
    campaign_file = copy_campaign(pristine, tmp_path_factory.mktemp("local") / "small")
    return campaign_file, run(campaign_file, client)


def recon_values(campaign_file: Path, sample: str, name: str = "recon") -> np.ndarray:
    return open_volume(campaign_file.parent / "store.zarr", sample, name).values


# ----------------------------------------------------------------- a whole run


def test_every_stage_completes_with_its_provenance(local_run: tuple[Path, list[Outcome]]) -> None:
    campaign_file, outcomes = local_run
    assert {(o.stage, o.sample) for o in outcomes} == {
        (stage, sample) for stage in REGISTRY.names for sample in SAMPLES
    }
    assert {o.state for o in outcomes} == {"done"}
    store = campaign_file.parent / "store.zarr"
    assert sorted(complete_arrays(store)) == sorted(f"{s}/{n}" for s in SAMPLES for n in OUTPUTS)
    group = open_store(store, mode="r")
    recon = get_array(group, "c03", "recon")
    provenance = read_provenance(recon)
    assert provenance is not None
    assert provenance.stage == "recon"
    assert provenance.parameters["algorithm"] == "fbp"
    assert provenance.inputs["sinograms"]["kind"] == "array"
    assert recon.attrs["units"] == "1/µm"
    assert get_array(group, "c03", "sinograms").attrs["clipped_values"] == 0
    for sample in SAMPLES:  # what the label stage kept between its passes is gone
        assert "scratch" not in group[f"samples/{sample}"]


@pytest.mark.parametrize("sample", SAMPLES)
def test_recon_equals_the_stages_done_by_hand(
    local_run: tuple[Path, list[Outcome]], pristine: Path, sample: str
) -> None:
    """Normalised in NumPy, median-filtered by scipy, reconstructed at the recorded
    centre; the recorded centre within 0.1 px of the synthetic truth."""
    campaign_file, _ = local_run
    campaign = load_campaign(campaign_file)
    result = open_volume(campaign_file.parent / "store.zarr", sample, "recon")
    centre = result.attrs["rotation_centre_px"]
    truth = json.loads((pristine / "truth" / "parameters.json").read_text())
    assert centre == pytest.approx(truth["rotation_centre_px"][sample], abs=0.1)
    assert result.attrs["rotation_centre_source"].startswith("automatic")
    assert campaign.sample(sample).voxel_size_um == VOXEL_UM
    expected = reference_recon(
        campaign_file.parent / "raw" / f"{sample}.h5",
        centre,
        campaign.stage_parameters("prep")["median_size"],
    )
    values = result.values
    assert values.shape == expected.shape == (48, 64, 64)
    assert np.linalg.norm(values - expected) / np.linalg.norm(expected) <= 1e-5


def test_phases_equal_the_segmentation_of_the_stored_recon(
    local_run: tuple[Path, list[Outcome]],
) -> None:
    campaign_file, _ = local_run
    campaign = load_campaign(campaign_file)
    store = campaign_file.parent / "store.zarr"
    recon = open_volume(store, "c10", "recon").values
    parameters = campaign.stage_parameters("segment")
    expected = segment(
        recon,
        voxel_size_um=VOXEL_UM,
        sigma_voxels=parameters["sigma_voxels"],
        thresholds=parameters["thresholds"],
        sei_max_um=parameters["sei_max_um"],
        graphite_min_radius_um=parameters["graphite_min_radius_um"],
    )
    phases = open_volume(store, "c10", "phases")
    assert np.array_equal(phases.values, expected.phases.compute())
    assert np.array_equal(open_volume(store, "c10", "sample").values, expected.sample.compute())
    assert phases.attrs["thresholds_per_um"]["classes"] == list(expected.thresholds.classes)


def test_the_particle_table_gathers_the_measured_samples(
    local_run: tuple[Path, list[Outcome]],
) -> None:
    """Each sample's rows equal measure_gaps on its stored arrays; the labels equal
    scipy's of the stored silicon, small ones dropped."""
    campaign_file, _ = local_run
    campaign = load_campaign(campaign_file)
    everything = read_particles(campaign.tables_dir / "particles.parquet")
    assert set(everything["sample"]) <= set(SAMPLES)
    assert set(everything["modality"]) == {"3d", "2d"}
    table = everything[everything["modality"] == "3d"]
    store = campaign_file.parent / "store.zarr"
    measure = campaign.stage_parameters("measure")
    minimum = campaign.stage_parameters("label")["min_volume_voxels"]
    for sample in SAMPLES:
        phases = open_volume(store, sample, "phases").values
        particles = open_volume(store, sample, "particles").values
        expected_labels, n = ndimage.label(phases == SILICON)
        sizes = np.bincount(expected_labels.ravel(), minlength=n + 1)
        kept = np.flatnonzero(sizes >= minimum)
        kept = kept[kept > 0]
        assert (particles > 0).sum() == np.isin(expected_labels, kept).sum()
        assert len(np.unique(particles[particles > 0])) == kept.size
        expected = measure_gaps(
            phases,
            particles,
            voxel_size_um=VOXEL_UM,
            n_rays=measure["n_rays"],
            max_ray_length_um=measure["max_ray_length_um"],
            sample=open_volume(store, sample, "sample").values,
        )
        rows = table[table["sample"] == sample].reset_index(drop=True)
        assert len(rows) == len(expected) == kept.size
        for column in ("particle", "radius_um", "gap_mean_um", "n_rays", "centroid_z_um"):
            assert np.array_equal(
                rows[column].to_numpy(), expected[column].to_numpy(), equal_nan=True
            )
        metadata = read_metadata(campaign.tables_dir / "samples" / f"{sample}.parquet")
        assert metadata is not None and len(metadata["debond:digest"]) == 64


def test_sem_sections_join_the_table_converted_stereologically(
    local_run: tuple[Path, list[Outcome]],
) -> None:
    """Each SEM image analysed as by analyse_sem; (R, g) from E[R | r] under the size
    distribution unfolded from every usable section of the campaign."""
    campaign_file, _ = local_run
    campaign = load_campaign(campaign_file)
    settings = campaign.stage_parameters("sem")
    raw = []
    for sample in campaign.samples:
        for path in sample.sem:
            rows = analyse_sem(
                path,
                pixel_size_um=sample.sem_pixel_size_um,
                sigma_px=settings["sigma_px"],
                n_rays=settings["n_rays"],
                max_ray_length_um=settings["max_ray_length_um"],
                min_area_px=settings["min_area_px"],
            )
            raw.append(rows.assign(sample=sample.id))
    sections = pd.concat(raw, ignore_index=True)
    usable = ~sections["touches_border"] & (sections["n_rays"] > 0)
    distribution = unfold_radii(sections.loc[usable, "section_radius_um"].to_numpy())
    table = read_particles(campaign.tables_dir / "particles.parquet")
    two_d = table[table["modality"] == "2d"].reset_index(drop=True)
    assert len(two_d) == len(sections) > 0
    assert np.allclose(two_d["section_radius_um"], sections["section_radius_um"])
    has_gap = np.isfinite(sections["section_gap_um"].to_numpy())
    radius, gap = sections_to_spheres(
        sections["section_radius_um"].to_numpy()[has_gap],
        sections["section_gap_um"].to_numpy()[has_gap],
        distribution,
    )
    assert np.allclose(two_d["radius_um"].to_numpy()[has_gap], radius)
    assert np.allclose(two_d["gap_mean_um"].to_numpy()[has_gap], gap)
    assert (two_d["radius_um"] >= two_d["section_radius_um"] - 1e-12).all()


def test_a_rerun_skips_everything_and_touches_nothing(
    local_run: tuple[Path, list[Outcome]], client: Client
) -> None:
    campaign_file, _ = local_run
    group = open_store(campaign_file.parent / "store.zarr", mode="r")
    before = {name: completion(get_array(group, "c01", name)) for name in OUTPUTS}
    outcomes = run(campaign_file, client)
    assert {o.state for o in outcomes} == {"skipped"}
    assert {name: completion(get_array(group, "c01", name)) for name in OUTPUTS} == before


def test_a_changed_parameter_redoes_only_its_stage(
    pristine: Path, client: Client, tmp_path: Path
) -> None:
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    run(campaign_file, client, stages=["ingest", "prep"])
    text = campaign_file.read_text()
    text = re.sub(r"(?m)^iterations = \d+", "iterations = 3", text)
    campaign_file.write_text(text.replace('algorithm = "fbp"', 'algorithm = "sirt"'))
    outcomes = run(campaign_file, client, stages=["ingest", "prep", "recon"])
    assert states(outcomes, "ingest") == states(outcomes, "prep") == {"skipped"}
    assert states(outcomes, "recon") == {"done"}
    recon = open_volume(campaign_file.parent / "store.zarr", "c00", "recon")
    assert recon.attrs["algorithm"] == "sirt"


def test_samples_do_not_wait_for_each_other_between_stages(
    pristine: Path, client: Client, tmp_path: Path
) -> None:
    """A sample with its own segmentation is measured while the raw samples are still
    before their reconstruction: their recon waits, in its build, for its table. With a
    barrier between stages the run would wait for itself (and time out)."""
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    z, y, x = np.mgrid[:24, :24, :24]
    distance = np.sqrt((z - 12.0) ** 2 + (y - 12.0) ** 2 + (x - 12.0) ** 2)
    grey = np.select([distance <= 5, (distance >= 7) & (distance <= 10)], [85, 170], 0)
    tifffile.imwrite(campaign_file.parent / "seg.tif", grey.astype(np.uint8))
    campaign_file.write_text(
        campaign_file.read_text() + "\n[[sample]]\nid = 'seg'\ncycles = 1\nphases = 'seg.tif'\n"
        "phase_codes = {pore = 0, silicon = 85, cbd = 170}\nvoxel_size_um = 0.06\n"
    )
    table = campaign_file.parent / "tables" / "campaign" / "samples" / "seg.parquet"
    plan_recon = REGISTRY.get("recon").plan

    def waiting(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
        plan = plan_recon(stage, campaign, sample, group)

        def build() -> Work:
            deadline = time.monotonic() + 120
            while not table.is_file():
                if time.monotonic() > deadline:
                    raise OSError(f"{table} was not written in 120 s")
                time.sleep(0.1)
            return plan.build()

        return dataclasses.replace(plan, build=build)

    stages = ["ingest", "prep", "recon", "segment", "label", "measure"]
    outcomes = run(campaign_file, client, replan("recon", waiting), stages=stages)
    assert {o.state for o in outcomes} == {"done"}
    assert {o.stage for o in outcomes if o.sample == "seg"} == {"segment", "label", "measure"}
    assert len(read_particles(table)) == 1


def test_bad_input_found_late_fails_its_sample_alone(
    local_run: tuple[Path, list[Outcome]],
    client: Client,
    tmp_path: Path,
) -> None:
    """A stage that fails to build once the run is under way (here measure of c01) fails
    that sample; the other samples are measured and gathered, and the run says which."""
    campaign_file, _ = local_run
    folder = tmp_path / "small"
    shutil.copytree(campaign_file.parent, folder, ignore=shutil.ignore_patterns("tables"))
    plan_measure = REGISTRY.get("measure").plan

    def broken(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
        plan = plan_measure(stage, campaign, sample, group)
        if sample.id != "c01":
            return plan

        def build() -> Work:
            raise ValueError("its phases hold no CBD (made up)")

        return dataclasses.replace(plan, build=build)

    with pytest.raises(RunError, match=r"1 stage\(s\) failed") as info:
        run(
            folder / "campaign.toml",
            client,
            replan("measure", broken),
            stages=["label", "measure"],
            force=True,
        )
    assert "measure of sample[1] ('c01'): its phases hold no CBD (made up)" in str(info.value)
    states = {(o.stage, o.sample): o.state for o in info.value.outcomes}
    assert states.pop(("measure", "c01")) == "failed"
    assert set(states.values()) == {"done"}
    table = read_particles(folder / "tables" / "campaign" / "particles.parquet")
    assert set(table["sample"]) == set(SAMPLES) - {"c01"}


# ----------------------------------------------------------------- distributed


def test_an_existing_cluster_gives_identical_results(
    local_run: tuple[Path, list[Outcome]], pristine: Path, scheduler: str, tmp_path: Path
) -> None:
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1."""
    local_file, _ = local_run
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    with cluster(scheduler) as remote:
        remote.wait_for_workers(2, timeout=60)
        outcomes = run(campaign_file, remote)
        workers = remote.scheduler_info()["workers"]
    assert {o.state for o in outcomes} == {"done"}
    assert len(workers) == 2
    for sample in SAMPLES:
        for name in ("sinograms", "recon", "phases"):
            assert np.array_equal(
                recon_values(campaign_file, sample, name), recon_values(local_file, sample, name)
            )


# ----------------------------------------------------------------- resume


def start_run(campaign_file: Path, workers: int, stderr: int) -> subprocess.Popen[str]:
    """`debond run` in a child process and its own process group (the cluster's too)."""
    script = Path(sys.executable).with_name("debond")
    return subprocess.Popen(
        [str(script), "run", str(campaign_file), "--workers", str(workers)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,  # its own process group: the cluster dies with it
    )


def run_until(campaign_file: Path, pattern: str) -> list[str]:
    """`debond run` in a child process, SIGKILLed (with its cluster) at the first
    line of output that matches ``pattern``; the lines it printed."""
    process = start_run(campaign_file, 1, subprocess.DEVNULL)
    seen = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 240
        for line in process.stdout:
            seen.append(line)
            if re.match(pattern, line) or time.monotonic() > deadline:
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        if process.stdout is not None:
            process.stdout.close()
    assert any(re.match(pattern, line) for line in seen), "".join(seen)
    return seen


def test_a_run_killed_after_ingest_resumes_without_redoing_it(
    local_run: tuple[Path, list[Outcome]], pristine: Path, client: Client, tmp_path: Path
) -> None:
    """Killed when the first sample starts ``prep``: that sample's ingest is kept."""
    local_file, _ = local_run
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    seen = run_until(campaign_file, r"prep ")
    first = seen[-1].split()[1]
    store = campaign_file.parent / "store.zarr"
    assert f"{first}/projections" in complete_arrays(store)
    assert not any(name.endswith("/recon") for name in complete_arrays(store))

    outcomes = run(campaign_file, client)
    ingested = {o.sample: o.state for o in outcomes if o.stage == "ingest"}
    assert ingested[first] == "skipped"
    assert "done" in states(outcomes, "prep")
    assert states(outcomes, "recon") == {"done"}
    for sample in SAMPLES:
        assert np.array_equal(recon_values(campaign_file, sample), recon_values(local_file, sample))


def test_a_run_killed_during_measure_resumes_to_the_same_table(
    local_run: tuple[Path, list[Outcome]], pristine: Path, client: Client, tmp_path: Path
) -> None:
    local_file, _ = local_run
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    run_until(campaign_file, r"measure +c00 +done")
    tables = campaign_file.parent / "tables" / "campaign"
    assert (tables / "samples" / "c00.parquet").is_file()
    assert not (tables / "particles.parquet").exists()

    outcomes = run(campaign_file, client)
    assert {o.state for o in outcomes if o.sample == "c00" and o.stage != "sem"} == {"skipped"}
    resumed = read_particles(tables / "particles.parquet")
    uninterrupted = read_particles(local_file.parent / "tables" / "campaign" / "particles.parquet")
    pd.testing.assert_frame_equal(resumed, uninterrupted)


# ----------------------------------------------------------------- integrity


def _chunk(store: Path, sample: str, name: str) -> Path:
    """The chunk file of a small-campaign array (each array is one chunk)."""
    return store / get_array(store, sample, name).path / "c" / "0" / "0" / "0"


def _tables(campaign_file: Path) -> Path:
    return campaign_file.parent / "tables" / campaign_file.stem


def test_lost_and_garbled_chunks_are_redone_with_what_was_made_from_them(
    local_run: tuple[Path, list[Outcome]], client: Client, tmp_path: Path
) -> None:
    """A deleted chunk and a garbage one (another size) are found by a listing; a changed
    byte (the same size) by decoding, which records it in the marker. The run redoes those
    stages and the stages after them, and the results equal the clean run's."""
    local_file, _ = local_run
    shutil.copytree(local_file.parent, tmp_path / "small")
    campaign_file = tmp_path / "small" / "campaign.toml"
    store = campaign_file.parent / "store.zarr"
    _chunk(store, "c03", "recon").unlink()
    _chunk(store, "c01", "phases").write_bytes(b"garbage")
    flipped = bytearray(_chunk(store, "c00", "particles").read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    _chunk(store, "c00", "particles").write_bytes(bytes(flipped))

    cheap = CliRunner().invoke(app, ["status", str(campaign_file)])
    assert cheap.exit_code == 1, cheap.output
    # recon is stored in chunks one reconstruction slab deep: several per volume
    assert re.search(
        r"recon   c03        damaged: samples/c03/recon: 1 of \d+ chunks missing: c/0/0/0\n",
        cheap.output,
    )
    assert "segment c01        damaged: samples/c01/phases: its chunks changed since" in (
        cheap.output
    )
    assert "segment c03        stale" in cheap.output  # its input is damaged
    assert "label   c00        current" in cheap.output  # the same size: a listing cannot see it
    deep = CliRunner().invoke(app, ["status", str(campaign_file), "--verify"])
    assert deep.exit_code == 1, deep.output
    assert re.search(
        r"segment c01 +damaged: samples/c01/phases: 1 chunk\(s\) do not decode: c/0/0/0 \(",
        deep.output,
    )
    assert re.search(
        r"label   c00 +damaged: samples/c00/particles: 1 chunk\(s\) do not decode: c/0/0/0 "
        r"\(.*checksum.*\(recorded in its completion marker: `debond run` redoes it\)",
        deep.output,
    )

    foreseen = preview_run(load_campaign(campaign_file))
    outcomes = run(campaign_file, client)
    redone = {(o.stage, o.sample) for o in outcomes if o.state == "done"}
    assert {(o.stage, o.sample) for o in foreseen if o.state == "run"} == redone
    assert redone == {
        *(("recon", "c03"), ("segment", "c03"), ("label", "c03"), ("measure", "c03")),
        *(("segment", "c01"), ("label", "c01"), ("measure", "c01")),
        *(("label", "c00"), ("measure", "c00")),
    }
    assert {o.state for o in outcomes} == {"done", "skipped"}
    for sample in SAMPLES:
        for name in ("recon", "sample", "phases", "particles"):
            assert np.array_equal(
                recon_values(campaign_file, sample, name), recon_values(local_file, sample, name)
            )
    pd.testing.assert_frame_equal(
        read_particles(_tables(campaign_file) / "particles.parquet"),
        read_particles(_tables(local_file) / "particles.parquet"),
    )
    again = CliRunner().invoke(app, ["status", str(campaign_file), "--verify"])
    assert again.exit_code == 0 and again.output.endswith("28 current: nothing to run\n")


def test_a_sample_that_fails_leaves_no_old_rows_in_the_table(
    local_run: tuple[Path, list[Outcome]], client: Client, tmp_path: Path
) -> None:
    """c03's scan is replaced and its reconstruction fails: its 3D rows of the clean run
    are not gathered again; the others' are."""
    local_file, _ = local_run
    shutil.copytree(local_file.parent, tmp_path / "small")
    campaign_file = tmp_path / "small" / "campaign.toml"
    shutil.copyfile(
        campaign_file.parent / "raw" / "c00.h5", campaign_file.parent / "raw" / "c03.h5"
    )
    plan_recon = REGISTRY.get("recon").plan

    def broken(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
        plan = plan_recon(stage, campaign, sample, group)
        if sample.id != "c03":
            return plan

        def build() -> Work:
            raise ValueError("its reconstruction fails (made up)")

        return dataclasses.replace(plan, build=build)

    lines: list[str] = []
    campaign = load_campaign(campaign_file, registry=replan("recon", broken))
    with pytest.raises(RunError, match=r"recon of c03: .*its reconstruction fails") as info:
        run_campaign(campaign, client, echo=lines.append)
    assert {(o.stage, o.state) for o in info.value.outcomes if o.sample == "c03"} >= {
        ("recon", "failed"),
        ("measure", "blocked"),
    }
    assert any(line.endswith("(left out, not current: measure of c03)") for line in lines)
    before = read_particles(_tables(local_file) / "particles.parquet")
    after = read_particles(_tables(campaign_file) / "particles.parquet")
    old = (before["sample"] == "c03") & (before["modality"] == "3d")
    assert old.sum() > 0
    assert not ((after["sample"] == "c03") & (after["modality"] == "3d")).any()
    kept = before[(before["modality"] == "3d") & ~old].reset_index(drop=True)
    pd.testing.assert_frame_equal(after[after["modality"] == "3d"].reset_index(drop=True), kept)


# ----------------------------------------------------------------- one run per store


def test_a_second_run_on_a_store_in_use_is_refused_and_the_first_finishes(
    local_run: tuple[Path, list[Outcome]], pristine: Path, tmp_path: Path
) -> None:
    """Two `debond run` processes on one campaign. The first is stopped (SIGSTOP) once it
    holds the store, so that the second surely meets it running; then it goes on."""
    local_file, _ = local_run
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    lock = campaign_file.parent / "store.zarr" / "debond.lock"
    command = [str(Path(sys.executable).with_name("debond")), "run", str(campaign_file)]
    log = tmp_path / "first.log"
    with log.open("w") as output:
        first = subprocess.Popen(
            [*command, "--workers", "1"],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: its cluster dies with it
        )
    try:
        deadline = time.monotonic() + 240
        # The first run holds the store once its lock file names it (the file is
        # created, then written: stopped in between, the second run would meet
        # a lock "being written").
        while not (lock.is_file() and Holder.from_text(lock.read_text()) is not None):
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGSTOP)
        try:
            second = subprocess.run(command, capture_output=True, text=True, timeout=240)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert first.wait(timeout=600) == 0, log.read_text()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=60)
    assert second.returncode == 2, second.stdout + second.stderr
    expected = f"store {lock.parent} is in use by PID {first.pid} on {socket.gethostname()} since "
    assert expected in " ".join(second.stderr.split()), second.stderr
    assert "cluster:" not in second.stdout  # refused before it started a cluster
    assert "finished in" in log.read_text() and not lock.exists()
    for sample in SAMPLES:
        assert np.array_equal(recon_values(campaign_file, sample), recon_values(local_file, sample))
    pd.testing.assert_frame_equal(
        read_particles(_tables(campaign_file) / "particles.parquet"),
        read_particles(_tables(local_file) / "particles.parquet"),
    )


def test_the_lock_of_a_killed_run_is_taken_over(
    local_run: tuple[Path, list[Outcome]], pristine: Path, client: Client, tmp_path: Path
) -> None:
    local_file, _ = local_run
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    run_until(campaign_file, r"ingest +c\d\d +done")
    lock = campaign_file.parent / "store.zarr" / "debond.lock"
    left = json.loads(lock.read_text())  # the killed run's, naming a PID that is gone
    assert not psutil.pid_exists(left["pid"])
    lines: list[str] = []
    run_campaign(load_campaign(campaign_file), client, echo=lines.append)
    assert lines[0] == (
        f"took over the lock {lock}: it named PID {left['pid']} on {left['host']} since "
        f"{left['since']} ({left['command']}), which no longer runs"
    )
    assert not lock.exists()
    for sample in SAMPLES:
        assert np.array_equal(recon_values(campaign_file, sample), recon_values(local_file, sample))


def test_two_campaigns_in_one_folder_keep_their_own_tables(
    local_run: tuple[Path, list[Outcome]], client: Client, tmp_path: Path
) -> None:
    """A second campaign file beside the first, with two of its samples and the same store:
    its run gathers its own table and leaves the first campaign's as it was."""
    local_file, _ = local_run
    folder = tmp_path / "small"
    shutil.copytree(local_file.parent, folder)
    document = tomllib.loads((folder / "campaign.toml").read_text())
    document["sample"] = [s for s in document["sample"] if s["id"] in ("c00", "c10")]
    pair = dump_campaign(document, folder / "pair.toml")
    lines: list[str] = []
    outcomes = run_campaign(load_campaign(pair), client, echo=lines.append)
    assert {o.state for o in outcomes if o.stage not in ("measure", "sem")} == {"skipped"}
    assert f"particle table: {folder / 'tables' / 'pair' / 'particles.parquet'}" in lines
    own = read_particles(folder / "tables" / "pair" / "particles.parquet")
    first = read_particles(_tables(folder / "campaign.toml") / "particles.parquet")
    pd.testing.assert_frame_equal(first, read_particles(_tables(local_file) / "particles.parquet"))
    assert set(own["sample"]) == {"c00", "c10"} and set(first["sample"]) == set(SAMPLES)
    three_d = first[first["sample"].isin(["c00", "c10"]) & (first["modality"] == "3d")]
    pd.testing.assert_frame_equal(
        own[own["modality"] == "3d"].reset_index(drop=True), three_d.reset_index(drop=True)
    )


def test_a_folder_of_an_earlier_version_keeps_its_tables(
    local_run: tuple[Path, list[Outcome]], client: Client, tmp_path: Path
) -> None:
    """Its tables directly in tables/: the run moves them to the campaign's folder, and
    every stage, the table stages included, is current."""
    local_file, _ = local_run
    folder = tmp_path / "small"
    shutil.copytree(local_file.parent, folder)
    for entry in list(_tables(folder / "campaign.toml").iterdir()):
        entry.rename(folder / "tables" / entry.name)
    _tables(folder / "campaign.toml").rmdir()
    lines: list[str] = []
    outcomes = run_campaign(load_campaign(folder / "campaign.toml"), client, echo=lines.append)
    assert lines[0] == (
        "moved the tables of an earlier version (particles.parquet, samples, sections) from "
        f"{folder / 'tables'} into {folder / 'tables' / 'campaign'}, this campaign's own"
    )
    assert {o.state for o in outcomes} == {"skipped"}
    pd.testing.assert_frame_equal(
        read_particles(folder / "tables" / "campaign" / "particles.parquet"),
        read_particles(_tables(local_file) / "particles.parquet"),
    )


# ----------------------------------------------------------------- bad input


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _replace(path: Path, name: str, value: np.ndarray, attrs: dict[str, str] | None = None) -> None:
    with h5py.File(path, "r+") as f:
        del f[name]
        f[name] = value
        for key, text in (attrs or {}).items():
            f[name].attrs[key] = text


def _short_theta(path: Path) -> None:
    with h5py.File(path, "r") as f:
        theta = f["exchange/theta"][...]
    _replace(path, "exchange/theta", theta[:-3], {"units": "degrees"})


def _odd_flats(path: Path) -> None:
    with h5py.File(path, "r") as f:
        flats = f["exchange/data_white"][...]
    _replace(path, "exchange/data_white", flats[:, :-2, :])


def _zero_flat(path: Path) -> None:
    with h5py.File(path, "r") as f:
        flats = f["exchange/data_white"][...]
    flats[1] = 0
    _replace(path, "exchange/data_white", flats)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_truncate, r"cannot be opened as HDF5"),
        (_short_theta, r"exchange/theta has shape \(87,\); expected \(90,\)"),
        (_odd_flats, r"exchange/data_white has shape .*46, 64"),
        (_zero_flat, r"exchange/data_white frame 1 is all zero"),
    ],
    ids=["truncated", "theta-length", "flats-shape", "zero-flat"],
)
def test_bad_raw_input_fails_fast_and_marks_nothing_complete(
    pristine: Path, client: Client, tmp_path: Path, corrupt: object, message: str
) -> None:
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    raw = campaign_file.parent / "raw" / "c01.h5"
    corrupt(raw)  # type: ignore[operator]
    with pytest.raises(RunError, match=message) as info:
        run(campaign_file, client)
    text = str(info.value)
    assert "bad input; nothing was run" in text
    assert "ingest of sample[1] ('c01')" in text
    assert "sample[1] ('c01')" in text and str(raw) in text
    assert complete_arrays(campaign_file.parent / "store.zarr") == []


def test_the_command_line_reports_bad_input_with_exit_code_1(
    pristine: Path, tmp_path: Path
) -> None:
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    _zero_flat(campaign_file.parent / "raw" / "c03.h5")
    result = CliRunner().invoke(app, ["run", str(campaign_file), "--workers", "1"])
    assert result.exit_code == 1
    assert re.search(r"frame 1 is all zero", result.output)
    assert "dashboard" in result.output


def test_later_stages_need_earlier_ones(pristine: Path, client: Client, tmp_path: Path) -> None:
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    with pytest.raises(
        RunError, match=r"samples/c00/sinograms is not in the store; run the stage 'prep'"
    ):
        run(campaign_file, client, stages=["recon"])


def _with_store(campaign_file: Path, store: str) -> Path:
    text = campaign_file.read_text()
    assert 'store = "store.zarr"' in text
    campaign_file.write_text(text.replace('store = "store.zarr"', f"store = {json.dumps(store)}"))
    return campaign_file


def test_a_store_that_is_something_else_is_refused_before_anything_is_written(
    pristine: Path, client: Client, tmp_path: Path
) -> None:
    campaign_file = _with_store(copy_campaign(pristine, tmp_path / "small"), "raw")
    before = sorted((p, p.stat().st_size) for p in tmp_path.rglob("*"))
    with pytest.raises(
        CampaignError, match=r"\[campaign\] store = 'raw' .* not a debond campaign store"
    ):
        run(campaign_file, client, stages=["ingest"])
    assert sorted((p, p.stat().st_size) for p in tmp_path.rglob("*")) == before


def test_a_memory_store_is_refused_on_worker_processes(
    pristine: Path, client: Client, tmp_path: Path
) -> None:
    url = f"memory://debond-run-{tmp_path.name}.zarr"
    campaign_file = _with_store(copy_campaign(pristine, tmp_path / "small"), url)
    with pytest.raises(RunError, match=r"store = 'memory://.*' lives in this process's memory"):
        run(campaign_file, client, stages=["ingest"])
    assert not fsspec.filesystem("memory").exists(url.removeprefix("memory://"))


def test_a_memory_store_serves_an_in_process_cluster(pristine: Path, tmp_path: Path) -> None:
    url = f"memory://debond-run-{tmp_path.name}.zarr"
    campaign_file = _with_store(copy_campaign(pristine, tmp_path / "small"), url)
    try:
        with (
            LocalCluster(processes=False, n_workers=1, dashboard_address="127.0.0.1:0") as local,
            Client(local) as in_process,
        ):
            run(campaign_file, in_process, stages=["ingest"])
        assert complete_arrays(url) == [
            f"{s}/{name}" for s in SAMPLES for name in ("darks", "flats", "projections")
        ]
    finally:
        fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


def test_a_recon_without_voxel_size_or_contrast_is_refused(
    pristine: Path, client: Client, tmp_path: Path
) -> None:
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    run(campaign_file, client, stages=["ingest", "prep", "recon"])
    group = zarr.open_group(campaign_file.parent / "store.zarr", mode="r+")
    del group["samples/c01/recon/0"].attrs["voxel_size_um"]
    with pytest.raises(RunError, match=r"segment of sample\[1\] \('c01'\).*voxel_size_um"):
        run(campaign_file, client, stages=["segment"])
    group["samples/c01/recon/0"].attrs["voxel_size_um"] = VOXEL_UM
    group["samples/c03/recon/0"][...] = 0.0
    with pytest.raises(RunError, match=r"sample\[2\] \('c03'\).*no usable grey levels"):
        run(campaign_file, client, stages=["segment"])
    assert not any(name.endswith("/phases") for name in complete_arrays(group.store.root))


def test_a_known_porosity_far_from_the_segmented_one_is_reported(
    pristine: Path, client: Client, tmp_path: Path
) -> None:
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    text = campaign_file.read_text().replace("[segment]", "[segment]\nporosity = 0.99")
    campaign_file.write_text(text)
    lines: list[str] = []
    stages = ["ingest", "prep", "recon", "segment"]
    run_campaign(load_campaign(campaign_file), client, stages=stages, echo=lines.append)
    warned = [line for line in lines if "WARNING: pore fraction" in line]
    assert len(warned) == len(SAMPLES)
    phases = open_volume(campaign_file.parent / "store.zarr", "c00", "phases")
    inside = open_volume(campaign_file.parent / "store.zarr", "c00", "sample").values
    fraction = ((phases.values == 0) & inside).sum() / inside.sum()
    assert phases.attrs["pore_fraction"] == pytest.approx(fraction)


def test_phases_without_cbd_fail_the_measure_stage_by_name(client: Client, tmp_path: Path) -> None:
    grey = np.zeros((20, 24, 24), np.uint8)
    grey[5:12, 6:14, 6:14] = 85  # one particle, no CBD anywhere
    tifffile.imwrite(tmp_path / "seg.tif", grey)
    campaign_file = tmp_path / "c.toml"
    campaign_file.write_text(
        "[campaign]\nname = 'c'\nstore = 's.zarr'\n[[sample]]\nid = 'a'\ncycles = 1\n"
        "phases = 'seg.tif'\nphase_codes = {pore = 0, silicon = 85, cbd = 170}\n"
        "voxel_size_um = 0.05\n"
    )
    with pytest.raises(RunError, match=r"measure of a: no CBD \(phase 2\) found") as info:
        run(campaign_file, client)
    states_by_stage = {o.stage: o.state for o in info.value.outcomes}
    assert states_by_stage == {"segment": "done", "label": "done", "measure": "failed"}
    assert not (tmp_path / "tables" / "c" / "samples" / "a.parquet").exists()


# ----------------------------------------------------------------- bad pixels


def _nan_pixels(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f["exchange/data"][17, 20:24, 30:34] = np.nan  # 16 pixels of one projection


def _inf_pixel(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f["exchange/data"][40, 25, 31] = np.inf


def _dark_above_flat(path: Path, columns: list[int]) -> None:
    with h5py.File(path, "r") as f:
        flats = f["exchange/data_white"][...]
        darks = f["exchange/data_dark"][...]
    darks[:, :, columns] = flats[:, :, columns].max() + 100
    _replace(path, "exchange/data_dark", darks)


def _prep_line(lines: list[str], sample: str, word: str) -> str:
    (line,) = [x for x in lines if x.startswith(f"prep    {sample} ") and word in x]
    return line


def test_bad_pixels_are_repaired_and_reported_by_the_run(
    local_run: tuple[Path, list[Outcome]], pristine: Path, client: Client, tmp_path: Path
) -> None:
    """NaN pixels in one projection (c00), one +Inf pixel (c01) and a detector column
    whose darks are brighter than its flats (c03) are counted, recorded and repaired:
    the rotation centres within 0.02 px of the clean run's and the reconstructions
    close to it; the clean sample (c10) reports zeros and equals the clean run."""
    clean_file, _ = local_run
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    raw = campaign_file.parent / "raw"
    _nan_pixels(raw / "c00.h5")
    _inf_pixel(raw / "c01.h5")
    _dark_above_flat(raw / "c03.h5", [29])
    lines: list[str] = []
    stages = ["ingest", "prep", "recon"]
    outcomes = run_campaign(load_campaign(campaign_file), client, stages=stages, echo=lines.append)
    assert {o.state for o in outcomes} == {"done"}
    counts = {
        "c00": "nan_values 16; inf_values 0; dark_ge_flat_pixels 0; "
        "nonfinite_flat_dark_values 0; repaired_values 16",
        "c01": "nan_values 0; inf_values 1; dark_ge_flat_pixels 0; "
        "nonfinite_flat_dark_values 0; repaired_values 1",
        "c03": "nan_values 0; inf_values 0; dark_ge_flat_pixels 48; "
        "nonfinite_flat_dark_values 0; repaired_values 4320",
        "c10": "nan_values 0; inf_values 0; dark_ge_flat_pixels 0; "
        "nonfinite_flat_dark_values 0; repaired_values 0",
    }
    for sample, text in counts.items():
        assert f"; clipped_values 0; {text}" in _prep_line(lines, sample, "done in")
    assert "bad pixels repaired from their neighbours: 16 NaN in 1 projection (17)" in (
        _prep_line(lines, "c00", "running")
    )
    assert "48 detector pixels with mean dark ≥ mean flat" in _prep_line(lines, "c03", "running")
    store = campaign_file.parent / "store.zarr"
    recorded = {s: open_volume(store, s, "sinograms").attrs["bad_pixels"] for s in SAMPLES}
    assert recorded["c00"]["nan"] == {"17": 16} and recorded["c01"]["inf"] == {"40": 1}
    assert recorded["c03"]["dark_ge_flat"] == 48
    assert recorded["c10"]["nan"] == recorded["c10"]["inf"] == {}
    assert recorded["c10"]["dark_ge_flat"] == 0 and recorded["c10"]["pixels_per_projection"] == 3072
    for sample, rms in (("c00", 0.001), ("c01", 0.001), ("c03", 0.005)):
        repaired = open_volume(store, sample, "recon")
        clean = open_volume(clean_file.parent / "store.zarr", sample, "recon")
        assert repaired.attrs["rotation_centre_px"] == pytest.approx(
            clean.attrs["rotation_centre_px"], abs=0.02
        )
        assert np.sqrt(np.mean((repaired.values - clean.values) ** 2)) < rms
    np.testing.assert_array_equal(
        open_volume(store, "c10", "sinograms").values,
        open_volume(clean_file.parent / "store.zarr", "c10", "sinograms").values,
    )


def test_too_many_bad_pixels_stop_the_run_naming_file_frame_and_count(
    pristine: Path, tmp_path: Path
) -> None:
    """Darks brighter than flats in 10 of 64 columns (16 % of every projection, above
    max_bad_fraction): `debond run` exits with 1 and names the file, the projection and
    the count; that sample's sinograms are not marked complete, the others are."""
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    raw = campaign_file.parent / "raw" / "c01.h5"
    _dark_above_flat(raw, [3, 9, 15, 21, 27, 33, 39, 45, 51, 57])
    result = CliRunner().invoke(
        app, ["run", str(campaign_file), "--workers", "1", "--only", "ingest,prep"]
    )
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert (
        f"prep of sample[1] ('c01'): {raw} (exchange/data): projection 0 has 480 bad pixels "
        "of 3072 (15.6 %: 0 NaN, 0 ±Inf, 480 detector pixels whose mean dark ≥ mean flat); "
        "at most max_bad_fraction = 0.02 (61 px) may be repaired" in text
    )
    assert "90 of 90 projections are over the limit" in text
    complete = complete_arrays(campaign_file.parent / "store.zarr")
    assert "c01/sinograms" not in complete
    assert {"c00/sinograms", "c03/sinograms", "c10/sinograms"} <= set(complete)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ingest,reconstruct", "unknown stage 'reconstruct'"),
        (" , ", "names no stage"),
    ],
)
def test_only_names_known_stages(text: str, message: str) -> None:
    with pytest.raises(RunError, match=message):
        parse_stages(text)
    assert parse_stages("recon, ingest") == ("ingest", "recon")


# ----------------------------------------------------------------- what a sample brings


def sem_only_campaign(source: Path, target: Path) -> Path:
    """The campaign's SEM images and cycling data, in a campaign file without a tomogram
    (each sample's txm and voxel size left out; every other key as it was)."""
    target.mkdir(parents=True)
    for folder in ("sem", "echem"):
        shutil.copytree(source / folder, target / folder)
    document = tomllib.loads((source / "campaign.toml").read_text(encoding="utf-8"))
    for sample in document["sample"]:
        del sample["txm"], sample["voxel_size_um"]
    path = target / "campaign.toml"
    path.write_text(campaign_toml(document), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sem_run(
    pristine: Path, client: Client, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str]]:
    """The small campaign's SEM images alone, run by `debond run` on the embedded
    cluster (its scheduler's address): the campaign file and the lines printed."""
    campaign_file = sem_only_campaign(pristine, tmp_path_factory.mktemp("sem") / "small")
    address = client.scheduler.address
    result = CliRunner().invoke(app, ["run", str(campaign_file), "--scheduler", address])
    assert result.exit_code == 0, result.output
    return campaign_file, result.output.splitlines()


def test_sem_images_alone_run_sem_and_give_the_full_campaigns_2d_rows(
    sem_run: tuple[Path, list[str]], local_run: tuple[Path, list[Outcome]]
) -> None:
    """Without txm a sample's 3D chain is absent (said once per sample); its sem stage
    runs, and the gathered 2D rows equal those of the full campaign's run of the same
    images, to the bit."""
    campaign_file, lines = sem_run
    ran = [line.split()[:3] for line in lines if " done in " in line]
    assert sorted(ran) == [["sem", sample, "done"] for sample in SAMPLES]
    assert lines[-1].startswith("finished in") and "4 done, 0 skipped" in lines[-1]
    for sample in SAMPLES:
        assert (
            f"{sample}: ingest, prep, recon, segment, label, measure not part of its chain "
            "(SEM images alone: no txm or phases)"
        ) in lines
    alone = read_particles(campaign_file.parent / "tables" / "campaign" / "particles.parquet")
    full = read_particles(local_run[0].parent / "tables" / "campaign" / "particles.parquet")
    expected = full[full["modality"] == "2d"].reset_index(drop=True)
    assert len(alone) > 0 and set(alone["modality"]) == {"2d"}
    pd.testing.assert_frame_equal(alone, expected, check_exact=True)


def test_sem_images_alone_are_fitted_and_reported(
    sem_run: tuple[Path, list[str]], client: Client
) -> None:
    """`debond fit` fits the 2D rows (the capacity term over the unfolded sections);
    a 3D stage asked for alone is not part of any chain, which the run says; the
    report shows the samples without a volume."""
    campaign_file, _ = sem_run
    result = CliRunner().invoke(app, ["fit", str(campaign_file), "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    fitted = json.loads((campaign_file.parent / "tables" / "campaign" / "fit.json").read_text())
    assert fitted["bootstrap"] == 20
    assert fitted["capacity_population"]["source"] == "SEM sections, unfolded"
    lines: list[str] = []
    asked = run_campaign(load_campaign(campaign_file), client, stages=["recon"], echo=lines.append)
    assert asked == []
    assert "c03: recon not part of its chain (SEM images alone: no txm or phases)" in lines
    page = write_report(load_campaign(campaign_file), echo=lambda _: None).read_text()
    assert "c03: 3 cycles, SEM cross-sections alone" in page


def test_the_particle_table_asks_for_the_cycles_of_its_samples(
    sem_run: tuple[Path, list[str]], client: Client
) -> None:
    """The sections do not need the cycles; their rows in the particle table do: a run
    whose samples give none keeps their tables and says which key is missing."""
    campaign_file, _ = sem_run
    text = campaign_file.read_text(encoding="utf-8")
    assert text.count("cycles = 3\n") == 1
    campaign_file.write_text(text.replace("cycles = 3\n", ""), encoding="utf-8")
    try:
        campaign = load_campaign(campaign_file)
        with pytest.raises(CampaignError, match=r"sample\[2\] \('c03'\)\.cycles: missing"):
            particle_table(campaign)
        lines: list[str] = []
        outcomes = run_campaign(campaign, client, echo=lines.append)
        assert {o.state for o in outcomes} == {"skipped"}
        (line,) = [x for x in lines if x.startswith("particle table not gathered: ")]
        assert "the particle table's cycles column needs the cycles" in line
    finally:
        campaign_file.write_text(text, encoding="utf-8")


def test_a_reconstruction_only_campaign_needs_no_cycles_until_the_fit(
    pristine: Path, client: Client, tmp_path: Path
) -> None:
    """A test object: no cycles, no [electrochemistry], no SEM. Its 3D stages run; `debond
    fit` refuses, naming the sample and the key."""
    (tmp_path / "raw").mkdir()
    shutil.copy(pristine / "raw" / "c00.h5", tmp_path / "raw" / "object.h5")
    campaign_file = tmp_path / "campaign.toml"
    campaign_file.write_text(
        "[campaign]\nname = 'object'\n[[sample]]\nid = 'object'\ntxm = 'raw/object.h5'\n"
        f"voxel_size_um = {VOXEL_UM}\n[recon]\nalgorithm = 'fbp'\n"
    )
    outcomes = run(campaign_file, client, stages=["ingest", "prep", "recon"])
    assert [(o.stage, o.state) for o in outcomes] == [
        ("ingest", "done"),
        ("prep", "done"),
        ("recon", "done"),
    ]
    recon = open_volume(tmp_path / "store.zarr", "object", "recon")
    assert recon.shape == (48, 64, 64) and recon.attrs["voxel_size_um"] == VOXEL_UM
    result = CliRunner().invoke(app, ["fit", str(campaign_file)])
    assert result.exit_code == 2
    assert "the fit needs the cycles of every sample" in result.output
    assert "sample[0] ('object').cycles: missing; expected an integer ≥ 0" in result.output


# ----------------------------------------------------------------- real and demo data


def test_tooth_through_the_runner_equals_astra_at_the_recorded_centre(
    client: Client, tmp_path: Path
) -> None:
    """../shared/data/tooth.h5 (2 rows × 181 angles × 640 columns), default median, FBP.

    The reference normalises in NumPy, filters with scipy and calls ASTRA's FBP
    directly (test_recon.astra_loop) at the recorded sub-pixel centre; that
    centre is checked against an independent estimate in test_centre.py.
    """
    folder = os.environ.get("DEBOND_REAL_DATA")
    if not folder or not (Path(folder) / "tooth.h5").is_file():
        pytest.skip("DEBOND_REAL_DATA is unset or has no tooth.h5")
    campaign_file = tmp_path / "tooth.toml"
    campaign_file.write_text(
        "[campaign]\nname = 'tooth'\nstore = 'tooth.zarr'\n"
        f"[[sample]]\nid = 'tooth'\ncycles = 0\ntxm = '{Path(folder) / 'tooth.h5'}'\n"
        f"voxel_size_um = {VOXEL_UM}\n[recon]\nalgorithm = 'fbp'\n"
    )
    outcomes = run(campaign_file, client)
    assert {o.state for o in outcomes} == {"done"}
    result = open_volume(tmp_path / "tooth.zarr", "tooth", "recon")
    centre = result.attrs["rotation_centre_px"]
    assert abs(centre - 319.5) > 10  # well off the detector centre: found, not a default
    sinograms, angles = normalised(Path(folder) / "tooth.h5")
    # The m × m median of each projection is (m, 1, m) in sinogram order.
    m = load_campaign(campaign_file).stage_parameters("prep")["median_size"]
    filtered = ndimage.median_filter(sinograms, size=(m, 1, m)) if m > 1 else sinograms
    reference = astra_loop(filtered, angles, centre, "fbp", 1)
    values = result.values
    assert np.linalg.norm(values - reference) / np.linalg.norm(reference) <= 1e-5


@pytest.mark.slow
def test_the_demo_campaign_reconstructs_the_true_attenuation(
    client: Client, tmp_path: Path
) -> None:
    """Demo preset (4 × 128 × 160 × 160 voxels, 240 angles): Pearson ≥ 0.9 inside the
    pillar against the true attenuation, centres within 0.25 px of the truth."""
    folder = tmp_path / "demo"
    write_campaign(folder, "demo", seed=0)
    outcomes = run(folder / "campaign.toml", client)
    assert {o.state for o in outcomes} == {"done"}
    truth = json.loads((folder / "truth" / "parameters.json").read_text())
    for sample in SAMPLES:
        result = open_volume(folder / "store.zarr", sample, "recon")
        centre = result.attrs["rotation_centre_px"]
        assert centre == pytest.approx(truth["rotation_centre_px"][sample], abs=0.25)
        phases = open_volume(folder / "truth" / "phases.zarr", sample, "phases").values
        expected = np.zeros(phases.shape, dtype=np.float32)
        for code, value in ATTENUATION_PER_UM.items():
            expected[phases == code] = value
        n = phases.shape[-1]
        y, x = np.mgrid[:n, :n] - (n - 1) / 2
        inside = np.hypot(y, x) <= 0.4 * n
        values = result.values
        assert values.shape == phases.shape
        pearson = np.corrcoef(values[:, inside].ravel(), expected[:, inside].ravel())[0, 1]
        assert pearson >= 0.9, f"{sample}: Pearson {pearson:.3f}"

        # Segmentation against the true phases inside the pillar (outside it the
        # truth volume still holds painted objects, the attenuation is air's).
        found = open_volume(folder / "store.zarr", sample, "phases").values
        pillar = np.broadcast_to(np.hypot(y, x) <= 0.45 * (n - 1), phases.shape)
        for code in (SILICON, CBD):
            score = dice((found == code) & pillar, (phases == code) & pillar)
            assert score >= 0.9, f"{sample}: Dice of phase {code} {score:.3f}"

    # Gaps of the particles matched to the truth by centroid: within 1.5 voxels.
    table = read_particles(folder / "tables" / "campaign" / "particles.parquet")
    measured = table[table["modality"] == "3d"]
    true = pd.read_parquet(folder / "truth" / "particles.parquet")
    columns = ["centroid_z_um", "centroid_y_um", "centroid_x_um"]
    errors = []
    for sample in SAMPLES:
        rows, drawn = measured[measured["sample"] == sample], true[true["sample"] == sample]
        distance, index = cKDTree(drawn[columns].to_numpy()).query(rows[columns].to_numpy())
        matched = distance < 0.5 * drawn["radius_um"].to_numpy()[index]
        assert matched.sum() >= 0.9 * len(drawn), f"{sample}: {matched.sum()} of {len(drawn)}"
        gap_true = drawn["gap_um"].to_numpy()[index][matched]
        errors.append((rows["gap_mean_um"].to_numpy()[matched] - gap_true) / VOXEL_UM)
        radius_ratio = (
            rows["radius_um"].to_numpy()[matched] / drawn["radius_um"].to_numpy()[index][matched]
        )
        assert np.median(np.abs(radius_ratio - 1)) <= 0.05
    assert np.nanmean(np.abs(np.concatenate(errors))) <= 1.5


def test_a_segmentation_brought_by_the_sample_is_labelled_and_measured(
    client: Client, tmp_path: Path
) -> None:
    """electrode.tiff (256³; pore 0, active material 85, CBD 170) as a sample's `phases`."""
    folder = os.environ.get("DEBOND_REAL_DATA")
    if not folder or not (Path(folder) / "electrode.tiff").is_file():
        pytest.skip("DEBOND_REAL_DATA is unset or has no electrode.tiff")
    path = Path(folder) / "electrode.tiff"
    campaign_file = tmp_path / "electrode.toml"
    campaign_file.write_text(
        "[campaign]\nname = 'electrode'\nstore = 'electrode.zarr'\n"
        f"[[sample]]\nid = 'nmc'\ncycles = 0\nphases = '{path}'\n"
        "phase_codes = {pore = 0, silicon = 85, cbd = 170}\nvoxel_size_um = 0.05\n"
        "[measure]\nn_rays = 64\nmax_ray_length_um = 0.5\n"
    )
    outcomes = run(campaign_file, client)
    assert {(o.stage, o.state) for o in outcomes} == {
        ("segment", "done"),
        ("label", "done"),
        ("measure", "done"),
    }
    grey = tifffile.imread(path)
    store = tmp_path / "electrode.zarr"
    phases = open_volume(store, "nmc", "phases").values
    assert np.array_equal(phases, np.select([grey == 85, grey == 170], [SILICON, CBD], 0))
    expected, n = ndimage.label(grey == 85)
    sizes = np.bincount(expected.ravel(), minlength=n + 1)[1:]
    minimum = load_campaign(campaign_file).stage_parameters("label")["min_volume_voxels"]
    table = read_particles(tmp_path / "tables" / "electrode" / "particles.parquet")
    assert len(table) == int((sizes >= minimum).sum())
    assert sorted(table["radius_um"]) == pytest.approx(
        sorted((3 * sizes[sizes >= minimum] / (4 * np.pi)) ** (1 / 3) * 0.05)
    )
    assert (table["n_rays"] > 0).any()


# ------------------------------------------------------- failures keep their cause


def compress_and_corrupt_one_chunk(raw: Path) -> None:
    """Rewrite the projections gzip-compressed, then overwrite one chunk's bytes: h5py
    reads the file's metadata and every other chunk, and fails on that one."""
    with h5py.File(raw, "a") as f:
        data = f["exchange/data"][...]
        del f["exchange/data"]
        chunks = (1, *data.shape[1:])
        f.create_dataset("exchange/data", data=data, chunks=chunks, compression="gzip")
    with h5py.File(raw, "r") as f:
        info = f["exchange/data"].id.get_chunk_info(len(data) // 2)
    with open(raw, "r+b") as handle:
        handle.seek(info.byte_offset)
        handle.write(b"\xff" * info.size)


def test_a_worker_failure_is_reported_with_its_cause(
    pristine: Path, client: Client, tmp_path: Path
) -> None:
    """A corrupt HDF5 chunk found by a worker in the middle of ingest: the run names the
    file and h5py's error, not "cancelled for reason: unknown"."""
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    raw = campaign_file.parent / "raw" / "c01.h5"
    compress_and_corrupt_one_chunk(raw)
    with pytest.raises(RunError, match=r"1 stage\(s\) failed") as info:
        run(campaign_file, client, stages=["ingest"])
    (failed,) = [o for o in info.value.outcomes if o.state == "failed"]
    assert (failed.stage, failed.sample) == ("ingest", "c01")
    assert str(raw) in failed.detail and "cancelled" not in failed.detail
    assert "Can't" in failed.detail or "filter" in failed.detail  # h5py's own words
    complete = complete_arrays(campaign_file.parent / "store.zarr")
    assert {path.split("/")[0] for path in complete} == set(SAMPLES) - {"c01"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs: a disk that fills during the first stage's writes."""
    mount = tmp_path / "full"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_reported_as_such(
    pristine: Path, client: Client, tmp_path: Path, small_disk: Path
) -> None:
    """The store on a disk that fills up: the run says "No space left on device" (before,
    that was only in the worker's log) and marks nothing complete that is not."""
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    store = small_disk / "store.zarr"
    text = campaign_file.read_text().replace('store = "store.zarr"', f'store = "{store}"')
    assert text != campaign_file.read_text()
    campaign_file.write_text(text)
    with pytest.raises(RunError, match=r"stage\(s\) failed") as info:
        run(campaign_file, client, stages=["ingest"])
    failed = [o for o in info.value.outcomes if o.state == "failed"]
    assert failed and all("No space left on device" in o.detail for o in failed)
    assert all("cancelled" not in o.detail for o in failed)
    for path in complete_arrays(store):  # what is marked complete reads back whole
        sample, name = path.split("/")
        assert np.isfinite(open_volume(store, sample, name).values).all()


# ---------------------------------------------------------------- interruption


def test_ctrl_c_stops_the_run_cleanly_and_a_rerun_resumes_to_the_same_result(
    local_run: tuple[Path, list[Outcome]], pristine: Path, client: Client, tmp_path: Path
) -> None:
    """SIGINT to the process group (Ctrl-C in a terminal) while recon runs: `debond run`
    exits with 130 within 10 s, prints a one-line summary and no traceback, marks nothing
    half-written complete, and the rerun gives the clean run's reconstructions."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        pytest.skip("SIGINT is ignored here (a background job): `debond run` would inherit it")
    local_file, _ = local_run
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    process = start_run(campaign_file, 2, subprocess.PIPE)
    try:
        assert process.stdout is not None and process.stderr is not None
        seen = []
        for line in process.stdout:  # until a reconstruction is under way
            seen.append(line)
            if re.match(r"recon +\S+ +running", line):
                break
        assert seen and "running" in seen[-1], "".join(seen)
        os.killpg(process.pid, signal.SIGINT)
        interrupted = time.monotonic()
        out, err = process.communicate(timeout=60)
        stopped_after = time.monotonic() - interrupted
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
    assert process.returncode == 130, err
    assert stopped_after < 10
    assert "Traceback" not in err + out
    assert re.search(r"^interrupted: \d+ stage\(s\) done", err, re.MULTILINE), err
    store = campaign_file.parent / "store.zarr"
    for path in complete_arrays(store):  # what is marked complete reads back whole
        sample, name = path.split("/")
        assert np.isfinite(open_volume(store, sample, name).values).all()

    outcomes = run(campaign_file, client)
    assert {o.state for o in outcomes} <= {"done", "skipped"}
    for sample in SAMPLES:
        assert np.array_equal(recon_values(campaign_file, sample), recon_values(local_file, sample))


def test_a_finished_run_closes_its_cluster_without_tracebacks(
    pristine: Path, tmp_path: Path
) -> None:
    campaign_file = copy_campaign(pristine, tmp_path / "small")
    script = Path(sys.executable).with_name("debond")
    done = subprocess.run(
        [str(script), "run", str(campaign_file), "--workers", "2", "--only", "ingest"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "CommClosedError" not in done.stderr
