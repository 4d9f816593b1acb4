import hashlib
import tempfile
from pathlib import Path

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, TableRecord, asset
from pydantic import Field

from stereospot_pipeline import keys
from stereospot_pipeline.defs.assets.source import source_video
from stereospot_pipeline.defs.errors import reported_as_failure
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.defs.tables import SEGMENT_SCHEMA
from stereospot_pipeline.defs.video_settings import with_stored
from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.media.probe import VideoInfo
from stereospot_pipeline.media.segment import plan_segments, split_video
from stereospot_pipeline.storage import ObjectStore


class SegmentsConfig(Config):
    segment_seconds: float = Field(10.0, gt=0, description="target segment length in seconds")


@asset(partitions_def=videos, group_name="conversion", deps=[source_video], kinds={"ffmpeg"})
def segments(context: AssetExecutionContext, config: SegmentsConfig, store: ObjectStore) -> MaterializeResult:
    """The video track split, by stream copy at clean keyframes, into independently convertible
    pieces that together hold every source frame exactly once."""
    key = context.partition_key
    config = with_stored(context, config, store, "segments")
    raw = store.get_json(keys.source_info(key))
    info = VideoInfo.model_validate(raw)
    plans = plan_segments(info, config.segment_seconds)
    with tempfile.TemporaryDirectory(prefix="stereospot-split-") as tmp, reported_as_failure():
        with store.local_copy(raw["storage_key"]) as src:
            try:
                chunks = split_video(src, plans, Path(tmp) / "chunks", info.video_index)
            except InvalidVideoError as exc:
                # Some streams cannot be cut cleanly by copy; one segment still converts them.
                context.log.warning(f"{exc}; falling back to a single segment")
                plans = plan_segments(info, info.duration_s + 1.0)
                chunks = split_video(src, plans, Path(tmp) / "single", info.video_index)
        plan_id = hashlib.sha256(
            ("|".join(f"{p.start_frame}:{p.frames}" for p in plans) + info.model_dump_json()).encode()
        ).hexdigest()[:12]
        entries = []
        for plan, chunk in zip(plans, chunks):
            chunk_key = keys.segment_chunk(key, plan_id, plan.index)
            store.put_file(chunk, chunk_key)
            entries.append({**plan.model_dump(), "key": chunk_key, "size_bytes": chunk.stat().st_size})
    store.put_json({"plan_id": plan_id, "segments": entries}, keys.segment_plan(key))
    lengths = [p.duration_s for p in plans]
    return MaterializeResult(metadata={
        "count": len(plans),
        "plan_id": plan_id,
        "segment_seconds_target": config.segment_seconds,
        "segment_seconds_max": MetadataValue.float(max(lengths)),
        "segment_seconds_min": MetadataValue.float(min(lengths)),
        "frames": sum(p.frames for p in plans),
        "segments": MetadataValue.table(
            [TableRecord({"index": e["index"], "start_s": round(e["start_s"], 3),
                          "duration_s": round(e["duration_s"], 3), "frames": e["frames"],
                          "size_bytes": e["size_bytes"]}) for e in entries],
            schema=SEGMENT_SCHEMA,
        ),
    })

