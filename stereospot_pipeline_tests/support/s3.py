"""A real S3 protocol server on loopback (moto), started and stopped by the fixtures."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from stereospot_pipeline.storage.s3 import s3_client
from stereospot_pipeline_tests.support.net import free_port

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def aws_env(monkeypatch) -> dict[str, str]:
    """Dummy credentials so boto3 never looks for (or finds) real ones."""
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    return dict(FAKE_AWS_ENV)


@pytest.fixture
def s3_endpoint(aws_env) -> Iterator[str]:
    """The URL of a moto S3 server on 127.0.0.1, stopped after the test."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        # moto keeps its backends in process-wide state: every test starts from empty buckets.
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
        yield endpoint
    finally:
        server.stop()


def make_buckets(endpoint: str, *names: str) -> None:
    client = s3_client(endpoint)
    for name in names:
        client.create_bucket(Bucket=name)
