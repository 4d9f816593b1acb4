"""Verification that scales with the video's length.

Each stereo segment is decoded in full once, in its own step, on the worker that just encoded it:
that is where the work is parallel. The writer hands every packet it muxes to an
``EncodedStream``, which decodes it there and then and keeps the digest of its coded units;
``verify_written`` then demuxes the file without decoding it and proves it holds exactly those
packets. ``verify_segment`` decodes a file already written (a segment stored before this
existed). Either way the segment's packets are fingerprinted. The joined file is then checked
without decoding it again (``verify_joined``): its packet index must hold exactly the verified
segments' packets, byte for byte, in order, and sampled decodes at every seam (the only place the
join itself can break decoding: the joined file carries the first segment's codec setup) plus a
few points between prove the decoder accepts them there. A segment corrupted or cut after its
verification, a lost or extra packet, or a seam the decoder rejects all fail.
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


# The decoder that reads what each encoder writes (FFmpeg's own AV1 decoder needs a GPU).
_DECODERS = {"h264": "h264", "hevc": "hevc", "av1": "libdav1d"}
# The in-loop filters change no syntax the decoder checks, only pixels nobody looks at here:
# skipping them makes the check's decode about 40% cheaper.
_DECODER_OPTIONS = {"h264": {"skip_loop_filter": "all"}, "hevc": {"skip_loop_filter": "all"}, "av1": {}}
# Units a muxer may drop from the samples: in-band parameter sets (the sample description holds
# them; MP4's hvc1 must not carry them) and AV1's temporal delimiters, redundant frame headers,
# tile lists and padding, which ISO BMFF leaves out.
_DROPPED_NAL = {"h264": {7, 8}, "hevc": {32, 33, 34}}
_DROPPED_OBU = {2, 7, 8, 15}


def coded_units(data: bytes, codec: str, annex_b: bool) -> list[bytes]:
    """The units of one access unit that the file must carry unchanged, framing removed. H.264
    and HEVC encoders write start codes (``annex_b``), MP4 holds 4-byte length prefixes; the
    framing is told, not guessed: a length of 256 to 511 bytes begins like a start code. AV1 is
    OBUs either way, some of which MP4 leaves out."""
    if codec == "av1":
        return _obus(data)
    if annex_b:
        # A NAL unit never ends in a zero byte: zeros before a start code belong to it.
        units = [u.rstrip(b"\x00") for u in data.split(b"\x00\x00\x01")]
    else:
        units, at = [], 0
        while at + 4 <= len(data):
            length = int.from_bytes(data[at:at + 4], "big")
            units.append(data[at + 4:at + 4 + length])
            at += 4 + length
        if at != len(data):
            raise ValueError(f"a {len(data)}-byte {codec} sample whose NAL unit lengths do not add up")
    header = (lambda u: u[0] & 0x1F) if codec == "h264" else (lambda u: (u[0] >> 1) & 0x3F)
    return [u for u in units if u and header(u) not in _DROPPED_NAL[codec]]


def _obus(data: bytes) -> list[bytes]:
    obus, at = [], 0
    while at < len(data):
        start, header = at, data[at]
        at += 2 if header & 0x04 else 1  # the extension byte
        if not header & 0x02:  # no size field: the OBU runs to the end of the sample
            size = len(data) - at
        else:
            size = shift = 0
            while True:
                byte = data[at]
                at += 1
                size |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
        at += size
        if (header >> 3) & 0x0F not in _DROPPED_OBU:
            obus.append(data[start:at])
    if at != len(data):
        raise ValueError(f"a {len(data)}-byte AV1 sample whose OBU sizes do not add up")
    return obus


def _units_digest(data: bytes, codec: str, annex_b: bool) -> bytes:
    h = hashlib.sha256()
    for unit in coded_units(data, codec, annex_b):
        h.update(len(unit).to_bytes(4, "big") + unit)
    return h.digest()


class EncodedStream:
    """What one writer encoded, packet by packet: each is decoded as it leaves the encoder and
    the digest of its coded units kept, for ``verify_written``. Raises
    ``SegmentVerificationError`` from ``add`` when a packet does not decode."""

    def __init__(self, path: Path, codec: str):
        self.path, self.codec = path, codec
        self.digests: list[bytes] = []
        self.frames = 0
        self.sizes: set[tuple[int, int]] = set()
        self._decoder = None

    def add(self, data: bytes, extradata: bytes | None) -> None:
        if self._decoder is None:
            self._decoder = av.CodecContext.create(_DECODERS[self.codec], "r")
            self._decoder.extradata = extradata
            self._decoder.options = dict(_DECODER_OPTIONS[self.codec])
        self.digests.append(_units_digest(data, self.codec, annex_b=True))
        self._decode(av.Packet(data))

    def close(self) -> None:
        if self._decoder is not None:
            self._decode(None)  # the decoder's delayed frames

    def _decode(self, packet) -> None:
        try:
            for frame in self._decoder.decode(packet):
                self.frames += 1
                self.sizes.add((frame.width, frame.height))
        except av.error.FFmpegError as exc:
            raise SegmentVerificationError(
                self.path, f"stereo segment does not decode after {self.frames} frames: {exc}") from exc


def verify_written(path: Path, encoded: EncodedStream, expected_frames: int,
                   size: tuple[int, int]) -> SegmentVerification:
    """Prove the file at ``path`` holds exactly the packets ``encoded`` decoded, in order, by
    demuxing it (no decode); raises ``SegmentVerificationError`` naming the problem (frame count,
    frame size, a packet lost, changed or added between encoder and disk)."""
    if encoded.sizes != {tuple(size)}:
        got = ", ".join(f"{w}x{h}" for w, h in sorted(encoded.sizes))
        raise SegmentVerificationError(path, f"stereo segment decodes at {got}, expected {size[0]}x{size[1]}")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            packets = [bytes(pkt) for pkt in container.demux(stream) if pkt.size]
    except av.error.FFmpegError as exc:
        raise SegmentVerificationError(path, f"stereo segment cannot be read back: {exc}") from exc
    if len(packets) != len(encoded.digests):
        raise SegmentVerificationError(path, f"stereo segment holds {len(packets)} video packets, "
                                             f"{len(encoded.digests)} were encoded")
    for number, (data, digest) in enumerate(zip(packets, encoded.digests), 1):
        try:
            same = _units_digest(data, encoded.codec, annex_b=False) == digest
        except (ValueError, IndexError):  # its unit sizes run past the sample
            same = False
        if not same:
            raise SegmentVerificationError(path, f"packet {number} of the written segment is not the one "
                                                 f"encoded ({len(packets)} were encoded)")
    return _verified(path, encoded.frames, [hashlib.sha256(data).digest() for data in packets], (width, height),
                     expected_frames, size)


def _verified(path: Path, decoded: int, digests: list[bytes], coded: tuple[int, int], expected_frames: int,
              size: tuple[int, int]) -> SegmentVerification:
    """The verification of a segment of ``decoded`` frames whose packets have ``digests``, at the
    ``coded`` size; raises ``SegmentVerificationError`` where it is not what was encoded."""
    if decoded != expected_frames or len(digests) != expected_frames:
        raise SegmentVerificationError(path, f"stereo segment has {decoded} decodable frames in {len(digests)} "
                                             f"packets, {expected_frames} were encoded")
    if coded != tuple(size):
        raise SegmentVerificationError(path, f"stereo segment is {coded[0]}x{coded[1]}, expected {size[0]}x{size[1]}")
    h = hashlib.sha256()
    for digest in digests:
        h.update(digest)
    return SegmentVerification(frames=decoded, packets=len(digests), width=coded[0], height=coded[1],
                               packet_digest=h.hexdigest())


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
    return _verified(path, decoded, digests, (width, height), expected_frames, size)


def verify_joined(path: Path, segments: list[dict]) -> JoinedVerification:
    """``segments``: in order, each with ``packets`` and ``packet_digest`` of its
    ``SegmentVerification``."""
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
