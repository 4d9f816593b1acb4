"""Decoding frames and encoding stereo frames with PyAV (in-process libav, no pipes)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stereospot_pipeline.media.encoders import Encoder, EncoderKind, VideoCodec, choose_encoder
from stereospot_pipeline.media.packing import frame_packing_sei, with_sei
from stereospot_pipeline.media.probe import Colour, colour_code, is_rgb, main_video
from stereospot_pipeline.media.timing import decoded, presented
from stereospot_pipeline.media.verify import EncodedStream


def iter_frames(path: Path, keep: Callable[[Fraction], bool] | None = None, lead_in: int = 0,
                size: tuple[int, int] | None = None, coded_depth: int = 0,
                bits: int = 8) -> Iterator[tuple[np.ndarray, int, Fraction, bool]]:
    """Yield (yuv420p uint8 [H*3/2,W], pts, time_base, kept) for each frame of the first video
    track whose presentation time (seconds, see ``timing.presented``) passes ``keep``
    (kept=True), preceded by up to ``lead_in`` of the frames just before the first of them
    (kept=False: context, e.g. for temporal filters). Other frames are decoded (as references)
    but not converted. Frames come at ``size`` (width, height: the display size of anamorphic
    video) if given; odd sizes come padded to even (see ``yuv420p``). ``coded_depth``: the
    source's ``VideoInfo.coded_depth``, for a piece whose container lost it. ``bits=10``: the
    frames as ``yuv420p10`` gives them (HDR kept HDR keeps its precision)."""
    before: deque[tuple[av.VideoFrame, int]] = deque(maxlen=lead_in or None)
    started = False

    def convert(frame: av.VideoFrame) -> np.ndarray:
        scaled = () if size is None or size == (frame.width, frame.height) else size
        return yuv420p10(frame, *scaled) if bits == 10 else yuv420p(frame, *scaled)

    with av.open(str(path)) as container:
        stream = main_video(container)
        stream.thread_type = "AUTO"  # frame threading roughly doubles decode speed
        if coded_depth and not stream.codec_context.bits_per_coded_sample:
            stream.codec_context.bits_per_coded_sample = coded_depth
        for frame, pts in presented(decoded(container, stream)):
            if keep is None or keep(pts * frame.time_base):
                if not started:
                    started = True
                    for early, early_pts in before:
                        yield convert(early), early_pts, early.time_base, False
                    before.clear()
                yield convert(frame), pts, frame.time_base, True
            elif lead_in and not started:
                before.append((frame, pts))


def yuv420p(frame: av.VideoFrame, width: int | None = None, height: int | None = None) -> np.ndarray:
    """The frame (scaled to ``width`` x ``height`` if given: both even) as planar 4:2:0
    [H*3/2,W]: H rows of luma, then the U and the V plane (each H/2 x W/2, row after row).

    8-bit 4:2:0, the usual decoded format, is only copied; others (10-bit, 4:4:4, full range)
    are converted by libswscale. 4:2:0 has no odd sizes: an odd frame gets its last row/column
    repeated (not rescaled, which would soften every pixel).
    """
    h, w = frame.height, frame.width
    if is_rgb(frame) and frame.colorspace in (0, 2):  # RGB, or unspecified
        # RGB video (PNG, QuickTime Animation, RGB FFV1) becomes BT.709 YUV, as its output is
        # tagged (``Colour.yuv_matrix``); libswscale would otherwise use BT.601, untagged.
        frame.colorspace = 1
    if frame.color_range == 2 or frame.format.name.startswith("yuvj"):
        # Full range (JPEG-style) to the limited range the engine and its output tags assume.
        frame = frame.reformat(width=width or w, height=height or h, format="yuv420p",
                               src_color_range="JPEG", dst_color_range="MPEG")
        width = height = None
        h, w = frame.height, frame.width
    if width is None and (w % 2 or h % 2 or frame.format.name == "yuv420p"):
        # Straight from the planes (a third of the CPU time of ``to_ndarray``). Odd sizes are
        # padded in YUV: a trip through RGB would clip colours outside its gamut and round twice.
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        return _planar(frame, np.uint8)
    return frame.to_ndarray(width=width, height=height, format="yuv420p")


def yuv420p10(frame: av.VideoFrame, width: int | None = None, height: int | None = None) -> np.ndarray:
    """``yuv420p`` at 10 bits: int16 [H*3/2,W] of 10-bit limited-range values (luma 64..940; the
    engine's ``planes.levels``), converted by libswscale from whatever the frame is."""
    options = {"src_color_range": "JPEG", "dst_color_range": "MPEG"} if (
        frame.color_range == 2 or frame.format.name.startswith("yuvj")) else {}
    if frame.format.name != "yuv420p10le" or width is not None or options:
        frame = frame.reformat(width=width, height=height, format="yuv420p10le", **options)
    return _planar(frame, np.int16)


def _planar(frame: av.VideoFrame, dtype) -> np.ndarray:
    """A 4:2:0 frame (yuv420p for uint8, yuv420p10le for int16) copied from its planes into
    [H*3/2,W], an odd size padded to even: odd 4:2:0 already has the chroma of the padded
    size, the luma gets its last row/column repeated."""
    h, w = frame.height, frame.width
    eh, ew = h + h % 2, w + w % 2
    out = np.empty((eh * 3 // 2, ew), dtype)
    out[:h, :w] = _plane(frame.planes[0], h, w, dtype)
    out[:h, w:ew] = out[:h, w - 1:w]
    out[h:eh] = out[h - 1]
    chroma = out[eh:].reshape(2, eh // 2, ew // 2)
    chroma[0] = _plane(frame.planes[1], eh // 2, ew // 2, dtype)
    chroma[1] = _plane(frame.planes[2], eh // 2, ew // 2, dtype)
    return out


def _plane(plane: av.video.plane.VideoPlane, rows: int, columns: int, dtype=np.uint8) -> np.ndarray:
    """A decoded plane as a [rows, columns] view of ``dtype`` samples (rows are ``line_size``
    bytes apart; 10-bit samples, little-endian, read as int16: they never reach its sign bit)."""
    itemsize = np.dtype(dtype).itemsize
    return np.frombuffer(plane, np.dtype(dtype).newbyteorder("<")).reshape(-1, plane.line_size // itemsize)[:rows, :columns]


class VideoWriter:
    """Writer of the engine's yuv420p frames [H*3/2,W] with ``encoder`` (default: libx264 at
    ``crf``/``preset``) that keeps the caller's timestamps (variable frame rate survives).

    8-bit 4:2:0 is what x264/x265/SVT-AV1 encode from, so 8-bit output needs no conversion; a
    10-bit encoder gets each frame widened by libswscale (yuv420p10le, NVENC's p010le).

    With ``check``, every packet is also decoded as it is muxed (``self.encoded``, for
    ``media.verify.verify_written``)."""

    def __init__(self, path: Path, width: int, height: int, time_base: Fraction, *, encoder: Encoder | None = None,
                 crf: int = 20, preset: str = "veryfast", rate: Fraction | None = None, colour: Colour | None = None,
                 check: bool = False):
        encoder = encoder or choose_encoder(VideoCodec.H264, EncoderKind.SOFTWARE, crf=crf, preset=preset,
                                            colour=bitstream_colour(colour))
        self.encoder = encoder
        self.container = av.open(str(path), "w", format="mp4" if path.suffix == ".mp4" else None)
        self.stream = self.container.add_stream(encoder.name, rate=rate)
        # 4:2:0 needs even sizes; ``yuv420p`` pads odd sources.
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = encoder.pix_fmt
        self.stream.time_base = time_base
        self.stream.codec_context.time_base = time_base
        if encoder.codec is VideoCodec.HEVC:
            # Apple's players and the Quest's play HEVC in MP4 only as 'hvc1' (parameter sets in
            # the sample description), not libav's default 'hev1'.
            self.stream.codec_context.codec_tag = "hvc1"
        opts = dict(encoder.options)
        if colour is not None:
            _tag(self.stream.codec_context, colour)
        self.stream.options = opts
        # Frame threads, as the ffmpeg tool uses (PyAV's default is slice threads), so the
        # comparison with a plain re-encode measures the same encoder work.
        self.stream.codec_context.thread_type = "FRAME"
        self.stream.codec_context.thread_count = 0
        self.frames = 0
        self.encoded = EncodedStream(path, encoder.codec.value) if check else None
        self._sei = encoder.packing_sei and frame_packing_sei(encoder.codec.value, encoder.packing_sei)
        # Held back one frame: its duration (which sets the file's duration and frame rate) is
        # only known when the next timestamp arrives; the last frame repeats the last interval.
        self._pending: av.VideoFrame | None = None
        self._last_duration = 1

    def write(self, yuv: np.ndarray, pts: int) -> None:
        """Queue ``yuv`` [H*3/2,W] (uint8, or int16 of 10-bit values) at ``pts``. It is encoded in place, not copied (about 1 ms of CPU
        a frame at 720p side by side), so it must not change until the next ``write`` or ``close``."""
        # A chroma row is half a luma row only in a contiguous array: a strided view is copied.
        if yuv.dtype == np.int16:  # kept at 10 bits (``yuv420p10``)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(yuv).view(np.uint16), format="yuv420p10le")
        else:
            frame = av.VideoFrame.from_numpy_buffer(np.ascontiguousarray(yuv), format="yuv420p")
        if self.encoder.pix_fmt != frame.format.name:
            # Widened (or narrowed) in limited range (16..235 <-> 64..940); the tags say what the
            # values mean.
            frame = frame.reformat(format=self.encoder.pix_fmt, src_color_range="MPEG", dst_color_range="MPEG")
        frame.pts = pts
        frame.time_base = self.stream.codec_context.time_base
        if self._pending is not None:
            self._last_duration = max(1, pts - self._pending.pts)
            self._encode_pending()
        self._pending = frame
        self.frames += 1

    def _encode_pending(self) -> None:
        self._pending.duration = self._last_duration
        self._mux(self.stream.encode(self._pending))

    def _mux(self, packets: list[av.Packet]) -> None:
        if self._sei is not None:
            packets = [_with_data(p, with_sei(bytes(p), self._sei, self.encoder.codec.value)) if p.is_keyframe else p
                       for p in packets]
        if self.encoded is not None:
            for p in (p for p in packets if p.size):
                self.encoded.add(bytes(p), self.stream.codec_context.extradata)
        self.container.mux(packets)

    def close(self) -> None:
        if self._pending is not None:
            self._encode_pending()
        self._mux(self.stream.encode(None))
        self.container.close()
        if self.encoded is not None:
            self.encoded.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.container.close()


def _with_data(pkt: av.Packet, data: bytes) -> av.Packet:
    new = av.Packet(data)
    new.stream, new.time_base = pkt.stream, pkt.time_base
    new.pts, new.dts, new.duration, new.is_keyframe = pkt.pts, pkt.dts, pkt.duration, True
    return new


_TAGS = (("primaries", "color_primaries", "colorprim"), ("transfer", "color_trc", "transfer"),
         ("matrix", "colorspace", "colormatrix"))


def _tag(ctx, colour: Colour) -> None:
    """Tag the stream with the source's colour (players otherwise guess, often wrongly: BT.601
    for small frames). Frames reach the writer in limited range (``yuv420p``)."""
    ctx.color_range = 1
    for kind, attr, _ in _TAGS:
        code = colour_code(kind, _tag_value(colour, kind))
        if code is not None:
            setattr(ctx, attr, code)


def bitstream_colour(colour: Colour | None) -> dict[str, str]:
    """The colour tags in x264/x265's names, for ``choose_encoder(colour=...)``: the stream's tags
    (``_tag``) live in the container, these in the bitstream, where decoders read them."""
    if colour is None:
        return {}
    tags = {"range": "tv"}
    for kind, _, name in _TAGS:
        if colour_code(kind, _tag_value(colour, kind)) is not None:
            tags[name] = _tag_value(colour, kind)
    return tags


def _tag_value(colour: Colour, kind: str) -> str:
    """The tag of the engine's frames: the source's, the matrix as the frames were converted."""
    return colour.yuv_matrix if kind == "matrix" else getattr(colour, kind)
