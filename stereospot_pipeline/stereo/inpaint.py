"""Disocclusion holes filled from the background side, smoothly.

A forward warp leaves holes where the synthesised view sees what the source hides. The warp
first fills each hole by repeating its background-side neighbour along the row (``warp.py``),
which streaks: every row of the hole repeats one pixel. Here the hole pixels are then replaced by
normalised box averages (coarse to fine) over the hole and the background around it, never the
foreground beside it: pixels whose depth key lies in the nearer part of the keys nearby
(``_BACKGROUND_SHARE``) are left out. The unseen background is best guessed by its smooth continuation.

The averages are smooth by construction, so they are computed on the depth grid (the view
shrunk to it) and only pasted into the hole pixels at full resolution: a few passes over the
holes' surroundings (shrink, enlarge, masked copy) per plane, whatever the radii. At the default
strength on real footage holes are rare and narrow, and the cost follows them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from stereospot_pipeline.stereo.depth import box_blur
from stereospot_pipeline.stereo.depth_post import _max_filter

# Box radii of the passes, as fractions of the grid's width: coarse first (a smooth base over
# the whole hole), then finer (near the hole's border its own neighbours dominate); two boxes of
# one radius make a tent, smoother than one. Tuned on the motorcycle pair's disoccluded band.
_RADII = (0.03, 0.03, 0.02, 0.02, 0.012, 0.012, 0.006, 0.006, 0.003)
# A pixel counts as background when its depth key lies in this share of the window's key range
# nearest the farthest key: a hole opens where the key jumps, so the split falls between the
# surfaces on either side of it, whatever the divergence.
_BACKGROUND_SHARE = 0.5


def _radii(grid_width: int) -> list[int]:
    return [max(1, round(f * grid_width)) for f in _RADII]


def background_average(image: torch.Tensor, holes: torch.Tensor, key: torch.Tensor,
                       grid_width: int | None = None) -> torch.Tensor:
    """image [B,C,h,w] float on the depth grid (or a crop of it from a grid ``grid_width``
    wide), holes [B,1,h,w] bool, key [B,1,h,w] -> the image with its hole pixels replaced by the
    coarse-to-fine background average. float32 on the CPU runs in OpenCV (a pass over the whole
    grid costs about what one tensor op's overhead does); anything else (CUDA, float64) in
    tensor ops, the same arithmetic."""
    radii = _radii(grid_width or holes.shape[-1])
    if image.device.type == "cpu" and image.dtype == torch.float32:
        out = [_background_average_cv(i.permute(1, 2, 0).numpy(), h[0].numpy(), k[0].float().numpy(), radii)
               for i, h, k in zip(image, holes, key)]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)
    weights = {}
    for r in dict.fromkeys(radii):
        far = -_max_filter(_max_filter(-key, r, -1), r, -2)
        near = _max_filter(_max_filter(key, r, -1), r, -2)
        weights[r] = ((key <= far + _BACKGROUND_SHARE * (near - far)) | holes).to(image.dtype)
    for r in radii:
        sums = box_blur(torch.cat([image * weights[r], weights[r]], dim=1), r)
        image = torch.where(holes, sums[:, :-1] / sums[:, -1:].clamp_min(1e-6), image)
    return image


def _background_average_cv(image: np.ndarray, holes: np.ndarray, key: np.ndarray, radii: list[int]) -> np.ndarray:
    """``background_average`` of one [h,w,C] float32 image, holes and key [h,w]. Only the hole
    pixels change, so each pass writes just those (index arrays): whole-grid numpy arithmetic
    would cost more than the blurs. The weight rides along as the last channel: one blur each."""
    image = np.array(image, dtype=np.float32, order="C").reshape(*holes.shape, -1)
    channels = image.shape[-1]
    inside = np.nonzero(holes)
    weights = {}
    for r in dict.fromkeys(radii):
        window = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
        far = cv2.erode(key, window, borderType=cv2.BORDER_REPLICATE)
        near = cv2.dilate(key, window, borderType=cv2.BORDER_REPLICATE)
        weights[r] = ((key <= far + _BACKGROUND_SHARE * (near - far)) | holes).astype(np.float32)
    for r in radii:
        weight = weights[r]
        stacked = cv2.merge([*cv2.split(cv2.multiply(image, cv2.merge([weight] * channels))), weight]
                            if channels > 1 else [cv2.multiply(image[..., 0], weight), weight])
        sums = cv2.blur(stacked, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REPLICATE)[inside]
        image[inside] = sums[:, :-1] / np.maximum(sums[:, -1:], 1e-6)
    return image


def fill_holes(planes: list[torch.Tensor], holes: torch.Tensor, key: torch.Tensor) -> None:
    """In place: the hole pixels of each plane [B,C,Hp,Wp] (uint8 or float, views allowed) of
    one view replaced by the background average. holes [B,1,h,w] bool and key [B,1,h,w] (depth
    of what each target shows, larger = nearer, grid pixels) on the depth grid. The planes are
    averaged together (one set of weights, one blur per pass for all their channels)."""
    flat = holes.any(dim=0)[0]
    rows, cols = flat.any(dim=1).nonzero(), flat.any(dim=0).nonzero()
    if rows.numel() == 0:
        return
    # Only the holes' surroundings are read: a pass reads its radius around a hole, its weights
    # the keys within that radius again.
    h, w = flat.shape
    margin = 2 * max(_radii(w))
    y0, y1 = max(0, int(rows[0]) - margin), min(h, int(rows[-1]) + 1 + margin)
    x0, x1 = max(0, int(cols[0]) - margin), min(w, int(cols[-1]) + 1 + margin)
    holes, key = holes[..., y0:y1, x0:x1], key[..., y0:y1, x0:x1].float()
    regions = []
    for plane in planes:
        hp, wp = plane.shape[-2:]
        sy, sx = hp / h, wp / w
        regions.append(plane[..., int(y0 * sy):min(hp, math.ceil(y1 * sy)), int(x0 * sx):min(wp, math.ceil(x1 * sx))])
    small = [_shrink(r, (y1 - y0, x1 - x0)) for r in regions]
    filled = background_average(torch.cat(small, dim=1), holes, key, grid_width=w)
    masks: dict[tuple[int, int], torch.Tensor] = {}
    for region, part in zip(regions, filled.split([s.shape[1] for s in small], dim=1)):
        size = tuple(region.shape[-2:])
        if size not in masks:
            # Every plane pixel a hole of the grid touches: grid edges are only known to a cell.
            masks[size] = _enlarge(holes.to(torch.uint8) * 255, size) > 2
        values = _enlarge(part, size)
        if not region.dtype.is_floating_point:
            values = values.round_().clamp_(0, torch.iinfo(region.dtype).max)
        _paste(region, values.to(region.dtype), masks[size])


def _cpu_ok(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype in (torch.uint8, torch.int16, torch.float32)


def _shrink(plane: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[B,C,Hp,Wp] -> [B,C,h,w] float32, bilinear (OpenCV on the CPU, in the plane's dtype: a
    uint8 plane's result is rounded, never converted whole to float). Not an area average: the
    background average that follows smooths far more."""
    if not _cpu_ok(plane):
        return F.interpolate(plane.float(), size=grid, mode="bilinear", align_corners=False)
    out = [cv2.resize(np.ascontiguousarray(item.permute(1, 2, 0).numpy()), grid[::-1], interpolation=cv2.INTER_LINEAR)
           for item in plane]
    return torch.from_numpy(np.stack(out).reshape(plane.shape[0], *grid, -1)).permute(0, 3, 1, 2).float()


def _enlarge(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B,C,h,w] -> [B,C,Hp,Wp] bilinear, of x's dtype (OpenCV on the CPU)."""
    if not _cpu_ok(x):
        return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)
    out = [cv2.resize(np.ascontiguousarray(item.permute(1, 2, 0).numpy()), size[::-1], interpolation=cv2.INTER_LINEAR)
           for item in x]
    return torch.from_numpy(np.stack(out).reshape(x.shape[0], *size, -1)).permute(0, 3, 1, 2)


def _paste(plane: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> None:
    """plane[mask] = values, in place ([B,C,Hp,Wp], mask [B,1,Hp,Wp])."""
    if plane.device.type == "cpu":
        for dst, src, m in zip(plane, values, mask):
            np.copyto(dst.permute(1, 2, 0).numpy(), src.permute(1, 2, 0).numpy(), where=m[0].numpy()[..., None])
        return
    plane.copy_(torch.where(mask, values.to(plane.dtype), plane))
