"""Benchmark: how often the fit's intervals hold the true parameters (coverage), and its speed.

Named ``interval_coverage`` so that it does not shadow the ``coverage`` package for
the other benchmarks (``benchmarks/`` leads their ``sys.path``; Numba imports
``coverage`` when it is installed).

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
  (:func:`debond.analysis.section_population`) and each section row is fitted
  through its law of R given r (:func:`debond.analysis.section_sizes`), as
  ``debond fit`` does by default. The paper's tomograms hold 10–20 particles.
- ``demo``: 60 particles per group at 0, 1, 3 and 10 cycles, as the demo.

Each is fitted with :func:`debond.model.fitting.fit` and ``--bootstrap``
replicates. The reported interval of a parameter is what
:func:`debond.model.diagnostics.intervals` gives: the 16–84 % (and
2.5–97.5 %) percentiles, or, for a parameter on its bound, the one-sided
limit from that bound. Coverage is the fraction of data sets whose interval
holds the truth, with its binomial standard error. The targets: 60–76 % for
the 16–84 % interval, 90–98 % for 2.5–97.5 %. Beside it, the level the
reported intervals claim (a one-sided limit is an 84th or 97.5th percentile:
it claims 84 % or 97.5 %, not 68 % or 95 %) and the coverage of the two-sided
and one-sided intervals apart.

Speed, beside it: one fit of the demo table (``simulate_campaign(
PAPER_PARAMETERS, seed=0)``) with ``--speed-bootstrap`` replicates (default
10,000), its wall time (target: under 20 s on 2 cores). Skipped with
``--speed-bootstrap 0``; ``benchmarks/model_bootstrap.py`` times it in detail.

Usage
-----
``python benchmarks/interval_coverage.py [--datasets 200] [--bootstrap 200] [--sizes paper,demo]
[--method parametric] [--speed-bootstrap 10000] [--surface-um SILICON,CBD]
[--records FILE [--summarise]]``;
``--surface-um`` measures each data set's 3D rows with their surfaces out of place
by one normal draw of those standard deviations (µm) and gives the fit the same
(``silicon_surface_sd_um``, ``cbd_surface_sd_um``): the coverage of intervals
that hold a systematic error they are told;
with ``--records`` each data set's outcome is kept as it is fitted (a run
resumes where it stopped; ``--summarise`` prints the table of those done). The
result goes to
``benchmarks/results/coverage.json`` (``coverage_<sizes>.json`` for other sizes).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import machine_info, print_table, source_digests, write_result

from debond.analysis import section_population, section_sizes
from debond.model import PAPER_PARAMETERS, PARAMETER_NAMES, Material, diagnostics, fit, fitting
from debond.model.synthetic import draw_radii, imaged_gaps, simulate_campaign
from debond.particles import convert_sections
from debond.pipeline.stereology import sample_sections

SIZES: dict[str, dict[str, Any]] = {
    "paper": {"cycles": (1, 3, 10), "particles_per_sample": 15, "sections_per_sample": 40},
    "demo": {"cycles": (0, 1, 3, 10), "particles_per_sample": 60, "sections_per_sample": 0},
}
TARGETS = {"68": (0.60, 0.76), "95": (0.90, 0.98)}
INTERVALS = {"68": "16–84 %", "95": "2.5–97.5 %"}
#: What a reported interval claims, two-sided or one-sided: a one-sided limit
#: from a bound is the 84th (97.5th) percentile, which holds the truth 84 %
#: (97.5 %) of the time when calibrated, not 68 % (95 %).
CLAIMED = {
    "68": {"two-sided": 0.68, "one-sided": 0.84},
    "95": {"two-sided": 0.95, "one-sided": 0.975},
}
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


def data_set(
    size: str, k: int, surface_um: tuple[float, float] = (0.0, 0.0)
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The k-th data set of a size: particle table (3D and 2D rows) and capacity series.

    With ``surface_um`` = (s, c), its 3D rows are measured with the silicon surface
    b ~ N(0, s²) and the CBD's c' ~ N(0, c²) out of place, one draw each for the data
    set: radius + b, gap − b + c' (at least 0).
    """
    spec = SIZES[size]
    sim = simulate_campaign(
        PAPER_PARAMETERS,
        seed=1000 + k,
        cycles=spec["cycles"],
        particles_per_sample=spec["particles_per_sample"],
    )
    particles = sim.particles.assign(n_rays=64, touches_border=False)
    if any(surface_um):
        silicon, cbd = np.random.default_rng([1000 + k, 11]).normal(0.0, surface_um)
        particles["radius_um"] += silicon
        particles["gap_mean_um"] = (particles["gap_mean_um"] - silicon + cbd).clip(lower=0.0)
    if spec["sections_per_sample"]:
        rng = np.random.default_rng([1000 + k, 7])
        rows = pd.concat(
            [sections(n, spec["sections_per_sample"], rng) for n in spec["cycles"] if n > 0],
            ignore_index=True,
        )
        particles = pd.concat([particles, convert_sections(rows)], ignore_index=True)
    return particles, sim.capacity[["cycle", "retention"]]


