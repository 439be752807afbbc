"""The log of a campaign's runs: ``<campaign>.log`` beside the campaign file.

Each ``debond run`` (each :func:`debond.runner.run_campaign`) appends one
section to the log of its campaign, ``campaign.log`` for ``campaign.toml``,
in the same folder: a header with the date, the command, the campaign and
its store, the stages asked for and the cluster (scheduler address,
dashboard, every worker with its threads and memory limit), written when
the run starts; then, when it ends however it ends (finished, failed,
interrupted), one row per stage of a sample (its state, wall time, tasks
and peak worker memory), a summary per stage and the run's ending.

The memory figures come from the scheduler: each worker reports the
resident set size (RSS) of its process in its heartbeats, and the run reads
them twice a second (:class:`debond.progress.Tracker`). A stage's peak is
the largest RSS of any one worker seen while it ran; stages that run at the
same time share the workers, so each one's peak includes what the others
held. The log says so in every section.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dask.utils import format_bytes

from debond.progress import POLL_S, StageRecord

if TYPE_CHECKING:
    from distributed import Client

    from debond.campaign import Campaign
    from debond.runner import Outcome

__all__ = [
    "MEMORY_NOTE",
    "append",
    "cluster_lines",
    "describe_command",
    "log_path",
    "run_header",
    "run_summary",
]

#: What the memory figures of a log are.
MEMORY_NOTE = (
    "peak memory: the largest resident set size (RSS) of any one worker process, as the "
    f"workers report it to the scheduler, read every {POLL_S:g} s while the stage ran; "
    "stages that ran at the same time share the workers, so each peak includes what the "
    "others held"
)


def log_path(campaign_file: Path) -> Path:
    """The log of a campaign: its file name with ``.log``, in the same folder.

    Examples
    --------
    >>> log_path(Path("runs/campaign.toml")).as_posix()
    'runs/campaign.log'
    """
    return campaign_file.with_suffix(".log")


def cluster_lines(client: Client) -> list[str]:
    """Where a run runs: the scheduler, its dashboard and each worker, one line each."""
    info = client.scheduler_info(n_workers=-1)
    workers = info.get("workers", {})
    lines = [
        f"cluster: {client.scheduler.address}, {len(workers)} workers, "
        f"dashboard {client.dashboard_link}"
    ]
    for address, worker in sorted(workers.items()):
        limit = worker.get("memory_limit") or 0
        memory = format_bytes(limit) if limit else "no limit"
        lines.append(
            f"  worker {address}: {worker.get('nthreads', '?')} thread(s), memory limit {memory}"
        )
    return lines


def run_header(
    *,
    when: dt.datetime,
    command: str,
    campaign: Campaign,
    stages: Sequence[str],
    cluster: Sequence[str],
) -> str:
    """The opening of a run's section: when, what was run, on what and where.

    Parameters
    ----------
    when : datetime
        The run's start (written in UTC).
    command : str
        The command line (or call) that started it.
    campaign : Campaign
    stages : sequence of str
        The stages asked for, in run order.
    cluster : sequence of str
        :func:`cluster_lines`.

    Returns
    -------
    str
        Lines ending with a newline.
    """
    stamp = when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"=== run {stamp} ===",
        f"command: {command}",
        f"campaign: {campaign.path} ({campaign.name}, {len(campaign.samples)} samples)",
        f"store: {campaign.store_location}",
        f"stages: {', '.join(stages)}",
        *cluster,
    ]
    return "\n".join(lines) + "\n"


def _row(stage: str, sample: str, state: str, record: StageRecord | None, seconds: float) -> str:
    tasks = str(record.total) if record is not None else "-"
    peak = format_bytes(record.peak_bytes) if record is not None and record.peak_bytes else "-"
    return f"{stage:<8} {sample:<10} {state:<11} {seconds:>9.1f} {tasks:>7} {peak:>11}"


def run_summary(
    outcomes: Sequence[Outcome],
    records: Sequence[StageRecord],
    *,
    ending: str,
    seconds: float,
    peak_bytes: int,
) -> str:
    """The rest of a run's section: each stage of a sample, each stage, and the ending.

    Parameters
    ----------
    outcomes : sequence of Outcome
        What happened to each stage of each sample (in the order to list).
    records : sequence of StageRecord
        What the tracker saw of the stages that ran (tasks, peak memory).
    ending : str
        How the run ended, one line (``finished``, the failures, ``interrupted: …``).
    seconds : float
        The run's wall time, s.
    peak_bytes : int
        The largest worker memory seen during the run, bytes.

    Returns
    -------
    str
        Lines ending with a newline, then a blank line.
    """
    seen = {(r.stage, r.sample): r for r in records}
    lines = [
        f"{'stage':<8} {'sample':<10} {'state':<11} {'seconds':>9} {'tasks':>7} {'peak memory':>11}"
    ]
    listed = set()
    for outcome in outcomes:
        record = seen.get((outcome.stage, outcome.sample))
        lines.append(_row(outcome.stage, outcome.sample, outcome.state, record, outcome.seconds))
        listed.add((outcome.stage, outcome.sample))
    for record in records:  # ran, but stopped before it had an outcome
        if (record.stage, record.sample) not in listed:
            lines.append(_row(record.stage, record.sample, "stopped", record, record.seconds))
    stages: dict[str, list[StageRecord]] = {o.stage: [] for o in outcomes}  # in their order
    for record in records:
        stages.setdefault(record.stage, []).append(record)
    for stage, ran in stages.items():
        if not ran:
            continue
        span = max(r.started + r.seconds for r in ran) - min(r.started for r in ran)
        peak = max(r.peak_bytes for r in ran)
        lines.append(
            f"stage {stage}: {len(ran)} sample(s) in {span:.1f} s wall "
            f"({sum(r.seconds for r in ran):.1f} s summed), {sum(r.total for r in ran)} tasks, "
            f"peak memory {format_bytes(peak) if peak else 'not seen'}"
        )
    lines.append(MEMORY_NOTE)
    whole = format_bytes(peak_bytes) if peak_bytes else "not seen"
    lines.append(f"{ending} (in {seconds:.1f} s; peak memory of the run {whole})")
    return "\n".join(lines) + "\n\n"


def append(path: Path, text: str) -> None:
    """Add ``text`` to the log at ``path`` (created if missing)."""
    with path.open("a", encoding="utf-8") as log:
        log.write(text)


def describe_command(argv: Sequence[str]) -> str:
    """The command line as it would be typed again (the program by its file name).

    Examples
    --------
    >>> describe_command(["/venv/bin/debond", "run", "my campaign.toml"])
    "debond run 'my campaign.toml'"
    """
    import shlex

    if not argv:
        return "(no command line)"
    return shlex.join([Path(argv[0]).name, *argv[1:]])
