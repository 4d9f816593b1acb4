"""A long video of many segments through the real Dagster path (`stereospot convert` subprocesses
on the shipped dagster.yaml): planning time, time per segment against a short video's, event-log
rows, what the UI's GraphQL queries for the run and the partition cost, peak memory of the
process, and a kill mid-way + resume that redoes only the unfinished segments.

The size is ``STEREOSPOT_SCALE_MINUTES`` (default 0.4: 12 segments of 2 s, the bounded form CI runs); the
feature-length form is ``STEREOSPOT_SCALE_MINUTES=120 STEREOSPOT_SCALE_SEGMENT_SECONDS=10`` (720 segments). Frames are tiny (64x36, 10 fps, a keyframe every
segment), so the cost measured is the pipeline's per-segment overhead, not pixels. The table
is printed (``-s``) and written to ``$STEREOSPOT_SCALE_REPORT`` when set.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg
import pytest

from stereospot_pipeline_tests.clips import REPO

STEREOSPOT = str(Path(sys.executable).with_name("stereospot"))
MINUTES = float(os.environ.get("STEREOSPOT_SCALE_MINUTES", "0.4"))
SEGMENT_S = float(os.environ.get("STEREOSPOT_SCALE_SEGMENT_SECONDS", "2"))
FPS = 10

ROW_QUERIES = {
    # The run page: the run with its steps, and its whole event log.
    "run": """query Run($runId: ID!) {
        runOrError(runId: $runId) { ... on Run { id status stepStats { stepKey status startTime endTime } } }
        logsForRun(runId: $runId, limit: 1000000) { ... on EventConnection { events { __typename } } }
    }""",
    # The partition's page: its materializations with their metadata.
    "partition": """query Partition($key: String!) {
        assetNodes(assetKeys: [{path: ["stereo_segments"]}, {path: ["final_video"]}]) {
            assetMaterializations(partitions: [$key]) { runId timestamp metadataEntries { label } }
        }
    }""",
}


def _clip(path: Path, seconds: float) -> Path:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size=64x36:rate={FPS}:duration={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
                    "-g", str(int(SEGMENT_S * FPS)), "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def _convert(clip: Path, home: Path, kill_after_segments: int | None = None) -> dict:
    """One `stereospot convert`; its wall time, peak RSS (the process and its children) and output."""
    env = {**os.environ, "STEREOSPOT_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    log = home.parent / f"{home.name}-{time.monotonic_ns()}.log"
    home.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([STEREOSPOT, "convert", str(clip), "--depth-model", "heuristic",
                                 "--segment-seconds", str(SEGMENT_S)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=REPO)
        if kill_after_segments is not None:
            deadline = time.monotonic() + 600 + 5 * kill_after_segments
            while len(_results(home)) < kill_after_segments and proc.poll() is None:
                assert time.monotonic() < deadline, "no progress"
                time.sleep(0.2)
            proc.send_signal(signal.SIGKILL)  # no clean-up at all: power loss, OOM kill
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "rc": proc.returncode, "log": log.read_text()}


def _results(home: Path) -> list[Path]:
    """The stored segment results (keys.stereo_result): segments that finished."""
    return list(home.rglob("stereo/*/*/[0-9]*.json"))


def _run_facts(home: Path) -> dict:
    """From the instance: the run's steps (planning and per segment) and its event-log rows."""
    from dagster import DagsterInstance, RunsFilter

    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    with DagsterInstance.get() as instance:
        run = instance.get_runs(RunsFilter(), limit=1)[0]
        stats = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(run.run_id)
                 if s.start_time and s.end_time}
        key = run.tags.get("dagster/partition")
    rows = 0
    for path in (home / "dagster").rglob("*.db"):
        with sqlite3.connect(path) as con:
            if con.execute("select 1 from sqlite_master where name='event_logs'").fetchone():
                rows += con.execute("select count(*) from event_logs where run_id = ?", (run.run_id,)).fetchone()[0]
    renders = [v for k, v in stats.items() if k.startswith("stereo_segments.render_stereo_segment[")]
    return {"run_id": run.run_id, "partition": key, "event_rows": rows,
            "plan_s": sum(v for k, v in stats.items() if k in ("segments", "stereo_segments.plan_stereo_segments")),
            "segments": len(renders), "per_segment_s": sum(renders) / max(len(renders), 1),
            "checks_s": sum(v for k, v in stats.items() if "check" in k or k.startswith("final_video_")),
            "join_s": stats.get("final_video", 0.0)}


