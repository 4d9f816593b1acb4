"""Output encodings on the shipped example: for each codec and bit depth, the conversion's speed
(frames per second of ``render_segment``: decode, depth, warp and that encoder) and the file's
size, at the same visual settings (crf 20, preset veryfast, full side by side; SVT-AV1 gets its
own crf scale, see media/encoders.py); and the player-limit policy's decision (codec, each eye's
size) for the common source sizes with codec 'auto'.

    python benchmarks/output_codecs.py [--out .bench/output_codecs.json] [--repeats 2] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

import imageio_ffmpeg

from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline.render import plan_video_output, render_segment
from stereospot_pipeline.stereo.params import Layout, StereoParams

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "cockatoo.mp4"
ENCODINGS = [("h264", 8), ("h264", 10), ("hevc", 8), ("hevc", 10), ("av1", 8), ("av1", 10)]
SOURCES = {"720p": (1280, 720), "1080p": (1920, 1080), "4K": (3840, 2160)}


def encodings(repeats: int, seconds: float | None = None) -> list[dict]:
    """One row per codec and bit depth; ``seconds``: only the example's first seconds (cut
    losslessly), for a quick run."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="stereospot-codecs-") as tmp:
        source = EXAMPLE
        if seconds:
            source = Path(tmp) / EXAMPLE.name
            subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(EXAMPLE), "-t", str(seconds),
                            "-c:v", "libx264", "-qp", "0", "-preset", "ultrafast", "-an", str(source)], check=True)
        info = probe_video(source)
        for codec, bits in ENCODINGS:
            params = StereoParams(depth_model="heuristic", codec=codec, bit_depth=bits, encoder="software")
            out = Path(tmp) / f"{codec}-{bits}.mp4"
            fps = [render_segment(source, out, params, size=info.display_size, colour=info.colour).fps
                   for _ in range(repeats)]
            rows.append({"codec": codec, "bit_depth": bits, "fps": round(statistics.median(fps), 1),
                         "size_kb": round(out.stat().st_size / 1000), "frames": info.frames,
                         "source": f"{EXAMPLE.name} {info.width}x{info.height}"})
    return rows


def player_limits() -> list[dict]:
    rows = []
    for name, size in SOURCES.items():
        for layout in (Layout.FULL_SBS, Layout.HALF_SBS, Layout.FULL_TB):
            params, plan = plan_video_output(StereoParams(layout=layout), size)
            rows.append({"source": name, "layout": layout.value, "codec": params.codec,
                         "eye": f"{plan.eye_width}x{plan.eye_height}", "packed": f"{plan.width}x{plan.height}",
                         "decision": plan.decision})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "output_codecs.json")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=None, help="only the example's first seconds")
    args = parser.parse_args()
    results = {"encodings": encodings(args.repeats, args.seconds), "player_limits": player_limits()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
