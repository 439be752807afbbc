"""Benchmark: bootstrap fits of the demo table, batched against SciPy looped.

What is measured
----------------
The demo table (``simulate_campaign(PAPER_PARAMETERS, seed=0)``: 240 particles
imaged after 0, 1, 3 and 10 cycles and a 10-cycle capacity series) is fitted
with :func:`debond.model.fitting.fit` and ``n_bootstrap = B`` (default 10,000)
replicates, ``--repeats`` times; the median wall time is reported, and divided
by B as the time per fit. ``fit`` first fits the full data set (36 starting
points and two re-weighting refits), so ``fit`` is also timed with
``n_bootstrap = 0`` and the difference of the two medians is reported as the
bootstrap-only time.

Peak memory: one further ``fit`` with B replicates runs under ``tracemalloc``
(NumPy reports its array buffers to it), which gives the peak of memory
allocated during the call; ``ru_maxrss`` (peak resident set size of the whole
process, imports and data included) is reported before and after the batched
runs.

Reference
---------
The same replicate problems solved one at a time with
:func:`scipy.optimize.least_squares` (``trf``, the same box bounds, ``x_scale``
= ``TYPICAL`` or ``'jac'``, ``diff_step`` = ``DIFFERENCE_STEP``, the fit's
tolerances ``ftol`` = ``FTOL`` and ``xtol`` = ``XTOL``, starting from
the starting points the batched solver gets) in a Python loop over the first
``--reference-fits`` replicates (default 20), the loop run ``--repeats`` times
(time per fit: the median over replicates of each replicate's median over the
loops). Their residuals are exactly those the batched fit minimises: the
benchmark records the replicate data (``_Replicates``: the gaps drawn from
the fitted model, the resampled capacity population and capacity residuals)
that ``fit`` passes to ``debond.model.fitting._solve`` and evaluates them
with ``debond.model.fitting._residual_function``. The median time per SciPy
fit is extrapolated to B fits; the speed-up is that time per fit over the
batched time per fit (bootstrap-only, and conservatively the whole ``fit``
divided by B). Both are measured in the same process and run.

Agreement of the two methods on those replicates: per parameter the median of
|θ_batched − θ_scipy| divided by the bootstrap interval width (84th − 16th
percentile of the B replicates), and the fraction of replicates where the
batched cost is ≤ the SciPy cost + 1e-6·cost. As a consistency check the same
replicates are solved again with :func:`debond.model.solver.least_squares_batched`
alone (the settings of ``fitting._solve``) and compared with ``fit``'s samples.

Notes
-----
SciPy's ``diff_step`` is relative to |θ|, the batched solver's to
max(|θ|, TYPICAL); the two agree wherever |θ| ≥ TYPICAL. The objective is a
staircase in κ0 (see ``fitting.DIFFERENCE_STEP``), so the two optimisers may
stop on different treads: the agreement figures show how far apart.

The machine's load average is recorded with the results: other processes
slow both methods, though not necessarily equally, so compare ratios from
runs on a quiet machine.

Usage
-----
``python benchmarks/model_bootstrap.py [--bootstrap B] [--repeats R]
[--reference-fits K] [--x-scale {typical,jac}] [--surface-um SILICON,CBD] [--no-write]``
(``--surface-um`` also times ``fit`` holding those surface-placement
uncertainties, as ``debond fit`` does for a campaign); the result goes
to ``benchmarks/results/model_bootstrap.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import scipy.optimize
from common import (
    MIB,
    Timing,
    fmt_mib,
    fmt_seconds,
    machine_info,
    max_rss_bytes,
    print_table,
    source_digests,
    time_repeats,
    traced_peak,
    write_result,
)

import debond.model.fitting as fitting
from debond.model import PAPER_PARAMETERS
from debond.model.parameters import PARAMETER_NAMES
from debond.model.solver import least_squares_batched
from debond.model.synthetic import simulate_campaign

#: Modules whose source digests are recorded with the results.
MODEL_MODULES = tuple(
    sys.modules[f"debond.model.{name}"]
    for name in ("fitting", "solver", "disconnection", "mechanics", "parameters", "synthetic")
)

NAME = "model_bootstrap"
#: The performance goals: 10,000 fits in under 20 s on 2 cores, 100× faster per fit than SciPy.
GOAL_FITS = 10_000
GOAL_SECONDS = 20.0
GOAL_SPEEDUP = 100.0
#: A batched cost counts as "not worse" up to this relative tolerance.
COST_TOLERANCE = 1e-6


def demo_table(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The demo's particle table and capacity series (``cycle``, ``retention``)."""
    campaign = simulate_campaign(PAPER_PARAMETERS, seed=seed)
    return campaign.particles, campaign.capacity[["cycle", "retention"]]


