"""The command line, driven as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from debond.cli import app
from debond.model import PAPER_PARAMETERS, Material, capacity_retention, gaps
from debond.model.synthetic import simulate_campaign, simulate_cycling
from debond.schema import SILICON_SURFACE_SD_VOXELS
from debond.storage.tables import PARTICLES_SCHEMA, write_table

runner = CliRunner()


def test_model_simulate_writes_the_model_values(tmp_path: Path) -> None:
    out = tmp_path / "sim.csv"
    result = runner.invoke(
        app, ["model", "simulate", "--radii", "0.2,1.0", "--cycles", "10", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    d = gaps([0.2, 1.0], 10, PAPER_PARAMETERS, Material())
    last = table[table["cycle"] == 10].sort_values("radius_um")
    np.testing.assert_allclose(last["gap_um"], d[-1])
    np.testing.assert_allclose(
        table.groupby("cycle")["retention"].first(),
        capacity_retention([0.2, 1.0], 10, PAPER_PARAMETERS, Material()),
    )
    assert "d(r=1 µm)" in result.output


def test_model_simulate_rejects_bad_parameters() -> None:
    result = runner.invoke(app, ["model", "simulate", "--alpha0", "-1"])
    assert result.exit_code == 2
    assert "alpha0" in result.output and "-1" in result.output


def test_model_sensitivity_writes_png_and_pdf(tmp_path: Path) -> None:
    stem = tmp_path / "fig4d"
    result = runner.invoke(app, ["model", "sensitivity", "--output", str(stem)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "fig4d.png").stat().st_size > 10_000
    assert (tmp_path / "fig4d.pdf").read_bytes().startswith(b"%PDF")
    assert "all three" in result.output


def test_fit_takes_a_particle_table_and_a_cycling_csv(tmp_path: Path) -> None:
    sim = simulate_campaign(PAPER_PARAMETERS, seed=3)
    table = tmp_path / "particles.parquet"
    sim.particles.to_parquet(table)
    cycling = tmp_path / "cycling.csv"
    simulate_cycling(sim.capacity["retention_true"].to_numpy(), 2.0).to_csv(cycling, index=False)
    result = runner.invoke(
        app,
        [
            "fit",
            str(table),
            "--capacity",
            str(cycling),
            "--electrode-mass-mg",
            "2",
            "--bootstrap",
            "50",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "capacity term: 3d particles" in result.output
    assert "NOTE: the intervals hold the fit's statistical error only" in result.output
    document = json.loads((tmp_path / "fit.json").read_text())
    assert document["bootstrap"] == 50
    assert document["surface"] == {}
    assert document["capacity_population"]["source"] == "3d particles"
    refused = runner.invoke(app, ["fit", str(table), "--capacity-population", "sections"])
    assert refused.exit_code == 2
    assert "capacity_population = 'sections'" in refused.output
    assert set(document["parameters"]) == {"alpha0", "kappa0", "delta0", "zeta0"}
    assert len(pd.read_parquet(tmp_path / "bootstrap.parquet")) == 50
    for name in ("gap_vs_radius", "sensitivity", "bootstrap"):
        assert (tmp_path / "figures" / f"{name}.png").is_file()
        assert (tmp_path / "figures" / f"{name}.pdf").is_file()
    held = runner.invoke(
        app,
        ["fit", str(table), "--bootstrap", "20", "--silicon-surface-sd-um", "0.015"],
    )
    assert held.exit_code == 0, held.output
    assert "Intervals hold the surface placement: silicon ±0.015 µm" in held.output
    assert "statistical error only" not in held.output
    surface = json.loads((tmp_path / "fit.json").read_text())["surface"]
    assert set(surface) == {"silicon"} and set(surface["silicon"]["sd_um"].values()) == {0.015}
    negative = runner.invoke(app, ["fit", str(table), "--cbd-surface-sd-um", "-1"])
    assert (
        negative.exit_code == 2 and "cbd_surface_sd_um must be finite and >= 0" in negative.output
    )


def test_fit_explains_what_is_missing(tmp_path: Path) -> None:
    sim = simulate_campaign(PAPER_PARAMETERS, seed=3)
    table = tmp_path / "particles.csv"
    sim.particles.to_csv(table, index=False)
    cycling = tmp_path / "cycling.csv"
    simulate_cycling(sim.capacity["retention_true"].to_numpy(), 2.0).to_csv(cycling, index=False)
    result = runner.invoke(app, ["fit", str(table), "--capacity", str(cycling)])
    assert result.exit_code == 2
    assert "--electrode-mass-mg" in result.output
    result = runner.invoke(app, ["fit", str(tmp_path / "campaign.toml")])
    assert result.exit_code == 2 and "campaign.toml does not exist" in result.output
    result = runner.invoke(app, ["fit", str(tmp_path / "particles.txt")])
    assert result.exit_code == 2 and "(.parquet or .csv)" in result.output


@pytest.mark.slow  # the whole demo, 25 s; the default run covers its parts
def test_demo_prints_recovered_and_true_parameters(tmp_path: Path) -> None:
    """The whole chain on the small preset: synth → run → fit → report."""
    folder = tmp_path / "demo"
    arguments = ["demo", str(folder), "--preset", "small", "--bootstrap", "50", "--workers", "2"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "true" in result.output and "α0" in result.output and "0.83" in result.output
    assert f"report:  {folder / 'report.html'}" in result.output
    truth = json.loads((folder / "truth" / "parameters.json").read_text())
    assert truth["alpha0"] == PAPER_PARAMETERS.alpha0
    fitted = json.loads((folder / "tables" / "campaign" / "fit.json").read_text())
    assert fitted["truth"]["zeta0"] == PAPER_PARAMETERS.zeta0
    assert fitted["bootstrap"] == 50
    assert (folder / "figures" / "gap_vs_radius.png").is_file()
    assert (folder / "report.html").is_file()
    # 2-3 usable particles a cycle group cannot make a fit: the run says so plainly
    causes = {w["cause"] for w in fitted["warnings"]}
    assert "few_particles" in causes, fitted["warnings"]
    assert "WARNING: the 1-cycle group has" in result.output
    assert "should not be read as a result" in (folder / "report.html").read_text()
    again = runner.invoke(app, arguments)  # resumed: every stage current
    assert again.exit_code == 0
    assert "using the synthetic campaign already in" in again.output
    assert " done in " not in again.output.split("particle table")[0].split("cluster:")[1]


@pytest.mark.slow
def test_installed_script_runs_the_default_demo(tmp_path: Path) -> None:
    """The README's `debond demo` (demo preset, 2000 replicates) as a subprocess.

    Closed loop from images: α0, δ0 and ζ0 within |median − true| ≤ 84th − 16th
    percentile. κ0 (a 0.02 µm jump at detachment, a third of a voxel) is barely
    seen; its interval, which holds the surfaces' placement, holds the true value
    (with the statistical error alone it sat on its bound 0). The capacity term sums
    over the SEM sections' unfolded sizes; over the pillars' 3D particles
    instead (fewer large ones) α0 and ζ0 came out at 0.96 and 0.196.
    """
    script = Path(sys.executable).with_name("debond")
    done = subprocess.run(
        [str(script), "demo", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "2000 bootstrap replicates" in done.stdout
    fitted = json.loads((tmp_path / "demo" / "tables" / "campaign" / "fit.json").read_text())
    for name in ("alpha0", "delta0", "zeta0"):
        p = fitted["parameters"][name]
        true = fitted["truth"][name]
        assert abs(p["value"] - true) <= p["upper"] - p["lower"], (name, p, true)
    kappa = fitted["parameters"]["kappa0"]
    assert kappa["lower"] <= fitted["truth"]["kappa0"] <= kappa["upper"], kappa
    assert set(fitted["surface"]) == {"silicon", "cbd"}
    # the capacity term's particles: the SEM sections unfolded, as large as the
    # electrode's (the pillars hold fewer large particles)
    assert fitted["capacity_population"]["source"] == "SEM sections, unfolded"


def test_synth_writes_a_campaign_and_rejects_unknown_presets(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", str(tmp_path / "s"), "--preset", "small", "--seed", "2"])
    assert result.exit_code == 0, result.output
    for name in (
        "campaign.toml",
        "raw/c10.h5",
        "sem/c03_0.tif",
        "echem/cycling.csv",
        "truth/particles.parquet",
        "truth/parameters.json",
    ):
        assert (tmp_path / "s" / name).is_file(), name
    result = runner.invoke(app, ["synth", str(tmp_path / "t"), "--preset", "huge"])
    assert result.exit_code == 2 and "small, demo, large" in result.output


def test_fit_of_a_campaign_reads_its_tables_cycling_and_settings(tmp_path: Path) -> None:
    """A campaign's own particle table, cycling CSV, recipe and [fit] section."""
    drawn = simulate_campaign(PAPER_PARAMETERS, Material(), seed=3)
    tables = tmp_path / "tables" / "c"  # the tables of c.toml
    write_table(drawn.particles, tables / "particles.parquet", PARTICLES_SCHEMA)
    (tmp_path / "echem").mkdir()
    cycling = simulate_cycling(drawn.capacity["retention_true"].to_numpy(), 2.0, seed=3)
    cycling.to_csv(tmp_path / "echem" / "cycling.csv", index=False)
    (tmp_path / "raw.h5").write_bytes(b"")
    samples = "".join(
        f"[[sample]]\nid = '{s}'\ncycles = {c}\ntxm = 'raw.h5'\nvoxel_size_um = 0.03\n"
        for s, c in drawn.particles.groupby("sample")["cycles"].first().items()
    )
    (tmp_path / "c.toml").write_text(
        "[campaign]\nname = 'c'\nstore = 's.zarr'\n"
        + samples
        + "[electrochemistry]\ncycling = 'echem/cycling.csv'\nelectrode_mass_mg = 2.0\n"
        "[fit]\nbootstrap = 40\nseed = 5\ncbd_surface_sd_voxels = 0\n"
    )
    result = runner.invoke(app, ["fit", str(tmp_path / "c.toml")])
    assert result.exit_code == 0, result.output
    # [fit]'s surface uncertainties in voxels, times the samples' voxel edge
    surface = json.loads((tables / "fit.json").read_text())["surface"]
    assert set(surface) == {"silicon"}
    assert surface["silicon"]["sd_um"] == pytest.approx(
        dict.fromkeys(drawn.particles["sample"].unique(), SILICON_SURFACE_SD_VOXELS * 0.03)
    )
    assert "Intervals hold the surface placement: silicon ±" in result.output
    bootstrap = pd.read_parquet(tables / "bootstrap.parquet")
    assert "surface_z_silicon" in bootstrap and "surface_z_cbd" not in bootstrap
    assert "fitting" in result.output and "40 bootstrap replicates" in result.output
    document = json.loads((tables / "fit.json").read_text())
    assert document["bootstrap"] == 40
    assert len(bootstrap) == 40
    # a campaign's gaps come from images: what its intervals do not hold is said
    # cbd_surface_sd_voxels = 0: the intervals are the fit's statistical ones
    assert document["caveats"] and "statistical error only" in document["caveats"][0]
    assert f"NOTE: {document['caveats'][0]}" in result.output
    assert document["warnings"] == [] or "systematic" not in str(document["warnings"])
    assert (tmp_path / "figures" / "gap_vs_radius.png").is_file()
    again = runner.invoke(app, ["fit", str(tmp_path / "c.toml"), "--bootstrap", "20"])
    assert again.exit_code == 0
    assert json.loads((tables / "fit.json").read_text())["bootstrap"] == 20


