"""Frames as planes, so decoded video stays in its native YUV from decoder to encoder.

A batch of frames is one uint8 array in a ``PixelFormat`` (int16 of 10-bit values for 4:2:0 kept at
10 bits, see ``levels``): RGB ``[B,H,W,3]``, or planar 4:2:0
``[B,H*3/2,W]`` (H rows of luma, then the U and the V plane, each H/2 x W/2: what H.264
decoders produce and x264 encodes from). Warps and geometric layouts treat every plane alike, so
YUV frames never pay for a colour conversion at full resolution (two conversions of the full
frame per video frame cost as much as the encode itself on a CPU). Only what must see colour
(depth analysis at low resolution, anaglyph mixing) converts to RGB.

YUV is limited range (16-235 luma, 16-240 chroma), as decoders produce it for video.
"""

from __future__ import annotations

from enum import Enum

import cv2
import numpy as np
import torch
import torch.nn.functional as F


class PixelFormat(str, Enum):
    RGB24 = "rgb24"
    YUV420P = "yuv420p"


# Kr, Kb of the YUV matrices.
_KR_KB = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114), "bt2020": (0.2627, 0.0593),
          "smpte240m": (0.212, 0.087)}
# ffmpeg's names of the matrix tag (what probe.Colour.matrix holds) -> the matrix they name.
_TAGGED = {"bt709": "bt709", "bt470bg": "bt601", "smpte170m": "bt601", "bt2020nc": "bt2020",
           "bt2020c": "bt2020", "smpte240m": "smpte240m"}


def matrix_for(height: int, tag: str | None = None) -> str:
    """The YUV matrix of frames whose matrix tag is ``tag`` (ffmpeg's name); where the tag says
    nothing, what players assume: BT.709 for HD, BT.601 for SD (libswscale's default for SD)."""
    if tag in _TAGGED:
        return _TAGGED[tag]
    return "bt709" if height >= 720 else "bt601"


def frame_size(frames: torch.Tensor, fmt: PixelFormat) -> tuple[int, int]:
    """(H, W) of the frames of a batch array."""
    if fmt is PixelFormat.YUV420P:
        return frames.shape[1] * 2 // 3, frames.shape[2]
    return frames.shape[1], frames.shape[2]


def frame_shape(height: int, width: int, fmt: PixelFormat) -> tuple[int, ...]:
    """Shape of one frame's array (4:2:0 needs even sizes)."""
    if fmt is PixelFormat.YUV420P:
        return height * 3 // 2, width
    return height, width, 3


def split(frames: torch.Tensor, fmt: PixelFormat) -> list[torch.Tensor]:
    """Batch array -> its planes as [B,C,h,w] views (channels-last memory): RGB -> [RGB];
    yuv420p -> [Y [B,1,H,W], U [B,1,H/2,W/2], V [B,1,H/2,W/2]]. Writing into a view writes into
    the array."""
    b = frames.shape[0]
    if fmt is PixelFormat.YUV420P:
        h, w = frame_size(frames, fmt)
        chroma = frames[:, h:].reshape(b, 2, h // 2, w // 2)
        return [frames[:, :h].unsqueeze(1), chroma[:, :1], chroma[:, 1:]]
    return [frames.permute(0, 3, 1, 2)]


def black(fmt: PixelFormat, dtype: torch.dtype = torch.uint8) -> list[float]:
    """Per plane, the value of black (what resampling pads with) in frames of ``dtype``."""
    scale = levels(dtype)
    return [16.0 * scale, 128.0 * scale, 128.0 * scale] if fmt is PixelFormat.YUV420P else [0.0]


def levels(dtype: torch.dtype) -> float:
    """How many times 8-bit values a frame of ``dtype`` holds: 4:2:0 frames kept at 10 bits (HDR
    kept HDR) are int16 arrays of 10-bit values (luma 64..940), four times the 8-bit levels."""
    return 4.0 if dtype == torch.int16 else 1.0


def _shrink(plane: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8, int16 or float [B,C,h,w] -> float [B,C,*size], area-averaged when shrinking.

    On the CPU, OpenCV's area resize of the integer planes, in two steps when the plane divides
    by a whole factor (that step has a fast box-filter path): together a fifth of the cost of
    torch's antialiased resize at video sizes.
    """
    h, w = plane.shape[-2:]
    if (h, w) == tuple(size):
        return plane.float()
    if plane.device.type != "cpu" or plane.dtype not in (torch.uint8, torch.int16):
        return F.interpolate(plane.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    k = int(min(h / size[0], w / size[1]))
    shrunk = []
    for item in plane:
        item = item.permute(1, 2, 0).numpy()
        if k >= 2 and h % k == 0 and w % k == 0:
            item = cv2.resize(item, (w // k, h // k), interpolation=cv2.INTER_AREA)
        shrunk.append(cv2.resize(item, size[::-1], interpolation=cv2.INTER_AREA))
    return torch.from_numpy(np.stack(shrunk)).view(len(shrunk), *size, -1).permute(0, 3, 1, 2).float()


def to_rgb(planes: list[torch.Tensor], fmt: PixelFormat, size: tuple[int, int] | None = None,
           matrix: str | None = None) -> torch.Tensor:
    """Planes -> float RGB [B,3,h,w] in 0..1 at ``size`` (default: the frame's), YUV read with
    ``matrix`` (a ``matrix_for`` name; default: the frame height's guess). Resampling happens on
    the uint8 planes before any conversion, so shrinking costs little."""
    size = size or tuple(planes[0].shape[-2:])
    if fmt is PixelFormat.RGB24:
        return _shrink(planes[0], size).div_(255.0)
    scale = levels(planes[0].dtype)
    y, u, v = (_shrink(p, size) / scale if scale != 1 else _shrink(p, size) for p in planes)
    kr, kb = _KR_KB[matrix or matrix_for(planes[0].shape[-2])]
    luma = (y - 16.0) / 219.0
    pb, pr = (u - 128.0) / 224.0, (v - 128.0) / 224.0
    r = luma + 2 * (1 - kr) * pr
    b = luma + 2 * (1 - kb) * pb
    g = (luma - kr * r - kb * b) / (1 - kr - kb)
    return torch.cat([r, g, b], dim=1).clamp_(0.0, 1.0)


def from_rgb(rgb: torch.Tensor, fmt: PixelFormat, matrix: str | None = None) -> list[torch.Tensor]:
    """float RGB [B,3,H,W] in 0..1 -> uint8 planes of ``fmt`` (4:2:0 needs even H, W; chroma is
    the 2x2 average), YUV made with ``matrix`` as in ``to_rgb``."""
    if fmt is PixelFormat.RGB24:
        return [_to_uint8(rgb * 255.0)]
    kr, kb = _KR_KB[matrix or matrix_for(rgb.shape[-2])]
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    luma = kr * r + (1 - kr - kb) * g + kb * b
    u, v = (128.0 + 224.0 * F.avg_pool2d(c, 2) for c in ((b - luma) / (2 * (1 - kb)), (r - luma) / (2 * (1 - kr))))
    return [_to_uint8(16.0 + 219.0 * luma), _to_uint8(u), _to_uint8(v)]


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8).contiguous(memory_format=torch.channels_last)
