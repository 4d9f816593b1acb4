"""Cheap, sparse frame samples of a whole video (for the whole-video depth range)."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import av
import numpy as np

from stereospot_pipeline.media.codec import yuv420p
from stereospot_pipeline.media.probe import main_video
from stereospot_pipeline.media.timing import decoded


def _scaled(frame: av.VideoFrame, short_side: int) -> np.ndarray:
    scale = min(1.0, short_side / min(frame.width, frame.height))
    width = max(2, round(frame.width * scale / 2) * 2)
    height = max(2, round(frame.height * scale / 2) * 2)
    return yuv420p(frame, width, height)


def sample_frames(path: Path, *, every_s: float = 1.0, short_side: int = 224,
                  max_frames: int = 240, min_keyframes: int = 8) -> Iterator[np.ndarray]:
    """Yield up to ``max_frames`` yuv420p frames [h*3/2,w] spread over the video, about one per
    ``every_s`` seconds, downscaled to about ``short_side`` (never enlarged), in the segments'
    pixel format so the depth analysis sees them exactly as it sees the segments' frames.

    Decoding only keyframes skips almost all decode work. Streams with too few keyframes (short
    clips: x264 puts one every 250 frames) fall back to decoding the reference frames and keeping
    one per interval: nothing depends on a non-reference frame, so skipping those (most B-frames,
    about 40% of an x264 stream's frames) changes no decoded picture and saves about 40% of the
    decode.
    """
    with av.open(str(path)) as container:
        stream = main_video(container)
        total_s = float(container.duration / av.time_base) if container.duration else 0.0
        keyframes_only = sum(1 for p in container.demux(stream) if p.is_keyframe) >= min_keyframes
    # Enough samples to cover the video evenly, but never more than max_frames.
    every_s = max(every_s, total_s / max_frames) if total_s else every_s
    # A stream whose every frame is flagged non-reference would yield nothing: decode it all.
    for skip in ("NONKEY",) if keyframes_only else ("NONREF", "DEFAULT"):
        # Opened afresh rather than seeking back: not every file can seek (FLV without an index).
        with av.open(str(path)) as container:
            stream = main_video(container)
            stream.thread_type = "AUTO"
            stream.codec_context.skip_frame = skip
            yielded = yield from _spread(decoded(container, stream), every_s, short_side, max_frames)
        if yielded:
            return


def _spread(frames: Iterator[av.VideoFrame], every_s: float, short_side: int,
            max_frames: int) -> Generator[np.ndarray, None, int]:
    """Yield ``frames`` at least ``every_s`` apart, at most ``max_frames`` -> how many."""
    yielded, next_t = 0, None
    for frame in frames:
        t = frame.time if frame.time is not None else 0.0
        if next_t is not None and t < next_t:
            continue
        yield _scaled(frame, short_side)
        yielded += 1
        next_t = t + every_s
        if yielded >= max_frames:
            break
    return yielded
