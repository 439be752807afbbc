"""tls:// between `debond run`, a real `dask scheduler` and a `dask worker`, from certificate files.

A certificate authority and a certificate for 127.0.0.1 are made here with
``cryptography``; the scheduler listens on tls:// only and asks every peer for
a certificate signed by that authority, so a plain tcp:// client is refused.
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from distributed import Client
from typer.testing import CliRunner

from debond.cli import app
from debond.cluster import tls_security
from tests.conftest import STARTUP_S
from tests.deploy.runs import cut_campaign
from tests.processes import POLL_S, Processes, scheduler_address

pytestmark = pytest.mark.distributed


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA (ca.pem) and a certificate for 127.0.0.1 that it signed (cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    lifetime = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("debond test CA"))
        .issuer_name(_name("debond test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(lifetime[0])
        .not_valid_after(lifetime[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    loopback = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(lifetime[0])
        .not_valid_after(lifetime[1])
        .add_extension(loopback, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return folder / "ca.pem", folder / "cert.pem", _write_key(key, folder / "key.pem")


@pytest.fixture
def tls_scheduler(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A tls:// `dask scheduler` and one `dask worker` on 127.0.0.1, ready.

    Yields the scheduler's address and the ``--tls-*`` options of `debond run`.
    """
    ca, cert, key = make_certificates(tmp_path)
    tls = ["--tls-ca-file", str(ca), "--tls-cert", str(cert), "--tls-key", str(key)]
    dask_cli = str(Path(sys.executable).with_name("dask"))
    info = tmp_path / "scheduler.json"
    processes = Processes(tmp_path)
    deadline = time.monotonic() + STARTUP_S
    common = ["--host", "127.0.0.1", "--no-dashboard", *tls]
    try:
        processes.start(
            "scheduler",
            [
                dask_cli,
                "scheduler",
                "--protocol",
                "tls",
                "--port",
                "0",
                *common,
                "--scheduler-file",
                str(info),
            ],
        )
        address = scheduler_address(info, processes, deadline)
        processes.start("worker", [dask_cli, "worker", address, "--nthreads", "1", *common])
        with Client(address, security=tls_security(ca, cert, key), timeout="60s") as client:
            while not client.scheduler_info()["workers"]:
                processes.check_running(f"a worker at {address}")
                if time.monotonic() > deadline:
                    processes.fail(f"no worker joined {address} by the deadline")
                time.sleep(POLL_S)
        yield address, tls
    finally:
        processes.stop()


def test_a_campaign_runs_over_tls_and_a_plain_client_is_refused(
    small_campaign: Path, tls_scheduler: tuple[str, list[str]], tmp_path: Path
) -> None:
    address, tls = tls_scheduler
    assert address.startswith("tls://127.0.0.1:")
    campaign_file = cut_campaign(small_campaign, tmp_path / "c")
    result = CliRunner().invoke(
        app, ["run", str(campaign_file), "--scheduler", address, *tls, "--only", "ingest"]
    )
    assert result.exit_code == 0, result.output
    assert f"cluster: {address}, 1 workers" in result.output
    assert "finished" in result.output and "2 done" in result.output

    plain = address.replace("tls://", "tcp://")
    refused = CliRunner().invoke(app, ["run", str(campaign_file), "--scheduler", plain])
    assert refused.exit_code == 2, refused.output
    message = " ".join(refused.output.split())
    assert f"cannot reach the Dask scheduler at '{plain}' (from --scheduler)" in message
    assert (
        "a scheduler that requires TLS refuses tcp:// clients: give its tls:// address" in message
    )


def test_tls_options_are_checked_before_any_connection(
    small_campaign: Path, tmp_path: Path
) -> None:
    ca, cert, _key = make_certificates(tmp_path)
    campaign_file = cut_campaign(small_campaign, tmp_path / "c")
    cases = [
        (["--scheduler", "tls://127.0.0.1:1"], "tls:// needs certificates and none are configured"),
        (["--tls-cert", str(cert)], "TLS needs --tls-ca-file and --tls-cert"),
        (
            ["--tls-ca-file", str(tmp_path / "no.pem"), "--tls-cert", str(cert)],
            f"--tls-ca-file {tmp_path / 'no.pem'}: no such file",
        ),
        (
            ["--tls-ca-file", str(campaign_file), "--tls-cert", str(cert)],
            f"--tls-ca-file {campaign_file}: not a PEM file",
        ),
        (
            ["--scheduler", "tcp://127.0.0.1:1", "--tls-ca-file", str(ca), "--tls-cert", str(cert)],
            "certificates were given (--tls-ca-file, --tls-cert, --tls-key) for a tcp:// address",
        ),
    ]
    for arguments, message in cases:
        result = CliRunner().invoke(app, ["run", str(campaign_file), *arguments])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()), arguments
