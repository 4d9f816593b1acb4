"""What players can decode: the output's codec and size chosen so the packed frame plays.

A full side-by-side conversion of a 4K source is 7680 px wide: past H.264's highest common level
(5.2: 36,864 macroblocks a frame, 4096x2304) and the 4096-px H.264 decoders of common headsets.
HEVC and AV1 decoders of the same headsets take 8192x4320 (level 6). The policy keeps the source's
detail where a codec can carry it: with the codec left to it, a frame too large for H.264 is
written as HEVC; past that (or with H.264 asked for explicitly), each eye is scaled down, aspect
kept, until the packed frame fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stereospot_pipeline.media.encoders import VideoCodec
from stereospot_pipeline.stereo.layout import output_size
from stereospot_pipeline.stereo.params import Layout


@dataclass(frozen=True)
class DecoderLimit:
    max_width: int
    max_height: int
    max_macroblocks: int  # 16x16 blocks per frame (the level's MaxFS)


LIMITS = {
    VideoCodec.H264: DecoderLimit(4096, 4096, 36_864),  # level 5.2; headsets' H.264 decoders
    VideoCodec.HEVC: DecoderLimit(8192, 4320, 139_264),  # level 6.x
    VideoCodec.AV1: DecoderLimit(8192, 4320, 139_264),  # level 6.0
}


@dataclass(frozen=True)
class OutputPlan:
    codec: VideoCodec
    eye_width: int  # the source frame, as the engine sees it (even)
    eye_height: int
    width: int  # the packed frame
    height: int
    decision: str  # what the policy did, for the run's metadata

    @property
    def scaled(self) -> bool:
        return "scaled" in self.decision


def _fits(w: int, h: int, limit: DecoderLimit, max_w: int | None, max_h: int | None) -> bool:
    blocks = math.ceil(w / 16) * math.ceil(h / 16)
    return (w <= min(limit.max_width, max_w or limit.max_width) and h <= min(limit.max_height, max_h or limit.max_height)
            and blocks <= limit.max_macroblocks)


def plan_output(width: int, height: int, layout: Layout, codec: VideoCodec | None = None, *,
                max_width: int | None = None, max_height: int | None = None) -> OutputPlan:
    """The codec and sizes for a ``width`` x ``height`` source packed in ``layout``. ``codec``
    None lets the policy pick (H.264 where it fits, else HEVC); ``max_width``/``max_height`` are
    the user's own player limits on the packed frame, on top of the codec's."""
    choices = [codec] if codec else [VideoCodec.H264, VideoCodec.HEVC]
    for choice in choices:
        w, h = output_size(width, height, layout)
        if _fits(w, h, LIMITS[choice], max_width, max_height):
            note = "fits" if choice is choices[0] else f"HEVC: {w}x{h} is past H.264's limit ({_limit_text(VideoCodec.H264)})"
            return OutputPlan(choice, width, height, w, h, note)
    # Scaled: with the codec left to the policy, H.264 where the user's own limit binds alike
    # (the same eye size either way: the most compatible codec), else HEVC (more detail kept).
    scaled = [_scaled(width, height, layout, choice, max_width, max_height) for choice in choices]
    chosen, (ew, eh) = next((c, eye) for c, eye in zip(choices, scaled) if eye == scaled[-1])
    w, h = output_size(ew, eh, layout)
    own = f", the limit of {max_width or '-'}x{max_height or '-'} asked for" if max_width or max_height else ""
    return OutputPlan(chosen, ew, eh, w, h,
                      f"{chosen.value.upper()}: each eye scaled {width}x{height} -> {ew}x{eh} so the "
                      f"{w}x{h} frame fits {_limit_text(chosen)}{own}")


def _scaled(width: int, height: int, layout: Layout, codec: VideoCodec, max_width: int | None,
            max_height: int | None) -> tuple[int, int]:
    """The largest even eye size (aspect kept) whose packed frame fits: a bisection on the scale."""
    limit = LIMITS[codec]
    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        if _fits(*output_size(_even(width * mid), _even(height * mid), layout), limit, max_width, max_height):
            low = mid
        else:
            high = mid
    return _even(width * low), _even(height * low)


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def _limit_text(codec: VideoCodec) -> str:
    limit = LIMITS[codec]
    return f"{limit.max_width}x{limit.max_height}, {limit.max_macroblocks} macroblocks"
