"""Stages that use a GPU ask for the GPU resource where workers advertise one.

Real `dask scheduler` and `dask worker` processes on 127.0.0.1, one worker
started with ``--resources GPU=1`` (no GPU needed: the scheduler places tasks
by the resources workers advertise). The recon stage's reconstruction and
writes must run on that worker; ingest and prep anywhere. On a cluster
without the resource the same campaign runs unchanged.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dask.utils import key_split
from distributed import Client, get_task_stream

from debond.campaign import load_campaign
from debond.cluster import GPU_RESOURCE, cluster, stage_resources
from debond.runner import run_campaign
from debond.stages import REGISTRY
from tests.conftest import STARTUP_S
from tests.deploy.runs import cut_campaign
from tests.processes import Processes, scheduler_address, wait_for_workers

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture
def mixed_scheduler(tmp_path: Path) -> Iterator[str]:
    """A scheduler, a CPU worker and a worker advertising GPU=1, all ready; yields the address."""
    dask_cli = str(Path(sys.executable).with_name("dask"))
    info = tmp_path / "scheduler.json"
    processes = Processes(tmp_path)
    deadline = time.monotonic() + STARTUP_S
    common = ["--host", "127.0.0.1", "--no-dashboard", "--nthreads", "1"]
    try:
        options = ["--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
        processes.start(
            "scheduler", [dask_cli, "scheduler", *options, "--scheduler-file", str(info)]
        )
        address = scheduler_address(info, processes, deadline)
        processes.start("cpu worker", [dask_cli, "worker", address, *common, "--name", "cpu"])
        processes.start(
            "gpu worker",
            [dask_cli, "worker", address, *common, "--name", "gpu", "--resources", "GPU=1"],
        )
        wait_for_workers(address, processes, 2, deadline)
        yield address
    finally:
        processes.stop()


def _workers_by_name(client: Client) -> dict[str, str]:
    """Worker address → name (``cpu`` or ``gpu``)."""
    return {a: w["name"] for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}


def test_recon_runs_on_the_gpu_worker_only(
    small_campaign: Path, mixed_scheduler: str, tmp_path: Path
) -> None:
    assert [stage.name for stage in REGISTRY if stage.gpu] == ["recon"]
    campaign = load_campaign(cut_campaign(small_campaign, tmp_path / "c"))
    with cluster(mixed_scheduler) as client:
        names = _workers_by_name(client)
        assert stage_resources(client, gpu=True) == {GPU_RESOURCE: 1}
        assert stage_resources(client, gpu=False) is None
        with get_task_stream(client) as before:
            run_campaign(campaign, client, stages=["ingest", "prep"], echo=lambda line: None)
        with get_task_stream(client) as recon:
            outcomes = run_campaign(campaign, client, stages=["recon"], echo=lambda line: None)
    assert {o.state for o in outcomes} == {"done"}
    ran = {(key_split(task["key"]), names[task["worker"]]) for task in recon.data}
    # The reconstruction (ASTRA) and the writes of its output: on the GPU worker only.
    # Rows read to find the rotation centre (computed while the stage is planned)
    # and the peer-to-peer rechunk's own tasks (shuffle-*, placed by distributed's
    # shuffle extension) may run on any worker: they use no GPU.
    kernel = {worker for prefix, worker in ran if "reconstruct" in prefix or "store" in prefix}
    assert ("reconstruct", "gpu") in ran and kernel == {"gpu"}, sorted(ran)
    # the CPU stages use both workers
    assert {names[task["worker"]] for task in before.data} == {"cpu", "gpu"}


def test_the_same_campaign_runs_on_a_cpu_only_cluster(
    small_campaign: Path, scheduler: str, tmp_path: Path
) -> None:
    campaign = load_campaign(cut_campaign(small_campaign, tmp_path / "c"))
    with cluster(scheduler) as client:
        assert stage_resources(client, gpu=True) is None
        with get_task_stream(client) as recon:
            stages = ["ingest", "prep", "recon"]
            outcomes = run_campaign(campaign, client, stages=stages, echo=lambda line: None)
        workers = set(client.scheduler_info()["workers"])
    assert {o.state for o in outcomes} == {"done"}
    assert {task["worker"] for task in recon.data} == workers  # recon anywhere, like the rest
