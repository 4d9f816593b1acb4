"""Depth-image based rendering: synthesise left/right views from one image and its depth.

Conventions: a *shift* is a horizontal displacement in pixels of the image, content at column x
of the source appears at x + shift in the rendered view. A *depth key* orders surfaces for
occlusion: larger is nearer, in pixels of disparity so that a 1-px tolerance means the same
everywhere. Depth, shift and key may have a lower resolution than the image (the depth model's):
where each target pixel reads from is decided on that coarse grid, then one full-resolution
resampling pass per plane moves the image's pixels.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from stereospot_pipeline.stereo.params import StereoParams, WarpMethod

# Fraction of the width over which preserve_screen_border ramps the shift down to 0 at each side.
_BORDER_RAMP = 0.05
# Splats whose depth key is within this many grid pixels of the nearest one at a target blend
# together (one surface sampled twice); anything farther back is occluded.
_Z_TOLERANCE_PX = 1.0
# A target that received less total splat weight than this is a disocclusion hole.
_HOLE_WEIGHT = 1e-3


def _pixels_per_percent(height: int, width: int) -> float:
    return max(height, width) / 200.0


def eye_shift(depth: torch.Tensor, params: StereoParams, frame_size: tuple[int, int] | None = None,
              strength: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Shift of the left eye's content (the right eye gets the negation). depth [B,1,h,w] in
    0..1 (1 = near) -> [B,1,h,w] in pixels of a frame of ``frame_size`` (H, W), by default the
    depth's own size.

    shift = (divergence * (depth - convergence) + ipd_offset) / 100 * max(H, W) / 2: objects
    nearer than the convergence plane move right in the left eye and left in the right eye, so
    they appear in front of the screen. ``ipd_offset`` moves the whole scene forward (> 0) or back.
    ``strength``: per-frame (divergence, convergence) [B,1,1,1] in place of the params' (which
    may be "auto": ``comfort.ComfortController`` supplies them).
    """
    h, w = frame_size or depth.shape[-2:]
    divergence, convergence = strength or (params.divergence, params.convergence)
    shift = (divergence * (depth - convergence) + params.ipd_offset) * _pixels_per_percent(h, w)
    if params.preserve_screen_border:
        shift = shift * border_ramp(depth.shape[-1], depth.device, depth.dtype)
    return shift


