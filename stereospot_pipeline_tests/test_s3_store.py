"""S3ObjectStore against a real S3 protocol server (moto on loopback)."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest
from botocore.awsrequest import AWSResponse

from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.sources import open_source
from stereospot_pipeline.storage.s3 import MIB, S3_MAX_ATTEMPTS, S3ObjectStore
from stereospot_pipeline_tests.support.s3 import make_buckets

BUCKET = "work-bucket"


@pytest.fixture
def store(s3_endpoint) -> S3ObjectStore:
    make_buckets(s3_endpoint, BUCKET)
    # A small multipart threshold so a test file of a few MB takes the multipart path.
    return S3ObjectStore.from_url(f"s3://{BUCKET}/work/", endpoint_url=s3_endpoint,
                                  multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)


def _random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def test_from_url_splits_bucket_and_prefix(s3_endpoint):
    store = S3ObjectStore.from_url("s3://some-bucket/a/b/", endpoint_url=s3_endpoint)
    assert (store.bucket, store.prefix, store.endpoint_url) == ("some-bucket", "a/b", s3_endpoint)
    with pytest.raises(ValueError):
        S3ObjectStore.from_url("/not/s3")


def test_bytes_json_and_listing_round_trip(store):
    store.put_bytes(b"hello", "a/one.bin")
    store.put_json({"x": [1, 2]}, "a/b/two.json")
    store.put_bytes(b"other", "ab/three.bin")
    assert store.get_bytes("a/one.bin") == b"hello"
    assert store.get_json("a/b/two.json") == {"x": [1, 2]}
    assert store.exists("a/one.bin") and not store.exists("a/missing.bin")
    assert store.size("a/one.bin") == 5
    # Folder semantics: "a" does not list "ab/...", and keys come back relative to the store.
    assert store.list_keys("a") == ["a/b/two.json", "a/one.bin"]
    assert store.list_keys("") == ["a/b/two.json", "a/one.bin", "ab/three.bin"]
    # Everything lives under the store's prefix in the bucket.
    listed = store.client.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert all(o["Key"].startswith("work/") for o in listed)
    store.delete("a/one.bin")
    assert not store.exists("a/one.bin")


def test_multipart_file_round_trip_and_local_copy(store, tmp_path):
    src = _random_file(tmp_path / "big.mp4", 12 * MIB + 123)
    store.put_file(src, "sources/v/source.mp4")
    head = store.client.head_object(Bucket=BUCKET, Key="work/sources/v/source.mp4")
    assert head["ETag"].strip('"').endswith("-3")  # three 5 MiB parts: the multipart path was taken
    out = store.get_file("sources/v/source.mp4", tmp_path / "down" / "copy.mp4")
    assert out.read_bytes() == src.read_bytes()
    with store.local_copy("sources/v/source.mp4") as local:
        assert local.suffix == ".mp4" and local.read_bytes() == src.read_bytes()
        kept = local
    assert not kept.exists()


def test_presigned_url_serves_the_object_over_http(store, tmp_path):
    src = _random_file(tmp_path / "clip.mp4", 300_000)
    store.put_file(src, "final/v/clip_LRF_Full_SBS.mp4")
    url = store.url("final/v/clip_LRF_Full_SBS.mp4")
    assert "X-Amz-Expires=604800" in url and "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == src.read_bytes()


def test_failed_multipart_upload_leaves_nothing_at_the_key(store, tmp_path):
    store.put_bytes(b"previous complete object", "sources/v/source.mp4")
    src = _random_file(tmp_path / "big.mp4", 11 * MIB)
    parts = []

    def fail_second_part(params, **_):
        parts.append(params["PartNumber"])
        if len(parts) == 2:
            raise ConnectionAbortedError("network gone mid-upload")

    store.client.meta.events.register("before-parameter-build.s3.UploadPart", fail_second_part)
    with pytest.raises(ConnectionAbortedError):
        store.put_file(src, "sources/v/source.mp4")
    store.client.meta.events.unregister("before-parameter-build.s3.UploadPart", fail_second_part)
    store.put_file(src, "sources/v/fresh.mp4")
    # The old object is untouched and the aborted upload left no parts behind.
    assert store.get_bytes("sources/v/source.mp4") == b"previous complete object"
    assert store.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert store.list_keys("sources/v") == ["sources/v/fresh.mp4", "sources/v/source.mp4"]


@pytest.mark.parametrize("key", ["../escape.mp4", "/abs.mp4", "a//b.mp4", "a/./b", "", "a/.hidden", "x" * 201])
def test_unsafe_keys_are_rejected_before_any_request(store, tmp_path, key):
    src = _random_file(tmp_path / "f.bin", 10)
    for call in (lambda: store.put_file(src, key), lambda: store.put_bytes(b"x", key),
                 lambda: store.get_bytes(key), lambda: store.exists(key), lambda: store.url(key)):
        with pytest.raises(ValueError, match="unsafe storage key"):
            call()


class _Raw:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_):
        yield self._body


def test_throttling_and_server_errors_are_retried(store):
    assert store.client.meta.config.retries == {"total_max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"}
    store.put_bytes(b"payload", "a/b.json")
    failures = [503, 500]
    body = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate</Message></Error>"

    def flaky(request, **_):
        if failures:
            return AWSResponse(request.url, failures.pop(0), {}, _Raw(body))
        return None  # send the request for real

    store.client.meta.events.register("before-send.s3.GetObject", flaky)
    assert store.get_bytes("a/b.json") == b"payload"
    assert failures == []


def test_s3_sources_download_with_the_configured_endpoint(s3_endpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("STEREOSPOT_S3_ENDPOINT_URL", s3_endpoint)
    make_buckets(s3_endpoint, "in-bucket")
    src = _random_file(tmp_path / "holiday.MOV", 1000)
    store = S3ObjectStore(bucket="in-bucket", endpoint_url=s3_endpoint)
    # Users name uploads freely: the key is read as-is, only the local file name is sanitised.
    key = "incoming/odd name (1)/../holiday.MOV"
    store.client.upload_file(str(src), "in-bucket", key)
    with open_source(f"s3://in-bucket/{key}") as local:
        assert local.name == "source.mov" and local.read_bytes() == src.read_bytes()
        kept = local
    assert not kept.exists()
    with pytest.raises(InvalidVideoError, match="no longer exists"):
        with open_source("s3://in-bucket/incoming/gone.mp4"):
            pass
