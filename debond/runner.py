"""The campaign runner: which stages run for which samples, skipped or resumed.

``debond run CAMPAIGN.toml`` comes here. The stages and their order come
from the campaign's registry (:data:`debond.stages.REGISTRY`). Every sample
has a chain of stages: its 3D stages in registry order, and its SEM stage as
a chain of its own. All chains run at once on one cluster, each in a thread
that submits its stages' graphs one after the other, so the workers are
shared among samples at different stages (one sample reconstructs while
another is measured) and nothing waits for the slowest sample until the
particle table is gathered at the end. Each output is marked complete as soon
as its own computation finishes, so an interrupted run keeps every output
that had finished (DESIGN.md, principle 6).

A sample with SEM images alone (no ``txm`` or ``phases``) has no 3D chain,
and one that brings its own segmentation starts at ``segment``: the run says
once per sample which of the chosen stages are not part of its chains, and
does not fail on them.

Why the stages of a sample are not one graph: each stage's stored output is
the checkpoint a resumed run starts from, and some stages need values of the
previous one before their graph can be built (the rotation centre from the
sinograms, the thresholds from the histogram of the reconstruction, the
number of labels).

For each stage and sample the runner

1. plans it (the stage's own planner: its parameters, with the sample's voxel
   size and manual rotation centre, and its inputs, identified by their
   completion digests);
2. skips the outputs if :func:`debond.storage.status` (arrays) or
   :func:`debond.storage.tables.table_status` (tables) says they are current
   (unless ``force``), otherwise
3. builds the lazy graph, which validates the input before any heavy work;
   the first stage with work of every chain is built before anything is
   created in the store (so bad raw input in one sample neither runs nor
   damages anything); a later stage that fails to build fails its sample;
4. creates the outputs with their provenance (no completion marker), computes
   their writes on the cluster, and marks them complete.

After ``measure`` and ``sem`` the samples' rows are gathered into
``tables/<campaign>/particles.parquet`` (:mod:`debond.particles`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_threads
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
import zarr
from distributed import Client, Future, wait

from debond.campaign import Campaign, CampaignError, Sample
from debond.cluster import stage_resources, workers_in_process
from debond.memory import DASK_PAUSE, TASK_MEMORY_KEY, task_budget, task_bytes
from debond.particles import particle_table
from debond.pipeline.ingest import IngestError
from debond.progress import Display, Tracker
from debond.runlog import append, cluster_lines, describe_command, log_path, run_header, run_summary
from debond.stages import REGISTRY
from debond.stages.base import Plan, Registry, Stage, StageError, Work
from debond.storage import (
    PendingWrite,
    Status,
    StoreError,
    StoreNotFound,
    chunk_damage,
    find_array,
    open_store,
    prepare_write,
    set_sample_attrs,
    status,
)
from debond.storage.lock import StoreInUse, check_free, store_lock
from debond.storage.provenance import REPAIRED_KEY, digest, mark_damaged
from debond.storage.remote import remote_store_problem
from debond.storage.tables import DIGEST_KEY, table_status, write_table

__all__ = [
    "Outcome",
    "RunError",
    "StageStatus",
    "campaign_status",
    "check_store_free",
    "check_store_reachable",
    "parse_stages",
    "run_campaign",
    "sized_tasks",
    "task_memory",
]

#: Chains of stages (a sample's 3D stages, or its SEM stage) that run at once,
#: each a thread that submits its stages' graphs.
CHAINS_IN_FLIGHT = 8

Echo = Callable[[str], None]


class RunError(RuntimeError):
    """A run that could not start or did not finish; the message says which sample and why.

    Attributes
    ----------
    outcomes : list of Outcome
        What had happened by then (empty when nothing ran).
    """

    def __init__(self, message: str, outcomes: Sequence[Outcome] = ()) -> None:
        super().__init__(message)
        self.outcomes = list(outcomes)


class Interrupted(RunError):
    """The run was stopped (Ctrl-C): what was running is cancelled and left incomplete.

    ``outcomes`` holds the stages that had finished, one way or another.
    """


@dataclass(frozen=True)
class Outcome:
    """What happened to one stage of one sample.

    Attributes
    ----------
    stage, sample : str
    state : {"done", "skipped", "failed", "blocked", "interrupted"}
        ``skipped``: outputs were current; ``blocked``: an earlier stage of the
        sample failed in this run; ``interrupted``: the run was stopped while
        it ran (its outputs are not marked complete).
    seconds : float
        Wall time from submission to completion, s (0 when not run).
    detail : str
        Why it was skipped or failed, or what was found (e.g. the centre).
    """

    stage: str
    sample: str
    state: str
    seconds: float = 0.0
    detail: str = ""


#: After Ctrl-C, how long the samples' threads get to see their work
#: cancelled and return, s.
INTERRUPT_GRACE_S = 5.0


@dataclass
class _Flight:
    """What a run has on the cluster, so that an interruption can take it back.

    The samples' threads register the futures they wait on and the outcomes
    they reach; :meth:`recall` (from the main thread, on Ctrl-C) stops them.
    """

    stop: threading.Event = field(default_factory=threading.Event)
    futures: set[Any] = field(default_factory=set)
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    tracker: Tracker | None = None

    def tracked(self, plan: Plan) -> contextlib.AbstractContextManager[Any]:
        """Around one stage of a sample: its tasks counted and its memory watched, if tracked."""
        if self.tracker is None:
            return contextlib.nullcontext()
        return self.tracker.stage(plan.stage.name, plan.sample.id)

    def fly(self, futures: Sequence[Any]) -> None:
        with self.lock:
            self.futures.update(futures)

    def land(self, futures: Sequence[Any]) -> None:
        with self.lock:
            self.futures.difference_update(futures)

    def record(self, outcome: Outcome) -> Outcome:
        with self.lock:
            self.outcomes.append(outcome)
        return outcome

    def recall(self, client: Client) -> None:
        """Stop every sample: no new stage starts, and everything submitted is cancelled
        (this run's futures, and any other this client holds, e.g. a table's)."""
        self.stop.set()
        with self.lock:
            mine = list(self.futures)
        others: list[Any] = [Future(key, client) for key in list(client.futures)]
        client.cancel(mine + others)


# ----------------------------------------------------------------- stages


def parse_stages(
    text: str | Sequence[str] | None, registry: Registry = REGISTRY
) -> tuple[str, ...]:
    """Stages named by ``--only`` in run order; every stage for ``None``.

    Parameters
    ----------
    text : str, sequence of str or None
        ``"ingest,prep"`` or ``["ingest", "prep"]``; blanks ignored.
    registry : Registry
        The stages there are (default :data:`debond.stages.REGISTRY`).

    Returns
    -------
    tuple of str
        The stages, in run order.

    Raises
    ------
    RunError
        An unknown stage name, or none.

    Examples
    --------
    >>> parse_stages("label, segment")
    ('segment', 'label')
    """
    if text is None:
        return registry.names
    names = text.split(",") if isinstance(text, str) else list(text)
    wanted = {name.strip() for name in names if name.strip()}
    everything = ", ".join(registry.names)
    if not wanted:
        raise RunError(f"--only names no stage; expected some of {everything}")
    unknown = sorted(wanted - set(registry.names))
    if unknown:
        raise RunError(f"--only: unknown stage {unknown[0]!r}; expected names among {everything}")
    return tuple(name for name in registry.names if name in wanted)


def check_store_reachable(campaign: Campaign, *, workers_in_process: bool) -> None:
    """Refuse a store that the workers cannot see.

    A ``memory://`` store lives in the memory of the process that opens it:
    workers in other processes would each write into their own, and the run
    would fail later with misleading messages. It serves an in-process
    cluster only (:func:`debond.cluster.workers_in_process`). A store on
    object storage (``s3://``) must have its bucket, and the credentials of
    the environment must be accepted there
    (:func:`debond.storage.remote.remote_store_problem`).

    Parameters
    ----------
    campaign : Campaign
    workers_in_process : bool
        Whether every worker runs in this process.

    Raises
    ------
    RunError
        Naming the campaign file, the key and what a store must be: for a URL,
        credentials written into it, a missing bucket, refused credentials.
    """
    store = campaign.store_location
    if store.startswith("memory://") and not workers_in_process:
        raise RunError(
            f"{campaign.path}: [campaign] store = {store!r} lives in this process's memory: "
            "workers in other processes cannot see it; expected a folder or a URL that every "
            "worker reaches (memory:// serves an in-process cluster only)"
        )
    if "://" in store:
        problem = remote_store_problem(store)
        if problem is not None:
            raise RunError(f"{campaign.path}: [campaign] store = {store!r}: {problem}")


# ----------------------------------------------------------------- running


def _state(group: zarr.Group, plan: Plan) -> Status:
    """The least finished of the plan's outputs (a damaged one is redone like an incomplete)."""
    name = plan.stage.name
    if plan.table is not None:
        return table_status(plan.table, name, plan.parameters, plan.inputs)
    order = [Status.MISSING, Status.INCOMPLETE, Status.DAMAGED, Status.STALE, Status.CURRENT]
    states = [
        status(find_array(group, plan.sample.id, output), name, plan.parameters, plan.inputs)
        for output in plan.outputs
    ]
    return min(states, key=order.index)


def _submit(group: zarr.Group, plan: Plan, work: Work) -> tuple[list[PendingWrite], list[Any]]:
    """Create the outputs (provenance, no marker) and the tasks that write them.

    Returns the pending writes and the collections to compute: one write
    task per output, then the extras. They are computed as one list by
    ``Client.compute``, not wrapped in a single ``dask.delayed``: a delayed
    wrapper around a peer-to-peer rechunk loses the shuffle's barrier task
    (the scheduler cancels it for "lost dependencies").
    """
    pending = [
        prepare_write(
            group,
            plan.sample.id,
            output.name,
            output.data,
            voxel_size_um=plan.sample.voxel_um,
            stage=plan.stage.name,
            parameters=plan.parameters,
            inputs=plan.inputs,
            purpose=output.purpose,
            chunks=output.chunks,
            attrs=output.attrs,
            overwrite=True,
        )
        for output in work.outputs
    ]
    return pending, [p.task for p in pending] + list(work.extras.values())


def _number(value: Any) -> str:
    """A stage's extra for its summary line: counts in full, measurements to 4 digits."""
    return str(value) if isinstance(value, int | np.integer) else f"{value:.4g}"


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)


