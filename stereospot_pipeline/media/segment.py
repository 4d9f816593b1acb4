"""Plan frame-exact segments at clean keyframes and split them out with a stream copy."""

from __future__ import annotations

from pathlib import Path

import av
from pydantic import BaseModel

from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.media.ffmpeg import run_ffmpeg
from stereospot_pipeline.media.probe import VideoInfo


class SegmentPlan(BaseModel):
    index: int
    start_frame: int
    frames: int
    start_s: float  # relative to the start of the video
    duration_s: float
    cut_time: float | None  # ffmpeg split time of this segment's first frame (None for the first)


def plan_segments(info: VideoInfo, segment_seconds: float) -> list[SegmentPlan]:
    """Cut at the first clean keyframe at least ``segment_seconds`` after the previous cut.

    A stream copy can only start a segment at a keyframe that nothing after it refers back past,
    so segments follow the source's GOP structure: every frame lands in exactly one segment and
    no frame is re-encoded before the stereo step. A trailing piece shorter than a quarter
    segment is merged into the one before it.
    """
    if segment_seconds <= 0:
        raise ValueError("segment_seconds must be positive")
    fps = info.fps or 30.0
    cuts = [kf for kf in info.keyframes if kf.frame > 0]
    starts: list[tuple[int, float | None]] = [(0, None)]
    for kf in cuts:
        if (kf.frame - starts[-1][0]) / fps >= segment_seconds:
            starts.append((kf.frame, kf.cut_time))
    if len(starts) > 1 and (info.frames - starts[-1][0]) / fps < 0.25 * segment_seconds:
        starts.pop()
    plans = []
    for i, (start, cut) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else info.frames
        plans.append(SegmentPlan(index=i, start_frame=start, frames=end - start, start_s=start / fps,
                                 duration_s=(end - start) / fps, cut_time=cut))
    return plans


def split_video(source: Path, plans: list[SegmentPlan], out_dir: Path) -> list[Path]:
    """Stream-copy the video track into one NUT file per plan (NUT keeps any codec and exact
    timestamps; ``-copyts`` keeps the source timeline so the final mux needs no offsets).
    Verifies that each piece holds exactly the planned frames."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pattern = out_dir / "%05d.nut"
    args = ["-copyts", "-i", str(source), "-map", "0:v:0", "-c", "copy", "-an", "-sn", "-dn",
            "-f", "segment", "-segment_format", "nut"]
    times = [p.cut_time for p in plans[1:]]
    if times:
        args += ["-segment_times", ",".join(f"{t:.6f}" for t in times)]
    run_ffmpeg([*args, str(pattern)], source=str(source), what="split the video into segments")
    paths = [out_dir / f"{p.index:05d}.nut" for p in plans]
    for plan, path in zip(plans, paths):
        got = count_packets(path) if path.exists() else 0
        if got != plan.frames:
            raise InvalidVideoError(
                str(source),
                f"segment {plan.index} ({plan.start_s:.2f}s-{plan.start_s + plan.duration_s:.2f}s) "
                f"has {got} frames after splitting, expected {plan.frames}",
                "the stream's keyframes could not be cut cleanly; convert it with one segment",
            )
    return paths


def count_packets(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size)
