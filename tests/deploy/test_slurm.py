"""`debond run --cluster slurm`: dask-jobqueue's SLURMCluster from deploy/hpc's configuration.

The job scripts are checked as dask-jobqueue writes them; a whole campaign
then runs through the jobqueue code with stand-in ``sbatch``/``scancel``/
``squeue`` scripts on PATH: ``sbatch`` starts the job script as a background
process group on this machine and prints its id, ``scancel`` ends that group.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
import yaml
from dask_jobqueue import SLURMCluster
from typer.testing import CliRunner

from debond.cli import app
from debond.cluster import tls_security
from debond.slurm import SlurmError, check_slurm_config, load_slurm_config, slurm_config
from tests.deploy.runs import cut_campaign, embedded_table, particles
from tests.deploy.test_tls import make_certificates

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "hpc"

#: The stand-ins, each a bash script; $JOBS is the folder of the jobs' pid files and logs.
STAND_INS = {
    "sbatch": """#!/usr/bin/env bash
# sbatch SCRIPT: run a copy of SCRIPT here (dask-jobqueue deletes it once sbatch
# returns), in its own process group, and print its job id
cp "$1" "$JOBS/job-$$.sh"
setsid bash "$JOBS/job-$$.sh" > "$JOBS/job-$$.log" 2>&1 < /dev/null &
echo "$!" > "$JOBS/job-$!.id"
echo "Submitted batch job $!"
""",
    "scancel": """#!/usr/bin/env bash
# scancel JOBID...: end each job's process group
for job in "$@"; do kill -TERM -- "-$job" 2> /dev/null; rm -f "$JOBS/job-$job.id"; done
exit 0
""",
    "squeue": """#!/usr/bin/env bash
