"""Quality gates on every converted video (one ``videos`` partition each).

The blocking checks (frames, audio, decoding, geometry) run before ``published_video``: a failure
with ERROR severity stops the output from reaching the outbox. Comfort and seams only warn: the
file is complete and playable, a person decides whether its stereo is good enough; unattended
runs (CI) can make comfort a gate with ``blocking: true`` in its config or the video's settings.

Each check is a pure function of measured facts returning an ``AssetCheckResult``; the decorated
functions only gather the facts from the store and the instance.
"""

import warnings
from pathlib import Path

import av
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    Config,
    MetadataValue,
    PreviewWarning,
    asset_check,
)
from pydantic import Field

from stereospot_pipeline import keys
from stereospot_pipeline.defs.assets.final import final_video, trim_window
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.defs.video_settings import with_stored
from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.media.probe import VideoInfo, probe_video
from stereospot_pipeline.media.verify import JoinedVerification, verify_joined
from stereospot_pipeline.render import packed_size
from stereospot_pipeline.stereo.params import Layout
from stereospot_pipeline.storage import ObjectStore


# Partitioned asset checks are "preview" in Dagster 1.13 but verified to work here; without this
# the warning is printed on every import, into every CLI command's output.
warnings.filterwarnings("ignore", category=PreviewWarning, message="Specifying a partitions_def on an AssetCheckSpec")


class ComfortConfig(Config):
    max_disparity_fraction: float = Field(
        0.03, gt=0, description="largest comfortable disparity (left-right shift) as a fraction of "
                                "the source frame width")
    blocking: bool = Field(False, description="fail with ERROR severity above the limit, which stops "
                                              "publishing (CI, unattended runs); otherwise only warn")


class SeamConfig(Config):
    max_ratio: float = Field(3.0, gt=0, description="largest seam jump of the mean depth, in multiples "
                                                    "of its mean frame-to-frame change inside segments")
    jump_floor: float = Field(0.02, ge=0, description="seam jumps up to this (depth scale 0..1) always "
                                                      "pass: on still footage the change inside is ~0")


# --- pure check logic -----------------------------------------------------------------------


def frames_match(source: VideoInfo, output: VideoInfo, selection: dict | None = None) -> AssetCheckResult:
    """Frame count and duration equal the source's, within one frame; for a trim or frame-rate
    cap (``selection``), those of the frames it kept, within one output frame."""
    frame_s = 1.0 / max(source.fps if not selection or not selection["max_fps"]
                        else min(source.fps, selection["max_fps"]), 1e-6)
    frames, duration = (selection["frames"], selection["duration_s"]) if selection else (source.frames, source.duration_s)
    frame_gap = output.frames - frames
    duration_gap = output.duration_s - duration
    return AssetCheckResult(
        passed=abs(frame_gap) <= 1 and abs(duration_gap) <= frame_s + 1e-6,
        description=f"{output.frames} frames / {output.duration_s:.3f}s, {'selected' if selection else 'source'} "
                    f"{frames} frames / {duration:.3f}s",
        metadata={"frames": output.frames, "source_frames": frames,
                  "duration_s": MetadataValue.float(output.duration_s),
                  "source_duration_s": MetadataValue.float(duration),
                  "duration_gap_s": MetadataValue.float(duration_gap)},
    )


def audio_matches(source_audio_s: list[float], output_audio_s: list[float], fps: float) -> AssetCheckResult:
    """Audio is present iff the source has audio, track for track, each of the same duration
    (within one video frame). Durations are measured the same way in both files."""
    tolerance = 1.0 / max(fps, 1e-6)
    same = len(source_audio_s) == len(output_audio_s) and all(
        abs(a - b) <= tolerance for a, b in zip(source_audio_s, output_audio_s))
    return AssetCheckResult(
        passed=same,
        description=f"output audio tracks {_seconds(output_audio_s)}, source {_seconds(source_audio_s)}",
        metadata={"tracks": len(output_audio_s), "source_tracks": len(source_audio_s),
                  "durations_s": MetadataValue.json(output_audio_s),
                  "source_durations_s": MetadataValue.json(source_audio_s)},
    )


def decodes_fully(verification: JoinedVerification) -> AssetCheckResult:
    """Every packet is one that decoded cleanly in its verified segment, and decoding works at
    every seam and at points between (media/verify.py)."""
    return AssetCheckResult(
        passed=verification.passed,
        description=verification.problem or (
            f"{verification.packets} packets match the verified segments; {verification.decoded_frames} frames "
            f"decoded at {verification.sampled_points} sampled points (every seam and between)"),
        metadata={"packets": verification.packets, "sampled_points": verification.sampled_points,
                  "decoded_frames": verification.decoded_frames},
    )


