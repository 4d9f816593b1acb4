"""Pack a left/right pair into the frame layout players expect."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from stereospot_pipeline.stereo.params import Layout

_LUMA = [0.299, 0.587, 0.114]
_ZERO = [0.0, 0.0, 0.0]
# Anaglyph = left_matrix @ left + right_matrix @ right per pixel (rows: output R,G,B; columns:
# input R,G,B). Red comes from the left eye, green and blue (cyan) from the right eye.
_ANAGLYPH = {
    # Dubois' least-squares fit for red/cyan glasses: least retinal rivalry, muted reds.
    Layout.ANAGLYPH: (
        [[0.437, 0.449, 0.164], [-0.062, -0.062, -0.024], [-0.048, -0.050, -0.017]],
        [[-0.011, -0.032, -0.007], [0.377, 0.761, 0.009], [-0.026, -0.093, 1.234]],
    ),
    Layout.ANAGLYPH_COLOR: ([[1.0, 0.0, 0.0], _ZERO, _ZERO], [_ZERO, [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
    Layout.ANAGLYPH_GRAY: ([_LUMA, _ZERO, _ZERO], [_ZERO, _LUMA, _LUMA]),
    # Grey red channel: saturated reds no longer reach only one eye (less rivalry than 'color').
    Layout.ANAGLYPH_HALF_COLOR: ([_LUMA, _ZERO, _ZERO], [_ZERO, [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
}
# Horizontal field of view the flat frame covers inside the 180-degree VR180 hemisphere: a large
# virtual screen that still leaves the edges of the view visible without turning the head.
_VR180_SCREEN_FOV_DEG = 90.0


def output_size(width: int, height: int, layout: Layout) -> tuple[int, int]:
    """(width, height) of a packed frame for a source of ``width`` x ``height``."""
    if layout in (Layout.FULL_SBS, Layout.CROSS_EYED, Layout.DEPTH):
        return 2 * width, height
    if layout is Layout.FULL_TB:
        return width, 2 * height
    if layout is Layout.VR180:
        side = vr180_eye_size(width, height)
        return 2 * side, side
    return width, height


def mixes_colours(layout: Layout) -> bool:
    """Whether the layout mixes the colour channels of the views (needs RGB, not YUV planes)."""
    return layout in _ANAGLYPH


def vr180_eye_size(width: int, height: int) -> int:
    """Side of each eye's square 180x180-degree equirectangular image (the longer source side)."""
    return max(width, height)


