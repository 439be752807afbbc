"""Run every benchmark in ``benchmarks/`` and print a combined summary.

A benchmark is a module ``benchmarks/<name>.py`` (other than ``common.py`` and
``run.py``) that defines ``main(argv=None) -> dict``; each writes its own
``benchmarks/results/<name>.json`` and returns that document, whose
``summary`` (``{label: value}``) goes into the combined table.

Usage
-----
``python benchmarks/run.py [NAME ...] [-- ARGS ...]``: only the named
benchmarks (default: all), ARGS passed on to every ``main`` (e.g.
``-- --repeats 1``).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from common import BENCHMARKS_DIR, fmt_seconds, print_table

SKIP = {"common", "run", "gpu_check"}  # gpu_check: its own script, on a GPU machine


def discover() -> dict[str, Path]:
    """Benchmark modules by name: ``benchmarks/*.py`` less helpers and private files."""
    return {
        path.stem: path
        for path in sorted(BENCHMARKS_DIR.glob("*.py"))
        if path.stem not in SKIP and not path.stem.startswith("_")
    }


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    passed: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passed = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description="Run the benchmarks in benchmarks/.")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)

    found = discover()
    unknown = sorted(set(args.names) - set(found))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; have {sorted(found)}")
    selected = args.names or list(found)

    rows: list[list[Any]] = []
    failed = []
    for name in selected:
        module = load(name, found[name])
        if not callable(getattr(module, "main", None)):
            continue
        print(f"=== {name} ===", flush=True)
        start = time.perf_counter()
        try:
            document = module.main(passed)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            rows.append([name, "FAILED", ""])
            continue
        seconds = time.perf_counter() - start
        summary = document.get("summary", {}) if isinstance(document, dict) else {}
        rows.extend([name, label, value] for label, value in summary.items())
        rows.append([name, "benchmark wall time", fmt_seconds(seconds)])
        print()

    print("=== summary ===")
    print_table(rows, ["benchmark", "figure", "value"])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
