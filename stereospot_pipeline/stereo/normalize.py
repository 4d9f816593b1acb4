"""Turn relative nearness into 0..1 depth (1 = nearest) consistently over time.

Two normalisers share one streaming API, ``push(nearness, payloads, cuts) -> ready`` and
``flush() -> ready``, where ``ready`` is a list of ``(depth [1,h,w], payload)`` in input order:

- ``EmaNormalizer`` smooths each frame's min/max over time; its look-ahead makes output lag input
  by ``lookahead`` frames, so callers keep each frame's payload (the pixels) until it comes back.
- ``FixedNormalizer`` applies one ``DepthRange`` measured over the whole video, so every segment
  of a video, converted independently, maps the same nearness to the same depth (no seams).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from pydantic import BaseModel

Ready = list[tuple[torch.Tensor, Any]]

# Per-frame samples kept for the whole-video percentiles: bounded memory whatever the length.
_RANGE_SAMPLES_PER_FRAME = 4096


class DepthRange(BaseModel):
    """Robust nearness range of a whole video, stored once per video and given to every segment."""

    lo: float
    hi: float
    frames: int


class Normalizer(Protocol):
    def push(self, nearness: torch.Tensor, payloads: Sequence[Any], cuts: Sequence[bool]) -> Ready: ...

    def flush(self) -> Ready: ...

    def prime(self, nearness: torch.Tensor, cuts: Sequence[bool]) -> None: ...


def apply_range(nearness: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """nearness [...,H,W] -> depth in 0..1 with ``lo`` -> 0 and ``hi`` -> 1, clamped."""
    return ((nearness - lo) / max(hi - lo, 1e-6)).clamp(0, 1)


class FixedNormalizer:
    """One range for every frame: no state, no lag."""

    def __init__(self, depth_range: DepthRange):
        self.range = depth_range

    def push(self, nearness: torch.Tensor, payloads: Sequence[Any], cuts: Sequence[bool]) -> Ready:
        """nearness [B,1,h,w], B payloads, B cut flags (unused) -> B ready frames."""
        depth = apply_range(nearness, self.range.lo, self.range.hi)
        return list(zip(depth, payloads))

    def flush(self) -> Ready:
        return []

    def prime(self, nearness: torch.Tensor, cuts: Sequence[bool]) -> None:
        """Nothing to learn from earlier frames: the range is fixed."""


@dataclass
class _Pending:
    nearness: torch.Tensor  # [1,h,w]
    payload: Any
    scene: int
    lo: float  # causal EMA of the per-frame minimum up to this frame
    hi: float


class EmaNormalizer:
    """Min/max normalisation with the range smoothed over time, anticipating coming changes.

    A causal EMA of each frame's min/max (``decay`` = weight of history) is followed by the same
    EMA run backwards over the next ``lookahead`` frames: a zero-phase smoother, so the range
    starts moving before a jump in the content instead of lagging behind it. Both passes restart
    at scene cuts: a new shot never borrows the previous shot's range, nor the other way round.
    ``decay=0`` is plain per-frame min-max. Memory: at most ``lookahead + B`` pending frames.
    """

    def __init__(self, decay: float = 0.75, lookahead: int = 30):
        self.decay = decay
        self.lookahead = lookahead
        self._pending: deque[_Pending] = deque()
        self._scene = 0
        self._ema: tuple[float, float] | None = None

    def push(self, nearness: torch.Tensor, payloads: Sequence[Any], cuts: Sequence[bool]) -> Ready:
        """nearness [B,1,h,w], B payloads, B flags (True: frame starts a new shot) -> the frames
        whose look-ahead is now complete (possibly none), oldest first."""
        for frame, payload, cut, (lo, hi) in zip(nearness, payloads, cuts, _extremes(nearness)):
            self._advance(lo, hi, cut)
            self._pending.append(_Pending(frame, payload, self._scene, *self._ema))
        ready = []
        while len(self._pending) > self.lookahead:
            ready.append(self._emit())
        return ready

    def flush(self) -> Ready:
        """The frames still held back (end of stream); the smoothing state carries on."""
        return [self._emit() for _ in range(len(self._pending))]

    def prime(self, nearness: torch.Tensor, cuts: Sequence[bool]) -> None:
        """Let the frames just before the stream (nearness [B,1,h,w], B cut flags) set the
        smoothed range, without emitting them: a segment then continues the range its
        predecessor ended with instead of starting from its own first frame."""
        for cut, (lo, hi) in zip(cuts, _extremes(nearness)):
            self._advance(lo, hi, cut)

    def _advance(self, lo: float, hi: float, cut: bool) -> None:
        if cut or self._ema is None:
            self._scene += 1
            self._ema = (lo, hi)
        else:
            d = self.decay
            self._ema = (d * self._ema[0] + (1 - d) * lo, d * self._ema[1] + (1 - d) * hi)

    def _emit(self) -> tuple[torch.Tensor, Any]:
        head = self._pending[0]
        window = [p for p in list(self._pending)[: self.lookahead + 1] if p.scene == head.scene]
        lo, hi = window[-1].lo, window[-1].hi
        for p in reversed(window[:-1]):
            lo = self.decay * lo + (1 - self.decay) * p.lo
            hi = self.decay * hi + (1 - self.decay) * p.hi
        self._pending.popleft()
        return apply_range(head.nearness, lo, hi), head.payload


def _extremes(nearness: torch.Tensor) -> list[tuple[float, float]]:
    """Per frame of [B,1,h,w], (min, max), read back from the device in one go."""
    return list(zip(nearness.amin(dim=(1, 2, 3)).tolist(), nearness.amax(dim=(1, 2, 3)).tolist()))


class SceneCutDetector:
    """Flags the first frame of each new shot: a jump in the luma histogram of a thumbnail.

    Histograms ignore where things are, so pans and moving subjects do not trigger it; a cut
    replaces most of the tonal distribution at once. Stateful across batches.
    """

    def __init__(self, threshold: float = 0.4, bins: int = 32, thumb: int = 64):
        self.threshold = threshold
        self.bins = bins
        self.thumb = thumb
        self._previous: torch.Tensor | None = None

    def __call__(self, frames: torch.Tensor) -> list[bool]:
        """frames [B,3,H,W] 0..1 -> B flags (the first frame of a stream is not a cut)."""
        small = F.interpolate(frames, size=(self.thumb, self.thumb), mode="area")
        luma = 0.299 * small[:, 0] + 0.587 * small[:, 1] + 0.114 * small[:, 2]
        index = (luma * self.bins).long().clamp_(0, self.bins - 1).flatten(1)
        hist = torch.zeros(frames.shape[0], self.bins, device=frames.device).scatter_add_(
            1, index, torch.ones_like(index, dtype=torch.float32))
        hist /= index.shape[1]
        sequence = hist if self._previous is None else torch.cat([self._previous, hist])
        # Half the L1 distance: the share of pixels whose tone moved to another bin.
        flags = (0.5 * (sequence[1:] - sequence[:-1]).abs().sum(dim=1) > self.threshold).tolist()
        if self._previous is None:
            flags = [False] + flags
        self._previous = hist[-1:]
        return flags


def robust_range(nearness_batches: Iterable[torch.Tensor], lo_pct: float = 2.0,
                 hi_pct: float = 98.0) -> DepthRange:
    """DepthRange from nearness maps [B,1,h,w] of frames sampled across a whole video: the
    ``lo_pct``/``hi_pct`` percentiles, so a few extreme pixels do not squash everything else."""
    samples, frames = [], 0
    for nearness in nearness_batches:
        flat = nearness.flatten(1)
        step = max(1, flat.shape[1] // _RANGE_SAMPLES_PER_FRAME)
        samples.append(flat[:, ::step].float().cpu())
        frames += nearness.shape[0]
    if not frames:
        raise ValueError("no frame to measure the depth range on")
    values = torch.cat([s.flatten() for s in samples])
    lo, hi = torch.quantile(values, torch.tensor([lo_pct / 100, hi_pct / 100])).tolist()
    return DepthRange(lo=lo, hi=hi, frames=frames)


def seam_ratio(segments: Sequence[torch.Tensor]) -> float:
    """How much more depth jumps at segment seams than between neighbouring frames inside them.

    segments: per segment, its frames' depth maps [T,1,h,w] in order. Mean absolute change from
    the last frame of each segment to the first of the next, over the mean absolute change
    between adjacent frames within segments. About 1 means the seams are invisible.
    """
    inside = torch.cat([(s[1:] - s[:-1]).abs().mean(dim=(1, 2, 3)) for s in segments if len(s) > 1])
    across = torch.stack([(b[0] - a[-1]).abs().mean() for a, b in zip(segments, segments[1:])])
    return float(across.mean() / inside.mean().clamp_min(1e-9))