def _say(plan: Plan, echo: Echo, text: str) -> None:
    """One progress line: stage and sample in columns, then `text`."""
    echo(f"{plan.stage.name:<7} {plan.sample.id:<10} {text}")


def _decide(group: zarr.Group, plan: Plan, force: bool) -> str | None:
    """Why the plan's outputs must be (re)made, or None when they are current."""
    state = _state(group, plan)
    if state is Status.CURRENT and not force:
        return None
    if state is Status.DAMAGED and not force:
        return _damage(group, plan)
    return "forced" if force else state.value


def _damage(group: zarr.Group, plan: Plan, deep: bool = False) -> str:
    """``damaged: <array>: <what>`` for each of the plan's outputs whose chunks are damaged."""
    found = []
    for output in plan.outputs:
        array = find_array(group, plan.sample.id, output)
        problem = None if array is None else chunk_damage(array, deep=deep)
        if problem is not None:
            found.append(f"samples/{plan.sample.id}/{output}: {problem}")
    return "damaged: " + "; ".join(found)


def _skipped(plan: Plan, echo: Echo) -> Outcome:
    """Say that the plan's outputs are current, and record it."""
    _say(plan, echo, "skipped: current")
    return Outcome(plan.stage.name, plan.sample.id, "skipped", detail="current")