def geometry_matches(source: VideoInfo, output: VideoInfo, layout: Layout,
                     eye_size: tuple[int, int] | None = None) -> AssetCheckResult:
    """The packing of the source's display size, or of ``eye_size`` where the player limits
    scaled each eye (media/limits.py)."""
    expected = packed_size(*(eye_size or source.display_size), layout)
    actual = (output.width, output.height)
    return AssetCheckResult(
        passed=actual == expected,
        description=f"{layout.value}: {actual[0]}x{actual[1]}, expected {expected[0]}x{expected[1]}",
        metadata={"layout": layout.value, "resolution": f"{actual[0]}x{actual[1]}",
                  "expected": f"{expected[0]}x{expected[1]}"},
    )


def comfortable_parallax(max_shift_px: list[float], frame_width: int, max_fraction: float,
                         blocking: bool = False) -> AssetCheckResult:
    """The largest disparity (twice the largest per-eye shift) within ``max_fraction`` of the width."""
    disparity = 2 * max(max_shift_px)
    fraction = disparity / frame_width
    return AssetCheckResult(
        passed=fraction <= max_fraction,
        severity=AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN,
        description=f"max disparity {disparity:.1f}px = {100 * fraction:.2f}% of the width "
                    f"(limit {100 * max_fraction:.2f}%)",
        metadata={"max_disparity_px": MetadataValue.float(disparity),
                  "max_disparity_fraction": MetadataValue.float(fraction),
                  "limit_fraction": MetadataValue.float(max_fraction)},
    )


def seam_continuity(segments: list[dict], max_ratio: float, jump_floor: float) -> AssetCheckResult:
    """segments: in order, each with ``frames``, ``first_mean_depth``, ``last_mean_depth`` and
    ``mean_depth_steps`` (summed frame-to-frame change of the mean depth inside the segment)."""
    jumps = [abs(b["first_mean_depth"] - a["last_mean_depth"]) for a, b in zip(segments, segments[1:])]
    steps = sum(s["mean_depth_steps"] for s in segments)
    inside = steps / max(sum(s["frames"] - 1 for s in segments), 1)
    limit = max(max_ratio * inside, jump_floor)
    worst = max(jumps, default=0.0)
    return AssetCheckResult(
        passed=worst <= limit,
        severity=AssetCheckSeverity.WARN,
        description=(f"largest seam jump {worst:.4f} of the depth scale, limit {limit:.4f} "
                     f"(mean change inside segments {inside:.4f}/frame)" if jumps else "one segment: no seams"),
        metadata={"seams": len(jumps), "max_jump": MetadataValue.float(worst),
                  "mean_inside_change": MetadataValue.float(inside), "limit": MetadataValue.float(limit),
                  "jumps": MetadataValue.json([round(j, 5) for j in jumps])},
    )


def unreadable(exc: InvalidVideoError) -> AssetCheckResult:
    """A file that cannot even be probed fails the check (rather than erroring it) with the reason."""
    return AssetCheckResult(passed=False, description=str(exc), metadata={"problem": exc.problem})


def _seconds(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}s" for v in values) + "]" if values else "none"


# --- measurements ---------------------------------------------------------------------------


def audio_durations(path: Path, window: tuple | None = None) -> list[float]:
    """Seconds covered by each audio track's packets (first timestamp to last packet's end);
    with a trim ``window`` (source times), of the packets that start inside it."""
    with av.open(str(path), metadata_errors="ignore") as container:
        spans: dict[int, list] = {a.index: [None, None] for a in container.streams.audio}
        if not spans:
            return []
        for pkt in container.demux(list(container.streams.audio)):
            if pkt.pts is None or pkt.size == 0:
                continue
            if window and not (window[0] <= pkt.pts * pkt.time_base and (window[1] is None or
                                                                       pkt.pts * pkt.time_base < window[1])):
                continue
            start, end = pkt.pts * pkt.time_base, (pkt.pts + (pkt.duration or 0)) * pkt.time_base
            span = spans[pkt.stream.index]
            span[0] = start if span[0] is None else min(span[0], start)
            span[1] = end if span[1] is None else max(span[1], end)
        return [float(end - start) if start is not None else 0.0 for start, end in spans.values()]


# --- Dagster glue ---------------------------------------------------------------------------


