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
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import torch

from stereospot_pipeline.media.codec import VideoWriter, iter_frames
from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline.render import render_segment, whole_video_depth_range
from stereospot_pipeline.stereo import planes
from stereospot_pipeline.stereo.convert import StereoConverter, analysis_frames
from stereospot_pipeline.stereo.layout import eye_slots
from stereospot_pipeline.stereo.params import Layout, StereoParams, WarpMethod
from stereospot_pipeline.stereo.planes import PixelFormat
from stereospot_pipeline_tests.clips import real_clips

REPO = Path(__file__).resolve().parent.parent
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def make_source(dest: Path, height: int, frames: int) -> Path:
    """The shipped real clip, scaled to ``height`` (natural footage, not a test pattern), as 4:2:0
    like nearly every video people have: the shipped clip is 4:4:4, which would make the ffmpeg
    baseline encode twice the chroma."""
    subprocess.run([FFMPEG, "-v", "error", "-y", "-stream_loop", "-1", "-i", str(REPO / "examples" / "cockatoo.mp4"),
                    "-frames:v", str(frames), "-vf", f"scale=-2:{height}", "-pix_fmt", "yuv420p", "-c:v", "libx264",
                    "-preset", "fast", "-crf", "18", "-an", str(dest)], check=True)
    return dest


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (ffmpeg), all threads."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_cpu(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``fn()``."""
    cpu = cpu_seconds()
    wall = timed(fn)
    return wall, cpu_seconds() - cpu


def side_by_side(left: torch.Tensor, right: torch.Tensor) -> np.ndarray:
    """Two batches of 4:2:0 frames [B,H*3/2,W] -> their full side-by-side frames [B,H*3/2,2W],
    plane by plane (the rows of a planar frame's chroma are not the halves of its rows)."""
    fmt = PixelFormat.YUV420P
    h, w = planes.frame_size(left, fmt)
    out = torch.empty((left.shape[0], *planes.frame_shape(h, 2 * w, fmt)), dtype=torch.uint8)
    for lp, rp, op in zip(planes.split(left, fmt), planes.split(right, fmt), planes.split(out, fmt)):
        left_slot, right_slot = eye_slots(op, Layout.FULL_SBS)
        left_slot.copy_(lp)
        right_slot.copy_(rp)
    return out.numpy()


def moved(frames: torch.Tensor, pixels: int) -> torch.Tensor:
    """4:2:0 frames [B,H*3/2,W] with their content moved ``pixels`` (even) to the right (< 0: to the
    left), the uncovered edge column repeated: a copy, so nothing is resampled."""
    fmt = PixelFormat.YUV420P
    out = torch.empty_like(frames)
    w = planes.frame_size(frames, fmt)[1]
    for src, dst in zip(planes.split(frames, fmt), planes.split(out, fmt)):
        k = pixels * src.shape[-1] // w
        if k >= 0:
            dst[..., k:], dst[..., :k] = src[..., :src.shape[-1] - k], src[..., :1]
        else:
            dst[..., :k], dst[..., k:] = src[..., -k:], src[..., -1:]
    return out


