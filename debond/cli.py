"""The ``debond`` command line: parses, calls library functions, prints."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pandas as pd
import typer
from typer.core import TyperCommand

from debond import __version__

if TYPE_CHECKING:
    from debond.campaign import Campaign
    from debond.progress import Display

# Help texts are plain text (rich_markup_mode=None): Rich markup would swallow the
# campaign sections they name, such as [fit].
app = typer.Typer(
    help="Electrode images to a validated model of binder detachment and capacity fade.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
model_app = typer.Typer(
    help="Model predictions without images.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(model_app, name="model")
submit_app = typer.Typer(
    help="Submit a campaign's run to a cluster manager.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(submit_app, name="submit")

Alpha = Annotated[float, typer.Option(help="α0 = (E/η)·T, dimensionless, > 0.")]
Kappa = Annotated[float, typer.Option(help="κ0, adhesion, µm.")]
Delta = Annotated[float, typer.Option(help="δ0, SEI grown per lithiation, µm.")]
Zeta = Annotated[float, typer.Option(help="ζ0, disconnection slope, 1/µm.")]
Expansion = Annotated[float, typer.Option(help="Silicon ΔV/V at full lithiation.")]
HalfCycle = Annotated[float, typer.Option(help="Half-cycle duration T, h.")]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _radii(text: str) -> np.ndarray:
    try:
        return np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError as error:
        raise _fail(f"--radii must be comma-separated numbers in µm; got {text!r}") from error


def _print_version(value: bool) -> None:
    """Print the version and stop before a command is looked for."""
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Electrode images to a validated model of binder detachment and capacity fade."""


class _RunCommand(TyperCommand):
    """``debond run``: its help ends with the stages, read from the registry only when
    help is asked for (importing the stages takes seconds)."""

    def format_epilog(self, ctx: Any, formatter: Any) -> None:  # Click's own types
        from debond.stages import REGISTRY

        with formatter.section(
            "Stages, in run order (each a campaign section and a word of --only)"
        ):
            formatter.write_dl([(s.name, s.summary.replace("`", "")) for s in REGISTRY])
        super().format_epilog(ctx, formatter)


@model_app.command("simulate")
def simulate(
    radii: Annotated[
        str, typer.Option(help="Effective radii, µm, comma-separated.")
    ] = "0.2,0.5,1.0,2.0",
    cycles: Annotated[int, typer.Option(help="Number of cycles n.")] = 10,
    alpha0: Alpha = 0.83,
    kappa0: Kappa = 0.02,
    delta0: Delta = 0.12,
    zeta0: Zeta = 0.163,
    volumetric_expansion: Expansion = 2.8,
    half_cycle_hours: HalfCycle = 20.0,
    output: Annotated[Path | None, typer.Option(help="Write the table (.csv or .parquet).")] = None,
) -> None:
    """Gaps d_k per radius and cycle, the imaged mean ± sd, and capacity retention.

    Example:

    \b
      debond model simulate --radii 0.2,1.0 --cycles 10 --output gaps.csv
    """
    from debond.model import Material, Parameters, capacity_retention, gap_distribution, gaps

    try:
        p = Parameters(alpha0, kappa0, delta0, zeta0)
        m = Material(volumetric_expansion, half_cycle_hours)
        r = _radii(radii)
        d = gaps(r, cycles, p, m)
        capacity = capacity_retention(r, cycles, p, m)
    except ValueError as error:
        raise _fail(str(error)) from error
    rows = []
    for k in range(1, cycles + 1):
        for i, radius in enumerate(r):
            mean, sd = gap_distribution(radius, k, p, m)
            rows.append(
                {
                    "cycle": k,
                    "radius_um": radius,
                    "gap_um": d[k - 1, i],
                    "imaged_mean_um": float(mean),
                    "imaged_sd_um": float(sd),
                    "retention": capacity[k - 1],
                }
            )
    table = pd.DataFrame(rows)
    if output is not None:
        if output.suffix == ".parquet":
            table.to_parquet(output, index=False)
        else:
            table.to_csv(output, index=False)
        typer.echo(f"wrote {output}")
    wide = table.pivot(index="cycle", columns="radius_um", values="gap_um")
    wide.columns = [f"d(r={c:g} µm)" for c in wide.columns]
    wide["C (Si retention)"] = capacity
    typer.echo(f"gap d_k in µm after each cycle; C over the population r = {radii} µm")
    typer.echo(wide.to_string(float_format=lambda v: f"{v:.4f}"))


