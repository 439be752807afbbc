"""Benchmark: one large sample end to end on workers with little memory.

One synthetic sample of N³ voxels (default 512³; ``--size``) runs from its raw
projections to its particle table (``ingest`` to ``measure``) on an embedded
cluster of 2 worker processes, 1 thread each, ``memory_limit`` 1 GiB and
Dask's default memory thresholds (spill 70 %, pause 80 %, terminate 95 %).
The same is run on a 128³ sample first: the reference.

It checks and reports, per stage and in all:

- wall time and cost per voxel, and its ratio to the 128³ sample's (goal:
  the whole run ≤ 1.3× per voxel);
- the peak resident memory of each worker (``VmHWM``, reset before each
  stage through ``/proc/<pid>/clear_refs``), against the limit;
- no worker restarted (the workers' process ids do not change), no worker
  paused and no task retried for memory (the workers' and scheduler's logs).

The blocks are the runner's own choice from the workers' limit
(:func:`debond.runner.task_memory`): nothing is tuned here.

Usage: ``python benchmarks/scale.py [--size N] [--reference N] [--memory-limit BYTES]
[--sample DIR]``. Writing a 1024³ sample takes most of an hour: ``--sample DIR``
runs the ``--size`` sample already written in DIR (its campaign file and
inputs, by an earlier run of this benchmark or :func:`write_sample`) after
removing its store and tables, and writes it there first when DIR is empty.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common import fmt_mib, fmt_seconds, high_water_mark, machine_info, print_table, write_result

#: Log lines of a worker or the scheduler that say memory ran out.
MEMORY_TROUBLE = (
    "Pausing worker",
    "Restarting worker",
    "exceeded 95% memory budget",
    "KilledWorker",
    "Worker process died",
    "Unmanaged memory use is high",
)
CHAIN = ("ingest", "prep", "recon", "segment", "label", "measure")


def _reset_peak() -> float | None:
    """On a worker: reset its peak RSS (``clear_refs`` 5) and return its current RSS."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")
    return high_water_mark()


def write_sample(folder: Path, size: int) -> tuple[Path, float]:
    """One synthetic sample of size³ voxels and its campaign file; seconds spent."""
    from debond.synth import PRESETS, Preset, write_campaign

    large = PRESETS["large"]
    preset = Preset(
        **{
            **asdict(large),
            "shape": (size, size, size),
            # angles as the detector is wide (π/2 per column is fully sampled)
            "n_angles": max(90, round(size * 0.75)),
            "sem_images": 1,
            "sem_shape": (256, 256),
        }
    )
    start = time.perf_counter()
    write_campaign(folder, preset, seed=0, cycles=(3,))
    return folder / "campaign.toml", time.perf_counter() - start


