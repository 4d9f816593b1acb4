"""`make bench` keeps working: every benchmark runs end to end in a bounded form and writes its
machine-readable results. Timings are not asserted (they belong to the full run, side by side on
one machine); what is deterministic is: the quality scores and the frames x264 is timed on."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

from stereospot_pipeline.stereo import planes
from stereospot_pipeline.stereo.planes import PixelFormat
from stereospot_pipeline_tests.clips import REPO

BENCHMARKS = REPO / "benchmarks"


def _run(script: str, out: Path, *args: str) -> dict:
    run = subprocess.run([sys.executable, str(BENCHMARKS / script), "--out", str(out), *args],
                         cwd=REPO, timeout=600, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())


def _speed_module():
    spec = importlib.util.spec_from_file_location("pipeline_speed", BENCHMARKS / "pipeline_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_benchmark_writes_every_measurement(tmp_path):
    result = _run("pipeline_speed.py", tmp_path / "speed.json", "--heights", "144", "--frames", "12",
                  "--repeats", "1", "--memory-frames", "10", "30",
                  "--real-clips", "realshort_240p_h264_2997.mp4")
    entry = result["144p"]
    for key in ("decode_fps", "depth_fps", "warp_forward_fill_fps", "warp_backward_fps", "encode_sbs_fps",
                "encode_stereo_sbs_fps", "end_to_end_fps", "ffmpeg_reencode_fps", "end_to_end_backward_fps"):
        assert entry[key] > 0, key
    for key in ("ratio_conversion_to_reencode", "ratio_cpu_conversion_to_reencode", "ratio_backward_to_reencode",
                "ratio_cpu_encode_stereo_to_duplicate", "ratio_cpu_encode_moved_4px_to_duplicate",
                "ratio_cpu_encode_moved_16px_to_duplicate"):
        assert 0.2 < entry[key] < 50, key
    assert 0 < entry["cpu_ms_per_frame_conversion_compute_thread"] < entry["cpu_ms_per_frame_conversion"]
    assert set(result["peak_rss_mb"]) == {"10_frames", "30_frames", "144p_ema_lookahead", "144p_whole_video_range"}
    assert all(100 < mb < 4000 for mb in result["peak_rss_mb"].values())
    real = result["real_clips"]["realshort_240p_h264_2997.mp4"]
    # Both sides encode every frame of the real clip (29.97 fps H.264, 320x240).
    assert (real["codec"], real["width"], real["height"]) == ("h264", 320, 240)
    assert real["frames"] == real["reencode_frames"] == 36
    assert real["end_to_end_fps"] > 0 and 0.2 < real["ratio_conversion_to_reencode"] < 50


def test_speed_benchmark_times_x264_on_the_frames_it_names():
    bench = _speed_module()
    fmt = PixelFormat.YUV420P
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randint(0, 256, (2, 48, 64), dtype=torch.uint8, generator=gen) for _ in range(2))

    packed = torch.from_numpy(bench.side_by_side(a, b))
    assert packed.shape == (2, 48, 128)
    for pa, pb, pp in zip(planes.split(a, fmt), planes.split(b, fmt), planes.split(packed, fmt)):
        half = pa.shape[-1]
        assert torch.equal(pp[..., :half], pa) and torch.equal(pp[..., half:], pb)

    for pixels in (16, -16):
        moved = bench.moved(a, pixels)
        for src, dst in zip(planes.split(a, fmt), planes.split(moved, fmt)):
            k = abs(pixels) * src.shape[-1] // 64  # chroma planes move half as far
            if pixels > 0:
                assert torch.equal(dst[..., k:], src[..., :-k])
                assert torch.equal(dst[..., :k], src[..., :1].expand_as(dst[..., :k]))
            else:
                assert torch.equal(dst[..., :-k], src[..., k:])
                assert torch.equal(dst[..., -k:], src[..., -1:].expand_as(dst[..., -k:]))


def test_quality_benchmarks_meet_the_targets(tmp_path):
    result = _run("warp_quality.py", tmp_path / "warp.json", "--frames", "40",
                  "--real-clips", "ball_576p_h264_aac.mp4", "mars_768p_mpeg4_10fps_noaudio.avi")
    warp, seams = result["psnr_db"], result["seam_ratio"]
    full = warp["full_res"]
    assert full["forward_fill"] >= 21.0
    assert full["forward_fill"] > full["backward"] > full["naive_backward"]
    assert warp["depth_res"]["forward_fill"] >= 21.0
    # Where the view was hidden (the disoccluded band), inpainting beats repeating the row.
    band = warp["band_full_res"]
    assert band["forward_fill"] >= band["forward_fill_row_repeat"] + 1.5 > band["backward"] + 1.5
    assert seams["with_range"] <= 1.5 < seams["without_range"]
    assert seams["without_range_with_lead_in"] < seams["without_range"]
    # Real footage: the stabiliser at least halves depth shimmer where the picture is still, and
    # segments that start with the lead-in join without a step.
    for clip in result["real_clips"].values():
        off, on = clip["shimmer_off_px"], clip["shimmer_on_px"]
        assert on["mean"] < 0.6 * off["mean"] and on["p99"] < 0.6 * off["p99"]
        assert clip["seam_ratio_with_lead_in"] <= 1.5 < clip["seam_ratio_without_lead_in"]
    # Automatic comfort: the subject sits on the screen plane, the parallax inside the budget.
    for clip in result["comfort"].values():
        fixed, auto = clip["fixed"], clip["auto"]
        assert auto["subject_parallax_pct"]["mean"] < 0.25 * fixed["subject_parallax_pct"]["mean"]
        assert auto["max_parallax_pct"]["max"] <= 3.0
    depth = _run("depth_quality.py", tmp_path / "depth.json", "--repeats", "1")
    assert depth["spearman"]["heuristic"] >= 0.75 > depth["spearman"]["vertical_prior"]
    assert all(ms > 0 for ms in depth["ms_per_frame_720p"].values())


def test_learned_depth_benchmark_runs_depth_anything_v2_small(tmp_path):
    """The GPU benchmark, here in a small CPU form: the model it times must be Depth Anything V2
    Small's architecture (24.8M parameters), loaded the way users' weights are."""
    result = _run("learned_depth_speed.py", tmp_path / "learned.json", "--device", "cpu", "--height", "144",
                  "--frames", "8", "--short-side", "70", "--batch-size", "4", "--repeats", "1")
    assert result["model"]["architecture"] == "Depth Anything V2 Small"
    assert result["model"]["parameters_m"] == 24.79
    assert result["model"]["precision"] == "torch.float32"  # autocast is for CUDA only
    assert result["device"].startswith("cpu")
    for key in ("depth_fps", "render_fps", "end_to_end_fps", "ffmpeg_reencode_fps", "ratio_conversion_to_reencode"):
        assert result[key] > 0, key
    assert result["peak_gpu_memory_mb"] is None


def test_output_codecs_benchmark_times_every_encoding_and_states_the_player_limits(tmp_path):
    results = _run("output_codecs.py", tmp_path / "codecs.json", "--seconds", "0.5", "--repeats", "1")
    rows = {(r["codec"], r["bit_depth"]): r for r in results["encodings"]}
    assert sorted(rows) == sorted([(c, b) for c in ("av1", "h264", "hevc") for b in (8, 10)])
    assert all(r["fps"] > 0 and r["size_kb"] > 0 and r["frames"] == 10 for r in rows.values())
    limits = {(r["source"], r["layout"]): r for r in results["player_limits"]}
    assert limits[("1080p", "full-sbs")]["codec"] == "h264" and limits[("1080p", "full-sbs")]["decision"] == "fits"
    assert limits[("4K", "full-sbs")]["codec"] == "hevc" and limits[("4K", "full-sbs")]["packed"] == "7680x2160"
