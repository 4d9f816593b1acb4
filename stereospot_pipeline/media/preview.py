"""Small preview images of videos, embeddable in Dagster metadata (the UI renders Markdown images
with data URIs, so a preview needs no server of its own)."""

from __future__ import annotations

import base64
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from stereospot_pipeline.media.probe import main_video
from stereospot_pipeline.media.timing import decoded
from stereospot_pipeline.stereo.convert import StereoConverter
from stereospot_pipeline.stereo.params import Layout, StereoParams

THUMB_WIDTH = 320


def frame_at(path: Path, fraction: float = 0.5) -> np.ndarray:
    """uint8 RGB [H,W,3] of the first frame at or after ``fraction`` of the video's duration
    (the last frame if none is).

    A seek is only a shortcut: some files cannot seek (FLV without an index), and on others it
    lands past every frame (MPEG-TS far from zero with long GOPs), so the frame is then found by
    decoding from the start. Raises ``ValueError`` if the file shows no frame at all.
    """
    with av.open(str(path)) as container:
        stream = main_video(container)
        # The frames from the keyframe to the target (a whole GOP, at worst) decode on every core.
        stream.thread_type = "AUTO"
        start = stream.start_time or 0
        duration = stream.duration or (
            round(container.duration / av.time_base / stream.time_base) if container.duration else 0)
        target = start + int(duration * fraction)
        try:
            # Seeking lands on the keyframe before the target; decoding forward reaches it.
            container.seek(target, stream=stream)
            frame = _first_from(decoded(container, stream), target)
        except av.error.FFmpegError:
            frame = None
    if frame is None:
        with av.open(str(path)) as container:
            frame = _first_from(decoded(container, main_video(container)), target)
    if frame is None:
        raise ValueError(f"{path} has no decodable video frame")
    return frame.to_ndarray(format="rgb24")


def _first_from(frames, target: int) -> av.VideoFrame | None:
    frame = None
    for frame in frames:
        if frame.pts is None or frame.pts >= target:
            break
    return frame


def depth_preview(rgb: np.ndarray, params: StereoParams) -> np.ndarray:
    """The depth map (grey, white = near) the engine computes for ``rgb`` [H,W,3] with ``params``,
    normalised on this frame alone."""
    depth_params = params.model_copy(update={"layout": Layout.DEPTH})
    packed = StereoConverter(depth_params, device=torch.device("cpu"))(rgb[None])
    return packed[0, :, rgb.shape[1]:]  # the depth layout is source | depth


def thumbnail(rgb: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    """``rgb`` [H,W,3] scaled down to ``width`` (swscale area filter; never scaled up)."""
    h, w = rgb.shape[:2]
    if w <= width:
        return rgb
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    height = max(2, round(h * width / w / 2) * 2)
    return frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()


def png_bytes(rgb: np.ndarray) -> bytes:
    """``rgb`` [H,W,3] uint8 as PNG bytes."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # OpenCV's order is BGR
    if not ok:
        raise ValueError(f"a {rgb.shape} image cannot be written as PNG")
    return png.tobytes()


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that shows ``png`` inline (keep it a thumbnail: metadata lives in the database)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def preview_key(stored_key: str, label: str = "preview") -> str:
    """Where the preview of the stored file ``stored_key`` goes: next to it, so it is cleaned up
    and listed with it (``final/k/out.mp4`` -> ``final/k/out.preview.png``)."""
    stem = stored_key.rsplit(".", 1)[0]
    return f"{stem}.{label}.png"
