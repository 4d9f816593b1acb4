"""Automatic comfort: the main subject on the screen plane, the parallax inside the budget.

``convergence="auto"``: each frame's subject depth is a weighted percentile of its depth, the
weights favouring the centre of the frame (framing bias) and salient depth (nearer, and standing
out from its surroundings); smoothed over time, restarted at scene cuts. That depth is put on the
screen plane, where the eyes converge without strain on what the viewer looks at.

``divergence="auto"``: the strength that gives each scene's largest parallax ``TARGET_SHARE`` of
the comfort budget (``MAX_DISPARITY_FRACTION`` of the width, what the comfort check enforces),
smoothed the same way and capped per frame so the budget is never exceeded: the check passes by
design, and flat scenes get more depth than a fixed strength would give them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stereospot_pipeline.stereo.params import AUTO, StereoParams

# The largest disparity (both eyes together) a conversion may show, as a fraction of the frame
# width: the comfort check's default limit (defs/checks.py ComfortConfig).
MAX_DISPARITY_FRACTION = 0.03
# Auto strength aims at this share of the budget: headroom for a frame deeper than its scene.
TARGET_SHARE = 0.6
# Auto strength never exceeds this (% of the larger side), however flat a scene is.
MAX_AUTO_DIVERGENCE = 5.0
# Weight of history per frame when smoothing the subject depth and the strength.
DECAY = 0.9
SUBJECT_PERCENTILE = 0.6


def subject_depth(depth: torch.Tensor) -> torch.Tensor:
    """depth [B,1,h,w] 0..1 (1 = near) -> [B] the main subject's depth: the weighted
    ``SUBJECT_PERCENTILE`` of the frame's depth, weights = centre prior x saliency (nearness plus
    local depth contrast: a subject stands in front of what surrounds it)."""
    b, _, h, w = depth.shape
    ys = torch.linspace(-1.0, 1.0, h, device=depth.device, dtype=depth.dtype).view(1, 1, h, 1)
    xs = torch.linspace(-1.0, 1.0, w, device=depth.device, dtype=depth.dtype).view(1, 1, 1, w)
    centre = torch.exp(-(xs * xs + ys * ys) / 0.3)
    k = max(3, (min(h, w) // 8) | 1)
    contrast = (depth - F.avg_pool2d(depth, k, stride=1, padding=k // 2, count_include_pad=False)).clamp_min(0)
    weight = (centre * (0.25 + depth + 4.0 * contrast)).flatten(1)
    values, order = depth.flatten(1).sort(dim=1)
    cumulative = weight.gather(1, order).cumsum(dim=1)
    index = (cumulative < SUBJECT_PERCENTILE * cumulative[:, -1:]).sum(dim=1).clamp(max=values.shape[1] - 1)
    return values.gather(1, index[:, None])[:, 0]


def budget_divergence(depth: torch.Tensor, convergence: torch.Tensor, params: StereoParams,
                      frame_size: tuple[int, int], share: float = 1.0) -> torch.Tensor:
    """[B] the largest divergence (% of the larger side) whose disparity stays within ``share``
    of the budget on each frame of depth [B,1,h,w] with ``convergence`` [B]. Per eye the shift
    is (div * (d - conv) + ipd) * max(H, W) / 200 (``warp.eye_shift``); a single synthetic eye
    carries the whole disparity itself."""
    h, w = frame_size
    per_eye = MAX_DISPARITY_FRACTION * share * w / 2 * 200 / max(h, w)  # % units, one eye
    if params.synthetic_view != "both":
        per_eye /= 2
    room = max(per_eye - abs(params.ipd_offset), 0.0)
    flat = depth.flatten(1)
    extent = torch.maximum(flat.amax(1) - convergence, convergence - flat.amin(1)).clamp_min(1e-3)
    return room / extent


@dataclass
class _Scene:
    convergence: float
    divergence: float


class ComfortController:
    """Per-frame (divergence, convergence) for a stream of normalised depth, for the settings
    that are "auto" (the others pass through). Stateful over one stream: ``__call__`` in frame
    order, with each frame's scene-cut flag."""

    def __init__(self, params: StereoParams, frame_size: tuple[int, int]):
        self.params, self.frame_size = params, frame_size
        self._state: _Scene | None = None

    @property
    def active(self) -> bool:
        return AUTO in (self.params.divergence, self.params.convergence)

    def __call__(self, depth: torch.Tensor, cuts: Sequence[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """depth [B,1,h,w], B cut flags -> (divergence [B,1,1,1], convergence [B,1,1,1])."""
        p = self.params
        subject = subject_depth(depth).tolist() if p.convergence == AUTO else None
        divergences, convergences = [], []
        for i, cut in enumerate(cuts):
            conv = subject[i] if subject is not None else float(p.convergence)
            state = self._state
            if state is not None and not cut and subject is not None:
                conv = DECAY * state.convergence + (1 - DECAY) * conv
            frame = depth[i:i + 1]
            if p.divergence == AUTO:
                target = float(budget_divergence(frame, torch.tensor([conv]), p, self.frame_size, TARGET_SHARE))
                target = min(target, MAX_AUTO_DIVERGENCE)
                div = target if state is None or cut else DECAY * state.divergence + (1 - DECAY) * target
                # The smoothed strength may lag a deeper frame: never past the budget itself.
                div = min(div, float(budget_divergence(frame, torch.tensor([conv]), p, self.frame_size)))
            else:
                div = float(p.divergence)
            self._state = _Scene(conv, div)
            divergences.append(div)
            convergences.append(conv)
        shape = (-1, 1, 1, 1)
        return (torch.tensor(divergences, dtype=depth.dtype, device=depth.device).view(shape),
                torch.tensor(convergences, dtype=depth.dtype, device=depth.device).view(shape))