def border_ramp(width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[1,1,1,W] weights: 0 at the left/right frame edge, rising linearly to 1 over
    ``_BORDER_RAMP`` of the width, so the frame edge stays on the screen plane (no window
    violation where a near object is cut by the frame)."""
    xs = torch.arange(width, device=device, dtype=dtype)
    edge_distance = torch.minimum(xs, width - 1 - xs)
    return (edge_distance / max(1.0, _BORDER_RAMP * width)).clamp(max=1.0).view(1, 1, 1, width)


def warp_planes(planes: list[torch.Tensor], offset: torch.Tensor, frame_width: int,
                outs: list[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """The planes of one view: out[..., y, x] = plane[..., y, x + offset(y, x)], linear along x,
    edges clamped. planes: [B,C,Hp,Wp] uint8 or float each (a frame's RGB, or the luma and the
    half-size chroma planes of its YUV); offset [B,1,h,w] in pixels of a frame ``frame_width``
    wide, at any resolution (bilinearly upsampled to each plane) -> one [B,C,Hp,Wp] per plane,
    of its dtype, written into the matching ``outs`` view when given (e.g. one half of a
    side-by-side frame).

    Only horizontal displacements exist in rectified stereo. On the CPU, OpenCV's ``remap``
    reads each uint8 plane in place and writes straight into its output, with one read map per
    plane size (the chroma planes share theirs): several times faster than any chain of tensor
    ops, which would pass over the full-resolution frame once per op. Other devices use
    ``grid_sample``, one fused kernel there.
    """
    outs = outs or [None] * len(planes)
    outs = [torch.empty_like(p, memory_format=torch.channels_last) if o is None else o for p, o in zip(planes, outs)]
    maps: dict[tuple[int, int], object] = {}
    for plane, out in zip(planes, outs):
        size = tuple(plane.shape[-2:])
        on_cpu = plane.device.type == "cpu" and plane.dtype in (torch.uint8, torch.int16, torch.float32)
        if size not in maps:
            scaled = offset * (size[1] / frame_width)
            maps[size] = _cpu_maps(scaled, size) if on_cpu else _grid(scaled, size)
        if on_cpu:
            _remap_cpu(plane, maps[size], out)
        else:
            _grid_sample(plane, maps[size], out)
    return outs


def warp_plane(plane: torch.Tensor, offset: torch.Tensor, frame_width: int) -> torch.Tensor:
    """``warp_planes`` for one plane."""
    return warp_planes([plane], offset, frame_width)[0]


@lru_cache(maxsize=4)
def _zeros(height: int, width: int) -> np.ndarray:
    """The vertical read offsets of a horizontal warp, float32 [H,W], for ``cv2.remap``."""
    return np.zeros((height, width), np.float32)


def _cpu_maps(offset: torch.Tensor, size: tuple[int, int]) -> list[np.ndarray]:
    """Per batch item, the ``cv2.remap`` horizontal read offsets [Hp,Wp]: ``offset`` upsampled."""
    hp, wp = size
    return [cv2.resize(item, (wp, hp), interpolation=cv2.INTER_LINEAR) for item in offset[:, 0].float().numpy()]


def _hwc(t: torch.Tensor) -> np.ndarray:
    """[C,H,W] tensor -> [H,W,C] (or [H,W] for one channel) numpy view of the same memory."""
    view = t.permute(1, 2, 0).numpy()
    return view[..., 0] if view.shape[-1] == 1 else view


def _remap_cpu(plane: torch.Tensor, maps: list[np.ndarray], out: torch.Tensor) -> None:
    _, _, hp, wp = plane.shape
    # Relative maps: offsets from each target pixel, so no map of absolute positions is built.
    flags = cv2.INTER_LINEAR | cv2.WARP_RELATIVE_MAP
    for i, map_x in enumerate(maps):
        dst = _hwc(out[i])
        # OpenCV writes into interleaved rows (channels-last, any row stride), else into its own.
        fits = dst.strides[-1] == dst.itemsize and (dst.ndim == 2 or dst.strides[1] == dst.shape[2] * dst.itemsize)
        result = cv2.remap(_hwc(plane[i]), map_x, _zeros(hp, wp), flags, dst=dst if fits else None,
                           borderMode=cv2.BORDER_REPLICATE)
        if not np.shares_memory(result, dst):
            out[i].copy_(torch.from_numpy(result).view(hp, wp, -1).permute(2, 0, 1))


def _grid(offset: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``grid_sample`` grid [B,Hp,Wp,2] (align_corners=True) reading at x + offset upsampled."""
    hp, wp = size
    b = offset.shape[0]
    offset = F.interpolate(offset, size=size, mode="bilinear", align_corners=False)
    xs = torch.linspace(-1.0, 1.0, wp, device=offset.device, dtype=offset.dtype)
    ys = torch.linspace(-1.0, 1.0, hp, device=offset.device, dtype=offset.dtype).view(hp, 1)
    return torch.stack([offset[:, 0] * (2.0 / max(1, wp - 1)) + xs, ys.expand(b, hp, wp)], dim=-1)


def _grid_sample(plane: torch.Tensor, grid: torch.Tensor, out: torch.Tensor) -> None:
    source = plane if plane.dtype.is_floating_point else plane.float()
    warped = F.grid_sample(source, grid.to(source.dtype), mode="bilinear", padding_mode="border",
                           align_corners=True)
    if not plane.dtype.is_floating_point:
        warped = warped.round_().clamp_(0, torch.iinfo(plane.dtype).max)
    out.copy_(warped)


def fill_from_background(values: torch.Tensor, key: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Replace invalid pixels by the nearest valid pixel along the row on the farther side
    (smaller key): a disocclusion uncovers background, never the foreground that covered it.
    values [B,C,H,W], key [B,1,H,W], valid [B,1,H,W] bool -> [B,C,H,W]."""
    b, c, h, w = values.shape
    # Column numbers as float: cummax/cummin run several times faster on float than on int64.
    xs = torch.arange(w, device=values.device, dtype=torch.float32).view(1, 1, 1, w)
    columns, invalid = xs.expand(b, 1, h, w), ~valid
    left = columns.masked_fill(invalid, -1.0).cummax(dim=3).values
    right = columns.masked_fill(invalid, float(w)).flip(3).cummin(dim=3).values.flip(3)
    left_c, right_c = left.clamp(0, w - 1).long(), right.clamp(0, w - 1).long()
    use_left = (left >= 0) & ((right >= w) | (key.gather(3, left_c) <= key.gather(3, right_c)))
    source = torch.where(use_left, left_c, right_c)
    return torch.where(valid, values, values.gather(3, source.expand(b, c, h, w)))


class Reads(NamedTuple):
    """Where one view's pixels read from, on the depth grid: ``offset`` [B,1,h,w] in pixels of
    the frame, and for methods that know them the disocclusion ``holes`` [B,1,h,w] bool (targets
    no source pixel reaches, filled from the background side) and the depth ``key`` [B,1,h,w] of
    what each target shows (grid pixels, larger = nearer), for ``inpaint.fill_holes``."""

    offset: torch.Tensor
    holes: torch.Tensor | None = None
    key: torch.Tensor | None = None


def forward_offset(depth_key: torch.Tensor, shift: torch.Tensor) -> Reads:
    """Where each target pixel reads from under a z-ordered forward splat with background fill.
    depth_key [B,1,h,w] (larger = nearer), shift [B,1,h,w], both in pixels of this grid ->
    ``Reads`` with the read offset [B,1,h,w] (the target at x shows the source at x + offset),
    in pixels of this grid.

    Each source column lands at x + shift with linear weights on the two nearest target columns;
    at each target only splats within ``_Z_TOLERANCE_PX`` of the nearest depth key count, so
    foreground occludes background exactly instead of ghosting over it as backward sampling does.
    What is splatted is the source column itself, not its colour: a visible target reads the
    weighted mean source column, and a hole reads the source column its background-side neighbour
    reads (that neighbour's colour), so the image is touched only once, by ``warp_plane``.
    """
    b, _, h, w = shift.shape
    xs = torch.arange(w, device=shift.device, dtype=shift.dtype).view(1, 1, 1, w)
    target = shift + xs
    x0 = target.floor()
    frac = target - x0
    # Both taps of every source pixel in one batch of scatters: [B, 2*h*w].
    column = torch.cat([x0, x0 + 1.0], dim=1)
    weight = torch.cat([1.0 - frac, frac], dim=1)
    # A zero-weight tap must not enter the z-buffer: it would hide what really lands there.
    lands = ((column >= 0) & (column < w) & (weight > 0)).view(b, -1)
    rows = torch.arange(0, h * w, w, device=shift.device).view(1, 1, h, 1)
    index = column.clamp_(0, w - 1).long().add_(rows).view(b, -1)
    key = torch.where(lands.view(b, 2, h, w), depth_key, float("-inf")).view(b, -1)

    zbuffer = torch.full((b, h * w), float("-inf"), device=shift.device, dtype=depth_key.dtype)
    zbuffer.scatter_reduce_(1, index, key, reduce="amax")
    # ``lands`` also drops off-frame taps, whose clamped index hits an edge column.
    visible = lands & (key >= zbuffer.gather(1, index) - _Z_TOLERANCE_PX)
    splat = weight.view(b, -1) * visible
    weight_sum = torch.zeros((b, h * w), device=shift.device, dtype=shift.dtype).scatter_add_(1, index, splat)
    weighted_columns = (splat.view(b, 2, h, w) * xs).view(b, -1)
    column_sum = torch.zeros((b, h * w), device=shift.device, dtype=shift.dtype).scatter_add_(1, index, weighted_columns)

    valid = (weight_sum > _HOLE_WEIGHT).view(b, 1, h, w)
    read = column_sum.div_(weight_sum.clamp_min(_HOLE_WEIGHT)).view(b, 1, h, w)
    zbuffer = zbuffer.view(b, 1, h, w)
    # One gather for both: holes read (and take the key of) their background-side neighbour.
    filled = fill_from_background(torch.cat([read, zbuffer.clamp_min(-1e9)], dim=1), zbuffer, valid)
    return Reads(filled[:, :1] - xs, ~valid, filled[:, 1:])


def view_offset(depth_key: torch.Tensor, shift: torch.Tensor, method: WarpMethod,
                frame_width: int) -> Reads:
    """Where one view's pixels read from. ``shift`` [B,1,h,w] moves content by that many pixels
    of a frame ``frame_width`` wide; ``depth_key`` [B,1,h,w] (larger = nearer, same pixels)
    resolves occlusion where the method does -> ``Reads`` (offset in those pixels), on the
    depth's grid (h, w may be far below the frame's size)."""
    scale = shift.shape[-1] / frame_width  # grid pixels per frame pixel
    if method is WarpMethod.BACKWARD:
        # Reads the shift at the target instead of the source: cheap, ghosts at depth edges.
        return Reads(-shift)
    if method is WarpMethod.FORWARD_FILL:
        reads = forward_offset(depth_key * scale, shift * scale)
        return reads._replace(offset=reads.offset / scale)
    raise ValueError(f"unknown warp method {method!r}")


def render_planes(planes: list[torch.Tensor], reads: Reads, frame_width: int,
                  outs: list[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """``warp_planes`` with ``reads.offset``, then the disocclusion holes inpainted from the
    background side (``inpaint.fill_holes``) where the method found them."""
    from stereospot_pipeline.stereo.inpaint import fill_holes

    outs = warp_planes(planes, reads.offset, frame_width, outs)
    if reads.holes is not None:
        fill_holes(outs, reads.holes, reads.key)
    return outs


def render_view(image: torch.Tensor, depth_key: torch.Tensor, shift: torch.Tensor,
                method: WarpMethod) -> torch.Tensor:
    """One view of ``image`` [B,C,H,W] (float or uint8) with content moved by ``shift`` [B,1,h,w]
    pixels of the image; ``depth_key`` as in ``view_offset`` -> [B,C,H,W] of image's dtype,
    channels-last."""
    width = image.shape[-1]
    return render_planes([image], view_offset(depth_key, shift, method, width), width)[0]


def eye_offsets(depth: torch.Tensor, params: StereoParams, frame_size: tuple[int, int],
                strength: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[Reads | None, Reads | None]:
    """(left, right) ``Reads`` [B,1,h,w] in pixels of a frame of ``frame_size`` (H, W) from
    depth [B,1,h,w] 0..1 (1 = near); ``None`` for an eye that shows the source frame unchanged.

    With ``synthetic_view`` 'left' or 'right' only that eye is rendered, with twice the shift
    (same disparity, half the warp artefacts); ``strength`` as in ``eye_shift``. The offsets hold
    for every plane of the frame
    (``warp_plane`` scales them to a plane's size), so the occlusion solve runs once per eye.
    """
    h, w = frame_size
    shift = eye_shift(depth, params, (h, w), strength)
    divergence = params.divergence if strength is None else strength[0]
    key = depth * (divergence * _pixels_per_percent(h, w))
    if params.synthetic_view == "left":
        return view_offset(2 * key, 2 * shift, params.method, w), None
    if params.synthetic_view == "right":
        return None, view_offset(2 * key, -2 * shift, params.method, w)
    # Both eyes in one batch: half the per-op overhead on the small depth grid.
    both = view_offset(torch.cat([key, key]), torch.cat([shift, -shift]), params.method, w)
    left, right = (Reads(*(None if t is None else t.chunk(2)[i] for t in both)) for i in range(2))
    return left, right


def synthesize_views(image: torch.Tensor, depth: torch.Tensor,
                     params: StereoParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(left, right) views. image [B,3,H,W] float or uint8, depth [B,1,h,w] 0..1 (1 = near) at
    any resolution up to the image's -> two [B,3,H,W] of image's dtype (see ``eye_offsets``)."""
    h, w = image.shape[-2:]
    left, right = (image if r is None else render_planes([image], r, w)[0] for r in eye_offsets(depth, params, (h, w)))
    return left, right


def right_from_left_disparity(left: torch.Tensor, disparity: torch.Tensor, method: WarpMethod) -> torch.Tensor:
    """Right view of a rectified pair from the left view and its disparity (right x = left x - d).
    left [B,C,H,W], disparity [B,1,h,w] pixels of ``left``, non-finite = unknown, at any
    resolution up to the image's -> [B,C,H,W].

    Unknown disparities (occlusions, sensor gaps) take the farther neighbour's value along the row,
    the same background rule the holes of ``forward_fill`` follow.
    """
    known = disparity.isfinite()
    disparity = torch.where(known, disparity, 0.0)
    disparity = fill_from_background(disparity, disparity, known)
    return render_view(left, disparity, -disparity, method)
