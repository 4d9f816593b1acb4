"""A working copy of sources the engine cannot take as they are: stored rotated, interlaced, or HDR.

Depth and disparity only make sense on the picture as people see it: a phone's portrait video is
landscape pixels plus a display matrix, an interlaced frame holds two moments in time, and an HDR
(PQ/HLG) picture read as SDR looks washed out, to people and to the depth estimator. Such a source
is re-encoded once by the ffmpeg CLI, which applies the display matrix, deinterlaces and tone-maps
in one pass, losslessly (apart from the tone-mapping itself), before segmenting; every other source
is used as it is.
"""

from __future__ import annotations

from pathlib import Path

from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.media.ffmpeg import run_ffmpeg
from stereospot_pipeline.media.probe import GENPTS, VideoInfo

# HDR to SDR BT.709: linearise (100 nits reference white), map to BT.709 primaries, compress the
# highlights (Hable keeps mid-tones and saturation), then the BT.709 curve in limited range.
TONEMAP = ("zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=hable:desat=0,"
           "zscale=t=bt709:m=bt709:r=tv,format=yuv420p")
_SDR_TAGS = ["-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv"]


def working_copy_reasons(info: VideoInfo, hdr: str = "tonemap") -> list[str]:
    """What the working copy must do for this source (nothing: use it as it is).
    ``hdr``: "tonemap" (SDR BT.709 output) or "keep"."""
    reasons = []
    if info.rotation:
        reasons.append(f"turned upright ({info.rotation} degrees)")
    if info.interlaced:
        reasons.append("deinterlaced")
    if info.colour.hdr and hdr != "keep":
        reasons.append(f"tone-mapped {info.colour.transfer} to SDR BT.709")
    return reasons


def working_copy(source: Path, info: VideoInfo, reasons: list[str], out: Path) -> Path:
    """Write ``out`` (NUT: carries any audio codec with exact timestamps): the first video track
    upright (ffmpeg applies the display matrix by default when it re-encodes), deinterlaced to one
    frame per frame and tone-mapped as ``reasons`` say, lossless H.264 on the source's own
    timestamps (variable frame rate survives), and every audio track copied."""
    args = ["-fflags", GENPTS["fflags"], "-i", str(source), "-map", f"0:{info.video_index}", "-map", "0:a?",
            "-c:a", "copy", "-sn", "-dn", "-c:v", "libx264", "-qp", "0", "-preset", "ultrafast",
            "-fps_mode", "passthrough", "-enc_time_base:v", "demux"]
    filters = []
    if info.interlaced:
        filters.append("yadif=mode=send_frame")
    if info.colour.hdr and any(r.startswith("tone-mapped") for r in reasons):
        filters.append(TONEMAP)
        args += _SDR_TAGS
    elif info.colour.hdr:
        # HDR kept: lossless at the source's bit depth (x264 High 4:4:4 takes 10-bit), colour tags
        # carried over from the decoded frames (HDR10 metadata: see the source step).
        args += ["-pix_fmt", "yuv420p10le"]
    if filters:
        args += ["-vf", ",".join(filters)]
    run_ffmpeg([*args, "-f", "nut", str(out)], source=str(source), what="make a working copy ("
               + ", ".join(reasons) + ")")
    return out
