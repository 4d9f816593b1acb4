"""The bundled ffmpeg for generating test inputs (argument lists, never a shell)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg


def ffmpeg(*args: str | Path, timeout: float = 120) -> None:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *map(str, args)]
    subprocess.run(cmd, check=True, timeout=timeout)


def ffmpeg_report(path: Path) -> str:
    """What libavformat says of a file (``ffmpeg -i``): streams, tags, side data."""
    return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True, timeout=60).stderr
