"""Temporal stability: EMA smoothing with look-ahead, scene cuts, whole-video range across seams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.data import astronaut, chelsea

from stereospot_pipeline.stereo.convert import StereoConverter, analysis_frames, video_depth_range
from stereospot_pipeline.stereo.depth import HeuristicDepth
from stereospot_pipeline.stereo.normalize import (
    DepthRange,
    EmaNormalizer,
    SceneCutDetector,
    robust_range,
    seam_ratio,
)
from stereospot_pipeline.stereo.params import Layout, StereoParams


def _run(normalizer, nearness: torch.Tensor, cuts: list[bool] | None = None, batch: int = 4) -> torch.Tensor:
    """Stream nearness [T,1,h,w] through a normaliser in batches -> depth [T,1,h,w] in order."""
    cuts = cuts or [False] * len(nearness)
    ready = []
    for s in range(0, len(nearness), batch):
        ready += normalizer.push(nearness[s:s + batch], list(range(s, s + batch)), cuts[s:s + batch])
    ready += normalizer.flush()
    assert [payload for _, payload in ready] == list(range(len(nearness)))
    return torch.stack([depth for depth, _ in ready])


def _flicker(depth: torch.Tensor) -> float:
    return float((depth[1:] - depth[:-1]).abs().mean())


def _flickering_scene(frames: int = 40) -> torch.Tensor:
    """A static ramp whose extremes jitter from frame to frame, as depth models' outputs do."""
    torch.manual_seed(0)
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).repeat(frames, 1, 16, 1)
    ramp[:, 0, 0, 0] = -0.3 * torch.rand(frames)  # a few pixels set each frame's min/max
    ramp[:, 0, 0, -1] = 1 + 0.3 * torch.rand(frames)
    return ramp


def test_ema_flickers_less_than_per_frame_min_max():
    nearness = _flickering_scene()
    per_frame = _run(EmaNormalizer(decay=0.0, lookahead=0), nearness)
    smoothed = _run(EmaNormalizer(decay=0.75, lookahead=8), nearness)
    assert _flicker(smoothed) < 0.5 * _flicker(per_frame)


def test_look_ahead_holds_frames_back_and_flush_returns_the_rest():
    normalizer = EmaNormalizer(lookahead=5)
    nearness = _flickering_scene(8)
    assert normalizer.push(nearness[:4], list(range(4)), [False] * 4) == []
    ready = normalizer.push(nearness[4:], list(range(4, 8)), [False] * 4)
    assert [payload for _, payload in ready] == [0, 1, 2]
    assert [payload for _, payload in normalizer.flush()] == [3, 4, 5, 6, 7]


def test_look_ahead_anticipates_a_jump():
    nearness = torch.linspace(0, 1, 16).view(1, 1, 1, 16).repeat(20, 1, 4, 1)
    nearness[10:] *= 3  # something much nearer enters at frame 10
    causal = _run(EmaNormalizer(lookahead=0), nearness)
    ahead = _run(EmaNormalizer(lookahead=6), nearness)
    assert torch.equal(causal[9], causal[0])  # a causal EMA only reacts after the jump
    assert ahead[9].amax() < 0.99  # the range has started widening before the jump
    # So less of the new content is clipped flat against the near limit when it arrives.
    saturated = lambda depth: float((depth[10] > 0.999).float().mean())  # noqa: E731
    assert saturated(ahead) < 0.75 * saturated(causal)


def test_scene_cut_restarts_the_range_on_both_sides():
    near = torch.linspace(0, 1, 16).view(1, 1, 1, 16).repeat(12, 1, 4, 1)
    near[6:] = near[6:] * 10 + 5  # another shot, another range
    cuts = [i == 6 for i in range(12)]
    depth = _run(EmaNormalizer(lookahead=4), near, cuts)
    own = (near[0] - near[0].min()) / (near[0].max() - near[0].min())
    assert torch.allclose(depth[5], own, atol=1e-6)  # not pulled by the next shot's range
    assert torch.allclose(depth[6], own, atol=1e-6)  # not dragged by the previous shot's range
    blended = _run(EmaNormalizer(lookahead=4), near)
    assert not torch.allclose(blended[6], own, atol=1e-2)


def _pan(image: np.ndarray, frames: int, dx: int, dy: int, h: int = 96, w: int = 128) -> np.ndarray:
    """A slow camera pan: crops of twice the output size moving by (dx, dy) px, downscaled."""
    crops = [image[40 + dy * i:40 + dy * i + 2 * h, 10 + dx * i:10 + dx * i + 2 * w] for i in range(frames)]
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    return F.interpolate(x, size=(h, w), mode="area").round().byte().permute(0, 2, 3, 1).numpy()


