"""Plan frame-exact segments at keyframes and cut them out by stream copy, with a pre-roll.

A keyframe is not always a clean cut: open GOPs and non-IDR I-frames let the frames after it
refer to pictures before it. So each piece starts one keyframe earlier (pre-roll) and runs a
little past its end; the renderer decodes it and keeps exactly the frames whose timestamps fall
in the segment. Every source frame lands in exactly one segment, decoded from full references.

Muxers may shift a copied timeline (e.g. to avoid negative B-frame DTS) and a copy seek may land
a keyframe early, so each piece is anchored: its keyframes are laid onto the source's keyframes,
which gives the piece's offset. Program streams seek by byte position, so a piece that misses
frames is cut again from a few seconds earlier.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from fractions import Fraction
from pathlib import Path

import av
from pydantic import BaseModel

from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.media.ffmpeg import run_ffmpeg
from stereospot_pipeline.media.probe import GENPTS, VideoInfo
from stereospot_pipeline.media.selection import capped, output_slot

# Past the segment's end, frames still shown before the end may follow in decode order
# (B-frame reordering, open-GOP leading pictures); a second covers any real stream.
_TAIL_MARGIN_S = 1.0
# Seeking by stream copy is exact in indexed containers but only approximate in program streams
# (by byte position): a piece that misses frames is cut again from this much earlier.
_RESEEK_S = 5.0


# The first segment starts with whatever the stream shows first, even before its first keyframe.
_BEFORE_ANY_FRAME = "-1000000"


class SegmentPlan(BaseModel):
    index: int
    start_frame: int
    frames: int
    start_s: float  # relative to the first frame, for people
    duration_s: float
    start_time: str  # exact source timestamp of the first frame ("n/d" seconds)
    end_time: str | None  # exact source timestamp of the next segment's first frame
    anchor_time: str  # source timestamp of the keyframe the piece starts with
    cut_from: float | None  # ffmpeg -ss value that starts the piece at that keyframe
    tolerance_s: float  # timestamps may move by a rounding step through the NUT container
    # Source keyframe times around the piece: the piece's own keyframes must line up with them,
    # which tells how far a muxer or the copy seek shifted it.
    nearby_keyframes: list[str] = []
    # Source time the rendered segments count from: the first frame. Source timelines can start
    # far from zero or below it (an unwrapped 33-bit MPEG-TS clock, edit lists), and a negative
    # timestamp would be shifted by the segment's MP4 muxer, breaking the join.
    origin: str = "0"
    # Frame-rate cap (``media/selection.py``): the slots count from the first kept frame.
    max_fps: float | None = None
    first_kept: str | None = None
    frame_s: str | None = None

    def selector(self, offset: Fraction = Fraction(0)):
        """A predicate over a piece's presentation times (``offset``: piece time - source time),
        called for every frame in display order: whether the frame is converted. Under a
        frame-rate cap a frame is kept when it is the first of its slot, which takes the frame
        before it: each piece holds its pre-roll, so that frame is always seen."""
        if self.max_fps is None:
            return lambda t: self.contains(t - offset)
        cap, first, frame_s = Fraction(str(self.max_fps)), Fraction(self.first_kept), Fraction(self.frame_s)
        previous: list[int | None] = [None]

        def keep(t: Fraction) -> bool:
            slot = output_slot(t - offset, first, frame_s, cap)
            prior, previous[0] = previous[0], slot
            return self.contains(t - offset) and slot != prior
        return keep

    def contains(self, t: Fraction) -> bool:
        """Whether source time ``t`` (seconds) belongs to this segment."""
        tol = Fraction(self.tolerance_s)
        if t < Fraction(self.start_time) - tol:
            return False
        return self.end_time is None or t < Fraction(self.end_time) - tol


def plan_segments(info: VideoInfo, segment_seconds: float, *, start: float = 0.0, end: float | None = None,
                  max_fps: float | None = None, times: list[Fraction] | None = None) -> list[SegmentPlan]:
    """Cut at the first keyframe at least ``segment_seconds`` after the previous cut; a trailing
    piece shorter than a quarter segment is merged into the one before it.

    With a window (``start``/``end``: seconds from the first frame) or a frame-rate cap, the plan
    keeps only the segments the window touches, clipped to it, and counts the frames each keeps;
    that needs the source's presentation ``times`` (``presentation_times``)."""
    plans = _plan_all(info, segment_seconds)
    if not (start > 0 or end is not None or max_fps is not None):
        return plans
    if times is None:
        raise ValueError("a trimmed or frame-rate capped plan needs the source's presentation times")
    return _select(info, plans, times, start, end, max_fps)


