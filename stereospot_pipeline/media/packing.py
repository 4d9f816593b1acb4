"""How an output tells players that its frames hold two eyes, for every codec it can be.

- In the bitstream: the frame-packing arrangement SEI. x264 writes it itself; x265 and NVENC
  cannot, so the writer adds it to their keyframes (``with_sei``). AV1 has no such message.
- In the container: the stereoscopic 3D box ``st3d`` of Google's Spherical Video V2 (read by
  YouTube, ExoPlayer-based players and libavformat) in the video sample entry, with the
  half-sphere projection box ``sv3d`` for VR180 (``add_st3d``).

A video is told one way only (``render.packing_in_bitstream`` chooses): ffmpeg's own tools refuse
to decode one that says it in both. Players that read neither go by the file-name suffix
(``LAYOUT_SUFFIX``).
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import tempfile
from enum import IntEnum
from pathlib import Path

log = logging.getLogger(__name__)


class Packing(IntEnum):
    """frame_packing_arrangement_type of H.264/HEVC."""

    SIDE_BY_SIDE = 3
    TOP_BOTTOM = 4


# st3d's stereo_mode: 1 top-bottom, 2 left-right.
_ST3D_MODE = {Packing.TOP_BOTTOM: 1, Packing.SIDE_BY_SIDE: 2}
_SEI_NAL = {"h264": bytes([6]), "hevc": bytes([39 << 1, 1])}  # HEVC: prefix SEI, layer 0, temporal id 0
_FRAME_PACKING_PAYLOAD = 45


def frame_packing_sei(codec: str, packing: Packing) -> bytes:
    """One SEI NAL unit (no start code) of ``codec`` ("h264" or "hevc") with a frame-packing
    arrangement (H.264 D.1.26, H.265 D.2.16): frame 0 is the left eye, no flipping, persisting
    until the next one."""
    bits = "1"  # frame_packing_arrangement_id = 0, ue(v)
    bits += "0"  # cancel_flag
    bits += f"{int(packing):07b}"
    bits += "0"  # quincunx_sampling_flag
    bits += f"{1:06b}"  # content_interpretation_type: frame 0 is the left view
    bits += "000000"  # spatial_flipping, frame0_flipped, field_views, current_frame_is_frame0, frame0/1 self-contained
    bits += "0" * 16  # frame0/frame1 grid positions
    bits += "0" * 8  # reserved byte
    # H.264: repetition_period = 1 (ue(v)), extension_flag; HEVC: persistence and upsampled-aspect flags.
    bits += "0100" if codec == "h264" else "10"
    if len(bits) % 8:
        bits += "1" + "0" * (7 - len(bits) % 8)  # payload alignment: a one bit, then zeros
    payload = int(bits, 2).to_bytes(len(bits) // 8, "big")
    rbsp = bytes([_FRAME_PACKING_PAYLOAD, len(payload)]) + payload + b"\x80"
    return _SEI_NAL[codec] + _emulation_prevented(rbsp)


def _emulation_prevented(rbsp: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _is_picture(codec: str, header: int) -> bool:
    """Whether a NAL unit whose first byte is ``header`` holds a picture slice (VCL)."""
    return 1 <= header & 0x1F <= 5 if codec == "h264" else (header >> 1) & 0x3F < 32


def with_sei(data: bytes, sei: bytes, codec: str) -> bytes:
    """An encoder's access unit (Annex B: start-code delimited NAL units) with ``sei`` before its
    first picture slice, where SEI messages belong."""
    at = data.find(b"\x00\x00\x01")
    while at >= 0:
        begin = at - 1 if at and data[at - 1] == 0 else at  # a four-byte start code
        if at + 3 < len(data) and _is_picture(codec, data[at + 3]):
            return data[:begin] + b"\x00\x00\x00\x01" + sei + data[begin:]
        at = data.find(b"\x00\x00\x01", at + 3)
    raise ValueError(f"no picture in a {len(data)}-byte {codec} packet: not an Annex B access unit")


_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}
_VIDEO_ENTRIES = {b"avc1", b"avc3", b"hvc1", b"hev1", b"av01", b"vp09"}
_VISUAL_ENTRY_FIELDS = 78  # VisualSampleEntry's fixed fields before its child boxes


def _box(kind: bytes, body: bytes, full: bool = True) -> bytes:
    body = bytes(4) + body if full else body  # version 0, flags 0
    return struct.pack(">I4s", 8 + len(body), kind) + body


def stereo_boxes(packing: Packing, half_sphere: bool = False) -> bytes:
    """``st3d`` and, for VR180 (each eye an equirectangular half sphere), the ``sv3d`` that maps it:
    an equirectangular projection cropped to its middle half (bounds are 0.32 fixed-point
    fractions of the full 360 x 180 degree frame cut off each side)."""
    boxes = _box(b"st3d", bytes([_ST3D_MODE[packing]]))
    if half_sphere:
        header = _box(b"svhd", b"stereospot\x00")
        pose = _box(b"prhd", struct.pack(">iii", 0, 0, 0))
        equi = _box(b"equi", struct.pack(">IIII", 0, 0, 1 << 30, 1 << 30))  # top, bottom, left, right
        boxes += _box(b"sv3d", header + _box(b"proj", pose + equi, full=False), full=False)
    return boxes


def add_st3d(path: Path, packing: Packing, half_sphere: bool = False) -> bool:
    """Rewrite the MP4 at ``path`` (atomically) with the ``stereo_boxes`` in each video sample entry.
    Chunk offsets after the movie box move by the bytes added. Returns False, leaving the file
    as it was, where that is impossible (a 32-bit chunk offset would overflow: the box is a
    convenience, and the file name still says the packing)."""
    box = stereo_boxes(packing, half_sphere)
    with open(path, "rb") as src:
        boxes = list(_top_level(src))
        moov = next((b for b in boxes if b[1] == b"moov"), None)
        if moov is None:
            raise ValueError(f"{path} has no movie box (moov): it is not a finished MP4")
        start, _, size = moov
        src.seek(start)
        old = src.read(size)
        _, grown = _with_box(old, box, shift=0)
        # The data of a faststart file follows its movie box, and moves with it.
        data_after = any(offset > start for offset, kind, _ in boxes if kind == b"mdat")
        new, _ = _with_box(old, box, shift=grown if data_after else 0)
        if new is None:
            log.warning("%s: chunk offsets would pass 4 GiB with the stereo box added; written without it", path)
            return False
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as dst:
                src.seek(0)
                _copy(src, dst, start)
                dst.write(new)
                src.seek(start + size)
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    return True


def _copy(src, dst, length: int) -> None:
    while length > 0:
        chunk = src.read(min(length, 1 << 20))
        if not chunk:
            raise ValueError("the file ended inside a box")
        dst.write(chunk)
        length -= len(chunk)


def _top_level(f):
    """(offset, type, size) of each top-level box."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    at = 0
    while at + 8 <= end:
        f.seek(at)
        size, kind = struct.unpack(">I4s", f.read(8))
        if size == 1:
            size = struct.unpack(">Q", f.read(8))[0]
        elif size == 0:
            size = end - at
        if size < 8:
            raise ValueError(f"a box of {size} bytes at {at}: the file is damaged")
        yield at, kind, size
        at += size