def _output_key(context: AssetCheckExecutionContext) -> str:
    """The store key of the partition's latest final video (from its materialization metadata)."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("final_video"), asset_partitions=[context.partition_key]), limit=1
    ).records
    return records[0].asset_materialization.metadata["storage_key"].value


def _source(store: ObjectStore, key: str) -> tuple[VideoInfo, str]:
    raw = store.get_json(keys.source_info(key))
    return VideoInfo.model_validate(raw), raw["storage_key"]


def _segment_results(store: ObjectStore, key: str) -> tuple[dict, list[dict]]:
    manifest = store.get_json(keys.stereo_manifest(key))
    return manifest, [store.get_json(keys.stereo_result(key, manifest["fingerprint"], s["index"]))
                      for s in manifest["segments"]]


@asset_check(asset=final_video, partitions_def=videos, blocking=True,
             description="frame count and duration equal the source's (within one frame)")
def frames_match_source(context: AssetCheckExecutionContext, store: ObjectStore) -> AssetCheckResult:
    source, _ = _source(store, context.partition_key)
    manifest, _ = _segment_results(store, context.partition_key)
    with store.local_copy(_output_key(context)) as out:
        try:
            return frames_match(source, probe_video(out), manifest.get("selection"))
        except InvalidVideoError as exc:
            return unreadable(exc)


@asset_check(asset=final_video, partitions_def=videos, blocking=True,
             description="audio present, with the same duration, exactly when the source has audio")
def audio_matches_source(context: AssetCheckExecutionContext, store: ObjectStore) -> AssetCheckResult:
    source, source_key = _source(store, context.partition_key)
    with store.local_copy(source_key) as src, store.local_copy(_output_key(context)) as out:
        window = trim_window(store.get_json(keys.stereo_manifest(context.partition_key)).get("selection"))
        return audio_matches(audio_durations(src, window), audio_durations(out), source.fps)


@asset_check(asset=final_video, partitions_def=videos, blocking=True,
             description="every frame decodes: each segment was decoded in full in its own step, and the "
                         "joined file carries exactly those packets and decodes at every seam")
def decodes_without_errors(context: AssetCheckExecutionContext, store: ObjectStore) -> AssetCheckResult:
    manifest, _ = _segment_results(store, context.partition_key)
    with store.local_copy(_output_key(context)) as out:
        return decodes_fully(verify_joined(out, manifest["segments"]))


@asset_check(asset=final_video, partitions_def=videos, blocking=True,
             description="frame size is the chosen layout's packing of the source frame")
def layout_geometry(context: AssetCheckExecutionContext, store: ObjectStore) -> AssetCheckResult:
    source, _ = _source(store, context.partition_key)
    manifest, _ = _segment_results(store, context.partition_key)
    with store.local_copy(_output_key(context)) as out:
        try:
            eye = manifest.get("eye_size") if manifest.get("eye_size") != list(source.display_size) else None
            return geometry_matches(source, probe_video(out), Layout(manifest["params"]["layout"]),
                                    tuple(eye) if eye else None)
        except InvalidVideoError as exc:
            return unreadable(exc)


# Declared blocking, but it fails with ERROR severity (and so stops publishing) only when its
# config says so: by default discomfort is a warning for a person to judge.
@asset_check(asset=final_video, partitions_def=videos, blocking=True,
             description="largest disparity within a comfortable fraction of the frame width "
                         "(warns; stops publishing with `blocking: true`)")
def comfortable_disparity(context: AssetCheckExecutionContext, config: ComfortConfig,
                          store: ObjectStore) -> AssetCheckResult:
    config = with_stored(context, config, store, "comfort")
    source, _ = _source(store, context.partition_key)
    _, results = _segment_results(store, context.partition_key)
    return comfortable_parallax([r["max_shift_px"] for r in results], source.width, config.max_disparity_fraction,
                                config.blocking)


@asset_check(asset=final_video, partitions_def=videos,
             description="no depth-scale jump at segment seams beyond the usual change between frames")
def seamless_depth(context: AssetCheckExecutionContext, config: SeamConfig, store: ObjectStore) -> AssetCheckResult:
    config = with_stored(context, config, store, "seams")
    _, results = _segment_results(store, context.partition_key)
    return seam_continuity(results, config.max_ratio, config.jump_floor)


VIDEO_CHECKS = [frames_match_source, audio_matches_source, decodes_without_errors, layout_geometry,
                comfortable_disparity, seamless_depth]
