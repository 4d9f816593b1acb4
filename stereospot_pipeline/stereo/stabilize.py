"""Per-pixel temporal stabilisation of depth: no shimmer where the picture holds still.

A monocular estimator sees each frame alone, so sensor noise, compression and a subject moving
elsewhere in the frame nudge the depth of static surfaces from frame to frame. Range smoothing
(``normalize.py``) cannot help: the range is steady while single pixels wobble. In a headset the
wobble reads as surfaces breathing in depth, because stereo acuity resolves a fraction of a pixel.

Each pixel's nearness is a recursive average over time, weighted by how still the picture is
there: history weight ``strength`` where the frame did not change, falling linearly to 0 at a
luma change of ``threshold``. Moving content therefore takes its new depth at once (no lag, no
ghost of where an object was), and a scene cut restarts from the new frame.

Blending happens in the estimator's own units, before normalisation, without re-fitting each
frame's scale to the last: a frame-wide wobble of the estimate's scale is flicker too, and is
smoothed with the rest where the picture is still.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from stereospot_pipeline.stereo.depth import box_blur, rec601_luma

# Luma change (0..1, at depth resolution, 3x3-averaged) at which a pixel counts as moving. Frames
# shrunk to depth resolution average away most noise: on real clips about 90% of a static
# shot's pixels change by less than 2/255 between frames.
STILL_THRESHOLD = 4 / 255


def luma_at(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float RGB [B,3,H,W] 0..1 -> Rec.601 luma [B,1,*size] (area-averaged when shrinking)."""
    luma = rec601_luma(frames)
    if tuple(luma.shape[-2:]) == tuple(size):
        return luma
    return F.interpolate(luma, size=size, mode="area")


def history_weight(luma: torch.Tensor, previous_luma: torch.Tensor, strength: float,
                   threshold: float = STILL_THRESHOLD) -> torch.Tensor:
    """Per pixel, the weight of the previous depth: luma [B,1,h,w] and that of each frame's
    predecessor -> [B,1,h,w] in 0..strength (``strength`` where the picture did not change, 0
    from a change of ``threshold`` up)."""
    change = box_blur((luma - previous_luma).abs(), 1)
    return strength * (1.0 - change / threshold).clamp_(0.0, 1.0)


class DepthStabilizer:
    """Stateful over one stream: ``stabilizer(nearness, frames, cuts)`` per batch, in order.

    nearness [B,1,h,w] (any units, larger = nearer), frames [B,3,H,W] float RGB 0..1 (what the
    estimator saw), cuts: B flags (True: the frame starts a new shot) -> stabilised nearness
    [B,1,h,w]. ``strength=0`` returns the nearness unchanged.
    """

    def __init__(self, strength: float = 0.8, threshold: float = STILL_THRESHOLD):
        if not 0.0 <= strength < 1.0:
            raise ValueError("strength must be in [0, 1)")
        self.strength = strength
        self.threshold = threshold
        self._luma: torch.Tensor | None = None  # [1,1,h,w] of the last frame
        self._nearness: torch.Tensor | None = None  # its stabilised nearness

    def __call__(self, nearness: torch.Tensor, frames: torch.Tensor, cuts: Sequence[bool]) -> torch.Tensor:
        if self.strength == 0.0:
            return nearness
        luma = luma_at(frames, tuple(nearness.shape[-2:]))
        continues = self._luma is not None and self._luma.shape == luma[:1].shape
        previous = torch.cat([self._luma if continues else luma[:1], luma[:-1]])
        weights = history_weight(luma, previous, self.strength, self.threshold)
        out = torch.empty_like(nearness)
        state = self._nearness if continues else None
        for i, cut in enumerate(cuts):
            # The recursion is inherently sequential; at depth resolution each step is tiny.
            state = nearness[i] if state is None or cut else torch.lerp(nearness[i], state, weights[i])
            out[i] = state
        self._luma, self._nearness = luma[-1:].clone(), state.clone()
        return out


def still_pixels(luma: torch.Tensor, threshold: float = 2 / 255) -> torch.Tensor:
    """luma [T,1,h,w] of consecutive frames -> [T-1,1,h,w] True where the 5x5-averaged luma
    changed by less than ``threshold`` from the frame before (the picture holds still)."""
    return box_blur((luma[1:] - luma[:-1]).abs(), 2) < threshold


def still_flicker(depth: torch.Tensor, luma: torch.Tensor, threshold: float = 2 / 255) -> torch.Tensor:
    """How much depth changes between neighbouring frames where the picture does not: depth and
    luma [T,1,h,w] of consecutive frames -> |depth change| at every ``still_pixels`` pixel of
    every frame pair, flattened (empty if none)."""
    return (depth[1:] - depth[:-1]).abs()[still_pixels(luma, threshold)]
