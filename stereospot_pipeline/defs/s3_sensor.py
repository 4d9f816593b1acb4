"""The S3 inbox sensor: a video uploaded under the input prefix becomes a partition and a run.

Identity without downloading: the partition key hashes the object's ETag, not its content. A
single-part upload's ETag is the content MD5 (re-uploading the same bytes is the same video); a
multipart upload's ETag depends on the part size, so it is stable for one upload but the same
bytes uploaded with another part size register again (at worst a duplicate conversion).

Cursor: ``{"since": <ISO time>, "seen": {key: etag}}``. Objects modified after ``since`` are looked
at again every tick and skipped when ``seen`` holds their ETag. ``since`` trails the clock by
``lag_seconds`` because listing order is not arrival order: LastModified of a multipart upload is
when it began, and equal timestamps are common, so an object can show up "in the past". When a tick
stops at ``max_per_tick`` it holds ``since`` just before the first object it did not handle, so
the next tick continues there; so does a video whose folder's settings file is not valid yet.

Settings per folder, as in a local inbox: the nearest ``stereospot.toml`` object from the video's
prefix up to the inbox prefix sets its conversion (``inbox/anaglyph/stereospot.toml`` for
``inbox/anaglyph/trip.mp4``).
"""

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import PurePosixPath

from botocore.exceptions import ClientError
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
from stereospot_pipeline.ingest import is_video_name, register_video, save_settings
from stereospot_pipeline.settings_file import FOLDER_FILE, parse_settings
from stereospot_pipeline.storage import ObjectStore
from stereospot_pipeline.storage.s3 import s3_client, split_s3_url

# Keys named in one log line about skipped objects (a bucket of non-videos must not flood the log).
_SKIPS_LOGGED = 5


class S3Inbox(ConfigurableResource):
    url: str  # s3://bucket/prefix
    endpoint_url: str | None = None
    max_per_tick: int = 10
    lag_seconds: float = 600.0


def s3_video_id(etag: str) -> str:
    """The id registered as the video's sha256 (see the module docstring for why an ETag)."""
    return hashlib.sha256(f"s3-etag:{etag}".encode()).hexdigest()


def _settings_text(client, bucket: str, key: str) -> str | None:
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8", errors="replace")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise StereospotError(f"s3://{bucket}/{key}: cannot read the settings file ({exc})") from exc


def folder_settings(client, bucket: str, prefix: str, key: str, texts: dict) -> tuple[dict, str | None]:
    """The settings for object ``key`` below ``prefix``: the nearest ``stereospot.toml`` from its
    prefix up to the inbox prefix wins (no merging). ``texts`` caches the files read in a tick."""
    folder = PurePosixPath(key).parent
    while True:
        candidate = FOLDER_FILE if str(folder) == "." else f"{folder}/{FOLDER_FILE}"
        if candidate not in texts:
            texts[candidate] = _settings_text(client, bucket, candidate)
        if texts[candidate] is not None:
            return parse_settings(texts[candidate], f"s3://{bucket}/{candidate}"), candidate
        if str(folder) in (prefix.strip("/") or ".", ".") or folder.parent == folder:
            return {}, None
        folder = folder.parent


@sensor(job=convert_video, minimum_interval_seconds=5, default_status=DefaultSensorStatus.RUNNING)
def s3_inbox_sensor(context: SensorEvaluationContext, inbox: S3Inbox, store: ObjectStore):
    """Registers each new or changed object under the inbox prefix once, at most
    ``max_per_tick`` videos per tick."""
    bucket, prefix = split_s3_url(inbox.url)
    state = json.loads(context.cursor) if context.cursor else {}
    since = datetime.fromisoformat(state["since"]) if state.get("since") else None
    seen: dict[str, str] = state.get("seen", {})
    # dagster-aws costs ~0.6 s to import: loaded only where an S3 input prefix is watched.
    from dagster_aws.s3.sensor import get_objects

    client = s3_client(inbox.endpoint_url)
    objects = get_objects(bucket, f"{prefix}/" if prefix else "", since_last_modified=since, client=client)
    handled = dict(seen)
    new_keys: list[str] = []
    requests: list[RunRequest] = []
    skipped: list[str] = []
    stopped_at: datetime | None = None
    texts: dict[str, str | None] = {}
    for obj in objects:
        key, etag = obj["Key"], obj["ETag"].strip('"')
        if seen.get(key) == etag:
            continue
        if PurePosixPath(key).name == FOLDER_FILE:
            handled[key] = etag
            continue
        if not is_video_name(key) or obj["Size"] == 0:
            skipped.append(key)
            handled[key] = etag
            continue
        if len(requests) >= inbox.max_per_tick:
            stopped_at = obj["LastModified"] if stopped_at is None else min(stopped_at, obj["LastModified"])
            break
        try:
            conversion, settings_key = folder_settings(client, bucket, prefix, key, texts)
        except StereospotError as exc:
            # Looked at again every tick (``since`` held before it) until the file is fixed.
            context.log.warning(f"s3 inbox: {key}: waiting for a valid settings file ({exc})")
            stopped_at = obj["LastModified"] if stopped_at is None else min(stopped_at, obj["LastModified"])
            continue
        name = PurePosixPath(key).name
        # The folders between the inbox prefix and the object, mirrored in the outbox.
        folder = str(PurePosixPath(key[len(prefix):].lstrip("/")).parent)
        pkey = register_video(store, uri=f"s3://{bucket}/{key}", name=name, sha256=s3_video_id(etag),
                              size=obj["Size"], folder="" if folder == "." else folder)
        handled[key] = etag
        if pkey in new_keys or context.instance.has_dynamic_partition(videos.name, pkey):
            continue
        new_keys.append(pkey)
        tags = {"stereospot/source": name[:200]}
        if settings_key is not None:
            # Stored with the video (later conversions from the UI use them too) and shown as the run's config.
            save_settings(store, pkey, conversion)
            tags["stereospot/settings-file"] = f"s3://{bucket}/{settings_key}"[:200]
        requests.append(RunRequest(run_key=f"{pkey}@{etag}", partition_key=pkey, tags=tags,
                                   run_config=run_config(conversion)))

    horizon = datetime.now(timezone.utc) - timedelta(seconds=inbox.lag_seconds)
    if stopped_at is not None:
        horizon = min(horizon, stopped_at - timedelta(seconds=1))
    new_since = max(since, horizon) if since else horizon
    cursor = json.dumps({
        "since": new_since.isoformat(),
        "seen": {o["Key"]: handled[o["Key"]] for o in objects
                 if o["LastModified"] > new_since and handled.get(o["Key"]) == o["ETag"].strip('"')},
    })
    if skipped:
        more = f" and {len(skipped) - _SKIPS_LOGGED} more" if len(skipped) > _SKIPS_LOGGED else ""
        context.log.info(f"s3 inbox: skipped (not a video file, or empty): "
                         f"{', '.join(skipped[:_SKIPS_LOGGED])}{more}")
    if not requests:
        return SensorResult(skip_reason=SkipReason("no new videos in the input bucket"), cursor=cursor)
    context.log.info(f"s3 inbox: registering {', '.join(new_keys)}")
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[videos.build_add_request(new_keys)],
        cursor=cursor,
    )
