import re
import tempfile
import unicodedata
from contextlib import ExitStack
from pathlib import Path, PurePosixPath

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from stereospot_pipeline import keys
from stereospot_pipeline.defs.assets.stereo import ENGINE_VERSION, stereo_segments
from stereospot_pipeline.defs.errors import reported_as_failure
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.ingest import registry_key
from stereospot_pipeline.media.mux import concat_and_mux
from stereospot_pipeline.media.preview import (
    THUMB_WIDTH,
    depth_preview,
    frame_at,
    markdown_image,
    png_bytes,
    preview_key,
    thumbnail,
)
from stereospot_pipeline.media.probe import VideoInfo, probe_video
from stereospot_pipeline.stereo.params import StereoParams
from stereospot_pipeline.storage import ObjectStore


def output_name(source_name: str, suffix: str) -> str:
    """``holiday.mov`` -> ``holiday_LRF_Full_SBS.mp4``: players pick the layout from the suffix.

    The name is made safe for every store and shell: accents folded to ASCII, anything but
    letters, digits, ``._ -`` dropped, bounded length.
    """
    stem = unicodedata.normalize("NFKD", PurePosixPath(source_name).stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9._ -]+", "", stem).strip(" .-_")[:150] or "video"
    return f"{stem}{suffix}.mp4"


def final_name(store: ObjectStore, key: str) -> str:
    manifest = store.get_json(keys.stereo_manifest(key))
    return output_name(store.get_json(registry_key(key))["name"], manifest["suffix"])


# Everything made from the stereo step carries the engine version: Dagster does not carry a
# changed code version downstream, so each marks its own partitions stale after an engine change.
@asset(partitions_def=videos, group_name="conversion", deps=[stereo_segments], kinds={"video"},
       code_version=ENGINE_VERSION)
def final_video(context: AssetExecutionContext, store: ObjectStore) -> MaterializeResult:
    """The stereo segments joined, with the source's audio muxed once, in work storage; the asset
    checks (defs/checks.py) verify it before ``published_video`` releases it."""
    key = context.partition_key
    source = VideoInfo.model_validate(raw := store.get_json(keys.source_info(key)))
    manifest = store.get_json(keys.stereo_manifest(key))
    name = final_name(store, key)
    stored = keys.final(key, name)
    with tempfile.TemporaryDirectory(prefix="stereospot-final-") as tmp, ExitStack() as stack, reported_as_failure():
        parts = [stack.enter_context(store.local_copy(s["key"])) for s in manifest["segments"]]
        src = stack.enter_context(store.local_copy(raw["storage_key"]))
        out = Path(tmp) / name
        concat_and_mux(parts, src, source, out)
        result = probe_video(out)
        store.put_file(out, stored)
        params = manifest["params"]
        # The same moment in the output and, as the engine sees it, in depth.
        frame = frame_at(out)
        previews = {"frame": (frame, THUMB_WIDTH * frame.shape[1] // source.width),
                    "depth": (depth_preview(frame_at(src), StereoParams.model_validate(params)), THUMB_WIDTH)}
    for label, (rgb, _) in previews.items():
        store.put_bytes(png_bytes(rgb), preview_key(stored, label))
    context.log.info(f"joined {name}: {result.frames} frames, {result.duration_s:.2f}s")
    return MaterializeResult(metadata={
        "storage_key": stored,
        "storage_url": MetadataValue.url(store.link(stored)),
        "storage_location": MetadataValue.path(store.location(stored)),
        "preview": MetadataValue.md("\n\n".join(
            markdown_image(png_bytes(thumbnail(rgb, width)), f"{label} at 50%") for label, (rgb, width) in previews.items())),
        "preview_files": MetadataValue.json({label: store.url(preview_key(stored, label)) for label in previews}),
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


@asset(partitions_def=videos, group_name="conversion", deps=[final_video], kinds={"video"},
       code_version=ENGINE_VERSION)
def published_video(context: AssetExecutionContext, store: ObjectStore, outbox: ObjectStore) -> MaterializeResult:
    """The final video copied to the outbox. It runs only after final_video's blocking checks
    pass, so a bad output never reaches users."""
    key = context.partition_key
    name = final_name(store, key)
    with store.local_copy(keys.final(key, name)) as local:
        # One atomic write: the outbox never holds a partial file.
        outbox.put_file(local, name)
    context.log.info(f"published {outbox.url(name)}")
    # A clickable link (presigned on S3, so it expires) beside the stable address, and the key the
    # delete job removes.
    return MaterializeResult(metadata={"output": MetadataValue.path(outbox.location(name)),
                                       "output_url": MetadataValue.url(outbox.link(name)),
                                       "outbox_key": name})
