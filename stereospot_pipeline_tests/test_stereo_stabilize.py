"""Per-pixel depth stabilisation: still content stops shimmering, moving content does not lag,
and segments continue each other's state through their lead-in."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.data import chelsea

from stereospot_pipeline.media.codec import iter_frames
from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline.media.segment import plan_segments, split_video
from stereospot_pipeline.render import LEAD_IN_FRAMES, render_segment
from stereospot_pipeline.stereo.convert import video_depth_range
from stereospot_pipeline.stereo.depth import HeuristicDepth
from stereospot_pipeline.stereo.evaluation import DepthRecorder, rendered_depth
from stereospot_pipeline.stereo.normalize import EmaNormalizer, seam_ratio
from stereospot_pipeline.stereo.params import Layout, StereoParams
from stereospot_pipeline.stereo.planes import PixelFormat
from stereospot_pipeline.stereo.stabilize import DepthStabilizer, still_flicker
from stereospot_pipeline_tests.clips import make_clip


def _scene(frames: int = 30, h: int = 32, w: int = 48) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A still picture with a bright square moving right 1 px a frame, and nearness that is
    steady plus per-frame noise everywhere (as an estimator's output wobbles) -> frames
    [T,3,h,w] 0..1, nearness [T,1,h,w], the square's mask [T,1,h,w]."""
    torch.manual_seed(0)
    base = torch.linspace(0.2, 0.6, w).view(1, 1, 1, w).expand(frames, 3, h, w).clone()
    square = torch.zeros(frames, 1, h, w, dtype=torch.bool)
    for t in range(frames):
        square[t, :, 8:20, 2 + t:14 + t] = True
    pictures = torch.where(square, torch.tensor(0.95), base)
    nearness = torch.linspace(0, 1, h).view(1, 1, h, 1).expand(frames, 1, h, w) + 2.0 * square
    return pictures, nearness + 0.05 * torch.randn(frames, 1, h, w), square


def _stream(stabilizer: DepthStabilizer, pictures, nearness, cuts=None, batch: int = 4) -> torch.Tensor:
    cuts = cuts or [False] * len(pictures)
    return torch.cat([stabilizer(nearness[s:s + batch], pictures[s:s + batch], cuts[s:s + batch])
                      for s in range(0, len(pictures), batch)])


def test_still_content_stops_shimmering_and_moving_content_keeps_its_new_depth():
    pictures, nearness, square = _scene()
    out = _stream(DepthStabilizer(0.8), pictures, nearness)
    luma = pictures.mean(1, keepdim=True)
    before, after = still_flicker(nearness, luma), still_flicker(out, luma)
    assert len(before) > 0.5 * square[1:].numel()
    # A recursive average with weight 0.8 keeps (1-0.8)/(1+0.8) of white noise's variance: the
    # frame-to-frame change drops to about a third.
    assert after.mean() < 0.45 * before.mean()
    # Where the square arrives or leaves, the picture changed: depth is the new frame's, at once.
    moving = square[1:] ^ square[:-1]
    assert torch.equal(out[1:][moving], nearness[1:][moving])
    # Nothing drifts: the still background's mean depth stays where the estimator puts it.
    background = ~square.any(0, keepdim=True).expand_as(square)
    assert abs(float((out[background] - nearness[background]).mean())) < 0.01


def test_a_cut_restarts_the_average_and_batches_do_not_matter():
    pictures, nearness, _ = _scene(12)
    cuts = [t == 6 for t in range(12)]
    whole = DepthStabilizer(0.8)(nearness, pictures, cuts)
    assert torch.equal(whole[0], nearness[0]) and torch.equal(whole[6], nearness[6])
    assert not torch.equal(whole[7], nearness[7])
    assert torch.allclose(_stream(DepthStabilizer(0.8), pictures, nearness, cuts, batch=5), whole)
    assert torch.equal(DepthStabilizer(0.0)(nearness, pictures, cuts), nearness)
    with pytest.raises(ValueError, match="strength"):
        DepthStabilizer(1.0)


_DEPTH_LAYOUT = StereoParams(layout=Layout.DEPTH)


