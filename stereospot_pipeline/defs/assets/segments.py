import hashlib
import json
import tempfile
from bisect import bisect_left
from fractions import Fraction
from pathlib import Path

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, TableRecord, asset

from stereospot_pipeline import keys
from stereospot_pipeline.defs.assets.source import source_video
from stereospot_pipeline.defs.errors import reported_as_failure
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.defs.tables import SEGMENT_SCHEMA
from stereospot_pipeline.defs.video_settings import with_stored
from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.media.probe import VideoInfo
from stereospot_pipeline.media.segment import plan_segments, presentation_times, split_video
from stereospot_pipeline.media.selection import SegmentOptions
from stereospot_pipeline.storage import ObjectStore


class SegmentsConfig(Config, SegmentOptions):
    """Segment length, trim window and frame-rate cap (fields in ``media/selection.py``)."""


@asset(partitions_def=videos, group_name="conversion", deps=[source_video], kinds={"ffmpeg"})
def segments(context: AssetExecutionContext, config: SegmentsConfig, store: ObjectStore) -> MaterializeResult:
    """The video track split, by stream copy at clean keyframes, into independently convertible
    pieces that together hold every source frame exactly once."""
    key = context.partition_key
    config = with_stored(context, config, store, "segments")
    raw = store.get_json(keys.source_info(key))
    info = VideoInfo.model_validate(raw)
    with tempfile.TemporaryDirectory(prefix="stereospot-split-") as tmp, reported_as_failure():
        with store.local_copy(raw["storage_key"]) as src:
            # Trimming or capping the rate counts frames by their times: one packet scan.
            times = presentation_times(src, info.video_index) if config.selects else None
            select = {"start": config.start, "end": config.end, "max_fps": config.max_fps, "times": times}
            plans = plan_segments(info, config.segment_seconds, **select)
            try:
                chunks = split_video(src, plans, Path(tmp) / "chunks", info.video_index)
            except InvalidVideoError as exc:
                # Some streams cannot be cut cleanly by copy; one segment still converts them.
                context.log.warning(f"{exc}; falling back to a single segment")
                plans = plan_segments(info, info.duration_s + 1.0, **select)
                chunks = split_video(src, plans, Path(tmp) / "single", info.video_index)
        selection = _selection(config, plans, times, info.fps) if config.selects else None
        plan_id = hashlib.sha256(
            ("|".join(f"{p.start_frame}:{p.frames}" for p in plans) + info.model_dump_json()
             + (json.dumps(selection, sort_keys=True) if selection else "")).encode()
        ).hexdigest()[:12]
        entries = []
        for plan, chunk in zip(plans, chunks):
            chunk_key = keys.segment_chunk(key, plan_id, plan.index)
            store.put_file(chunk, chunk_key)
            entries.append({**plan.model_dump(), "key": chunk_key, "size_bytes": chunk.stat().st_size})
    store.put_json({"plan_id": plan_id, "segments": entries, "selection": selection}, keys.segment_plan(key))
    lengths = [p.duration_s for p in plans]
    return MaterializeResult(metadata={
        "count": len(plans),
        "plan_id": plan_id,
        "segment_seconds_target": config.segment_seconds,
        "segment_seconds_max": MetadataValue.float(max(lengths)),
        "segment_seconds_min": MetadataValue.float(min(lengths)),
        "frames": sum(p.frames for p in plans),
        "selection": MetadataValue.json(selection or {"all": "every frame of the source"}),
        "segments": MetadataValue.table(
            [TableRecord({"index": e["index"], "start_s": round(e["start_s"], 3),
                          "duration_s": round(e["duration_s"], 3), "frames": e["frames"],
                          "size_bytes": e["size_bytes"]}) for e in entries],
            schema=SEGMENT_SCHEMA,
        ),
    })



def _selection(config: SegmentsConfig, plans, times: list[Fraction], fps: float) -> dict:
    """What a trim or frame-rate cap kept, for the join (where audio starts and ends), the output
    name and the frame-count check: the window's exact source times, frames and duration."""
    first, stop = Fraction(plans[0].origin), plans[-1].end_time
    last = times[bisect_left(times, Fraction(stop) - Fraction(plans[-1].tolerance_s)) - 1] if stop else times[-1]
    return {"start": config.start, "end": config.end, "max_fps": config.max_fps,
            "start_time": plans[0].origin, "end_time": stop, "frames": sum(p.frames for p in plans),
            "duration_s": float(last - first) + 1 / fps}
