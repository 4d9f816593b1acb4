"""Probe a video with PyAV: stream facts plus an exact frame/keyframe index from a packet scan."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
from pydantic import BaseModel

from stereospot_pipeline.errors import InvalidVideoError

# Some containers (MPEG-PS, AVI) leave B-frame packets without a presentation timestamp; have the
# demuxer fill them in, identically here and in the ffmpeg cut, so both see one timeline.
GENPTS = {"fflags": "+genpts"}


class AudioInfo(BaseModel):
    index: int
    codec: str
    channels: int
    layout: str
    sample_rate: int
    duration_s: float | None


class KeyFrame(BaseModel):
    """A keyframe: where decoding can (re)start."""

    frame: int  # presentation index (frames shown before it)
    time: str  # exact seconds as a fraction "n/d": float rounding would misplace cuts


class VideoInfo(BaseModel):
    path: str
    container: str
    size_bytes: int
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    fps: float
    frames: int
    duration_s: float
    start_time_s: float
    rotation: int  # degrees clockwise the picture turns to be shown upright (as the `rotate` tag)
    interlaced: bool = False
    audio: list[AudioInfo]
    keyframes: list[KeyFrame]

    @property
    def has_audio(self) -> bool:
        return bool(self.audio)


def _fail(path: Path, problem: str, hint: str = "check that the file is a complete video") -> InvalidVideoError:
    return InvalidVideoError(str(path), problem, hint)


def probe_video(path: str | os.PathLike, *, max_pixels: int | None = None,
                max_duration_s: float | None = None) -> VideoInfo:
    """Open, validate and index ``path``. Raises ``InvalidVideoError`` naming the problem.

    The limits are checked from the header before any frame is decoded or indexed (and the
    duration again after indexing), so an oversized upload fails in milliseconds.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "file does not exist", "check the path")
    size = path.stat().st_size
    if size == 0:
        raise _fail(path, "file is empty (0 bytes)", "the upload or copy may have failed; provide the file again")
    try:
        container = av.open(str(path), metadata_errors="ignore", options=GENPTS)
    except av.error.FFmpegError as exc:
        raise _fail(path, f"not a readable video ({exc.strerror or exc})",
                    "the file may be truncated or not a video; re-export or re-download it") from exc
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise _fail(path, f"has no video stream (found: {', '.join(kinds)})", "provide a file with a video track")
        vstream = container.streams.video[0]
        ctx = vstream.codec_context
        if not ctx.width or not ctx.height:
            raise _fail(path, "video stream has no frame size", "the stream is damaged; re-export the file")
        if max_pixels and ctx.width * ctx.height > max_pixels:
            raise _fail(path, f"resolution {ctx.width}x{ctx.height} is above the limit of {max_pixels} pixels "
                        "per frame (STEREOSPOT_MAX_PIXELS)", "downscale the video first, or raise the limit")
        header_s = container.duration / av.time_base if container.duration else None
        if max_duration_s and header_s and header_s > max_duration_s:
            raise _too_long(path, header_s, max_duration_s)
        tb = vstream.time_base
        times: list[Fraction] = []
        decode_order: list[tuple[Fraction, bool]] = []
        try:
            for packet in container.demux(vstream):
                if packet.size == 0:
                    continue
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    continue
                t = Fraction(ts) * tb
                times.append(t)
                decode_order.append((t, bool(packet.is_keyframe)))
        except av.error.FFmpegError as exc:
            raise _fail(path, f"stream is corrupt or truncated after {len(times)} frames ({exc.strerror or exc})",
                        "the file is damaged; re-download or re-export it") from exc
        if not times:
            raise _fail(path, "contains no video frames", "provide a file with at least one frame")
        audio = [
            AudioInfo(
                index=a.index, codec=a.codec_context.name, channels=a.codec_context.channels,
                layout=a.codec_context.layout.name, sample_rate=a.codec_context.sample_rate or 0,
                duration_s=float(a.duration * a.time_base) if a.duration and a.time_base else None,
            )
            for a in container.streams.audio
        ]
        declared = container.duration / av.time_base if container.duration else None
        rotation, interlaced = _first_frame_facts(path, vstream)
        container_name = container.format.name
        start_time = container.start_time / av.time_base if container.start_time is not None else float(min(times))

    # A timestamp shown twice is one picture (e.g. a stray non-picture packet), not two.
    ordered = sorted(set(times))
    frame_dur = _typical_frame_duration(ordered)
    duration = float(ordered[-1] - ordered[0] + frame_dur)
    if declared and len(ordered) > 1 and duration < 0.8 * declared - 1.0:
        raise _fail(path, f"video ends at {duration:.2f}s but the file declares {declared:.2f}s (truncated)",
                    "the file is incomplete; re-download or re-copy it")
    if max_duration_s and duration > max_duration_s:
        raise _too_long(path, duration, max_duration_s)
    rank = {t: i for i, t in enumerate(ordered)}
    keyframes = sorted((KeyFrame(frame=rank[t], time=str(t)) for t, is_key in decode_order if is_key),
                       key=lambda k: k.frame)
    return VideoInfo(
        path=str(path), container=container_name, size_bytes=size, codec=ctx.name,
        width=ctx.width, height=ctx.height, pix_fmt=ctx.format.name if ctx.format else None,
        # The typical frame interval, from the timestamps themselves: container rates can be
        # off (a missing last-packet duration) and variable-rate video has no single rate.
        fps=float(1 / frame_dur),
        frames=len(ordered), duration_s=duration, start_time_s=start_time, rotation=rotation,
        interlaced=interlaced,
        audio=audio, keyframes=keyframes,
    )


def _typical_frame_duration(ordered: list[Fraction]) -> Fraction:
    if len(ordered) < 2:
        return Fraction(1, 30)
    gaps = sorted(b - a for a, b in zip(ordered, ordered[1:]))
    return gaps[len(gaps) // 2]


def _too_long(path: Path, duration: float, limit: float) -> InvalidVideoError:
    return _fail(path, f"is {duration / 3600:.2f} h long, above the limit of {limit / 3600:.2f} h "
                 "(STEREOSPOT_MAX_DURATION_S)", "split the video into parts, or raise the limit")


def _first_frame_facts(path: Path, stream) -> tuple[int, bool]:
    """(rotation, interlaced) of the first decodable frame. Phones store portrait video as
    landscape pixels plus a display matrix, which PyAV reports per frame; the old ``rotate`` tag
    is the fallback. Interlacing is flagged per frame too (the container's field order is often
    unset)."""
    rotation, interlaced = _rotation_tag(stream), stream.codec_context.field_order not in (0, 1)
    try:
        with av.open(str(path), metadata_errors="ignore", options=GENPTS) as container:
            for frame in container.decode(container.streams.video[0]):
                if frame.rotation:
                    rotation = round(-frame.rotation) % 360
                return rotation, interlaced or bool(frame.interlaced_frame)
    except av.error.FFmpegError:
        pass  # an undecodable stream is reported by the packet scan and the renderer
    return rotation, interlaced


def _rotation_tag(stream) -> int:
    rotate = stream.metadata.get("rotate") if stream.metadata else None
    try:
        return int(rotate) % 360 if rotate else 0
    except ValueError:
        return 0