def _graphql_seconds(home: Path, run_id: str, key: str) -> dict:
    """What the UI loads for the run and the partition, timed through Dagster's GraphQL schema
    against the instance, with the definitions in a code server as the UI has them."""
    from dagster import DagsterInstance
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    times = {}
    with DagsterInstance.get() as instance, define_out_of_process_context(
            str(REPO / "stereospot_pipeline" / "definitions.py"), "defs", instance) as context:
        for name, query in ROW_QUERIES.items():
            started = time.perf_counter()
            result = execute_dagster_graphql(context, query, {"runId": run_id, "key": key})
            times[name] = time.perf_counter() - started
            assert result.data, result
    return times


@pytest.mark.slow
def test_a_long_video_scales_like_a_short_one_and_resumes(tmp_path):
    short = _clip(tmp_path / "short.mp4", 2 * SEGMENT_S)
    long = _clip(tmp_path / "long.mp4", 60 * MINUTES)
    segments = int(60 * MINUTES / SEGMENT_S)

    small = _convert(short, tmp_path / "short-home")
    assert small["rc"] == 0, small["log"][-3000:]
    small_facts = _run_facts(tmp_path / "short-home")

    # Killed once about half the segments are stored, then resumed by running it again.
    home = tmp_path / "long-home"
    killed = _convert(long, home, kill_after_segments=max(segments // 2, 1))
    assert killed["rc"] != 0
    done_before = len(_results(home))
    assert 0 < done_before < segments
    resumed = _convert(long, home)
    assert resumed["rc"] == 0, resumed["log"][-3000:]
    reused = int(re.search(r"reused (\d+) of (\d+) segment", resumed["log"]).group(1))
    assert reused >= done_before and reused < segments  # only the unfinished ones were redone
    big = _run_facts(home)
    assert big["segments"] == segments
    ui = _graphql_seconds(home, big["run_id"], big["partition"])

    table = {
        "minutes": MINUTES, "segments": segments,
        "plan_s": [round(small_facts["plan_s"], 2), round(big["plan_s"], 2)],
        "per_segment_s (short, long resumed)": [round(small_facts["per_segment_s"], 3), round(big["per_segment_s"], 3)],
        "join_s": [round(small_facts["join_s"], 2), round(big["join_s"], 2)],
        "checks_s": [round(small_facts["checks_s"], 2), round(big["checks_s"], 2)],
        "event_rows": [small_facts["event_rows"], big["event_rows"]],
        "graphql_run_s": round(ui["run"], 2), "graphql_partition_s": round(ui["partition"], 2),
        "peak_rss_mb (short, long killed, long resumed)": [round(small["peak_rss_mb"]), round(killed["peak_rss_mb"]),
                                                            round(resumed["peak_rss_mb"])],
        "wall_s (short, long killed, long resumed)": [round(small["wall_s"], 1), round(killed["wall_s"], 1),
                                                      round(resumed["wall_s"], 1)],
        "segments_done_before_kill": done_before, "segments_reused_on_resume": reused,
    }
    print("\nscale:", json.dumps(table, indent=1))
    if report := os.environ.get("STEREOSPOT_SCALE_REPORT"):
        Path(report).write_text(json.dumps(table, indent=1))
    # Flat in length: a segment of a long video costs what one of a short video does (within
    # noise on a shared machine), and memory does not grow with the number of segments.
    assert big["per_segment_s"] < 3 * small_facts["per_segment_s"] + 0.5, table
    assert resumed["peak_rss_mb"] < 1.5 * small["peak_rss_mb"] + 100, table
    assert ui["run"] < 30 and ui["partition"] < 30, table
