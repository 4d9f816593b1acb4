"""Which libav encoder writes the stereo video, set up the same way for every codec.

A user asks for a codec (H.264, HEVC, AV1), a quality (crf; NVENC's cq), a preset and a bit
depth, and whether to use the NVIDIA encoder. NVENC is chosen only if it really opens here (a
wheel that lists ``h264_nvenc`` opens it only with an NVIDIA driver, and inside a container only
with the ``video`` driver capability); otherwise the software encoder of the same codec writes the
video and the reason is recorded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from enum import Enum
from functools import cache

import av
import numpy as np

from stereospot_pipeline.media.hdr import svtav1_mastering
from stereospot_pipeline.media.packing import Packing


class VideoCodec(str, Enum):
    H264 = "h264"
    HEVC = "hevc"
    AV1 = "av1"


class EncoderKind(str, Enum):
    AUTO = "auto"  # NVENC where it opens, else software
    SOFTWARE = "software"
    NVENC = "nvenc"  # NVENC, or software with the reason recorded


_SOFTWARE = {VideoCodec.H264: "libx264", VideoCodec.HEVC: "libx265", VideoCodec.AV1: "libsvtav1"}
_NVENC = {VideoCodec.H264: "h264_nvenc", VideoCodec.HEVC: "hevc_nvenc", VideoCodec.AV1: "av1_nvenc"}
# x264/x265 preset names; SVT-AV1 numbers its presets (0 slowest .. 13 fastest), NVENC p1..p7.
_SVT_PRESET = {"ultrafast": 12, "superfast": 11, "veryfast": 10, "faster": 9, "fast": 8, "medium": 6,
               "slow": 4, "slower": 3, "veryslow": 2, "placebo": 1}
_NVENC_PRESET = {"ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3", "fast": "p4",
                 "medium": "p5", "slow": "p6", "slower": "p7", "veryslow": "p7", "placebo": "p7"}
# x264 writes the frame-packing SEI itself; x265 and NVENC cannot, so the writer adds it
# (media/packing.py); AV1 has no such message.
_X264_PACKING = {p: f"frame-packing={p.value}" for p in Packing}


@dataclass(frozen=True)
class Encoder:
    name: str  # the libav encoder
    codec: VideoCodec
    pix_fmt: str  # what it is fed
    bit_depth: int
    options: dict[str, str] = field(default_factory=dict)
    fallback: str | None = None  # why the asked-for encoder is not the one used
    packing_sei: Packing | None = None  # the frame-packing SEI the writer adds to keyframes

    @property
    def hardware(self) -> bool:
        return self.name.endswith("_nvenc")


def choose_encoder(codec: VideoCodec = VideoCodec.H264, kind: EncoderKind = EncoderKind.AUTO, *, crf: int = 20,
                   preset: str = "veryfast", bit_depth: int = 8, frame_packing: Packing | None = None,
                   colour: dict[str, str] | None = None, mastering_display: str | None = None,
                   content_light: str | None = None) -> Encoder:
    """The encoder for these settings. ``colour`` (x264/x265 names: colorprim, transfer,
    colormatrix, range) tags the bitstream itself, where the codec has a place for it; the HDR10
    static metadata (x265 syntax, see media/hdr.py) goes to the encoders that write it (libx265,
    libsvtav1; NVENC takes the stream's colour tags only).

    Raises ValueError for settings no encoder of the codec can honour (e.g. 12-bit).
    """
    if bit_depth not in (8, 10):
        raise ValueError(f"bit depth {bit_depth} is not supported: use 8 or 10")
    if preset not in _SVT_PRESET:
        raise ValueError(f"preset {preset!r} is not one of {', '.join(_SVT_PRESET)}")
    fallback = None
    if kind is not EncoderKind.SOFTWARE:
        name = _NVENC[codec]
        fmt = "p010le" if bit_depth == 10 else "yuv420p"
        if encoder_opens(name, fmt):
            options = {"preset": _NVENC_PRESET[preset], "tune": "hq", "rc": "vbr", "cq": str(crf), "b": "0"}
            if codec is VideoCodec.HEVC and bit_depth == 10:
                options["profile"] = "main10"
            sei = frame_packing if codec is not VideoCodec.AV1 else None
            return Encoder(name, codec, fmt, bit_depth, options, packing_sei=sei)
        fallback = f"{name} cannot open here (no NVIDIA GPU/driver, or the container lacks the 'video' capability)"
    name = _SOFTWARE[codec]
    fmt = "yuv420p10le" if bit_depth == 10 else "yuv420p"
    if codec is VideoCodec.H264:
        params = [p for p in [_X264_PACKING.get(frame_packing)] if p]
        params += [f"{k}={v}" for k, v in (colour or {}).items()]
        options = {"crf": str(crf), "preset": preset}
        if params:
            options["x264-params"] = ":".join(params)
    elif codec is VideoCodec.HEVC:
        params = ["log-level=error", *(f"{k}={v}" for k, v in (colour or {}).items())]
        if mastering_display:
            params.append(f"master-display={mastering_display}")
        if content_light:
            params.append(f"max-cll={content_light}")
        options = {"crf": str(crf), "preset": preset, "x265-params": ":".join(params)}
        if bit_depth == 10:
            options["profile"] = "main10"
    else:
        # SVT-AV1's crf scale runs to 63; the x264-style 20 looks alike at about 30. Colour tags
        # reach it from the stream (codec context); HDR10 metadata only through its own params.
        options = {"crf": str(min(63, round(crf * 1.5))), "preset": str(_SVT_PRESET[preset])}
        params = [f"mastering-display={svtav1_mastering(mastering_display)}"] if mastering_display else []
        if content_light:
            params.append(f"content-light={content_light}")
        if params:
            options["svtav1-params"] = ":".join(params)
    return Encoder(name, codec, fmt, bit_depth, options, fallback,
                   packing_sei=frame_packing if codec is VideoCodec.HEVC else None)


@cache
def encoder_opens(name: str, pix_fmt: str) -> bool:
    """Whether ``name`` opens and encodes a small frame here (the only reliable test for NVENC)."""
    if name not in av.codecs_available:
        return False
    try:
        with av.open(io.BytesIO(), "w", format="mp4") as container:
            stream = container.add_stream(name, rate=25)
            stream.width, stream.height, stream.pix_fmt = 256, 256, pix_fmt
            frame = av.VideoFrame.from_ndarray(np.zeros((256, 256, 3), np.uint8), format="rgb24").reformat(format=pix_fmt)
            frame.pts = 0
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
        return True
    except (av.error.FFmpegError, OSError):
        return False
