"""Probe a video with PyAV: stream facts plus an exact frame/keyframe index from a packet scan."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
from pydantic import BaseModel

from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.media.hdr import frame_hdr_metadata

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


class Colour(BaseModel):
    """The colour tags of the first frame, as ffmpeg names them ("unknown" when unset)."""

    primaries: str = "unknown"
    transfer: str = "unknown"
    matrix: str = "unknown"
    range: str = "unknown"  # "tv" (limited) or "pc" (full)
    # HDR10 static metadata in x265's syntax (media/hdr.py), where the source has it.
    mastering_display: str | None = None
    content_light: str | None = None

    @property
    def hdr(self) -> bool:
        return self.transfer in HDR_TRANSFERS

    @property
    def yuv_matrix(self) -> str:
        """The matrix tag of the engine's YUV frames of this video: its own, but an RGB video
        (``gbr``: PNG, QuickTime Animation, RGB FFV1) is converted to YUV with BT.709
        (``codec.yuv420p``) and must be tagged so, not as RGB."""
        return "bt709" if self.matrix == "gbr" else self.matrix


# PQ (HDR10, Dolby Vision base layers) and HLG (broadcast, phones).
HDR_TRANSFERS = {"smpte2084", "arib-std-b67"}


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
    video_index: int = 0  # the stream the conversion reads (see ``main_video``)
    first_frame_time: str | None = None  # exact time "n/d" of the first frame shown
    first_keyframe_time: str | None = None  # of the first keyframe stored (an edit list may hide it)
    sar: str = "1"  # sample (pixel) aspect ratio "n/d": not 1 for anamorphic video (DVD, HDV)
    colour: Colour = Colour()
    # Bits per pixel the container states (QuickTime Animation, MS RLE, raw video decode by it);
    # segment pieces (NUT) cannot carry it, so their decoder is given it (``codec.iter_frames``).
    coded_depth: int = 0
    audio: list[AudioInfo]
    keyframes: list[KeyFrame]

    @property
    def has_audio(self) -> bool:
        return bool(self.audio)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) in square pixels, as players show the picture: anamorphic widths are
        stretched by the pixel aspect (and kept even: 4:2:0 needs it); square-pixel sizes are
        the stored ones (odd sides are padded later, one rule for writer and checks)."""
        sar = Fraction(self.sar)
        if sar == 1:
            return self.width, self.height
        return max(2, round(self.width * sar / 2) * 2), self.height


def main_video(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The video track people mean, as ffmpeg chooses it (``av_find_best_stream``): never a cover
    picture, which files often store as the first video stream, nor a one-frame thumbnail track."""
    return container.streams.best("video")


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
        vstream = main_video(container)
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
        first_key: Fraction | None = None  # in decode order, shown or not: where a cut from the start begins
        try:
            for packet in container.demux(vstream):
                if packet.size == 0:
                    continue
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    continue
                t = Fraction(ts) * tb
                if packet.is_keyframe and first_key is None:
                    first_key = t
                # Packets an edit list hides are decoded as references but never shown.
                if packet.is_discard:
                    continue
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
        rotation, interlaced, colour = _first_frame_facts(path, vstream)
        sar = Fraction(ctx.sample_aspect_ratio) if ctx.sample_aspect_ratio else Fraction(1)
        video_index = vstream.index
        coded_depth = ctx.bits_per_coded_sample or 0
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
        interlaced=interlaced, video_index=video_index, sar=str(sar), colour=colour, first_frame_time=str(ordered[0]),
        coded_depth=coded_depth,
        first_keyframe_time=str(first_key) if first_key is not None else None,
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


def _first_frame_facts(path: Path, stream) -> tuple[int, bool, Colour]:
    """(rotation, interlaced, colour tags) of the first decodable frame. Phones store portrait video as
    landscape pixels plus a display matrix, which PyAV reports per frame; the old ``rotate`` tag
    is the fallback. Interlacing is flagged per frame too (the container's field order is often
    unset)."""
    rotation, interlaced = _rotation_tag(stream), stream.codec_context.field_order not in (0, 1)
    try:
        with av.open(str(path), metadata_errors="ignore", options=GENPTS) as container:
            for frame in container.decode(main_video(container)):
                if frame.rotation:
                    rotation = round(-frame.rotation) % 360
                return rotation, interlaced or bool(frame.interlaced_frame), frame_colour(frame)
    except av.error.FFmpegError:
        pass  # an undecodable stream is reported by the packet scan and the renderer
    return rotation, interlaced, Colour()


# ffmpeg's names of the colour tags (libavutil/pixfmt.h) for the values seen in video files.
PRIMARIES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020",
             11: "smpte431", 12: "smpte432"}
TRANSFERS = {1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear",
             13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 18: "arib-std-b67"}
MATRICES = {0: "gbr", 1: "bt709", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc", 10: "bt2020c"}
_NAMES = {"primaries": PRIMARIES, "transfer": TRANSFERS, "matrix": MATRICES}


def frame_colour(frame: av.VideoFrame) -> Colour:
    """The colour tags of a decoded frame. JPEG-style formats (yuvj*, MJPEG) are full range by
    definition even when untagged."""
    full = frame.color_range == 2 or frame.format.name.startswith("yuvj")
    mastering, light = frame_hdr_metadata(frame)
    return Colour(mastering_display=mastering, content_light=light,
                  primaries=PRIMARIES.get(frame.color_primaries, "unknown"),
                  transfer=TRANSFERS.get(frame.color_trc, "unknown"),
                  matrix="gbr" if is_rgb(frame) else MATRICES.get(frame.colorspace, "unknown"),
                  range="pc" if full else ("tv" if frame.color_range == 1 else "unknown"))


def is_rgb(frame: av.VideoFrame) -> bool:
    """RGB pictures (PNG, GIF palettes, QuickTime Animation, RGB FFV1): no YUV matrix of their own,
    whatever the tag says."""
    return frame.format.is_rgb or frame.format.has_palette


def colour_code(kind: str, name: str) -> int | None:
    """The libav number of a colour tag name (``kind``: primaries, transfer, matrix)."""
    return next((code for code, n in _NAMES[kind].items() if n == name), None)


def _rotation_tag(stream) -> int:
    rotate = stream.metadata.get("rotate") if stream.metadata else None
    try:
        return int(rotate) % 360 if rotate else 0
    except ValueError:
        return 0
