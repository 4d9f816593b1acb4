"""Depth-image based rendering: synthesise left/right views from one image and its depth.

Conventions: a *shift* is a horizontal displacement in pixels of the image, content at column x
of the source appears at x + shift in the rendered view. A *depth key* orders surfaces for
occlusion: larger is nearer, in pixels of disparity so that a 1-px tolerance means the same
everywhere. Depth, shift and key may have a lower resolution than the image (the depth model's):
where each target pixel reads from is decided on that coarse grid, then one full-resolution
horizontal gather moves the image's pixels.
"""

from __future__ import annotations

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
# Sampling positions are fixed point with this many steps per pixel: 1/128 px is far below
# anything visible, and 7-bit weights keep the uint8 blend (255 * 128) inside int16.
_SUBPIXEL_BITS = 7


def _pixels_per_percent(height: int, width: int) -> float:
    return max(height, width) / 200.0


def eye_shift(depth: torch.Tensor, params: StereoParams,
              frame_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Shift of the left eye's content (the right eye gets the negation). depth [B,1,h,w] in
    0..1 (1 = near) -> [B,1,h,w] in pixels of a frame of ``frame_size`` (H, W), by default the
    depth's own size.

    shift = (divergence * (depth - convergence) + ipd_offset) / 100 * max(H, W) / 2: objects
    nearer than the convergence plane move right in the left eye and left in the right eye, so
    they appear in front of the screen. ``ipd_offset`` moves the whole scene forward (> 0) or back.
    """
    h, w = frame_size or depth.shape[-2:]
    shift = (params.divergence * (depth - params.convergence) + params.ipd_offset) * _pixels_per_percent(h, w)
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


def sample_horizontal(image: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """out[..., y, x] = image[..., y, x + offset[y, x]] with linear interpolation along x and
    edge clamping. image [B,C,H,W] float or uint8, offset [B,1,H,W] -> [B,C,H,W] of image's dtype,
    channels-last in memory.

    Only horizontal displacements exist in rectified stereo, so a 1-D gather is exact and much
    cheaper than 2-D bilinear ``grid_sample``. It reads whole pixels (all channels at once) from
    the channels-last layout decoders produce, with integer weights, so a uint8 frame is never
    converted to float.
    """
    b, c, h, w = image.shape
    one = 1 << _SUBPIXEL_BITS
    pixels = image.permute(0, 2, 3, 1).reshape(-1, c)  # a view when image is channels-last
    xs = torch.arange(w, device=offset.device, dtype=offset.dtype)
    position = (xs + offset).mul_(one).clamp_(0, (w - 1) * one).to(torch.int32)
    weight = (position & (one - 1)).view(-1, 1)
    row_start = torch.arange(0, b * h * w, w, device=image.device, dtype=torch.int32).view(b, 1, h, 1)
    index = position.bitwise_right_shift_(_SUBPIXEL_BITS).add_(row_start).view(-1)
    first = pixels.index_select(0, index)
    # The next column; at a row end its weight is 0, so reading the next row's first pixel is harmless.
    second = pixels.index_select(0, index.add_(1).clamp_max_(len(pixels) - 1))
    if image.dtype.is_floating_point:
        out = torch.lerp(first, second, weight.to(image.dtype) / one)
    else:
        # first + round((second - first) * weight / one), in int16 (uint8 operands promote in place).
        step = second.to(torch.int16).sub_(first).mul_(weight.to(torch.int16))
        out = step.add_(one // 2).bitwise_right_shift_(_SUBPIXEL_BITS).add_(first).to(image.dtype)
    return out.view(b, h, w, c).permute(0, 3, 1, 2)


def fill_from_background(values: torch.Tensor, key: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Replace invalid pixels by the nearest valid pixel along the row on the farther side
    (smaller key): a disocclusion uncovers background, never the foreground that covered it.
    values [B,C,H,W], key [B,1,H,W], valid [B,1,H,W] bool -> [B,C,H,W]."""
    b, c, h, w = values.shape
    # Column numbers as float: cummax/cummin run several times faster on float than on int64.
    xs = torch.arange(w, device=values.device, dtype=torch.float32).view(1, 1, 1, w)
    left = torch.where(valid, xs, -1.0).cummax(dim=3).values
    right = torch.where(valid, xs, float(w)).flip(3).cummin(dim=3).values.flip(3)
    left_c, right_c = left.clamp(0, w - 1).long(), right.clamp(0, w - 1).long()
    use_left = (left >= 0) & ((right >= w) | (key.gather(3, left_c) <= key.gather(3, right_c)))
    source = torch.where(use_left, left_c, right_c)
    return torch.where(valid, values, values.gather(3, source.expand(b, c, h, w)))


def forward_offset(depth_key: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Where each target pixel reads from under a z-ordered forward splat with background fill.
    depth_key [B,1,h,w] (larger = nearer), shift [B,1,h,w], both in pixels of this grid ->
    read offset [B,1,h,w] (the target at x shows the source at x + offset).

    Each source column lands at x + shift with linear weights on the two nearest target columns;
    at each target only splats within ``_Z_TOLERANCE_PX`` of the nearest depth key count, so
    foreground occludes background exactly instead of ghosting over it as backward sampling does.
    What is splatted is the source column itself, not its colour: a visible target reads the
    weighted mean source column, and a hole reads the source column its background-side neighbour
    reads (that neighbour's colour), so the image is touched only once, by ``sample_horizontal``.
    """
    b, _, h, w = shift.shape
    xs = torch.arange(w, device=shift.device, dtype=shift.dtype).view(1, 1, 1, w)
    target = shift + xs
    x0 = target.floor()
    frac = target - x0
    rows = torch.arange(0, h * w, w, device=shift.device).view(1, 1, h, 1)
    taps = []  # (flat index [B,1,H*W], depth key or -inf where nothing lands, weight): both columns
    for column, weight in ((x0, 1.0 - frac), (x0 + 1.0, frac)):
        # A zero-weight tap must not enter the z-buffer: it would hide what really lands there.
        inside = (column >= 0) & (column < w) & (weight > 0)
        index = (column.clamp(0, w - 1).long() + rows).view(b, 1, -1)
        taps.append((index, torch.where(inside, depth_key, float("-inf")).view(b, 1, -1), weight.view(b, 1, -1)))

    zbuffer = torch.full((b, 1, h * w), float("-inf"), device=shift.device, dtype=depth_key.dtype)
    for index, key, _ in taps:
        zbuffer.scatter_reduce_(2, index, key, reduce="amax")
    weight_sum = torch.zeros((b, 1, h * w), device=shift.device, dtype=shift.dtype)
    column_sum = torch.zeros((b, 1, h * w), device=shift.device, dtype=shift.dtype)
    source = xs.expand(b, 1, h, w).reshape(b, 1, -1)
    for index, key, weight in taps:
        # key > -inf also drops off-frame taps, whose clamped index hits an edge column.
        visible = (key > float("-inf")) & (key >= zbuffer.gather(2, index) - _Z_TOLERANCE_PX)
        splat = torch.where(visible, weight, 0.0)
        weight_sum.scatter_add_(2, index, splat)
        column_sum.scatter_add_(2, index, source * splat)

    valid = (weight_sum > _HOLE_WEIGHT).view(b, 1, h, w)
    read = column_sum.div_(weight_sum.clamp_min(_HOLE_WEIGHT)).view(b, 1, h, w)
    return fill_from_background(read, zbuffer.view(b, 1, h, w), valid) - xs


def render_view(image: torch.Tensor, depth_key: torch.Tensor, shift: torch.Tensor,
                method: WarpMethod) -> torch.Tensor:
    """One view of ``image`` [B,C,H,W] (float or uint8) with content moved by ``shift`` [B,1,h,w]
    pixels of the image; ``depth_key`` [B,1,h,w] (larger = nearer, pixels of the image) resolves
    occlusion where the method does. h, w may be below H, W (the depth's resolution): the read
    offsets are found on that grid and upsampled. -> [B,C,H,W] of image's dtype, channels-last.
    """
    height, width = image.shape[-2:]
    scale = shift.shape[-1] / width  # grid pixels per image pixel
    if method is WarpMethod.BACKWARD:
        # Reads the shift at the target instead of the source: cheap, ghosts at depth edges.
        offset = -shift
    elif method is WarpMethod.FORWARD_FILL:
        offset = forward_offset(depth_key * scale, shift * scale) / scale
    else:
        raise ValueError(f"unknown warp method {method!r}")
    if offset.shape[-2:] != (height, width):
        offset = F.interpolate(offset, size=(height, width), mode="bilinear", align_corners=False)
    return sample_horizontal(image, offset)


def synthesize_views(image: torch.Tensor, depth: torch.Tensor,
                     params: StereoParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(left, right) views. image [B,3,H,W] float or uint8, depth [B,1,h,w] 0..1 (1 = near) at
    any resolution up to the image's -> two [B,3,H,W] of image's dtype.

    With ``synthetic_view`` 'left' or 'right' only that eye is rendered, with twice the shift,
    and the other eye is the source frame untouched (same disparity, half the warp artefacts).
    """
    h, w = image.shape[-2:]
    shift = eye_shift(depth, params, (h, w))
    key = depth * (params.divergence * _pixels_per_percent(h, w))
    if params.synthetic_view == "left":
        return render_view(image, 2 * key, 2 * shift, params.method), image
    if params.synthetic_view == "right":
        return image, render_view(image, 2 * key, -2 * shift, params.method)
    return render_view(image, key, shift, params.method), render_view(image, key, -shift, params.method)


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
