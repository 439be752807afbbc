"""A campaign whose store is on S3: moto's S3 server on 127.0.0.1, as s3fs's own tests use.

The server is real HTTP; every process (this one, `debond run`, its workers)
finds it and its credentials in the environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), never in the campaign file.
It checks credentials: an IAM user's access key is made while the server
still answers anyone, then every request must be signed with a key it knows.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterator
from pathlib import Path

import boto3
import pandas as pd
import pytest
import s3fs
from moto import settings as moto_settings
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from debond.cli import app
from tests.deploy.runs import cut_campaign, embedded_table, particles
from tests.test_runner import run_until

BUCKET = "campaigns"
STORE = f"s3://{BUCKET}/small/store.zarr"
REGION = "us-east-1"

# zarr opens an s3:// store with an asynchronous s3fs whose aiohttp session it never
# closes; the session warns when it is collected (done at the end of each test, below).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function ClientSession.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[tuple[str, str, str]]:
    """moto's S3 (and IAM) server on 127.0.0.1, with a bucket and a user allowed everything.

    Yields the endpoint URL and the user's access key id and secret.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    setup = {"endpoint_url": endpoint, "region_name": REGION}
    setup |= {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="debond")
    allow = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="debond", PolicyName="all", PolicyDocument=json.dumps(allow))
    key = iam.create_access_key(UserName="debond")["AccessKey"]
    boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)
    before = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from now on, requests are authenticated
    try:
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = before
        server.stop()


@pytest.fixture
def s3_environment(
    s3_endpoint: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The server's endpoint and the user's credentials in the environment; yields the endpoint."""
    endpoint, key_id, secret = s3_endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    yield endpoint
    s3fs.S3FileSystem.clear_instance_cache()
    gc.collect()


def _bucket_keys(prefix: str) -> list[str]:
    """Every object under `prefix` in the bucket, found by s3fs with the environment."""
    filesystem = s3fs.S3FileSystem()
    filesystem.invalidate_cache()
    return filesystem.find(f"{BUCKET}/{prefix}")


@pytest.mark.distributed
@pytest.mark.slow
def test_an_s3_campaign_killed_mid_run_resumes_to_the_table_of_local_disk(
    small_campaign: Path, s3_environment: str, tmp_path: Path
) -> None:
    campaign_file = cut_campaign(small_campaign, tmp_path / "s3", store=STORE)
    seen = run_until(campaign_file, r"recon +c\d\d +running")  # SIGKILLed with its workers
    assert "no lock is taken" in "".join(seen)
    written = _bucket_keys("small/store.zarr")
    assert any(key.endswith("/projections/zarr.json") for key in written), written
    assert not any("/recon/" in key for key in written if key.endswith("/c"))  # none finished

    result = CliRunner().invoke(app, ["run", str(campaign_file), "--workers", "2"])
    assert result.exit_code == 0, result.output
    skipped = re.search(r"(\d+) skipped \(current\)", result.output)
    assert skipped is not None and int(skipped.group(1)) >= 1, result.output  # it resumed
    assert any(key.endswith("/recon/zarr.json") for key in _bucket_keys("small/store.zarr"))
    pd.testing.assert_frame_equal(particles(campaign_file), embedded_table(small_campaign))


def _run_error(campaign_file: Path) -> str:
    result = CliRunner().invoke(app, ["run", str(campaign_file)])
    assert result.exit_code == 2, result.output
    assert "cluster:" not in result.output  # refused before any cluster started
    return " ".join(result.output.split())


def test_a_missing_bucket_is_named_before_anything_starts(
    small_campaign: Path, s3_environment: str, tmp_path: Path
) -> None:
    campaign_file = cut_campaign(small_campaign, tmp_path / "c", store="s3://nowhere/c.zarr")
    message = _run_error(campaign_file)
    assert "[campaign] store = 's3://nowhere/c.zarr'" in message
    assert f"the bucket 'nowhere' does not exist at {s3_environment}" in message


def test_refused_credentials_are_named_before_anything_starts(
    small_campaign: Path, s3_environment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"s3://{BUCKET}/refused/store.zarr"
    campaign_file = cut_campaign(small_campaign, tmp_path / "c", store=store)
    with monkeypatch.context() as wrong:
        wrong.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        s3fs.S3FileSystem.clear_instance_cache()
        message = _run_error(campaign_file)
    s3fs.S3FileSystem.clear_instance_cache()
    assert f"the credentials were refused by the bucket '{BUCKET}' at {s3_environment}" in message
    assert "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in message
    assert _bucket_keys("refused") == []  # nothing was written


def test_credentials_in_the_campaign_file_are_refused(
    small_campaign: Path, s3_environment: str, tmp_path: Path
) -> None:
    in_url = cut_campaign(small_campaign, tmp_path / "url", store=f"s3://AKIA:pw@{BUCKET}/c.zarr")
    message = _run_error(in_url)
    assert "the URL carries credentials (user 'AKIA' and a password)" in message
    as_keys = cut_campaign(small_campaign, tmp_path / "keys", store=STORE)
    text = as_keys.read_text().replace(
        f'store = "{STORE}"', f'store = "{STORE}"\naws_secret_access_key = "x"'
    )
    as_keys.write_text(text)
    message = _run_error(as_keys)
    assert (
        "campaign.aws_secret_access_key: credentials and storage options are never read" in message
    )
