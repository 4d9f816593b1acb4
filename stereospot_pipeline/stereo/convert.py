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
from stereospot_pipeline.stereo import planes
from stereospot_pipeline.stereo.layout import compose, eye_slots, mixes_colours, output_size
from stereospot_pipeline.stereo.normalize import (
    DepthRange,
    EmaNormalizer,
    FixedNormalizer,
    Normalizer,
    Ready,
    SceneCutDetector,
    robust_range,
)
from stereospot_pipeline.stereo.comfort import ComfortController
from stereospot_pipeline.stereo.params import AUTO, CPU_DEPTH_SHORT_SIDE, Layout, StereoParams
from stereospot_pipeline.stereo.planes import PixelFormat
from stereospot_pipeline.stereo.stabilize import DepthStabilizer
from stereospot_pipeline.stereo.tonemap import sdr_view
from stereospot_pipeline.stereo.warp import Reads, eye_offsets, eye_shift, render_planes


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def analysis_frames(frames: torch.Tensor, short_side: int, fmt: PixelFormat = PixelFormat.RGB24,
                    hdr_transfer: str | None = None, matrix: str | None = None) -> torch.Tensor:
    """uint8 frames (a batch array in ``fmt``) -> float RGB [B,3,h,w] in 0..1 with
    min(h, w) = short_side (never enlarged): what the depth estimator and the cut detector see.
    ``hdr_transfer`` (PQ/HLG: BT.2020 frames kept HDR) -> an SDR view of them (stereo/tonemap.py).
    ``matrix``: the frames' matrix tag (ffmpeg's name, ``planes.matrix_for``): SD video tagged
    BT.709 is common, and read as BT.601 its colours shift.

    The uint8 planes are shrunk first (area-averaged) and only the small result is converted to
    float RGB: a small fraction of the cost of converting the whole frame.
    """
    h, w = planes.frame_size(frames, fmt)
    scale = min(1.0, short_side / min(h, w))
    size = (round(h * scale), round(w * scale))
    yuv_matrix = planes.matrix_for(h, "bt2020nc" if hdr_transfer else matrix)  # HDR is BT.2020 by definition
    if hdr_transfer:
        return sdr_view(planes.to_rgb(planes.split(frames, fmt), fmt, size, matrix=yuv_matrix), hdr_transfer)
    return planes.to_rgb(planes.split(frames, fmt), fmt, size, matrix=yuv_matrix)


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
    ``warm_up(frames)`` first, with the frames just before the stream (a segment's pre-roll),
    lets the temporal state continue from them.

    With ``depth_range`` (from ``video_depth_range`` over the whole video) every frame is
    normalised with that one range: no lag, and independent segments join without depth jumps.
    """

    def __init__(self, params: StereoParams, device: torch.device | None = None,
                 estimator: DepthEstimator | None = None, depth_range: DepthRange | None = None,
                 pixel_format: PixelFormat = PixelFormat.RGB24, hdr_transfer: str | None = None,
                 matrix: str | None = None):
        self.params = params
        self.hdr_transfer = hdr_transfer  # frames kept HDR (PQ/HLG): depth sees them tone-mapped
        self.matrix = matrix  # the frames' YUV matrix tag (analysis_frames)
        self.device = device or pick_device()
        self.pixel_format = PixelFormat(pixel_format)
        estimator = estimator or load_estimator(params.depth_model, self.device, params.depth_short_side)
        self.estimator = with_flip_tta(estimator, params.flip_tta)
        # Frames are shrunk once, straight to the size the estimator works at.
        working = getattr(estimator, "short_side", None)
        requested = params.depth_short_side or working or CPU_DEPTH_SHORT_SIDE
        self.analysis_side = min(requested, working) if working else requested
        self.normalizer: Normalizer = (FixedNormalizer(depth_range) if depth_range is not None
                                       else EmaNormalizer(params.ema_decay, params.ema_lookahead))
        self.stabilizer = DepthStabilizer(params.temporal_smoothing)
        self.stats = DepthStats(extra={"scene_cuts": 0})
        self._cuts = SceneCutDetector()
        self._packed_shape = planes.frame_shape(0, 0, self.pixel_format)
        self._comfort: ComfortController | None = None

    @torch.inference_mode()
    def warm_up(self, frames: np.ndarray) -> None:
        """uint8 frames in ``pixel_format`` that come just before the stream, oldest first: they
        set the cut detector, depth stabiliser and range smoothing as if the stream had started
        with them, and are not rendered. A segment converted after its predecessor's last frames
        then joins it without a step in depth (and, with a whole-video range, of the automatic
        comfort settings)."""
        pixels = torch.as_tensor(frames, device=self.device)
        x = analysis_frames(pixels, self.analysis_side, self.pixel_format, self.hdr_transfer, self.matrix)
        cuts = self._cuts(x)
        nearness = self.stabilizer(self.estimator(x), x, cuts)
        self.normalizer.prime(nearness, cuts)
        p = self.params
        if AUTO in (p.divergence, p.convergence) and isinstance(self.normalizer, FixedNormalizer):
            # Only a fixed range gives these frames' final depth now (the smoothed one lags).
            depth = torch.stack([d for d, _ in self.normalizer.push(nearness, [None] * len(cuts), cuts)])
            self._comfort_for(planes.frame_size(pixels, self.pixel_format))(
                postprocess_depth(depth, p.edge_dilation, p.foreground_scale), cuts)

    @torch.inference_mode()
    def push(self, frames: np.ndarray, payloads: Sequence[Any] | None = None) -> tuple[np.ndarray, list]:
        """uint8 frames in ``pixel_format`` (RGB [B,H,W,3] or YUV420P [B,H*3/2,W]) + B payloads ->
        (the packed frames in ``params.layout``, same format, and their N payloads), oldest
        first; N may be 0 while the look-ahead fills."""
        # Frames the look-ahead holds past this call are copied (the caller may reuse its array);
        # with a fixed range every frame is done before this returns, so the array is used as is.
        holds = not isinstance(self.normalizer, FixedNormalizer)
        pixels = torch.tensor(frames, device=self.device) if holds else torch.as_tensor(frames, device=self.device)
        x = analysis_frames(pixels, self.analysis_side, self.pixel_format, self.hdr_transfer, self.matrix)
        cuts = self._cuts(x)
        self.stats.extra["scene_cuts"] += sum(cuts)
        h, w = planes.frame_size(pixels, self.pixel_format)
        self._packed_shape = self._packed_frame_shape(h, w)
        payloads = [None] * len(frames) if payloads is None else list(payloads)
        nearness = self.stabilizer(self.estimator(x), x, cuts)
        return self._render(self.normalizer.push(nearness, list(zip(pixels, cuts, payloads)), cuts))

    @torch.inference_mode()
    def flush(self) -> tuple[np.ndarray, list]:
        """The frames still held for look-ahead, as ``push`` returns them."""
        return self._render(self.normalizer.flush())

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames in ``pixel_format`` -> the packed frames in ``params.layout``."""
        head, _ = self.push(frames)
        tail, _ = self.flush()
        return np.concatenate([head, tail])

    def _packed_frame_shape(self, height: int, width: int) -> tuple[int, ...]:
        """The array shape of one packed frame made from frames of ``height`` x ``width``."""
        return planes.frame_shape(*output_size(width, height, self.params.layout)[::-1], self.pixel_format)

    def _render(self, ready: Ready) -> tuple[np.ndarray, list]:
        packed, payloads = [], []
        step = self.params.batch_size
        for start in range(0, len(ready), step):
            chunk = ready[start:start + step]
            depth = torch.stack([d for d, _ in chunk])
            pixels = torch.stack([p for _, (p, _, _) in chunk])
            packed.append(self.pack(pixels, depth, [cut for _, (_, cut, _) in chunk]))
            payloads.extend(payload for _, (_, _, payload) in chunk)
        if not packed:
            return np.zeros((0, *self._packed_shape), np.uint8), []
        return (packed[0] if len(packed) == 1 else np.concatenate(packed)), payloads

    @torch.inference_mode()
    def pack(self, pixels: torch.Tensor, depth: torch.Tensor, cuts: Sequence[bool] | None = None) -> np.ndarray:
        """frames [B,...] in ``pixel_format``, their normalised depth [B,1,h,w] 0..1 at the
        estimator's resolution, B scene-cut flags -> the packed frames [B,...] (numpy, same
        format): everything ``push`` does after the depth is final (post-processing, automatic
        comfort, warps, layout, statistics).

        The frames stay uint8 throughout and are read at full resolution only by the warp, whose
        read positions are found on the depth's grid once per eye and then serve every plane.
        Where a layout only places the eyes, the warp writes straight into the packed frame.
        Frames go one at a time: a batch of full-resolution intermediates would multiply the peak
        memory for no speed (each frame alone fills the device)."""
        fmt, p = self.pixel_format, self.params
        b = pixels.shape[0]
        h, w = planes.frame_size(pixels, fmt)
        depth = postprocess_depth(depth, p.edge_dilation, p.foreground_scale)
        strength = None
        if AUTO in (p.divergence, p.convergence):
            strength = self._comfort_for((h, w))(depth, cuts or [False] * b)
            self._record_strength(*strength)
        out = torch.empty((b, *self._packed_frame_shape(h, w)), dtype=pixels.dtype, device=pixels.device)
        sources, targets = planes.split(pixels, fmt), planes.split(out, fmt)
        # Where every pixel reads from is solved for the whole batch at once, on the depth grid.
        batch_offsets = None if p.layout is Layout.DEPTH else eye_offsets(depth, p, (h, w), strength)
        for i in range(b):
            source, target = [q[i:i + 1] for q in sources], [q[i:i + 1] for q in targets]
            if batch_offsets is None:
                # The depth debug layout shows the source frame beside its depth: no warp.
                full = F.interpolate(depth[i:i + 1], size=(h, w), mode="bilinear", align_corners=False)
                grey = planes.from_rgb(full.expand(-1, 3, -1, -1), fmt, planes.matrix_for(h, self.matrix))
                for src, g, dst in zip(source, grey, target):
                    frame_slot, depth_slot = eye_slots(dst, Layout.FULL_SBS)
                    frame_slot.copy_(src)
                    depth_slot.copy_(g.to(dst.dtype) * int(planes.levels(dst.dtype)))
                continue
            offsets = [None if r is None else Reads(*(None if t is None else t[i:i + 1] for t in r))
                       for r in batch_offsets]
            slots = [eye_slots(dst, p.layout) for dst in target]
            if slots[0] is not None:
                for eye, offset in enumerate(offsets):
                    views = [plane_slots[eye] for plane_slots in slots]
                    if offset is None:
                        for src, view in zip(source, views):
                            view.copy_(src)
                    else:
                        render_planes(source, offset, w, outs=views)
                continue
            left, right = (source if o is None else render_planes(source, o, w) for o in offsets)
            if mixes_colours(p.layout) and fmt is not PixelFormat.RGB24:
                matrix = planes.matrix_for(h, self.matrix)
                packed = planes.from_rgb(compose(planes.to_rgb(left, fmt, matrix=matrix),
                                                 planes.to_rgb(right, fmt, matrix=matrix), p.layout), fmt, matrix)
            else:
                packed = [compose(lv, rv, p.layout, black=k)
                          for lv, rv, k in zip(left, right, planes.black(fmt, pixels.dtype))]
            for dst, q in zip(target, packed):
                dst.copy_(q)
        self._record(depth)
        shift = float(eye_shift(depth, p, (h, w), strength).abs().amax())
        self.stats.max_abs_shift_px = max(self.stats.max_abs_shift_px, shift)
        return out.cpu().numpy()

    def _comfort_for(self, frame_size: tuple[int, int]) -> ComfortController:
        if self._comfort is None:
            self._comfort = ComfortController(self.params, frame_size)
        return self._comfort

    def _record_strength(self, divergence: torch.Tensor, convergence: torch.Tensor) -> None:
        """Range of the automatic settings actually used (for the run's metadata)."""
        extra = self.stats.extra
        for name, values in (("divergence", divergence), ("convergence", convergence)):
            lo, hi = float(values.amin()), float(values.amax())
            old = extra.get(f"auto_{name}")
            extra[f"auto_{name}"] = [min(lo, old[0]), max(hi, old[1])] if old else [lo, hi]

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
                      lo_pct: float = 2.0, hi_pct: float = 98.0,
                      pixel_format: PixelFormat = PixelFormat.RGB24, short_side: int | None = None,
                      hdr_transfer: str | None = None, matrix: str | None = None) -> DepthRange:
    """The nearness range of a whole video, for ``StereoConverter(depth_range=...)``.

    frames: uint8 frames in ``pixel_format`` sampled across the video (e.g. one per second),
    decoded at about the estimator's working resolution and seen as the segments see theirs
    (``analysis_frames`` at ``short_side``: the converter's ``analysis_side``, by default the
    estimator's working size); the estimator must be the one the segments will use
    (``StereoConverter.estimator``: flip TTA included).
    """
    device = device or pick_device()
    short_side = short_side or getattr(estimator, "short_side", None) or CPU_DEPTH_SHORT_SIDE

    def nearness() -> Iterator[torch.Tensor]:
        it = iter(frames)
        while chunk := list(islice(it, batch_size)):
            with torch.inference_mode():
                pixels = torch.from_numpy(np.stack(chunk)).to(device)
                batch = estimator(analysis_frames(pixels, short_side, pixel_format, hdr_transfer, matrix))
            yield batch

    return robust_range(nearness(), lo_pct, hi_pct)
