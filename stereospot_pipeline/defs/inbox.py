"""The local inbox sensor: a video dropped into a folder becomes a partition and a run."""


import json
import time
from pathlib import Path

from dagster import (
    ConfigurableResource,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from stereospot_pipeline.defs.jobs import convert_video
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.ingest import file_sha256, is_video_name, register_video
from stereospot_pipeline.storage import ObjectStore

# Hashing large files is the slow part of a tick: stop early, well inside the 60 s tick limit.
_TICK_BUDGET_SECONDS = 30.0


class LocalInbox(ConfigurableResource):
    path: str
    settle_seconds: float = 2.0
    max_per_tick: int = 10


@sensor(job=convert_video, minimum_interval_seconds=5, default_status=DefaultSensorStatus.RUNNING)
def inbox_sensor(context: SensorEvaluationContext, inbox: LocalInbox, store: ObjectStore):
    """Registers each new or changed video (by content hash) once; identical re-drops are ignored.

    The cursor remembers each file's (size, mtime, hash) so unchanged files are not re-hashed.
    """
    root = Path(inbox.path)
    root.mkdir(parents=True, exist_ok=True)
    seen: dict = json.loads(context.cursor) if context.cursor else {}
    now = time.time()
    started = time.monotonic()
    # Entries of files still present carry over, so a tick cut short never forgets a hash.
    current = {name: v for name, v in seen.items() if (root / name).is_file()}
    new_keys: list[str] = []
    requests: list[RunRequest] = []
    skipped: list[str] = []
    for path in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
        prior = current.get(path.name)
        if prior and prior[:2] == stamp:
            continue
        if not is_video_name(path.name):
            skipped.append(f"{path.name}: not a video file extension")
            continue
        if now - stat.st_mtime < inbox.settle_seconds or stat.st_size == 0 and now - stat.st_mtime < 60:
            continue  # still being written; look again next tick
        if len(requests) >= inbox.max_per_tick or time.monotonic() - started > _TICK_BUDGET_SECONDS:
            break
        sha = file_sha256(path)
        current[path.name] = [*stamp, sha]
        key = register_video(store, uri=str(path.resolve()), name=path.name, sha256=sha, size=stat.st_size)
        if key in new_keys or context.instance.has_dynamic_partition(videos.name, key):
            continue
        new_keys.append(key)
        requests.append(RunRequest(run_key=key, partition_key=key, tags={"stereospot/source": path.name}))
    for name in skipped:
        context.log.info(f"inbox: skipped {name}")
    if not requests:
        return SensorResult(skip_reason=SkipReason("no new videos in the inbox"), cursor=json.dumps(current))
    context.log.info(f"inbox: registering {', '.join(new_keys)}")
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[videos.build_add_request(new_keys)],
        cursor=json.dumps(current),
    )
