"""An upright, progressive working copy of sources that are stored rotated or interlaced.

Depth and disparity only make sense on the picture as people see it: a phone's portrait video is
landscape pixels plus a display matrix, and an interlaced frame holds two moments in time. Such a
source is re-encoded once, losslessly, before segmenting; every other source is used as it is.
"""

from __future__ import annotations

from pathlib import Path

from stereospot_pipeline.media.ffmpeg import run_ffmpeg
from stereospot_pipeline.media.probe import GENPTS, VideoInfo


def needs_upright_copy(info: VideoInfo) -> bool:
    return bool(info.rotation) or info.interlaced


def upright_copy(source: Path, info: VideoInfo, out: Path) -> Path:
    """Write ``out`` (NUT: carries any audio codec with exact timestamps): the first video track
    turned upright (ffmpeg applies the display matrix by default when it re-encodes) and
    deinterlaced to one frame per frame, lossless H.264 on the source's own timestamps
    (variable frame rate survives), and every audio track copied."""
    args = ["-fflags", GENPTS["fflags"], "-i", str(source), "-map", "0:v:0", "-map", "0:a?",
            "-c:a", "copy", "-sn", "-dn", "-c:v", "libx264", "-qp", "0", "-preset", "ultrafast",
            "-fps_mode", "passthrough", "-enc_time_base:v", "demux"]
    if info.interlaced:
        args += ["-vf", "yadif=mode=send_frame"]
    run_ffmpeg([*args, "-f", "nut", str(out)], source=str(source),
               what="make an upright, progressive working copy")
    return out