def _plan(stage: Stage, campaign: Campaign, sample: Sample, group: zarr.Group) -> Plan:
    """The stage's plan for a sample; bad input raises :class:`RunError`."""
    try:
        return stage.plan(stage, campaign, sample, group)
    except (StageError, ValueError) as error:
        raise RunError(str(error)) from error


def _build(plan: Plan, build: Callable[[], Work] | None = None) -> Work:
    """The plan's graph (or its next pass's, `build`); bad input raises
    :class:`RunError` naming the stage and sample."""
    try:
        return (build or plan.build)()
    except (IngestError, StoreError, ValueError, KeyError, OSError) as error:
        raise RunError(f"{plan.stage.name} of {plan.sample.where}: {_describe(error)}") from error


def _first_error(broken: Sequence[Any]) -> str:
    """What went wrong on the cluster: the first errored future's exception, named.

    A future that failed holds the worker's exception; the others were
    cancelled because of it (or by someone else), and say only that.
    """
    for future in broken:
        if future.status == "error":
            return _describe(future.exception())
    return f"task {broken[0].status} (no worker reported an error)"


def _execute(
    client: Client,
    group: zarr.Group,
    plan: Plan,
    work: Work,
    reason: str,
    echo: Echo,
    flight: _Flight | None = None,
) -> Outcome:
    """Create one stage's outputs, compute their writes on the cluster, mark them complete.

    A work with a next pass (:attr:`Work.then`) has it built and run once its
    own outputs are complete; the stage's extras and check are the last pass's.
    A pass's :attr:`Work.cleanup` runs once the pass is over, done or not.
    """
    flight = flight or _Flight()
    if work.table is not None:
        return _run_table(plan, work, reason, echo, flight)
    name, sample, detail = plan.stage.name, plan.sample.id, work.detail
    note = f"; {detail}" if detail else ""
    _say(plan, echo, f"running (output {reason}{note})")
    started = time.perf_counter()
    with flight.tracked(plan):
        why, extras = _pass(client, group, plan, work, flight)
        while why is None and work.then is not None:
            work = _build(plan, work.then)
            why, extras = _pass(client, group, plan, work, flight)
    seconds = time.perf_counter() - started
    if flight.stop.is_set():
        return Outcome(name, sample, "interrupted", seconds, "stopped; not marked complete")
    if why is not None:
        _say(plan, echo, f"FAILED after {seconds:.1f} s: {why}")
        return Outcome(name, sample, "failed", seconds, why)
    found = "".join(f"; {key} {_number(value)}" for key, value in extras.items())
    warning = work.check(extras) if work.check is not None else ""
    _say(plan, echo, f"done in {seconds:.1f} s{found}" + (f"; {warning}" if warning else ""))
    return Outcome(name, sample, "done", seconds, detail)


def _pass(
    client: Client, group: zarr.Group, plan: Plan, work: Work, flight: _Flight
) -> tuple[str | None, dict[str, Any]]:
    """:func:`_write_pass`, then the pass's :attr:`Work.cleanup`, whatever happened."""
    try:
        return _write_pass(client, group, plan, work, flight)
    finally:
        if work.cleanup is not None:
            work.cleanup()


def _write_pass(
    client: Client, group: zarr.Group, plan: Plan, work: Work, flight: _Flight
) -> tuple[str | None, dict[str, Any]]:
    """Compute one pass of a stage's writes and extras; mark its outputs complete.

    Returns
    -------
    why : str or None
        What went wrong on the cluster ("stopped" when the run was), None if nothing.
    extras : dict
        The computed extras (empty when something went wrong).
    """
    pending, collections = _submit(group, plan, work)
    futures = client.compute(collections, resources=stage_resources(client, plan.stage.gpu))
    flight.fly(futures)
    if flight.stop.is_set():  # stopped while this was being submitted
        client.cancel(futures)
    wait(futures)
    flight.land(futures)
    if flight.stop.is_set():
        client.cancel(futures)
        return "stopped", {}
    broken = [future for future in futures if future.status != "finished"]
    if broken:
        why = _first_error(broken)  # before cancelling: a cancelled future forgets its cause
        client.cancel(futures)
        return why, {}
    values = [np.asarray(f.result()).item() for f in futures[len(pending) :]]
    extras = dict(zip(work.extras, values, strict=True))
    for write in pending[:-1]:
        write.finish()
    pending[-1].finish(extras)
    return None, extras


