"""The local inbox sensor: a video dropped into a folder becomes a partition and a run."""


import json
import time
from pathlib import Path, PurePosixPath

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
from stereospot_pipeline.defs.video_settings import run_config
from stereospot_pipeline.errors import StereospotError
from stereospot_pipeline.ingest import CHUNK_BYTES, content_id, hash_chunks, is_video_name, register_video, save_settings
from stereospot_pipeline.settings_file import FOLDER_FILE, folder_settings
from stereospot_pipeline.storage import ObjectStore

# Hashing large files is the slow part of a tick: stop early, well inside the 60 s tick limit. The
# budget is checked between chunks inside a file too, so a film's hash spreads over ticks.
_TICK_BUDGET_SECONDS = 30.0


class LocalInbox(ConfigurableResource):
    path: str
    settle_seconds: float = 2.0
    max_per_tick: int = 10


def _inbox_files(root: Path) -> list[tuple[Path, str]]:
    """Files in the inbox and its subfolders (mirrored in the outbox), hidden ones left out (being
    copied in by some tools), with their paths relative to the inbox."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if not any(part.startswith(".") for part in rel.parts) and path.is_file():
            found.append((path, rel.as_posix()))
    return sorted(found, key=lambda f: f[1])


@sensor(job=convert_video, minimum_interval_seconds=5, default_status=DefaultSensorStatus.RUNNING)
def inbox_sensor(context: SensorEvaluationContext, inbox: LocalInbox, store: ObjectStore):
    """Registers each new or changed video (by content hash) once; identical re-drops are ignored.

    The cursor remembers each file's (size, mtime, hash) by its path below the inbox, so unchanged
    files are not re-hashed, and the chunk digests of a file whose hashing ran out of tick time,
    so the next tick continues where this one stopped.
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
    for path, rel in _inbox_files(root):
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
        prior = current.get(rel)
        unchanged = bool(prior) and prior[:2] == stamp
        if unchanged and prior[2] is not None:
            continue
        if path.name == FOLDER_FILE:
            continue
        if not is_video_name(path.name):
            skipped.append(f"{rel}: not a video file extension")
            continue
        if now - stat.st_mtime < inbox.settle_seconds or stat.st_size == 0 and now - stat.st_mtime < 60:
            continue  # still being written; look again next tick
        if len(requests) >= inbox.max_per_tick or time.monotonic() - started > _TICK_BUDGET_SECONDS:
            break
        try:
            # The nearest stereospot.toml from the file's folder up to the inbox sets its conversion.
            conversion, settings_path = folder_settings(path, root)
        except StereospotError as exc:
            skipped.append(f"{rel}: waiting for a valid settings file ({exc})")
            continue
        # [size, mtime, None, chunk digests so far] while a large file is part-hashed.
        digests = list(prior[3]) if unchanged else []
        if not hash_chunks(path, digests, deadline=started + _TICK_BUDGET_SECONDS):
            current[rel] = [*stamp, None, digests]
            context.log.info(f"inbox: hashing {rel}: {min(len(digests) * CHUNK_BYTES, stat.st_size) >> 20} of "
                             f"{stat.st_size >> 20} MiB, continued next tick")
            break
        sha = content_id(digests)
        current[rel] = [*stamp, sha]
        folder = str(PurePosixPath(rel).parent)
        key = register_video(store, uri=str(path.resolve()), name=path.name, sha256=sha, size=stat.st_size,
                             folder="" if folder == "." else folder)
        if key in new_keys or context.instance.has_dynamic_partition(videos.name, key):
            continue
        new_keys.append(key)
        tags = {"stereospot/source": path.name}
        if settings_path is not None:
            # Stored with the video (later conversions from the UI use them too) and shown as the run's config.
            save_settings(store, key, conversion)
            tags["stereospot/settings-file"] = str(settings_path.relative_to(root))
        requests.append(RunRequest(run_key=key, partition_key=key, tags=tags, run_config=run_config(conversion)))
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
