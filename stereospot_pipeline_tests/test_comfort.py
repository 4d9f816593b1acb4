"""Automatic comfort: the subject on the screen plane, the parallax inside the comfort budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stereospot_pipeline.defs.checks import ComfortConfig, comfortable_parallax
from stereospot_pipeline.stereo.comfort import (
    DECAY,
    MAX_DISPARITY_FRACTION,
    TARGET_SHARE,
    ComfortController,
    subject_depth,
)
from stereospot_pipeline.stereo.convert import StereoConverter
from stereospot_pipeline.stereo.depth import HeuristicDepth
from stereospot_pipeline.stereo.params import Layout, StereoParams
from stereospot_pipeline.stereo.warp import eye_shift

AUTO = StereoParams(divergence="auto", convergence="auto")


def _subject_scene(subject: float, background: float = 0.1, size: tuple[int, int] = (48, 80)) -> torch.Tensor:
    """A far background with a near blob at the centre and a nearer sliver at the frame edge."""
    h, w = size
    depth = torch.full((1, 1, h, w), background)
    depth[..., h // 3:2 * h // 3, 2 * w // 5:3 * w // 5] = subject
    depth[..., :, -3:] = 1.0  # e.g. a branch at the edge: near, but not what the viewer watches
    return depth


def test_the_budget_is_the_comfort_checks():
    assert MAX_DISPARITY_FRACTION == ComfortConfig().max_disparity_fraction


def test_subject_is_the_central_salient_surface_not_the_nearest_or_the_background():
    depth = torch.cat([_subject_scene(0.7), _subject_scene(0.4)])
    assert subject_depth(depth).tolist() == pytest.approx([0.7, 0.4])


def test_auto_convergence_puts_the_subject_on_the_screen_and_smooths_until_a_cut():
    controller = ComfortController(StereoParams(convergence="auto"), (48, 80))
    _, conv = controller(_subject_scene(0.7), [False])
    assert float(conv) == pytest.approx(0.7)
    shift = eye_shift(_subject_scene(0.7), StereoParams(), (48, 80), (torch.tensor(2.0), conv))
    assert float(shift[..., 24, 40]) == pytest.approx(0.0, abs=1e-6)  # the subject: no parallax
    # The subject moves back within the shot: the screen plane follows smoothly...
    _, conv = controller(_subject_scene(0.3), [False])
    assert float(conv) == pytest.approx(DECAY * 0.7 + (1 - DECAY) * 0.3)
    # ...and jumps at a cut (a new shot owes nothing to the last one).
    _, conv = controller(_subject_scene(0.3), [True])
    assert float(conv) == pytest.approx(0.3)


@pytest.mark.parametrize("extra", [{}, {"ipd_offset": 1.5}, {"synthetic_view": "left"}, {"convergence": 0.0}])
def test_auto_divergence_stays_inside_the_budget_on_any_depth(extra):
    torch.manual_seed(0)
    params = AUTO.model_copy(update=extra)
    size = (48, 80)
    controller = ComfortController(params, size)
    worst = 0.0
    for step in range(12):
        depth = torch.rand(2, 1, *size) ** (1 + step % 3)
        cuts = [step % 5 == 0, False]
        div, conv = controller(depth, cuts)
        shift = eye_shift(depth, params, size, (div, conv))
        per_eye = shift.abs().amax() * (2 if params.synthetic_view != "both" else 1)
        worst = max(worst, 2 * float(per_eye) / size[1])
    assert worst <= MAX_DISPARITY_FRACTION + 1e-6


def test_auto_divergence_gives_a_steady_scene_the_target_share_of_the_budget():
    size = (48, 80)
    controller = ComfortController(AUTO, size)
    flat = torch.linspace(0.1, 0.9, 80).view(1, 1, 1, 80).expand(1, 1, 48, 80).contiguous()  # a shallow scene
    for _ in range(40):
        div, conv = controller(flat, [False])
    disparity = 2 * eye_shift(flat, AUTO, size, (div, conv)).abs().amax() / size[1]
    assert float(disparity) == pytest.approx(TARGET_SHARE * MAX_DISPARITY_FRACTION, rel=0.02)
    assert 2.0 < float(div) <= 5.0  # more depth than the fixed default gives this shallow scene


def test_converter_with_auto_comfort_passes_the_comfort_check_by_design():
    """Strength 10 (the most a fixed setting allows) fails the check on a deep scene; 'auto' on
    the same frames passes it, and the run records the strength it chose."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6, 48, 80, 3), dtype=np.uint8)
    frames[:, 24:, :] //= 4  # a darker lower half: depth varies over the frame
    results = {}
    for name, params in {"fixed": StereoParams(divergence=10.0, convergence=0.0),
                         "auto": AUTO}.items():
        converter = StereoConverter(params.model_copy(update={"layout": Layout.HALF_SBS, "ema_lookahead": 0}),
                                    torch.device("cpu"), HeuristicDepth())
        converter(frames)
        results[name] = comfortable_parallax([converter.stats.max_abs_shift_px], 80, MAX_DISPARITY_FRACTION)
        if name == "auto":
            lo, hi = converter.stats.extra["auto_divergence"]
            assert 0 < lo <= hi <= 5.0
            assert "auto_convergence" in converter.stats.extra
    assert not results["fixed"].passed
    assert results["auto"].passed