def _run_table(plan: Plan, work: Work, reason: str, echo: Echo, flight: _Flight) -> Outcome:
    """A table stage of one sample: compute its rows on the cluster, write them with the digest."""
    table = plan.stage.table
    assert table is not None and plan.table is not None and work.table is not None
    name, sample = plan.stage.name, plan.sample.id
    _say(plan, echo, f"running (output {reason})")
    started = time.perf_counter()
    try:
        with flight.tracked(plan):
            rows = work.table()
        if flight.stop.is_set():
            return Outcome(name, sample, "interrupted", time.perf_counter() - started)
        stamp = digest(name, plan.parameters, plan.inputs)
        write_table(rows, plan.table, table.schema, metadata={DIGEST_KEY: stamp})
    except Exception as error:  # any failure of the sample's computation
        seconds = time.perf_counter() - started
        if flight.stop.is_set():  # cancelled by the interruption, not failed
            return Outcome(name, sample, "interrupted", seconds)
        why = str(error) or type(error).__name__
        _say(plan, echo, f"FAILED after {seconds:.1f} s: {why}")
        return Outcome(name, sample, "failed", seconds, why)
    seconds = time.perf_counter() - started
    if work.describe is not None:
        detail = work.describe(rows)
    else:
        valid = int((rows["n_rays"] > 0).sum()) if len(rows) else 0
        detail = f"{len(rows)} {table.what}, {valid} with a gap"
    _say(plan, echo, f"done in {seconds:.1f} s; {detail}")
    return Outcome(name, sample, "done", seconds, detail)


@dataclass
class _Chain:
    """The stages one sample needs in a run, in order (its 3D stages, or its SEM stage).

    ``first`` is the first stage with work, already built by :func:`_prepare`;
    the stages before it were current.
    """

    sample: Sample
    stages: list[Stage]
    skipped: list[Outcome] = field(default_factory=list)
    first: tuple[Plan, Work, str] | None = None


def _not_in_chain(stage: Stage, sample: Sample) -> str | None:
    """Why a stage is not part of a sample's chains, or None when it is.

    Examples
    --------
    >>> from pathlib import Path
    >>> sem_alone = Sample(
    ...     id="s1", index=0, cycles=1, voxel_size_um=None, txm=None, phases=None,
    ...     phase_codes=None, rotation_centre_px=None, sem=(Path("s1.tif"),),
    ...     sem_patterns=("s1.tif",), sem_pixel_size_um=0.02,
    ... )
    >>> [_not_in_chain(REGISTRY.get(name), sem_alone) for name in ("recon", "sem")]
    ['SEM images alone: no txm or phases', None]
    """
    if stage.chain == "sem":
        return None if sample.sem else "no SEM images (sem)"
    if not sample.has_volume:
        return "SEM images alone: no txm or phases"
    if stage.raw and sample.txm is None:
        return "its own segmentation (phases) starts at segment"
    return None


def _chains(campaign: Campaign, names: Sequence[str]) -> list[_Chain]:
    """Every sample's chains of the chosen stages: one per chain kind ("3d", "sem")."""
    chains = []
    chosen = [stage for stage in campaign.registry if stage.name in names]
    for sample in campaign.samples:
        for kind in ("3d", "sem"):
            stages = [
                stage
                for stage in chosen
                if stage.chain == kind and _not_in_chain(stage, sample) is None
            ]
            if stages:
                chains.append(_Chain(sample, stages))
    return chains


def _absent(campaign: Campaign, names: Sequence[str]) -> list[str]:
    """One line per sample and reason: the chosen stages that are not part of its chains."""
    lines = []
    for sample in campaign.samples:
        absent: dict[str, list[str]] = {}
        for stage in campaign.registry:
            why = _not_in_chain(stage, sample) if stage.name in names else None
            if why is not None:
                absent.setdefault(why, []).append(stage.name)
        lines += [
            f"{sample.id}: {', '.join(stages)} not part of its chain ({why})"
            for why, stages in absent.items()
        ]
    return lines


def _prepare(
    campaign: Campaign, group: zarr.Group, chains: list[_Chain], force: bool, echo: Echo
) -> None:
    """Skip each chain's current stages and build its first stage with work.

    Every chain is prepared before anything is created in the store, so bad
    input (a broken raw file, a missing upstream output) stops the whole run
    before it starts.

    Raises
    ------
    RunError
        Bad input, for every chain that has some.
    """
    problems: list[str] = []
    for chain in chains:
        try:
            for stage in chain.stages:
                plan = _plan(stage, campaign, chain.sample, group)
                reason = _decide(group, plan, force)
                if reason is None:
                    chain.skipped.append(_skipped(plan, echo))
                    continue
                chain.first = (plan, _build(plan), reason)
                break
        except RunError as error:
            problems.append(str(error))
    if problems:
        skipped = [outcome for chain in chains for outcome in chain.skipped]
        raise RunError("bad input; nothing was run:\n  " + "\n  ".join(problems), skipped)


def _run_chain(
    campaign: Campaign,
    client: Client,
    group: zarr.Group,
    chain: _Chain,
    force: bool,
    echo: Echo,
    flight: _Flight,
) -> list[Outcome]:
    """Run a prepared chain's stages one after the other; a failure blocks the rest."""
    outcomes = list(chain.skipped)
    if chain.first is None:
        return outcomes
    failed = False
    for stage in chain.stages[len(chain.skipped) :]:
        if flight.stop.is_set():
            break
        if failed:
            outcomes.append(
                Outcome(stage.name, chain.sample.id, "blocked", detail="an earlier stage failed")
            )
            continue
        try:
            if stage is chain.first[0].stage:
                plan, work, why = chain.first
            else:
                plan = _plan(stage, campaign, chain.sample, group)
                reason = _decide(group, plan, force)
                if reason is None:
                    outcomes.append(_skipped(plan, echo))
                    continue
                work, why = _build(plan), reason
            outcome = _execute(client, group, plan, work, why, echo, flight)
        except Exception as error:  # bad input found late, or the store refused a write
            detail = str(error) if isinstance(error, RunError) else _describe(error)
            if flight.stop.is_set():
                break
            echo(f"{stage.name:<7} {chain.sample.id:<10} FAILED: {detail}")
            outcome = Outcome(stage.name, chain.sample.id, "failed", detail=detail)
        outcomes.append(flight.record(outcome))
        failed = outcome.state == "failed"
    return outcomes


