"""Depth estimation: estimators map RGB frames to relative nearness (larger = nearer).

Every estimator is a callable ``frames [B,3,H,W] float 0..1 -> nearness [B,1,h,w]`` where h, w is
the estimator's working resolution (the caller resizes). Values are relative: the caller
normalises them (see ``normalize.py``), so an estimator never needs to know the video's range.
"""

from __future__ import annotations

from typing import Protocol

import cv2
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
    """Mean over a (2r+1)^2 window with edge replication. [B,C,H,W] -> same.

    On the CPU (float32) OpenCV's box filter, a third of the cost of the tensor version. Elsewhere
    running sums (cumsum) keep the cost independent of the radius; a direct 2-D average pool costs
    (2r+1)^2 per pixel. float32 sums lose about 1e-7 x the row length in precision: negligible at
    depth resolution (a few hundred pixels).
    """
    if radius <= 0:
        return x
    k = 2 * radius + 1
    if x.device.type == "cpu" and x.dtype == torch.float32:
        x = x.contiguous()
        out = torch.empty_like(x)
        for src, dst in zip(x.flatten(0, 1).numpy(), out.flatten(0, 1).numpy()):
            cv2.blur(src, (k, k), dst=dst, borderType=cv2.BORDER_REPLICATE)
        return out
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.pad(x.cumsum(-1), (1, 0))
    x = x[..., k:] - x[..., :-k]
    x = F.pad(x.cumsum(-2), (0, 0, 1, 0))
    return (x[..., k:, :] - x[..., :-k, :]) / (k * k)


class GuidedFilter:
    """Edge-preserving smoothing that follows the edges of ``guide`` [B,1,H,W] (He et al.'s guided
    filter): depth discontinuities snap to image edges. The guide's local statistics are computed
    once, so filtering several maps with one guide costs two (two-channel) box blurs each."""

    def __init__(self, guide: torch.Tensor, radius: int, eps: float):
        self.guide, self.radius, self.eps = guide, radius, eps
        stats = box_blur(torch.cat([guide, guide * guide], dim=1), radius)
        self.mean_i = stats[:, :1]
        self.var_i = stats[:, 1:] - self.mean_i * self.mean_i

    def __call__(self, src: torch.Tensor) -> torch.Tensor:
        """[B,1,H,W] -> [B,1,H,W] smoothed within the guide's regions."""
        means = box_blur(torch.cat([src, self.guide * src], dim=1), self.radius)
        mean_p = means[:, :1]
        a = (means[:, 1:] - self.mean_i * mean_p) / (self.var_i + self.eps)
        b = mean_p - a * self.mean_i
        coefficients = box_blur(torch.cat([a, b], dim=1), self.radius)
        return coefficients[:, :1] * self.guide + coefficients[:, 1:]


def _unit_mean(x: torch.Tensor) -> torch.Tensor:
    """Scale each frame of [B,1,H,W] to mean 1, so cues of different units can be multiplied."""
    return x / x.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-6)


def rec601_luma(x: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] RGB -> [B,1,H,W] Rec.601 luma."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).contiguous()


def _opponent(x: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] RGB -> [B,3,H,W] (luma/2, red-green, yellow-blue).

    Luma is halved so shading (one surface, lit unevenly) counts less than a change of colour.
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.cat([0.5 * rec601_luma(x), r - g, 0.5 * (r + g) - b], dim=1)


