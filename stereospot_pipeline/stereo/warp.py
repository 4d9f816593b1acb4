"""Depth-image based rendering: synthesise left/right views from one image and its depth.

Conventions: a *shift* is a horizontal displacement in pixels, content at column x of the source
appears at x + shift in the rendered view. A *depth key* orders surfaces for occlusion: larger is
nearer, in pixels of disparity so that a 1-px tolerance means the same everywhere.
"""

from __future__ import annotations

import torch

from stereospot_pipeline.stereo.params import StereoParams, WarpMethod

# Fraction of the width over which preserve_screen_border ramps the shift down to 0 at each side.
_BORDER_RAMP = 0.05
# Splats whose depth key is within this many pixels of the nearest one at a target blend together
# (one surface sampled twice); anything farther back is occluded.
_Z_TOLERANCE_PX = 1.0
# A target that received less total splat weight than this is a disocclusion hole.
_HOLE_WEIGHT = 1e-3


def _pixels_per_percent(height: int, width: int) -> float:
    return max(height, width) / 200.0


def eye_shift(depth: torch.Tensor, params: StereoParams) -> torch.Tensor:
    """Shift of the left eye's content (the right eye gets the negation). depth [B,1,H,W] in
    0..1 (1 = near) -> [B,1,H,W] pixels.

    shift = (divergence * (depth - convergence) + ipd_offset) / 100 * max(H, W) / 2: objects
    nearer than the convergence plane move right in the left eye and left in the right eye, so
    they appear in front of the screen. ``ipd_offset`` moves the whole scene forward (> 0) or back.
    """
    h, w = depth.shape[-2:]
    shift = (params.divergence * (depth - params.convergence) + params.ipd_offset) * _pixels_per_percent(h, w)
    if params.preserve_screen_border:
        shift = shift * border_ramp(w, depth.device, depth.dtype)
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
    edge clamping. image [B,C,H,W], offset [B,1,H,W] -> [B,C,H,W].

    Only horizontal displacements exist in rectified stereo, so a 1-D gather is exact and much
    cheaper than 2-D bilinear ``grid_sample``.
    """
    b, c, h, w = image.shape
    xs = torch.arange(w, device=image.device, dtype=offset.dtype).view(1, 1, 1, w) + offset
    xs = xs.clamp(0, w - 1)
    x0 = xs.floor()
    frac = (xs - x0).expand(b, c, h, w)
    i0 = x0.long()
    i1 = (i0 + 1).clamp_max(w - 1)
    left = image.gather(3, i0.expand(b, c, h, w))
    right = image.gather(3, i1.expand(b, c, h, w))
    return torch.lerp(left, right, frac.to(image.dtype))


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


def forward_fill(image: torch.Tensor, depth_key: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Z-ordered forward splat, then background fill of the holes.

    Each source pixel lands at x + shift with linear weights on the two nearest target columns;
    at each target only splats within ``_Z_TOLERANCE_PX`` of the nearest depth key count, so
    foreground occludes background exactly instead of ghosting over it as backward sampling does.
    image [B,C,H,W], depth_key [B,1,H,W] (larger = nearer, pixels), shift [B,1,H,W] -> [B,C,H,W].
    """
    b, c, h, w = image.shape
    target = shift + torch.arange(w, device=image.device, dtype=shift.dtype).view(1, 1, 1, w)
    x0 = target.floor()
    frac = target - x0
    rows = torch.arange(0, h * w, w, device=image.device).view(1, 1, h, 1)
    taps = []  # (flat index [B,1,H*W], depth key or -inf where nothing lands, weight): both columns
    for column, weight in ((x0, 1.0 - frac), (x0 + 1.0, frac)):
        # A zero-weight tap must not enter the z-buffer: it would hide what really lands there.
        inside = (column >= 0) & (column < w) & (weight > 0)
        index = (column.clamp(0, w - 1).long() + rows).view(b, 1, -1)
        taps.append((index, torch.where(inside, depth_key, float("-inf")).view(b, 1, -1), weight.view(b, 1, -1)))

    zbuffer = torch.full((b, 1, h * w), float("-inf"), device=image.device, dtype=depth_key.dtype)
    for index, key, _ in taps:
        zbuffer.scatter_reduce_(2, index, key, reduce="amax")
    weight_sum = torch.zeros((b, 1, h * w), device=image.device, dtype=image.dtype)
    acc = torch.zeros((b, c, h * w), device=image.device, dtype=image.dtype)
    flat_image = image.reshape(b, c, -1)
    for index, key, weight in taps:
        # key > -inf also drops off-frame taps, whose clamped index hits an edge column.
        visible = (key > float("-inf")) & (key >= zbuffer.gather(2, index) - _Z_TOLERANCE_PX)
        splat = torch.where(visible, weight, 0.0).to(image.dtype)
        weight_sum.scatter_add_(2, index, splat)
        acc.scatter_add_(2, index.expand(b, c, -1), flat_image * splat)

    valid = (weight_sum > _HOLE_WEIGHT).view(b, 1, h, w)
    out = acc.div_(weight_sum.clamp_min(_HOLE_WEIGHT)).view(b, c, h, w)
    return fill_from_background(out, zbuffer.view(b, 1, h, w), valid)


def render_view(image: torch.Tensor, depth_key: torch.Tensor, shift: torch.Tensor,
                method: WarpMethod) -> torch.Tensor:
    """One view of ``image`` [B,C,H,W] with content moved by ``shift`` [B,1,H,W] pixels;
    ``depth_key`` [B,1,H,W] (larger = nearer, pixels) resolves occlusion where the method does.
    -> [B,C,H,W]."""
    if method is WarpMethod.BACKWARD:
        # Reads the shift at the target instead of the source: cheap, ghosts at depth edges.
        return sample_horizontal(image, -shift)
    if method is WarpMethod.FORWARD_FILL:
        return forward_fill(image, depth_key, shift)
    raise ValueError(f"unknown warp method {method!r}")


def synthesize_views(image: torch.Tensor, depth: torch.Tensor,
                     params: StereoParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(left, right) views. image [B,3,H,W], depth [B,1,H,W] 0..1 (1 = near) -> two [B,3,H,W].

    With ``synthetic_view`` 'left' or 'right' only that eye is rendered, with twice the shift,
    and the other eye is the source frame untouched (same disparity, half the warp artefacts).
    """
    h, w = depth.shape[-2:]
    shift = eye_shift(depth, params)
    key = depth * (params.divergence * _pixels_per_percent(h, w))
    if params.synthetic_view == "left":
        return render_view(image, 2 * key, 2 * shift, params.method), image
    if params.synthetic_view == "right":
        return image, render_view(image, 2 * key, -2 * shift, params.method)
    return render_view(image, key, shift, params.method), render_view(image, key, -shift, params.method)


def right_from_left_disparity(left: torch.Tensor, disparity: torch.Tensor, method: WarpMethod) -> torch.Tensor:
    """Right view of a rectified pair from the left view and its disparity (right x = left x - d).
    left [B,C,H,W], disparity [B,1,H,W] pixels, non-finite = unknown -> [B,C,H,W].

    Unknown disparities (occlusions, sensor gaps) take the farther neighbour's value along the row,
    the same background rule the holes of ``forward_fill`` follow.
    """
    known = disparity.isfinite()
    disparity = torch.where(known, disparity, 0.0)
    disparity = fill_from_background(disparity, disparity, known)
    return render_view(left, disparity, -disparity, method)
