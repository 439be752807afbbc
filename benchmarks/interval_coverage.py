"""Benchmark: how often the fit's intervals hold the true parameters (coverage).

Named ``interval_coverage`` so that it does not shadow the ``coverage`` package for
the other benchmarks (``benchmarks/`` leads their ``sys.path``; Numba imports
``coverage`` when it is installed).

What is measured
----------------
``--datasets`` independent data sets are drawn from the exact model at the
paper's parameters (:func:`debond.model.synthetic.simulate_campaign`, seeds
1000, 1001, …; 0.03 µm gap noise, 0.01 retention noise) at two sizes:

- ``paper``: 15 particles per tomogram at 1, 3 and 10 cycles and the
  10-cycle capacity series (the paper's tomograms hold 10–20 particles);
- ``demo``: 60 particles per group at 0, 1, 3 and 10 cycles, as the demo.

Each is fitted with :func:`debond.model.fitting.fit` and ``--bootstrap``
replicates. The reported interval of a parameter is what
:func:`debond.model.diagnostics.intervals` gives: the 16–84 % (and
2.5–97.5 %) percentiles, or, for a parameter on its bound, the one-sided
limit from that bound. Coverage is the fraction of data sets whose interval
holds the truth, with its binomial standard error. The targets: 60–76 % for
the 16–84 % interval, 90–98 % for 2.5–97.5 %.

Accuracy, not speed: the wall time per data set is recorded beside it.

Usage
-----
``python benchmarks/interval_coverage.py [--datasets 200] [--bootstrap 200] [--sizes paper,demo]``;
the result goes to ``benchmarks/results/coverage.json``.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
from common import machine_info, print_table, source_digests, write_result

from debond.model import PAPER_PARAMETERS, PARAMETER_NAMES, diagnostics, fit, fitting
from debond.model.synthetic import simulate_campaign

SIZES = {
    "paper": {"cycles": (1, 3, 10), "particles_per_sample": 15},
    "demo": {"cycles": (0, 1, 3, 10), "particles_per_sample": 60},
}
TARGETS = {"68": (0.60, 0.76), "95": (0.90, 0.98)}


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


def coverage(size: str, datasets: int, bootstrap: int) -> dict[str, Any]:
    """Coverage of every parameter's intervals over `datasets` data sets of one size."""
    truth = {n: float(getattr(PAPER_PARAMETERS, n)) for n in PARAMETER_NAMES}
    hits = {level: {n: 0 for n in PARAMETER_NAMES} for level in TARGETS}
    one_sided = {n: 0 for n in PARAMETER_NAMES}
    seconds = []
    for k in range(datasets):
        sim = simulate_campaign(PAPER_PARAMETERS, seed=1000 + k, **SIZES[size])  # type: ignore[arg-type]
        started = time.perf_counter()
        result = fit(
            sim.particles, sim.capacity[["cycle", "retention"]], n_bootstrap=bootstrap, seed=k
        )
        seconds.append(time.perf_counter() - started)
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
        "rows": rows,
        "one_sided_share": {n: c / datasets for n, c in one_sided.items()},
        "seconds_per_fit": float(np.median(seconds)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--sizes", default="paper,demo")
    args = parser.parse_args()
    results = [coverage(s, args.datasets, args.bootstrap) for s in args.sizes.split(",")]
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
    write_result(
        "coverage",
        {
            "benchmark": "coverage",
            "results": results,
            "machine": machine_info(),
            "sources": source_digests(fitting, diagnostics),
        },
    )


if __name__ == "__main__":
    main()