def _noisy_still_clip(frames: int = 36, h: int = 72, w: int = 96) -> np.ndarray:
    """A still photo with fresh sensor noise in every frame, uint8 [T,h*3/2,w] yuv420p."""
    rng = np.random.default_rng(0)
    photo = F.interpolate(torch.from_numpy(chelsea()).permute(2, 0, 1)[None].float(), size=(h, w),
                          mode="area")[0].permute(1, 2, 0).numpy()
    out = []
    for _ in range(frames):
        noisy = np.clip(photo + rng.normal(0, 3, photo.shape), 0, 255).astype(np.uint8)
        out.append(cv2.cvtColor(noisy, cv2.COLOR_RGB2YUV_I420))
    return np.stack(out)


def test_warm_up_on_the_frames_before_continues_the_stream_exactly():
    clip = _noisy_still_clip(20)
    depth_range = video_depth_range(iter(clip[::4]), HeuristicDepth(), torch.device("cpu"),
                                    pixel_format=PixelFormat.YUV420P)
    continuous = rendered_depth(clip, _DEPTH_LAYOUT, depth_range)
    assert torch.equal(rendered_depth(clip[8:], _DEPTH_LAYOUT, depth_range, lead_in=clip[:8]), continuous[8:])
    assert not torch.equal(rendered_depth(clip[8:], _DEPTH_LAYOUT, depth_range), continuous[8:])


def test_lead_in_keeps_segments_of_a_still_shot_seamless():
    """The stabiliser smooths inside segments; a segment starting cold would step at its seam.
    Converted with the renderer's lead-in, the seams are as smooth as the inside."""
    clip = _noisy_still_clip()
    depth_range = video_depth_range(iter(clip[::4]), HeuristicDepth(), torch.device("cpu"),
                                    pixel_format=PixelFormat.YUV420P)
    bounds = [0, 12, 24, 36]
    cold = [rendered_depth(clip[a:b], _DEPTH_LAYOUT, depth_range) for a, b in zip(bounds, bounds[1:])]
    warm = [rendered_depth(clip[a:b], _DEPTH_LAYOUT, depth_range, lead_in=clip[max(0, a - LEAD_IN_FRAMES):a])
            for a, b in zip(bounds, bounds[1:])]
    assert seam_ratio(warm) <= 1.5 < seam_ratio(cold)


def test_ema_range_continues_from_primed_frames():
    nearness = torch.linspace(0, 1, 16).view(1, 1, 1, 16).repeat(10, 1, 4, 1) * torch.arange(1, 11).view(10, 1, 1, 1)
    continuous = EmaNormalizer(decay=0.75, lookahead=0)
    for t in range(10):
        last = continuous.push(nearness[t:t + 1], [t], [False])
    primed = EmaNormalizer(decay=0.75, lookahead=0)
    primed.prime(nearness[:9], [False] * 9)
    assert torch.equal(primed.push(nearness[9:], [9], [False])[0][0], last[0][0])
    cold = EmaNormalizer(decay=0.75, lookahead=0).push(nearness[9:], [9], [False])[0][0]
    assert not torch.equal(cold, last[0][0])


class _WarmUpLog(DepthRecorder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lead_in: list[np.ndarray] = []

    def warm_up(self, frames: np.ndarray) -> None:
        self.lead_in.extend(frames)
        super().warm_up(frames)


def test_renderer_warms_each_later_segment_up_on_the_frames_before_it(tmp_path):
    """A segment's piece starts a keyframe early (pre-roll); the renderer shows the converter the
    last of those frames, exactly the source frames just before the segment, then the segment."""
    source = make_clip(tmp_path / "src.mp4", seconds=3.0, fps=10, gop=10, audio=False)
    plans = plan_segments(probe_video(source), 1.0)
    assert len(plans) == 3
    chunks = split_video(source, plans, tmp_path / "pieces")
    decoded = [f for f, *_ in iter_frames(source)]
    params = StereoParams(layout=Layout.DEPTH)
    for plan, chunk in zip(plans, chunks):
        log = _WarmUpLog(params, torch.device("cpu"), HeuristicDepth(), pixel_format=PixelFormat.YUV420P)
        result = render_segment(chunk, tmp_path / f"{plan.index}.mp4", params, plan=plan, converter=log)
        assert result.frames == plan.frames
        expected = decoded[max(0, plan.start_frame - LEAD_IN_FRAMES):plan.start_frame]
        assert len(log.lead_in) == (0 if plan.index == 0 else 10)  # the whole pre-roll GOP
        assert all(np.array_equal(a, b) for a, b in zip(log.lead_in, expected[-len(log.lead_in):]))
        assert len(log.depth()) == plan.frames