@model_app.command("sensitivity")
def sensitivity_command(
    output: Annotated[Path, typer.Option(help="Figure path without suffix (PNG and PDF).")] = Path(
        "sensitivity"
    ),
    cycles: Annotated[int, typer.Option(help="Number of cycles.")] = 10,
    particles: Annotated[
        Path | None,
        typer.Option(
            help="Particle table whose radii form the population; "
            "default: a log-normal population (median 0.6 µm)."
        ),
    ] = None,
    factor: Annotated[float, typer.Option(help="Improvement factor of α0, κ0, δ0.")] = 2.0,
    alpha0: Alpha = 0.83,
    kappa0: Kappa = 0.02,
    delta0: Delta = 0.12,
    zeta0: Zeta = 0.163,
    volumetric_expansion: Expansion = 2.8,
    half_cycle_hours: HalfCycle = 20.0,
) -> None:
    """Silicon capacity retention when α0, κ0, δ0 improve (the paper's Fig. 4d).

    Example:

    \b
      debond model sensitivity --cycles 20 --output fig4d
    """
    from debond.model import Material, Parameters, sensitivity
    from debond.model.figures import plot_sensitivity, save_figure
    from debond.model.synthetic import draw_radii
    from debond.storage.tables import read_particles

    try:
        p = Parameters(alpha0, kappa0, delta0, zeta0)
        m = Material(volumetric_expansion, half_cycle_hours)
        if particles is not None:
            radii = read_particles(particles)["radius_um"].to_numpy()
        else:
            radii = draw_radii(np.random.default_rng(0), 4000)
        curves = sensitivity(radii, cycles, p, m, factor)
    except (ValueError, FileNotFoundError) as error:
        raise _fail(str(error)) from error
    for label, curve in curves.items():
        typer.echo(f"{label:<28} {100 * curve[-1]:5.1f} % silicon capacity at cycle {cycles}")
    paths = save_figure(plot_sensitivity(curves), output)
    typer.echo("wrote " + ", ".join(map(str, paths)))


