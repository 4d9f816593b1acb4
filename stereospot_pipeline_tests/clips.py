"""Test clips: generated with the bundled ffmpeg, or real footage from the corpus (corpus/manifest.tsv)."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import av
import imageio_ffmpeg

from stereospot_pipeline_tests.corpus.fetch import fetch

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "cockatoo.mp4"


def make_clip(path: Path, *, seconds: float = 2.0, fps: int = 10, size: str = "160x96", gop: int = 10,
              audio: bool = True, codec: str = "libx264") -> Path:
    """A textured, moving test pattern (testsrc2) with an optional sine tone."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    cmd += ["-c:v", codec, "-g", str(gop), "-pix_fmt", "yuv420p"]
    if audio:
        cmd += ["-c:a", "aac", "-shortest"]
    subprocess.run([*cmd, str(path)], check=True)
    return path


def real_clips(dest: Path) -> dict[str, Path]:
    """The real-world corpus (cached in ``dest``), by file name."""
    return fetch(dest)


def stereo_types(path: Path) -> set[int]:
    """The AVStereo3DType values a decoder reports on the frames (1 side by side, 2 top-bottom),
    whether the bitstream or the container told it."""
    with av.open(str(path)) as c:
        return {struct.unpack("<i", bytes(sd)[:4])[0] for f in c.decode(video=0)
                for sd in f.side_data if sd.type.name == "STEREO3D"}


def decode_all(path: Path):
    """(frames as rgb arrays' count, width, height, duration_s, has_audio) by decoding everything."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = [f for f in c.decode(stream)]
        has_audio = bool(c.streams.audio)
        return frames, has_audio
