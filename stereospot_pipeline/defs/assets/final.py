import hashlib
import json
import re
import tempfile
import unicodedata
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path, PurePosixPath

import av
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
from stereospot_pipeline.media.encoders import VideoCodec
from stereospot_pipeline.render import container_packing
from stereospot_pipeline.stereo.params import Layout, StereoParams
from stereospot_pipeline.storage import ObjectStore


_TAG_CHARS = 6


def _safe_part(text: str, limit: int) -> str:
    """Accents folded to ASCII, anything but letters, digits, ``._ -`` dropped, bounded length: safe
    for every store and shell."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._ -]+", "", text).strip(" .-_")[:limit]


def output_tag(sha256: str, params: StereoParams, selection: dict | None = None) -> str:
    """Short id of (content, settings): two videos named alike, or one video converted with other
    settings of the same layout, never share an output name; the same conversion keeps its name.
    A trim or frame-rate cap (``selection``, the segment plan's) is part of the settings."""
    picked = "" if not selection else "|" + json.dumps(
        {k: selection.get(k) for k in ("start", "end", "max_fps")}, sort_keys=True)
    return hashlib.sha256(f"{sha256}|{params.fingerprint()}{picked}".encode()).hexdigest()[:_TAG_CHARS]


def output_name(source_name: str, suffix: str, tag: str) -> str:
    """``VID_0001.mov`` -> ``VID_0001-3f9a2c_LRF_Full_SBS.mp4``: readable stem, then the tag, then the
    layout suffix last (players pick the layout from the end of the name)."""
    stem = _safe_part(PurePosixPath(source_name).stem, 150) or "video"
    return f"{stem}-{tag}{suffix}.mp4"


def output_key(folder: str, name: str) -> str:
    """Where the output goes in the outbox: the source's folder below the inbox (or input prefix)
    mirrored, each part made safe."""
    parts = [p for p in (_safe_part(part, 100) for part in PurePosixPath(folder).parts) if p]
    return "/".join([*parts, name])


def trim_window(selection: dict | None) -> tuple[Fraction, Fraction | None] | None:
    """The source times (first kept frame, end or None) a trim keeps; None when not trimmed."""
    if not selection or not (selection["start"] or selection["end"] is not None):
        return None
    end = selection["end_time"]
    return Fraction(selection["start_time"]), Fraction(end) if end else None


def final_name(store: ObjectStore, key: str) -> str:
    manifest = store.get_json(keys.stereo_manifest(key))
    reg = store.get_json(registry_key(key))
    tag = output_tag(reg["sha256"], StereoParams.model_validate(manifest["params"]), manifest.get("selection"))
    return output_name(reg["name"], manifest["suffix"], tag)


def published_key(store: ObjectStore, key: str) -> str:
    return output_key(store.get_json(registry_key(key)).get("folder", ""), final_name(store, key))


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
        concat_and_mux(parts, src, source, out, window=trim_window(manifest.get("selection")),
                       packing=container_packing(layout := Layout(manifest["params"]["layout"]),
                                                 VideoCodec(manifest["encoding"]["codec"])),
                       half_sphere=layout is Layout.VR180)
        result = probe_video(out)
        store.put_file(out, stored)
        params = manifest["params"]
        # The same moment in the output and, as the engine sees it, in depth; and the output at
        # the moments `stereospot preview` shows by default (10%, 90%), to judge the settings.
        try:
            frame = frame_at(out)
            width = THUMB_WIDTH * frame.shape[1] // source.display_size[0]
            previews = {"frame": (frame, width, "frame at 50%"),
                        "depth": (depth_preview(frame_at(src), StereoParams.model_validate(params)), THUMB_WIDTH,
                                  "depth at 50%"),
                        **{f"frame_{p}": (frame_at(out, p / 100), width, f"frame at {p}%") for p in (10, 90)}}
            no_preview = None
        except (ValueError, av.error.FFmpegError) as exc:
            # A preview is a convenience: the video itself is complete and checked without one.
            previews, no_preview = {}, f"no preview: {exc}"
            context.log.warning(no_preview)
    for label, (rgb, _, _) in previews.items():
        store.put_bytes(png_bytes(rgb), preview_key(stored, label))
    context.log.info(f"joined {name}: {result.frames} frames, {result.duration_s:.2f}s")
    return MaterializeResult(metadata={
        "storage_key": stored,
        "storage_url": MetadataValue.url(store.link(stored)),
        "storage_location": MetadataValue.path(store.location(stored)),
        "preview": no_preview or MetadataValue.md("\n\n".join(
            markdown_image(png_bytes(thumbnail(rgb, width)), alt) for rgb, width, alt in previews.values())),
        "preview_files": MetadataValue.json({label: store.url(preview_key(stored, label)) for label in previews}),
        "layout": params["layout"],
        # What wrote the video and why at this size (stereo_segments records the same).
        **{k: v if v is not None else "none" for k, v in manifest.get("encoding", {}).items()},
        "resolution": f"{result.width}x{result.height}",
        "width": result.width,
        "height": result.height,
        "frames": result.frames,
        "source_frames": source.frames,
        **({"selection": MetadataValue.json(manifest["selection"])} if manifest.get("selection") else {}),
        "duration_s": MetadataValue.float(result.duration_s),
        "fps": MetadataValue.float(result.fps),
        "size_bytes": result.size_bytes,
        "bitrate_kbps": MetadataValue.float(result.size_bytes * 8 / 1000 / max(result.duration_s, 1e-6)),
        "audio_tracks": len(result.audio),
        # A number, or "auto" (chosen per scene: stereo_segments' per_segment table has the range).
        "divergence": str(params["divergence"]),
        "convergence": str(params["convergence"]),
        **manifest.get("strength_used", {}),
    })


@asset(partitions_def=videos, group_name="conversion", deps=[final_video], kinds={"video"},
       code_version=ENGINE_VERSION)
def published_video(context: AssetExecutionContext, store: ObjectStore, outbox: ObjectStore) -> MaterializeResult:
    """The final video copied to the outbox. It runs only after final_video's blocking checks
    pass, so a bad output never reaches users."""
    key = context.partition_key
    name, published = final_name(store, key), published_key(store, key)
    with reported_as_failure(), store.local_copy(keys.final(key, name)) as local:
        # One atomic write: the outbox never holds a partial file.
        outbox.put_file(local, published)
    context.log.info(f"published {outbox.url(published)}")
    # A clickable link (presigned on S3, so it expires) beside the stable address, and the key the
    # delete job removes.
    return MaterializeResult(metadata={"output": MetadataValue.path(outbox.location(published)),
                                       "output_url": MetadataValue.url(outbox.link(published)),
                                       "outbox_key": published})