@app.command("fit")
def fit_command(
    source: Annotated[
        Path,
        typer.Argument(help="A campaign file (.toml), or a particle table (.parquet or .csv)."),
    ],
    capacity: Annotated[
        Path | None,
        typer.Option(
            help="With a table: CSV with cycle,retention or cycle,charge_capacity_mAh "
            "(a campaign names its own)."
        ),
    ] = None,
    electrode_mass_mg: Annotated[
        float | None, typer.Option(help="With a table: coating mass, mg (for charge capacities).")
    ] = None,
    bootstrap: Annotated[
        int | None, typer.Option(help="Bootstrap replicates B (default: [fit] or 2000).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the resampling (default: [fit] or 0).")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Output folder; default: the campaign's tables/ or the table's folder."),
    ] = None,
    volumetric_expansion: Annotated[float, typer.Option(help="With a table: silicon ΔV/V.")] = 2.8,
    half_cycle_hours: Annotated[
        float, typer.Option(help="With a table: half-cycle duration T, h.")
    ] = 20.0,
    capacity_population: Annotated[
        str,
        typer.Option(
            help="With a table: the capacity term's particles: 3d, sections (the 3D sizes "
            "unfolded from the 2D rows' section radii) or auto (sections where there are any)."
        ),
    ] = "auto",
    silicon_surface_sd_um: Annotated[
        float,
        typer.Option(
            help="With a table: standard uncertainty of where the images place the silicon "
            "surface of the 3D rows, µm (a campaign takes [fit] silicon_surface_sd_voxels "
            "times each sample's voxel). 0: none."
        ),
    ] = 0.0,
    cbd_surface_sd_um: Annotated[
        float,
        typer.Option(
            help="With a table: the same for the CBD's surface across the gap, µm "
            "(a campaign: [fit] cbd_surface_sd_voxels). 0: none."
        ),
    ] = 0.0,
) -> None:
    """Fit α0, κ0, δ0, ζ0 to particle gaps and capacity data, with bootstrap.

    Given a campaign file, reads its tables/<campaign>/particles.parquet (written by
    `debond run`), its cycling data and recipe, its material and its [fit]
    section, and writes tables/<campaign>/fit.json, bootstrap.parquet and
    figures/.

    Example:

    \b
      debond fit campaign.toml --bootstrap 500
    """
    from debond.analysis import capacity_population as population_for
    from debond.analysis import fit_campaign, section_sizes
    from debond.campaign import CampaignError, load_campaign
    from debond.model import Material, check_capacity, fit, read_cycling, silicon_retention
    from debond.outputs import parameter_table, write_fit
    from debond.storage.tables import read_particles, three_d_rows

    try:
        if source.suffix == ".toml":
            campaign = load_campaign(source)
            typer.echo(f"fitting {campaign.tables_dir / 'particles.parquet'} …")
            fitted = fit_campaign(campaign, bootstrap=bootstrap, seed=seed, output=output)
            typer.echo(parameter_table(fitted.result, fitted.truth, fitted.particles))
            for warning in fitted.warnings:
                typer.echo(f"WARNING: {warning['message']}")
            for caveat in fitted.caveats:
                typer.echo(f"NOTE: {caveat}")
            typer.echo("wrote " + ", ".join(str(p) for p in fitted.files.values()))
            return
        if source.suffix not in (".parquet", ".csv"):
            raise ValueError(
                f"{source}: expected a campaign file (.toml) or a particle table "
                f"(.parquet or .csv); got {source.suffix!r}"
            )
        particles = read_particles(source)
        series = None
        if capacity is not None:
            columns: list[str] = []
            if capacity.is_file():
                columns = list(pd.read_csv(capacity, nrows=0).columns)
            if "retention" in columns:
                series = check_capacity(pd.read_csv(capacity), source=str(capacity))
            else:
                if electrode_mass_mg is None:
                    raise ValueError(
                        f"{capacity}: charge capacities need --electrode-mass-mg "
                        "(or give a CSV with cycle,retention)"
                    )
                series = silicon_retention(read_cycling(capacity), electrode_mass_mg)
        replicates = 2000 if bootstrap is None else bootstrap
        seed = 0 if seed is None else seed
        typer.echo(f"fitting {len(particles)} particles, {replicates} bootstrap replicates …")
        result = fit(
            particles,
            series,
            n_bootstrap=replicates,
            seed=seed,
            material=Material(volumetric_expansion, half_cycle_hours),
            population=population_for(particles, capacity_population, replicates, seed),
            section_sizes=section_sizes(particles),
            silicon_surface_sd_um=silicon_surface_sd_um,
            cbd_surface_sd_um=cbd_surface_sd_um,
        )
    except (ValueError, FileNotFoundError, CampaignError) as error:
        raise _fail(str(error)) from error
    folder = output or source.parent
    files = write_fit(result, particles, series, folder, folder / "figures")
    typer.echo(parameter_table(result))
    if not result.surface and three_d_rows(particles).any():
        typer.echo(
            "NOTE: the intervals hold the fit's statistical error only. Radii and gaps measured "
            "on images also carry where the surfaces were placed: give its uncertainty with "
            "--silicon-surface-sd-um and --cbd-surface-sd-um (README, \"The surfaces' "
            'placement"; a campaign file sets it in voxels).'
        )
    typer.echo("wrote " + ", ".join(str(p) for p in files.values()))