def test_fit_warns_about_every_campaign_sample_without_rows(tmp_path: Path) -> None:
    """The table lacks c03 (its run failed): the fit goes on and says so, by name."""
    drawn = simulate_campaign(PAPER_PARAMETERS, Material(), seed=3)
    rows = drawn.particles[drawn.particles["sample"] != "c03"]
    tables = tmp_path / "tables" / "c"
    write_table(rows, tables / "particles.parquet", PARTICLES_SCHEMA)
    samples = ""
    for sample, cycles in (("c00", 0), ("c01", 1), ("c03", 3), ("c10", 10)):
        (tmp_path / f"{sample}.h5").write_bytes(b"")
        samples += (
            f"[[sample]]\nid = '{sample}'\ncycles = {cycles}\ntxm = '{sample}.h5'\n"
            "voxel_size_um = 0.03\n"
        )
    (tmp_path / "c.toml").write_text(
        "[campaign]\nname = 'c'\nstore = 's.zarr'\n" + samples + "[fit]\nbootstrap = 10\n"
    )
    result = runner.invoke(app, ["fit", str(tmp_path / "c.toml")])
    assert result.exit_code == 0, result.output
    warning = (
        f"sample 'c03' has no rows in {tables / 'particles.parquet'}: its measure and sem "
        "stages failed or have not run (`debond run` says which); the fit goes on without it"
    )
    assert f"WARNING: {warning}" in result.output
    assert result.output.count("has no rows") == 1
    recorded = json.loads((tables / "fit.json").read_text())["warnings"]
    assert [w for w in recorded if w["cause"] == "sample_without_rows"] == [
        {"cause": "sample_without_rows", "message": warning, "value": "c03"}
    ]