def fit_data_set(
    size: str, k: int, bootstrap: int, method: str, surface_um: tuple[float, float] = (0.0, 0.0)
) -> dict[str, Any]:
    """Fit the k-th data set of a size; which intervals hold the truth, and the time.

    ``surface_um``: its surfaces' placement uncertainties (:func:`data_set`), which
    the fit is told (``silicon_surface_sd_um``, ``cbd_surface_sd_um``)."""
    truth = {n: float(getattr(PAPER_PARAMETERS, n)) for n in PARAMETER_NAMES}
    particles, capacity = data_set(size, k, surface_um)
    started = time.perf_counter()
    population = section_population(particles, bootstrap, k)
    result = fit(
        particles,
        capacity,
        n_bootstrap=bootstrap,
        seed=k,
        population=population,
        method=method,
        section_sizes=section_sizes(particles),
        silicon_surface_sd_um=surface_um[0],
        cbd_surface_sd_um=surface_um[1],
    )
    seconds = time.perf_counter() - started
    found = diagnostics.intervals(result)
    return {
        "size": size_label(size, surface_um),
        "data_set": k,
        "seconds": seconds,
        "unconverged": 1.0 - float(result.samples["converged"].mean()),
        "blunders": len(result.blunders),
        "one_sided": {n: iv.side != "two-sided" for n, iv in found.items()},
        "holds": {
            level: {n: holds(iv, truth[n], level) for n, iv in found.items()} for level in TARGETS
        },
    }


def summarise(records: list[dict[str, Any]], bootstrap: int, method: str) -> dict[str, Any]:
    """Coverage of every parameter's intervals over the records of one size."""
    datasets = len(records)
    rows = {}
    for level in TARGETS:
        for name in PARAMETER_NAMES:
            p = sum(r["holds"][level][name] for r in records) / datasets
            by_side = {
                side: [r["holds"][level][name] for r in records if r["one_sided"][name] == one]
                for side, one in (("two-sided", False), ("one-sided", True))
            }
            rows[f"{name}/{level}"] = {
                "coverage": p,
                "standard_error": math.sqrt(max(p * (1 - p), 1e-12) / datasets),
                "target": TARGETS[level],
                "inside": TARGETS[level][0] <= p <= TARGETS[level][1],
                # the level the reported intervals claim, on average over the data sets
                "claimed": sum(CLAIMED[level][s] * len(h) for s, h in by_side.items()) / datasets,
                "by_side": {
                    s: {"data_sets": len(h), "coverage": sum(h) / len(h) if h else None}
                    for s, h in by_side.items()
                },
            }
    return {
        "size": records[0]["size"],
        "datasets": datasets,
        "bootstrap": bootstrap,
        "method": method,
        "rows": rows,
        "one_sided_share": {
            n: sum(r["one_sided"][n] for r in records) / datasets for n in PARAMETER_NAMES
        },
        "unconverged_share": float(np.mean([r["unconverged"] for r in records])),
        "seconds_per_fit": float(np.median([r["seconds"] for r in records])),
    }