@app.command("report")
def report_command(
    campaign: Annotated[Path, typer.Argument(help="The campaign file (TOML).")],
) -> None:
    """A self-contained HTML report (and figures) of a run campaign.

    It holds the fit, if there is one, and the image quality of every sample
    (before a fit: the images only), in report.html beside the campaign file.

    Example:

    \b
      debond report campaign.toml
    """
    from debond.campaign import CampaignError, load_campaign
    from debond.report import ReportError, write_report

    try:
        path = write_report(load_campaign(campaign, check_files=False), echo=typer.echo)
    except (CampaignError, ReportError, FileNotFoundError) as error:
        raise _fail(str(error)) from error
    typer.echo(f"report: {path}")


@app.command("run", cls=_RunCommand)
def run_command(
    campaign: Annotated[Path, typer.Argument(help="The campaign file (TOML).")],
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Address of an existing Dask scheduler (default: DASK_SCHEDULER_ADDRESS, "
            "else an embedded cluster)."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes of the embedded cluster (default: cores).")
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(help="Comma-separated stages to run, e.g. ingest,prep (stages below)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Recompute outputs even when current.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="Say, per sample and stage, what a run would do and why; compute and "
            "write nothing, start no cluster."
        ),
    ] = False,
    progress: Annotated[
        bool,
        typer.Option(
            help="Show each running stage's tasks done out of the total: bars with the time "
            "left in a terminal, else a line every 10 %. --no-progress: only the lines of "
            "stages starting and ending."
        ),
    ] = True,
    cluster_kind: Annotated[
        str,
        typer.Option(
            "--cluster",
            help="local: the embedded cluster (or --scheduler); slurm: workers in SLURM "
            "jobs (dask-jobqueue, the hpc extra; see deploy/hpc/README.md).",
        ),
    ] = "local",
    jobqueue_config: Annotated[
        Path | None,
        typer.Option(
            help="With --cluster slurm: a dask-jobqueue YAML file (deploy/hpc/slurm.yaml); "
            "default: the dask configuration's jobqueue.slurm."
        ),
    ] = None,
    tls_ca_file: Annotated[
        Path | None,
        typer.Option(help="TLS: the CA certificate (PEM) that signed the cluster's certificates."),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="TLS: this client's certificate (PEM), signed by that CA."),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            help="TLS: the private key (PEM) of that certificate, unless its file holds it."
        ),
    ] = None,
) -> None:
    """Run the image stages for every sample, resumably (complete, current outputs are kept).

    Each run appends what it ran, where, its timings and its workers' memory peaks to
    the campaign's log, <campaign>.log beside the campaign file.

    Example:

    \b
      debond run campaign.toml --dry-run
    """
    from debond.campaign import CampaignError, load_campaign
    from debond.cluster import ClusterError, cluster, tls_security
    from debond.runner import (
        Interrupted,
        RunError,
        check_store_free,
        check_store_reachable,
        parse_stages,
        run_campaign,
    )
    from debond.slurm import SlurmError

    try:
        stages = parse_stages(only)
        loaded = load_campaign(campaign)
        loaded.check_inputs()
        loaded.check_store()
        # the workers of `debond run` are always other processes, embedded or not
        check_store_reachable(loaded, workers_in_process=False)
        check_store_free(loaded)
    except (CampaignError, RunError) as error:
        raise _fail(str(error)) from error
    if workers is not None and workers < 1:
        raise _fail(f"--workers must be at least 1; got {workers}")
    if cluster_kind not in ("local", "slurm"):
        raise _fail(f"--cluster {cluster_kind!r}: expected local or slurm")
    if jobqueue_config is not None and cluster_kind != "slurm":
        raise _fail("--jobqueue-config is for --cluster slurm; expected both or neither")
    security = None
    if tls_ca_file is not None or tls_cert is not None or tls_key is not None:
        if tls_ca_file is None or tls_cert is None:
            raise _fail(
                "TLS needs --tls-ca-file and --tls-cert (and --tls-key unless the "
                "certificate holds it); one of the first two is missing"
            )
        try:
            security = tls_security(tls_ca_file, tls_cert, tls_key)
        except ClusterError as error:
            raise _fail(str(error)) from error
    typer.echo(
        f"campaign {loaded.name}: {len(loaded.samples)} samples, store {loaded.store_location}"
    )
    typer.echo(f"stages: {', '.join(stages)}")
    if dry_run:
        _dry_run(loaded, stages, force)
        return
    started = time.perf_counter()
    display = _progress_display() if progress else None
    echo = typer.echo if display is None else display.echo
    try:
        with cluster(
            scheduler,
            workers=workers,
            security=security,
            slurm=cluster_kind == "slurm",
            jobqueue_config=jobqueue_config,
            echo=typer.echo,
        ) as client:
            outcomes = run_campaign(
                loaded,
                client,
                stages=stages,
                force=force,
                echo=echo,
                display=display,
                command=_run_command_line(
                    campaign, scheduler, workers, only, force, progress, cluster_kind
                ),
            )
    except Interrupted as stopped:
        typer.secho(str(stopped), fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=130) from None
    except KeyboardInterrupt:  # before any stage ran (the cluster was starting)
        typer.secho("interrupted before any stage ran", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=130) from None
    except (ClusterError, SlurmError) as error:
        raise _fail(str(error)) from error
    except (RunError, CampaignError) as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from error
    counts = {state: sum(o.state == state for o in outcomes) for state in ("done", "skipped")}
    typer.echo(
        f"finished in {time.perf_counter() - started:.1f} s: {counts['done']} done, "
        f"{counts['skipped']} skipped (current)"
    )


