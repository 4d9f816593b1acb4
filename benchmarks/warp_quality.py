"""Stereo engine quality: warp PSNR against a real stereo pair (with full-resolution disparity,
and with disparity at the depth model's resolution as the converter warps) and depth jumps at
segment seams with and without the whole-video depth range. (Warp speed is a stage of
``pipeline_speed.py``.)

    python benchmarks/warp_quality.py [--out .bench/warp_quality.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.data import chelsea

from stereospot_pipeline.stereo.convert import StereoConverter, video_depth_range
from stereospot_pipeline.stereo.depth import HeuristicDepth
from stereospot_pipeline.stereo.normalize import seam_ratio
from stereospot_pipeline.stereo.params import Layout, StereoParams, WarpMethod
from stereospot_pipeline.stereo.evaluation import at_depth_resolution, motorcycle_pair, psnr
from stereospot_pipeline.stereo.warp import right_from_left_disparity, warp_plane


def warp_psnr() -> dict[str, dict[str, float]]:
    """dB PSNR of the right view synthesised from the left view + ground-truth disparity of
    scikit-image's motorcycle pair, borders of 32 px excluded: with the disparity at full
    resolution, and at the depth model's default resolution (what the converter does)."""
    left, right, disparity = motorcycle_pair()
    grids = {"full_res": disparity, "depth_res": at_depth_resolution(disparity, StereoParams().depth_short_side)}
    scores: dict[str, dict[str, float]] = {}
    for grid, d in grids.items():
        for method in WarpMethod:
            scores.setdefault(grid, {})[method.value] = round(psnr(right_from_left_disparity(left, d, method), right), 2)
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
    """seam_ratio of a clip converted as independent segments (fresh converter each)."""
    clip = _pan(frames)
    estimator = HeuristicDepth()
    params = StereoParams(layout=Layout.DEPTH)

    def ratio(depth_range) -> float:
        depths = []
        for part in np.array_split(clip, segments):
            packed = StereoConverter(params, torch.device("cpu"), estimator, depth_range=depth_range)(part)
            depths.append(torch.from_numpy(packed[..., clip.shape[2]:, 0]).float()[:, None] / 255)
        return round(seam_ratio(depths), 3)

    whole_video = video_depth_range(iter(clip[::4]), estimator, torch.device("cpu"))
    return {"without_range": ratio(None), "with_range": ratio(whole_video)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".bench/warp_quality.json"))
    args = parser.parse_args()
    result = {
        "psnr_db": warp_psnr(),
        "seam_ratio": seam_ratios(),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
