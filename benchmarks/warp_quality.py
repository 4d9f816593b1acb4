"""Stereo engine quality: warp PSNR against a real stereo pair (with full-resolution disparity,
and with disparity at the depth model's resolution as the converter warps), depth jumps at
segment seams with and without the whole-video depth range, and, on the shared real-world
corpus, depth shimmer where the picture holds still with and without the depth stabiliser and
seams of still shots with and without the segment lead-in. (Warp speed is a stage of
``pipeline_speed.py``.)

    python benchmarks/warp_quality.py [--out .bench/warp_quality.json] [--real-clips NAME ...]
"""

from __future__ import annotations

import argparse
import json
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.data import chelsea

from stereospot_pipeline.media.codec import iter_frames
from stereospot_pipeline.render import LEAD_IN_FRAMES
from stereospot_pipeline.stereo.convert import StereoConverter, analysis_frames, video_depth_range
from stereospot_pipeline.stereo.comfort import ComfortController, subject_depth
from stereospot_pipeline.stereo.depth import HeuristicDepth
from stereospot_pipeline.stereo.depth_post import postprocess_depth
from stereospot_pipeline.stereo.normalize import SceneCutDetector, seam_ratio
from stereospot_pipeline.stereo.params import CPU_DEPTH_SHORT_SIDE, Layout, StereoParams, WarpMethod
from stereospot_pipeline.stereo.evaluation import (
    DepthRecorder,
    at_depth_resolution,
    disoccluded_band,
    motorcycle_pair,
    psnr,
    rendered_depth,
    row_repeat_view,
)
from stereospot_pipeline.stereo.planes import PixelFormat
from stereospot_pipeline.stereo.stabilize import luma_at, still_flicker, still_pixels
from stereospot_pipeline.stereo.warp import right_from_left_disparity, warp_plane
from stereospot_pipeline_tests.clips import REPO, real_clips


def warp_psnr() -> dict[str, dict[str, float]]:
    """dB PSNR of the right view synthesised from the left view + ground-truth disparity of
    scikit-image's motorcycle pair, borders of 32 px excluded: with the disparity at full
    resolution, and at the depth model's default CPU resolution (what the converter does); on
    the whole image and on the disoccluded band only (``band_*``: the pixels the right view sees
    and the left hides, plus 3 px, where view synthesis must invent content).
    ``forward_fill_row_repeat`` is forward_fill without the inpainting (holes repeat their
    background-side neighbour along the row), the fill before it."""
    left, right, disparity = motorcycle_pair()
    band = disoccluded_band(disparity)
    grids = {"full_res": disparity, "depth_res": at_depth_resolution(disparity, CPU_DEPTH_SHORT_SIDE)}
    scores: dict[str, dict[str, float]] = {}
    for grid, d in grids.items():
        views = {m.value: right_from_left_disparity(left, d, m) for m in WarpMethod}
        views["forward_fill_row_repeat"] = row_repeat_view(left, d)
        for name, view in views.items():
            scores.setdefault(grid, {})[name] = round(psnr(view, right), 2)
            scores.setdefault(f"band_{grid}", {})[name] = round(psnr(view, right, mask=band), 2)
    # The textbook baseline under the same measure: read the left view at x + d(x) with the
    # left view's own disparity, unknown disparity taken as 0.
    naive = warp_plane(left, torch.where(disparity.isfinite(), disparity, 0.0), left.shape[-1])
    scores["full_res"]["naive_backward"] = round(psnr(naive, right), 2)
    return scores


def _pan(frames: int, h: int = 96, w: int = 128) -> np.ndarray:
    """A slow camera pan over a photo without a scene cut: uint8 [T,h,w,3]."""
    image = chelsea()
    crops = [image[40 + i:40 + i + 2 * h, 10 + 4 * i:10 + 4 * i + 2 * w] for i in range(frames)]
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    return F.interpolate(x, size=(h, w), mode="area").round().byte().permute(0, 2, 3, 1).numpy()


def seam_ratios(frames: int = 32, segments: int = 4) -> dict[str, float]:
    """seam_ratio of a clip converted as independent segments (fresh converter each): with the
    per-segment range smoothing, started cold or after the renderer's lead-in, and with the
    whole-video range."""
    clip = _pan(frames)
    estimator = HeuristicDepth()
    params = StereoParams(layout=Layout.DEPTH)

    def ratio(depth_range, lead_in: bool = False) -> float:
        depths, start = [], 0
        for part in np.array_split(clip, segments):
            converter = StereoConverter(params, torch.device("cpu"), estimator, depth_range=depth_range)
            if lead_in and start:
                converter.warm_up(clip[max(0, start - LEAD_IN_FRAMES):start])
            packed = converter(part)
            depths.append(torch.from_numpy(packed[..., clip.shape[2]:, 0]).float()[:, None] / 255)
            start += len(part)
        return round(seam_ratio(depths), 3)

    whole_video = video_depth_range(iter(clip[::4]), estimator, torch.device("cpu"))
    return {"without_range": ratio(None), "without_range_with_lead_in": ratio(None, lead_in=True),
            "with_range": ratio(whole_video)}