def _run_command_line(
    campaign: Path,
    scheduler: str | None,
    workers: int | None,
    only: str | None,
    force: bool,
    progress: bool,
    cluster_kind: str = "local",
) -> str:
    """The ``debond run`` command as given, for the run's log (TLS file names left out)."""
    from debond.runlog import describe_command

    given = {
        "--scheduler": scheduler,
        "--workers": workers,
        "--only": only,
        "--cluster": None if cluster_kind == "local" else cluster_kind,
    }
    words = ["debond", "run", str(campaign)]
    words += [
        word for key, value in given.items() if value is not None for word in (key, str(value))
    ]
    words += ["--force"] * force + ["--no-progress"] * (not progress)
    return describe_command(words)


def _progress_display() -> Display:
    """Bars on a terminal, else a plain line every 10 % (a log or a pipe reads it whole)."""
    from debond.progress import BarDisplay, LineDisplay

    return BarDisplay() if sys.stdout.isatty() else LineDisplay(typer.echo)


#: What a dry run's decisions mean, by the runner's reason (``after …`` is handled apart).
_DRY_RUN_WORDS = {
    "missing": "run: output missing",
    "incomplete": "resume: output incomplete (a run stopped); the stage is redone",
    "stale": "rerun: output stale",
    "damaged:": "redo: output damaged:",
    "forced": "run: --force",
    "current": "skip: current",
}


def _dry_run(campaign: Campaign, stages: tuple[str, ...], force: bool) -> None:
    """Print what ``debond run`` would do, sample by sample; exit 1 on bad input."""
    from debond.campaign import CampaignError
    from debond.runner import preview_run

    try:
        outcomes = preview_run(campaign, stages=stages, force=force)
    except CampaignError as error:
        raise _fail(str(error)) from error
    typer.echo("dry run: nothing is computed or written")
    for o in outcomes:
        reason, _, more = o.detail.partition(" ")
        if o.state == "failed":
            text = f"cannot run: {o.detail}"
        elif o.state == "absent":
            text = f"not part of its chain ({o.detail})"
        elif o.state == "blocked":
            text = f"blocked: {more} cannot run"
        elif reason == "after":
            text = f"run: after {more} (which makes its inputs)"
        elif reason == "current" and more:
            text = f"skip: current ({more.removeprefix('after ')} remakes its inputs as they were)"
        else:
            text = _DRY_RUN_WORDS.get(reason, reason) + (f" {more}" if more else "")
        typer.echo(f"{o.stage:<7} {o.sample:<10} {text}")
    count = {state: sum(o.state == state for o in outcomes) for state in ("run", "skipped")}
    problems = sum(o.state in ("failed", "blocked") for o in outcomes)
    typer.echo(
        f"a run would run {count['run']} and skip {count['skipped']} stage(s)"
        + (f"; {problems} cannot run (bad input above)" if problems else "")
    )
    if problems:
        raise typer.Exit(code=1)