def _stopped(outcomes: Sequence[Outcome]) -> str:
    """One line on an interrupted run: what finished, and how to go on."""
    count = {state: sum(o.state == state for o in outcomes) for state in ("done", "skipped")}
    return (
        f"interrupted: {count['done']} stage(s) done and {count['skipped']} current before the "
        "stop are kept; what was running is not marked complete. Run the same command again "
        "to resume"
    )


@contextlib.contextmanager
def _holding_the_store(campaign: Campaign, client: Client, echo: Echo) -> Iterator[None]:
    """The campaign checked and its store locked for the whole run.

    The campaign's inputs and store are checked (nothing is written for bad
    ones), the store is created, and its lock taken
    (:func:`debond.storage.lock.store_lock`) before the run starts: a second
    run on the same store stops with :class:`RunError` naming the first one's
    PID, host and start, instead of replacing its arrays while it writes
    them. Tables of an earlier layout are then moved to the campaign's own
    folder where they can only be its (:meth:`Campaign.adopt_earlier_tables`).
    """
    campaign.check_inputs()
    campaign.check_store()
    check_store_reachable(campaign, workers_in_process=workers_in_process(client))
    location = campaign.store_location
    open_store(location, mode="a")  # the lock file lies in its folder
    try:
        with store_lock(location, echo) as path:
            if path is None:
                echo(
                    f"store {location} is not a local folder: no lock is taken, so "
                    "nothing stops a second run on it (start one run at a time)"
                )
            adopted = campaign.adopt_earlier_tables()
            if adopted is not None:
                echo(adopted)
            yield
    except StoreInUse as error:
        raise RunError(str(error)) from None


#: Dask warns of a graph larger than 10 MB ("Sending large graph", advising
#: to load the data with Dask). A stage's graph grows with its blocks, not
#: with data in it: a 2.2 GB volume in blocks sized to workers of 1 GiB makes
#: 12 MiB. The runner warns from this size instead.
LARGE_GRAPH_KEY = "distributed.admin.large-graph-warning-threshold"
LARGE_GRAPH_BYTES = "256 MiB"


#: This process, told from any other (a PID can repeat across hosts and containers).
_PROCESS = uuid.uuid4().hex


def _held_memory(client_process: str, dask_worker: Any) -> tuple[float, float]:
    """On a worker: the bytes it holds with the stages' libraries loaded, and its pause.

    Loads :mod:`debond.stages` (which the first task would load anyway) and
    reads the process memory as Dask's own memory monitor does; 0 for a
    worker in the client's process (``client_process``), whose memory is the
    client's. The pause threshold is the worker's
    ``distributed.worker.memory.pause`` (a share of its limit;
    :data:`debond.memory.DASK_PAUSE` where it is off).
    """
    import debond.stages  # noqa: F401  (what every task of a run loads)

    pause = dask.config.get("distributed.worker.memory.pause", DASK_PAUSE) or DASK_PAUSE
    held = 0.0 if client_process == _PROCESS else float(dask_worker.monitor.get_process_memory())
    return held, float(pause)


def task_memory(client: Client) -> int | None:
    """Bytes one task may use on this cluster: the tightest worker's budget.

    Reads every worker's ``memory_limit`` and thread count from
    ``client.scheduler_info()``, and what each worker process holds with the
    stages' libraries loaded (:func:`debond.memory.task_budget`); a worker in
    this process shares its memory with the client, and is given its share of
    the limit alone. None when no worker has a limit (or there are no workers
    yet).

    Raises
    ------
    RunError
        A worker whose limit leaves too little room for a task (naming it,
        what it holds and a limit that would do).
    """
    workers = client.scheduler_info(n_workers=-1)["workers"]
    limited = [address for address, worker in workers.items() if worker.get("memory_limit")]
    if not limited:
        return None
    held = client.run(_held_memory, _PROCESS, workers=limited)
    budgets = []
    for address in limited:
        worker = workers[address]
        rss, pause = held[address]
        try:
            budget = task_budget(
                worker["memory_limit"], max(1, int(worker.get("nthreads", 1))), rss, pause
            )
        except ValueError as error:
            raise RunError(f"worker {address}: {error}") from error
        if budget is not None:
            budgets.append(budget)
    return min(budgets) if budgets else None


@contextlib.contextmanager
def sized_tasks(client: Client) -> Iterator[int]:
    """Stages size their blocks to the cluster's workers while this is open.

    Sets :data:`debond.memory.TASK_MEMORY_KEY` to :func:`task_memory`, unless
    it is set already (the user's value is kept) or no worker has a limit.
    Yields the bytes a task may use.
    """
    if dask.config.get(TASK_MEMORY_KEY, None) is not None:
        yield task_bytes()
        return
    budget = task_memory(client)
    if budget is None:
        yield task_bytes()
        return
    with dask.config.set({TASK_MEMORY_KEY: budget}):
        yield budget


