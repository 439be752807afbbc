"""Benchmark: block-wise labelling on 2 workers against scipy and cc3d on the whole array.

What is measured
----------------
Wall time of :func:`debond.pipeline.label.label` (``connectivity=6``, no
size prior) on a random-blob mask (default 256³): Gaussian-smoothed white
noise (σ = 2 voxels, fixed seed) above 0.5 of its standard deviation (about
31 % of the voxels, over a thousand components, many crossing blocks). The
pipeline runs on a ``distributed.LocalCluster`` of 2 worker processes with
one thread each, the mask chunked (default 64³, the case measured before, and 128³)
and persisted on the workers first, as a stage finds its input; ``label()``
joins the chunks into labelling blocks of at least 128³ voxels
(``block_voxels=LABEL_BLOCK_VOXELS``, the stage's default). Timed:

- ``on workers``: ``label()`` (block labels kept on the workers, touching
  pairs, union-find on the client) and then ``labels.persist()`` waited for:
  the final int32 labels exist on the workers, where the stage writes them
  to the store. This is the goal's figure.
- ``gathered``: the same plus the labels sent to this process
  (``labels.compute()``, 4 bytes a voxel over the workers' sockets), for a
  result in the same place as the references'.
- ``from the store``: what the label stage runs, :func:`label_stored` on the
  mask stored as a local Zarr array in the same chunks (every task reads its
  own box: cc3d twice per block, once for the summaries and once for the
  final labels), then its labels persisted and waited for.

CPU time: the CPU seconds of the worker processes and of this process (client
and scheduler) over each run, against scipy's; ``scipy CPU / (pipeline CPU /
2)`` is the speed the pipeline would have with a free core per worker, a
figure that the load of other processes on a shared machine does not move
(wall times do: a worker waiting for a core counts).

Where the time goes: one further run per chunking under
``distributed.get_task_stream`` gives the workers' compute seconds per task
kind (block labelling, faces, pairs, lookup), and the run's wall time is
split into ``label()`` and the lookup pass.

Reference
---------
``scipy.ndimage.label(mask)`` (6-connectivity) and
``cc3d.connected_components(mask, connectivity=6)`` on the whole NumPy array
in this process, single-threaded. Each repeat runs every method once, in
turn (scipy, cc3d, then the pipeline for each chunking), so load from other
processes falls on all of them alike; the figures are medians over the
repeats, with the load average at the start and the end. The pipeline's
labels are checked to equal scipy's exactly (numbering included).

Usage
-----
``python benchmarks/label.py [--size N] [--chunks C [C ...]] [--repeats R]
[--seed S] [--quick] [--no-write]``; the result goes to
``benchmarks/results/label.json``. ``--quick``: a 64³ mask in 32³ chunks.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cc3d
import dask.array as da
import numpy as np
import zarr
from common import (
    MIB,
    Timing,
    cluster_cpu_seconds,
    machine_info,
    print_table,
    process_cpu_seconds,
    source_digests,
    write_result,
)
from distributed import Client, LocalCluster, get_task_stream, wait
from numpy.typing import NDArray
from scipy import ndimage

import debond.pipeline.label as label_module
from debond.pipeline.label import LABEL_BLOCK_VOXELS, StoredMask, label, label_stored

NAME = "label"
CONNECTIVITY = 6
#: Blob mask: Gaussian-smoothed white noise (σ voxels) above this many standard deviations.
BLOB_SIGMA = 2.0
BLOB_THRESHOLD_STD = 0.5
#: The goal: the pipeline on 2 workers at least as fast as scipy on the whole array.
GOAL_VS_SCIPY = 1.0
WORKERS = 2


def blob_mask(size: int, seed: int) -> NDArray[np.bool_]:
    """Gaussian-smoothed white noise above ``BLOB_THRESHOLD_STD`` standard deviations."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((size, size, size), dtype=np.float32)
    smooth = ndimage.gaussian_filter(noise, BLOB_SIGMA, mode="wrap")
    return np.asarray(smooth > BLOB_THRESHOLD_STD * float(smooth.std()))