def read_records(path: Path) -> list[dict[str, Any]]:
    """The outcomes in the JSON-lines file `path`, in order (none where it is absent)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def append_record(path: Path, outcome: dict[str, Any]) -> None:
    """Append one outcome to the JSON-lines file `path` (a run resumes from them)."""
    with path.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(outcome) + "\n")


def size_label(size: str, surface_um: tuple[float, float]) -> str:
    """A data size's name, with its surfaces' placement uncertainties where there are any."""
    if not any(surface_um):
        return size
    return f"{size}, surfaces ±{surface_um[0]:g}/±{surface_um[1]:g} µm"


def coverage(
    size: str,
    datasets: int,
    bootstrap: int,
    method: str,
    records: Path | None = None,
    surface_um: tuple[float, float] = (0.0, 0.0),
) -> dict[str, Any]:
    """Coverage over `datasets` data sets of one size.

    With ``records``, each data set's outcome is appended to that JSON-lines
    file as it is fitted, and data sets already there are not fitted again (a
    long run can be stopped and resumed, or summarised part way).
    """
    found = read_records(records) if records is not None else []
    label = size_label(size, surface_um)
    done = {r["data_set"]: r for r in found if r["size"] == label}
    for k in range(datasets):
        if k in done:
            continue
        done[k] = fit_data_set(size, k, bootstrap, method, surface_um)
        if records is not None:
            append_record(records, done[k])
    return summarise([done[k] for k in range(datasets)], bootstrap, method)


def speed(bootstrap: int, method: str) -> dict[str, Any]:
    """Wall time of one fit of the demo table with `bootstrap` replicates, s."""
    sim = simulate_campaign(PAPER_PARAMETERS, seed=0)
    started = time.perf_counter()
    fit(sim.particles, sim.capacity[["cycle", "retention"]], n_bootstrap=bootstrap, method=method)
    return {"bootstrap": bootstrap, "seconds": time.perf_counter() - started, "target_s": 20.0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--sizes", default="paper,demo")
    parser.add_argument("--method", default="parametric", choices=fitting.BOOTSTRAP_METHODS)
    parser.add_argument("--speed-bootstrap", type=int, default=10_000)
    parser.add_argument(
        "--surface-um",
        type=lambda text: tuple(float(v) for v in text.split(",")),
        default=(0.0, 0.0),
        metavar="SILICON,CBD",
        help="measure each data set's 3D surfaces this far out of place (one normal draw "
        "each, standard deviations in µm) and tell the fit",
    )
    parser.add_argument(
        "--records", type=Path, help="JSON-lines file of per-data-set outcomes (resumable)"
    )
    parser.add_argument(
        "--summarise",
        action="store_true",
        help="only summarise the data sets already in --records (however many there are)",
    )
    args = parser.parse_args(argv)
    if args.summarise:
        if args.records is None:
            parser.error("--summarise needs --records")
        if not args.records.is_file():
            parser.error(f"--records {args.records} does not exist")
        everything = read_records(args.records)
        results = [
            summarise([r for r in everything if r["size"] == s], args.bootstrap, args.method)
            for s in (size_label(n, args.surface_um) for n in args.sizes.split(","))
            if any(r["size"] == s for r in everything)
        ]
    else:
        results = [
            coverage(s, args.datasets, args.bootstrap, args.method, args.records, args.surface_um)
            for s in args.sizes.split(",")
        ]
    timing = speed(args.speed_bootstrap, args.method) if args.speed_bootstrap else None
    table = []
    for result in results:
        for key, row in result["rows"].items():
            name, level = key.split("/")
            low, high = row["target"]
            sides = [
                f"{100 * part['coverage']:.0f} % of {part['data_sets']}"
                if part["data_sets"]
                else "-"
                for part in row["by_side"].values()
            ]
            table.append(
                [
                    result["size"],
                    name,
                    INTERVALS[level],
                    f"{100 * row['coverage']:.0f} ± {100 * row['standard_error']:.0f} %",
                    f"{100 * low:.0f}–{100 * high:.0f} %",
                    "yes" if row["inside"] else "no",
                    f"{100 * row['claimed']:.0f} %",
                    *sides,
                ]
            )
    print_table(
        table,
        [
            "data size",
            "parameter",
            "interval",
            "coverage",
            "target",
            "inside",
            "claimed",
            "two-sided",
            "one-sided",
        ],
    )
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
    document = {
        "benchmark": "coverage",
        "results": results,
        "speed": timing,
        "summary": {
            f"{r['size']}: {key.split('/')[0]}, {INTERVALS[key.split('/')[1]]}": (
                f"{100 * row['coverage']:.0f} %"
            )
            for r in results
            for key, row in r["rows"].items()
        },
        "machine": machine_info(),
        "sources": source_digests(fitting, diagnostics),
    }
    name = "coverage" if args.sizes == "paper,demo" else f"coverage_{args.sizes.replace(',', '_')}"
    if any(args.surface_um):
        name += f"_surfaces{args.surface_um[0]:g}-{args.surface_um[1]:g}"
    write_result(name, document)
    return document


if __name__ == "__main__":
    main()
