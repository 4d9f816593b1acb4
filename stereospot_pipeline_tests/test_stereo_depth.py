"""The weight-free estimator against real ground truth, and the depth post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from skimage import data

from stereospot_pipeline.stereo.depth import HeuristicDepth, box_blur, load_estimator
from stereospot_pipeline.stereo.depth_post import (
    dilate_edges,
    flip_average,
    foreground_curve,
    postprocess_depth,
    with_flip_tta,
)
from stereospot_pipeline.stereo.params import StereoParams


@pytest.fixture(scope="module")
def motorcycle():
    """(left view [1,3,H,W] 0..1, GT disparity [H,W] with NaN where unknown)."""
    left, _, disparity = data.stereo_motorcycle()
    frames = torch.from_numpy(left).permute(2, 0, 1)[None].float() / 255.0
    return frames, np.where(np.isfinite(disparity), disparity, np.nan)


def rank_agreement(nearness: torch.Tensor, disparity: np.ndarray) -> float:
    """Spearman correlation of nearness [1,1,h,w] (resized) with disparity over valid pixels."""
    pred = F.interpolate(nearness, size=disparity.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    valid = np.isfinite(disparity)
    return float(spearmanr(pred[valid], disparity[valid])[0])


def test_heuristic_beats_the_vertical_prior_on_real_stereo(motorcycle):
    frames, disparity = motorcycle
    h, w = disparity.shape
    vertical = torch.linspace(0, 1, h).view(1, 1, h, 1).expand(1, 1, h, w)
    prior = rank_agreement(vertical, disparity)
    ours = rank_agreement(HeuristicDepth()(frames), disparity)
    assert prior == pytest.approx(0.666, abs=0.01)
    # Measured 0.765; the margin absorbs numeric differences across torch builds.
    assert ours >= 0.75
    assert ours > prior + 0.07


def test_heuristic_contract_batched_and_finite():
    frames = torch.rand(3, 3, 90, 160)
    est = load_estimator("heuristic")
    out = est(frames)
    assert est.name == "heuristic"
    assert out.shape == (3, 1, 128, 228)  # its working resolution: 128 rows, the aspect kept
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1:2], est(frames[1:2]), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_blur_matches_a_direct_window_mean(dtype):
    """float32 on the CPU takes OpenCV's box filter; other tensors (CUDA's path) running sums."""
    x = torch.rand(2, 3, 30, 41, dtype=dtype)
    direct = F.avg_pool2d(F.pad(x, (4, 4, 4, 4), mode="replicate"), 9, stride=1)
    torch.testing.assert_close(box_blur(x, 4), direct, atol=1e-5, rtol=1e-5)


def _moving_scene(frames: int, near_speed: int, far_speed: int) -> torch.Tensor:
    """[T,3,120,160]: a textured square moving faster than the textured background behind it."""
    gen = torch.Generator().manual_seed(0)
    background = box_blur(torch.rand(1, 3, 120, 400, generator=gen), 1)
    square = box_blur(torch.rand(1, 3, 40, 40, generator=gen), 1)
    out = []
    for t in range(frames):
        frame = background[..., far_speed * t: far_speed * t + 160].clone()
        x0 = 60 - near_speed * t
        frame[..., 40:80, x0:x0 + 40] = square
        out.append(frame)
    return torch.cat(out)


def test_motion_parallax_brings_the_faster_layer_forward():
    video = _moving_scene(4, near_speed=3, far_speed=1)
    with_motion = load_estimator("heuristic-motion")
    without = HeuristicDepth()
    gain = with_motion(video)[1:] - without(video)[1:]
    size = gain.shape[-1] / 160
    inside = gain[..., int(50 * size):int(70 * size), int(60 * size):int(90 * size)].mean()
    outside = gain[..., :, :int(30 * size)].mean()
    assert inside > outside + 0.1
    # A static shot has no parallax: the cue must vanish, not amplify noise.
    still = HeuristicDepth(motion=True)
    static = video[:1].expand(3, -1, -1, -1)
    torch.testing.assert_close(still(static), without(static), atol=1e-4, rtol=1e-4)


def test_motion_state_carries_across_calls_and_resets():
    video = _moving_scene(4, near_speed=3, far_speed=1)
    whole = HeuristicDepth(motion=True)(video)
    split = HeuristicDepth(motion=True)
    parts = torch.cat([split(video[:2]), split(video[2:])])
    torch.testing.assert_close(parts, whole, atol=1e-4, rtol=1e-4)
    split.reset()
    torch.testing.assert_close(split(video[:1]), HeuristicDepth()(video[:1]), atol=1e-4, rtol=1e-4)


def test_edge_dilation_grows_the_near_side_of_a_step():
    depth = torch.zeros(1, 1, 9, 20)
    depth[..., 3:6, 10:] = 1.0  # a near block on a far background
    grown = dilate_edges(depth, x_iterations=2, y_iterations=1)
    assert torch.equal(grown[0, 0, 4, 8:], torch.ones(12))
    assert torch.equal(grown[0, 0, 4, :8], torch.zeros(8))
    assert torch.equal(grown[0, 0, 2:7, 15], torch.ones(5))
    assert grown[0, 0, 1, 15] == 0
    assert (grown >= depth).all()
    assert torch.equal(dilate_edges(depth, 0, 0), depth)


def test_postprocess_uses_half_the_dilation_vertically():
    depth = torch.zeros(1, 1, 11, 11)
    depth[..., 5, 5] = 1.0
    grown = postprocess_depth(depth, edge_dilation=2, foreground_scale=0.0)
    rows, cols = grown[0, 0].nonzero(as_tuple=True)
    assert (rows.min().item(), rows.max().item()) == (4, 6)
    assert (cols.min().item(), cols.max().item()) == (3, 7)


def test_flip_tta_is_mirror_symmetric_and_exact_for_symmetric_estimators():
    calls = []

    class LeftBiased:
        name = "left-biased"

        def __call__(self, frames):
            calls.append(frames.shape[0])
            w = frames.shape[-1]
            ramp = torch.linspace(1, 0, w).view(1, 1, 1, w)  # claims the left is always nearer
            return frames.mean(1, keepdim=True) + ramp

    frames = torch.rand(2, 3, 8, 12)
    est = with_flip_tta(LeftBiased())
    out = est(frames)
    assert est.name == "left-biased+flip"
    assert calls == [4]  # one batch holding both passes
    torch.testing.assert_close(est(frames.flip(-1)), out.flip(-1))
    torch.testing.assert_close(out, frames.mean(1, keepdim=True) + 0.5)  # the bias cancels

    class Luma:
        name = "luma"

        def __call__(self, frames):
            return frames.mean(1, keepdim=True)

    torch.testing.assert_close(flip_average(Luma(), frames), Luma()(frames))
    assert with_flip_tta(Luma(), enabled=False).name == "luma"
    with pytest.raises(ValueError, match="stateful"):
        with_flip_tta(HeuristicDepth(motion=True))


def test_foreground_curve_is_monotone_keeps_ends_and_is_identity_at_zero():
    d = torch.linspace(0, 1, 101).view(1, 1, 1, 101)
    assert torch.equal(foreground_curve(d, 0.0), d)
    for scale in (-3.0, -0.5, 0.3, 3.0):
        f = foreground_curve(d, scale)
        assert (f.diff(dim=-1) > 0).all()
        torch.testing.assert_close(f[..., [0, -1]], torch.tensor([0.0, 1.0]).view(1, 1, 1, 2))
    # > 0 gives near depth more of the range, < 0 gives it to the far depth.
    assert foreground_curve(d, 2.0)[..., 50] < 0.5 < foreground_curve(d, -2.0)[..., 50]
    near = slice(80, 101)
    assert foreground_curve(d, 2.0)[..., near].diff().mean() > d[..., near].diff().mean()
    # Continuous at 0: a tiny scale is almost the identity.
    torch.testing.assert_close(foreground_curve(d, 1e-4), d, atol=1e-4, rtol=0)


def test_stereo_params_post_processing_fields():
    p = StereoParams()
    assert (p.edge_dilation, p.flip_tta, p.foreground_scale) == (2, False, 0.0)
    with pytest.raises(ValueError):
        StereoParams(foreground_scale=3.5)
    with pytest.raises(ValueError):
        StereoParams(edge_dilation=-1)