def _children(data: bytes, start: int):
    at = start
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        if size < 8 or at + size > len(data):
            raise ValueError(f"box {kind!r} runs past its parent: the movie box is damaged")
        yield kind, data[at:at + size]
        at += size


def _with_box(box: bytes, st3d: bytes, shift: int) -> tuple[bytes | None, int]:
    """``box`` rebuilt with ``st3d`` in its video sample entries and its chunk offsets moved by
    ``shift`` -> (the box, or None where an offset would overflow; the bytes it grew by)."""
    kind = box[4:8]
    if kind in _CONTAINERS:
        parts, grown = [], 0
        for _, child in _children(box, 8):
            new, g = _with_box(child, st3d, shift)
            if new is None:
                return None, 0
            parts.append(new)
            grown += g
        body = b"".join(parts)
        return struct.pack(">I4s", 8 + len(body), kind) + body, grown
    if kind == b"stsd":
        entries, grown = [], 0
        for entry_kind, entry in _children(box, 16):
            if entry_kind in _VIDEO_ENTRIES and len(entry) >= 8 + _VISUAL_ENTRY_FIELDS:
                entry = struct.pack(">I", len(entry) + len(st3d)) + entry[4:] + st3d
                grown += len(st3d)
            entries.append(entry)
        body = box[8:16] + b"".join(entries)
        return struct.pack(">I4s", 8 + len(body), kind) + body, grown
    if kind in (b"stco", b"co64") and shift:
        count = struct.unpack(">I", box[12:16])[0]
        fmt = f">{count}{'I' if kind == b'stco' else 'Q'}"
        offsets = [o + shift for o in struct.unpack(fmt, box[16:16 + struct.calcsize(fmt)])]
        if kind == b"stco" and offsets and max(offsets) > 0xFFFFFFFF:
            return None, 0
        return box[:16] + struct.pack(fmt, *offsets), 0
    return box, 0
