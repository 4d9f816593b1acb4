"""Render one segment: decode -> stereo engine -> encode, overlapped in three threads.

Memory stays bounded by the queue depth (a few batches), whatever the segment's length.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import BaseModel

from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.media.codec import VideoWriter, bitstream_colour, iter_frames
from stereospot_pipeline.media.encoders import Encoder, EncoderKind, VideoCodec, choose_encoder
from stereospot_pipeline.media.limits import OutputPlan, plan_output
from stereospot_pipeline.media.packing import Packing
from stereospot_pipeline.media.probe import Colour
from stereospot_pipeline.media.sample import sample_frames
from stereospot_pipeline.media.segment import SegmentPlan, chunk_offset
from stereospot_pipeline.media.verify import verify_written
from stereospot_pipeline.stereo.convert import StereoConverter, video_depth_range
from stereospot_pipeline.stereo.layout import mixes_colours, output_size
from stereospot_pipeline.stereo.normalize import DepthRange
from stereospot_pipeline.stereo.params import AUTO, Layout, StereoParams
from stereospot_pipeline.stereo.planes import PixelFormat, frame_size

_DONE = object()
# Frames of a segment's pre-roll (the end of the previous segment) shown to the converter before
# the segment's own: its depth stabiliser and range smoothing then carry on from where the
# previous segment's left off (their memory fades to under 3% within 16 frames).
LEAD_IN_FRAMES = 16
# The packing players are told of (media/packing.py): 3D TVs and players then switch on their own.
# Cross-eyed (right|left) must not claim side by side: players would show each eye to the wrong side.
FRAME_PACKING = {Layout.HALF_SBS: Packing.SIDE_BY_SIDE, Layout.FULL_SBS: Packing.SIDE_BY_SIDE,
                 Layout.VR180: Packing.SIDE_BY_SIDE, Layout.HALF_TB: Packing.TOP_BOTTOM,
                 Layout.FULL_TB: Packing.TOP_BOTTOM}


def packing_in_bitstream(layout: Layout, codec: VideoCodec) -> bool:
    """Where the packing is told: once, as ffmpeg's own tools (8.x) refuse to decode a video
    that says it both in the bitstream and in the container ("File exists"). Flat layouts in
    the frame-packing SEI, which 3D TVs read, where the codec has one; AV1 (none) and VR180 in
    the container's st3d (with sv3d's half sphere), which VR players and YouTube read."""
    return layout in FRAME_PACKING and layout is not Layout.VR180 and codec is not VideoCodec.AV1


def container_packing(layout: Layout, codec: VideoCodec) -> Packing | None:
    """The packing ``concat_and_mux`` writes into the MP4 (see ``packing_in_bitstream``)."""
    return None if packing_in_bitstream(layout, codec) else FRAME_PACKING.get(layout)


def output_encoder(params: StereoParams, colour: Colour | None = None) -> Encoder:
    """The encoder of ``params`` (codec already resolved by ``plan_video_output``; 'auto' left
    here means H.264) for frames tagged ``colour``: an HDR (PQ/HLG) source kept HDR is written
    10-bit with its colour tags and HDR10 metadata."""
    codec = VideoCodec.H264 if params.codec == AUTO else VideoCodec(params.codec)
    hdr = colour is not None and colour.hdr
    if hdr and codec is VideoCodec.H264:
        raise ValueError(f"HDR ({colour.transfer}) is kept (STEREOSPOT_HDR=keep) but the codec is H.264, "
                         "which carries HDR on almost no player: use codec hevc (or auto), or "
                         "STEREOSPOT_HDR=tonemap")
    if hdr and mixes_colours(params.layout):
        raise ValueError(f"HDR ({colour.transfer}) is kept (STEREOSPOT_HDR=keep) but {params.layout.value} mixes "
                         "the eyes' colours, which is defined for SDR only: use a side-by-side or top-bottom "
                         "layout, or STEREOSPOT_HDR=tonemap")
    return choose_encoder(codec, EncoderKind(params.encoder), crf=params.crf, preset=params.preset,
                          bit_depth=10 if hdr else params.bit_depth,
                          frame_packing=FRAME_PACKING[params.layout] if packing_in_bitstream(params.layout, codec) else None,
                          colour=bitstream_colour(colour),
                          mastering_display=colour.mastering_display if hdr else None,
                          content_light=colour.content_light if hdr else None)


def plan_video_output(params: StereoParams, display_size: tuple[int, int],
                      colour: Colour | None = None) -> tuple[StereoParams, OutputPlan]:
    """The one output decision of a video, made before any segment: the codec ('auto': H.264
    where the packed frame fits H.264 players, else HEVC; HEVC for HDR kept) and each eye's
    size (scaled to the player limits if need be), at which frames are then decoded. Returns
    ``params`` with the codec and bit depth made concrete, so every segment (and the cache key)
    names the same encoding."""
    hdr = colour is not None and colour.hdr
    codec = None if params.codec == AUTO else VideoCodec(params.codec)
    if hdr and codec is None:
        codec = VideoCodec.HEVC
    plan = plan_output(*display_size, params.layout, codec, max_width=params.max_output_width,
                       max_height=params.max_output_height)
    if hdr:
        plan = replace(plan, decision=f"{plan.decision}; HDR {colour.transfer} kept: 10-bit")
    return params.model_copy(update={"codec": plan.codec.value, "bit_depth": 10 if hdr else params.bit_depth}), plan


# Share of the CPU cores the stereo compute's threads (torch, OpenCV) get: the decoder and x264
# run their own threads on the same cores, and torch's workers spin while they wait, so with as
# many threads as cores they stall one another (2 cores, another job running: one torch thread
# converted steadily, two took 1.5-5x longer from run to run).
_COMPUTE_CORE_SHARE = 0.5


@contextmanager
def _compute_threads(count: int) -> Iterator[None]:
    """torch's and OpenCV's thread counts set to ``count`` for the block (both are process-wide)."""
    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(count)
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


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
    first_mean_depth: float
    last_mean_depth: float
    mean_depth_steps: float  # summed |change| of the per-frame mean depth between adjacent frames
    depth_min: float
    depth_max: float
    codec: str = "h264"
    encoder: str = "libx264"
    bit_depth: int = 8
    encoder_fallback: str | None = None  # why the asked-for (NVIDIA) encoder is not the one used
    # [lo, hi] of the strength the comfort controller chose, where the setting is "auto".
    auto_divergence: list[float] | None = None
    auto_convergence: list[float] | None = None
    # Of the verified output (media/verify.py), what the joined file must carry unchanged.
    packets: int
    packet_digest: str


class _Stopped(Exception):
    """Another stage failed; this one winds down quietly (the failure is re-raised by the caller)."""


class _Worker(threading.Thread):
    """A pipeline stage; on failure it records the error and stops the whole pipeline."""

    def __init__(self, target: Callable[[], None], name: str, stop: threading.Event):
        super().__init__(target=self._run, name=name, daemon=True)
        self._fn, self._stop_event, self.error = target, stop, None

    def _run(self) -> None:
        try:
            self._fn()
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller after join
            self.error = exc
            self._stop_event.set()


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event):
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=0.2)
        except queue.Empty:
            continue


def whole_video_depth_range(video: Path, converter: StereoConverter) -> DepthRange:
    """The nearness range of the whole of ``video`` through ``converter``'s estimator, for
    seam-free segments (``StereoConverter(depth_range=...)``): sparse samples, decoded a little
    above the converter's analysis size so they are shrunk exactly as segment frames are."""
    samples = sample_frames(video, short_side=2 * converter.analysis_side)
    return video_depth_range(samples, converter.estimator, converter.device, pixel_format=PixelFormat.YUV420P,
                             short_side=converter.analysis_side, hdr_transfer=converter.hdr_transfer,
                             matrix=converter.matrix)


