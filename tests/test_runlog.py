"""The campaign's log: what a run ran, where, its timings and memory; and `debond run`'s lines.

The small synthetic campaign runs once, every stage, through `debond run` on a
cluster of threads in this process (reached at its tcp:// address, as an
existing cluster is); its output (not a terminal) and the log it appends are
read back, then a second run (everything current) appends its own section.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dask.utils import parse_bytes
from distributed import Client, LocalCluster
from typer.testing import CliRunner

from debond.cli import app
from debond.progress import StageRecord
from debond.runlog import MEMORY_NOTE, log_path, run_summary
from debond.runner import Outcome
from debond.stages import REGISTRY

pytestmark = pytest.mark.distributed

SAMPLES = ("c00", "c01", "c03", "c10")
#: A row of the log's table: stage, sample, state, seconds, tasks, peak memory.
ROW = re.compile(
    r"^(?P<stage>\S+) +(?P<sample>\S+) +(?P<state>done|skipped|failed|blocked|interrupted|stopped)"
    r" +(?P<seconds>\d+\.\d) +(?P<tasks>\d+|-) +(?P<peak>\d+(\.\d+)? [KMGT]?i?B|-)$"
)
#: Terminal control: escape sequences, carriage returns, other C0 codes but the newline.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """A scheduler and two single-threaded workers in this process, on tcp://127.0.0.1."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            protocol="tcp",
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as local,
        Client(local),
    ):
        yield local.scheduler_address


@pytest.fixture(scope="module")
def two_runs(
    small_campaign: Path, address: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str], list[str]]:
    """The campaign run twice by `debond run`: its file and each run's output lines."""
    folder = tmp_path_factory.mktemp("runlog") / "small"
    shutil.copytree(small_campaign, folder, ignore=shutil.ignore_patterns("store.zarr", "truth"))
    campaign = folder / "campaign.toml"
    outputs = []
    for _ in range(2):
        result = CliRunner().invoke(app, ["run", str(campaign), "--scheduler", address])
        assert result.exit_code == 0, result.output
        outputs.append(result.output.splitlines())
    return campaign, outputs[0], outputs[1]


def sections(log: Path) -> list[list[str]]:
    """The log's sections, one per run, as lines."""
    text = log.read_text()
    parts = re.split(r"^(?==== run )", text, flags=re.MULTILINE)
    return [part.strip().splitlines() for part in parts if part.strip()]


def test_the_log_beside_the_campaign_names_every_stage_with_its_timings(
    two_runs: tuple[Path, list[str], list[str]], address: str
) -> None:
    campaign, _, _ = two_runs
    log = campaign.with_suffix(".log")
    assert log_path(campaign) == log and log.is_file()
    first, second = sections(log)
    assert re.match(r"^=== run \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC ===$", first[0])
    assert first[1] == f"command: debond run {campaign} --scheduler {address}"
    assert f"campaign: {campaign} (" in first[2]
    assert any(line.startswith(f"cluster: {address}, 2 workers, dashboard http") for line in first)
    workers = [line for line in first if line.startswith("  worker tcp://127.0.0.1:")]
    assert len(workers) == 2 and all("memory limit" in line for line in workers)

    rows = [m for m in map(ROW.match, first) if m]
    ran = {(m["stage"], m["sample"]) for m in rows}
    assert ran == {(stage, sample) for stage in REGISTRY.names for sample in SAMPLES}
    assert {m["state"] for m in rows} == {"done"}
    assert all(float(m["seconds"]) > 0 and int(m["tasks"]) > 0 for m in rows)
    assert all(parse_bytes(m["peak"].replace(" ", "")) > 0 for m in rows)
    for stage in REGISTRY.names:  # one summary line per stage
        (summary,) = [line for line in first if line.startswith(f"stage {stage}: ")]
        assert re.search(r"4 sample\(s\) in \d+\.\d s wall .* tasks, peak memory \d", summary)
    assert MEMORY_NOTE in first
    assert first[-1].startswith("finished (in ")

    rows = [m for m in map(ROW.match, second) if m]
    assert {m["state"] for m in rows} == {"skipped"} and len(rows) == len(ran)


def test_output_that_is_not_a_terminal_is_plain_lines(
    two_runs: tuple[Path, list[str], list[str]],
) -> None:
    _, first, second = two_runs
    assert not any(CONTROL.search(line) for line in first + second)
    for stage in REGISTRY.names:
        assert any(re.match(rf"^{stage} +c00 +done in \d", line) for line in first), first
    progress = [line for line in first if re.search(r" \d+ % \(\d+/\d+ tasks\)", line)]
    for line in progress:
        assert re.match(r"^\S+ +\S+ +\d+ % \(\d+/\d+ tasks\)(, .+ left)?$", line), line


def test_a_summary_lists_what_ran_and_what_was_stopped() -> None:
    outcomes = [
        Outcome("ingest", "c00", "done", 2.0),
        Outcome("prep", "c00", "skipped", detail="current"),
    ]
    records = [
        StageRecord("ingest", "c00", started=10.0, seconds=2.0, done=6, total=6, peak_bytes=2**30),
        StageRecord("recon", "c00", started=12.0, seconds=1.5, done=3, total=16, peak_bytes=0),
    ]
    whole = run_summary(outcomes, records, ending="interrupted", seconds=4.0, peak_bytes=3 * 2**29)
    assert whole.endswith("\n\n")  # a blank line before the next run's section
    text = whole.splitlines()
    assert ROW.match(text[1]) and text[1].split()[:3] == ["ingest", "c00", "done"]
    assert text[1].endswith("1.00 GiB")
    assert text[2].split() == ["prep", "c00", "skipped", "0.0", "-", "-"]
    assert text[3].split() == ["recon", "c00", "stopped", "1.5", "16", "-"]
    assert "stage ingest: 1 sample(s) in 2.0 s wall (2.0 s summed), 6 tasks" in text[4]
    assert text[-2] == "interrupted (in 4.0 s; peak memory of the run 1.50 GiB)"
