"""Runs whose process died: who ran each conversion, whether it still lives, and cleaning up after it.

A conversion started by ``stereospot convert`` runs inside that command's own process (Dagster's
in-process ``materialize``); no daemon watches it. If the process is killed (SIGKILL, the OOM
killer, a power cut) its run stays STARTED for ever and keeps its slot of the ``gpu`` pool, so
every later stereo step would wait for a slot that is never given back. So each CLI run carries
tags naming its worker (host, pid and that process's start time, which tells a live process from
a later one that reused the pid), and every CLI command and the daemon's ``dead_run_sensor``
call :func:`recover_dead_runs`: runs of this host whose worker is gone are marked failed with a
reason a person understands, and their pool slots are freed. Finished segments stay in the store
under their content keys, so converting the video again resumes where the dead run stopped.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.events import JobFailureData, RunFailureReason
from dagster._core.storage.tags import PARENT_RUN_ID_TAG

HOST_TAG = "stereospot/worker-host"
PID_TAG = "stereospot/worker-pid"
STARTED_TAG = "stereospot/worker-started"
# The run the worker tags were recorded for: Dagster copies a run's tags into its retry, and the
# parent's (dead) worker is not the retry's.
RUN_TAG = "stereospot/worker-run"
# A dead CLI run is not re-executed by the daemon's run retries: the user converts again (and the
# new run reuses the finished segments), so a retry would only race that conversion.
NO_DAEMON_RETRY = {"dagster/max_retries": "0"}

# Runs a worker process may still be executing.
_ACTIVE = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
           DagsterRunStatus.CANCELING]
_FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
# Start times are whole clock ticks after a whole-second boot time: equal within this.
_START_TOLERANCE_S = 1.0


def _boot_time() -> float:
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 22 (starttime, clock ticks after boot); the command name in field 2 may hold spaces.
    fields = stat.rsplit(")", 1)[1].split()
    return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def worker_tags() -> dict[str, str]:
    """Tags identifying the current process as a run's worker."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), STARTED_TAG: f"{process_start_time(pid):.2f}",
            **NO_DAEMON_RETRY}


def record_worker(instance: DagsterInstance | None, run) -> None:
    """Tag ``run`` with the current process as its worker, for runs launched by the daemon (the CLI
    tags its runs when it creates them). Called when the run's resources are set up, which for
    local runs happens once, in the run's own process."""
    if instance is None or run is None or Worker.of(run.tags, run.run_id) is not None:
        return
    tags = worker_tags()
    instance.add_run_tags(run.run_id, {**{k: tags[k] for k in (HOST_TAG, PID_TAG, STARTED_TAG)},
                                       RUN_TAG: run.run_id})


@dataclass(frozen=True)
class Worker:
    host: str
    pid: int
    started: float

    @classmethod
    def of(cls, tags: dict[str, str], run_id: str | None = None) -> "Worker | None":
        """The worker the tags name; with ``run_id``, only if they were set for that run (a
        first run's own tags, or recorded for it), not inherited by a retry from its parent."""
        if run_id is not None and PARENT_RUN_ID_TAG in tags and tags.get(RUN_TAG) != run_id:
            return None
        try:
            return cls(tags[HOST_TAG], int(tags[PID_TAG]), float(tags[STARTED_TAG]))
        except (KeyError, ValueError):
            return None

    def describe(self) -> str:
        started = datetime.fromtimestamp(self.started, timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        return f"pid {self.pid} on {self.host}, started {started}"

    def is_alive(self) -> bool:
        start = process_start_time(self.pid)
        return start is not None and abs(start - self.started) < _START_TOLERANCE_S


def dead_message(worker: Worker) -> str:
    return (f"The stereospot process that ran this conversion ({worker.describe()}) is gone: it was "
            "killed, ran out of memory or the machine went down. Finished segments are kept; convert "
            "the video again to finish it.")


@contextmanager
def _recovery_lock(instance: DagsterInstance) -> Iterator[None]:
    """CLI commands and the daemon's sensor starting at once must not both report one dead run."""
    if not instance.root_directory:
        yield
        return
    with open(Path(instance.root_directory) / ".recovery.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def recover_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark runs of this host whose worker process is gone as failed (canceled if they were being
    canceled) and free every pool slot held by a finished run. Returns the recovered run ids."""
    with _recovery_lock(instance):
        return _recover(instance)


def _recover(instance: DagsterInstance) -> list[str]:
    host = socket.gethostname()
    recovered = []
    for run in instance.get_runs(filters=RunsFilter(statuses=_ACTIVE, tags={HOST_TAG: host})):
        worker = Worker.of(run.tags, run.run_id)
        if worker is None or worker.is_alive():
            continue
        if run.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message=f"Canceled; {dead_message(worker)}")
        else:
            instance.report_run_failed(run, message=dead_message(worker), job_failure_data=JobFailureData(
                error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION))
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        recovered.append(run.run_id)
    free_slots_of_finished_runs(instance)
    return recovered


def free_slots_of_finished_runs(instance: DagsterInstance) -> None:
    """A run that ended without giving its slots back (marked failed from outside, e.g. in the UI)
    would block its pool for ever."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    holders = {slot.run_id for info in storage.get_concurrency_infos(list(storage.get_concurrency_keys())).values()
               for slot in [*info.claimed_slots, *info.pending_steps]}
    for run_id in holders:
        run = instance.get_run_by_id(run_id)
        if run is None or run.status in _FINISHED:
            storage.free_concurrency_slots_for_run(run_id)


@dataclass(frozen=True)
class SlotHolder:
    run_id: str
    step_key: str
    since: datetime | None
    source: str | None
    worker: Worker | None

    def describe(self) -> str:
        what = f"run {self.run_id[:8]}" + (f" ({self.source})" if self.source else "")
        who = f", {self.worker.describe()}" if self.worker else ""
        since = f" since {self.since.astimezone().strftime('%H:%M:%S')}" if self.since else ""
        return f"{what}{who}, step {self.step_key}{since}"


def slot_holders(instance: DagsterInstance, pool: str, exclude_run: str | None = None) -> list[SlotHolder]:
    """Who holds the slots of ``pool`` and since when (the time the slot was assigned)."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    assigned = {(p.run_id, p.step_key): p.assigned_timestamp for p in info.pending_steps if p.assigned_timestamp}
    holders = []
    for slot in info.claimed_slots:
        if slot.run_id == exclude_run:
            continue
        run = instance.get_run_by_id(slot.run_id)
        tags = run.tags if run else {}
        holders.append(SlotHolder(slot.run_id, slot.step_key, assigned.get((slot.run_id, slot.step_key)),
                                  tags.get("stereospot/source"), Worker.of(tags)))
    return holders