@app.command("init")
def init_command(
    directory: Annotated[Path, typer.Argument(help="The folder holding the raw files.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="The campaign file to write (default: DIRECTORY/campaign.toml)."
        ),
    ] = None,
) -> None:
    """Write a commented campaign file for the raw files found in a folder.

    Finds Data Exchange HDF5 scans, folders of TIFF projections, 3-D TIFF
    segmentations, SEM images and a cycling CSV; reads the shapes, angles and
    pixel sizes they record; writes every parameter at its default, and marks
    each value only you know with a '# CHOOSE:' line. Never overwrites a file.

    Example:

    \b
      debond init beamtime/ && debond run beamtime/campaign.toml --dry-run
    """
    from debond.init import TO_LOAD, InitError, write_init

    try:
        result = write_init(directory, output)
    except InitError as error:
        raise _fail(str(error)) from error
    found = result.found
    for scan in found.scans:
        typer.echo(f"sample {scan.id:<10} {scan.path}: {scan.summary}")
    typer.echo(f"SEM images: {len(found.sem)}; cycling files: {len(found.cycling)}")
    for path, why in found.skipped:
        typer.echo(f"not used: {path}: {why}")
    typer.echo(f"wrote {result.path}")
    needs: dict[str, list[str]] = {}
    for choice in result.choices:
        needs.setdefault(choice.needed_by, []).append(f"{choice.where}: {choice.key}")
    typer.echo("values marked '# CHOOSE:' in it, by what needs them:")
    order = {TO_LOAD: 0, "": 2}  # what the file needs to load first, optional ones last
    for needed_by, keys in sorted(needs.items(), key=lambda item: order.get(item[0], 1)):
        typer.echo(f"  {needed_by or 'optional'}: {'; '.join(keys)}")
    typer.echo(f"then: debond run {result.path} --dry-run")


@app.command("status")
def status_command(
    campaign: Annotated[Path, typer.Argument(help="The campaign file (TOML).")],
    verify: Annotated[
        bool,
        typer.Option(
            help="Also read and decode every chunk of the arrays a run would keep (as long "
            "as reading them all); what fails is recorded in the array's completion marker, "
            "so that `debond run` redoes it and what was made from it."
        ),
    ] = False,
) -> None:
    """Each stage of each sample: missing, incomplete, damaged, stale or current.

    Damaged arrays are named with their missing or undecodable chunks; exits
    with 1 when one is damaged.

    Example:

    \b
      debond status campaign.toml --verify
    """
    from debond.campaign import CampaignError, load_campaign
    from debond.runner import RunError, campaign_status, check_store_free
    from debond.storage import Status, StoreError

    try:
        loaded = load_campaign(campaign, check_files=False)
        for problem in loaded.missing_inputs():
            typer.echo(f"missing input: {problem}")
        try:
            check_store_free(loaded)
        except RunError as error:
            typer.echo(str(error))
        rows = campaign_status(loaded, verify=verify, echo=typer.echo)
    except (CampaignError, RunError, StoreError) as error:
        raise _fail(str(error)) from error
    for row in rows:
        detail = f": {row.detail}" if row.detail else ""
        typer.echo(f"{row.stage:<7} {row.sample:<10} {row.state.value}{detail}")
    counts = {state: sum(row.state is state for row in rows) for state in Status}
    summary = ", ".join(f"{n} {state.value}" for state, n in counts.items() if n)
    redo = len(rows) - counts[Status.CURRENT]
    typer.echo(
        f"{summary}: `debond run` would run {redo} of {len(rows)} stages"
        if redo
        else f"{summary}: nothing to run"
    )
    if counts[Status.DAMAGED]:
        raise typer.Exit(code=1)


