"""`debond run --dry-run` and :func:`debond.runner.preview_run`: what a run would do, and
nothing written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import tomlkit
from typer.testing import CliRunner

from debond.campaign import load_campaign
from debond.cli import app
from debond.runner import preview_run
from debond.stages import REGISTRY
from debond.storage import get_array, open_store
from debond.storage.provenance import COMPLETE_KEY
from tests.helpers import one_sample_campaign

runner = CliRunner()


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder`: size and modification time."""
    out = {}
    for here, folders, files in os.walk(folder):
        for name in folders + files:
            stat = (Path(here) / name).stat()
            out[os.path.relpath(Path(here) / name, folder)] = (stat.st_size, stat.st_mtime_ns)
    return out


def dry_run(path: Path, *options: str) -> tuple[int, dict[tuple[str, str], str], str]:
    """Exit code, each (stage, sample) line's decision, and the output."""
    result = runner.invoke(app, ["run", str(path), "--dry-run", *options])
    lines = {}
    for line in result.output.splitlines():
        found = re.match(r"^(\w+)\s+(\S+)\s+(.*)$", line)
        if found and found.group(1) in REGISTRY.names:
            lines[found.group(1), found.group(2)] = found.group(3)
    return result.exit_code, lines, result.output


def run_states(path: Path) -> dict[tuple[str, str], str]:
    """A real run's outcome of each (stage, sample): "done" or "skipped"."""
    result = runner.invoke(app, ["run", str(path), "--workers", "2"])
    assert result.exit_code == 0, result.output
    found = re.findall(r"^(\w+)\s+(\S+)\s+(done|skipped)\b", result.output, re.MULTILINE)
    return {(stage, sample): state for stage, sample, state in found}


def predicted(lines: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    """A dry run's lines as the run's outcomes: skip → "skipped", anything else → "done"."""
    return {key: "skipped" if line.startswith("skip") else "done" for key, line in lines.items()}


@pytest.mark.distributed
def test_a_dry_run_says_what_would_run_and_writes_nothing(
    small_campaign: Path, tmp_path: Path
) -> None:
    path = one_sample_campaign(small_campaign, tmp_path / "small")
    before = snapshot(tmp_path)
    code, lines, output = dry_run(path)
    assert code == 0, output
    assert "dry run: nothing is computed or written" in output
    assert "cluster" not in output  # none was started
    assert lines["ingest", "c00"] == "run: output missing"
    assert lines["sem", "c00"] == "run: output missing"
    for stage in ("prep", "recon", "segment", "label", "measure"):
        assert lines[stage, "c00"] == "run: after ingest (which makes its inputs)"
    assert "a run would run 7 and skip 0 stage(s)" in output
    assert snapshot(tmp_path) == before  # no store, no tables, nothing touched
    assert run_states(path) == predicted(lines)

    before = snapshot(tmp_path)
    code, lines, output = dry_run(path)
    assert code == 0, output
    assert set(lines.values()) == {"skip: current"} and len(lines) == len(REGISTRY)
    assert snapshot(tmp_path) == before

    # a changed parameter: its stage is stale and says what changed, and so are the
    # stages whose inputs it changes
    text = path.read_text().replace('fbp_filter = "ram-lak"', 'fbp_filter = "hann"')
    path.write_text(text)
    _, lines, _ = dry_run(path)
    assert lines["prep", "c00"] == "skip: current"
    assert lines["recon", "c00"] == (
        "rerun: output stale (parameters['fbp_filter']: 'ram-lak' -> 'hann')"
    )
    assert lines["segment", "c00"] == "rerun: output stale (inputs['recon']: changed)"
    assert lines["sem", "c00"] == "skip: current"
    path.write_text(text.replace('fbp_filter = "hann"', 'fbp_filter = "ram-lak"'))

    # an output without its completion marker (a run stopped) is redone; as its
    # parameters did not change, the stages after it stay current
    store = open_store(path.parent / "store.zarr", mode="r+")
    del get_array(store, "c00", "sinograms").attrs[COMPLETE_KEY]
    before = snapshot(tmp_path)
    _, lines, _ = dry_run(path)
    assert lines["ingest", "c00"] == "skip: current"
    assert lines["prep", "c00"].startswith("resume: output incomplete")
    assert lines["recon", "c00"] == "skip: current (prep remakes its inputs as they were)"
    assert lines["measure", "c00"] == "skip: current"
    _, forced, _ = dry_run(path, "--force", "--only", "sem")
    assert forced == {("sem", "c00"): "run: --force"}
    assert snapshot(tmp_path) == before
    assert run_states(path) == predicted(lines)


def test_preview_names_bad_input_as_the_run_would(small_campaign: Path, tmp_path: Path) -> None:
    path = one_sample_campaign(small_campaign, tmp_path / "small")
    outcomes = preview_run(load_campaign(path), stages=["recon", "segment"])
    assert [(o.stage, o.state) for o in outcomes] == [("recon", "failed"), ("segment", "blocked")]
    assert "samples/c00/sinograms is not in the store; run the stage 'prep'" in outcomes[0].detail
    code, lines, output = dry_run(path, "--only", "recon,segment")
    assert code == 1, output
    assert lines["recon", "c00"].startswith("cannot run: ")
    assert lines["segment", "c00"] == "blocked: recon cannot run"
    assert not (path.parent / "store.zarr").exists()


def test_stages_not_in_a_sample_chain_are_said_as_the_run_says_them(
    small_campaign: Path, tmp_path: Path
) -> None:
    path = one_sample_campaign(small_campaign, tmp_path / "small")
    document = tomlkit.parse(path.read_text())
    sem_alone = tomlkit.table()
    sem_alone.update({"id": "s1", "cycles": 1, "sem": ["sem/c01_*.tif"]})
    document["sample"].append(sem_alone)  # type: ignore[union-attr]
    path.write_text(tomlkit.dumps(document))
    outcomes = preview_run(load_campaign(path))
    assert [(o.stage, o.state) for o in outcomes if o.sample == "s1"] == [
        *((name, "absent") for name in REGISTRY.names if name != "sem"),
        ("sem", "run"),
    ]
    code, lines, output = dry_run(path)
    assert code == 0, output
    assert lines["recon", "s1"] == "not part of its chain (SEM images alone: no txm or phases)"
    assert lines["sem", "s1"] == "run: output missing"
