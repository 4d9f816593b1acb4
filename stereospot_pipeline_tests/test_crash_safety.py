"""Crash safety on the real user path: the `stereospot` CLI in subprocesses on one state folder, with
the shipped dagster.yaml (the `gpu` pool of one slot, queued runs, monitoring, retries), killed with
SIGKILL at each stage, stopped with SIGTERM/SIGINT, and made to wait for a pool slot."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from stereospot_pipeline.ingest import file_sha256, partition_key
from stereospot_pipeline.runs import HOST_TAG, PID_TAG, STARTED_TAG, process_start_time
from stereospot_pipeline_tests.clips import REPO, make_clip
from stereospot_pipeline_tests.conftest import convert, outbox_file
from stereospot_pipeline_tests.test_resume import _frames, _same_frames

STEREOSPOT = str(Path(sys.executable).with_name("stereospot"))
SEGMENT_SECONDS = 0.5
SEGMENTS = 4
BOUND_S = 150  # the commands after a kill, on a busy 2-core machine
_ACTIVE = {DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
           DagsterRunStatus.CANCELING, DagsterRunStatus.QUEUED}

# Holds a conversion in the middle of publishing: the outbox temp file is written, not yet renamed.
PAUSE_PUBLISH = """
import os, time
_flag = os.environ.get("STEREOSPOT_TEST_PAUSE_PUBLISH")
if _flag:
    from stereospot_pipeline.storage import local as _local
    _write = _local.LocalObjectStore._atomic_write
    def _paused(self, key, write):
        if not self.root.rstrip("/").endswith("outbox"):
            return _write(self, key, write)
        def _then_pause(fh):
            write(fh)
            fh.flush()
            open(_flag, "w").write(str(os.getpid()))
            time.sleep(120)
        return _write(self, key, _then_pause)
    _local.LocalObjectStore._atomic_write = _paused
