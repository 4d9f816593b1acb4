"""Frames in, stereo frames out: depth -> normalise -> warp -> layout, batched on one device."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stereospot_pipeline.stereo.depth import DepthEstimator, load_estimator
from stereospot_pipeline.stereo.depth_post import postprocess_depth, with_flip_tta
from stereospot_pipeline.stereo.layout import compose, output_size
from stereospot_pipeline.stereo.normalize import (
    DepthRange,
    EmaNormalizer,
    FixedNormalizer,
    Normalizer,
    Ready,
    SceneCutDetector,
    robust_range,
)
from stereospot_pipeline.stereo.params import Layout, StereoParams
from stereospot_pipeline.stereo.warp import eye_shift, synthesize_views


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def _to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [B,H,W,3] -> float [B,3,H,W] in 0..1."""
    return pixels.permute(0, 3, 1, 2).float().div_(255.0)


def analysis_frames(pixels: torch.Tensor, short_side: int) -> torch.Tensor:
    """uint8 [B,H,W,3] -> float [B,3,h,w] in 0..1 with min(h, w) = short_side (never enlarged):
    what the depth estimator and the cut detector see.

    Shrinking the uint8 frame first (antialiased, so close to an area average) and converting only
    the small result to float costs a tenth of converting the whole frame.
    """
    x = pixels.permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    scale = short_side / min(h, w)
    if scale < 1:
        if x.device.type != "cpu":
            x = x.float()  # the uint8 resampling kernel exists on the CPU only
        x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear",
                          antialias=True, align_corners=False)
    return x.float().div_(255.0)


@dataclass
class DepthStats:
    """Running summary of the normalised depth actually used (for metadata and comfort checks)."""

    frames: int = 0
    mean_sum: float = 0.0
    max_abs_shift_px: float = 0.0  # per eye, i.e. half the largest disparity
    # Per-frame mean depth at both ends and its summed frame-to-frame change: the seam check
    # compares the jump between segments with the usual change inside them.
    first_mean_depth: float | None = None
    last_mean_depth: float | None = None
    mean_depth_steps: float = 0.0
    depth_min: float = 1.0  # the depth range actually used, over every pixel of every frame
    depth_max: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def mean_depth(self) -> float:
        return self.mean_sum / self.frames if self.frames else 0.0