def clip_stability(clip: Path, frames: int, segments: int = 3) -> dict:
    """On the first ``frames`` frames of a real clip, with its whole-clip depth range:

    - shimmer: per-eye disparity change (px at the clip's size) between neighbouring frames where
      the picture holds still, mean and 99th percentile, depth stabiliser off / on;
    - moving: where the picture moves, the mean disparity change between frames without the
      stabiliser, and how far the stabilised disparity departs from it (lag would show here);
    - seam ratio of the clip converted as ``segments`` independent segments, each without / with
      the lead-in (the frames before it) the renderer gives segments."""
    yuv = np.stack([f for f, *_ in islice(iter_frames(clip), frames)])
    h, w = yuv.shape[1] * 2 // 3, yuv.shape[2]
    on = StereoParams(layout=Layout.DEPTH)
    depth_range = video_depth_range(iter(yuv[::4]), HeuristicDepth(), torch.device("cpu"),
                                    pixel_format=PixelFormat.YUV420P)
    depth = {"off": rendered_depth(yuv, on.model_copy(update={"temporal_smoothing": 0.0}), depth_range),
             "on": rendered_depth(yuv, on, depth_range)}
    luma = luma_at(analysis_frames(torch.as_tensor(yuv), HeuristicDepth().short_side, PixelFormat.YUV420P),
                   tuple(depth["on"].shape[-2:]))
    px = on.divergence * max(h, w) / 200  # per-eye shift per unit of depth
    result = {"frames": len(yuv), "size": f"{w}x{h}"}
    for name, d in depth.items():
        change = still_flicker(d, luma) * px
        result[f"shimmer_{name}_px"] = {"mean": round(float(change.mean()), 4),
                                        "p99": round(float(change.quantile(0.99)), 3)}
    moving = ~still_pixels(luma)
    raw = depth["off"]
    result["moving_px"] = {"change": round(float(((raw[1:] - raw[:-1]).abs() * px)[moving].mean()), 4),
                           "deviation": round(float(((depth["on"] - raw)[1:].abs() * px)[moving].mean()), 4)}
    bounds = np.linspace(0, len(yuv), segments + 1).astype(int)
    for warm in (False, True):
        parts = [rendered_depth(yuv[a:b], on, depth_range, yuv[max(0, a - LEAD_IN_FRAMES):a] if warm else None)
                 for a, b in zip(bounds, bounds[1:])]
        result["seam_ratio_" + ("with_lead_in" if warm else "without_lead_in")] = round(seam_ratio(parts), 3)
    return result


def comfort(clip: Path, frames: int) -> dict:
    """Fixed (divergence 2, convergence 0.5) against automatic comfort on the first ``frames``
    frames of a real clip, with its whole-clip depth range: the main subject's parallax (its
    disparity; 0 = on the screen plane) and the largest parallax, both in % of the frame width
    (the comfort check's limit is 3 %)."""
    yuv = np.stack([f for f, *_ in islice(iter_frames(clip), frames)])
    h, w = yuv.shape[1] * 2 // 3, yuv.shape[2]
    base = StereoParams(layout=Layout.DEPTH)
    depth_range = video_depth_range(iter(yuv[::4]), HeuristicDepth(), torch.device("cpu"),
                                    pixel_format=PixelFormat.YUV420P)
    recorder = DepthRecorder(base, torch.device("cpu"), HeuristicDepth(), depth_range=depth_range,
                             pixel_format=PixelFormat.YUV420P)
    recorder(yuv)
    depth = postprocess_depth(recorder.depth(), base.edge_dilation, base.foreground_scale)
    cuts = SceneCutDetector()(analysis_frames(torch.as_tensor(yuv), HeuristicDepth().short_side, PixelFormat.YUV420P))
    subject = subject_depth(depth).view(-1, 1, 1, 1)
    px = max(h, w) / 200 / w * 100  # % of the width per unit of divergence x depth, one eye
    result = {"frames": len(yuv), "size": f"{w}x{h}", "scene_cuts": int(sum(cuts))}
    settings = {"fixed": StereoParams(), "auto": StereoParams(divergence="auto", convergence="auto")}
    for name, params in settings.items():
        if name == "auto":
            div, conv = ComfortController(params, (h, w))(depth, cuts)
        else:
            div, conv = torch.tensor(params.divergence), torch.tensor(params.convergence)
        subject_px = (2 * div * (subject - conv) * px).abs().flatten()
        max_px = (2 * div * (depth - conv) * px).abs().flatten(1).amax(1)
        result[name] = {"subject_parallax_pct": {"mean": round(float(subject_px.mean()), 3),
                                                 "max": round(float(subject_px.max()), 3)},
                        "max_parallax_pct": {"mean": round(float(max_px.mean()), 3),
                                             "max": round(float(max_px.max()), 3)}}
        if name == "auto":
            result[name]["divergence_range"] = [round(float(div.min()), 2), round(float(div.max()), 2)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".bench/warp_quality.json"))
    parser.add_argument("--real-clips", nargs="*", default=None,
                        help="corpus clips for the temporal measurements (default: all but the tiny one)")
    parser.add_argument("--frames", type=int, default=90, help="frames of each real clip")
    args = parser.parse_args()
    corpus = real_clips(REPO / ".real-clips")
    names = args.real_clips if args.real_clips is not None else [n for n in sorted(corpus) if not n.startswith("tiny_")]
    result = {
        "psnr_db": warp_psnr(),
        "seam_ratio": seam_ratios(),
        "real_clips": {name: clip_stability(corpus[name], args.frames) for name in names},
        "comfort": {name: comfort(corpus[name], args.frames) for name in names},
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
