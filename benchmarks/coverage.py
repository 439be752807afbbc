"""Benchmark: how often the fit's intervals hold the true parameters (coverage), and its speed.

What is measured
----------------
``--datasets`` independent data sets are drawn from the exact model at the
paper's parameters (:func:`debond.model.synthetic.simulate_campaign`, seeds
1000, 1001, …; 0.03 µm gap noise, 0.01 retention noise) at two sizes:

- ``paper``: 15 particles per tomogram at 1, 3 and 10 cycles, and 40 SEM
  sections per sample (spheres of the same population cut at random
  heights, :func:`debond.pipeline.stereology.sample_sections`, 0.03 µm
  noise on the in-plane gap), converted to particle-table rows as the
  pipeline converts them (:func:`debond.particles.convert_sections`); the
  capacity term sums over the sizes unfolded from the sections
  (:func:`debond.analysis.section_population`), as ``debond fit`` does by
  default. The paper's tomograms hold 10–20 particles.
- ``demo``: 60 particles per group at 0, 1, 3 and 10 cycles, as the demo.

Each is fitted with :func:`debond.model.fitting.fit` and ``--bootstrap``
replicates. The reported interval of a parameter is what
:func:`debond.model.diagnostics.intervals` gives: the 16–84 % (and
2.5–97.5 %) percentiles, or, for a parameter on its bound, the one-sided
limit from that bound. Coverage is the fraction of data sets whose interval
holds the truth, with its binomial standard error. The targets: 60–76 % for
the 16–84 % interval, 90–98 % for 2.5–97.5 %.

Speed, beside it: one fit of the demo table (``simulate_campaign(
PAPER_PARAMETERS, seed=0)``) with ``--speed-bootstrap`` replicates (default
10,000), its wall time (target: under 20 s on 2 cores). Skipped with
``--speed-bootstrap 0``; ``benchmarks/model_bootstrap.py`` times it in detail.

Usage
-----
``python benchmarks/coverage.py [--datasets 200] [--bootstrap 200] [--sizes paper,demo]
[--method parametric] [--speed-bootstrap 10000]``; the result goes to
``benchmarks/results/coverage.json`` (``coverage_<sizes>.json`` for other sizes).
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
import pandas as pd
from common import machine_info, print_table, source_digests, write_result

from debond.analysis import section_population
from debond.model import PAPER_PARAMETERS, PARAMETER_NAMES, Material, diagnostics, fit, fitting
from debond.model.synthetic import draw_radii, imaged_gaps, simulate_campaign
from debond.particles import convert_sections
from debond.pipeline.stereology import sample_sections

SIZES: dict[str, dict[str, Any]] = {
    "paper": {"cycles": (1, 3, 10), "particles_per_sample": 15, "sections_per_sample": 40},
    "demo": {"cycles": (0, 1, 3, 10), "particles_per_sample": 60, "sections_per_sample": 0},
}
TARGETS = {"68": (0.60, 0.76), "95": (0.90, 0.98)}
#: Noise of a measured in-plane gap, µm; spheres per sample the sections cut.
SECTION_GAP_NOISE_UM = 0.03
SECTIONED_SPHERES = 400


def holds(interval: diagnostics.Interval, truth: float, level: str) -> bool:
    """Whether the reported interval at `level` ("68" or "95") holds `truth`."""
    if level == "68":
        low, high = interval.lower, interval.upper
    else:
        low, high = interval.lower_95, interval.upper_95
    if interval.side == "upper":
        low = interval.bound if interval.bound is not None else low
    elif interval.side == "lower":
        high = interval.bound if interval.bound is not None else high
    return bool(low <= truth <= high)


def sections(cycles: int, count: int, rng: np.random.Generator) -> pd.DataFrame:
    """SEM section rows of one sample imaged after `cycles`, drawn from the model.

    ``count`` sections of :data:`SECTIONED_SPHERES` spheres (radii and imaged
    gaps drawn as :func:`simulate_campaign` draws them), in the columns of the
    ``sem`` stage.
    """
    radii = draw_radii(rng, SECTIONED_SPHERES)
    gap = imaged_gaps(radii, cycles, PAPER_PARAMETERS, Material(), rng)
    r, g2, _ = sample_sections(radii, gap, count, rng)
    measured = np.clip(g2 + rng.normal(0.0, SECTION_GAP_NOISE_UM, count), 0.0, None)
    return pd.DataFrame(
        {
            "sample": f"s{cycles:02d}",
            "cycles": cycles,
            "image": "section",
            "particle": np.arange(1, count + 1),
            "section_radius_um": r,
            "section_gap_um": measured,
            "gap_std_um": np.nan,
            "n_rays": 64,
            "touches_border": False,
            "centroid_y_um": 0.0,
            "centroid_x_um": 0.0,
        }
    )


def data_set(size: str, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The k-th data set of a size: particle table (3D and 2D rows) and capacity series."""
    spec = SIZES[size]
    sim = simulate_campaign(
        PAPER_PARAMETERS,
        seed=1000 + k,
        cycles=spec["cycles"],
        particles_per_sample=spec["particles_per_sample"],
    )
    particles = sim.particles.assign(n_rays=64, touches_border=False)
    if spec["sections_per_sample"]:
        rng = np.random.default_rng([1000 + k, 7])
        rows = pd.concat(
            [sections(n, spec["sections_per_sample"], rng) for n in spec["cycles"] if n > 0],
            ignore_index=True,
        )
        particles = pd.concat([particles, convert_sections(rows)], ignore_index=True)
    return particles, sim.capacity[["cycle", "retention"]]