def eye_slots(packed: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(left, right) views of a packed frame [B,C,H',W'] where each eye lands unchanged, for the
    layouts that only place the views (a warp can write straight into them); ``None`` for the
    layouts that resample or mix the views."""
    h, w = packed.shape[-2:]
    if layout is Layout.FULL_SBS:
        return packed[..., : w // 2], packed[..., w // 2:]
    if layout is Layout.CROSS_EYED:
        return packed[..., w // 2:], packed[..., : w // 2]
    if layout is Layout.FULL_TB:
        return packed[..., : h // 2, :], packed[..., h // 2:, :]
    return None


def _place(first: torch.Tensor, second: torch.Tensor, dim: int) -> torch.Tensor:
    """Two [B,C,H,W] views side by side (``dim`` 3) or top-bottom (2), each copied once into a
    channels-last frame: the layout encoders read, so the caller needs no further copy."""
    size = list(first.shape)
    size[dim] *= 2
    out = torch.empty(size, dtype=first.dtype, device=first.device, memory_format=torch.channels_last)
    slot_first, slot_second = eye_slots(out, Layout.FULL_SBS if dim == 3 else Layout.FULL_TB)
    slot_first.copy_(first)
    slot_second.copy_(second)
    return out


def _pair(first: torch.Tensor, second: torch.Tensor, dim: int, half: bool) -> torch.Tensor:
    """The two views packed along ``dim`` (3 side by side, 2 top-bottom). ``half`` squeezes each
    view to half along ``dim`` first, so the pair keeps the source frame size."""
    if not half:
        return _place(first, second, dim)
    size = list(first.shape[-2:])
    size[dim - 2] //= 2
    out = _place(*(F.interpolate(v, size=size, mode="area") for v in (first, second)), dim=dim)
    missing = first.shape[dim] - out.shape[dim]  # odd source side
    if missing:
        pad = (0, missing, 0, 0) if dim == 3 else (0, 0, 0, missing)
        out = F.pad(out, pad, mode="replicate")
    return out


def _anaglyph(left: torch.Tensor, right: torch.Tensor, layout: Layout, white: float) -> torch.Tensor:
    ml, mr = (torch.tensor(m, device=left.device, dtype=left.dtype) for m in _ANAGLYPH[layout])
    out = torch.einsum("oc,bchw->bohw", ml, left) + torch.einsum("oc,bchw->bohw", mr, right)
    return out.clamp_(0, white)


@lru_cache(maxsize=4)
def _vr180_grid(width: int, height: int, side: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """grid_sample grid [1,side,side,2] that maps each equirectangular pixel (longitude and
    latitude in -90..90 degrees) to the flat frame it sees through a pinhole camera."""
    angles = (torch.arange(side, device=device, dtype=torch.float64) + 0.5) / side * math.pi - math.pi / 2
    lat, lon = torch.meshgrid(-angles, angles, indexing="ij")  # latitude grows upwards
    x, y, z = lat.cos() * lon.sin(), lat.sin(), (lat.cos() * lon.cos()).clamp_min(1e-9)
    focal = (width / 2) / math.tan(math.radians(_VR180_SCREEN_FOV_DEG) / 2)
    # Normalised coordinates (align_corners=False): +-1 at the outer frame edges; beyond is black.
    grid = torch.stack([focal * x / z / (width / 2), -focal * y / z / (height / 2)], dim=-1)
    return grid.unsqueeze(0).to(dtype)


def _vr180(left: torch.Tensor, right: torch.Tensor, black: float) -> torch.Tensor:
    b, _, h, w = left.shape
    side = vr180_eye_size(w, h)
    grid = _vr180_grid(w, h, side, left.device, left.dtype).expand(b, -1, -1, -1)
    # Outside the flat frame is black, which is not 0 in every plane (YUV chroma: 128).
    eyes = [F.grid_sample(v - black, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + black
            for v in (left, right)]
    return _place(*eyes, dim=3)


def compose(left: torch.Tensor, right: torch.Tensor, layout: Layout,
            depth: torch.Tensor | None = None, *, black: float = 0.0) -> torch.Tensor:
    """left, right [B,3,H,W], float 0..1 or uint8 0..255, any memory format -> packed
    [B,3,H',W'] of the same dtype (see ``output_size``).

    ``Layout.DEPTH`` shows ``left`` beside ``depth`` [B,1,H,W] (0..1, 1 = near) as grey; pass the
    source frame as ``left`` there. Other layouts ignore ``depth``. Layouts that only place the
    views copy them as they are; those that resample or mix them compute in float. The packed
    frame is channels-last in memory, the layout encoders read. Each plane of a YUV frame packs
    alike (anaglyphs excepted: they mix colours, so they need RGB); ``black`` is the plane's
    value of black, which VR180 pads with.
    """
    if layout is Layout.FULL_SBS:
        return _place(left, right, 3)
    if layout is Layout.FULL_TB:
        return _place(left, right, 2)
    if layout is Layout.CROSS_EYED:
        return _place(right, left, 3)
    if layout is Layout.DEPTH:
        if depth is None:
            raise ValueError("the depth layout needs the depth map")
        grey = depth if left.dtype.is_floating_point else depth.mul(255).round_().to(left.dtype)
        return _place(left, grey.expand_as(left), 3)
    dtype = left.dtype
    # Every resampling layout is linear in the pixel values, so uint8 frames need no rescaling,
    # only float arithmetic and rounding back.
    white = 1.0 if dtype.is_floating_point else float(torch.iinfo(dtype).max)
    left, right = (v if dtype.is_floating_point else v.float() for v in (left, right))
    if layout is Layout.HALF_SBS:
        out = _pair(left, right, 3, half=True)
    elif layout is Layout.HALF_TB:
        out = _pair(left, right, 2, half=True)
    elif layout in _ANAGLYPH:
        out = _anaglyph(left, right, layout, white)
    elif layout is Layout.VR180:
        out = _vr180(left, right, black)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    if not dtype.is_floating_point:
        out = out.round_().clamp_(0, white).to(dtype)
    return out.contiguous(memory_format=torch.channels_last)
