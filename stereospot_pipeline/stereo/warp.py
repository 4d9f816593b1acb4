"""Depth-image based rendering: synthesise left/right views from one image and its depth."""

from __future__ import annotations

import torch

from stereospot_pipeline.stereo.params import WarpMethod


def eye_shift(depth: torch.Tensor, divergence: float, convergence: float) -> torch.Tensor:
    """Per-eye horizontal shift in pixels. depth [B,1,H,W] in 0..1 (1 = near) -> [B,1,H,W].

    shift = divergence/100 * (depth - convergence) * max(H, W) / 2; objects nearer than the
    convergence plane get positive shift (they appear in front of the screen).
    """
    h, w = depth.shape[-2:]
    return (divergence / 100.0) * (depth - convergence) * (max(h, w) / 2.0)


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


def synthesize_views(
    image: torch.Tensor,
    depth: torch.Tensor,
    divergence: float,
    convergence: float,
    method: WarpMethod = WarpMethod.BACKWARD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(left, right) views. image [B,3,H,W], depth [B,1,H,W] 0..1 -> two [B,3,H,W]."""
    shift = eye_shift(depth, divergence, convergence)
    if method is WarpMethod.BACKWARD:
        return sample_horizontal(image, -shift), sample_horizontal(image, shift)
    raise NotImplementedError(f"warp method {method.value!r} is not available yet")
