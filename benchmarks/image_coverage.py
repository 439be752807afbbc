"""Benchmark: coverage of the fit's intervals on particle tables measured from images.

:mod:`interval_coverage` draws its data sets from the model itself; here each
data set is a whole synthetic campaign (the digital twin,
:func:`debond.synth.write_campaign`, seeds 2000, 2001, …) whose projections,
SEM images and cycling CSV are run through every stage
(:func:`debond.runner.run_campaign`, ``ingest`` to ``measure`` and ``sem``, on
an embedded cluster of ``--workers`` processes) and fitted as ``debond fit
CAMPAIGN.toml`` fits it (:func:`debond.analysis.fit_campaign`, ``--bootstrap``
replicates). The gaps the fit sees are measured, with the segmentation's and
the ray tracing's errors, not drawn from the model's noise law.

For each parameter the benchmark records whether the reported 16–84 % and
2.5–97.5 % intervals (:func:`debond.model.diagnostics.intervals`, one-sided at
a bound) hold the truth (``truth/parameters.json``), the estimate's error
divided by the half-width of its 16–84 % interval (about 1 in magnitude for an
honest interval; a spread well above 1 says the intervals are too narrow),
and the fit's warnings. Coverage is summarised as :mod:`interval_coverage`
summarises it (same targets: 60–76 % and 90–98 %).

To tell the measurement's share from the fit's, ``--table 3d`` fits the
measured 3D rows alone (no SEM rows) and ``--table truth-matched`` the same
particles with their true radii and gaps (``truth/particles.parquet``, matched
by centroid), both with the same capacity series; ``--table true-spheres``
fits the measured table with each SEM row's converted radius and gap replaced
by those of the true sphere its section cuts (``truth/sections.parquet``).
``--surface`` sets the surface-placement uncertainties the fit holds (voxels;
default ``[fit]``'s, which ``debond fit`` uses; none for ``truth-matched``).

Usage
-----
``python benchmarks/image_coverage.py [--campaigns 20] [--preset demo]
[--bootstrap 200] [--workers 2] [--method parametric|particles]
[--table measured|3d|truth-matched|true-spheres] [--surface SILICON,CBD]
[--records FILE] [--kept DIR] [--summarise]``.
A run campaign keeps what a refit needs (:data:`KEPT`) under ``--kept``
(default ``benchmarks/results/image_coverage_campaigns``): other methods and
tables are fitted without running the pipeline again. Each outcome is appended
to ``--records`` (default ``benchmarks/results/image_coverage_records.jsonl``)
as it is fitted, and a run resumes after the campaigns already there. The
result goes to ``benchmarks/results/image_coverage_<method>_<table>_surface<S>-<C>.json``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import RESULTS_DIR, machine_info, print_table, source_digests, write_result
from interval_coverage import INTERVALS, TARGETS, append_record, holds, read_records, summarise
from scipy.spatial import cKDTree

from debond.analysis import (
    CampaignFit,
    campaign_capacity,
    capacity_population,
    fit_campaign,
    surface_uncertainties,
    synthetic_truth,
)
from debond.campaign import load_campaign
from debond.cluster import cluster
from debond.model import PARAMETER_NAMES, diagnostics, fit, fitting
from debond.model.fitting import SURFACES
from debond.particles import convert_sections
from debond.runner import run_campaign
from debond.schema import CBD_SURFACE_SD_VOXELS, SILICON_SURFACE_SD_VOXELS
from debond.storage.tables import usable_rows
from debond.synth import write_campaign

FIRST_SEED = 2000


#: What a kept campaign holds (enough to fit it again): the rest (raw data, store,
#: SEM images, true phases) is removed.
KEPT = (
    "campaign.toml",
    "echem",
    "tables",
    "truth/parameters.json",
    "truth/particles.parquet",
    "truth/sections.parquet",
)


def run_one(folder: Path, preset: str, k: int, client: Any) -> tuple[float, float]:
    """Write and run the k-th campaign in `folder`; seconds of each."""
    started = time.perf_counter()
    write_campaign(folder, preset, seed=FIRST_SEED + k)
    written = time.perf_counter()
    run_campaign(load_campaign(folder / "campaign.toml"), client, echo=lambda _: None)
    return written - started, time.perf_counter() - written


def keep(folder: Path, kept: Path) -> None:
    """Copy what a refit needs (:data:`KEPT`) of the campaign in `folder` to `kept`."""
    for name in KEPT:
        source, target = folder / name, kept / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)


#: Largest distance between a measured particle's (or section's) centroid and a true
#: one's for the two to be the same (``--table truth-matched`` and ``true-spheres``), µm.
MATCH_UM = 0.2


def with_truth(rows: pd.DataFrame, true: pd.DataFrame, by: str) -> pd.DataFrame:
    """The measured `rows` that are a true particle or section, with its true radius
    and gap (``radius_um``, ``gap_um`` of `true`): same `by` value (``"sample"`` or
    ``"image"``), centroids within :data:`MATCH_UM` (in 3D where `true` has
    ``centroid_z_um``, in the image's plane otherwise). Unmatched rows (e.g. pieces
    of an over-split particle) are left out."""
    centroid = [c for c in ("centroid_z_um", "centroid_y_um", "centroid_x_um") if c in true]
    matched = []
    for value, group in rows.groupby(by):
        candidates = true[true[by] == value]
        distance, index = cKDTree(candidates[centroid].to_numpy()).query(group[centroid])
        found = candidates.iloc[index[distance < MATCH_UM]]
        matched.append(
            group[distance < MATCH_UM].assign(
                radius_um=found["radius_um"].to_numpy(), gap_mean_um=found["gap_um"].to_numpy()
            )
        )
    return pd.concat(matched, ignore_index=True)


def table_rows(folder: Path, campaign: Any, table: str) -> pd.DataFrame:
    """The rows fitted with ``--table`` other than ``measured``: the measured 3D rows
    (``3d``, the SEM rows left out); those of them that are a true particle with its
    true radius and gap (``truth-matched``, :func:`with_truth`); or the measured
    table with each SEM row's converted (R, g) replaced by those of the true sphere
    its section cuts (``true-spheres``: what the conversion would give at best)."""
    measured = pd.read_parquet(campaign.tables_dir / "particles.parquet")
    rows = measured[(measured["modality"] == "3d") & usable_rows(measured)]
    if table == "3d":
        return rows
    if table == "truth-matched":
        return with_truth(rows, pd.read_parquet(folder / "truth" / "particles.parquet"), "sample")
    found = sorted((campaign.tables_dir / "sections").glob("*.parquet"))
    sections = pd.concat([pd.read_parquet(path) for path in found], ignore_index=True)
    converted = convert_sections(sections).assign(image=sections["image"])
    converted = converted[usable_rows(converted)]
    true_sections = pd.read_parquet(folder / "truth" / "sections.parquet")
    spheres = with_truth(converted, true_sections, "image").drop(columns="image")
    return pd.concat([rows, spheres], ignore_index=True)


def fit_outcome(
    folder: Path,
    size: str,
    k: int,
    bootstrap: int,
    method: str,
    table: str,
    surface: dict[str, float],
) -> dict[str, Any]:
    """Fit the run campaign in `folder` (the k-th); which intervals hold the truth.

    ``table="measured"`` fits it as ``debond fit CAMPAIGN.toml`` does; the other
    tables (:func:`table_rows`) are fitted with the campaign's capacity series and
    the capacity population ``debond fit`` would choose for them. ``surface``
    gives the surface-placement uncertainties (``"silicon"``, ``"cbd"``: voxels;
    :func:`fit_campaign`), 0 for the true radii and gaps of ``truth-matched``.
    """
    started = time.perf_counter()
    campaign = load_campaign(folder / "campaign.toml", check_files=False)  # raw data removed
    if table == "measured":
        fitted = fit_campaign(
            campaign,
            bootstrap=bootstrap,
            seed=k,
            output=folder / "fit",
            method=method,
            surface_sd_voxels=surface,
        )
    else:
        rows = table_rows(folder, campaign, table)
        settings = campaign.stage_parameters("fit")
        for kind, value in surface.items():
            settings[f"{kind}_surface_sd_voxels"] = value if table != "truth-matched" else 0.0
        surface_um = surface_uncertainties(campaign, settings, rows, folder / "campaign.toml")
        result = fit(
            rows,
            campaign_capacity(campaign),
            n_bootstrap=bootstrap,
            seed=k,
            material=campaign.material,
            method=method,
            population=capacity_population(rows, "auto", bootstrap, k),
            silicon_surface_sd_um=surface_um["silicon"],
            cbd_surface_sd_um=surface_um["cbd"],
        )
        fitted = CampaignFit(result, rows, None, synthetic_truth(folder), {})
    if fitted.truth is None:
        raise RuntimeError(f"{folder}: the synthetic campaign has no truth/parameters.json")
    truth = {n: float(getattr(fitted.truth, n)) for n in PARAMETER_NAMES}
    found = diagnostics.intervals(fitted.result)
    estimate = {n: float(getattr(fitted.result.estimate, n)) for n in PARAMETER_NAMES}
    half = {n: (iv.upper - iv.lower) / 2 for n, iv in found.items()}
    particles = fitted.particles
    return {
        "size": size,
        "data_set": k,
        "seed": FIRST_SEED + k,
        "method": method,
        "table": table,
        "surface": [surface["silicon"], surface["cbd"]],
        "seconds": time.perf_counter() - started,
        "particles": len(particles),
        "unconverged": 1.0 - float(fitted.result.samples["converged"].mean()),
        "one_sided": {n: iv.side != "two-sided" for n, iv in found.items()},
        "holds": {
            level: {n: holds(iv, truth[n], level) for n, iv in found.items()} for level in TARGETS
        },
        "estimate": estimate,
        "truth": truth,
        # error over the 16–84 % half-width: ~N(0, 1) for an honest interval
        "z": {n: (estimate[n] - truth[n]) / half[n] if half[n] > 0 else None for n in found},
        "warnings": [w["cause"] for w in diagnostics.diagnose(fitted.result, particles)],
    }


def spread(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per parameter: median error / half-width (bias) and its robust spread (1.4826 MAD)."""
    out = {}
    for name in PARAMETER_NAMES:
        z = np.array([r["z"][name] for r in records if r["z"][name] is not None], float)
        if z.size == 0:
            continue
        median = float(np.median(z))
        out[name] = {
            "median": median,
            "spread": float(1.4826 * np.median(np.abs(z - median))),
            "n": int(z.size),
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--preset", default="demo", choices=["small", "demo"])
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--method", default="parametric", choices=fitting.BOOTSTRAP_METHODS)
    parser.add_argument(
        "--table",
        default="measured",
        choices=["measured", "3d", "truth-matched", "true-spheres"],
        help="what is fitted: the measured table (3D and SEM rows), its 3D rows alone, "
        "the true radii and gaps of those 3D particles, or the measured table with the "
        "SEM rows' true spheres",
    )
    parser.add_argument(
        "--records", type=Path, default=RESULTS_DIR / "image_coverage_records.jsonl"
    )
    parser.add_argument(
        "--kept",
        type=Path,
        default=RESULTS_DIR / "image_coverage_campaigns",
        help="where the run campaigns are kept (tables and truth, for refits)",
    )
    parser.add_argument(
        "--surface",
        type=lambda text: [float(v) for v in text.split(",")],
        default=[SILICON_SURFACE_SD_VOXELS, CBD_SURFACE_SD_VOXELS],
        metavar="SILICON,CBD",
        help="surface-placement uncertainties the fit holds, voxels (default: [fit]'s)",
    )
    parser.add_argument(
        "--summarise", action="store_true", help="only summarise the campaigns already recorded"
    )
    args = parser.parse_args(argv)
    if len(args.surface) != 2 or min(args.surface) < 0:
        parser.error(f"--surface takes two values >= 0, silicon and CBD; got {args.surface}")
    surface = dict(zip(SURFACES, args.surface, strict=True))
    size = f"images-{args.preset}"
    wanted = (size, args.method, args.table, args.surface)
    done = {
        r["data_set"]: r
        for r in read_records(args.records)
        # records from before the surface uncertainties held none
        if (r["size"], r["method"], r["table"], r.get("surface", [0.0, 0.0])) == wanted
    }
    todo = [] if args.summarise else [k for k in range(args.campaigns) if k not in done]
    kept = {k: args.kept / f"{args.preset}-{FIRST_SEED + k}" for k in todo}
    to_run = [k for k in todo if not (kept[k] / "tables").is_dir()]
    if to_run:
        with cluster(workers=args.workers) as client, tempfile.TemporaryDirectory() as scratch:
            for k in to_run:
                folder = Path(scratch) / f"campaign{k:03d}"
                synth_s, run_s = run_one(folder, args.preset, k, client)
                keep(folder, kept[k])
                shutil.rmtree(folder)
                print(
                    f"campaign {k + 1}/{args.campaigns} run: synth {synth_s:.0f} s, "
                    f"run {run_s:.0f} s",
                    flush=True,
                )
    for k in todo:
        done[k] = fit_outcome(kept[k], size, k, args.bootstrap, args.method, args.table, surface)
        append_record(args.records, done[k])
        print(
            f"campaign {k + 1}/{args.campaigns} fitted ({args.method}, {args.table}): "
            f"{done[k]['particles']} rows, {done[k]['seconds']:.1f} s",
            flush=True,
        )
    records = [done[k] for k in sorted(done)]
    if not records:
        parser.error(f"no campaigns recorded in {args.records}")
    result = summarise(records, args.bootstrap, args.method)
    result["error_over_half_width"] = spread(records)
    table = []
    for key, row in result["rows"].items():
        name, level = key.split("/")
        low, high = row["target"]
        z = result["error_over_half_width"].get(name)
        table.append(
            [
                name,
                INTERVALS[level],
                f"{100 * row['coverage']:.0f} ± {100 * row['standard_error']:.0f} %",
                f"{100 * low:.0f}–{100 * high:.0f} %",
                "yes" if row["inside"] else "no",
                f"{z['median']:+.2f} / {z['spread']:.2f}" if z and level == "68" else "",
            ]
        )
    print_table(
        table,
        ["parameter", "interval", "coverage", "target", "inside", "error/half: bias / spread"],
    )
    print(
        f"{size}: {len(records)} campaigns × {args.bootstrap} replicates "
        f"({args.method}, table {args.table}, surface uncertainty silicon "
        f"{surface['silicon']:g}, CBD {surface['cbd']:g} voxel)"
    )
    document = {
        "benchmark": "image_coverage",
        "result": result,
        "summary": {
            f"{key} ({size}, {args.table}, {args.method}, surface {args.surface})": (
                f"{100 * row['coverage']:.0f} %"
            )
            for key, row in result["rows"].items()
        },
        "machine": machine_info(),
        "sources": source_digests(fitting, diagnostics),
    }
    document["surface_sd_voxels"] = surface
    write_result(
        f"image_coverage_{args.method}_{args.table}_surface{args.surface[0]:g}-{args.surface[1]:g}",
        document,
    )
    return document


if __name__ == "__main__":
    main()
