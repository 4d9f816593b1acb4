"""Presentation times of decoded frames, in every container.

Decoders emit frames in display order, but the timestamp a frame carries is copied from a packet,
and containers that store only decode times (AVI, some program streams) give a B-frame stream
packets stamped in decode order: frames then arrive stamped 1,2,3,5,4,6,8,7. PyAV exposes no
best-effort timestamp, so this module does what that guess amounts to for such streams: the
frames' stamps are the right set of times in the wrong order, and within a short window they are
sorted back onto the frames. For streams already in order (MP4, MKV, TS ...) this changes nothing.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator

import av

# Frames a stamp can be displaced by: the decoder's reorder delay (2-3 for DivX/Xvid B-frames,
# at most 16 for H.264/HEVC pyramids).
REORDER_WINDOW = 16


def decoded(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
    """The frames of ``stream`` in decoder order. An empty packet with a timestamp (a "repeat the
    previous frame" chunk of AVI, kept by a stream copy) is no picture, and sent to a decoder it
    would read as the end of the stream (an error): it is skipped; the final flush is not.
    Undecodable data before the first picture is skipped too (see below); later it is an error."""
    shown = False
    for packet in container.demux(stream):
        if packet.size == 0 and packet.pts is not None:
            continue
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            # A piece cut from a program stream may begin inside a picture: until the first
            # picture decodes, broken leading data is pre-roll to skip, not damage.
            if shown:
                raise
            continue
        shown = shown or bool(frames)
        yield from frames


def presented(frames: Iterable[av.VideoFrame], window: int = REORDER_WINDOW) -> Iterator[tuple[av.VideoFrame, int]]:
    """(frame, presentation timestamp in the frame's time base) for each decoded frame, in
    display order, each stamp used once. Frames without any timestamp continue the previous one."""
    pending: deque[av.VideoFrame] = deque()
    stamps: list[int] = []
    last = None
    for frame in frames:
        ts = frame.pts if frame.pts is not None else frame.dts
        if ts is None:
            ts = (last + 1) if last is not None else 0
        last = ts
        heapq.heappush(stamps, ts)
        pending.append(frame)
        if len(pending) > window:
            yield pending.popleft(), heapq.heappop(stamps)
    while pending:
        yield pending.popleft(), heapq.heappop(stamps)
