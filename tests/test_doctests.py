"""The packages' docstring examples are collected, once each, under their installed names."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("debond", "pipeline", "storage", "model")


def test_doctests_are_collected_once_under_their_debond_names() -> None:
    """``make test`` runs the doctests of debond, pipeline, storage and model (the
    pyproject.toml configuration and the root conftest.py); a module in
    ``pipeline/`` is ``debond.pipeline.…`` (through the link ``debond/pipeline``),
    never a second copy ``pipeline.…``."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-pno:cacheprovider", *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    items = [line for line in result.stdout.splitlines() if "::" in line]
    names = [item.split("::", 1)[1] for item in items]
    assert all(name.startswith("debond.") for name in names), names
    assert [name for name, n in Counter(names).items() if n > 1] == []
    covered = {name.split(".")[1] for name in names}
    assert {"pipeline", "storage", "model", "campaign"} <= covered, covered
    assert "debond.pipeline.blocks.merge_small_chunks" in names
