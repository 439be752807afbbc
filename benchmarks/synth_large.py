"""Benchmark: writing one large synthetic sample out of core.

Measures the wall time and the peak resident memory (RSS) of rendering,
projecting (ASTRA, parallel beam) and writing one sample of the ``large``
preset, default 1024³ voxels, as Data Exchange HDF5 with its true phases in
Zarr. The work runs in a child process so that its peak RSS is its own
(``RUSAGE_CHILDREN``). The reference is the memory a whole-volume approach
would need just to hold the volume: the phases (uint8) plus the attenuation
(float32), 5 bytes a voxel; the ratio peak RSS / that size shows the writer
works slab by slab. Goal: peak RSS under 2 GB at 1024³.

Usage: ``python benchmarks/synth_large.py [--size N] [--angles A]``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

from common import fmt_mib, fmt_seconds, machine_info, print_table, write_result

CHILD = """
import sys, numpy as np, zarr
from dataclasses import asdict
from pathlib import Path
from debond.synth import PRESETS, Preset, draw_microstructure, write_txm
size, angles, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
preset = Preset(**{**asdict(PRESETS["large"]), "shape": (size, size, size), "n_angles": angles})
rng = np.random.default_rng(0)
box = tuple((n - 1) * preset.voxel_size_um for n in preset.shape)
micro = draw_microstructure(rng, box, 3, preset)
truth = zarr.open_array(out / "phases.zarr", mode="w", shape=preset.shape, dtype=np.uint8,
                        chunks=(preset.slab, *preset.shape[1:]))
write_txm(out / "sample.h5", micro, preset, rng, truth)
print(micro.radius.size)
"""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="volume edge, voxels")
    parser.add_argument("--angles", type=int, default=360, help="projections over 180°")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.size), str(args.angles), folder],
            capture_output=True,
            text=True,
            check=True,
        )
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024.0
    in_memory = 5.0 * args.size**3
    result = {
        "name": "synth_large",
        "machine": machine_info(),
        "problem": {
            "shape": [args.size] * 3,
            "angles": args.angles,
            "silicon_particles": int(done.stdout.split()[-1]),
        },
        "wall_s": seconds,
        "peak_rss_bytes": peak,
        "whole_volume_bytes": in_memory,
        "peak_over_whole_volume": peak / in_memory,
        "goal_peak_rss_bytes": 2e9,
        "goal_met": peak < 2e9,
        "summary": {
            f"write one {args.size}³ sample, {args.angles} angles": fmt_seconds(seconds),
            "peak RSS (child process)": fmt_mib(peak),
            "peak RSS / whole volume in memory": f"{peak / in_memory:.2f}",
            "goal: peak RSS < 2 GB": "met" if peak < 2e9 else "not met",
        },
    }
    write_result("synth_large", result)
    print_table(list(result["summary"].items()), ["figure", "value"])
    return result


if __name__ == "__main__":
    main()