# squeue: the jobs still running, one id a line
echo JOBID
for file in "$JOBS"/job-*.id; do [ -e "$file" ] && cat "$file"; done
exit 0
""",
}


def _job_script(settings: dict[str, Any], **tls: Any) -> str:
    options = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    with slurm_config(settings), SLURMCluster(scheduler_options=options, **tls) as jobs:
        return str(jobs.job_script())


def test_the_cpu_configuration_writes_its_job_script() -> None:
    settings, origin = load_slurm_config(DEPLOY / "slurm.yaml")
    check_slurm_config(settings, origin)
    script = _job_script(settings)
    lines = script.splitlines()
    assert "#SBATCH -p cpu" in lines
    assert "#SBATCH --cpus-per-task=32" in lines
    assert "#SBATCH -t 04:00:00" in lines
    assert "#SBATCH --mem=120GB" in lines  # job-mem, the request; memory is the workers' share
    assert "source /path/to/debond/.venv/bin/activate" in lines
    (command,) = [line for line in lines if "distributed.cli.dask_worker" in line]
    # 8 worker processes of 32 / 8 = 4 threads, 112 GB / 8 = 14 GB each
    assert "--nworkers 8" in command and "--nthreads 4" in command
    assert f"--memory-limit {112e9 / 8 / 2**30:.2f}GiB" in command
    assert "--local-directory $TMPDIR" in command
    assert "--resources" not in command and "gpu" not in script.lower()


def test_the_gpu_configuration_asks_for_a_gpu_and_advertises_it() -> None:
    settings, origin = load_slurm_config(DEPLOY / "slurm-gpu.yaml")
    check_slurm_config(settings, origin)
    lines = _job_script(settings).splitlines()
    assert "#SBATCH -p gpu" in lines
    assert "#SBATCH --gres=gpu:1" in lines
    (command,) = [line for line in lines if "distributed.cli.dask_worker" in line]
    assert "--resources GPU=1" in command and "--nthreads 8" in command
    assert "--nworkers" not in command  # one process per job, one GPU each


def test_tls_certificates_reach_the_workers_job_script(tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    settings, _ = load_slurm_config(DEPLOY / "slurm.yaml")
    tls = {"security": tls_security(ca, cert, key), "protocol": "tls://"}
    (command,) = [
        line for line in _job_script(settings, **tls).splitlines() if "dask_worker" in line
    ]
    assert " tls://127.0.0.1:" in command
    assert f"--tls-ca-file {ca} --tls-cert {cert} --tls-key {key}" in command


def _shipped(**changes: Any) -> dict[str, Any]:
    settings, _ = load_slurm_config(DEPLOY / "slurm.yaml")
    return {**settings, **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cors": 4}, r"jobqueue.slurm.cors: unknown setting; expected one of account, cores"),
        ({"memory": None}, r"jobqueue.slurm.memory is missing"),
        ({"processes": 64}, r"processes = 64; expected worker processes per job from 1 to cores"),
        ({"job-mem": "100GB"}, r"job-mem = '100GB' is less than memory = '112GB'"),
        (
            {"worker-extra-args": ["--memory-limit", "20GB"]},
            r"worker-extra-args --memory-limit 20GB × 8 process\(es\) = 149.01 GiB is more "
            r"than the job's memory",
        ),
        (
            {"job-extra-directives": ["--gres=gpu:1"]},
            r"job-extra-directives asks for GPUs \('--gres=gpu:1'\) but no worker advertises one",
        ),
        (
            {"worker-extra-args": ["--resources", "GPU=1"]},
            r"worker-extra-args advertises GPU=1 but the job asks for no GPU",
        ),
        ({"memory": "lots"}, r"memory = 'lots' is not a memory size"),
    ],
)
def test_settings_that_cannot_work_are_refused_by_name(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(SlurmError, match=rf"^site.yaml: (jobqueue\.slurm\.)?{message}"):
        check_slurm_config(_shipped(**changes), "site.yaml")


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """sbatch, scancel and squeue stand-ins first on PATH; yields the jobs' folder.

    Every job still running at the end is ended (and the test fails).
    """
    bin_dir, jobs = tmp_path / "bin", tmp_path / "jobs"
    bin_dir.mkdir()
    jobs.mkdir()
    for name, text in STAND_INS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("JOBS", str(jobs))
    yield jobs
    left = [int(path.read_text()) for path in jobs.glob("job-*.id")]
    for job in left:
        if psutil.pid_exists(job):
            os.killpg(job, 9)
    assert not left, f"jobs not cancelled: {left}"


def _test_config(tmp_path: Path, **changes: Any) -> Path:
    """deploy/hpc/slurm.yaml sized for this machine: 1-core jobs, everything on 127.0.0.1."""
    document = yaml.safe_load((DEPLOY / "slurm.yaml").read_text())
    document["jobqueue"]["slurm"] |= {
        "cores": 1,
        "processes": 1,
        "memory": "2GB",
        "job-mem": None,
        "python": sys.executable,
        "local-directory": str(tmp_path / "spill"),
        "job-script-prologue": [],
        "worker-extra-args": ["--host", "127.0.0.1"],
        "scheduler-options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
        **changes,
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.distributed
@pytest.mark.slow
def test_a_campaign_runs_in_slurm_jobs_to_the_embedded_clusters_table(
    small_campaign: Path, stand_ins: Path, tmp_path: Path
) -> None:
    campaign_file = cut_campaign(small_campaign, tmp_path / "slurm")
    config = _test_config(tmp_path)
    arguments = ["run", str(campaign_file), "--cluster", "slurm", "--jobqueue-config", str(config)]
    result = CliRunner().invoke(app, [*arguments, "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert f"cluster: SLURM ({config}), 2 workers in 2 job(s)" in result.output
    logs = sorted(stand_ins.glob("job-*.log"))
    assert len(logs) == 2  # one sbatch per job
    assert not list(stand_ins.glob("job-*.id"))  # both cancelled by scancel at the end
    pd.testing.assert_frame_equal(particles(campaign_file), embedded_table(small_campaign))


def test_bad_settings_stop_the_run_before_any_job(
    small_campaign: Path, stand_ins: Path, tmp_path: Path
) -> None:
    campaign_file = cut_campaign(small_campaign, tmp_path / "slurm")
    config = _test_config(tmp_path, **{"job-extra-directives": ["--gpus=1"]})
    arguments = ["run", str(campaign_file), "--cluster", "slurm", "--jobqueue-config", str(config)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert f"{config}: jobqueue.slurm.job-extra-directives asks for GPUs ('--gpus=1')" in " ".join(
        result.output.split()
    )
    assert not list(stand_ins.iterdir())  # no sbatch


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--cluster", "pbs"], "--cluster 'pbs': expected local or slurm"),
        (["--jobqueue-config", "x.yaml"], "--jobqueue-config is for --cluster slurm"),
        (
            ["--cluster", "slurm", "--jobqueue-config", "missing.yaml"],
            "--jobqueue-config missing.yaml: no such file",
        ),
        (
            ["--cluster", "slurm", "--scheduler", "tcp://127.0.0.1:8786"],
            "--cluster slurm starts its own scheduler",
        ),
    ],
)
def test_slurm_options_are_checked(
    small_campaign: Path, tmp_path: Path, arguments: list[str], message: str
) -> None:
    campaign_file = cut_campaign(small_campaign, tmp_path / "c")
    result = CliRunner().invoke(app, ["run", str(campaign_file), *arguments])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
