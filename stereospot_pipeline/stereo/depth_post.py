"""Depth post-processing between estimation and warping: pure functions on depth maps.

Order in the converter: ``with_flip_tta`` wraps the estimator; ``postprocess_depth`` runs on the
normalised 0..1 depth at the estimator's resolution, before it is resized to the frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from stereospot_pipeline.stereo.depth import DepthEstimator


def dilate_edges(depth: torch.Tensor, x_iterations: int, y_iterations: int) -> torch.Tensor:
    """Grow nearer values into farther neighbours. [B,1,h,w] (larger = nearer) -> same.

    n iterations are one (2n+1)-tap max filter along each axis. At a depth edge the foreground's
    depth then covers the mixed pixels along its silhouette, so the warp moves them with the
    foreground instead of stretching them across the gap. Smooth regions are practically
    unchanged.
    """
    return _max_filter(_max_filter(depth, x_iterations, -1), y_iterations, -2)


def _max_filter(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Max over a (2r+1)-tap window along ``dim`` (-1 or -2), the frame edge padded with -inf.
    A running maximum of shifted views: an order of magnitude faster than ``max_pool2d`` with a
    one-dimensional kernel on the CPU."""
    if radius <= 0:
        return x
    n = x.shape[dim]
    padded = F.pad(x, (radius, radius, 0, 0) if dim == -1 else (0, 0, radius, radius), value=float("-inf"))
    out = padded.narrow(dim, 0, n)
    for k in range(1, 2 * radius + 1):
        out = torch.maximum(out, padded.narrow(dim, k, n))
    return out


def foreground_curve(depth: torch.Tensor, scale: float) -> torch.Tensor:
    """Monotone remap of 0..1 depth (1 = near) that keeps 0 and 1 fixed. [B,1,h,w] -> same.

    f(d) = (e^(s d) - 1) / (e^s - 1): s > 0 is convex (more depth range among near objects, the
    background flattened), s < 0 concave (the reverse), s -> 0 tends to the identity.
    """
    if abs(scale) < 1e-6:
        return depth
    return torch.expm1(scale * depth) / math.expm1(scale)


def postprocess_depth(depth: torch.Tensor, edge_dilation: int, foreground_scale: float) -> torch.Tensor:
    """The ``StereoParams`` post-processing on normalised depth [B,1,h,w] in 0..1 -> same.

    Dilation runs ``edge_dilation`` steps along x and half as many along y (iw3's 2 x / 1 y
    default): stretching artifacts of a horizontal warp are horizontal. It commutes with any
    per-frame increasing normalisation, so running it after normalising loses nothing.
    """
    depth = dilate_edges(depth, edge_dilation, edge_dilation // 2)
    return foreground_curve(depth, foreground_scale)


def flip_average(estimator: DepthEstimator, frames: torch.Tensor) -> torch.Tensor:
    """Mean of the estimate and the mirrored estimate of the mirrored frames.
    frames [B,3,H,W] -> nearness [B,1,h,w].

    Cancels left/right biases of the estimator. Both passes go through the estimator as one batch
    of 2B frames, so a learned model runs once.
    """
    both = estimator(torch.cat([frames, frames.flip(-1)], dim=0))
    plain, mirrored = both.chunk(2, dim=0)
    return 0.5 * (plain + mirrored.flip(-1))


class FlipTTA:
    """An estimator that applies ``flip_average`` to another (same contract, twice the cost)."""

    def __init__(self, estimator: DepthEstimator):
        self.estimator = estimator
        self.name = f"{estimator.name}+flip"
        self.short_side = getattr(estimator, "short_side", None)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return flip_average(self.estimator, frames)


def with_flip_tta(estimator: DepthEstimator, enabled: bool = True) -> DepthEstimator:
    """``estimator`` itself, or wrapped in ``FlipTTA`` when ``enabled``.

    Refuses estimators that keep state between frames (motion parallax): they would take the
    mirrored frames for the next frames of the video.
    """
    if not enabled:
        return estimator
    if getattr(estimator, "motion", False):
        raise ValueError(f"flip TTA cannot wrap the stateful estimator {estimator.name!r}")
    return FlipTTA(estimator)
