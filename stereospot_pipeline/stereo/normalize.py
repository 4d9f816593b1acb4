"""Turn relative nearness into 0..1 depth (1 = nearest) consistently over time."""

from __future__ import annotations

import torch


def minmax_per_frame(nearness: torch.Tensor) -> torch.Tensor:
    """[B,1,H,W] -> [B,1,H,W] in 0..1, each frame on its own (flickers on video; a baseline)."""
    lo = nearness.amin(dim=(-2, -1), keepdim=True)
    hi = nearness.amax(dim=(-2, -1), keepdim=True)
    return ((nearness - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
