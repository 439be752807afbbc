"""The cluster connection, against real scheduler and worker processes."""

from __future__ import annotations

import re
from urllib.parse import urlsplit
from urllib.request import urlopen

import dask
import dask.array as da
import numpy as np
import psutil
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


def _listening(ports: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every socket this process and its children listen on among `ports`."""
    me = psutil.Process()
    return {
        (connection.laddr.ip, connection.laddr.port)
        for process in (me, *me.children(recursive=True))
        for connection in process.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port in ports
    }


def test_the_embedded_cluster_and_its_dashboard_listen_on_loopback_only() -> None:
    with cluster(workers=1) as client:
        # the context yields once the scheduler, its dashboard and the worker are up
        dashboard = urlsplit(client.dashboard_link)
        assert dashboard.hostname == "127.0.0.1"
        with urlopen(f"http://127.0.0.1:{dashboard.port}/health", timeout=30) as answer:
            assert answer.read() == b"ok"
        ((worker, info),) = client.scheduler_info()["workers"].items()
        addresses = [client.scheduler.address, worker, info["nanny"]]
        ports = {dashboard.port, *(int(a.rsplit(":", 1)[1]) for a in addresses)}
        bound = _listening(ports)
    assert {port for _, port in bound} == ports, "every server of the cluster was found"
    assert {host for host, _ in bound} == {"127.0.0.1"}, bound


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("notanaddress", r"missing its port; expected an address such as tcp://host:8786"),
        ("tcp://", r"missing its port"),
        ("tcp://host:port", r"port 'port' is not a number"),
        ("tcp://host:70000", r"port 70000 is out of range"),
        ("http://host:8786", r"scheme 'http' is not one of tcp, tls, ws, wss"),
        ("inproc://host/1/1", r"scheme 'inproc' is not one of tcp, tls, ws, wss"),
        ("tcp://[::1:8786", r"not a host and port"),
    ],
)
def test_a_malformed_scheduler_address_is_named(address: str, expected: str) -> None:
    with pytest.raises(ClusterError, match=rf"^--scheduler {re.escape(repr(address))}: {expected}"):
        with cluster(address, timeout_s=2):
            pass


def test_a_malformed_address_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SCHEDULER_VARIABLE, "notanaddress")
    with pytest.raises(
        ClusterError, match=rf"^{SCHEDULER_VARIABLE} 'notanaddress': missing its port"
    ):
        with cluster(timeout_s=2):
            pass


def test_a_tls_address_without_certificates_is_named() -> None:
    """distributed connects over tls:// only with a CA and a client certificate."""
    address = "tls://127.0.0.1:8786"
    unset = {"distributed.comm.tls.ca-file": None, "distributed.comm.tls.client.cert": None}
    with (
        dask.config.set(unset),
        pytest.raises(
            ClusterError,
            match=rf"^--scheduler '{address}': tls:// needs certificates and none are configured "
            r"\(dask config distributed\.comm\.tls\.ca-file and "
            r"distributed\.comm\.tls\.client\.cert",
        ),
        cluster(address, timeout_s=2),
    ):
        pass
