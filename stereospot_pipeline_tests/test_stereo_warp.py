"""Warps: quality against a real stereo pair, geometry, occlusion, batching, per-eye options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stereospot_pipeline.stereo.evaluation import at_depth_resolution, motorcycle_pair, psnr
from stereospot_pipeline.stereo.params import CPU_DEPTH_SHORT_SIDE, StereoParams, WarpMethod
from stereospot_pipeline.stereo.warp import (
    eye_shift,
    render_view,
    right_from_left_disparity,
    synthesize_views,
)

BLUE, RED = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0])


@pytest.fixture(scope="module")
def motorcycle() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return motorcycle_pair()


def test_forward_fill_beats_backward_on_a_real_stereo_pair(motorcycle):
    left, right, disparity = motorcycle
    backward = psnr(right_from_left_disparity(left, disparity, WarpMethod.BACKWARD), right)
    forward = psnr(right_from_left_disparity(left, disparity, WarpMethod.FORWARD_FILL), right)
    assert 16.5 <= backward <= 19.0
    assert forward >= 21.0
    assert forward >= backward + 3.0


def test_forward_fill_at_depth_resolution_keeps_its_lead_on_a_real_stereo_pair(motorcycle):
    """The converter decides where pixels read from on the depth model's coarse grid: forward fill
    must keep its quality there, not only with full-resolution disparity."""
    left, right, disparity = motorcycle
    coarse = at_depth_resolution(disparity, CPU_DEPTH_SHORT_SIDE)
    backward = psnr(right_from_left_disparity(left, coarse, WarpMethod.BACKWARD), right)
    forward = psnr(right_from_left_disparity(left, coarse, WarpMethod.FORWARD_FILL), right)
    assert forward >= 21.0
    assert forward >= backward + 3.0


@pytest.mark.parametrize("method", list(WarpMethod))
def test_uint8_frames_warp_like_float_frames(motorcycle, method):
    """Decoded uint8 frames (channels-last) are warped with integer weights, never converted to
    float: the result must match the float warp to the rounding (one level; the disocclusion
    fill adds the rounding of its shrunk copy of the view, half a level more)."""
    left, _, disparity = motorcycle
    as_uint8 = (left * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    coarse = at_depth_resolution(disparity, CPU_DEPTH_SHORT_SIDE)
    warped = right_from_left_disparity(as_uint8, coarse, method)
    reference = right_from_left_disparity(as_uint8.float(), coarse, method)
    assert warped.dtype == torch.uint8
    assert warped.is_contiguous(memory_format=torch.channels_last)
    assert (warped.float() - reference).abs().max() <= 1.5



@pytest.mark.parametrize("method", list(WarpMethod))
def test_the_gpu_resampling_path_matches_the_cpu_one(motorcycle, method):
    """CPU frames are resampled by OpenCV's remap, those on other devices (CUDA) by grid_sample.
    float64 frames take the grid_sample path on the CPU too, so both paths meet here on the same
    real pair, read positions and all."""
    left, _, disparity = motorcycle
    coarse = at_depth_resolution(disparity, CPU_DEPTH_SHORT_SIDE)
    remapped = right_from_left_disparity(left, coarse, method)
    sampled = right_from_left_disparity(left.double(), coarse.double(), method)
    assert (remapped.double() - sampled).abs().max() < 1e-3
    as_uint8 = (left * 255).round().to(torch.uint8)
    remapped = right_from_left_disparity(as_uint8, coarse, method)
    sampled = right_from_left_disparity(as_uint8.double(), coarse.double(), method).round()
    assert (remapped.double() - sampled).abs().max() <= 1.0

def _square_scene(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A near red square (depth 1) in front of a far blue wall (depth 0): [1,3,H,W], [1,1,H,W]."""
    image = BLUE.view(1, 3, 1, 1).repeat(1, 1, size, size)
    depth = torch.zeros(1, 1, size, size)
    image[..., 24:40, 24:40] = RED.view(1, 3, 1, 1)
    depth[..., 24:40, 24:40] = 1.0
    return image, depth


