"""Benchmark: the image stages on the family of independent test scans.

What is measured
----------------
Every variant of :data:`debond.scans.VARIANTS` (or those named) is written
into a temporary folder (:func:`debond.scans.write_scan`, seed 0), run with
:func:`debond.runner.run_campaign` on an embedded cluster as ``debond run``
does (every stage, FBP, all other parameters at their defaults) and scored
against its truth (:func:`debond.scans.score_run`): the fraction of true
particles found, of reported particles that are spurious, the silicon Dice,
the mean absolute gap error in voxels and the median relative radius error.

Scores are accuracy, not speed: there is no reference to divide by. The wall
times of writing, running and scoring are recorded beside them.

Output: a markdown table on stdout and ``benchmarks/results/family.json``.

Baseline
--------
The pipeline as it stood at commit b146a69 (every variant, seed 0, 2 workers,
about 12 minutes on 2 cores; FBP, every other parameter at its default)::

    | variant | voxel nm | found % | spurious % | Dice | gap MAE vox | radius err % |
    |---|---|---|---|---|---|---|
    | baseline_60nm | 60 | 100.0 | 79.7 | 0.582 | 1.60 | 16.1 |
    | fine_25nm | 25 | 66.7 | 81.8 | 0.098 | 2.04 | 8.8 |
    | coarse_80nm | 80 | 100.0 | 75.0 | 0.626 | 0.81 | 29.2 |
    | silicon_brightest | 50 | 20.0 | 0.0 | 0.044 | 5.15 | 55.9 |
    | graphite_as_pore | 60 | 100.0 | 58.8 | 0.528 | 2.24 | 16.2 |
    | silicon_near_sei | 40 | 33.3 | 89.5 | 0.588 | 2.00 | 7.0 |
    | heavy_blur | 50 | 100.0 | 68.0 | 0.537 | 1.77 | 13.1 |
    | low_dose | 40 | 83.3 | 75.0 | 0.640 | 0.69 | 12.4 |
    | zingers_rings | 60 | 87.5 | 78.4 | 0.600 | 1.90 | 8.9 |
    | touching_clusters | 50 | 55.6 | 72.2 | 0.496 | 2.12 | 59.0 |
    | cracked | 45 | 100.0 | 84.1 | 0.696 | 1.55 | 10.4 |
    | ellipsoids | 35 | 100.0 | 84.6 | 0.614 | 2.11 | 17.8 |
    | filled_field | 70 | 71.4 | 76.2 | 0.332 | 1.62 | 28.9 |
    | low_contrast | 30 | 75.0 | 40.0 | 0.074 | 4.21 | 4.6 |
    | open_pores | 55 | 100.0 | 78.6 | 0.609 | 1.20 | 18.2 |

Behind the numbers (voxel confusion of the stored phases with the truth):
graphite is never found (pore everywhere); in ``baseline_60nm`` 37 % of the
voxels labelled silicon are pore at the rims of CBD (partial volume in the
silicon grey range), the source of most spurious particles; with silicon
brighter than CBD the two swap (84 % of "silicon" is CBD); at 25 nm most
silicon is labelled SEI; in touching clusters the SEI splits between CBD,
silicon and SEI.

Usage
-----
``python benchmarks/family.py [--variants a,b] [--workers 2] [--seed 0] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from common import machine_info, source_digests, write_result

from debond import scans
from debond.campaign import load_campaign
from debond.cluster import cluster
from debond.runner import RunError, run_campaign

HEADERS = (
    "variant",
    "voxel nm",
    "found %",
    "spurious %",
    "Dice",
    "gap MAE vox",
    "radius err %",
    "radius bias vox",
    "gap bias vox",
)


def _cell(value: float, scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value * scale:.{digits}f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The scores as a markdown table, one line per variant."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows:
        s = row.get("score") or {}
        cells = [
            row["variant"],
            f"{row['voxel_size_um'] * 1000:.0f}",
            _cell(s.get("found", math.nan), 100),
            _cell(s.get("spurious", math.nan), 100),
            _cell(s.get("silicon_dice", math.nan), 1, 3),
            _cell(s.get("gap_mae_vox", math.nan), 1, 2),
            _cell(s.get("radius_error", math.nan), 100),
            _cell(s.get("radius_bias_vox", math.nan), 1, 2),
            _cell(s.get("gap_bias_vox", math.nan), 1, 2),
        ]
        if row["state"] != "done":
            cells[0] += f" ({row['state']})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_variant(variant: scans.Variant, folder: Path, client: Any, seed: int) -> dict[str, Any]:
    """Write, run and score one variant; failures are recorded, not raised."""
    row: dict[str, Any] = {
        "variant": variant.name,
        "description": variant.description,
        "voxel_size_um": variant.voxel_size_um,
        "shape": list(variant.shape),
        "state": "done",
        "score": None,
    }
    start = time.perf_counter()
    campaign = scans.write_scan(folder / variant.name, variant, seed=seed)
    row["write_s"] = time.perf_counter() - start
    lines: list[str] = []
    start = time.perf_counter()
    try:
        run_campaign(load_campaign(campaign), client, echo=lines.append)
    except RunError as error:
        row["state"] = "failed"
        row["error"] = str(error)
    row["run_s"] = time.perf_counter() - start
    row["log"] = lines
    try:
        row["score"] = scans.score_run(campaign).as_dict()
    except (scans.ScanError, FileNotFoundError, KeyError, RuntimeError) as error:
        row["state"] = "unscored" if row["state"] == "done" else row["state"]
        row["score_error"] = str(error)
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="", help="comma-separated names (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="embedded cluster workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default="", help="write the scans here and keep them")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    chosen = (
        [scans.variant(name) for name in args.variants.split(",") if name]
        if args.variants
        else list(scans.VARIANTS)
    )
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="debond-family-"))
    rows: list[dict[str, Any]] = []
    try:
        with cluster(workers=args.workers) as client:
            for variant in chosen:
                try:
                    row = run_variant(variant, folder, client, args.seed)
                except Exception:  # one variant's failure is a result, not the end
                    row = {
                        "variant": variant.name,
                        "voxel_size_um": variant.voxel_size_um,
                        "state": "error",
                        "error": traceback.format_exc(),
                        "score": None,
                    }
                rows.append(row)
                print(markdown([row]).splitlines()[-1], flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    table = markdown(rows)
    print()
    print(table)
    summary = {
        row["variant"]: _cell((row.get("score") or {}).get("silicon_dice", math.nan), 1, 3)
        for row in rows
    }
    payload = {
        "benchmark": "family",
        "seed": args.seed,
        "workers": args.workers,
        "rows": rows,
        "table": table,
        "summary": {f"Dice {k}": v for k, v in summary.items()},
        "machine": machine_info(),
        "sources": source_digests(scans),
    }
    write_result("family", payload)
    return payload


if __name__ == "__main__":
    main()
