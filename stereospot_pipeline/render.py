"""Render one segment: decode -> stereo engine -> encode, overlapped in three threads.

Memory stays bounded by the queue depth (a few batches), whatever the segment's length.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.media.codec import VideoWriter, iter_frames, pad_even
from stereospot_pipeline.stereo.convert import StereoConverter
from stereospot_pipeline.stereo.layout import output_size
from stereospot_pipeline.stereo.params import Layout, StereoParams

_DONE = object()
# x264 writes a frame-packing SEI so 3D TVs and players switch to side-by-side on their own.
_X264_PARAMS = {Layout.HALF_SBS: "frame-packing=3", Layout.FULL_SBS: "frame-packing=3"}


class RenderResult(BaseModel):
    frames: int
    seconds: float
    fps: float
    width: int
    height: int
    device: str
    depth_model: str
    mean_depth: float
    max_shift_px: float


class _Worker(threading.Thread):
    """A thread whose exception is re-raised in the caller by ``join_checked``."""

    def __init__(self, target: Callable[[], None], name: str):
        super().__init__(target=self._run, name=name, daemon=True)
        self._fn, self.error = target, None

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # noqa: BLE001 - surfaced in join_checked
            self.error = exc

    def join_checked(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


def render_segment(chunk: Path, out: Path, params: StereoParams, *, expected_frames: int | None = None,
                   converter: StereoConverter | None = None,
                   on_progress: Callable[[int], None] | None = None) -> RenderResult:
    """Convert every frame of ``chunk`` into ``out`` (MP4, H.264) in ``params.layout``."""
    converter = converter or StereoConverter(params)
    batches: queue.Queue = queue.Queue(maxsize=2)
    packed: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    writer_box: dict = {}
    started = time.perf_counter()

    def decode() -> None:
        batch, stamps, tb = [], [], None
        for rgb, pts, tb in iter_frames(chunk):
            batch.append(rgb)
            stamps.append(pts)
            if len(batch) == params.batch_size:
                if not _put(batches, (np.stack(batch), stamps, tb), stop):
                    return
                batch, stamps = [], []
        if batch:
            _put(batches, (np.stack(batch), stamps, tb), stop)
        _put(batches, _DONE, stop)

    def encode() -> None:
        while True:
            item = packed.get()
            if item is _DONE:
                break
            frames, stamps, tb = item
            if "w" not in writer_box:
                h, w = frames.shape[1:3]
                writer_box["w"] = VideoWriter(out, w, h, tb, crf=params.crf, preset=params.preset,
                                              x264_params=_X264_PARAMS.get(params.layout))
            for rgb, pts in zip(frames, stamps):
                writer_box["w"].write(rgb, pts)
        if "w" in writer_box:
            writer_box["w"].close()

    decoder, encoder = _Worker(decode, "decode"), _Worker(encode, "encode")
    decoder.start()
    encoder.start()
    done = 0
    size = (0, 0)
    try:
        while True:
            item = batches.get()
            if item is _DONE:
                break
            frames, stamps, tb = item
            result = pad_even(converter(frames))
            size = (result.shape[2], result.shape[1])
            if not _put(packed, (result, stamps, tb), stop) or encoder.error:
                break
            done += len(stamps)
            if on_progress:
                on_progress(done)
    except BaseException:
        stop.set()
        raise
    finally:
        if not stop.is_set():
            _put(packed, _DONE, stop)
        else:
            stop.set()
        decoder.join_checked()
        encoder.join_checked()
    if done == 0:
        raise InvalidVideoError(str(chunk), "no frame of this segment could be decoded",
                                "the stream is damaged; re-export the source")
    if expected_frames is not None and done != expected_frames:
        raise InvalidVideoError(str(chunk), f"decoded {done} frames, expected {expected_frames}",
                                "the stream is damaged in this segment; re-export the source")
    seconds = time.perf_counter() - started
    st = converter.stats
    return RenderResult(frames=done, seconds=seconds, fps=done / seconds if seconds else 0.0,
                        width=size[0], height=size[1], device=str(converter.device),
                        depth_model=converter.estimator.name, mean_depth=st.mean_depth,
                        max_shift_px=st.max_abs_shift_px)


def packed_size(width: int, height: int, layout: Layout) -> tuple[int, int]:
    w, h = output_size(width, height, layout)
    return w + w % 2, h + h % 2
