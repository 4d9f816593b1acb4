"""The ffmpeg binary bundled by ``imageio-ffmpeg`` (no system ffmpeg is assumed)."""

from __future__ import annotations

import subprocess
from functools import cache

import imageio_ffmpeg

from stereospot_pipeline.errors import InvalidVideoError


@cache
def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: list[str], *, source: str, what: str) -> None:
    """Run ffmpeg with an argument list (never a shell string); raise naming ``source`` on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode < 0:
        # Killed (out of memory, a shutdown): nothing is wrong with the video, so this must not
        # read as bad input (which is never retried and makes the split fall back to one segment).
        raise RuntimeError(f"ffmpeg was killed by signal {-proc.returncode} while trying to {what} of {source}")
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-3:] or [f"exit code {proc.returncode}"]
        raise InvalidVideoError(source, f"ffmpeg could not {what}: {' | '.join(detail)}")
