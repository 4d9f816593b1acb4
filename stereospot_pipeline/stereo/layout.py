"""Pack a left/right pair into the frame layout players expect."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stereospot_pipeline.stereo.params import Layout

# Dubois' least-squares red/cyan matrices (rows: output R,G,B; columns: input R,G,B).
_DUBOIS_LEFT = torch.tensor(
    [[0.437, 0.449, 0.164], [-0.062, -0.062, -0.024], [-0.048, -0.050, -0.017]]
)
_DUBOIS_RIGHT = torch.tensor(
    [[-0.011, -0.032, -0.007], [0.377, 0.761, 0.009], [-0.026, -0.093, 1.234]]
)


def output_size(width: int, height: int, layout: Layout) -> tuple[int, int]:
    """(width, height) of a packed frame for a source of ``width`` x ``height``."""
    if layout is Layout.FULL_SBS:
        return 2 * width, height
    return width, height


def _half_width(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h, w // 2), mode="area")


def compose(left: torch.Tensor, right: torch.Tensor, layout: Layout) -> torch.Tensor:
    """left, right [B,3,H,W] -> packed [B,3,H',W'] (see ``output_size``)."""
    if layout is Layout.FULL_SBS:
        return torch.cat([left, right], dim=3)
    if layout is Layout.HALF_SBS:
        out = torch.cat([_half_width(left), _half_width(right)], dim=3)
        if out.shape[-1] != left.shape[-1]:  # odd source width
            out = F.pad(out, (0, left.shape[-1] - out.shape[-1]), mode="replicate")
        return out
    if layout is Layout.ANAGLYPH:
        ml = _DUBOIS_LEFT.to(left.device, left.dtype)
        mr = _DUBOIS_RIGHT.to(left.device, left.dtype)
        out = torch.einsum("oc,bchw->bohw", ml, left) + torch.einsum("oc,bchw->bohw", mr, right)
        return out.clamp(0, 1)
    raise ValueError(f"unknown layout {layout!r}")