def scipy_label(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int32], int]:
    """``scipy.ndimage.label`` with its default (6-connected) structure."""
    labels, n = ndimage.label(mask)
    return labels, int(n)


def cc3d_label(mask: NDArray[np.bool_]) -> tuple[NDArray[Any], int]:
    """``cc3d.connected_components``, 6-connected."""
    connected_components: Any = cc3d.connected_components  # its stubs want a Literal
    labels, n = connected_components(mask, connectivity=CONNECTIVITY, return_N=True)
    return labels, int(n)


def timed(func: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = func()
    return time.perf_counter() - start, value


def pipeline_run(mask: da.Array) -> tuple[float, float, float, da.Array, int]:
    """``label()``, then its labels persisted and waited for: the seconds of each part,
    the total, the persisted labels and the count."""
    start = time.perf_counter()
    found = label(mask, connectivity=CONNECTIVITY, block_voxels=LABEL_BLOCK_VOXELS)
    middle = time.perf_counter()
    labels = found.labels.persist()
    wait(labels)
    end = time.perf_counter()
    return middle - start, end - middle, end - start, labels, int(found.count)


def stored_run(mask: zarr.Array, scratch: zarr.Group) -> tuple[float, da.Array, int]:
    """:func:`label_stored` of a stored mask, then its labels persisted and waited for:
    the seconds, the persisted labels and the count."""
    start = time.perf_counter()
    found = label_stored(
        StoredMask(mask, True), scratch, connectivity=CONNECTIVITY, block_voxels=LABEL_BLOCK_VOXELS
    )
    labels = found.labels.persist()
    wait(labels)
    return time.perf_counter() - start, labels, int(found.count)


@contextmanager
def local_cluster() -> Iterator[Client]:
    """A LocalCluster of ``WORKERS`` worker processes with one thread each, and its client."""
    with (
        LocalCluster(
            n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def task_profile(stream: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Compute seconds and task counts per task kind (the key's name less its token)."""
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for task in stream:
        key = task["key"]
        name = str(key[0] if isinstance(key, tuple) else key)
        kind = name.rsplit("-", 1)[0]
        for part in task["startstops"]:
            if part["action"] == "compute":
                seconds[kind] += part["stop"] - part["start"]
        counts[kind] += 1
    return {k: {"seconds": seconds[k], "tasks": counts[k]} for k in sorted(seconds)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Labelling on 2 workers against scipy.ndimage.label and cc3d."
    )
    parser.add_argument("--size", type=int, default=256, help="mask edge, voxels")
    parser.add_argument(
        "--chunks", type=int, nargs="+", default=[64, 128], help="chunk edges (default 64 128)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (medians)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mask")
    parser.add_argument("--quick", action="store_true", help="a 64³ mask in 32³ chunks")
    parser.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.chunks, args.repeats = 64, [32], min(args.repeats, 3)
    if args.repeats < 1 or args.size < 1 or any(c < 1 for c in args.chunks):
        parser.error("--repeats, --size and --chunks must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table, write the JSON; return the JSON document."""
    args = parse_args(argv)
    machine = machine_info()
    sources = source_digests(label_module)
    mask = blob_mask(args.size, args.seed)
    reference, count = scipy_label(mask)
    cc3d_label(mask[:32, :32, :32])  # first call

    times: dict[str, list[float]] = defaultdict(list)
    identical: dict[int, bool] = {}
    profiles: dict[int, dict[str, Any]] = {}
    folder = tempfile.TemporaryDirectory(prefix="debond-label-bench-")
    scratch = zarr.open_group(f"{folder.name}/scratch", mode="w")
    stored = {
        chunk: zarr.create_array(f"{folder.name}/mask{chunk}", data=mask, chunks=(chunk,) * 3)
        for chunk in args.chunks
    }
    with folder, local_cluster() as client:
        persisted: dict[int, da.Array] = {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            for chunk in args.chunks:
                persisted[chunk] = client.persist(da.from_array(mask, chunks=chunk))
        wait(list(persisted.values()))
        for chunk in args.chunks:  # imports and first calls on the workers, untimed
            _, _, _, labels, _ = pipeline_run(persisted[chunk])
            got = np.asarray(labels.compute())
            identical[chunk] = bool(np.array_equal(got, reference))
            _, labels, _ = stored_run(stored[chunk], scratch)
            got = np.asarray(labels.compute())
            identical[chunk] &= bool(np.array_equal(got, reference))
            del labels, got
        for _ in range(args.repeats):
            cpu = process_cpu_seconds()
            seconds, _ = timed(lambda: scipy_label(mask))
            times["scipy"].append(seconds)
            times["scipy:cpu"].append(process_cpu_seconds() - cpu)
            seconds, _ = timed(lambda: cc3d_label(mask))
            times["cc3d"].append(seconds)
            for chunk in args.chunks:
                cpu = cluster_cpu_seconds(client)
                call, lookup, total, labels, found = pipeline_run(persisted[chunk])
                times[f"{chunk}:cpu"].append(cluster_cpu_seconds(client) - cpu)
                gather, _ = timed(labels.compute)
                times[f"{chunk}:label_call"].append(call)
                times[f"{chunk}:lookup"].append(lookup)
                times[f"{chunk}:on_workers"].append(total)
                times[f"{chunk}:gathered"].append(total + gather)
                identical[chunk] &= found == count
                del labels
                seconds, labels, found = stored_run(stored[chunk], scratch)
                times[f"{chunk}:stored"].append(seconds)
                identical[chunk] &= found == count
                del labels
        for chunk in args.chunks:
            with get_task_stream(client) as stream:
                wall = timed(lambda c=chunk: pipeline_run(persisted[c]))[0]  # type: ignore[misc]
            profiles[chunk] = {"wall_s": wall, "tasks": task_profile(stream.data)}

    timing = {key: Timing(tuple(values)) for key, values in times.items()}
    scipy_s, cc3d_s = timing["scipy"].median, timing["cc3d"].median
    voxels = mask.size
    pipeline: dict[str, Any] = {}
    for chunk in args.chunks:
        on_workers = timing[f"{chunk}:on_workers"].median
        gathered = timing[f"{chunk}:gathered"].median
        pipeline[str(chunk)] = {
            "chunks": [chunk] * 3,
            "blocks": int(np.prod([-(-args.size // chunk)] * 3)),
            "on_workers": timing[f"{chunk}:on_workers"].as_dict()
            | {
                "voxels_per_s": voxels / on_workers,
                "speed_vs_scipy": scipy_s / on_workers,
                "speed_vs_cc3d": cc3d_s / on_workers,
                "goal_met": bool(scipy_s / on_workers >= GOAL_VS_SCIPY),
            },
            "gathered": timing[f"{chunk}:gathered"].as_dict()
            | {
                "voxels_per_s": voxels / gathered,
                "speed_vs_scipy": scipy_s / gathered,
                "speed_vs_cc3d": cc3d_s / gathered,
            },
            # CPU seconds of the workers, the client and the scheduler together, and the
            # speed against scipy were the 2 workers given a free core each.
            "cpu_s": timing[f"{chunk}:cpu"].as_dict(),
            "cpu_speed_vs_scipy_per_2_cores": timing["scipy:cpu"].median
            / (timing[f"{chunk}:cpu"].median / WORKERS),
            "from_the_store": timing[f"{chunk}:stored"].as_dict()
            | {
                "voxels_per_s": voxels / timing[f"{chunk}:stored"].median,
                "speed_vs_scipy": scipy_s / timing[f"{chunk}:stored"].median,
            },
            "label_call_median_s": timing[f"{chunk}:label_call"].median,
            "lookup_median_s": timing[f"{chunk}:lookup"].median,
            "identical_to_scipy": identical[chunk],
            "profile": profiles[chunk],
        }
    payload: dict[str, Any] = {
        "name": NAME,
        "description": "debond.pipeline.label.label (and label_stored, the stage's path) on a "
        "LocalCluster of 2 workers against scipy.ndimage.label and cc3d on the whole array, "
        "in turn in each repeat",
        "machine": machine | {"cc3d": getattr(cc3d, "__version__", None)},
        "load_average_at_end": list(os.getloadavg()),
        "sources": sources,
        "problem": {
            "shape": [args.size] * 3,
            "voxels": voxels,
            "foreground_fraction": float(mask.mean()),
            "components": count,
            "connectivity": CONNECTIVITY,
            "mask": f"Gaussian-smoothed (σ = {BLOB_SIGMA}) white noise above "
            f"{BLOB_THRESHOLD_STD} std, seed {args.seed}",
            "workers": WORKERS,
            "threads_per_worker": 1,
            "repeats": args.repeats,
        },
        "scipy": timing["scipy"].as_dict()
        | {"voxels_per_s": voxels / scipy_s, "cpu_s": timing["scipy:cpu"].as_dict()},
        "cc3d": timing["cc3d"].as_dict() | {"voxels_per_s": voxels / cc3d_s},
        "pipeline": pipeline,
        "goal": {"speed_vs_scipy_on_workers": GOAL_VS_SCIPY},
    }
    payload["summary"] = {
        f"labelling {args.size}³ in {chunk}³ chunks, 2 workers vs scipy": (
            f"{entry['on_workers']['speed_vs_scipy']:.2f}× on workers, "
            f"{entry['gathered']['speed_vs_scipy']:.2f}× gathered, "
            f"{entry['from_the_store']['speed_vs_scipy']:.2f}× from the store"
        )
        for chunk, entry in pipeline.items()
    }
    rows = [
        ["scipy.ndimage.label", f"{scipy_s:.3f}", f"{voxels / scipy_s / 1e6:.0f}", "1.00", ""],
        ["cc3d", f"{cc3d_s:.3f}", f"{voxels / cc3d_s / 1e6:.0f}", f"{scipy_s / cc3d_s:.2f}", ""],
    ]
    for chunk, entry in pipeline.items():
        for where in ("on_workers", "gathered", "from_the_store"):
            part = entry[where]
            call = "label_stored()" if where == "from_the_store" else "label()"
            rows.append(
                [
                    f"{call}, {chunk}³ chunks, {where.replace('_', ' ')}",
                    f"{part['median_s']:.3f}",
                    f"{part['voxels_per_s'] / 1e6:.0f}",
                    f"{part['speed_vs_scipy']:.2f}",
                    "yes" if entry["identical_to_scipy"] else "NO",
                ]
            )
    print_table(rows, ["method", "median s", "Mvoxel/s", "vs scipy", "= scipy"])
    for chunk, entry in pipeline.items():
        profile = entry["profile"]
        parts = ", ".join(
            f"{kind} {v['seconds']:.3f} s / {v['tasks']}" for kind, v in profile["tasks"].items()
        )
        print(f"{chunk}³: wall {profile['wall_s']:.3f} s; task seconds / tasks: {parts}")
        print(
            f"{chunk}³: CPU {entry['cpu_s']['median_s']:.3f} s (scipy "
            f"{timing['scipy:cpu'].median:.3f} s): {entry['cpu_speed_vs_scipy_per_2_cores']:.2f}× "
            "scipy on 2 free cores"
        )
    print(f"load average at start {machine.get('load_average_1_5_15_min')}, end {os.getloadavg()}")
    print(f"mask {mask.nbytes / MIB:.0f} MiB, {count} components")
    if not args.no_write:
        print(f"written: {write_result(NAME, payload)}")
    return payload


if __name__ == "__main__":
    main()