def run_campaign(
    campaign: Campaign,
    client: Client,
    *,
    stages: Sequence[str] | None = None,
    force: bool = False,
    echo: Echo = print,
    display: Display | None = None,
    command: str | None = None,
) -> list[Outcome]:
    """Run stages for every sample of a campaign on a Dask cluster, resumably.

    Each sample's 3D stages run in order, and its SEM stage beside them; all
    samples run at once on the cluster (at most :data:`CHAINS_IN_FLIGHT`
    chains of stages at a time), so a sample reconstructs while another is
    measured. The run waits for every sample only at the end, to gather the
    particle table.

    Parameters
    ----------
    campaign : Campaign
        From :func:`debond.campaign.load_campaign`; its registry says which
        stages there are.
    client : distributed.Client
        Where the graphs run (see :func:`debond.cluster.cluster`).
    stages : sequence of str, optional
        Stages to run (:func:`parse_stages`); default every stage.
    force : bool
        Recompute outputs even when they are current.
    echo : callable
        Receives one line per stage and sample (progress); called from the
        threads that run the samples, one line at a time. With a
        :class:`~debond.progress.BarDisplay`, pass its ``echo``, so that the
        lines print above the bars.
    display : Display, optional
        Shown the tasks done out of the total of each running stage of a
        sample, twice a second (:mod:`debond.progress`: bars in a terminal,
        a line every 10 % elsewhere). Default: no progress beyond ``echo``'s
        lines.
    command : str, optional
        What started the run, for its log (default: this process's command
        line).

    Returns
    -------
    list of Outcome
        One per stage and sample, in stage order, then sample order.

    Raises
    ------
    CampaignError
        Missing raw inputs, or a store that is something else
        (:meth:`debond.campaign.Campaign.check_store`); nothing is written.
    RunError
        A store the workers cannot see (:func:`check_store_reachable`), a
        store another run holds (its lock file names that run's PID, host and
        start; nothing is written), bad input found while preparing the run
        (nothing is run or created), or stages that failed for some samples
        (the other outputs are complete; the message lists the failures).
    Interrupted
        On Ctrl-C (KeyboardInterrupt): every sample's work on the cluster is
        cancelled, nothing running is marked complete, and the message says
        what finished.

    Notes
    -----
    Every run that takes the store's lock appends a section to the
    campaign's log, ``<campaign>.log`` beside the campaign file
    (:mod:`debond.runlog`): the command, the cluster and its workers, then,
    however the run ends, each stage of each sample with its wall time, its
    tasks and the peak worker memory while it ran.
    """
    with (
        _holding_the_store(campaign, client, echo),
        sized_tasks(client),
        dask.config.set({LARGE_GRAPH_KEY: LARGE_GRAPH_BYTES}),
    ):
        chosen = parse_stages(None if stages is None else list(stages), campaign.registry)
        with (
            Tracker(client, display) as tracker,
            _logged(campaign, client, chosen, command, tracker) as outcomes,
        ):
            if tracker.problem is not None:
                echo(f"progress: {tracker.problem}")
            outcomes += _run_chosen(campaign, client, chosen, force, echo, tracker)
        return outcomes


@contextlib.contextmanager
def _logged(
    campaign: Campaign,
    client: Client,
    chosen: Sequence[str],
    command: str | None,
    tracker: Tracker,
) -> Iterator[list[Outcome]]:
    """The run's section of the campaign's log: its header now, what happened at the end.

    Yields the list the run fills with its outcomes; a :class:`RunError`
    (failures, an interruption) brings its own. However the run ends, the
    log gets each stage of each sample, and the ending.
    """
    log = log_path(campaign.path)
    header = run_header(
        when=dt.datetime.now(dt.UTC),
        command=command or describe_command(sys.argv),
        campaign=campaign,
        stages=chosen,
        cluster=cluster_lines(client),
    )
    append(log, header)
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    ending = "finished"
    try:
        yield outcomes
    except RunError as error:
        outcomes[:] = error.outcomes
        ending = str(error).splitlines()[0]
        raise
    except BaseException as error:
        ending = f"stopped by {type(error).__name__}: {error}"
        raise
    finally:
        order = {sample.id: i for i, sample in enumerate(campaign.samples)}
        names = campaign.registry.names
        listed = sorted(outcomes, key=lambda o: (names.index(o.stage), order[o.sample]))
        summary = run_summary(
            listed,
            tracker.seen(),
            ending=ending,
            seconds=time.perf_counter() - started,
            peak_bytes=tracker.peak_bytes,
        )
        append(log, (f"{tracker.problem}\n" if tracker.problem else "") + summary)


def _run_chosen(
    campaign: Campaign,
    client: Client,
    chosen: Sequence[str],
    force: bool,
    echo: Echo,
    tracker: Tracker | None,
) -> list[Outcome]:
    """:func:`run_campaign` once the store is held: every chain, then the particle table."""
    registry = campaign.registry
    # The embedded scheduler logs every peer-to-peer rechunk at WARNING level.
    logging.getLogger("distributed.shuffle._scheduler_plugin").setLevel(logging.ERROR)
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            echo(line)

    group = open_store(campaign.store_location, mode="a")
    for sample in campaign.samples:
        known = {"cycles": sample.cycles, "voxel_size_um": sample.voxel_size_um}
        set_sample_attrs(group, sample.id, {k: v for k, v in known.items() if v is not None})
    for line in _absent(campaign, chosen):
        say(line)
    chains = _chains(campaign, chosen)
    _prepare(campaign, group, chains, force, say)
    outcomes: list[Outcome] = []
    flight = _Flight(outcomes=[o for chain in chains for o in chain.skipped], tracker=tracker)
    pool = ThreadPoolExecutor(CHAINS_IN_FLIGHT, thread_name_prefix="debond-sample")
    try:
        running = [
            pool.submit(_run_chain, campaign, client, group, chain, force, say, flight)
            for chain in chains
        ]
        for future in running:
            outcomes.extend(future.result())
    except KeyboardInterrupt:
        flight.recall(client)
        wait_threads(running, timeout=INTERRUPT_GRACE_S)
        raise Interrupted(_stopped(flight.outcomes), flight.outcomes) from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    order = {sample.id: i for i, sample in enumerate(campaign.samples)}
    outcomes.sort(key=lambda o: (registry.names.index(o.stage), order[o.sample]))
    if any(registry.get(name).table is not None for name in chosen):
        _gather(campaign, group, outcomes, echo)
    failed = [o for o in outcomes if o.state == "failed"]
    if failed:
        lines = [f"{o.stage} of {o.sample}: {o.detail}" for o in failed]
        raise RunError(
            f"{len(lines)} stage(s) failed; every other output is complete:\n  "
            + "\n  ".join(lines),
            outcomes,
        )
    return outcomes