@app.command("params")
def params_command(
    section: Annotated[
        str | None, typer.Argument(help="One section (e.g. recon); default every section.")
    ] = None,
    markdown: Annotated[
        bool,
        typer.Option(help="Print the reference as Markdown tables (docs/parameters.md)."),
    ] = False,
) -> None:
    """Every campaign-file key: section, key, type, default, unit and help.

    Example:

    \b
      debond params segment
    """
    from debond.schema import parameter_table

    rows = parameter_table()
    sections = list(dict.fromkeys(p.section for p in rows))
    if section is not None and section not in sections:
        raise _fail(f"unknown section {section!r}; expected one of {', '.join(sections)}")
    if markdown:
        from debond.reference import parameter_markdown

        typer.echo(parameter_markdown(None if section is None else [section]), nl=False)
        return
    for name in sections if section is None else [section]:
        typer.echo(f"[{name}]")
        for p in (p for p in rows if p.section == name):
            unit = f" [{p.unit}]" if p.unit else ""
            typer.echo(f"  {p.key} = {p.default!r}{unit}  ({p.type}) {p.help}")


@app.command("synth")
def synth(
    directory: Annotated[Path, typer.Argument(help="Output folder.")],
    preset: Annotated[str, typer.Option(help="small (tests), demo or large.")] = "demo",
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes the same files.")] = 0,
    size: Annotated[
        int | None, typer.Option(help="Edge of a cubic volume in voxels (large preset).")
    ] = None,
) -> None:
    """Write a synthetic campaign with known ground truth: raw files, campaign.toml, truth/.

    Example:

    \b
      debond synth demo-campaign --preset small
    """
    from debond.synth import PRESETS, write_campaign

    if preset not in PRESETS:
        raise _fail(f"--preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    if size is not None and size < 16:
        raise _fail(f"--size must be at least 16 voxels; got {size}")
    result = write_campaign(directory, preset, seed, size=size, progress=typer.echo)
    typer.echo(f"wrote {len(result.samples)} samples; campaign file {result.campaign}")


@app.command("demo")
def demo(
    directory: Annotated[Path, typer.Argument(help="Output folder.")] = Path("demo"),
    bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates B.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the data and the resampling.")] = 0,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes of the embedded cluster (default: cores).")
    ] = None,
    preset: Annotated[
        str, typer.Option(help="Synthetic preset: demo, or small for a quick look.")
    ] = "demo",
) -> None:
    """Synthetic campaign → run → fit → report; prints recovered against true parameters.

    Example:

    \b
      debond demo demo --preset small
    """
    from debond.demo import run_demo
    from debond.outputs import parameter_table
    from debond.synth import PRESETS

    if preset not in PRESETS:
        raise _fail(f"--preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    outcome = run_demo(
        directory,
        n_bootstrap=bootstrap,
        seed=seed,
        workers=workers,
        preset=preset,
        echo=typer.echo,
    )
    fitted = outcome.fitted
    typer.echo("")
    typer.echo("recovered parameters (bootstrap median, 16th/84th percentiles) and true values:")
    typer.echo(parameter_table(fitted.result, fitted.truth, fitted.particles))
    for caveat in fitted.caveats:
        typer.echo(f"NOTE: {caveat}")
    typer.echo("")
    steps = ", ".join(f"{name} {value:.0f} s" for name, value in outcome.seconds.items())
    typer.echo(f"report:  {outcome.report}")
    typer.echo(f"figures: {outcome.directory / 'figures'}")
    typer.echo(f"tables:  {fitted.files['fit'].parent}")
    typer.echo(f"done in {sum(outcome.seconds.values()):.0f} s ({steps})")


