"""The cluster connection, against real scheduler and worker processes."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from debond.cluster import SCHEDULER_VARIABLE, ClusterError, cluster

pytestmark = pytest.mark.distributed


def test_an_existing_cluster_runs_the_graph(scheduler: str) -> None:
    lines: list[str] = []
    data = np.random.default_rng(0).random((64, 64))
    with cluster(scheduler, echo=lines.append) as client:
        # the fixture yields once both workers have joined: no waiting here
        assert len(client.scheduler_info()["workers"]) == 2
        total = da.from_array(data, chunks=16).sum().compute()
    assert total == pytest.approx(data.sum())
    assert scheduler in lines[0] and "2 workers" in lines[0]


def test_the_environment_variable_names_the_cluster(
    scheduler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SCHEDULER_VARIABLE, scheduler)
    with cluster() as client:
        assert client.scheduler.address == scheduler


def test_the_embedded_cluster_is_closed_on_exit() -> None:
    lines: list[str] = []
    with cluster(workers=1, echo=lines.append) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        assert client.submit(sum, [1, 2, 3]).result() == 6
    assert client.status == "closed"
    assert "embedded, 1 workers" in lines[0]


def test_an_unreachable_scheduler_is_named() -> None:
    with (
        pytest.raises(ClusterError, match=r"tcp://127.0.0.1:1.*--scheduler"),
        cluster("tcp://127.0.0.1:1", timeout_s=2),
    ):
        pass
