"""Short real clips made with the bundled ffmpeg (H.264 + AAC), so tests need no media files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg


def make_clip(path: Path, seconds: float = 2.0, width: int = 160, height: int = 96, fps: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", str(fps),
         "-c:a", "aac", "-b:a", "64k", "-shortest", str(path)],
        check=True, timeout=60,
    )
    return path
