"""Benchmark: the bootstrap of the size unfolding, batched against unfold_radii looped.

What is measured
----------------
Section radii of a log-normal sphere population (the synthetic particles'
law, :func:`debond.model.synthetic.draw_radii`) cut by random planes
(:func:`debond.pipeline.stereology.sample_sections`), ``--sections`` of them
(default 130, the demo campaign's usable SEM sections, and a larger set with
``--sections 2000``). :func:`unfold_radii_bootstrap` unfolds ``--bootstrap``
resamples (default 2000, the fit's) in one batched EM; the median wall time
over ``--repeats`` runs is reported, and per replicate.

Reference
---------
The same resamples (drawn again with the same generator) each unfolded by
:func:`unfold_radii` on the full data's bins, in a Python loop over the first
``--reference`` replicates (default 200), timed ``--repeats`` times; the
median time per replicate is extrapolated. The speed-up is the loop's time
per replicate over the batched one's, both measured in this process; the
largest difference of the fractions between the two is recorded as a check.

Usage
-----
``python benchmarks/stereology.py [--sections N] [--bootstrap B] [--repeats R]
[--reference K] [--no-write]``; the result goes to
``benchmarks/results/stereology.json``.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from common import (
    fmt_seconds,
    machine_info,
    max_rss_bytes,
    print_table,
    source_digests,
    time_repeats,
    traced_peak,
    write_result,
)

from debond.model.synthetic import draw_radii
from debond.pipeline import stereology
from debond.pipeline.stereology import sample_sections, unfold_radii, unfold_radii_bootstrap

NAME = "stereology"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", type=int, nargs="+", default=[130, 2000])
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


def one_size(n_sections: int, args: argparse.Namespace) -> dict[str, Any]:
    """Batched and looped bootstrap of ``n_sections`` sections."""
    rng = np.random.default_rng(args.seed)
    radii, _, _ = sample_sections(draw_radii(rng, 50_000), 0.0, n_sections, rng)

    def batched() -> tuple[stereology.SizeDistribution, np.ndarray]:
        return unfold_radii_bootstrap(radii, args.bootstrap, np.random.default_rng(1))

    batched()  # warm-up
    timing, (distribution, replicates) = time_repeats(batched, args.repeats)
    peak, _ = traced_peak(batched)
    k = min(args.reference, args.bootstrap)
    draws = np.random.default_rng(1).integers(0, radii.size, size=(args.bootstrap, radii.size))

    def looped() -> np.ndarray:
        return np.array(
            [unfold_radii(radii[d], bins=distribution.edges).number_fraction for d in draws[:k]]
        )

    reference, alone = time_repeats(looped, args.repeats)
    per_batched = timing.median / args.bootstrap
    per_looped = reference.median / k
    return {
        "sections": n_sections,
        "bins": distribution.bins,
        "bootstrap": args.bootstrap,
        "batched": timing.as_dict(),
        "batched_per_replicate_s": per_batched,
        "batched_peak_bytes": peak,
        "reference_replicates": k,
        "reference": reference.as_dict(),
        "reference_per_replicate_s": per_looped,
        "speed_up": per_looped / per_batched,
        "max_fraction_difference": float(np.abs(replicates[:k] - alone).max()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table, write the JSON; return the JSON document."""
    args = parse_args(argv)
    machine = machine_info()
    runs = [one_size(n, args) for n in args.sections]
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "machine": machine,
        "sources": source_digests(stereology),
        "max_rss_bytes": max_rss_bytes(),
        "runs": runs,
    }
    payload["summary"] = {
        f"unfolding bootstrap, {r['sections']} sections, B={r['bootstrap']}": (
            f"{fmt_seconds(r['batched']['median_s'])} batched, "
            f"{r['speed_up']:.1f}x the loop of unfold_radii"
        )
        for r in runs
    }
    rows = [
        [
            r["sections"],
            r["bins"],
            fmt_seconds(r["batched"]["median_s"]),
            f"{1e3 * r['batched_per_replicate_s']:.2f} ms",
            f"{1e3 * r['reference_per_replicate_s']:.2f} ms",
            f"{r['speed_up']:.1f}x",
            f"{r['max_fraction_difference']:.1e}",
        ]
        for r in runs
    ]
    print_table(
        rows,
        [
            "sections",
            "bins",
            "batched (B)",
            "per replicate",
            "loop, per replicate",
            "speed-up",
            "max |Δ fraction|",
        ],
    )
    if not args.no_write:
        print(f"wrote {write_result(NAME, payload)}")
    return payload


if __name__ == "__main__":
    main()