def _select(info: VideoInfo, plans: list[SegmentPlan], times: list[Fraction], start: float, end: float | None,
            max_fps: float | None) -> list[SegmentPlan]:
    origin = times[0]
    tol = Fraction(plans[0].tolerance_s)
    lo = bisect_left(times, origin + Fraction(str(start)) - tol)
    hi = len(times) if end is None else bisect_left(times, origin + Fraction(str(end)) - tol)
    if lo >= hi:
        window = f"{start:g}s-{end:g}s" if end is not None else f"from {start:g}s"
        raise InvalidVideoError(info.path, f"the trim window {window} holds no frame (the video is "
                                f"{info.duration_s:.2f}s long)", "choose --start/--end inside the video")
    frame_s = 1 / Fraction(info.fps).limit_denominator(1_000_000)
    kept = capped(times[lo:hi], frame_s, max_fps)
    selected = []
    for p in plans:
        a, b = max(p.start_frame, lo), min(p.start_frame + p.frames, hi)
        frames = sum(kept[a - lo:b - lo]) if a < b else 0
        if not frames:
            continue
        fps = info.fps or 30.0
        selected.append(p.model_copy(update={
            "index": len(selected), "start_frame": a, "frames": frames,
            "start_s": float(times[a] - origin), "duration_s": (b - a) / fps,
            "start_time": str(times[a]) if a > p.start_frame else p.start_time,
            "end_time": str(times[b]) if b < p.start_frame + p.frames else p.end_time,
            # The output counts from the first kept frame: it starts at the window's start.
            "origin": str(times[lo]),
            "max_fps": max_fps, "first_kept": str(times[lo]), "frame_s": str(frame_s),
        }))
    return selected


def presentation_times(path: Path, video_index: int) -> list[Fraction]:
    """The distinct presentation times of the video track, in order, as the probe indexes them."""
    times = set()
    with av.open(str(path), metadata_errors="ignore", options=GENPTS) as container:
        stream = container.streams[video_index]
        for packet in container.demux(stream):
            ts = packet.pts if packet.pts is not None else packet.dts
            if packet.size and ts is not None and not packet.is_discard:
                times.add(Fraction(ts) * stream.time_base)
    return sorted(times)


def _plan_all(info: VideoInfo, segment_seconds: float) -> list[SegmentPlan]:
    if segment_seconds <= 0:
        raise ValueError("segment_seconds must be positive")
    fps = info.fps or 30.0
    keyframes = info.keyframes
    cuts = [0]  # indexes into keyframes; the video start needs no keyframe
    for j, kf in enumerate(keyframes):
        previous = keyframes[cuts[-1]].frame if len(cuts) > 1 else 0
        if kf.frame > 0 and (kf.frame - previous) / fps >= segment_seconds:
            cuts.append(j)
    # A piece cut from the start begins at the first stored keyframe, which an edit list may hide.
    first_key = info.first_keyframe_time or (min(keyframes, key=lambda k: Fraction(k.time)).time if keyframes else "0")
    # Each cut after the first decodes from the keyframe before it (pre-roll).
    starts = [(0, None, first_key)] + [(keyframes[j].frame, keyframes[j].time, keyframes[j - 1].time)
                                       for j in cuts[1:]]
    if len(starts) > 1 and (info.frames - starts[-1][0]) / fps < 0.25 * segment_seconds:
        starts.pop()
    plans = []
    tolerance = 0.25 / fps
    key_times = sorted(Fraction(k.time) for k in keyframes)
    for i, (frame, time, anchor) in enumerate(starts):
        end_frame = starts[i + 1][0] if i + 1 < len(starts) else info.frames
        end = starts[i + 1][1] if i + 1 < len(starts) else None
        # From before the anchor (a copy seek may land early, or be retried earlier) past the tail.
        lo = max(0, bisect_left(key_times, Fraction(anchor) - Fraction(_RESEEK_S) - 1) - 1)
        hi = len(key_times) if end is None else bisect_right(key_times, Fraction(end) + Fraction(_TAIL_MARGIN_S) + 1) + 1
        plans.append(SegmentPlan(
            index=i, start_frame=frame, frames=end_frame - frame, start_s=frame / fps,
            duration_s=(end_frame - frame) / fps,
            # The first segment starts at the first frame shown (edit lists hide earlier ones).
            start_time=time or info.first_frame_time or _BEFORE_ANY_FRAME,
            end_time=starts[i + 1][1] if i + 1 < len(starts) else None,
            anchor_time=anchor,
            # A hair past the keyframe: ffmpeg's copy seek then starts exactly at it.
            cut_from=float(Fraction(anchor)) + tolerance if i else None,
            tolerance_s=tolerance,
            nearby_keyframes=[str(t) for t in key_times[lo:hi]],
            origin=info.first_frame_time or "0",
        ))
    return plans


