"""Load: a burst of videos through the real daemon (bounded concurrency, each converted exactly once,
a daemon restart in the middle loses nothing) and peak memory independent of video length."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus

from stereospot_pipeline.storage.s3 import s3_client
from stereospot_pipeline_tests.clips import REPO, decode_all
from stereospot_pipeline_tests.conftest import outbox_file
from stereospot_pipeline_tests.support.daemon import dagster_daemon
from stereospot_pipeline_tests.support.ffmpeg import ffmpeg
from stereospot_pipeline_tests.support.ui import Ui
from stereospot_pipeline_tests.support.s3 import make_buckets

VIDEOS = 20
WAIT_SECONDS = 600  # 20 videos with a restart on 2 cores; each now also verifies its segments


def _tiny(path: Path, i: int) -> Path:
    """0.5 s at 64x36: the same pattern in a different hue each, so every file is its own video."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x36:rate=10:duration=0.5", "-vf", f"hue=h={i * 17}",
           "-c:v", "libx264", "-g", "5", "-pix_fmt", "yuv420p", path)
    return path


def _outputs(outbox: Path) -> list[Path]:
    return sorted(p for p in outbox.glob("*.mp4")) if outbox.exists() else []


def _wait_outputs(outbox: Path, count: int, deadline: float, ui: Ui) -> None:
    while len(_outputs(outbox)) < count:
        assert time.monotonic() < deadline, f"{len(_outputs(outbox))} of {count} outputs; log:\n{ui.log.read_text()[-3000:]}"
        assert ui.proc.poll() is None, ui.log.read_text()[-3000:]
        time.sleep(1)


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.slow
@pytest.mark.timeout(WAIT_SECONDS + 300)
def test_a_burst_of_videos_converts_each_once_with_bounded_concurrency_across_a_restart(tmp_path):
    home = tmp_path / "home"
    ui = Ui(home, tmp_path / "ui.log")
    clips = [_tiny(tmp_path / f"burst {i:02d}.mp4", i) for i in range(VIDEOS)]
    started = time.monotonic()
    deadline = started + WAIT_SECONDS
    try:
        ui.start()
        inbox, outbox = home / "inbox", home / "outbox"
        inbox.mkdir(parents=True, exist_ok=True)
        past = time.time() - 30  # settled: the sensor takes files unchanged for a while
        for clip in clips:
            os.replace(clip, inbox / clip.name)
            os.utime(inbox / clip.name, (past, past))
        _wait_outputs(outbox, 5, deadline, ui)
        ui.stop()  # in the middle of the burst: runs in flight are interrupted
        restarted_with = len(_outputs(outbox))
        ui.start()
        _wait_outputs(outbox, VIDEOS, deadline, ui)
        wall = time.monotonic() - started
        time.sleep(10)  # a few more sensor ticks: nothing may be converted twice
        peak = _check_runs(home / "dagster", deadline)  # while the daemon can still finish retries
    finally:
        ui.stop()

    assert _outputs(outbox) == sorted(outbox_file(outbox, f"burst {i:02d}") for i in range(VIDEOS))
    for out in _outputs(outbox):
        assert len(decode_all(out)[0]) == 5
    print(f"\nload: {VIDEOS} videos in {wall:.0f}s, restarted after {restarted_with} outputs, "
          f"max concurrent runs {peak}")


def _settled_runs(dagster_home: Path, deadline: float):
    """The run records once no run is queued or in progress any more (a run cut short by a restart
    is retried, and its output may exist before its retry has finished)."""
    active = {DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
              DagsterRunStatus.STARTED}
    while True:
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            records = instance.get_run_records()
        if not any(r.dagster_run.status in active for r in records):
            return records
        assert time.monotonic() < deadline, "runs still in progress at the deadline"
        time.sleep(2)