def run_one(campaign_file: Path, memory_limit: float, workers: int) -> dict[str, Any]:
    """Every stage of the sample's 3D chain, one at a time, with timings and peaks."""
    from dask.distributed import Client, LocalCluster

    from debond.campaign import load_campaign
    from debond.runner import run_campaign, task_memory

    campaign = load_campaign(campaign_file)
    stages: dict[str, Any] = {}
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            memory_limit=memory_limit,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        budget = task_memory(client)
        for name in CHAIN:
            client.run(_reset_peak)
            start = time.perf_counter()
            outcomes = run_campaign(campaign, client, stages=[name], echo=lambda _: None)
            seconds = time.perf_counter() - start
            if any(o.state != "done" for o in outcomes):  # skipped or failed: no time to report
                raise RuntimeError(f"{name}: {outcomes} (see {campaign_file.parent}/campaign.log)")
            peaks = client.run(high_water_mark)
            stages[name] = {"seconds": seconds, "peak_rss_bytes": max(peaks.values())}
            peak = fmt_mib(max(peaks.values()))
            print(f"  {name}: {fmt_seconds(seconds)}, peak {peak}", flush=True)
        after = client.run(os.getpid)
        logs = client.get_worker_logs()
        lines = [line for log in logs.values() for _, line in log]
        lines += [line for _, line in client.get_scheduler_logs()]
    trouble = [line for line in lines if any(t in line for t in MEMORY_TROUBLE)]
    return {
        "stages": stages,
        "task_budget_bytes": budget,
        "workers_restarted": sorted(set(pids.values()) ^ set(after.values())),
        "memory_log_lines": trouble,
        "seconds": sum(s["seconds"] for s in stages.values()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="volume edge, voxels")
    parser.add_argument("--reference", type=int, default=128, help="reference edge, voxels")
    parser.add_argument("--memory-limit", type=float, default=2**30, help="per worker, bytes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--sample", type=Path, help="folder of the --size sample, kept between runs"
    )
    args = parser.parse_args(argv)
    runs: dict[int, dict[str, Any]] = {}
    for size in (args.reference, args.size):
        kept = args.sample if size == args.size else None
        with contextlib.nullcontext(kept) if kept else tempfile.TemporaryDirectory() as folder:
            campaign_file, synth_s = Path(folder) / "campaign.toml", None
            if campaign_file.is_file():  # a kept sample: its outputs go, its inputs stay
                for outputs in ("store.zarr", "tables"):
                    shutil.rmtree(Path(folder) / outputs, ignore_errors=True)
            else:
                Path(folder).mkdir(parents=True, exist_ok=True)
                campaign_file, synth_s = write_sample(Path(folder), size)
            run = run_one(campaign_file, args.memory_limit, args.workers)
        run["synth_seconds"] = synth_s
        run["voxels"] = size**3
        runs[size] = run
        written = (
            "data kept from before"
            if synth_s is None
            else f"data written in {fmt_seconds(synth_s)}"
        )
        print(f"{size}³: {fmt_seconds(run['seconds'])} ({written})")
    big, ref = runs[args.size], runs[args.reference]
    per_voxel = {
        name: (big["stages"][name]["seconds"] / big["voxels"])
        / (ref["stages"][name]["seconds"] / ref["voxels"])
        for name in CHAIN
    }
    total = (big["seconds"] / big["voxels"]) / (ref["seconds"] / ref["voxels"])
    peak = max(s["peak_rss_bytes"] for s in big["stages"].values())
    rows = [
        [
            name,
            fmt_seconds(ref["stages"][name]["seconds"]),
            fmt_mib(ref["stages"][name]["peak_rss_bytes"]),
            fmt_seconds(big["stages"][name]["seconds"]),
            fmt_mib(big["stages"][name]["peak_rss_bytes"]),
            f"{per_voxel[name]:.2f}",
        ]
        for name in CHAIN
    ]
    rows.append(
        ["all", fmt_seconds(ref["seconds"]), "", fmt_seconds(big["seconds"]), "", f"{total:.2f}"]
    )
    clean = not big["workers_restarted"] and not big["memory_log_lines"]
    result = {
        "name": "scale",
        "machine": machine_info(),
        "problem": {
            "size": args.size,
            "reference": args.reference,
            "workers": args.workers,
            "threads_per_worker": 1,
            "memory_limit_bytes": args.memory_limit,
        },
        "runs": {str(k): v for k, v in runs.items()},
        "cost_per_voxel_ratio": {**per_voxel, "all": total},
        "goal_cost_ratio": 1.3,
        "peak_under_limit": peak < args.memory_limit,
        "no_restart_no_memory_trouble": clean,
        "summary": {
            f"{args.size}³ end to end, 2 workers of {fmt_mib(args.memory_limit)}": fmt_seconds(
                big["seconds"]
            ),
            f"{args.reference}³ reference": fmt_seconds(ref["seconds"]),
            "cost per voxel vs reference (goal ≤ 1.3)": f"{total:.2f}",
            "largest worker peak RSS": fmt_mib(peak),
            "workers restarted, memory warnings": (
                f"{len(big['workers_restarted'])}, {len(big['memory_log_lines'])}"
            ),
        },
    }
    write_result("scale", result)
    print_table(
        rows,
        [
            "stage",
            f"{args.reference}³ s",
            "peak",
            f"{args.size}³ s",
            "peak",
            "per-voxel ratio",
        ],
    )
    print_table(list(result["summary"].items()), ["figure", "value"])
    return result


if __name__ == "__main__":
    main()
