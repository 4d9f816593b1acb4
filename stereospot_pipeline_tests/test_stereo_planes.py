"""The YUV engine path: decoded 4:2:0 frames are warped and packed plane by plane, and must come
out as the RGB path would (colour conversions only at low resolution or for anaglyphs)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stereospot_pipeline.media.codec import VideoWriter, bitstream_colour, iter_frames, yuv420p
from stereospot_pipeline.media.probe import Colour
from stereospot_pipeline.stereo import planes
from stereospot_pipeline.stereo.convert import StereoConverter, analysis_frames
from stereospot_pipeline.stereo.evaluation import motorcycle_pair
from stereospot_pipeline.stereo.normalize import DepthRange
from stereospot_pipeline.stereo.params import Layout, StereoParams, WarpMethod
from stereospot_pipeline.stereo.planes import PixelFormat
from stereospot_pipeline.stereo.warp import warp_planes

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cockatoo.mp4"
YUV = PixelFormat.YUV420P


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """A real photo (the motorcycle pair's left view) at 240x360, uint8 RGB [1,H,W,3]."""
    left, _, _ = motorcycle_pair()
    small = F.interpolate(left, size=(240, 360), mode="area")
    return (small * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _as_yuv(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB [B,H,W,3] -> BT.601 yuv420p [B,H*3/2,W] through libswscale, as a decoder of SD
    video would give it."""
    frames = [av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24") for f in rgb]
    for frame in frames:
        frame.colorspace = 5  # BT.601 (bt470bg)
    return np.stack([yuv420p(f) for f in frames])


# Saturated colours (where the YUV matrices differ most) in 8x8 patches, 64 rows: SD.
_BARS = np.repeat(np.repeat(np.array([[[191, 191, 0], [0, 191, 191], [0, 191, 0], [191, 0, 191], [191, 0, 0],
                                        [0, 0, 191], [230, 120, 40], [40, 200, 120]]], np.uint8), 8, axis=1), 64, axis=0)


def test_depth_sees_the_colours_the_matrix_tag_names():
    """SD video tagged BT.709 is common (HD downscales, phone exports); read as BT.601, the
    guess for SD, its colours shift. The estimator's frames follow the tag."""
    rgb = torch.from_numpy(_BARS).permute(2, 0, 1)[None].float() / 255
    yuv = torch.from_numpy(_frame(planes.from_rgb(rgb, YUV, matrix="bt709")))
    tagged = analysis_frames(yuv, 64, YUV, matrix="bt709")
    guessed = analysis_frames(yuv, 64, YUV)
    assert (tagged - rgb).abs().mean() < 1.5 / 255
    assert (guessed - rgb).abs().mean() > 6 / 255
    assert planes.matrix_for(64, "bt709") == "bt709" and planes.matrix_for(64, "unknown") == "bt601"
    assert planes.matrix_for(1080, "smpte170m") == "bt601" and planes.matrix_for(1080, None) == "bt709"


def _frame(yuv_planes: list[torch.Tensor]) -> np.ndarray:
    """Planes [1,1,h,w] of one 4:2:0 frame -> its batch array [1,H*3/2,W]."""
    y, u, v = (p[0, 0].numpy() for p in yuv_planes)
    return np.concatenate([y, np.concatenate([u.reshape(-1, y.shape[1]), v.reshape(-1, y.shape[1])])])[None]


def test_rgb_video_becomes_bt709_yuv_tagged_as_such():
    """RGB pictures (QuickTime Animation, PNG, RGB FFV1) have no YUV matrix of their own: they are
    converted with BT.709 and the output says so (never tagged RGB, nor left to the SD guess)."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(_BARS), format="rgb24")
    ours = torch.from_numpy(yuv420p(frame))[None]
    rgb = torch.from_numpy(_BARS).permute(2, 0, 1)[None].float() / 255
    assert (planes.to_rgb(planes.split(ours, YUV), YUV, matrix="bt709") - rgb).abs().mean() < 1.5 / 255
    assert Colour(matrix="gbr").yuv_matrix == "bt709" and Colour(matrix="bt470bg").yuv_matrix == "bt470bg"
    assert bitstream_colour(Colour(matrix="gbr"))["colormatrix"] == "bt709"


def test_yuv_to_rgb_matches_libswscale():
    """Our conversion (used for depth analysis and anaglyphs) reads colours as libswscale does."""
    with av.open(str(EXAMPLE)) as container:
        frame = next(container.decode(video=0)).reformat(format="yuv420p")
    ours = planes.to_rgb(planes.split(torch.from_numpy(yuv420p(frame))[None], YUV), YUV, matrix="bt601")
    theirs = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].float() / 255
    # Chroma upsampling filters and libswscale's integer arithmetic differ by about a level.
    assert (ours - theirs).abs().mean() < 2.0 / 255
    assert (ours.mean(dim=(2, 3)) - theirs.mean(dim=(2, 3))).abs().max() < 2.0 / 255


def test_rgb_yuv_round_trip_keeps_the_picture(scene):
    rgb = torch.from_numpy(scene).permute(0, 3, 1, 2).float() / 255
    back = planes.to_rgb(planes.from_rgb(rgb, YUV), YUV)
    assert (back - rgb).abs().mean() < 3.0 / 255  # 4:2:0 halves the chroma resolution; nothing else


@pytest.mark.parametrize("layout", list(Layout))
def test_yuv_frames_convert_like_rgb_frames(scene, layout):
    """Every layout packs YUV planes into what the RGB path produces once that is stored as
    4:2:0 (as the encoder would), compared in RGB; a plane padded with 0 instead of its own black
    (VR180's chroma) or a chroma plane moved by the luma shift would show as a large difference."""
    params = StereoParams(layout=layout, divergence=4.0)
    fixed = DepthRange(lo=-2.0, hi=2.0, frames=1)
    rgb_out = StereoConverter(params, torch.device("cpu"), depth_range=fixed)(scene)
    yuv_out = StereoConverter(params, torch.device("cpu"), depth_range=fixed, pixel_format=YUV)(_as_yuv(scene))
    assert planes.frame_size(torch.from_numpy(yuv_out), YUV) == rgb_out.shape[1:3]
    as_rgb = planes.to_rgb(planes.split(torch.from_numpy(yuv_out), YUV), YUV, matrix="bt601")
    reference = torch.from_numpy(rgb_out).permute(0, 3, 1, 2).float() / 255
    reference = planes.to_rgb(planes.from_rgb(reference, YUV, matrix="bt601"), YUV, matrix="bt601")
    assert (as_rgb - reference).abs().mean() < 2.0 / 255


@pytest.mark.parametrize("method", list(WarpMethod))
def test_cpu_remap_warps_like_the_gpu_kernel(scene, method):
    """The CPU warp (OpenCV remap of uint8 planes, straight into the output) and the path other
    devices take (grid_sample, exercised here through float64 planes) read the same pixels."""
    image = torch.from_numpy(scene).permute(0, 3, 1, 2)
    offset = torch.linspace(-6.0, 9.0, 40 * 60).view(1, 1, 40, 60)  # coarse grid, sub-pixel values
    out = torch.zeros(1, 3, 240, 720, dtype=torch.uint8)
    slot = out[..., 360:]
    (cpu,) = warp_planes([image], offset, 360, outs=[slot])
    (kernel,) = warp_planes([image.double()], offset, 360)
    assert cpu.data_ptr() == slot.data_ptr() and out[..., :360].sum() == 0  # written in place
    assert (cpu.double() - kernel).abs().max() <= 1.0 + 1e-6


def test_decoder_gives_4_2_0_planes_padded_to_even(tmp_path):
    """A 4:4:4 source of odd size (4:4:4 allows it) comes out 4:2:0 with the last row and column
    repeated: the pixels keep their values, nothing is rescaled."""
    odd = tmp_path / "odd.mp4"
    with av.open(str(odd), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 65, 37, "yuv444p"
        ramp = np.tile(np.arange(65, dtype=np.uint8)[None, :, None] * 3, (37, 1, 3))
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(ramp, format="rgb24").reformat(format="yuv444p")))
        container.mux(stream.encode(None))
    frames = [f for f, *_ in iter_frames(odd)]
    assert len(frames) == 3 and all(f.shape == (38 * 3 // 2, 66) for f in frames)
    luma = frames[0][:38].astype(int)
    assert np.array_equal(luma[:, 65], luma[:, 64]) and np.array_equal(luma[37], luma[36])
    assert (np.diff(luma[:37, 4:60], axis=1) >= -1).all()  # the ramp survives, not resampled away


def test_writer_encodes_the_planes_it_is_given(tmp_path, scene):
    """Frames go to x264 without a copy: each must come back (lossless encode) exactly as written,
    including one given as a strided view (a crop), whose chroma rows are not half a luma row."""
    yuv = _as_yuv(scene)[0]  # [360,360]: 240 rows of luma, then U and V
    wide = np.concatenate([yuv, yuv[:, ::-1]], axis=1)  # a frame twice as wide
    frames = [yuv, 255 - yuv, np.ascontiguousarray(wide[:, 36:396]), wide[:, 36:396]]
    out = tmp_path / "lossless.mp4"
    with VideoWriter(out, 360, 240, Fraction(1, 10), crf=0) as writer:
        for pts, frame in enumerate(frames):
            writer.write(frame, pts)
    decoded = [f for f, *_ in iter_frames(out)]
    assert len(decoded) == 4
    for written, read in zip(frames, decoded):
        assert np.array_equal(written, read)


@pytest.mark.parametrize("layout", [Layout.FULL_SBS, Layout.HALF_TB, Layout.VR180, Layout.DEPTH])
def test_frames_kept_at_ten_bits_convert_as_their_eight_bit_values_do(scene, layout):
    """HDR kept HDR keeps 10 bits through the engine: int16 frames of 10-bit values (four times
    the 8-bit levels) come out as the 8-bit frames do, four times over, with the same depth."""
    eight = np.repeat(_as_yuv(scene), 2, axis=0)
    ten = eight.astype(np.int16) * 4
    params = StereoParams(layout=layout, depth_model="heuristic")
    out8 = StereoConverter(params, torch.device("cpu"), pixel_format=YUV)(eight)
    out10 = StereoConverter(params, torch.device("cpu"), pixel_format=YUV)(ten)
    assert out10.dtype == np.int16 and out8.dtype == np.uint8 and out10.shape == out8.shape
    # Each path rounds at its own precision: within a level of 8 bits (4 of 10) but at a few
    # depth edges, where the finer analysis frames move a read position by a fraction of a pixel.
    diff = np.abs(out10.astype(int) - 4 * out8.astype(int))
    assert (diff > 4).mean() < 0.005 and diff.max() <= 12
    assert out10.max() <= 940 and out10.min() >= 64
