"""Production shape end to end: upload to an input bucket, the real Dagster daemon's S3 sensor starts
the conversion, the stereo video appears in the output bucket (S3 served by moto on loopback)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import av
import pytest
from dagster import DagsterInstance, DagsterRunStatus

from stereospot_pipeline_tests.clips import REPO, make_clip
from stereospot_pipeline_tests.support.daemon import dagster_daemon
from stereospot_pipeline_tests.support.s3 import make_buckets
from stereospot_pipeline.storage.s3 import s3_client

WAIT_SECONDS = 240


def _video(path: Path) -> tuple[int, int, int, bool]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return stream.codec_context.width, stream.codec_context.height, frames, bool(container.streams.audio)


def _failed_runs(home: Path) -> list[str]:
    with DagsterInstance.from_config(str(home)) as instance:
        return [run.run_id for run in instance.get_runs()
                if run.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)]


@pytest.mark.slow
@pytest.mark.timeout(WAIT_SECONDS + 120)
def test_an_upload_becomes_a_stereo_video_in_the_output_bucket(s3_endpoint, tmp_path):
    make_buckets(s3_endpoint, "in-bucket", "out-bucket")
    client = s3_client(s3_endpoint)
    clip = make_clip(tmp_path / "holiday.mp4")
    home = tmp_path / "dagster"
    env = {
        "STEREOSPOT_HOME": str(tmp_path / "state"),
        "STEREOSPOT_INBOX_URL": "s3://in-bucket/incoming",
        "STEREOSPOT_STORE_URL": "s3://out-bucket/work",
        "STEREOSPOT_OUTBOX_URL": "s3://out-bucket/outputs",
        "STEREOSPOT_S3_ENDPOINT_URL": s3_endpoint,
    }
    # The project's embedded instance config (SQLite, queued runs, gpu pool) in a fresh DAGSTER_HOME.
    with dagster_daemon(home, (REPO / "dagster.yaml").read_text(), env) as log:
        client.upload_file(str(clip), "in-bucket", "incoming/holiday.mp4")
        deadline = time.monotonic() + WAIT_SECONDS
        outputs: list[str] = []
        while time.monotonic() < deadline and not outputs:
            time.sleep(2)
            listed = client.list_objects_v2(Bucket="out-bucket", Prefix="outputs/").get("Contents", [])
            outputs = [o["Key"] for o in listed]
            if not outputs and (home / "storage").exists() and (failed := _failed_runs(home)):
                pytest.fail(f"runs {failed} failed; daemon log:\n{log.read_text()[-4000:]}")
        assert outputs, f"no output after {WAIT_SECONDS}s; daemon log:\n{log.read_text()[-4000:]}"

    assert len(outputs) == 1 and re.fullmatch(r"outputs/holiday-[0-9a-f]{6}_LRF_Full_SBS\.mp4", outputs[0]), outputs
    result = tmp_path / "result.mp4"
    client.download_file("out-bucket", outputs[0], str(result))
    width, height, frames, audio = _video(result)
    src_width, src_height, src_frames, _ = _video(clip)
    assert (width, height, frames, audio) == (2 * src_width, src_height, src_frames, True)
