"""Decoding frames and encoding stereo frames with PyAV (in-process libav, no pipes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def iter_frames(path: Path, keep: Callable[[Fraction], bool] | None = None,
                ) -> Iterator[tuple[np.ndarray, int, Fraction]]:
    """Yield (rgb uint8 [H,W,3], pts, time_base) for each frame of the first video track whose
    time (seconds) passes ``keep``; the others are decoded (as references) but not converted."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threading roughly doubles decode speed
        for frame in container.decode(stream):
            pts = frame.pts if frame.pts is not None else frame.dts
            if keep is None or keep(pts * frame.time_base):
                yield frame.to_ndarray(format="rgb24"), pts, frame.time_base


class VideoWriter:
    """H.264 (libx264) writer that keeps the caller's timestamps (variable frame rate survives)."""

    def __init__(self, path: Path, width: int, height: int, time_base: Fraction, *, crf: int = 20,
                 preset: str = "veryfast", x264_params: str | None = None, rate: Fraction | None = None):
        self.container = av.open(str(path), "w", format="mp4" if path.suffix == ".mp4" else None)
        self.stream = self.container.add_stream("libx264", rate=rate)
        # yuv420p needs even sizes; callers pad odd sources (see ``pad_even``).
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = time_base
        self.stream.codec_context.time_base = time_base
        opts = {"crf": str(crf), "preset": preset}
        if x264_params:
            opts["x264-params"] = x264_params
        self.stream.options = opts
        self.frames = 0
        # Held back one frame: its duration (which sets the file's duration and frame rate) is
        # only known when the next timestamp arrives; the last frame repeats the last interval.
        self._pending: av.VideoFrame | None = None
        self._last_duration = 1

    def write(self, rgb: np.ndarray, pts: int) -> None:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = pts
        frame.time_base = self.stream.codec_context.time_base
        if self._pending is not None:
            self._last_duration = max(1, pts - self._pending.pts)
            self._encode_pending()
        self._pending = frame
        self.frames += 1

    def _encode_pending(self) -> None:
        self._pending.duration = self._last_duration
        self.container.mux(self.stream.encode(self._pending))

    def close(self) -> None:
        if self._pending is not None:
            self._encode_pending()
        self.container.mux(self.stream.encode(None))
        self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.container.close()


def pad_even(rgb: np.ndarray) -> np.ndarray:
    """[B,H,W,3] -> [B,H',W',3] with H', W' even, edge rows/columns repeated (yuv420p needs it)."""
    h, w = rgb.shape[1:3]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
