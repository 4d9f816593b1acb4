"""Measuring the engine: against real stereo ground truth (scikit-image's motorcycle pair), and
the depth a converter actually renders with over time.

Shared by the quality benchmark and the tests, so both score the same thing the same way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stereospot_pipeline.stereo.convert import StereoConverter
from stereospot_pipeline.stereo.depth import HeuristicDepth
from stereospot_pipeline.stereo.depth_post import postprocess_depth
from stereospot_pipeline.stereo.normalize import DepthRange
from stereospot_pipeline.stereo.params import StereoParams
from stereospot_pipeline.stereo.planes import PixelFormat
from stereospot_pipeline.stereo.warp import fill_from_background, forward_offset

BORDER = 32  # px excluded at every edge: the pair's borders have no valid correspondence


def motorcycle_pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(left [1,3,H,W], right [1,3,H,W] in 0..1, left disparity [1,1,H,W] px; non-finite = unknown).
    Needs scikit-image (the dev extra), whose data module ships the pair."""
    from skimage.data import stereo_motorcycle

    left, right, disparity = stereo_motorcycle()

    def to_tensor(rgb):
        return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255

    return to_tensor(left), to_tensor(right), torch.from_numpy(disparity)[None, None]


def at_depth_resolution(disparity: torch.Tensor, short_side: int) -> torch.Tensor:
    """Full-resolution disparity [1,1,H,W] (non-finite = unknown) as the converter holds depth:
    at the depth model's resolution, edges dilated with the default setting -> [1,1,h,w]."""
    known = disparity.isfinite()
    filled = torch.where(known, disparity, 0.0)
    filled = fill_from_background(filled, filled, known)
    h, w = disparity.shape[-2:]
    small = F.interpolate(filled, size=(short_side, round(w * short_side / h)), mode="area")
    return postprocess_depth(small, StereoParams().edge_dilation, 0.0)


BAND_MARGIN = 3  # px around the disoccluded pixels that the band includes


def psnr(a: torch.Tensor, b: torch.Tensor, border: int = BORDER, mask: torch.Tensor | None = None) -> float:
    """dB PSNR of two [..., H, W] images in 0..1, ``border`` px excluded at every edge; with
    ``mask`` [H,W] bool, over its pixels only."""
    error = ((a - b) ** 2).mean(dim=-3) if a.dim() >= 3 else (a - b) ** 2
    error = error[..., border:-border, border:-border]
    if mask is not None:
        error = error[..., mask[border:-border, border:-border]]
    return float(10 * torch.log10(1 / error.mean()))


def disoccluded_band(disparity: torch.Tensor, margin: int = BAND_MARGIN) -> torch.Tensor:
    """[H,W] bool: the pixels of the right view that the left view hides (no left pixel lands
    there with the left disparity [1,1,H,W], unknown disparity taken from the background side),
    grown by ``margin`` px: where view synthesis has to invent content, and its edges."""
    import cv2

    known = disparity.isfinite()
    filled = torch.where(known, disparity, 0.0)
    filled = fill_from_background(filled, filled, known)
    holes = forward_offset(filled, -filled).holes[0, 0].numpy().astype(np.uint8)
    size = 2 * margin + 1
    return torch.from_numpy(cv2.dilate(holes, np.ones((size, size), np.uint8)).astype(bool))


class DepthRecorder(StereoConverter):
    """A converter that keeps the normalised depth [B,1,h,w] of every frame it renders, as the
    warp receives it, in ``depths`` (for measuring temporal behaviour without 8-bit rounding)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.depths: list[torch.Tensor] = []

    def pack(self, pixels: torch.Tensor, depth: torch.Tensor, cuts=None):
        self.depths.append(depth.cpu())
        return super().pack(pixels, depth, cuts)

    def depth(self) -> torch.Tensor:
        """All recorded depth, [T,1,h,w] in render order."""
        return torch.cat(self.depths)


def rendered_depth(frames: np.ndarray, params: StereoParams, depth_range: DepthRange | None,
                   lead_in: np.ndarray | None = None) -> torch.Tensor:
    """The depth [T,1,h,w] a fresh CPU converter (weight-free estimator) renders the yuv420p
    ``frames`` with, after warming up on ``lead_in`` (the frames before them) if given."""
    recorder = DepthRecorder(params, torch.device("cpu"), HeuristicDepth(), depth_range=depth_range,
                             pixel_format=PixelFormat.YUV420P)
    if lead_in is not None and len(lead_in):
        recorder.warm_up(lead_in)
    recorder(frames)
    return recorder.depth()


def row_repeat_view(left: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
    """The right view as ``right_from_left_disparity`` makes it with forward_fill, minus the
    inpainting: each hole repeats its background-side neighbour along the row (the reference
    the inpainting is measured against)."""
    from stereospot_pipeline.stereo.params import WarpMethod
    from stereospot_pipeline.stereo.warp import view_offset, warp_plane

    known = disparity.isfinite()
    filled = torch.where(known, disparity, 0.0)
    filled = fill_from_background(filled, filled, known)
    return warp_plane(left, view_offset(filled, -filled, WarpMethod.FORWARD_FILL, left.shape[-1]).offset, left.shape[-1])