def preview_run(
    campaign: Campaign,
    *,
    stages: Sequence[str] | None = None,
    force: bool = False,
) -> list[Outcome]:
    """What :func:`run_campaign` would do, decided as it decides, without doing any of it.

    Nothing is created, built or computed: the store is opened read-only (a
    store that does not exist yet is read as empty), and each stage is
    planned and its outputs' status read, as :func:`run_campaign` does
    (``debond run --dry-run``). A stage after one that runs is judged with
    the identity its inputs will have once that one has run with its
    current parameters: a stage redone as it was (an interrupted run's)
    leaves the stages after it current, a changed one makes them stale.

    Parameters
    ----------
    campaign : Campaign
        From :func:`debond.campaign.load_campaign`.
    stages : sequence of str, optional
        Stages to consider (:func:`parse_stages`); default every stage.
    force : bool
        As for :func:`run_campaign`: every stage runs.

    Returns
    -------
    list of Outcome
        One per chosen stage of each sample, sample by sample, stages in
        run order. ``state`` is ``"skipped"`` (detail ``"current"``, or
        ``"current after <stage>"`` when an earlier stage that runs first
        remakes its inputs as they were), ``"run"`` (detail ``"missing"``,
        ``"incomplete"``, ``"stale"`` with what changed, ``"forced"``, or
        ``"after <stage>"`` when its inputs do not exist before that stage
        has run), ``"failed"`` (bad input found while planning, e.g. an
        upstream output not in the store; the detail says which) or
        ``"blocked"`` (detail ``"after <stage>"``, the stage that failed), or
        ``"absent"``: a chosen stage that is not part of the sample's chains
        (the detail says why, as the run does).

    Raises
    ------
    CampaignError
        A store that is something else (:meth:`Campaign.check_store`).
    """
    from collections.abc import Mapping
    from dataclasses import replace

    from debond.storage import IncompleteArray, StoreNotFound, changes

    chosen = parse_stages(None if stages is None else list(stages), campaign.registry)
    campaign.check_store()
    try:
        group = open_store(campaign.store_location, mode="r")
    except StoreNotFound:  # nothing written yet: every output is missing
        group = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=3)
    outcomes: list[Outcome] = []
    for chain in _chains(campaign, chosen):
        sample = chain.sample.id
        remade: dict[str, dict[str, Any]] = {}  # array path → its identity once remade
        runs: str | None = None  # the chain's first stage that runs
        failed: str | None = None  # the chain's stage that cannot run
        for stage in chain.stages:
            if failed is not None:
                outcomes.append(Outcome(stage.name, sample, "blocked", detail=f"after {failed}"))
                continue
            try:
                plan = _plan(stage, campaign, chain.sample, group)
                inputs = {
                    name: remade.get(value.path, value) if isinstance(value, zarr.Array) else value
                    for name, value in plan.inputs.items()
                }
                plan = replace(plan, inputs=inputs)
                reason = _decide(group, plan, force)
                stamp = digest(stage.name, plan.parameters, inputs)
            except (RunError, FileNotFoundError, IncompleteArray) as error:
                if runs is None:
                    failed = stage.name
                    outcomes.append(Outcome(stage.name, sample, "failed", detail=str(error)))
                else:  # its inputs are made by the stage that runs first
                    outcomes.append(Outcome(stage.name, sample, "run", detail=f"after {runs}"))
                continue
            affected = runs is not None and any(isinstance(v, Mapping) for v in inputs.values())
            if reason is None:
                detail = f"current after {runs}" if affected else "current"
                outcomes.append(Outcome(stage.name, sample, "skipped", detail=detail))
                continue
            if reason == Status.STALE.value and plan.table is None:
                array = find_array(group, sample, plan.outputs[-1])
                changed = (
                    [] if array is None else changes(array, stage.name, plan.parameters, inputs)
                )
                reason += f" ({'; '.join(changed)})" if changed else ""
            for output in plan.outputs:
                array = find_array(group, sample, output)
                if array is not None:
                    remade[array.path] = {"kind": "array", "path": array.path, "digest": stamp}
                    if chunk_damage(array) is not None:  # rewritten as repaired: see array_identity
                        remade[array.path][REPAIRED_KEY] = "by this run"
            runs = runs or stage.name
            outcomes.append(Outcome(stage.name, sample, "run", detail=reason))
    for declared in campaign.samples:
        for stage in campaign.registry:
            why = _not_in_chain(stage, declared) if stage.name in chosen else None
            if why is not None:
                outcomes.append(Outcome(stage.name, declared.id, "absent", detail=why))
    order = {sample.id: i for i, sample in enumerate(campaign.samples)}
    outcomes.sort(key=lambda o: (order[o.sample], campaign.registry.names.index(o.stage)))
    return outcomes


# ----------------------------------------------------------------- the particle table