def coverage(size: str, datasets: int, bootstrap: int, method: str) -> dict[str, Any]:
    """Coverage of every parameter's intervals over `datasets` data sets of one size."""
    truth = {n: float(getattr(PAPER_PARAMETERS, n)) for n in PARAMETER_NAMES}
    hits = {level: {n: 0 for n in PARAMETER_NAMES} for level in TARGETS}
    one_sided = {n: 0 for n in PARAMETER_NAMES}
    seconds, unconverged = [], []
    for k in range(datasets):
        particles, capacity = data_set(size, k)
        started = time.perf_counter()
        population = section_population(particles, bootstrap, k)
        result = fit(
            particles,
            capacity,
            n_bootstrap=bootstrap,
            seed=k,
            population=population,
            method=method,
        )
        seconds.append(time.perf_counter() - started)
        unconverged.append(1.0 - float(result.samples["converged"].mean()))
        for name, interval in diagnostics.intervals(result).items():
            one_sided[name] += interval.side != "two-sided"
            for level in TARGETS:
                hits[level][name] += holds(interval, truth[name], level)
    rows = {}
    for level, counts in hits.items():
        for name, n in counts.items():
            p = n / datasets
            rows[f"{name}/{level}"] = {
                "coverage": p,
                "standard_error": math.sqrt(max(p * (1 - p), 1e-12) / datasets),
                "target": TARGETS[level],
                "inside": TARGETS[level][0] <= p <= TARGETS[level][1],
            }
    return {
        "size": size,
        "datasets": datasets,
        "bootstrap": bootstrap,
        "method": method,
        "rows": rows,
        "one_sided_share": {n: c / datasets for n, c in one_sided.items()},
        "unconverged_share": float(np.mean(unconverged)),
        "seconds_per_fit": float(np.median(seconds)),
    }


def speed(bootstrap: int, method: str) -> dict[str, Any]:
    """Wall time of one fit of the demo table with `bootstrap` replicates, s."""
    sim = simulate_campaign(PAPER_PARAMETERS, seed=0)
    started = time.perf_counter()
    fit(sim.particles, sim.capacity[["cycle", "retention"]], n_bootstrap=bootstrap, method=method)
    return {"bootstrap": bootstrap, "seconds": time.perf_counter() - started, "target_s": 20.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--sizes", default="paper,demo")
    parser.add_argument("--method", default="parametric", choices=fitting.BOOTSTRAP_METHODS)
    parser.add_argument("--speed-bootstrap", type=int, default=10_000)
    args = parser.parse_args()
    results = [
        coverage(s, args.datasets, args.bootstrap, args.method) for s in args.sizes.split(",")
    ]
    timing = speed(args.speed_bootstrap, args.method) if args.speed_bootstrap else None
    table = []
    for result in results:
        for key, row in result["rows"].items():
            name, level = key.split("/")
            low, high = row["target"]
            table.append(
                [
                    result["size"],
                    name,
                    "16–84 %" if level == "68" else "2.5–97.5 %",
                    f"{100 * row['coverage']:.0f} ± {100 * row['standard_error']:.0f} %",
                    f"{100 * low:.0f}–{100 * high:.0f} %",
                    "yes" if row["inside"] else "no",
                ]
            )
    print_table(table, ["data size", "parameter", "interval", "coverage", "target", "inside"])
    for result in results:
        print(
            f"{result['size']}: {result['datasets']} data sets × {result['bootstrap']} replicates "
            f"({result['method']}), {result['seconds_per_fit']:.2f} s a fit, "
            f"{100 * result['unconverged_share']:.1f} % of replicates unconverged"
        )
    if timing is not None:
        print(
            f"speed: {timing['bootstrap']} replicates of the demo table in "
            f"{timing['seconds']:.1f} s (target < {timing['target_s']:.0f} s)"
        )
    write_result(
        "coverage" if args.sizes == "paper,demo" else f"coverage_{args.sizes.replace(',', '_')}",
        {
            "benchmark": "coverage",
            "results": results,
            "speed": timing,
            "machine": machine_info(),
            "sources": source_digests(fitting, diagnostics),
        },
    )


if __name__ == "__main__":
    main()
