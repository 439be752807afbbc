"""The manifests' own commands run a campaign: the scheduler, CPU and GPU worker and
runner containers of a DaskJob, started as local processes on 127.0.0.1 with the
environment the Dask operator injects, give the particle table of the embedded cluster.

Only what ties a pod to its node changes: the listening addresses (127.0.0.1, free
ports) and the claim's mount path, which becomes the local shared folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from debond.cli import app
from debond.kubernetes import SCHEDULER_PORT, expand_variables
from tests.conftest import STARTUP_S
from tests.deploy.operator_references import K8S, build
from tests.helpers import one_sample_campaign
from tests.processes import Processes, scheduler_address, wait_for_workers

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

runner = CliRunner()
#: The local command of an executable named in a manifest (the image has them on PATH).
BIN = Path(sys.executable).parent
#: Seconds the runner may take for the one-sample campaign on a loaded 2-core machine.
RUN_S = 600


def particles(campaign: Path) -> pd.DataFrame:
    table = pd.read_parquet(campaign.parent / "tables" / campaign.stem / "particles.parquet")
    return table.sort_values(list(table.columns)).reset_index(drop=True)


@pytest.fixture(scope="module")
def embedded(small_campaign: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The particle table of the one-sample campaign on the embedded cluster."""
    path = one_sample_campaign(small_campaign, tmp_path_factory.mktemp("embedded") / "campaign")
    result = runner.invoke(app, ["run", str(path), "--workers", "2"])
    assert result.exit_code == 0, result.output
    return particles(path)


def containers(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The containers of a DaskJob and its worker groups: runner, scheduler, workers."""
    (job,) = [d for d in docs if d["kind"] == "DaskJob"]
    cluster = job["spec"]["cluster"]["spec"]
    groups = [cluster["worker"]] + [
        d["spec"]["worker"] for d in docs if d["kind"] == "DaskWorkerGroup"
    ]
    return {
        "runner": job["spec"]["job"]["spec"]["containers"],
        "scheduler": cluster["scheduler"]["spec"]["containers"],
        "workers": [
            c for g in groups for _ in range(g["replicas"]) for c in g["spec"]["containers"]
        ],
    }


def command(container: dict[str, Any], env: dict[str, str], mount: str, local: Path) -> list[str]:
    """A container's command line as the kubelet runs it, on this machine."""
    args = expand_variables([*container.get("command", []), *container.get("args", [])], env)
    args = [str(local) + arg[len(mount) :] if arg.startswith(mount) else arg for arg in args]
    return [str(BIN / args[0]), *args[1:]]


def environment(container: dict[str, Any], injected: dict[str, str]) -> dict[str, str]:
    """A container's variables: its values, its optional Secret keys left out (no Secret
    here, as in a cluster without one), and what the operator injects."""
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            assert item["valueFrom"]["secretKeyRef"].get("optional"), item
    return env | injected


def with_env(env: dict[str, str], args: list[str]) -> list[str]:
    return ["env", *(f"{k}={v}" for k, v in env.items()), *args]


@pytest.fixture
def shared(small_campaign: Path, tmp_path: Path) -> Path:
    """The folder the claim holds: the one-sample campaign at its root."""
    return one_sample_campaign(small_campaign, tmp_path / "claim")


def submitted(shared: Path) -> list[dict[str, Any]]:
    result = runner.invoke(
        app,
        ["submit", "k8s", str(shared), "--workers", "1", "--gpu-workers", "1", "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    return [d for d in yaml.safe_load_all(result.output) if d]


@pytest.fixture(params=["debond submit k8s", "deploy/k8s/overlays/gpu"])
def manifests(request: pytest.FixtureRequest, shared: Path) -> Iterator[list[dict[str, Any]]]:
    if request.param == "debond submit k8s":
        yield submitted(shared)
    else:
        yield build(K8S / "overlays" / "gpu")


def test_the_manifests_commands_run_the_campaign(
    manifests: list[dict[str, Any]], shared: Path, tmp_path: Path, embedded: pd.DataFrame
) -> None:
    folder = shared.parent  # what the claim holds, mounted at `mount` in every pod
    found = containers(manifests)
    (runner_container,) = found["runner"]
    (mount,) = [m["mountPath"] for m in runner_container["volumeMounts"]]
    (scheduler_container,) = found["scheduler"]
    assert len(found["workers"]) in (2, 3)  # 1 or 2 CPU workers, 1 GPU worker
    assert any("GPU=1" in c["args"] for c in found["workers"])

    processes = Processes(tmp_path)
    info = tmp_path / "scheduler.json"
    deadline = time.monotonic() + STARTUP_S
    try:
        scheduler = command(
            scheduler_container, environment(scheduler_container, {}), mount, folder
        )
        assert scheduler[1:3] == ["scheduler", "--port"] and str(SCHEDULER_PORT) in scheduler
        processes.start(
            "scheduler",
            [
                *scheduler,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(info),
            ],
        )
        address = scheduler_address(info, processes, deadline)
        for i, container in enumerate(found["workers"]):
            injected = {"DASK_SCHEDULER_ADDRESS": address, "DASK_WORKER_NAME": f"debond-w{i}"}
            env = environment(container, injected)
            args = command(container, env, mount, folder)
            assert f"debond-w{i}" in args  # --name $(DASK_WORKER_NAME), expanded
            processes.start(
                f"worker {i}",
                with_env(env, [*args, "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]),
            )
        wait_for_workers(address, processes, len(found["workers"]), deadline)

        env = environment(runner_container, {"DASK_SCHEDULER_ADDRESS": address})
        args = command(runner_container, env, mount, folder)
        assert args[1:] == ["run", str(shared)]  # the campaign file, on the claim
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=RUN_S,
            env=os.environ | env,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"cluster: {address}, {len(found['workers'])} workers" in done.stdout
    finally:
        processes.stop()
    pd.testing.assert_frame_equal(particles(shared), embedded)
