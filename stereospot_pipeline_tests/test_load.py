"""Load: a burst of videos through the real daemon (bounded concurrency, each converted exactly once,
a daemon restart in the middle loses nothing) and peak memory independent of video length."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from dagster import DagsterInstance, DagsterRunStatus

from stereospot_pipeline_tests.clips import REPO, decode_all
from stereospot_pipeline_tests.support.ffmpeg import ffmpeg
from stereospot_pipeline_tests.support.net import free_port

STEREOSPOT = str(Path(sys.executable).with_name("stereospot"))
VIDEOS = 20
WAIT_SECONDS = 420


def _tiny(path: Path, i: int) -> Path:
    """0.5 s at 64x36: the same pattern in a different hue each, so every file is its own video."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x36:rate=10:duration=0.5", "-vf", f"hue=h={i * 17}",
           "-c:v", "libx264", "-g", "5", "-pix_fmt", "yuv420p", path)
    return path


class Ui:
    """`stereospot ui` (webserver + daemon) in its own process group, restartable."""

    def __init__(self, home: Path, log: Path):
        self.home, self.log, self.proc = home, log, None

    def start(self) -> None:
        port = free_port()
        env = {**os.environ, "STEREOSPOT_HOME": str(self.home)}
        env.pop("DAGSTER_HOME", None)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([STEREOSPOT, "ui", "--port", str(port)], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(1)
        raise AssertionError("the UI did not start")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


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
    finally:
        ui.stop()

    assert [p.name for p in _outputs(outbox)] == sorted(f"burst {i:02d}_LRF_Full_SBS.mp4" for i in range(VIDEOS))
    for out in _outputs(outbox):
        assert len(decode_all(out)[0]) == 5
    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        records = instance.get_run_records()
    succeeded = Counter(r.dagster_run.tags["dagster/partition"] for r in records
                        if r.dagster_run.status == DagsterRunStatus.SUCCESS)
    assert len(succeeded) == VIDEOS and set(succeeded.values()) == {1}
    sensor_keys = [r.dagster_run.tags["dagster/run_key"] for r in records if "dagster/run_key" in r.dagster_run.tags
                   and "dagster/parent_run_id" not in r.dagster_run.tags]
    assert len(sensor_keys) == len(set(sensor_keys)) == VIDEOS
    intervals = [(r.start_time, r.end_time or time.time()) for r in records if r.start_time]
    peak = _max_overlap(intervals)
    assert peak <= 2
    print(f"\nload: {VIDEOS} videos in {wall:.0f}s, {len(records)} runs, restarted after {restarted_with} "
          f"outputs, max concurrent runs {peak}")


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
    for seconds in (10, 180):
        clip = tmp_path / f"{seconds}s.mp4"
        ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=64x36:rate=10:duration={seconds}", "-c:v", "libx264",
               "-g", "20", "-pix_fmt", "yuv420p", clip)
        proc = subprocess.run([sys.executable, "-c", _CONVERT_AND_MEASURE, str(clip), str(tmp_path / f"home{seconds}")],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        peaks[seconds] = int(proc.stdout.split()[-1])
    print(f"\npeak RSS: 10 s video {peaks[10] // 1024} MiB, 3 min video {peaks[180] // 1024} MiB")
    assert peaks[180] < 1.3 * peaks[10]
