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
the next tick continues there.
"""

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import PurePosixPath

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
from stereospot_pipeline.ingest import is_video_name, register_video
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

    objects = get_objects(bucket, f"{prefix}/" if prefix else "", since_last_modified=since,
                          client=s3_client(inbox.endpoint_url))
    handled = dict(seen)
    new_keys: list[str] = []
    requests: list[RunRequest] = []
    skipped: list[str] = []
    stopped_at: datetime | None = None
    for obj in objects:
        key, etag = obj["Key"], obj["ETag"].strip('"')
        if seen.get(key) == etag:
            continue
        if not is_video_name(key) or obj["Size"] == 0:
            skipped.append(key)
            handled[key] = etag
            continue
        if len(requests) >= inbox.max_per_tick:
            stopped_at = obj["LastModified"]
            break
        name = PurePosixPath(key).name
        # The folders between the inbox prefix and the object, mirrored in the outbox.
        folder = str(PurePosixPath(key[len(prefix):].lstrip("/")).parent)
        pkey = register_video(store, uri=f"s3://{bucket}/{key}", name=name, sha256=s3_video_id(etag),
                              size=obj["Size"], folder="" if folder == "." else folder)
        handled[key] = etag
        if pkey in new_keys or context.instance.has_dynamic_partition(videos.name, pkey):
            continue
        new_keys.append(pkey)
        requests.append(RunRequest(run_key=f"{pkey}@{etag}", partition_key=pkey,
                                   tags={"stereospot/source": name[:200]}))

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
