"""Pipeline speed on this machine: per-stage fps, end-to-end conversion vs a plain ffmpeg re-encode
of the same clip to the same output size and preset (the CPU ceiling), and peak memory against
clip length. Timings are interleaved (baseline, conversion, baseline, ...) and reported as
medians and ratios so machine noise hits both sides alike.

    python benchmarks/pipeline_speed.py --out .bench/pipeline_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch

from stereospot_pipeline.media.codec import VideoWriter, iter_frames
from stereospot_pipeline.render import render_segment
from stereospot_pipeline.stereo.convert import analysis_frames
from stereospot_pipeline.stereo.depth import load_estimator
from stereospot_pipeline.stereo.layout import compose
from stereospot_pipeline.stereo.params import StereoParams, WarpMethod
from stereospot_pipeline.stereo.warp import synthesize_views

REPO = Path(__file__).resolve().parent.parent
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def make_source(dest: Path, height: int, frames: int) -> Path:
    """The shipped real clip, scaled to ``height`` (natural footage, not a test pattern)."""
    subprocess.run([FFMPEG, "-v", "error", "-y", "-stream_loop", "-1", "-i", str(REPO / "examples" / "cockatoo.mp4"),
                    "-frames:v", str(frames), "-vf", f"scale=-2:{height}", "-c:v", "libx264", "-preset", "fast",
                    "-crf", "18", "-an", str(dest)], check=True)
    return dest


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def stage_fps(clip: Path, params: StereoParams, frames: int) -> dict:
    """Each stage alone, on the inputs the converter gives it: uint8 frames, depth at the
    estimator's resolution, real (changing) side-by-side frames for the encoder."""
    rgb = [f for f, _, _ in iter_frames(clip)]
    h, w = rgb[0].shape[:2]
    decode = timed(lambda: sum(1 for _ in iter_frames(clip)))
    pixels = torch.from_numpy(np.stack(rgb[: params.batch_size]))
    image = pixels.permute(0, 3, 1, 2)
    estimator = load_estimator(params.depth_model)
    reps = max(1, 32 // params.batch_size)
    depth_s = timed(lambda: [estimator(analysis_frames(pixels, params.depth_short_side))
                             for _ in range(reps)]) / (reps * len(pixels))
    nearness = estimator(analysis_frames(pixels, params.depth_short_side))
    depth = (nearness - nearness.amin()) / (nearness.amax() - nearness.amin())
    warps = {}
    for method in WarpMethod:
        p = params.model_copy(update={"method": method})
        warps[method.value] = timed(lambda: [compose(*synthesize_views(image, depth, p), p.layout)
                                             for _ in range(reps)]) / (reps * len(pixels))
    with tempfile.TemporaryDirectory() as tmp:
        sbs = [np.concatenate([f, f], axis=1) for f in rgb[:frames]]

        def encode():
            writer = VideoWriter(Path(tmp) / "e.mp4", 2 * w, h, Fraction(1, 30), crf=params.crf,
                                 preset=params.preset)
            for i, frame in enumerate(sbs):
                writer.write(frame, i)
            writer.close()
        encode_s = timed(encode) / len(sbs)
    return {"decode_fps": frames / decode, "depth_fps": 1 / depth_s,
            **{f"warp_{k}_fps": 1 / v for k, v in warps.items()}, "encode_sbs_fps": 1 / encode_s}


def baseline(clip: Path, out: Path, preset: str, crf: int) -> None:
    """ffmpeg decoding the clip and encoding a side-by-side frame of the same size: the same
    decode and encode work as a conversion, without the stereo compute."""
    subprocess.run([FFMPEG, "-v", "error", "-y", "-threads", "0", "-i", str(clip), "-filter_complex",
                    "[0:v]split[a][b];[a][b]hstack", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
                    "-an", str(out)], check=True)


def peak_rss_mb(clip: Path, params: StereoParams, whole_video_range: bool = False) -> float:
    """Peak resident memory of a fresh process converting ``clip``: by default as ``render_segment``
    alone does (EMA look-ahead, which holds ``ema_lookahead`` frames), with ``whole_video_range``
    as the pipeline does (one depth range for the video: nothing held).

    Read from the kernel's high-water mark of the process's own memory (VmHWM), which starts
    afresh at exec: ``ru_maxrss`` would carry over this (large) benchmark process's peak into
    the child it forks.
    """
    code = ("import sys; from pathlib import Path; from stereospot_pipeline.render import render_segment;"
            "from stereospot_pipeline.stereo.convert import StereoConverter;"
            "from stereospot_pipeline.stereo.normalize import DepthRange;"
            "from stereospot_pipeline.stereo.params import StereoParams;"
            "p = StereoParams.model_validate_json(sys.argv[3]);"
            "c = StereoConverter(p, depth_range=DepthRange(lo=-1.5, hi=1.5, frames=1)) if sys.argv[4] == '1' else None;"
            "render_segment(Path(sys.argv[1]), Path(sys.argv[2]), p, converter=c);"
            "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])")
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", code, str(clip), str(Path(tmp) / "m.mp4"),
                              params.model_dump_json(), str(int(whole_video_range))],
                             check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=".bench/pipeline_speed.json")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params = StereoParams(method=WarpMethod.FORWARD_FILL, preset="veryfast")
    results: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_1min_at_start": os.getloadavg()[0],
                                 "python": platform.python_version(), "torch": torch.__version__}, "params": params.model_dump(mode="json")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for height in (720, 1080):
            clip = make_source(tmp / f"src{height}.mp4", height, args.frames)
            entry = stage_fps(clip, params, args.frames)
            # Interleaved: re-encode, conversion with each warp, re-encode, ... (medians of each).
            methods = [params.method] + [m for m in WarpMethod if m is not params.method]
            base_t, conv_t = [], {m: [] for m in methods}
            for _ in range(args.repeats):
                base_t.append(timed(lambda: baseline(clip, tmp / "base.mp4", params.preset, params.crf)))
                for method in methods:
                    p = params.model_copy(update={"method": method})
                    conv_t[method].append(timed(lambda: render_segment(clip, tmp / "conv.mp4", p)))
            base = statistics.median(base_t)
            conv = statistics.median(conv_t[params.method])
            entry.update(end_to_end_fps=args.frames / conv, ffmpeg_reencode_fps=args.frames / base,
                         ratio_conversion_to_reencode=conv / base)
            for method in methods[1:]:
                t = statistics.median(conv_t[method])
                entry[f"end_to_end_{method.value}_fps"] = args.frames / t
                entry[f"ratio_{method.value}_to_reencode"] = t / base
            results[f"{height}p"] = entry
            print(f"{height}p:", json.dumps(entry, indent=1))
        short = make_source(tmp / "short.mp4", 360, 50)
        long = make_source(tmp / "long.mp4", 360, 1000)
        src1080 = tmp / "src1080.mp4"
        results["peak_rss_mb"] = {"50_frames": peak_rss_mb(short, params), "1000_frames": peak_rss_mb(long, params),
                                  "1080p_ema_lookahead": peak_rss_mb(src1080, params),
                                  "1080p_whole_video_range": peak_rss_mb(src1080, params, whole_video_range=True)}
        print("peak memory:", results["peak_rss_mb"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