def stage_fps(clip: Path, params: StereoParams, frames: int) -> dict:
    """Each stage alone on one thread, on the inputs the converter gives it: decoded 4:2:0
    frames, depth at the estimator's resolution, the converter's rendering of a batch (each
    eye's read positions, then its planes warped straight into the side-by-side frame), and real
    (changing) side-by-side frames for the encoder."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yuv = [f for f, *_ in iter_frames(clip)]
    fmt = PixelFormat.YUV420P
    h, w = planes.frame_size(torch.from_numpy(yuv[0])[None], fmt)
    decode = timed(lambda: sum(1 for _ in iter_frames(clip)))
    pixels = torch.from_numpy(np.stack(yuv[: params.batch_size]))
    converter = StereoConverter(params, torch.device("cpu"), pixel_format=fmt)
    reps = max(1, 32 // params.batch_size)

    def depth_stage():
        return converter.estimator(analysis_frames(pixels, converter.analysis_side, fmt))

    depth_s = timed(lambda: [depth_stage() for _ in range(reps)]) / (reps * len(pixels))
    nearness = depth_stage()
    depth = (nearness - nearness.amin()) / (nearness.amax() - nearness.amin())
    warps = {}
    for method in WarpMethod:
        render = StereoConverter(params.model_copy(update={"method": method}), torch.device("cpu"),
                                 converter.estimator, pixel_format=fmt)
        warps[method.value] = timed(lambda: [render.pack(pixels, depth) for _ in range(reps)]) / (reps * len(pixels))
    torch.set_num_threads(os.cpu_count() or 1)
    cv2.setNumThreads(os.cpu_count() or 1)
    # What x264 is given: the source beside itself (what the ffmpeg baseline encodes), the
    # conversion's real stereo frames (two different, resampled eyes), and the source moved
    # sideways by whole pixels, no resampling: 4 px (off the 16-px macroblock grid of the source's
    # own encode) and 16 px (back on it), which shows what x264 charges for leaving that grid.
    source = torch.from_numpy(np.stack(yuv[:frames]))
    contents = {"duplicate": side_by_side(source, source),
                "stereo": pipeline_converter(clip, params)(source.numpy()),
                "moved_4px": side_by_side(moved(source, 4), moved(source, -4)),
                "moved_16px": side_by_side(moved(source, 16), moved(source, -16))}
    with tempfile.TemporaryDirectory() as tmp:

        def encode(sbs: list[np.ndarray]) -> None:
            writer = VideoWriter(Path(tmp) / "e.mp4", 2 * w, h, Fraction(1, 30), crf=params.crf,
                                 preset=params.preset)
            for i, frame in enumerate(sbs):
                writer.write(frame, i)
            writer.close()
        encodes: dict[str, list[tuple[float, float]]] = {k: [] for k in contents}
        for _ in range(2):
            for name, sbs in contents.items():
                encodes[name].append(timed_cpu(lambda: encode(sbs)))
    wall = {k: min(t for t, _ in v) for k, v in encodes.items()}
    cpu = {k: min(c for _, c in v) for k, v in encodes.items()}
    return {"decode_fps": frames / decode, "depth_fps": 1 / depth_s,
            **{f"warp_{k}_fps": 1 / v for k, v in warps.items()},
            "encode_sbs_fps": frames / wall["duplicate"], "encode_stereo_sbs_fps": frames / wall["stereo"],
            **{f"ratio_cpu_encode_{k}_to_duplicate": cpu[k] / cpu["duplicate"] for k in contents if k != "duplicate"}}


def baseline(clip: Path, out: Path, preset: str, crf: int) -> None:
    """ffmpeg decoding the clip and encoding a side-by-side frame of the same size: the same
    decode and encode work as a conversion, without the stereo compute. Like a conversion it
    encodes every decoded frame at its own time, 4:2:0, padded to even sizes."""
    subprocess.run([FFMPEG, "-v", "error", "-y", "-threads", "0", "-i", str(clip), "-filter_complex",
                    "[0:v]pad=ceil(iw/2)*2:ceil(ih/2)*2,format=yuv420p,split[a][b];[a][b]hstack",
                    "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
                    "-an", str(out)], check=True)


def real_clip_ratios(clips: list[Path], params: StereoParams, repeats: int, tmp: Path) -> dict:
    """Conversion vs re-encode, interleaved, on footage no one here made, each clip at its own
    size, codec and frame rate (the clip's whole length: start-up costs included)."""
    results = {}
    for clip in clips:
        source = probe_video(clip)
        base_t, conv_t = [], []
        for _ in range(repeats):
            base_t.append(timed(lambda: baseline(clip, tmp / "base.mp4", params.preset, params.crf)))
            conv_t.append(timed(lambda: conversion(clip, tmp / "conv.mp4", params)))
        frames = probe_video(tmp / "conv.mp4").frames
        base, conv = statistics.median(base_t), statistics.median(conv_t)
        results[clip.name] = {"codec": source.codec, "width": source.width, "height": source.height,
                              "frames": frames, "reencode_frames": probe_video(tmp / "base.mp4").frames,
                              "end_to_end_fps": frames / conv, "ffmpeg_reencode_fps": frames / base,
                              "ratio_conversion_to_reencode": conv / base}
        print(clip.name, json.dumps(results[clip.name]))
    return results


def pipeline_converter(clip: Path, params: StereoParams, device: torch.device | None = None) -> StereoConverter:
    """The converter the pipeline gives a segment of ``clip`` (on ``device``, by default the CPU):
    normalised with the whole video's depth range, found from sparse samples."""
    device = device or torch.device("cpu")
    converter = StereoConverter(params, device, pixel_format=PixelFormat.YUV420P)
    return StereoConverter(params, device, converter.estimator, whole_video_depth_range(clip, converter),
                           pixel_format=PixelFormat.YUV420P)


def conversion(clip: Path, out: Path, params: StereoParams, device: torch.device | None = None) -> float:
    """A conversion as the pipeline runs one: the whole-video depth range, then the segment
    rendered with it (decode, depth, warp and encode overlapped) -> CPU seconds of the stereo
    compute (the calling thread's: decoder and encoder run in threads of their own)."""
    start = time.thread_time()
    render_segment(clip, out, params, converter=pipeline_converter(clip, params, device))
    return time.thread_time() - start


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
            "c = StereoConverter(p, depth_range=DepthRange(lo=-1.5, hi=1.5, frames=1), pixel_format='yuv420p') if sys.argv[4] == '1' else None;"
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
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--heights", type=int, nargs="+", default=[720, 1080])
    parser.add_argument("--memory-frames", type=int, nargs=2, default=[50, 1000],
                        help="lengths of the short and the long clip whose peak memory is compared")
    parser.add_argument("--real-clips", nargs="*", default=None, metavar="NAME",
                        help="clips of the shared real-world corpus to time (default: all but the "
                             "48x144 one; none given: skip)")
    args = parser.parse_args()
    params = StereoParams(method=WarpMethod.FORWARD_FILL, preset="veryfast")
    results: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_1min_at_start": os.getloadavg()[0],
                                 "python": platform.python_version(), "torch": torch.__version__}, "params": params.model_dump(mode="json")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for height in args.heights:
            clip = make_source(tmp / f"src{height}.mp4", height, args.frames)
            entry = stage_fps(clip, params, args.frames)
            # Interleaved: re-encode, conversion with each warp, re-encode, ... (medians of each).
            methods = [params.method] + [m for m in WarpMethod if m is not params.method]
            base_t, conv_t = [], {m: [] for m in methods}
            for _ in range(args.repeats):
                base_t.append(timed_cpu(lambda: baseline(clip, tmp / "base.mp4", params.preset, params.crf)))
                for method in methods:
                    p = params.model_copy(update={"method": method})
                    compute: list[float] = []
                    wall, cpu = timed_cpu(lambda: compute.append(conversion(clip, tmp / "conv.mp4", p)))
                    conv_t[method].append((wall, cpu, compute[0]))
            base = statistics.median(t for t, _ in base_t)
            conv = statistics.median(t for t, _, _ in conv_t[params.method])
            base_cpu = statistics.median(c for _, c in base_t)
            conv_cpu = statistics.median(c for _, c, _ in conv_t[params.method])
            compute_cpu = statistics.median(c for _, _, c in conv_t[params.method])
            entry.update(end_to_end_fps=args.frames / conv, ffmpeg_reencode_fps=args.frames / base,
                         ratio_conversion_to_reencode=conv / base,
                         cpu_ms_per_frame_conversion=1000 * conv_cpu / args.frames,
                         cpu_ms_per_frame_reencode=1000 * base_cpu / args.frames,
                         cpu_ms_per_frame_conversion_compute_thread=1000 * compute_cpu / args.frames,
                         ratio_cpu_conversion_to_reencode=conv_cpu / base_cpu)
            for method in methods[1:]:
                t = statistics.median(t for t, _, _ in conv_t[method])
                entry[f"end_to_end_{method.value}_fps"] = args.frames / t
                entry[f"ratio_{method.value}_to_reencode"] = t / base
            results[f"{height}p"] = entry
            print(f"{height}p:", json.dumps(entry, indent=1))
        (n_short, n_long), top = args.memory_frames, max(args.heights)
        short = make_source(tmp / "short.mp4", 360, n_short)
        long = make_source(tmp / "long.mp4", 360, n_long)
        largest = tmp / f"src{top}.mp4"
        results["peak_rss_mb"] = {f"{n_short}_frames": peak_rss_mb(short, params),
                                  f"{n_long}_frames": peak_rss_mb(long, params),
                                  f"{top}p_ema_lookahead": peak_rss_mb(largest, params),
                                  f"{top}p_whole_video_range": peak_rss_mb(largest, params, whole_video_range=True)}
        print("peak memory:", results["peak_rss_mb"])
        if args.real_clips != []:
            corpus = real_clips(REPO / ".real-clips")
            names = args.real_clips or [n for n in sorted(corpus) if not n.startswith("tiny_")]
            results["real_clips"] = real_clip_ratios([corpus[n] for n in names], params, args.repeats, tmp)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