"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    """The video to kill (4 segments), another one, and both converted without interruption."""
    folder = tmp_path_factory.mktemp("clips")
    same = make_clip(folder / "trip.mp4", seconds=2.0, fps=10, gop=5, size="128x72")
    other = make_clip(folder / "other.mp4", seconds=1.0, fps=10, gop=5, size="96x64")
    from dagster import instance_for_test

    from stereospot_pipeline.defs.resources import build_resources
    from stereospot_pipeline.settings import Settings
    from stereospot_pipeline_tests.conftest import metadata

    reference = {}
    with instance_for_test() as instance:
        resources = build_resources(Settings(home=folder / "reference"))
        for clip in (same, other):
            _, result = convert(instance, resources, clip, segment_seconds=SEGMENT_SECONDS)
            assert result.success
            reference[clip.name] = _frames(metadata(result, "published_video")["output"])
    assert len(reference["trip.mp4"]) == 20
    return {"same": same, "other": other, "reference": reference}


class Cli:
    """`stereospot convert` as a user runs it, on one state folder (STEREOSPOT_HOME)."""

    def __init__(self, home: Path, scratch: Path):
        self.home, self.scratch = home, scratch
        scratch.mkdir(parents=True, exist_ok=True)

    def env(self, **extra) -> dict:
        env = {**os.environ, "STEREOSPOT_HOME": str(self.home), "TMPDIR": str(self.scratch), **extra}
        env.pop("DAGSTER_HOME", None)
        return env

    def start(self, clip: Path, log: Path, **extra) -> subprocess.Popen:
        with open(log, "wb") as out:
            return subprocess.Popen([STEREOSPOT, "convert", str(clip), "--segment-seconds", str(SEGMENT_SECONDS)],
                                    cwd=self.home.parent, env=self.env(**extra), start_new_session=True,
                                    stdout=out, stderr=subprocess.STDOUT)

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.home / "dagster"))

    def runs(self) -> list:
        with self.instance() as instance:
            return instance.get_runs()

    def stereo_done(self, clip: Path) -> int:
        key = partition_key(clip.name, file_sha256(clip))
        return len(list((self.home / "store" / "stereo" / key).glob("*/0*.json")))


def _wait(predicate, proc: subprocess.Popen, log: Path, timeout: float = 120, every: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        assert proc.poll() is None, f"the conversion ended before the kill point:\n{log.read_text()[-3000:]}"
        time.sleep(every)
    raise AssertionError(f"kill point not reached in {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen, signo=signal.SIGKILL) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signo)
        proc.wait(timeout=30)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _outputs(home: Path) -> list[Path]:
    outbox = home / "outbox"
    return sorted(p for p in outbox.rglob("*") if p.is_file()) if outbox.exists() else []


def _failure_message(instance: DagsterInstance, run_id: str) -> str:
    for record in instance.get_records_for_run(run_id).records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.event_type_value in ("PIPELINE_FAILURE", "PIPELINE_CANCELED"):
            return event.message or ""
    return ""


STAGES = ["probe", "cut", "segments", "join", "publish"]


def test_a_conversion_killed_at_every_stage_in_turn_never_blocks_the_next_command(tmp_path, clips):
    """SIGKILL (the OOM killer, a closed lid, a power cut) leaves the run STARTED and, during the
    segments, the `gpu` slot held. The user runs the same command again, and that one is killed at
    the next stage, and so on through probe, cut, segments, join and publish: each next command
    recovers the dead run and gets further, reusing what was finished. Then the same video and
    another one, started at once, finish within the bound, and the output is frame for frame the
    uninterrupted one; nothing partial is left, no run is left STARTED, no slot held."""
    cli = Cli(tmp_path / "home", tmp_path / "scratch")
    same, other = clips["same"], clips["other"]
    flag = tmp_path / "publishing.pid"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PAUSE_PUBLISH)
    points = {
        "probe": lambda: list(cli.scratch.glob("stereospot-source-*")),
        "cut": lambda: list(cli.scratch.glob("stereospot-split-*")),
        "segments": lambda: cli.stereo_done(same) >= 2,
        "join": lambda: list(cli.scratch.glob("stereospot-final-*/*.mp4")),
        "publish": flag.is_file,
    }
    table, dead_runs = [], []
    for stage in STAGES:
        log = tmp_path / f"killed-at-{stage}.log"
        extra = {"PYTHONPATH": str(hook), "STEREOSPOT_TEST_PAUSE_PUBLISH": str(flag)} if stage == "publish" else {}
        started = time.monotonic()
        proc = cli.start(same, log, **extra)
        try:
            _wait(points[stage], proc, log)
            reached = time.monotonic() - started
            done_at_kill = cli.stereo_done(same)
        finally:
            _stop(proc)
        assert not [p for p in _outputs(cli.home) if not p.name.startswith(".")], "a complete output appeared"
        text = log.read_text()
        if dead_runs:
            assert f"run {dead_runs[-1]} had died with its process" in text, text
        (dead,) = [r for r in cli.runs() if r.status == DagsterRunStatus.STARTED]  # what nothing recovered before
        if stage == "segments":
            with cli.instance() as instance:
                holders = [s.run_id for s in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots]
            assert holders in ([dead.run_id], [])  # held while a segment converts
        dead_runs.append(dead.run_id)
        table.append((stage, reached, done_at_kill))

    started = time.monotonic()
    logs = {name: tmp_path / f"{name}.log" for name in ("same", "other")}
    procs = {"same": cli.start(same, logs["same"]), "other": cli.start(other, logs["other"])}
    try:
        codes = {name: p.wait(timeout=BOUND_S) for name, p in procs.items()}
    finally:
        for p in procs.values():
            _stop(p)
    seconds = time.monotonic() - started
    texts = {name: log.read_text() for name, log in logs.items()}
    assert codes == {"same": 0, "other": 0}, texts
    assert f"run {dead_runs[-1]} had died with its process" in texts["same"] + texts["other"]
    assert f"reused {SEGMENTS} of {SEGMENTS} segment(s)" in texts["same"]

    _same_frames(_frames(outbox_file(cli.home / "outbox", "trip")), clips["reference"]["trip.mp4"])
    _same_frames(_frames(outbox_file(cli.home / "outbox", "other")), clips["reference"]["other.mp4"])
    assert len(_outputs(cli.home)) == 2
    assert [p for p in cli.home.rglob("*") if ".partial" in p.name] == []
    with cli.instance() as instance:
        assert not [r for r in instance.get_runs() if r.status in _ACTIVE]
        for run_id in dead_runs:
            assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
            assert "is gone" in _failure_message(instance, run_id)
        assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []
    print("\nkill point | what the next command did | killed after | segments finished at the kill")
    for i, (stage, reached, done) in enumerate(table):
        after = "recovered it and, killed itself at " + STAGES[i + 1] if i + 1 < len(STAGES) else \
            f"recovered it and finished (with another video at once) in {seconds:.1f}s, reusing {SEGMENTS}/{SEGMENTS}"
        print(f"{stage} | {after} | {reached:.1f}s | {done}/{SEGMENTS}")


def _holder(cli: Cli, pid: int) -> str:
    """A run of a live process holding the one `gpu` slot (as a long conversion would)."""
    with cli.instance() as instance:
        run = create_run_for_test(instance, job_name="__ephemeral_asset_job__", status=DagsterRunStatus.STARTED,
                                  tags={HOST_TAG: socket.gethostname(), PID_TAG: str(pid),
                                        STARTED_TAG: f"{process_start_time(pid):.2f}",
                                        "stereospot/source": "long holiday.mp4"})
        instance.event_log_storage.initialize_concurrency_limit_to_default("gpu")
        assert instance.event_log_storage.claim_concurrency_slot(
            "gpu", run.run_id, "stereo_segments.render_stereo_segment[segment_00000]").is_claimed
        return run.run_id


def test_waiting_for_a_held_slot_is_visible_costs_no_cpu_and_sigterm_cancels_it(tmp_path, clips):
    cli = Cli(tmp_path / "home", tmp_path / "scratch")
    # What the CLI does first (copy the shipped dagster.yaml): the holder needs the instance before it.
    (cli.home / "dagster").mkdir(parents=True)
    shutil.copyfile(REPO / "dagster.yaml", cli.home / "dagster" / "dagster.yaml")
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        holder = _holder(cli, sleeper.pid)
        log = tmp_path / "waiting.log"
        proc = cli.start(clips["other"], log)
        try:
            _wait(lambda: "waiting for the gpu slot" in log.read_text(), proc, log, timeout=120, every=0.2)
            text = log.read_text()
            assert f"held by run {holder[:8]} (long holiday.mp4), pid {sleeper.pid}" in text, text
            assert re.search(r"step stereo_segments\.render_stereo_segment\[segment_00000\] since \d\d:\d\d:\d\d", text)
            cpu = _cpu_seconds(proc.pid)
            time.sleep(4)
            waiting_cpu = _cpu_seconds(proc.pid) - cpu
            assert waiting_cpu < 0.4, f"{waiting_cpu:.2f} s of CPU in 4 s of waiting"
            os.kill(proc.pid, signal.SIGTERM)
            stopped_at = time.monotonic()
            code = proc.wait(timeout=15)
            stop_seconds = time.monotonic() - stopped_at
        finally:
            _stop(proc)
        assert code == 128 + signal.SIGTERM and stop_seconds < 5, log.read_text()
        assert "canceled" in log.read_text()
        with cli.instance() as instance:
            (run,) = [r for r in instance.get_runs() if r.run_id != holder]
            assert run.status == DagsterRunStatus.CANCELED
            slots = instance.event_log_storage.get_concurrency_info("gpu")
            assert [s.run_id for s in slots.claimed_slots] == [holder]  # the live holder keeps its slot
            assert run.run_id not in {p.run_id for p in slots.pending_steps}
    finally:
        sleeper.kill()
        sleeper.wait()
    # The holder's process is gone now: the next command frees its slot and converts.
    log = tmp_path / "after.log"
    proc = cli.start(clips["other"], log)
    try:
        assert proc.wait(timeout=BOUND_S) == 0, log.read_text()
    finally:
        _stop(proc)
    assert f"run {holder} had died with its process" in log.read_text()
    _same_frames(_frames(outbox_file(cli.home / "outbox", "other")), clips["reference"]["other.mp4"])
    print(f"\nwaiting: {waiting_cpu:.2f} s CPU in 4 s; SIGTERM stopped it in {stop_seconds:.1f}s")


def test_ctrl_c_in_the_middle_of_the_segments_cancels_and_keeps_finished_ones(tmp_path, clips):
    cli = Cli(tmp_path / "home", tmp_path / "scratch")
    log = tmp_path / "interrupted.log"
    proc = cli.start(clips["same"], log)
    try:
        _wait(lambda: cli.stereo_done(clips["same"]) >= 1, proc, log)
        os.kill(proc.pid, signal.SIGINT)
        stopped_at = time.monotonic()
        code = proc.wait(timeout=15)
        stop_seconds = time.monotonic() - stopped_at
    finally:
        _stop(proc)
    assert code == 128 + signal.SIGINT and stop_seconds < 5, log.read_text()
    kept = cli.stereo_done(clips["same"])
    assert 1 <= kept
    (run,) = cli.runs()
    assert run.status == DagsterRunStatus.CANCELED
    with cli.instance() as instance:
        assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []
    assert _outputs(cli.home) == []
    print(f"\nSIGINT during the segments: stopped in {stop_seconds:.1f}s, {kept} finished segment(s) kept")


SOAK_BOUND_S = 420


@pytest.mark.slow
@pytest.mark.timeout(SOAK_BOUND_S + 300)
def test_cli_and_ui_share_one_state_folder_and_the_daemon_recovers_a_killed_cli_run(tmp_path, clips):
    """`stereospot ui` (webserver, daemon, sensors) and CLI conversions on one SQLite instance: a
    CLI run killed beside the UI is marked failed by the daemon's dead_run_sensor with no command
    run; then 10 conversions from both sides at once (5 CLI commands, 5 inbox drops) all finish,
    each video converted once, with no "database is locked" anywhere."""
    from stereospot_pipeline_tests.support.ui import Ui
    from stereospot_pipeline_tests.test_load import _tiny

    cli = Cli(tmp_path / "home", tmp_path / "scratch")
    ui = Ui(cli.home, tmp_path / "ui.log")
    cli_clips = [clips["same"], *(_tiny(tmp_path / f"cli {i}.mp4", i) for i in range(4))]
    inbox_clips = [_tiny(tmp_path / f"dropped {i}.mp4", 10 + i) for i in range(5)]
    logs = []
    try:
        ui.start()
        log = tmp_path / "killed.log"
        proc = cli.start(clips["same"], log)
        try:
            _wait(lambda: cli.stereo_done(clips["same"]) >= 1, proc, log, timeout=180)
        finally:
            _stop(proc)
        (dead,) = cli.runs()
        killed_at = time.monotonic()
        while cli.runs()[0].status != DagsterRunStatus.FAILURE:
            assert time.monotonic() - killed_at < 90, f"not recovered by the daemon:\n{ui.log.read_text()[-3000:]}"
            time.sleep(1)
        recovered_after = time.monotonic() - killed_at

        started = time.monotonic()
        inbox = cli.home / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        past = time.time() - 30  # settled: the sensor takes files unchanged for a while
        for clip in inbox_clips:
            os.replace(clip, inbox / clip.name)
            os.utime(inbox / clip.name, (past, past))
        procs = []
        for i, clip in enumerate(cli_clips):
            logs.append(tmp_path / f"cli-{i}.log")
            procs.append(cli.start(clip, logs[-1]))
        codes = [p.wait(timeout=SOAK_BOUND_S) for p in procs]
        assert codes == [0] * len(procs), [log.read_text()[-2000:] for log in logs]
        expected = 10
        while len([p for p in _outputs(cli.home) if p.suffix == ".mp4"]) < expected:
            assert time.monotonic() - started < SOAK_BOUND_S, f"{_outputs(cli.home)}\n{ui.log.read_text()[-3000:]}"
            time.sleep(1)
        # No run left in progress (the daemon's runs end after publishing).
        while [r for r in cli.runs() if r.status in _ACTIVE]:
            assert time.monotonic() - started < SOAK_BOUND_S, "runs still in progress"
            time.sleep(1)
        soak_seconds = time.monotonic() - started
        time.sleep(6)  # another sensor tick: nothing is converted twice
    finally:
        ui.stop()
        for p in locals().get("procs", []):
            _stop(p)

    texts = [ui.log.read_text(), *(log.read_text() for log in logs)]
    assert not [t for t in texts if "database is locked" in t]
    outputs = _outputs(cli.home)
    assert len(outputs) == 10 and all(p.suffix == ".mp4" for p in outputs)
    for clip in [*cli_clips, *inbox_clips]:
        outbox_file(cli.home / "outbox", clip.stem)
    _same_frames(_frames(outbox_file(cli.home / "outbox", "trip")), clips["reference"]["trip.mp4"])
    from dagster import AssetKey, AssetRecordsFilter

    with cli.instance() as instance:
        runs = instance.get_runs()
        statuses = sorted(r.status.value for r in runs if r.run_id != dead.run_id)
        assert statuses == ["SUCCESS"] * 10, statuses
        published = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey("published_video")),
                                                    limit=100).records
        per_video = sorted(r.partition_key for r in published)
        assert len(per_video) == len(set(per_video)) == 10
        assert "is gone" in _failure_message(instance, dead.run_id)
    print(f"\nui beside: the daemon recovered the killed CLI run in {recovered_after:.0f}s; soak of 10 "
          f"conversions (5 CLI at once + 5 inbox drops) in {soak_seconds:.0f}s, no 'database is locked'")


def test_the_daemon_sensor_recovers_a_daemon_run_whose_worker_was_killed(tmp_path):
    """A run launched by the daemon names its worker when its resources are set up; killed, the
    dead_run_sensor marks it failed and frees its slot, and a live run is left alone."""
    from dagster import build_sensor_context, instance_for_test

    from stereospot_pipeline.defs.recovery import dead_run_sensor
    from stereospot_pipeline.runs import Worker, record_worker

    with instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 1}}}) as instance:
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        try:
            runs = [create_run_for_test(instance, job_name="convert_video", status=DagsterRunStatus.STARTED)
                    for _ in range(2)]
            # What a run worker does when its resources are set up: this process is the live one's.
            record_worker(instance, runs[1])
            assert Worker.of(instance.get_run_by_id(runs[1].run_id).tags).pid == os.getpid()
            instance.add_run_tags(runs[0].run_id, worker_tags_of(worker.pid))
            instance.event_log_storage.initialize_concurrency_limit_to_default("gpu")
            assert instance.event_log_storage.claim_concurrency_slot("gpu", runs[0].run_id, "render").is_claimed
        finally:
            worker.kill()
            worker.wait()
        result = dead_run_sensor(build_sensor_context(instance=instance))
        assert runs[0].run_id in result.skip_message
        assert instance.get_run_by_id(runs[0].run_id).status == DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(runs[1].run_id).status == DagsterRunStatus.STARTED
        assert "is gone" in _failure_message(instance, runs[0].run_id)
        assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []


def test_a_retry_is_not_taken_for_its_dead_parent(tmp_path):
    """Dagster copies a run's tags into its retry: the parent's dead worker is not the retry's, so
    the sensor leaves a retry that has not named its own worker yet alone (it used to mark it
    failed at once, and the interrupted video never finished), and the retry then names its own."""
    from dagster import build_sensor_context, instance_for_test
    from dagster._core.storage.tags import PARENT_RUN_ID_TAG, ROOT_RUN_ID_TAG

    from stereospot_pipeline.defs.recovery import dead_run_sensor
    from stereospot_pipeline.runs import Worker, record_worker

    with instance_for_test() as instance:
        worker = subprocess.Popen([sys.executable, "-c", "pass"])
        worker.wait()
        dead = {HOST_TAG: socket.gethostname(), PID_TAG: str(worker.pid), STARTED_TAG: "1.00"}
        parent = create_run_for_test(instance, job_name="convert_video", status=DagsterRunStatus.FAILURE, tags=dead)
        retry = create_run_for_test(instance, job_name="convert_video", status=DagsterRunStatus.STARTING, tags={
            **dead, PARENT_RUN_ID_TAG: parent.run_id, ROOT_RUN_ID_TAG: parent.run_id})
        dead_run_sensor(build_sensor_context(instance=instance))
        assert instance.get_run_by_id(retry.run_id).status == DagsterRunStatus.STARTING
        record_worker(instance, instance.get_run_by_id(retry.run_id))
        tags = instance.get_run_by_id(retry.run_id).tags
        assert Worker.of(tags, retry.run_id).pid == os.getpid()
        dead_run_sensor(build_sensor_context(instance=instance))
        assert instance.get_run_by_id(retry.run_id).status == DagsterRunStatus.STARTING


def worker_tags_of(pid: int) -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), STARTED_TAG: f"{process_start_time(pid):.2f}"}
