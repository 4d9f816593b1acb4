"""Previews for tuning settings before a long conversion: stereo stills at chosen moments and a
short sample clip, rendered by the same engine and settings a conversion uses."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import torch

from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.media.ffmpeg import run_ffmpeg
from stereospot_pipeline.media.preview import frame_at, png_bytes
from stereospot_pipeline.media.packing import add_st3d
from stereospot_pipeline.media.encoders import VideoCodec
from stereospot_pipeline.render import container_packing, render_segment
from stereospot_pipeline.stereo.convert import StereoConverter
from stereospot_pipeline.stereo.params import LAYOUT_SUFFIX, Layout, StereoParams


@dataclass
class Previews:
    stills: list[Path]
    clip: Path | None


def parse_positions(text: str) -> list[str]:
    """``"10%,50%,90%"`` or seconds (``"12.5,1:30"``) -> the same positions, checked."""
    positions = [p.strip() for p in text.split(",") if p.strip()]
    if not positions:
        raise ValueError("no position given: use e.g. --at 10%,50%,90% or --at 12.5,90")
    for p in positions:
        _seconds(p, 1.0)
    return positions


def _seconds(position: str, duration: float) -> float:
    try:
        if position.endswith("%"):
            value = float(position[:-1]) / 100 * duration
        else:
            value = 0.0
            for part in position.split(":"):
                value = value * 60 + float(part)
    except ValueError:
        raise ValueError(f"{position!r} is neither a percentage (50%) nor a time (90, 1:30)") from None
    if value < 0:
        raise ValueError(f"{position!r} is before the start of the video")
    return min(value, duration)


def _duration(source: Path) -> float:
    try:
        with av.open(str(source), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise InvalidVideoError(str(source), "has no video stream", "provide a file with a video track")
            if container.duration:
                return container.duration / av.time_base
            stream = container.streams.video[0]
            return float(stream.duration * stream.time_base) if stream.duration else 0.0
    except av.error.FFmpegError as exc:
        raise InvalidVideoError(str(source), f"not a readable video ({exc.strerror or exc})",
                                "the file may be truncated or not a video; re-export or re-download it") from exc


def make_previews(source: Path, params: StereoParams, positions: list[str], out_dir: Path,
                  clip_seconds: float = 5.0) -> Previews:
    """Write one stereo still (PNG, the output layout) per position and, if ``clip_seconds`` > 0,
    a sample clip of that length from the first position, into ``out_dir``.

    A still's depth range is its own frame's; the clip's is measured over the clip, as a
    conversion's range is over the whole video, so their strength is within a few percent of
    the converted video's.
    """
    duration = _duration(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = LAYOUT_SUFFIX[params.layout]
    converter = StereoConverter(params, device=torch.device("cpu"))
    stills = []
    for position in positions:
        at = _seconds(position, duration)
        rgb = frame_at(source, at / duration if duration else 0.0)
        still = out_dir / f"{source.stem}.at-{at:.1f}s{suffix}.png"
        still.write_bytes(png_bytes(converter(rgb[None])[0]))
        stills.append(still)
    clip = None
    if clip_seconds > 0:
        start = _seconds(positions[0], duration)
        start = max(0.0, min(start, duration - clip_seconds))
        clip = out_dir / f"{source.stem}.sample-{start:.1f}s{suffix}.mp4"
        with tempfile.TemporaryDirectory(prefix="stereospot-preview-") as tmp:
            # A lossless cut that starts exactly at ``start`` (re-encoded, so not keyframe-bound);
            # ffmpeg also turns rotated video upright on the way.
            chunk = Path(tmp) / "sample.nut"
            run_ffmpeg(["-ss", f"{start:.3f}", "-t", f"{clip_seconds:.3f}", "-i", str(source), "-map", "0:v:0",
                        "-c:v", "libx264", "-qp", "0", "-preset", "ultrafast", "-an", "-sn", "-dn",
                        "-f", "nut", str(chunk)], source=str(source), what="cut a sample clip")
            partial = Path(tmp) / clip.name
            result = render_segment(chunk, partial, params)
            if packing := container_packing(params.layout, VideoCodec(result.codec)):
                add_st3d(partial, packing, half_sphere=params.layout is Layout.VR180)
            partial.replace(clip)
    return Previews(stills=stills, clip=clip)