def test_fit_of_a_campaign_before_its_run_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "raw.h5").write_bytes(b"")
    (tmp_path / "c.toml").write_text(
        "[campaign]\nname = 'c'\nstore = 's.zarr'\n"
        "[[sample]]\nid = 'a'\ncycles = 1\ntxm = 'raw.h5'\nvoxel_size_um = 0.03\n"
    )
    result = runner.invoke(app, ["fit", str(tmp_path / "c.toml")])
    assert result.exit_code == 2
    assert "particles.parquet does not exist; run `debond run" in result.output


def test_fit_of_a_campaign_with_tables_of_an_earlier_version_says_what_to_do(
    tmp_path: Path,
) -> None:
    drawn = simulate_campaign(PAPER_PARAMETERS, Material(), seed=3)
    write_table(drawn.particles, tmp_path / "tables" / "particles.parquet", PARTICLES_SCHEMA)
    (tmp_path / "raw.h5").write_bytes(b"")
    (tmp_path / "c.toml").write_text(
        "[campaign]\nname = 'c'\nstore = 's.zarr'\n"
        "[[sample]]\nid = 'a'\ncycles = 1\ntxm = 'raw.h5'\nvoxel_size_um = 0.03\n"
    )
    result = runner.invoke(app, ["fit", str(tmp_path / "c.toml")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert f"{tmp_path / 'tables' / 'c' / 'particles.parquet'} does not exist" in text
    assert f"tables of an earlier version lie directly in {tmp_path / 'tables'}: " in text
    assert "particles.parquet; the run moves them here" in text


def test_params_lists_every_key_of_a_section_from_the_schema() -> None:
    from debond.schema import parameter_table

    result = runner.invoke(app, ["params", "segment"])
    assert result.exit_code == 0, result.output
    keys = [p.key for p in parameter_table() if p.section == "segment"]
    assert result.output.splitlines()[0] == "[segment]"
    assert [line.split(" = ")[0].strip() for line in result.output.splitlines()[1:]] == keys
    assert "sigma_voxels = 1.0 [voxels]" in result.output
    wrong = runner.invoke(app, ["params", "segmentation"])
    assert wrong.exit_code == 2 and "unknown section 'segmentation'" in wrong.output


def _campaign(folder: Path, store: str) -> Path:
    """A one-sample campaign whose raw file exists (empty: nothing may read it)."""
    (folder / "raw").mkdir(parents=True)
    (folder / "raw" / "a.h5").write_bytes(b"")
    path = folder / "c.toml"
    path.write_text(
        f"[campaign]\nname = 'c'\nstore = {json.dumps(store)}\n"
        "[[sample]]\nid = 'a'\ncycles = 1\ntxm = 'raw/a.h5'\nvoxel_size_um = 0.03\n"
    )
    return path


def _refused(result: Result, *expected: str) -> str:
    """The output of a command refused as bad input: exit code 2, no traceback, no cluster."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "cluster:" not in result.output, "refused before a cluster started"
    for text in expected:
        assert text in result.output, result.output
    return result.output


@pytest.mark.parametrize(
    ("store", "found"),
    [
        ("raw", "a folder that is not a debond campaign store, holding a.h5"),
        ("raw/a.h5", "a file"),
        ("memory://c.zarr", "workers in other processes cannot see it"),
    ],
)
def test_run_refuses_a_store_that_workers_cannot_use_or_that_is_something_else(
    tmp_path: Path, store: str, found: str
) -> None:
    path = _campaign(tmp_path, store)
    before = sorted(tmp_path.rglob("*"))
    result = runner.invoke(app, ["run", str(path), "--workers", "1"])
    _refused(result, str(path), f"[campaign] store = {store!r}", found)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    ("arguments", "environment", "named"),
    [
        (["--scheduler", "notanaddress"], {}, "--scheduler 'notanaddress'"),
        (
            [],
            {"DASK_SCHEDULER_ADDRESS": "tcp://host:port"},
            "DASK_SCHEDULER_ADDRESS 'tcp://host:port'",
        ),
        (["--scheduler", "tls://127.0.0.1:8786"], {}, "--scheduler 'tls://127.0.0.1:8786'"),
    ],
)
def test_run_names_a_malformed_scheduler_address(
    tmp_path: Path, arguments: list[str], environment: dict[str, str], named: str
) -> None:
    path = _campaign(tmp_path, "s.zarr")
    result = runner.invoke(app, ["run", str(path), *arguments], env=environment)
    _refused(result, named)
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.slow
def test_the_demo_segmented_by_its_size_prior_closes_the_loop(tmp_path: Path) -> None:
    """The demo campaign at the default segmentation (the size prior, Gaussian σ = 1),
    not its preset grey classes: α0, δ0 and ζ0 within |median − true| ≤ 84th − 16th
    percentile, and κ0's interval holding the true value."""
    import tomlkit

    from debond.demo import run_demo
    from debond.synth import write_campaign

    folder = tmp_path / "demo"
    write_campaign(folder, "demo", 0)
    path = folder / "campaign.toml"
    document = tomlkit.parse(path.read_text())
    segment = document["segment"]
    del segment["thresholds"], segment["sigma_voxels"]
    path.write_text(tomlkit.dumps(document))
    lines: list[str] = []
    run_demo(folder, n_bootstrap=500, echo=lines.append)
    assert any("(size prior)" in line for line in lines)  # the prior path ran
    fitted = json.loads((folder / "tables" / "campaign" / "fit.json").read_text())
    for name in ("alpha0", "delta0", "zeta0"):
        p = fitted["parameters"][name]
        true = fitted["truth"][name]
        assert abs(p["value"] - true) <= p["upper"] - p["lower"], (name, p, true)
    kappa = fitted["parameters"]["kappa0"]
    assert kappa["lower"] <= fitted["truth"]["kappa0"] <= kappa["upper"]


def test_status_of_a_campaign_never_run_says_everything_is_missing(tmp_path: Path) -> None:
    path = _campaign(tmp_path, "s.zarr")
    result = runner.invoke(app, ["status", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "ingest  a          missing: no store yet"
    assert lines[-1] == "6 missing: `debond run` would run 6 of 6 stages"
    assert not (tmp_path / "s.zarr").exists()