def test_scene_cut_detector_fires_on_cuts_not_on_pans():
    frames = np.concatenate([_pan(chelsea(), 6, 4, 1), _pan(astronaut(), 5, 4, 1)])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    detector = SceneCutDetector()
    flags = detector(x[:4]) + detector(x[4:7]) + detector(x[7:])  # a cut right at a batch edge too
    assert flags == [i == 6 for i in range(11)]


def test_robust_range_ignores_outliers():
    values = torch.linspace(0, 1, 1001).view(1, 1, 1, 1001).repeat(2, 1, 1, 1)
    values[:, :, :, :5] = -100.0
    found = robust_range(iter([values[:1], values[1:]]))
    assert found.frames == 2
    assert found.lo == pytest.approx(0.02, abs=0.01) and found.hi == pytest.approx(0.98, abs=0.01)


def test_seam_ratio_measures_jumps_at_boundaries():
    smooth = torch.arange(12.0).view(12, 1, 1, 1).expand(12, 1, 2, 2)
    assert seam_ratio(list(smooth.split(4))) == pytest.approx(1.0)
    jumpy = [s + 5 * i for i, s in enumerate(smooth.split(4))]
    assert seam_ratio(jumpy) == pytest.approx(6.0)


def test_converter_streams_frames_with_their_payloads():
    frames = _pan(chelsea(), 7, 4, 1, h=48, w=64)
    converter = StereoConverter(StereoParams(ema_lookahead=4, batch_size=2), device=torch.device("cpu"))
    first, first_payloads = converter.push(frames[:3], ["a", "b", "c"])
    assert first.shape == (0, 48, 128, 3) and first_payloads == []
    second, second_payloads = converter.push(frames[3:], ["d", "e", "f", "g"])
    rest, rest_payloads = converter.flush()
    assert second_payloads + rest_payloads == list("abcdefg")
    assert np.concatenate([second, rest]).shape == (7, 48, 128, 3)
    assert converter.stats.frames == 7
    assert StereoConverter(StereoParams(), device=torch.device("cpu"))(frames).shape == (7, 48, 128, 3)


def _segment_depths(frames: np.ndarray, segments: int, depth_range: DepthRange | None) -> list[torch.Tensor]:
    """Convert each segment with a fresh converter, as independent segment jobs do, and read the
    depth it used back from the depth debug layout -> per segment [T,1,h,w]."""
    params, width = StereoParams(layout=Layout.DEPTH), frames.shape[2]
    estimator = HeuristicDepth()
    out = []
    for part in np.array_split(frames, segments):
        packed = StereoConverter(params, torch.device("cpu"), estimator, depth_range=depth_range)(part)
        out.append(torch.from_numpy(packed[..., width:, 0]).float()[:, None] / 255)
    return out


def test_whole_video_range_removes_depth_jumps_at_segment_seams():
    frames = _pan(chelsea(), 32, 4, 1)
    depth_range = video_depth_range(iter(frames[::4]), HeuristicDepth(), torch.device("cpu"))
    without = seam_ratio(_segment_depths(frames, 4, None))
    with_range = seam_ratio(_segment_depths(frames, 4, depth_range))
    assert with_range <= 1.5
    assert with_range < without


def test_analysis_frames_shrink_uint8_frames_like_an_area_average():
    frames = torch.from_numpy(_pan(chelsea(), 2, 4, 1, h=96, w=128))
    small = analysis_frames(frames, 48)
    area = F.interpolate(frames.permute(0, 3, 1, 2).float() / 255, size=(48, 64), mode="area")
    assert small.shape == (2, 3, 48, 64) and small.dtype == torch.float32
    assert float((small - area).abs().mean()) < 0.01
    # Never enlarged: the estimator upsamples itself if it wants more.
    assert torch.equal(analysis_frames(frames, 200), frames.permute(0, 3, 1, 2).float() / 255)


def test_converter_measures_shifts_in_frame_pixels_whatever_the_depth_resolution():
    """The depth grid (here larger than the tiny frame) only decides where pixels read from:
    shifts, and the stats about them, are in pixels of the frame."""
    frames = _pan(chelsea(), 4, 4, 1, h=48, w=64)
    params = StereoParams(method="forward_fill", divergence=6.0)
    converter = StereoConverter(params, device=torch.device("cpu"), depth_range=DepthRange(lo=-2, hi=2, frames=4))
    packed = converter(frames)
    assert packed.shape == (4, 48, 128, 3) and packed.dtype == np.uint8
    assert converter.stats.depth_min == 0.0 and converter.stats.depth_max == 1.0
    assert converter.stats.max_abs_shift_px == pytest.approx(6.0 / 100 * 64 / 2 * 0.5, abs=1e-4)
    assert not np.array_equal(packed[..., :64, :], frames) and not np.array_equal(packed[..., 64:, :], frames)