def _check_runs(dagster_home: Path, deadline: float) -> int:
    """Every video was published by one sensor request's run (or that run's retries) to one
    outbox key; returns the peak number of runs in progress at the same time.

    Publication, not run status, is the measure: a run killed after its last step but before
    Dagster recorded its success is marked failed, and its retry rightly finds nothing to redo. A
    run killed between the outbox write and the step's success (the test stops the daemon the
    moment an output appears, so it hits that window) is retried from that step, which writes the
    same bytes to the same key again: still one conversion, and the lineage check below tells it
    from a second request.
    """
    records = _settled_runs(dagster_home, deadline)
    root = {r.dagster_run.run_id: r.dagster_run.tags.get("dagster/root_run_id", r.dagster_run.run_id)
            for r in records}
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        published = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("published_video")), limit=10 * VIDEOS).records
    lineages: dict[str, set[str]] = {}
    outbox_keys: dict[str, set[str]] = {}
    for r in published:
        lineages.setdefault(r.partition_key, set()).add(root[r.run_id])
        meta = r.asset_materialization.metadata
        outbox_keys.setdefault(r.partition_key, set()).add(meta["outbox_key"].value)
    assert len(lineages) == VIDEOS
    assert all(len(v) == 1 for v in lineages.values()), lineages
    assert all(len(v) == 1 for v in outbox_keys.values()), outbox_keys
    sensor_keys = [r.dagster_run.tags["dagster/run_key"] for r in records if "dagster/run_key" in r.dagster_run.tags
                   and "dagster/parent_run_id" not in r.dagster_run.tags]
    assert len(sensor_keys) == len(set(sensor_keys)) == VIDEOS
    peak = _max_overlap([(r.start_time, r.end_time or time.time()) for r in records if r.start_time])
    assert peak <= 2
    return peak


@pytest.mark.slow
@pytest.mark.timeout(WAIT_SECONDS + 120)
def test_a_burst_of_uploads_to_s3_converts_each_once_with_bounded_concurrency(s3_endpoint, tmp_path):
    make_buckets(s3_endpoint, "burst-in", "burst-out")
    client = s3_client(s3_endpoint)
    clips = [_tiny(tmp_path / f"upload {i:02d}.mp4", i) for i in range(VIDEOS)]
    home = tmp_path / "dagster"
    env = {"STEREOSPOT_HOME": str(tmp_path / "state"), "STEREOSPOT_INBOX_URL": "s3://burst-in/incoming",
           "STEREOSPOT_STORE_URL": "s3://burst-out/work", "STEREOSPOT_OUTBOX_URL": "s3://burst-out/outputs",
           "STEREOSPOT_S3_ENDPOINT_URL": s3_endpoint}
    started = time.monotonic()
    with dagster_daemon(home, (REPO / "dagster.yaml").read_text(), env) as log:
        for clip in clips:
            client.upload_file(str(clip), "burst-in", f"incoming/{clip.name}")
        deadline = started + WAIT_SECONDS
        outputs: list[str] = []
        while len(outputs) < VIDEOS:
            assert time.monotonic() < deadline, f"{len(outputs)} of {VIDEOS} outputs; log:\n{log.read_text()[-3000:]}"
            time.sleep(2)
            listed = client.list_objects_v2(Bucket="burst-out", Prefix="outputs/").get("Contents", [])
            outputs = sorted(o["Key"] for o in listed)
        wall = time.monotonic() - started
        time.sleep(15)  # more sensor ticks: nothing may be converted twice
        peak = _check_runs(home, deadline)
    assert sorted(re.sub(r"-[0-9a-f]{6}_LRF", "_LRF", k) for k in outputs) == sorted(
        f"outputs/upload {i:02d}_LRF_Full_SBS.mp4" for i in range(VIDEOS))
    sample = tmp_path / "sample.mp4"
    client.download_file("burst-out", outputs[7], str(sample))
    assert len(decode_all(sample)[0]) == 5
    print(f"\ns3 load: {VIDEOS} uploads converted in {wall:.0f}s, max concurrent runs {peak}")


_CONVERT_AND_MEASURE = """
from stereospot_pipeline_tests.support.memory import peak_rss_kb
import sys
from pathlib import Path
from dagster import instance_for_test
from stereospot_pipeline.defs.resources import build_resources
from stereospot_pipeline.settings import Settings
from stereospot_pipeline_tests.conftest import convert
with instance_for_test() as instance:
    _, result = convert(instance, build_resources(Settings(home=Path(sys.argv[2]))), Path(sys.argv[1]))
assert result.success
print(peak_rss_kb())
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_peak_memory_does_not_grow_with_video_length(tmp_path):
    peaks = {}
    for seconds in (10, 600):
        clip = tmp_path / f"{seconds}s.mp4"
        ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=64x36:rate=10:duration={seconds}", "-c:v", "libx264",
               "-g", "20", "-pix_fmt", "yuv420p", clip)
        proc = subprocess.run([sys.executable, "-c", _CONVERT_AND_MEASURE, str(clip), str(tmp_path / f"home{seconds}")],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        peaks[seconds] = int(proc.stdout.split()[-1])
    print(f"\npeak RSS: 10 s video {peaks[10] // 1024} MiB, 10 min video {peaks[600] // 1024} MiB")
    assert peaks[600] < 1.3 * peaks[10]
