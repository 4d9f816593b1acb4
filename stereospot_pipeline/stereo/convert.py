"""Frames in, stereo frames out: depth -> normalise -> warp -> layout, batched on one device."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from stereospot_pipeline.stereo.depth import DepthEstimator, load_estimator
from stereospot_pipeline.stereo.layout import compose
from stereospot_pipeline.stereo.normalize import minmax_per_frame
from stereospot_pipeline.stereo.params import StereoParams
from stereospot_pipeline.stereo.warp import synthesize_views


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@dataclass
class DepthStats:
    """Running summary of the normalised depth actually used (for metadata and comfort checks)."""

    frames: int = 0
    mean_sum: float = 0.0
    max_abs_shift_px: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def mean_depth(self) -> float:
        return self.mean_sum / self.frames if self.frames else 0.0


class StereoConverter:
    """Stateful per segment (temporal smoothing needs the previous frames)."""

    def __init__(self, params: StereoParams, device: torch.device | None = None,
                 estimator: DepthEstimator | None = None):
        self.params = params
        self.device = device or pick_device()
        self.estimator = estimator or load_estimator(params.depth_model, self.device, params.depth_short_side)
        self.stats = DepthStats()

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [B,H,W,3] RGB -> uint8 [B,H',W',3] packed in ``params.layout``."""
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        h, w = x.shape[-2:]
        nearness = self.estimator(x)
        depth = minmax_per_frame(nearness)
        depth = F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=False)
        p = self.params
        left, right = synthesize_views(x, depth, p.divergence, p.convergence, p.method)
        packed = compose(left, right, p.layout)
        self.stats.frames += x.shape[0]
        self.stats.mean_sum += float(depth.mean(dim=(1, 2, 3)).sum())
        extreme = max(abs(float(depth.amax()) - p.convergence), abs(float(depth.amin()) - p.convergence))
        shift = p.divergence / 100.0 * extreme * max(h, w) / 2.0
        self.stats.max_abs_shift_px = max(self.stats.max_abs_shift_px, shift)
        return packed.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