class StereoConverter:
    """Stateful over one stream of frames (a segment): temporal smoothing and cut detection.

    Streaming use: ``push(frames, payloads)`` returns the frames whose depth is final, which lag
    the input by up to ``params.ema_lookahead`` frames, each with its payload (e.g. timestamps);
    ``flush()`` returns the rest at the end. ``converter(frames)`` is push + flush in one call:
    every frame comes back at once, but look-ahead then sees only frames already given.

    With ``depth_range`` (from ``video_depth_range`` over the whole video) every frame is
    normalised with that one range: no lag, and independent segments join without depth jumps.
    """

    def __init__(self, params: StereoParams, device: torch.device | None = None,
                 estimator: DepthEstimator | None = None, depth_range: DepthRange | None = None):
        self.params = params
        self.device = device or pick_device()
        estimator = estimator or load_estimator(params.depth_model, self.device, params.depth_short_side)
        self.estimator = with_flip_tta(estimator, params.flip_tta)
        self.normalizer: Normalizer = (FixedNormalizer(depth_range) if depth_range is not None
                                       else EmaNormalizer(params.ema_decay, params.ema_lookahead))
        self.stats = DepthStats(extra={"scene_cuts": 0})
        self._cuts = SceneCutDetector()
        self._packed_shape = (0, 0, 3)

    @torch.inference_mode()
    def push(self, frames: np.ndarray, payloads: Sequence[Any] | None = None) -> tuple[np.ndarray, list]:
        """uint8 [B,H,W,3] RGB (+ B payloads) -> (uint8 [N,H',W',3] packed in ``params.layout``,
        their N payloads), oldest first; N may be 0 while the look-ahead fills."""
        # Frames the look-ahead holds past this call are copied (the caller may reuse its array);
        # with a fixed range every frame is done before this returns, so the array is used as is.
        holds = not isinstance(self.normalizer, FixedNormalizer)
        pixels = torch.tensor(frames, device=self.device) if holds else torch.as_tensor(frames, device=self.device)
        x = analysis_frames(pixels, self.params.depth_short_side)
        cuts = self._cuts(x)
        self.stats.extra["scene_cuts"] += sum(cuts)
        w, h = output_size(frames.shape[2], frames.shape[1], self.params.layout)
        self._packed_shape = (h, w, 3)
        payloads = [None] * len(frames) if payloads is None else list(payloads)
        return self._render(self.normalizer.push(self.estimator(x), list(zip(pixels, payloads)), cuts))

    @torch.inference_mode()
    def flush(self) -> tuple[np.ndarray, list]:
        """The frames still held for look-ahead, as ``push`` returns them."""
        return self._render(self.normalizer.flush())

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [B,H,W,3] RGB -> uint8 [B,H',W',3] packed in ``params.layout``."""
        head, _ = self.push(frames)
        tail, _ = self.flush()
        return np.concatenate([head, tail])

    def _render(self, ready: Ready) -> tuple[np.ndarray, list]:
        packed, payloads = [], []
        step = self.params.batch_size
        for start in range(0, len(ready), step):
            chunk = ready[start:start + step]
            depth = torch.stack([d for d, _ in chunk])
            pixels = torch.stack([p for _, (p, _) in chunk])
            packed.append(self._pack(pixels, depth))
            payloads.extend(payload for _, (_, payload) in chunk)
        if not packed:
            return np.zeros((0, *self._packed_shape), np.uint8), []
        return np.concatenate(packed), payloads

    def _pack(self, pixels: torch.Tensor, depth: torch.Tensor) -> np.ndarray:
        """pixels uint8 [B,H,W,3], depth [B,1,h,w] 0..1 at the estimator's resolution -> uint8
        [B,H',W',3]. The frame stays uint8 throughout: the warp reads it at full resolution only
        once, with read positions found at the depth's resolution. Frames are warped one at a
        time into the output: a batch of full-resolution intermediates would multiply the peak
        memory for no speed (each frame alone fills the device)."""
        b, h, w = pixels.shape[:3]
        p = self.params
        depth = postprocess_depth(depth, p.edge_dilation, p.foreground_scale)
        out = np.empty((b, *self._packed_shape), np.uint8)
        for i in range(b):
            image, frame_depth = pixels[i:i + 1].permute(0, 3, 1, 2), depth[i:i + 1]  # channels-last view
            if p.layout is Layout.DEPTH:
                # The depth debug layout shows the source frame, so it needs no warp.
                full = F.interpolate(frame_depth, size=(h, w), mode="bilinear", align_corners=False)
                packed = compose(image, image, p.layout, full)
            else:
                packed = compose(*synthesize_views(image, frame_depth, p), p.layout)
            torch.from_numpy(out[i:i + 1]).copy_(packed.permute(0, 2, 3, 1))
        self._record(depth)
        shift = float(eye_shift(depth, p, (h, w)).abs().amax())
        self.stats.max_abs_shift_px = max(self.stats.max_abs_shift_px, shift)
        return out

    def _record(self, depth: torch.Tensor) -> None:
        st = self.stats
        means = depth.mean(dim=(1, 2, 3)).tolist()
        previous = [st.last_mean_depth] if st.last_mean_depth is not None else []
        chain = previous + means
        st.mean_depth_steps += sum(abs(b - a) for a, b in zip(chain, chain[1:]))
        if st.first_mean_depth is None:
            st.first_mean_depth = means[0]
        st.last_mean_depth = means[-1]
        st.frames += len(means)
        st.mean_sum += sum(means)
        st.depth_min = min(st.depth_min, float(depth.amin()))
        st.depth_max = max(st.depth_max, float(depth.amax()))


def video_depth_range(frames: Iterable[np.ndarray], estimator: DepthEstimator,
                      device: torch.device | None = None, batch_size: int = 8,
                      lo_pct: float = 2.0, hi_pct: float = 98.0) -> DepthRange:
    """The nearness range of a whole video, for ``StereoConverter(depth_range=...)``.

    frames: uint8 [H,W,3] frames sampled across the video (e.g. one per second), decoded at about
    the estimator's working resolution; the estimator must be the one the segments will use
    (``StereoConverter.estimator``: flip TTA included).
    """
    device = device or pick_device()

    def nearness() -> Iterator[torch.Tensor]:
        it = iter(frames)
        while chunk := list(islice(it, batch_size)):
            with torch.inference_mode():
                batch = estimator(_to_float(torch.from_numpy(np.stack(chunk)).to(device)))
            yield batch

    return robust_range(nearness(), lo_pct, hi_pct)
