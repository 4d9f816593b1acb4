"""Speed with the learned depth backend: Depth Anything V2 Small's architecture (24.8M parameters)
with random weights, which cost what trained ones do, built from its configuration, saved, and
loaded through the path users' weights take. Then the depth and render stages alone and a whole
conversion on the chosen device (CUDA where there is one), timed interleaved with the plain ffmpeg
re-encode of the same clip. Meant for a GPU machine; on a CPU it runs too, slowly, so try a small
``--height`` and ``--short-side`` there.

    python benchmarks/learned_depth_speed.py --out .bench/learned_depth_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from pipeline_speed import baseline, conversion, make_source, timed

from stereospot_pipeline.media.codec import iter_frames
from stereospot_pipeline.stereo.convert import StereoConverter, analysis_frames, pick_device
from stereospot_pipeline.stereo.params import StereoParams, WarpMethod
from stereospot_pipeline.stereo.planes import PixelFormat


def build_depth_anything_v2_small(dest: Path) -> Path:
    """Depth Anything V2 Small's architecture (DINOv2-S backbone, DPT head; the configuration of
    depth-anything/Depth-Anything-V2-Small-hf) with seeded random weights, written by
    ``save_pretrained`` into ``dest``."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14,
                            image_size=518, out_indices=[3, 6, 9, 12], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=384,
                                 reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[48, 96, 192, 384],
                                 fusion_hidden_size=64, head_hidden_size=32, depth_estimation_type="relative")
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(dest)
    return dest


def seconds_per_call(fn, device: torch.device, repeats: int) -> float:
    """Median wall seconds of ``fn()`` after one warm-up call, the device's queue drained each time."""
    def drain():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    times = []
    for _ in range(repeats):
        drain()
        start = time.perf_counter()
        fn()
        drain()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".bench/learned_depth_speed.json"))
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cuda' or 'cpu'")
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--short-side", type=int, default=518, help="depth inference short side (multiple of 14)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = pick_device(args.device)
    fmt = PixelFormat.YUV420P
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = build_depth_anything_v2_small(tmp / "depth-anything-v2-small-random")
        clip = make_source(tmp / f"src{args.height}.mp4", args.height, args.frames)
        params = StereoParams(depth_model=str(model_dir), depth_short_side=args.short_side,
                              batch_size=args.batch_size, method=WarpMethod.FORWARD_FILL, preset="veryfast")
        converter = StereoConverter(params, device, pixel_format=fmt)
        model = converter.estimator.model
        frames = [f for f, *_ in iter_frames(clip)][: args.batch_size]
        pixels = torch.from_numpy(np.stack(frames)).to(device)

        def depth_stage() -> torch.Tensor:
            return converter.estimator(analysis_frames(pixels, converter.analysis_side, fmt))

        depth_s = seconds_per_call(depth_stage, device, args.repeats)
        nearness = depth_stage()
        depth = (nearness - nearness.amin()) / (nearness.amax() - nearness.amin())
        render_s = seconds_per_call(lambda: converter.pack(pixels, depth), device, args.repeats)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        base_t, conv_t = [], []
        for _ in range(args.repeats):
            base_t.append(timed(lambda: baseline(clip, tmp / "base.mp4", params.preset, params.crf)))
            conv_t.append(timed(lambda: conversion(clip, tmp / "conv.mp4", params, device)))
        base, conv = statistics.median(base_t), statistics.median(conv_t)
        result = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
            "model": {"architecture": "Depth Anything V2 Small", "weights": "random (seeded)",
                      "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                      "precision": str(converter.estimator.autocast_dtype or torch.float32)},
            "height": args.height, "depth_short_side": args.short_side, "batch_size": args.batch_size,
            "depth_fps": len(frames) / depth_s,
            "render_fps": len(frames) / render_s,
            "end_to_end_fps": args.frames / conv,
            "ffmpeg_reencode_fps": args.frames / base,
            "ratio_conversion_to_reencode": conv / base,
            "peak_gpu_memory_mb": (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None),
        }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