def _red_centre_x(view: torch.Tensor) -> float:
    red = (view[0, 0] > 0.5) & (view[0, 2] < 0.5)
    return float(red.nonzero()[:, 1].float().mean())


@pytest.mark.parametrize("method", list(WarpMethod))
def test_near_content_moves_right_in_left_eye_and_left_in_right_eye(method):
    image, depth = _square_scene()
    # The wall on the screen plane stays put, so the square's motion is its disparity.
    params = StereoParams(divergence=10.0, convergence=0.0, method=method)
    left, right = synthesize_views(image, depth, params)
    source = _red_centre_x(image)
    assert _red_centre_x(left) > source + 0.5
    assert _red_centre_x(right) < source - 0.5


def test_forward_fill_moves_the_near_square_by_the_eye_shift():
    image, depth = _square_scene()
    params = StereoParams(divergence=10.0, convergence=0.5, method=WarpMethod.FORWARD_FILL)
    left, right = synthesize_views(image, depth, params)
    # 10 % of 64 px / 2 * (1 - 0.5) = 1.6 px per eye.
    assert _red_centre_x(left) == pytest.approx(_red_centre_x(image) + 1.6, abs=0.5)
    assert _red_centre_x(right) == pytest.approx(_red_centre_x(image) - 1.6, abs=0.5)


def test_forward_fill_with_coarse_depth_moves_the_near_square_by_the_eye_shift():
    """Depth at half the image's resolution (as a depth model gives it) warps like full-res depth."""
    image, depth = _square_scene()
    params = StereoParams(divergence=10.0, convergence=0.0, method=WarpMethod.FORWARD_FILL)
    coarse = F.interpolate(depth, scale_factor=0.5, mode="area")
    left, right = synthesize_views(image, coarse, params)
    # 10 % of 64 px / 2 * (1 - 0) = 3.2 px per eye; the square's edges lie on the coarse grid,
    # whose upsampled read offsets blend over a grid pixel (2 px), hence the wider tolerance.
    assert _red_centre_x(left) == pytest.approx(_red_centre_x(image) + 3.2, abs=1.0)
    assert _red_centre_x(right) == pytest.approx(_red_centre_x(image) - 3.2, abs=1.0)


def test_forward_fill_keeps_the_near_surface_and_fills_holes_with_background():
    image, depth = _square_scene()
    key = depth * 6.0
    right = render_view(image, key, -depth * 6.0, WarpMethod.FORWARD_FILL)  # square moves 6 px left
    row = right[0, :, 32]
    assert torch.allclose(row[:, 18:34].T, RED.expand(16, 3))  # the square covers the wall
    assert torch.allclose(row[:, 34:40].T, BLUE.expand(6, 3))  # uncovered wall: background colour
    assert torch.allclose(row[:, :18].T, BLUE.expand(18, 3))


@pytest.mark.parametrize("method", list(WarpMethod))
def test_batch_equals_items(method):
    torch.manual_seed(0)
    image = torch.rand(3, 3, 20, 30)
    depth = torch.rand(3, 1, 20, 30)
    params = StereoParams(divergence=8.0, method=method)
    batched = synthesize_views(image, depth, params)
    for i in range(3):
        single = synthesize_views(image[i:i + 1], depth[i:i + 1], params)
        for eye_batched, eye_single in zip(batched, single):
            assert torch.allclose(eye_batched[i:i + 1], eye_single, atol=1e-6)


def test_sub_pixel_shift_interpolates():
    ramp = torch.arange(10.0).view(1, 1, 1, 10).expand(1, 3, 2, 10)
    shift = torch.full((1, 1, 2, 10), 0.5)
    for method in WarpMethod:
        out = render_view(ramp, torch.zeros_like(shift), shift, method)
        assert torch.allclose(out[..., 2:8], ramp[..., 2:8] - 0.5), method


