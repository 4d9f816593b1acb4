import tempfile
from pathlib import Path, PurePosixPath

import av
from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from stereospot_pipeline import keys
from stereospot_pipeline.defs.errors import reported_as_failure
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.ingest import registry_key
from stereospot_pipeline.media.preview import frame_at, markdown_image, png_bytes, preview_key, thumbnail
from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline.media.working_copy import working_copy, working_copy_reasons
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.sources import open_source
from stereospot_pipeline.storage import ObjectStore


@asset(partitions_def=videos, group_name="conversion", kinds={"video"})
def source_video(context: AssetExecutionContext, store: ObjectStore) -> MaterializeResult:
    """The uploaded video, validated, probed and copied into work storage (the original is never
    touched)."""
    key = context.partition_key
    if not store.exists(registry_key(key)):
        raise Failure(f"video partition {key!r} is not registered (a partition added by hand has no video "
                      "behind it): add videos with the add_video job in the UI's Launchpad, `stereospot add "
                      "FILE|URL`, `stereospot convert`, the inbox folder or the input bucket",
                      allow_retries=False)
    reg = store.get_json(registry_key(key))
    suffix = PurePosixPath(reg["name"]).suffix.lower()
    stored = keys.source(key, suffix)
    settings = Settings()
    with (reported_as_failure(), open_source(reg["uri"]) as local,
          tempfile.TemporaryDirectory(prefix="stereospot-source-") as tmp):
        original = info = probe_video(local, max_pixels=settings.max_pixels, max_duration_s=settings.max_duration_s)
        reasons = working_copy_reasons(original, settings.hdr)
        if reasons:
            local = working_copy(local, original, reasons, Path(tmp) / "working.nut")
            info = probe_video(local)
            # x264 drops HDR10 static metadata: the working copy's frames carry on the original's.
            hdr10 = {"mastering_display": original.colour.mastering_display, "content_light": original.colour.content_light}
            info = info.model_copy(update={"colour": info.colour.model_copy(update=hdr10)})
            stored = keys.source(key, ".nut")
        if not (store.exists(stored) and store.size(stored) == info.size_bytes):
            store.put_file(local, stored)
        try:
            frame, no_preview = frame_at(local), None
        except av.error.FFmpegError as exc:
            # The index reads packets only; a damaged picture shows up when it is decoded.
            raise InvalidVideoError(str(local), f"a frame in the middle cannot be decoded ({exc.strerror or exc})",
                                    "the file is damaged; re-download or re-export it") from exc
        except ValueError as exc:
            # A preview is a convenience: the conversion goes on without one.
            frame, no_preview = None, f"no preview: {exc}"
            context.log.warning(no_preview)
    if frame is not None:
        store.put_bytes(png_bytes(frame), preview_key(stored))
    store.put_json({**info.model_dump(), "storage_key": stored}, keys.source_info(key))
    context.log.info(f"{reg['name']}: {info.width}x{info.height} {info.codec}, {info.frames} frames, "
                     f"{info.fps:.3f} fps, {info.duration_s:.2f}s, audio tracks: {len(info.audio)}")
    return MaterializeResult(metadata={
        "name": reg["name"],
        "source_uri": reg["uri"],
        "sha256": reg["sha256"],
        "storage_key": stored,
        "container": info.container,
        "codec": info.codec,
        "resolution": f"{info.width}x{info.height}",
        "width": info.width,
        "height": info.height,
        "fps": MetadataValue.float(info.fps),
        "frames": info.frames,
        "duration_s": MetadataValue.float(info.duration_s),
        "size_bytes": info.size_bytes,
        "audio": MetadataValue.json([a.model_dump() for a in info.audio]),
        "audio_layout": ", ".join(f"{a.codec} {a.layout} {a.sample_rate} Hz" for a in info.audio) or "none",
        **({"preview": MetadataValue.md(markdown_image(png_bytes(thumbnail(frame)), "frame at 50%")),
            "preview_file": MetadataValue.path(store.url(preview_key(stored)))} if frame is not None
           else {"preview": no_preview}),
        "file": MetadataValue.path(store.url(stored)),
        "clean_keyframes": len(info.keyframes),
        "rotation": original.rotation,
        "interlaced": original.interlaced,
        "working_copy": "; ".join(reasons) or "none: the source is used as it is",
        "pixel_aspect": original.sar,
        # What each eye shows: anamorphic pixels are made square at the display aspect.
        "display_size": "{}x{}".format(*info.display_size) + (
            f" (stored {info.width}x{info.height} with pixel aspect {info.sar}, scaled to square pixels)"
            if info.display_size != (info.width, info.height) else ""),
        "colour": MetadataValue.json(original.colour.model_dump()),
    })
