"""Depth estimation: estimators map RGB frames to relative nearness (larger = nearer).

Every estimator is a callable ``frames [B,3,H,W] float 0..1 -> nearness [B,1,h,w]`` where h, w is
the estimator's working resolution (the caller resizes). Values are relative: the caller
normalises them (see ``normalize.py``), so an estimator never needs to know the video's range.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


class DepthEstimator(Protocol):
    name: str

    def __call__(self, frames: torch.Tensor) -> torch.Tensor: ...


def resize_short_side(frames: torch.Tensor, short_side: int, multiple: int = 1) -> torch.Tensor:
    """[B,C,H,W] -> [B,C,h,w] with min(h,w) ~= short_side, both rounded to ``multiple``."""
    h, w = frames.shape[-2:]
    scale = short_side / min(h, w)
    nh = max(multiple, round(h * scale / multiple) * multiple)
    nw = max(multiple, round(w * scale / multiple) * multiple)
    if (nh, nw) == (h, w):
        return frames
    mode = "area" if scale < 1 else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(frames, size=(nh, nw), mode=mode, **kwargs)


def box_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window with edge replication. [B,C,H,W] -> same."""
    if radius <= 0:
        return x
    k = 2 * radius + 1
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    return F.avg_pool2d(x, k, stride=1)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """Edge-preserving smoothing of ``src`` [B,1,H,W] that follows the edges of ``guide`` [B,1,H,W]
    (He et al.'s guided filter): depth discontinuities snap to image edges."""
    mean_i = box_blur(guide, radius)
    mean_p = box_blur(src, radius)
    cov_ip = box_blur(guide * src, radius) - mean_i * mean_p
    var_i = box_blur(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_blur(a, radius) * guide + box_blur(b, radius)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-6)


class HeuristicDepth:
    """Weight-free monocular depth from image cues that hold on most natural footage.

    Cues: ground-plane perspective (lower in the frame is nearer), focus (sharp, high-contrast
    regions are usually the subject in front of a softer background), all smoothed with a guided
    filter so depth edges follow object edges.
    """

    name = "heuristic"

    def __init__(self, short_side: int = 160):
        self.short_side = short_side

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        x = resize_short_side(frames, self.short_side)
        luma = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).contiguous()
        b, _, h, w = luma.shape
        r = max(2, min(h, w) // 16)

        rows = torch.linspace(0.0, 1.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
        perspective = rows.expand(b, 1, h, w)

        gx = luma[..., :, 1:] - luma[..., :, :-1]
        gy = luma[..., 1:, :] - luma[..., :-1, :]
        grad = F.pad(gx.abs(), (0, 1, 0, 0)) + F.pad(gy.abs(), (0, 0, 0, 1))
        focus = _minmax(box_blur(grad, r).sqrt())

        nearness = 0.65 * perspective + 0.35 * focus
        return guided_filter(luma, nearness, r, 1e-3)


def load_estimator(name: str, device: torch.device | str = "cpu", short_side: int = 224) -> DepthEstimator:
    """The estimator for a ``StereoParams.depth_model`` value."""
    if name == "heuristic":
        return HeuristicDepth()
    from stereospot_pipeline.stereo.models import load_depth_anything

    return load_depth_anything(name, device=device, short_side=short_side)