def _table_is_current(
    campaign: Campaign, group: zarr.Group, stage: Stage, sample: Sample, outcomes: list[Outcome]
) -> bool:
    """Whether a table stage's rows of a sample are current after this run.

    Done or skipped in this run: yes; failed or blocked: no; not in this run
    (``--only``): whatever its digest says now.
    """
    for outcome in outcomes:
        if outcome.stage == stage.name and outcome.sample == sample.id:
            return outcome.state in ("done", "skipped")
    try:
        return _state(group, _plan(stage, campaign, sample, group)) is Status.CURRENT
    except (RunError, StoreError, OSError):  # its inputs are missing or broken
        return False


def _gather(campaign: Campaign, group: zarr.Group, outcomes: list[Outcome], echo: Echo) -> None:
    """Gather the current rows of every sample into the particle table; say what was left out."""
    current: dict[str, list[str]] = {}
    left_out = []
    for stage in campaign.registry:
        if stage.table is None:
            continue
        current[stage.name] = []
        for sample in campaign.samples:
            if not stage.table.path(campaign.tables_dir, sample).is_file():
                continue
            if _table_is_current(campaign, group, stage, sample, outcomes):
                current[stage.name].append(sample.id)
            else:
                left_out.append(f"{stage.name} of {sample.id}")
    try:
        gathered = particle_table(campaign, current)
    except CampaignError as error:  # the samples' own tables are kept
        echo(f"particle table not gathered: {error}")
        return
    note = f" (left out, not current: {', '.join(left_out)})" if left_out else ""
    if gathered is not None:
        echo(f"particle table: {gathered}{note}")
    elif left_out:
        echo(f"particle table: none, no current rows{note}")


# ----------------------------------------------------------------- locking


def check_store_free(campaign: Campaign) -> None:
    """Refuse a store that another run holds now (nothing is written).

    Raises
    ------
    RunError
        Naming the store, the PID, host and start of the run that holds it,
        and its lock file.
    """
    try:
        check_free(campaign.store_location)
    except StoreInUse as error:
        raise RunError(str(error)) from None


# ----------------------------------------------------------------- status


@dataclass(frozen=True)
class StageStatus:
    """Where one stage of one sample stands, for ``debond status``.

    Attributes
    ----------
    stage, sample : str
    state : Status
        The least finished of its outputs (:func:`debond.storage.status`).
    detail : str
        What is damaged, or why it cannot be planned yet.
    """

    stage: str
    sample: str
    state: Status
    detail: str = ""


def _verified(group: zarr.Group, plan: Plan) -> str | None:
    """Decode every chunk of a current plan's arrays; record the damage of those that fail.

    An array whose chunk does not decode is not complete: with the damage in
    its marker (:func:`debond.storage.mark_damaged`), the next run redoes it,
    and what was made from it.
    """
    found = []
    for output in plan.outputs:
        array = find_array(group, plan.sample.id, output)
        problem = None if array is None else chunk_damage(array, deep=True)
        if array is not None and problem is not None:
            mark_damaged(array, problem)
            found.append(f"samples/{plan.sample.id}/{output}: {problem}")
    if not found:
        return None
    return "; ".join(found) + " (recorded in its completion marker: `debond run` redoes it)"


def _stage_status(
    campaign: Campaign, group: zarr.Group, stage: Stage, sample: Sample, verify: bool
) -> StageStatus:
    """The state of one stage of one sample, its damage named, deep-checked if asked."""
    try:
        plan = _plan(stage, campaign, sample, group)
        state = _state(group, plan)
    except (RunError, OSError) as error:  # an input it needs is not there yet
        exists = any(find_array(group, sample.id, name) is not None for name in stage.writes)
        return StageStatus(
            stage.name, sample.id, Status.STALE if exists else Status.MISSING, str(error)
        )
    if state is Status.DAMAGED:
        detail = _damage(group, plan, deep=verify).removeprefix("damaged: ")
        return StageStatus(stage.name, sample.id, state, detail)
    if state is Status.CURRENT and verify:
        bad = _verified(group, plan)
        if bad is not None:
            return StageStatus(stage.name, sample.id, Status.DAMAGED, bad)
    return StageStatus(stage.name, sample.id, state)


def campaign_status(
    campaign: Campaign, *, verify: bool = False, echo: Echo = print
) -> list[StageStatus]:
    """Every stage of every sample: missing, incomplete, damaged, stale or current.

    Parameters
    ----------
    campaign : Campaign
    verify : bool
        Also read and decode every chunk of the arrays a run would keep
        (:func:`debond.storage.chunk_damage` with ``deep=True``): as expensive
        as reading them all. An array with a chunk that does not decode loses
        its completion marker, so that the next run redoes it; the store's
        lock is held meanwhile. Default: list the chunks only (cheap).
    echo : callable
        Told when ``verify`` takes over a stale lock.

    Returns
    -------
    list of StageStatus
        In stage order, then sample order.

    Raises
    ------
    RunError
        With ``verify``, a store that another run holds.
    """
    location = campaign.store_location
    try:
        group = open_store(location, mode="r+" if verify else "r")
    except StoreNotFound:
        chains = _chains(campaign, campaign.registry.names)
        return [
            StageStatus(stage.name, chain.sample.id, Status.MISSING, "no store yet")
            for chain in chains
            for stage in chain.stages
        ]
    try:
        with store_lock(location, echo) if verify else contextlib.nullcontext():
            found = [
                _stage_status(campaign, group, stage, chain.sample, verify)
                for chain in _chains(campaign, campaign.registry.names)
                for stage in chain.stages
            ]
    except StoreInUse as error:
        raise RunError(str(error)) from None
    order = {sample.id: i for i, sample in enumerate(campaign.samples)}
    names = campaign.registry.names
    return sorted(found, key=lambda s: (names.index(s.stage), order[s.sample]))