@contextmanager
def recorded_solves() -> Iterator[list[dict[str, Any]]]:
    """Record the arguments of every ``fitting._solve`` call made inside the block."""
    original = fitting._solve
    calls: list[dict[str, Any]] = []

    def recording(data, reps, theta0, material, chunk):  # type: ignore[no-untyped-def]
        calls.append(
            {"data": data, "reps": reps, "theta0": theta0, "material": material, "chunk": chunk}
        )
        return original(data, reps, theta0, material, chunk)

    fitting._solve = recording  # type: ignore[assignment]
    try:
        yield calls
    finally:
        fitting._solve = original  # type: ignore[assignment]


def first_replicates(reps: Any, count: int) -> Any:
    """The first ``count`` rows of a ``fitting._Replicates``."""
    return fitting._Replicates(
        reps.gap[:count],
        reps.weight_sqrt[:count],
        reps.population[:count],
        reps.retention[:count],
        reps.retention_scale,
    )


def scipy_reference(
    residuals: Any, theta0: np.ndarray, x_scale: str, repeats: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Solve replicate r = 0 … K−1 one at a time with ``scipy.optimize.least_squares``.

    The loop over the K replicates runs ``repeats`` times. Returns θ (K, 4),
    seconds (repeats, K), residual evaluations (K,: SciPy's ``nfev`` plus P
    per finite-difference Jacobian) and status (K,).
    """
    count = theta0.shape[0]
    scale: Any = fitting.TYPICAL if x_scale == "typical" else "jac"
    theta = np.empty_like(theta0)
    seconds = np.empty((repeats, count))
    nfev, status = np.empty(count, dtype=np.int64), np.empty(count, dtype=np.int64)
    for repeat in range(repeats):
        for r in range(count):
            rows = np.array([r])

            def fun(th: np.ndarray, rows: np.ndarray = rows) -> np.ndarray:
                return np.asarray(residuals(th[None, :], rows)[0])

            start = time.perf_counter()
            solution = scipy.optimize.least_squares(
                fun,
                theta0[r],
                bounds=(fitting.LOWER, fitting.UPPER),
                x_scale=scale,
                diff_step=fitting.DIFFERENCE_STEP,
                ftol=fitting.FTOL,
                xtol=fitting.XTOL,
            )
            seconds[repeat, r] = time.perf_counter() - start
            theta[r] = solution.x
            nfev[r] = solution.nfev + theta0.shape[1] * solution.njev
            status[r] = solution.status
    return theta, seconds, nfev, status


def costs(residuals: Any, theta: np.ndarray) -> np.ndarray:
    """½·Σ residual² of replicate r at ``theta[r]``."""
    values = residuals(theta, np.arange(theta.shape[0]))
    return np.asarray(0.5 * np.einsum("rm,rm->r", values, values))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Bootstrap fits of the demo table: batched fit() against SciPy looped."
    )
    parser.add_argument("--bootstrap", type=int, default=GOAL_FITS, help="replicates B")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of fit() and of the SciPy loop (medians)"
    )
    parser.add_argument(
        "--reference-fits",
        type=int,
        default=20,
        help="replicates solved one by one with scipy.optimize.least_squares",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data and bootstrap")
    parser.add_argument(
        "--x-scale",
        choices=("typical", "jac"),
        default="typical",
        help="x_scale of the SciPy reference: fitting.TYPICAL or 'jac'",
    )
    parser.add_argument(
        "--surface-um",
        type=lambda text: [float(v) for v in text.split(",")],
        default=None,
        metavar="SILICON,CBD",
        help="also time fit() holding these surface-placement uncertainties, µm "
        "(as debond fit does for a campaign)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    args = parser.parse_args(argv)
    if args.bootstrap < 1 or args.repeats < 1 or args.reference_fits < 1:
        parser.error("--bootstrap, --repeats and --reference-fits must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table, write the JSON; return the JSON document."""
    args = parse_args(argv)
    n_boot, seed = args.bootstrap, args.seed
    particles, capacity = demo_table(seed)
    sources = source_digests(*MODEL_MODULES)
    machine = machine_info()  # the load average at the start, among others
    rss_start = max_rss_bytes()

    def run_fit(b: int) -> fitting.FitResult:
        return fitting.fit(particles, capacity, n_bootstrap=b, seed=seed)

    # Untimed warm-up (imports, first-call costs), then the timed runs.
    run_fit(min(n_boot, 64))
    full_only, _ = time_repeats(lambda: run_fit(0), args.repeats)
    batched, result = time_repeats(lambda: run_fit(n_boot), args.repeats)
    rss_batched = max_rss_bytes()
    surface = None
    if args.surface_um:
        # Four more full-data fits (every surface moved out and in), the replicates
        # moved after their solve: timed apart, outside the comparisons below.
        silicon, cbd = args.surface_um
        surface, _ = time_repeats(
            lambda: fitting.fit(
                particles,
                capacity,
                n_bootstrap=n_boot,
                seed=seed,
                silicon_surface_sd_um=silicon,
                cbd_surface_sd_um=cbd,
            ),
            args.repeats,
        )

    # Peak memory of one more run, recording the replicate problems it solves.
    with recorded_solves() as calls:
        peak, traced_result = traced_peak(lambda: run_fit(n_boot))
    boot_call = calls[-1]
    if boot_call["theta0"].shape[0] != n_boot:
        raise RuntimeError("could not find the bootstrap's _solve call in fit()")
    data, material, reps = boot_call["data"], boot_call["material"], boot_call["reps"]
    deterministic = bool(traced_result.samples.equals(result.samples))

    # Reference: the first K replicate problems, one SciPy fit each.
    k = min(args.reference_fits, n_boot)
    residuals = fitting._residual_function(data, first_replicates(reps, k), material)
    theta0 = np.array(boot_call["theta0"][:k])
    theta_sp, sp_seconds, sp_nfev, sp_status = scipy_reference(
        residuals, theta0, args.x_scale, args.repeats
    )
    # Per replicate the median over the repeated loops; then the median over replicates.
    reference = Timing(tuple(float(s) for s in np.median(sp_seconds, axis=0)))
    per_call_ref = float(np.median(np.median(sp_seconds, axis=0) / sp_nfev))

    # The same K replicates with the batched solver alone (settings of fitting._solve).
    # Counting the replicate rows evaluated gives residual evaluations per fit.
    evaluated = np.zeros(k, dtype=np.int64)

    def counted(theta: np.ndarray, rows: np.ndarray) -> np.ndarray:
        np.add.at(evaluated, rows, 1)
        return np.asarray(residuals(theta, rows))

    solve_start = time.perf_counter()
    alone = least_squares_batched(
        counted,
        theta0,
        fitting.LOWER,
        fitting.UPPER,
        fitting.TYPICAL,
        relative_step=fitting.DIFFERENCE_STEP,
        ftol=fitting.FTOL,
        xtol=fitting.XTOL,
    )
    alone_seconds = time.perf_counter() - solve_start

    names = list(PARAMETER_NAMES)
    theta_b = result.samples[names].to_numpy()[:k]
    width = np.array([result.parameters[n][2] - result.parameters[n][1] for n in names])
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.abs(theta_b - theta_sp) / width
    cost_b, cost_sp = costs(residuals, theta_b), costs(residuals, theta_sp)
    not_worse = cost_b <= cost_sp + COST_TOLERANCE * cost_sp

    # Figures.
    per_fit_total = batched.median / n_boot
    boot_only = batched.median - full_only.median
    per_fit_boot = boot_only / n_boot
    per_fit_ref = reference.median
    projected = full_only.median + per_fit_boot * GOAL_FITS
    speedup_boot = per_fit_ref / per_fit_boot
    speedup_total = per_fit_ref / per_fit_total

    problem = {
        "particles": len(particles),
        "fitted_particles": int(data.gap.size),
        "population_particles": int(data.population_stratum.size),
        "strata": len(data.strata),
        "capacity_points": len(capacity),
        "capacity_residuals": int(data.capacity_cycles.size),
        "residuals_per_fit": int(data.gap.size + data.capacity_cycles.size),
        "parameters": len(names),
        "grid_nodes": int(data.grid.size),
        "bootstrap": n_boot,
        "chunk": int(boot_call["chunk"]),
        "reference_fits": k,
        "seed": seed,
    }
    payload: dict[str, Any] = {
        "name": NAME,
        "description": "bootstrap fits of the demo table: debond fit() (batched) "
        "against scipy.optimize.least_squares looped over replicates",
        "machine": machine,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "sources": sources,
        "sources_changed_during_run": sources != source_digests(*MODEL_MODULES),
        "problem": problem,
        "batched": {
            "fit_total": batched.as_dict(),
            "fit_full_data_only": full_only.as_dict(),
            "fit_total_with_surfaces": None if surface is None else surface.as_dict(),
            "surface_um": args.surface_um,
            "bootstrap_only_median_s": boot_only,
            "per_fit_total_s": per_fit_total,
            "per_fit_bootstrap_only_s": per_fit_boot,
            "projected_10000_fits_s": projected,
            "converged_fraction": float(result.samples["converged"].mean()),
            "deterministic": deterministic,
            "parameters": {n: list(result.parameters[n]) for n in names},
        },
        "memory": {
            "tracemalloc_peak_mib": peak / MIB,
            "max_rss_before_fits_mib": rss_start / MIB,
            "max_rss_after_timed_fits_mib": rss_batched / MIB,
        },
        "reference": {
            "method": "scipy.optimize.least_squares (trf), one replicate at a time",
            "x_scale": args.x_scale,
            "diff_step": fitting.DIFFERENCE_STEP,
            "ftol": fitting.FTOL,
            "xtol": fitting.XTOL,
            "per_fit": reference.as_dict(),
            "loop_repeats": args.repeats,
            "loop_s": [float(t) for t in sp_seconds.sum(axis=1)],
            "per_residual_call_s": per_call_ref,
            "extrapolated_bootstrap_s": per_fit_ref * n_boot,
            "residual_evaluations_median": float(np.median(sp_nfev)),
            "status_counts": dict(Counter(int(s) for s in sp_status)),
        },
        "speedup": {
            "per_fit_bootstrap_only": speedup_boot,
            "per_fit_total": speedup_total,
            # Approximate: batched time per fit over its median evaluations per fit.
            "per_residual_evaluation": per_call_ref
            / (per_fit_boot / max(float(np.median(evaluated)), 1.0)),
            "goal": GOAL_SPEEDUP,
        },
        "agreement": {
            "median_abs_difference_over_interval_width": {
                n: float(np.median(distance[:, i])) for i, n in enumerate(names)
            },
            "max_abs_difference_over_interval_width": {
                n: float(np.max(distance[:, i])) for i, n in enumerate(names)
            },
            "interval_width": {n: float(width[i]) for i, n in enumerate(names)},
            "fraction_batched_cost_not_worse": float(not_worse.mean()),
            "cost_tolerance": COST_TOLERANCE,
            "median_relative_cost_difference": float(np.median((cost_b - cost_sp) / cost_sp)),
            "batched_alone": {
                "seconds": alone_seconds,
                "iterations_median": float(np.median(alone.iterations)),
                "residual_evaluations_median": float(np.median(evaluated)),
                "max_abs_difference_to_fit_samples": float(np.max(np.abs(alone.theta - theta_b))),
            },
        },
        "goals": {
            "fits": GOAL_FITS,
            "seconds": GOAL_SECONDS,
            "time_met": bool(projected < GOAL_SECONDS),
            "speedup": GOAL_SPEEDUP,
            "speedup_met": bool(speedup_boot >= GOAL_SPEEDUP),
        },
    }
    payload["summary"] = {
        f"fit(), B = {n_boot} (median of {args.repeats})": fmt_seconds(batched.median),
        "full-data fit only": fmt_seconds(full_only.median),
        **(
            {}
            if surface is None
            else {
                f"fit(), B = {n_boot}, surfaces {args.surface_um} µm": fmt_seconds(surface.median)
            }
        ),
        "per fit, batched (bootstrap only)": fmt_seconds(per_fit_boot),
        f"per fit, SciPy looped (median of {k})": fmt_seconds(per_fit_ref),
        "speed-up per fit (bootstrap only / total)": f"{speedup_boot:.0f}× / {speedup_total:.0f}×",
        "projected 10,000 fits": fmt_seconds(projected),
        "peak memory (tracemalloc / max RSS)": f"{fmt_mib(peak)} / {fmt_mib(rss_batched)}",
        "batched cost ≤ SciPy cost": f"{not_worse.mean():.0%} of {k}",
    }

    print_report(payload)
    if payload["sources_changed_during_run"]:
        print("warning: debond.model sources changed on disk during the run", file=sys.stderr)
    if not args.no_write:
        path = write_result(NAME, payload)
        print(f"\nwritten: {path}")
    return payload


def print_report(payload: dict[str, Any]) -> None:
    """Print the problem size, the timings and the agreement as tables."""
    problem, batched, ref = payload["problem"], payload["batched"], payload["reference"]
    machine, memory, speed = payload["machine"], payload["memory"], payload["speedup"]
    agree = payload["agreement"]
    b = problem["bootstrap"]
    print(
        f"{NAME}: {problem['particles']} particles ({problem['fitted_particles']} fitted), "
        f"{problem['capacity_points']} capacity points, {problem['grid_nodes']} grid nodes, "
        f"{problem['residuals_per_fit']} residuals x {problem['parameters']} parameters, "
        f"B = {b}, chunk {problem['chunk']}"
    )
    load = [machine.get("load_average_1_5_15_min"), payload.get("load_average_at_end")]
    load_text = " -> ".join(f"{x[0]:.2f}" for x in load if x) or "n/a"
    print(
        f"machine: {machine['cpu_count']} cores, Python {machine['python']}, "
        f"NumPy {machine['numpy']}, SciPy {machine['scipy']}; "
        f"1-min load average {load_text} (start -> end)\n"
    )
    total, full = batched["fit_total"], batched["fit_full_data_only"]
    rows = [
        [
            f"fit(), B = {b}",
            fmt_seconds(total["median_s"]),
            total["repeats"],
            fmt_seconds(total["median_s"] / b),
        ],
        ["fit(), B = 0 (full-data fit)", fmt_seconds(full["median_s"]), full["repeats"], ""],
        *(
            [
                [
                    f"fit(), B = {b}, surfaces {batched['surface_um']} µm",
                    fmt_seconds(batched["fit_total_with_surfaces"]["median_s"]),
                    batched["fit_total_with_surfaces"]["repeats"],
                    "",
                ]
            ]
            if batched.get("fit_total_with_surfaces")
            else []
        ),
        [
            "bootstrap only (difference)",
            fmt_seconds(batched["bootstrap_only_median_s"]),
            "",
            fmt_seconds(batched["per_fit_bootstrap_only_s"]),
        ],
        [
            f"SciPy looped, {problem['reference_fits']} fits -> x{b}",
            fmt_seconds(ref["extrapolated_bootstrap_s"]),
            ref["per_fit"]["repeats"],
            fmt_seconds(ref["per_fit"]["median_s"]),
        ],
    ]
    print_table(rows, ["run", "median wall time", "n", "per fit"])
    print()
    print_table(
        [
            ["speed-up per fit, bootstrap only", f"{speed['per_fit_bootstrap_only']:.1f}×"],
            ["speed-up per fit, whole fit() / B", f"{speed['per_fit_total']:.1f}×"],
            [
                "speed-up per residual evaluation (approx.)",
                f"{speed['per_residual_evaluation']:.1f}×",
            ],
            ["SciPy time per residual call (K = 1)", fmt_seconds(ref["per_residual_call_s"])],
            ["projected 10,000 fits", fmt_seconds(batched["projected_10000_fits_s"])],
            [
                "goals met (< 60 s, ≥ 100×)",
                f"{payload['goals']['time_met']}, {payload['goals']['speedup_met']}",
            ],
            ["tracemalloc peak of one fit()", f"{memory['tracemalloc_peak_mib']:.1f} MiB"],
            [
                "max RSS before / after fits",
                f"{memory['max_rss_before_fits_mib']:.0f} / "
                f"{memory['max_rss_after_timed_fits_mib']:.0f} MiB",
            ],
            ["converged fraction (batched)", f"{batched['converged_fraction']:.3f}"],
            [
                "residual evaluations per fit, batched / SciPy (median)",
                f"{agree['batched_alone']['residual_evaluations_median']:.0f} / "
                f"{ref['residual_evaluations_median']:.0f}",
            ],
        ],
        ["figure", "value"],
    )
    print()
    median_d = agree["median_abs_difference_over_interval_width"]
    max_d = agree["max_abs_difference_over_interval_width"]
    print_table(
        [
            [n, f"{median_d[n]:.3g}", f"{max_d[n]:.3g}", f"{agree['interval_width'][n]:.3g}"]
            for n in median_d
        ],
        ["parameter", "median |Δθ|/width", "max |Δθ|/width", "width (84th−16th)"],
    )
    print(
        f"batched cost ≤ SciPy cost (+{agree['cost_tolerance']:g}·cost) in "
        f"{agree['fraction_batched_cost_not_worse']:.0%} of {problem['reference_fits']} "
        f"replicates; median (cost_batched − cost_scipy)/cost_scipy = "
        f"{agree['median_relative_cost_difference']:.2e}"
    )
    print(
        "least_squares_batched alone on the same replicates vs fit() samples: "
        f"max |Δθ| = {agree['batched_alone']['max_abs_difference_to_fit_samples']:.2e}"
    )


if __name__ == "__main__":
    main()
