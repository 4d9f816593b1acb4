"""Depth quality and speed of the weight-free estimator.

Quality: Spearman rank correlation between predicted nearness and the ground-truth disparity of
scikit-image's Middlebury motorcycle pair (valid pixels only), next to the "lower in the frame is
nearer" prior as the baseline to beat. Speed: ms/frame for 720p input, batches of 4.

    python benchmarks/depth_quality.py [--out .bench/depth_quality.json] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from skimage import data

from stereospot_pipeline.stereo.depth import load_estimator
from stereospot_pipeline.stereo.depth_post import with_flip_tta


def spearman(nearness: torch.Tensor, disparity: np.ndarray) -> float:
    """nearness [1,1,h,w] resized to disparity [H,W] (inf = unknown) -> rank correlation."""
    pred = F.interpolate(nearness, size=disparity.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    valid = np.isfinite(disparity)
    return float(spearmanr(pred[valid], disparity[valid])[0])


def ms_per_frame(estimator, frames: torch.Tensor, repeats: int) -> float:
    estimator(frames)  # warm-up: allocator and kernel selection
    start = time.perf_counter()
    for _ in range(repeats):
        estimator(frames)
    return (time.perf_counter() - start) / (repeats * frames.shape[0]) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".bench/depth_quality.json"))
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    left, _, disparity = data.stereo_motorcycle()
    frames = torch.from_numpy(left).permute(2, 0, 1)[None].float() / 255.0
    h, w = disparity.shape
    vertical = torch.linspace(0.0, 1.0, h).view(1, 1, h, 1).expand(1, 1, h, w)
    heuristic = load_estimator("heuristic")
    video = torch.rand(4, 3, 720, 1280, generator=torch.Generator().manual_seed(0))

    result = {
        "image": "skimage.data.stereo_motorcycle (Middlebury 2014 motorcycle)",
        "spearman": {
            "vertical_prior": spearman(vertical, disparity),
            "heuristic": spearman(heuristic(frames), disparity),
            "heuristic_flip_tta": spearman(with_flip_tta(heuristic)(frames), disparity),
        },
        "ms_per_frame_720p": {
            "heuristic": ms_per_frame(heuristic, video, args.repeats),
            "heuristic_motion": ms_per_frame(load_estimator("heuristic-motion"), video, args.repeats),
        },
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