@pytest.mark.parametrize("side", ["left", "right"])
def test_single_synthetic_view_keeps_the_other_eye_and_doubles_the_shift(side):
    image, depth = _square_scene()
    both = synthesize_views(image, depth, StereoParams(divergence=10.0))
    left, right = synthesize_views(image, depth, StereoParams(divergence=10.0, synthetic_view=side))
    original, synthetic = (right, left) if side == "left" else (left, right)
    assert torch.equal(original, image)
    disparity = _red_centre_x(both[0]) - _red_centre_x(both[1])
    assert _red_centre_x(left) - _red_centre_x(right) == pytest.approx(disparity, abs=0.6)


def test_ipd_offset_adds_a_constant_shift():
    depth = torch.rand(1, 1, 40, 100)
    base = eye_shift(depth, StereoParams())
    offset = eye_shift(depth, StereoParams(ipd_offset=1.0))
    assert torch.allclose(offset - base, torch.full_like(base, 0.5))  # 1 % of 100 px / 2


def test_preserve_screen_border_pins_the_frame_edges():
    torch.manual_seed(1)
    depth = torch.rand(1, 1, 32, 200)
    shift = eye_shift(depth, StereoParams(divergence=10.0, preserve_screen_border=True))
    assert shift[..., 0].abs().max() == 0 and shift[..., -1].abs().max() == 0
    assert torch.equal(shift[..., 20:180], eye_shift(depth, StereoParams(divergence=10.0))[..., 20:180])


def test_inpainting_gains_where_the_view_was_hidden(motorcycle):
    """Scored on the disoccluded band (pixels the right view sees and the left hides, plus 3 px),
    with ground-truth disparity at full resolution and at the depth model's resolution."""
    from stereospot_pipeline.stereo.evaluation import disoccluded_band, row_repeat_view

    left, right, disparity = motorcycle
    band = disoccluded_band(disparity)
    assert 0.1 < float(band.float().mean()) < 0.4
    for d, band_gain in ((disparity, 1.5), (at_depth_resolution(disparity, CPU_DEPTH_SHORT_SIDE), 0.7)):
        repeat, inpainted = row_repeat_view(left, d), right_from_left_disparity(left, d, WarpMethod.FORWARD_FILL)
        assert psnr(inpainted, right, mask=band) >= psnr(repeat, right, mask=band) + band_gain
        assert psnr(inpainted, right) >= psnr(repeat, right) + 0.3  # the whole image gains too
    backward = right_from_left_disparity(left, disparity, WarpMethod.BACKWARD)
    assert psnr(inpainted, right, mask=band) > psnr(backward, right, mask=band) + 2.0


def test_inpainting_keeps_the_foreground_out_of_the_hole():
    """A near red square in front of a blue wall: the hole it uncovers is filled with wall only."""
    image, depth = _square_scene()
    right = render_view(image, depth * 6.0, -depth * 6.0, WarpMethod.FORWARD_FILL)
    assert torch.allclose(right[0, :, 32, 34:40].T, BLUE.expand(6, 3), atol=1e-6)


def test_inpainting_tensor_path_matches_the_opencv_one():
    """CPU float32 averages run in OpenCV, other devices (CUDA) and float64 in tensor ops."""
    from stereospot_pipeline.stereo.inpaint import background_average

    torch.manual_seed(0)
    image = torch.rand(2, 3, 40, 70)
    holes = torch.rand(2, 1, 40, 70) < 0.1
    key = torch.rand(2, 1, 40, 70) * 8
    cv = background_average(image, holes, key)
    tensor = background_average(image.double(), holes, key.double())
    assert (cv.double() - tensor).abs().max() < 1e-4
    assert torch.equal(cv[~holes.expand_as(cv)], image[~holes.expand_as(image)])