def _zscore(x: torch.Tensor) -> torch.Tensor:
    """Each frame of [B,1,H,W] to mean 0, standard deviation 1. The moments are two plain sums:
    ``Tensor.std`` takes ten times as long on the CPU."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    var = (x * x).mean(dim=(-2, -1), keepdim=True) - mean * mean
    return (x - mean) / var.clamp_min(0.0).sqrt().clamp_min(1e-6)


def gradient_energy(luma: torch.Tensor) -> torch.Tensor:
    """|d/dx| + |d/dy| of [B,1,H,W] -> [B,1,H,W]."""
    gx = (luma[..., :, 1:] - luma[..., :, :-1]).abs()
    gy = (luma[..., 1:, :] - luma[..., :-1, :]).abs()
    return F.pad(gx, (0, 1, 0, 0)) + F.pad(gy, (0, 0, 0, 1))


def border_distinctness(x: torch.Tensor, samples: int = 256) -> torch.Tensor:
    """How unlike the frame's top, left and right borders each pixel's colour is.
    [B,3,h,w] (small) -> [B,1,h,w].

    Borders mostly show background (salient-object detection's "boundary prior"); the bottom border
    is left out because the ground under the camera usually reaches it. Distance to the nearest
    border sample rather than to their mean, so a background of several colours is modelled.
    """
    b, _, h, w = x.shape
    k = max(1, h // 12)
    opp = _opponent(x)
    border = torch.cat([opp[..., :k, :].flatten(2), opp[..., k:, :k].flatten(2), opp[..., k:, -k:].flatten(2)], 2)
    step = max(1, border.shape[-1] // samples)
    border = border[..., ::step].transpose(1, 2)  # [B,M,3]
    pixels = opp.flatten(2).transpose(1, 2)  # [B,N,3]
    # Squared distances as |p|^2 + |q|^2 - 2 p.q (one batched matmul) and the root of the minimum
    # only: ``cdist`` takes the root of every pair.
    squared = torch.baddbmm((border * border).sum(-1).unsqueeze(1), pixels, border.transpose(1, 2), alpha=-2.0)
    nearest = squared.amin(dim=-1) + (pixels * pixels).sum(-1)
    return nearest.clamp_min_(0.0).sqrt_().view(b, 1, h, w)


class HeuristicDepth:
    """Weight-free monocular depth from cues that hold on most natural footage.

    nearness = perspective + 0.5 * objectness, both as z-scores, then a guided filter so depth edges
    follow image edges:

    - perspective: on a ground plane, disparity grows linearly towards the bottom of the frame.
    - objectness: the subject stands in front of its background. A pixel is object-like when its
      colour differs from the frame borders, it sits in detailed/in-focus texture (defocus blurs
      the background), and it is near the centre of the frame (framing bias). The product (a
      geometric mean) keeps only pixels that satisfy the cues together.

    With ``motion=True`` the estimator keeps the previous frame between calls and adds a
    motion-parallax cue (under a moving camera nearer surfaces move more). Call ``reset()`` at a
    scene cut or a new file; a cut also resets the cue by itself because the frames are unrelated.
    """

    # The cues are low-frequency: on the motorcycle pair Spearman is 0.765 at 128 rows and 0.764
    # at 160, which costs 1.6x as much.
    def __init__(self, short_side: int = 128, motion: bool = False):
        self.name = "heuristic-motion" if motion else "heuristic"
        self.short_side = short_side
        self.motion = motion
        self._prev: torch.Tensor | None = None

    def reset(self) -> None:
        self._prev = None

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        x = resize_short_side(frames, self.short_side)
        luma = rec601_luma(x)
        h, w = luma.shape[-2:]
        r = max(2, min(h, w) // 16)

        rows = torch.linspace(0.0, 1.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
        perspective = _zscore(rows)  # the same for every frame: [1,1,h,1]

        # Colour distinctness is smooth by nature: a quarter resolution is enough and keeps the
        # all-pairs distance cheap.
        small = F.avg_pool2d(x, 4, ceil_mode=True)
        distinct = F.interpolate(border_distinctness(small), size=(h, w), mode="bilinear", align_corners=False)
        detail = box_blur(gradient_energy(luma), r)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
        centre = torch.exp(-(xs * xs + ys * ys) / 0.5)
        objectness = (_unit_mean(detail) * _unit_mean(distinct)).sqrt() * centre
        smooth = GuidedFilter(luma, r, 1e-3)
        objectness = smooth(objectness)

        nearness = perspective + 0.5 * _zscore(objectness)
        if self.motion:
            nearness = nearness + 0.5 * self._parallax(luma, r)
        return smooth(nearness)

    def _parallax(self, luma: torch.Tensor, r: int) -> torch.Tensor:
        """Motion-parallax cue [B,1,h,w] (z-scored, faded out when there is no usable motion).

        Normal-flow magnitude |dI/dt| / |grad I| approximates how far each pixel moved between
        consecutive frames without block matching. Weighted by mean motion / (mean motion + 1 px)
        so sensor noise on a static shot does not become depth, and zeroed across a cut.
        """
        prev = luma[:1] if self._prev is None or self._prev.shape != luma[:1].shape else self._prev
        before = torch.cat([prev, luma[:-1]], dim=0)
        self._prev = luma[-1:].clone()
        diff = (luma - before).abs()
        flow = box_blur(diff, r) / (box_blur(gradient_energy(luma), r) + 0.02)
        mean_flow = flow.mean(dim=(-2, -1), keepdim=True)
        confidence = mean_flow / (mean_flow + 1.0)
        is_cut = diff.mean(dim=(-2, -1), keepdim=True) > 0.15
        return torch.where(is_cut, torch.zeros_like(flow), _zscore(flow) * confidence)


def load_estimator(name: str, device: torch.device | str = "cpu", short_side: int | None = None) -> DepthEstimator:
    """The estimator for a ``StereoParams.depth_model`` value ("auto" resolved by
    ``models.choose_model``); ``short_side`` None: the model's default for the device."""
    from stereospot_pipeline.stereo.models import choose_model, load_learned_depth

    name = choose_model(name).model
    if name == "heuristic":
        return HeuristicDepth()
    if name == "heuristic-motion":
        return HeuristicDepth(motion=True)
    return load_learned_depth(name, device=device, short_side=short_side)