def test_a_run_with_auto_settings_records_the_model_and_passes_the_comfort_check(instance, resources, corpus):
    """Through Dagster, as `stereospot convert` runs it by default: depth model, divergence and
    convergence all "auto" (no learned model installed here: the weight-free one, with the hint)."""
    from stereospot_pipeline_tests.conftest import convert, metadata

    params = StereoParams(divergence="auto", convergence="auto", layout=Layout.HALF_SBS)
    _, result = convert(instance, resources, corpus["tiny_48x144_h264.mp4"], params=params)
    assert result.success
    stereo = metadata(result, "stereo_segments")
    assert stereo["depth_model"] == "heuristic"
    assert "stereospot models pull depth-anything-v2-small" in stereo["depth_model_hint"]
    assert stereo["divergence"] == stereo["convergence"] == "auto"
    # ...and the strength actually chosen, as numbers, on the stereo and the final video alike.
    final = metadata(result, "final_video")
    for name, limit in (("divergence", 10.0), ("convergence", 1.0)):
        lo, hi = stereo[f"{name}_used_min"], stereo[f"{name}_used_max"]
        assert 0.0 <= lo <= hi <= limit and (final[f"{name}_used_min"], final[f"{name}_used_max"]) == (lo, hi)
    assert stereo["divergence_used_max"] > 0.0
    comfort = [c for c in result.get_asset_check_evaluations() if "comfort" in c.check_name]
    assert comfort and all(c.passed for c in comfort)


def test_a_segment_warmed_on_its_lead_in_continues_the_automatic_settings():
    """Segments are converted independently; with the whole-video range, the lead-in frames set
    the smoothed subject and strength, so a seam does not jump in parallax."""
    from stereospot_pipeline.stereo.convert import video_depth_range
    from stereospot_pipeline.stereo.evaluation import DepthRecorder

    class Luma:
        """An estimator whose nearness is the frame's brightness: depth known by construction."""
        name, short_side = "luma", 48

        def __call__(self, x):
            return x.mean(dim=1, keepdim=True)

    # The subject (a bright centre) recedes frame by frame: the smoothed screen plane lags it.
    frames = np.full((10, 48, 80, 3), 20, np.uint8)
    for i in range(10):
        frames[i, 16:32, 30:50] = 250 - 15 * i
    params = AUTO.model_copy(update={"layout": Layout.HALF_SBS, "temporal_smoothing": 0.0, "edge_dilation": 0})
    depth_range = video_depth_range(iter(frames), Luma(), torch.device("cpu"))

    def strengths(converter):
        seen = []
        original = converter._comfort_for

        def spy(size):
            controller = original(size)
            return lambda depth, cuts: seen.append(controller(depth, cuts)) or seen[-1]
        converter._comfort_for = spy
        return seen

    whole = DepthRecorder(params, torch.device("cpu"), Luma(), depth_range=depth_range)
    seen_whole = strengths(whole)
    whole(frames)
    part = DepthRecorder(params, torch.device("cpu"), Luma(), depth_range=depth_range)
    part.warm_up(frames[:6])
    seen_part = strengths(part)
    part(frames[6:])
    conv_whole = torch.cat([c for _, c in seen_whole]).flatten()
    conv_part = torch.cat([c for _, c in seen_part]).flatten()
    torch.testing.assert_close(conv_part, conv_whole[6:], atol=2e-3, rtol=0)