@submit_app.command("k8s")
def submit_k8s(
    campaign: Annotated[
        Path, typer.Argument(help="The campaign file (TOML), in the folder the claim holds.")
    ],
    workers: Annotated[int, typer.Option(help="CPU workers (the default worker group).")] = 2,
    gpu_workers: Annotated[
        int, typer.Option(help="GPU workers, one nvidia.com/gpu each (a DaskWorkerGroup).")
    ] = 0,
    max_workers: Annotated[
        int | None,
        typer.Option(help="Let a DaskAutoscaler grow the CPU workers up to this many."),
    ] = None,
    image: Annotated[
        str, typer.Option(help="Container image with debond (deploy/Dockerfile), tagged.")
    ] = f"debond:{__version__}",
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "default",
    name: Annotated[
        str | None,
        typer.Option(help="Name of the DaskJob and its cluster (default: from the campaign)."),
    ] = None,
    worker_memory: Annotated[
        str, typer.Option(help="Memory limit of each worker container (quantity, e.g. 8Gi).")
    ] = "8Gi",
    memory_limit: Annotated[
        str | None,
        typer.Option(help="Dask's memory limit of each worker (default: the container's)."),
    ] = None,
    worker_cpu: Annotated[
        str, typer.Option(help="CPU of each worker container (quantity, e.g. 2).")
    ] = "1",
    threads: Annotated[int, typer.Option(help="Threads per worker.")] = 1,
    claim: Annotated[
        str, typer.Option(help="ReadWriteMany PersistentVolumeClaim holding the campaign.")
    ] = "debond-data",
    mount_path: Annotated[str, typer.Option(help="Where every pod mounts the claim.")] = "/data",
    shared_folder: Annotated[
        Path | None,
        typer.Option(
            help="The local folder the claim holds (default: the campaign file's folder)."
        ),
    ] = None,
    store_secret: Annotated[
        str, typer.Option(help="Secret with AWS_ACCESS_KEY_ID etc. for an s3:// store.")
    ] = "debond-store-credentials",
    dry_run: Annotated[
        bool, typer.Option(help="Print the manifests (YAML); contact no cluster.")
    ] = False,
) -> None:
    """Run a campaign on Kubernetes: a DaskJob through the Dask operator.

    The operator starts a scheduler and the workers, then a runner pod that
    runs `debond run` on them. The campaign file, its inputs and its tables
    live on the volume claim, mounted at the same path in every pod; the store
    too, or on s3:// with credentials from a Secret. Every setting is checked
    before anything is contacted. Applies through kr8s to the cluster of the
    current kubeconfig (pip install 'debond[k8s]').

    Example:

    \b
      debond submit k8s campaign.toml --workers 4 --gpu-workers 1 --dry-run
    """
    from debond.campaign import CampaignError, load_campaign
    from debond.kubernetes import (
        KubernetesError,
        Settings,
        apply,
        describe,
        job_name,
        manifests_for,
        to_yaml,
    )

    try:
        loaded = load_campaign(campaign)
        settings = Settings(
            name=name or job_name(loaded.name),
            namespace=namespace,
            image=image,
            workers=workers,
            gpu_workers=gpu_workers,
            max_workers=max_workers,
            worker_memory=worker_memory,
            memory_limit=memory_limit,
            worker_cpu=worker_cpu,
            threads=threads,
            claim=claim,
            mount_path=mount_path,
            store_secret=store_secret,
        )
        docs = manifests_for(loaded, settings, shared_folder or loaded.folder)
        if dry_run:
            typer.echo(to_yaml(docs), nl=False)
            return
        created = apply(docs)
    except (CampaignError, KubernetesError) as error:
        raise _fail(str(error)) from error
    for line in describe(docs):
        typer.echo(line)
    typer.echo(f"created in namespace {namespace}: {', '.join(created)}")
    typer.echo(f"follow it: kubectl -n {namespace} logs -f {settings.name}-runner")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``debond`` script."""
    app(args=argv, prog_name="debond")