def render_segment(chunk: Path, out: Path, params: StereoParams, *, plan: SegmentPlan | None = None,
                   converter: StereoConverter | None = None,
                   on_progress: Callable[[int], None] | None = None,
                   size: tuple[int, int] | None = None, colour: Colour | None = None,
                   coded_depth: int = 0) -> RenderResult:
    """Convert the frames of ``chunk`` (those of ``plan``'s segment, or all) into ``out`` (MP4,
    ``output_encoder``'s codec) in ``params.layout``, each eye at ``size`` (the source's display
    size in square pixels, or ``plan_video_output``'s eye size, if given), tagged with the
    source's ``colour``; ``coded_depth`` is the source's ``VideoInfo.coded_depth``.

    Decode, stereo compute and encode run in three threads joined by small bounded queues, so
    the CPU-bound encoder overlaps with compute and memory does not grow with the segment.
    The output is verified as it is written (``media.verify.verify_written``): a segment that
    does not decode, or whose file is not what was encoded, raises ``SegmentVerificationError``.
    """
    video_encoder = output_encoder(params, colour)  # before any work: a setting it cannot honour fails now
    converter = converter or StereoConverter(params, pixel_format=PixelFormat.YUV420P,
                                             hdr_transfer=colour.transfer if colour and colour.hdr else None,
                                             matrix=colour.yuv_matrix if colour else None)
    if converter.pixel_format is not PixelFormat.YUV420P:
        raise ValueError("render_segment needs a converter of yuv420p frames (the decoder's format)")
    # HDR kept HDR keeps its 10 bits from decoder to encoder: PQ in 8 bits bands visibly.
    bits = 10 if colour is not None and colour.hdr else 8
    stop = threading.Event()
    batches: queue.Queue = queue.Queue(maxsize=2)
    packed: queue.Queue = queue.Queue(maxsize=2)
    started = time.perf_counter()

    # Frames leave on the source's timeline counted from its first frame (``plan.origin``), so
    # the final mux needs no per-segment offsets.
    offset = chunk_offset(chunk, plan) if plan else Fraction(0)
    origin = Fraction(plan.origin) if plan else Fraction(0)

    def decode() -> None:
        batch, stamps, lead_in = [], [], []
        keep = plan.selector(offset) if plan else None
        for frame, pts, tb, kept in iter_frames(chunk, keep, lead_in=LEAD_IN_FRAMES if plan else 0,
                                                 size=size, coded_depth=coded_depth, bits=bits):
            if not kept:
                lead_in.append(frame)
                continue
            if lead_in:
                # Stamps None: frames to warm up on, not to convert.
                _put(batches, (np.stack(lead_in), None, tb), stop)
                lead_in = []
            batch.append(frame)
            stamps.append(pts - round((offset + origin) / tb))
            if len(batch) == params.batch_size:
                _put(batches, (np.stack(batch), stamps, tb), stop)
                batch, stamps = [], []
        if batch:
            _put(batches, (np.stack(batch), stamps, tb), stop)
        _put(batches, _DONE, stop)

    writer: VideoWriter | None = None

    def encode() -> None:
        nonlocal writer
        while (item := _get(packed, stop)) is not _DONE:
            frames, stamps, tb = item
            if writer is None:
                h, w = frame_size(frames, PixelFormat.YUV420P)
                writer = VideoWriter(out, w, h, tb, encoder=video_encoder, colour=colour, check=True)
            for frame, pts in zip(frames, stamps):
                writer.write(frame, pts)
        if writer is not None:
            writer.close()

    done, written, tb = 0, (0, 0), None  # frames and their packed size (w, h)
    decoder, encoder = _Worker(decode, "decode", stop), _Worker(encode, "encode", stop)
    decoder.start()
    encoder.start()

    def emit(result: np.ndarray, stamps: list) -> None:
        nonlocal done, written
        if not len(stamps):
            return
        h, w = frame_size(result, PixelFormat.YUV420P)
        written = (w, h)
        _put(packed, (result, stamps, tb), stop)
        done += len(stamps)
        if on_progress:
            on_progress(done)

    try:
        with _compute_threads(max(1, int((os.cpu_count() or 1) * _COMPUTE_CORE_SHARE))):
            while (item := _get(batches, stop)) is not _DONE:
                frames, stamps, tb = item
                if stamps is None:
                    converter.warm_up(frames)
                else:
                    emit(*converter.push(frames, stamps))
            emit(*converter.flush())
        _put(packed, _DONE, stop)
    except _Stopped:
        pass  # a worker failed; its error is raised below
    except BaseException:
        stop.set()
        raise
    finally:
        decoder.join()
        encoder.join()
    for worker in (decoder, encoder):
        if worker.error is not None:
            raise worker.error
    if done == 0:
        raise InvalidVideoError(str(chunk), "no frame of this segment could be decoded",
                                "the stream is damaged; re-export the source")
    if plan is not None and done != plan.frames:
        raise InvalidVideoError(str(chunk), f"decoded {done} frames, expected {plan.frames}",
                                "the stream is damaged in this segment; re-export the source")
    # Each packet was decoded as it was written; the file must hold exactly those.
    verified = verify_written(out, writer.encoded, done, written)
    seconds = time.perf_counter() - started
    st = converter.stats
    return RenderResult(frames=done, seconds=seconds, fps=done / seconds if seconds else 0.0,
                        width=written[0], height=written[1], device=str(converter.device),
                        depth_model=converter.estimator.name, mean_depth=st.mean_depth,
                        max_shift_px=st.max_abs_shift_px, first_mean_depth=st.first_mean_depth,
                        last_mean_depth=st.last_mean_depth, mean_depth_steps=st.mean_depth_steps,
                        depth_min=st.depth_min, depth_max=st.depth_max, codec=video_encoder.codec.value,
                        encoder=video_encoder.name, bit_depth=video_encoder.bit_depth,
                        encoder_fallback=video_encoder.fallback,
                        auto_divergence=st.extra.get("auto_divergence"),
                        auto_convergence=st.extra.get("auto_convergence"),
                        packets=verified.packets, packet_digest=verified.packet_digest)


def packed_size(width: int, height: int, layout: Layout) -> tuple[int, int]:
    """The output frame size for a source shown at ``width`` x ``height``. The one rule for odd
    sizes: each eye is padded to even before packing (``codec.yuv420p`` repeats the edge), so
    the writer and the geometry check agree (a 97x63 source is 196x64 full SBS)."""
    w, h = output_size(width + width % 2, height + height % 2, layout)
    return w + w % 2, h + h % 2
