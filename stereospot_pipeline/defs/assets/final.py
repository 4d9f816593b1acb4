
import tempfile
from contextlib import ExitStack
from pathlib import Path, PurePosixPath

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from stereospot_pipeline import keys
from stereospot_pipeline.defs.assets.stereo import stereo_segments
from stereospot_pipeline.defs.errors import reported_as_failure
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.ingest import registry_key
from stereospot_pipeline.media.mux import concat_and_mux
from stereospot_pipeline.media.probe import VideoInfo, probe_video
from stereospot_pipeline.storage import ObjectStore


def output_name(source_name: str, suffix: str) -> str:
    """``holiday.mov`` -> ``holiday_LRF_Full_SBS.mp4``: players pick the layout from the suffix."""
    stem = PurePosixPath(source_name).stem
    return f"{stem}{suffix}.mp4"


@asset(partitions_def=videos, group_name="conversion", deps=[stereo_segments], kinds={"video"})
def final_video(context: AssetExecutionContext, store: ObjectStore, outbox: ObjectStore) -> MaterializeResult:
    """The stereo segments joined, with the source's audio muxed once, verified, then published."""
    key = context.partition_key
    source = VideoInfo.model_validate(raw := store.get_json(keys.source_info(key)))
    manifest = store.get_json(keys.stereo_manifest(key))
    name = output_name(store.get_json(registry_key(key))["name"], manifest["suffix"])
    with tempfile.TemporaryDirectory(prefix="stereospot-final-") as tmp, ExitStack() as stack, reported_as_failure():
        parts = [stack.enter_context(store.local_copy(s["key"])) for s in manifest["segments"]]
        src = stack.enter_context(store.local_copy(raw["storage_key"]))
        out = Path(tmp) / name
        concat_and_mux(parts, src, source, out)
        result = probe_video(out)
        _verify(source, result, name)
        store.put_file(out, keys.final(key, name))
        # Published last and atomically: a failed run never leaves a partial file in the outbox.
        outbox.put_file(out, name)
    context.log.info(f"published {outbox.url(name)}: {result.frames} frames, {result.duration_s:.2f}s")
    params = manifest["params"]
    return MaterializeResult(metadata={
        "output": MetadataValue.path(outbox.url(name)),
        "storage_key": keys.final(key, name),
        "layout": params["layout"],
        "resolution": f"{result.width}x{result.height}",
        "width": result.width,
        "height": result.height,
        "frames": result.frames,
        "source_frames": source.frames,
        "duration_s": MetadataValue.float(result.duration_s),
        "fps": MetadataValue.float(result.fps),
        "size_bytes": result.size_bytes,
        "bitrate_kbps": MetadataValue.float(result.size_bytes * 8 / 1000 / max(result.duration_s, 1e-6)),
        "audio_tracks": len(result.audio),
        "divergence": MetadataValue.float(params["divergence"]),
        "convergence": MetadataValue.float(params["convergence"]),
    })


def _verify(source: VideoInfo, result: VideoInfo, name: str) -> None:
    problems = []
    if result.frames != source.frames:
        problems.append(f"{result.frames} frames, source has {source.frames}")
    if abs(result.duration_s - source.duration_s) > 1.5 / max(source.fps, 1.0):
        problems.append(f"duration {result.duration_s:.3f}s, source {source.duration_s:.3f}s")
    if len(result.audio) != len(source.audio):
        problems.append(f"{len(result.audio)} audio tracks, source has {len(source.audio)}")
    if problems:
        raise Failure(f"{name} was not published: " + "; ".join(problems), allow_retries=False)
