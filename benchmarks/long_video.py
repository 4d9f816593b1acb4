"""End to end on a long real clip: `stereospot convert` (start-up, registration, every Dagster step,
checks, publishing) against a plain ffmpeg side-by-side re-encode of the same clip to the same
output size, preset and quality, interleaved so machine noise hits both alike; and where the
conversion's time went, step by step, from the run's own event log.

    python benchmarks/long_video.py --minutes 1 --out .bench/long_video.json
    python benchmarks/long_video.py --minutes 1 --cli /other/checkout/.venv/bin/stereospot  # compare
    python benchmarks/long_video.py --minutes 10 --segment-seconds 10 20  # what each segment costs

The clip is a corpus clip (ball_576p_h264_aac.mp4, 10 s of 720x576 anamorphic H.264 + AAC)
looped with ``-stream_loop`` and stream-copied, so it is real footage of any length.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import imageio_ffmpeg

REPO = Path(__file__).resolve().parent.parent
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
CLIP = "ball_576p_h264_aac.mp4"
PRESET, CRF = "veryfast", 20  # StereoParams' defaults: what `stereospot convert` encodes with


def looped(src: Path, dest: Path, seconds: float) -> Path:
    subprocess.run([FFMPEG, "-v", "error", "-y", "-stream_loop", "-1", "-i", str(src), "-t", str(seconds),
                    "-c", "copy", str(dest)], check=True)
    return dest


def reencode(clip: Path, out: Path) -> float:
    """ffmpeg decoding the clip and encoding the source beside itself at its display size (what a
    conversion writes, without the stereo compute), audio copied as the conversion does."""
    started = time.perf_counter()
    subprocess.run([FFMPEG, "-v", "error", "-y", "-threads", "0", "-i", str(clip), "-filter_complex",
                    "[0:v]scale=ceil(iw*sar/2)*2:ceil(ih/2)*2,setsar=1,format=yuv420p,split[a][b];[a][b]hstack",
                    "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF),
                    "-c:a", "copy", str(out)], check=True)
    return time.perf_counter() - started


def convert(cli: Path, clip: Path, home: Path, segment_seconds: float) -> tuple[float, dict]:
    """Wall seconds of one `stereospot convert` in a new state folder whose Dagster instance
    exists (a user's conversions after their first: the first one also creates the SQLite
    schema, about a second more here), and its steps' times."""
    env = {**os.environ, "STEREOSPOT_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    subprocess.run([str(cli.with_name("python")), "-c", "from stereospot_pipeline.cli import open_instance; "
                    "from stereospot_pipeline.settings import Settings; open_instance(Settings())"],
                   check=True, env=env)
    started = time.perf_counter()
    done = subprocess.run([str(cli), "convert", str(clip), "--depth-model", "heuristic",
                           "--segment-seconds", str(segment_seconds)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"convert failed:\n{done.stdout}\n{done.stderr}")
    return wall, step_times(home / "dagster")


def step_times(dagster_home: Path) -> dict:
    """Seconds per kind of step (a mapped step's copies summed) of the latest run."""
    from dagster import DagsterInstance, RunsFilter

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(), limit=1)
        if not runs:
            return {}
        stats = instance.get_run_step_stats(runs[0].run_id)
        kinds: dict[str, list[float]] = defaultdict(list)
        for s in stats:
            if s.start_time and s.end_time:
                kinds[re.sub(r"\[.*\]$", "", s.step_key)].append(s.end_time - s.start_time)
        run = instance.get_run_record_by_id(runs[0].run_id)
        out = {k: {"steps": len(v), "seconds": round(sum(v), 3)} for k, v in sorted(kinds.items())}
        if run.start_time and run.end_time:
            out["run (first step to last)"] = {"steps": len(stats), "seconds": round(run.end_time - run.start_time, 3)}
        return out


def measure(cli: Path, clip: Path, repeats: int, segment_seconds: float, tmp: Path) -> dict:
    base, conv, steps = [], [], {}
    for i in range(repeats):
        base.append(reencode(clip, tmp / "base.mp4"))
        wall, steps = convert(cli, clip, tmp / f"home-{i}", segment_seconds)
        conv.append(wall)
    b, c = statistics.median(base), statistics.median(conv)
    return {"cli": str(cli), "segment_seconds": segment_seconds, "reencode_s": round(b, 2), "convert_s": round(c, 2),
            "ratio_convert_to_reencode": round(c / b, 3), "runs": {"reencode_s": base, "convert_s": conv},
            "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--segment-seconds", type=float, nargs="+",
                        help="segment lengths to convert with (default: the product's default)")
    parser.add_argument("--cli", type=Path, nargs="+", default=[Path(sys.executable).with_name("stereospot")])
    parser.add_argument("--engine", action="store_true", help="also the in-process engine's ratio")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from stereospot_pipeline.media.selection import SegmentOptions
    from stereospot_pipeline_tests.clips import real_clips

    source = real_clips(REPO / ".real-clips")[CLIP]
    results = {"clip": CLIP, "preset": PRESET, "crf": CRF, "cpus": os.cpu_count(), "lengths": []}
    with tempfile.TemporaryDirectory(prefix="stereospot-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for minutes in args.minutes:
            clip = looped(source, tmp / f"loop-{minutes:g}min.mp4", 60 * minutes)
            entry = {"minutes": minutes}
            for cli in args.cli:
                for seconds in args.segment_seconds or [SegmentOptions().segment_seconds]:
                    entry.setdefault("clis", []).append(measure(cli, clip, args.repeats, seconds, tmp))
            if args.engine:
                entry["engine"] = engine_measure(clip, tmp)
            results["lengths"].append(entry)
            print(json.dumps(entry, indent=1), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


def engine_measure(clip: Path, tmp: Path) -> dict:
    """The in-process engine on the same clip: render_segment of all of it (what the stereo steps
    do, without Dagster, start-up, join or checks), against the same re-encode, interleaved."""
    from stereospot_pipeline.render import render_segment
    from stereospot_pipeline.stereo.convert import StereoConverter
    from stereospot_pipeline.stereo.params import StereoParams
    from stereospot_pipeline.stereo.planes import PixelFormat

    import torch

    params = StereoParams(depth_model="heuristic")
    converter = StereoConverter(params, torch.device("cpu"), pixel_format=PixelFormat.YUV420P)
    base = reencode(clip, tmp / "base.mp4")
    started = time.perf_counter()
    render_segment(clip, tmp / "engine.mp4", params, converter=converter)
    engine = time.perf_counter() - started
    return {"reencode_s": round(base, 2), "engine_s": round(engine, 2), "ratio_engine_to_reencode": round(engine / base, 3)}


if __name__ == "__main__":
    main()