def split_video(source: Path, plans: list[SegmentPlan], out_dir: Path, video_index: int = 0) -> list[Path]:
    """Stream-copy each segment's video (with pre-roll and tail) into a NUT file: NUT carries any
    codec with exact timestamps, and ``-copyts`` keeps the source timeline. Verifies that each
    piece holds exactly the planned frames."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for plan in plans:
        path = out_dir / f"{plan.index:05d}.nut"
        got = 0
        for back in (0.0, _RESEEK_S) if plan.cut_from is not None else (0.0,):
            args = ["-fflags", GENPTS["fflags"], "-copyts"]
            if plan.cut_from is not None:
                args += ["-ss", f"{max(0.0, plan.cut_from - back):.6f}"]
            args += ["-i", str(source), "-map", f"0:{video_index}", "-c", "copy", "-an", "-sn", "-dn"]
            if plan.end_time is not None:
                args += ["-to", f"{float(Fraction(plan.end_time)) + _TAIL_MARGIN_S:.6f}"]
            run_ffmpeg([*args, "-f", "nut", str(path)], source=str(source), what=f"cut segment {plan.index}")
            try:
                got = count_frames_in(path, plan)
            except (av.error.FFmpegError, InvalidVideoError):
                got = 0  # an empty piece: the seek landed past it
            if got == plan.frames:
                break
        if got != plan.frames:
            raise InvalidVideoError(
                str(source),
                f"segment {plan.index} ({plan.start_s:.2f}s-{plan.start_s + plan.duration_s:.2f}s) "
                f"has {got} frames after cutting, expected {plan.frames}",
                "the stream's timestamps are irregular; convert it with one segment",
            )
        paths.append(path)
    return paths


def _packet_times(path: Path):
    """(seconds, is_keyframe) of the video packets of ``path`` in decode order."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for p in c.demux(stream):
            ts = p.pts if p.pts is not None else p.dts
            if p.size and ts is not None:
                yield ts * stream.time_base, p.is_keyframe


def chunk_offset(path: Path, plan: SegmentPlan) -> Fraction:
    """How far the piece's timeline sits from the source's (piece time - source time): the
    smallest shift that lays every keyframe of the piece onto a source keyframe (a copy seek
    can land a keyframe early, and muxers shift B-frame streams), else first keyframe = anchor."""
    piece = [t for t, is_key in _packet_times(path) if is_key]
    if not piece:
        raise InvalidVideoError(str(path), f"segment {plan.index} holds no keyframe", "re-export the source")
    known = [Fraction(k) for k in plan.nearby_keyframes]
    tol = Fraction(plan.tolerance_s)

    def lines_up(offset: Fraction) -> bool:
        return all(any(abs(t - offset - k) <= tol for k in known) for t in piece)

    fits = [piece[0] - k for k in known if lines_up(piece[0] - k)]
    return min(fits, key=abs) if fits else piece[0] - Fraction(plan.anchor_time)


def count_frames_in(path: Path, plan: SegmentPlan) -> int:
    keep = plan.selector(chunk_offset(path, plan))
    # Distinct times, as the probe counts them: a stray extra packet (e.g. a filler NAL) repeating
    # a timestamp is no extra picture.
    return sum(map(keep, sorted({t for t, _ in _packet_times(path)})))
