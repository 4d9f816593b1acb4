"""Layouts: every packing has the size output_size promises and puts each eye where players look."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stereospot_pipeline.stereo.layout import compose, output_size
from stereospot_pipeline.stereo.params import LAYOUT_SUFFIX, Layout

ANAGLYPHS = [Layout.ANAGLYPH, Layout.ANAGLYPH_COLOR, Layout.ANAGLYPH_GRAY, Layout.ANAGLYPH_HALF_COLOR]


def _pair(b: int = 2, h: int = 24, w: int = 40) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(b, 3, h, w), torch.rand(b, 3, h, w), torch.rand(b, 1, h, w)


@pytest.mark.parametrize("layout", list(Layout))
@pytest.mark.parametrize("size", [(24, 40), (25, 37)])
def test_every_layout_has_its_output_size(layout, size):
    h, w = size
    left, right, depth = _pair(h=h, w=w)
    out = compose(left, right, layout, depth)
    assert out.shape[:2] == (2, 3)
    assert (out.shape[3], out.shape[2]) == output_size(w, h, layout)


def test_every_layout_has_a_file_suffix():
    assert set(LAYOUT_SUFFIX) == set(Layout)


def test_full_layouts_place_each_eye():
    left, right, _ = _pair()
    w, h = left.shape[-1], left.shape[-2]
    sbs = compose(left, right, Layout.FULL_SBS)
    assert torch.equal(sbs[..., :w], left) and torch.equal(sbs[..., w:], right)
    tb = compose(left, right, Layout.FULL_TB)
    assert torch.equal(tb[..., :h, :], left) and torch.equal(tb[..., h:, :], right)
    assert torch.equal(compose(left, right, Layout.CROSS_EYED), compose(right, left, Layout.FULL_SBS))


def test_half_top_bottom_squeezes_each_eye_vertically():
    left, right, _ = _pair()
    tb = compose(left, right, Layout.HALF_TB)
    assert torch.allclose(tb[..., :12, :], F.interpolate(left, size=(12, 40), mode="area"))
    assert torch.allclose(tb[..., 12:, :], F.interpolate(right, size=(12, 40), mode="area"))


@pytest.mark.parametrize("layout", ANAGLYPHS)
def test_anaglyph_red_from_left_eye_cyan_from_right_eye(layout):
    white, black = torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    right_only = compose(black, white, layout)
    left_only = compose(white, black, layout)
    assert right_only[:, 0].max() < 0.05 and right_only[:, 1:].min() > 0.95
    assert left_only[:, 0].min() > 0.95 and left_only[:, 1:].max() < 0.05


@pytest.mark.parametrize("layout", [Layout.ANAGLYPH_COLOR, Layout.ANAGLYPH_HALF_COLOR, Layout.ANAGLYPH_GRAY])
def test_anaglyph_cyan_channels_ignore_the_left_eye(layout):
    left, right, _ = _pair()
    assert torch.equal(compose(left, right, layout)[:, 1:], compose(torch.rand_like(left), right, layout)[:, 1:])


def test_vr180_projects_each_eye_onto_a_square_hemisphere():
    left, right, _ = _pair(h=30, w=40)
    out = compose(left, right, Layout.VR180)
    assert out.shape == (2, 3, 40, 80)
    assert out[..., 0, :].abs().max() == 0 and out[..., :, 0].abs().max() == 0  # poles, far sides
    # Straight ahead (between the 4 middle pixels) sees the centre of the flat frame.
    smooth = torch.linspace(0, 1, 40).view(1, 1, 1, 40) * torch.linspace(0, 1, 30).view(1, 1, 30, 1)
    smooth = smooth.expand(1, 3, 30, 40)
    ahead = compose(smooth, smooth, Layout.VR180)[..., 19:21, 19:21].mean()
    assert float(ahead) == pytest.approx(0.25, abs=0.02)
    assert torch.allclose(out[..., 40:], compose(right, left, Layout.VR180)[..., :40])


def test_depth_layout_shows_the_frame_beside_its_depth():
    left, right, depth = _pair()
    out = compose(left, right, Layout.DEPTH, depth)
    assert torch.equal(out[..., :40], left)
    assert torch.equal(out[..., 40:], depth.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError):
        compose(left, right, Layout.DEPTH)


def _uint8(x: torch.Tensor) -> torch.Tensor:
    """float [B,C,H,W] 0..1 -> uint8 [B,C,H,W] channels-last in memory, as decoded frames are."""
    return (x * 255).round().to(torch.uint8).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("layout", list(Layout))
def test_uint8_frames_pack_like_float_frames(layout):
    """The converter packs decoded uint8 frames directly: placing layouts copy them exactly and
    resampling ones match the float result to the rounding; the packed frame is channels-last,
    the layout the encoder reads."""
    left, right, depth = _pair(h=25, w=37)
    left, right = _uint8(left), _uint8(right)
    packed = compose(left, right, layout, depth)
    reference = compose(left.float() / 255, right.float() / 255, layout, depth) * 255
    assert packed.dtype == torch.uint8
    assert packed.is_contiguous(memory_format=torch.channels_last)
    assert (packed.float() - reference).abs().max() <= 0.5 + 1e-3


def test_uint8_side_by_side_copies_each_eye_exactly():
    left, right, _ = _pair()
    left, right = _uint8(left), _uint8(right)
    sbs = compose(left, right, Layout.FULL_SBS)
    assert torch.equal(sbs[..., :40], left) and torch.equal(sbs[..., 40:], right)
