"""Verification that scales with the video's length.

Each stereo segment is decoded in full once, in its own step, on the worker that just encoded it
(``verify_segment``): that is where the work is parallel. Its video packets are fingerprinted at
the same time. The joined file is then checked without decoding it again (``verify_joined``):
its packet index must hold exactly the verified segments' packets, byte for byte, in order,
and sampled decodes at every seam (the only place the join itself can break decoding: the
joined file carries the first segment's codec setup) plus a few points between prove the
decoder accepts them there. A segment corrupted or cut after its verification, a lost or extra
packet, or a seam the decoder rejects all fail.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
from pydantic import BaseModel


# Points decoded between seams, spread evenly, on top of one at every seam.
_BETWEEN_SAMPLES = 4
# Frames decoded at each sampled point: the keyframe and the first frames predicted from it.
_FRAMES_PER_SAMPLE = 3


class SegmentVerificationError(Exception):
    """An encoded segment that is not what was rendered. Not a user error: the step retries it."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")


class SegmentVerification(BaseModel):
    frames: int  # decoded without a decoder error
    packets: int  # video packets with data, in demux order
    width: int
    height: int
    packet_digest: str  # sha256 over each packet's sha256: what the joined file must carry unchanged


class JoinedVerification(BaseModel):
    passed: bool
    problem: str | None  # the first thing wrong, naming the segment or seam
    packets: int
    sampled_points: int
    decoded_frames: int


def _digest_packets(packets) -> tuple[int, str]:
    h = hashlib.sha256()
    count = 0
    for pkt in packets:
        h.update(hashlib.sha256(bytes(pkt)).digest())
        count += 1
    return count, h.hexdigest()


def verify_segment(path: Path, expected_frames: int, size: tuple[int, int]) -> SegmentVerification:
    """Decode every frame of one encoded segment; raises ``SegmentVerificationError`` naming the
    problem (decoder error, frame count, frame size) so the step fails and is retried."""
    decoded, digests = 0, []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            for pkt in container.demux(stream):
                if pkt.size == 0:
                    for _ in pkt.decode():  # the flush packet drains the decoder's delayed frames
                        decoded += 1
                    continue
                digests.append(hashlib.sha256(bytes(pkt)).digest())
                for _ in pkt.decode():
                    decoded += 1
    except av.error.FFmpegError as exc:
        raise SegmentVerificationError(path, f"stereo segment does not decode after {decoded} frames: {exc}") from exc
    h = hashlib.sha256()
    for d in digests:
        h.update(d)
    result = SegmentVerification(frames=decoded, packets=len(digests), width=width, height=height,
                                 packet_digest=h.hexdigest())
    if decoded != expected_frames or len(digests) != expected_frames:
        raise SegmentVerificationError(path, f"stereo segment has {decoded} decodable frames in {len(digests)} "
                                             f"packets, {expected_frames} were encoded")
    if (width, height) != tuple(size):
        raise SegmentVerificationError(path, f"stereo segment is {width}x{height}, expected {size[0]}x{size[1]}")
    return result


def verify_joined(path: Path, segments: list[dict]) -> JoinedVerification:
    """``segments``: in order, each with ``packets`` and ``packet_digest`` from ``verify_segment``."""
    def failed(problem: str, packets: int = 0, points: int = 0, frames: int = 0) -> JoinedVerification:
        return JoinedVerification(passed=False, problem=problem, packets=packets, sampled_points=points,
                                  decoded_frames=frames)

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            packets = [(pkt.pts, pkt.is_keyframe, hashlib.sha256(bytes(pkt)).digest())
                       for pkt in container.demux(stream) if pkt.size]
    except av.error.FFmpegError as exc:
        return failed(f"the packet index cannot be read: {exc}")
    expected = sum(s["packets"] for s in segments)
    if len(packets) != expected:
        return failed(f"{len(packets)} video packets, the verified segments have {expected}", len(packets))
    # Packets in decode order per segment: the joined file must carry each run unchanged.
    starts, at = [], 0
    for number, seg in enumerate(segments, 1):
        h = hashlib.sha256()
        for _, _, digest in packets[at:at + seg["packets"]]:
            h.update(digest)
        if h.hexdigest() != seg["packet_digest"]:
            return failed(f"segment {number}/{len(segments)}: its packets in the joined file differ from the "
                          f"verified segment (corrupted or changed after verification)", len(packets))
        starts.append(at)
        at += seg["packets"]
    seam_points = starts[1:] if len(starts) > 1 else starts
    step = max(len(packets) // (_BETWEEN_SAMPLES + 1), 1)
    between = [i for i in range(step, len(packets), step)][:_BETWEEN_SAMPLES]
    points = sorted({*seam_points, *between})
    decoded = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for index in points:
                keyframe = next(i for i in range(index, -1, -1) if packets[i][1])
                container.seek(packets[keyframe][0], stream=stream, backward=True, any_frame=False)
                got = 0
                for frame in container.decode(stream):
                    got += 1
                    if got >= _FRAMES_PER_SAMPLE:
                        break
                if got == 0:
                    where = f"seam before segment {starts.index(index) + 1}" if index in starts else f"packet {index}"
                    return failed(f"nothing decodes at the {where}", len(packets), len(points), decoded)
                decoded += got
    except av.error.FFmpegError as exc:
        return failed(f"a sampled decode failed: {exc}", len(packets), len(points), decoded)
    return JoinedVerification(passed=True, problem=None, packets=len(packets), sampled_points=len(points),
                              decoded_frames=decoded)
