"""Players are told how the eyes are packed, for every codec, once: the frame-packing SEI in H.264
and HEVC keyframes (found by libavcodec's own decoder), the st3d box in the MP4 for AV1 and VR180
(found by libavformat, the bundled ffmpeg), with the pictures and timing unchanged."""

from __future__ import annotations

import dataclasses
import re
import struct
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from stereospot_pipeline.media.codec import VideoWriter
from stereospot_pipeline.media.encoders import EncoderKind, VideoCodec, choose_encoder
from stereospot_pipeline.media.mux import concat_and_mux
from stereospot_pipeline.media.packing import Packing, add_st3d, frame_packing_sei
from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline.render import FRAME_PACKING, container_packing, packing_in_bitstream
from stereospot_pipeline.stereo.params import Layout
from stereospot_pipeline_tests.clips import make_clip
from stereospot_pipeline_tests.support.ffmpeg import ffmpeg_report

# AVStereo3DType of the frame side data.
_AV_TYPE = {Packing.SIDE_BY_SIDE: 1, Packing.TOP_BOTTOM: 2}
_FFMPEG_SAYS = {Packing.SIDE_BY_SIDE: "Stereo 3D: side by side", Packing.TOP_BOTTOM: "Stereo 3D: top and bottom"}


def _segments(tmp_path: Path, codec: VideoCodec, packing: Packing | None, count: int = 2) -> list[Path]:
    """``count`` half-second segments on one timeline, written as the stereo step writes them
    (the frame-packing SEI in them where ``packing`` is given and the codec has one)."""
    encoder = choose_encoder(codec, EncoderKind.SOFTWARE, preset="ultrafast", frame_packing=packing)
    parts = []
    for s in range(count):
        parts.append(tmp_path / f"{codec.value}-{packing}-{s}.mp4")
        with VideoWriter(parts[-1], 128, 64, Fraction(1, 10), encoder=encoder, rate=Fraction(10)) as writer:
            for i in range(5):
                y = np.full((96, 128), 16, np.uint8)
                y[:64, (s * 5 + i) * 6 % 128:] = 200
                y[64:] = 128
                writer.write(y, s * 5 + i)
    return parts


def _kinds(frames) -> list[set[int]]:
    return [{struct.unpack("<i", bytes(sd)[:4])[0] for sd in f.side_data if sd.type.name == "STEREO3D"}
            for f in frames]


def _frames(path: Path) -> tuple[list[np.ndarray], list[int], list[set[int]]]:
    """Pictures, timestamps and the stereo types reported for each frame (from the bitstream
    or, as libavcodec passes the container's on, the container)."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [f.to_ndarray(format="gray") for f in frames], [f.pts for f in frames], _kinds(frames)


def _bitstream_kinds(path: Path) -> list[set[int]]:
    """The stereo types a decoder finds in the bitstream alone, without the container."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoder = av.CodecContext.create(stream.codec_context.name, "r")
        decoder.extradata = stream.codec_context.extradata
        frames = [f for p in container.demux(stream) if p.size for f in decoder.decode(p)]
    return _kinds(frames + decoder.decode(None))


def _ffmpeg_decodes(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "framemd5", "-"],
                          capture_output=True, text=True, timeout=120)


def _convert(tmp_path: Path, codec: VideoCodec, layout: Layout) -> tuple[Path, Path]:
    """The joined video of ``layout`` as the pipeline tells its packing, and the same without."""
    source = make_clip(tmp_path / "src.mp4", seconds=1.0, size="128x64", fps=10)
    info = probe_video(source)
    plain, told = tmp_path / "plain.mp4", tmp_path / "told.mp4"
    concat_and_mux(_segments(tmp_path, codec, None), source, info, plain)
    sei = FRAME_PACKING[layout] if packing_in_bitstream(layout, codec) else None
    concat_and_mux(_segments(tmp_path, codec, sei), source, info, told, packing=container_packing(layout, codec),
                   half_sphere=layout is Layout.VR180)
    return plain, told


@pytest.mark.parametrize("codec", list(VideoCodec))
@pytest.mark.parametrize("layout", [Layout.FULL_SBS, Layout.HALF_TB])
def test_the_joined_video_says_its_packing_once(tmp_path, codec, layout):
    """Flat layouts: in the bitstream where the codec can (H.264, HEVC), else in the container
    (AV1); never both, which ffmpeg's own tools refuse to decode. Pictures and timing unchanged."""
    packing = FRAME_PACKING[layout]
    plain, told = _convert(tmp_path, codec, layout)
    assert _ffmpeg_decodes(told).returncode == 0, _ffmpeg_decodes(told).stderr
    pictures, times, kinds = _frames(told)
    plain_pictures, plain_times, plain_kinds = _frames(plain)
    assert times == plain_times and len(times) == 10
    assert all(np.array_equal(a, b) for a, b in zip(pictures, plain_pictures))
    assert not any(plain_kinds)
    # What a player learns, whichever way it is told: from the first frame on, nothing else.
    assert kinds[0] == kinds[5] == {_AV_TYPE[packing]} and all(k <= {_AV_TYPE[packing]} for k in kinds), kinds
    in_bitstream = _bitstream_kinds(told)
    report = ffmpeg_report(told)
    data = told.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # still streamable from the start
    if codec is VideoCodec.AV1:
        assert not any(in_bitstream)  # AV1 has no such message: the container alone says it
        assert _FFMPEG_SAYS[packing] in report, report
    else:
        # On each segment's keyframe (x264 sends it there; ours persists to the next), not in the container.
        assert in_bitstream[0] == in_bitstream[5] == {_AV_TYPE[packing]}, in_bitstream
        assert all(k <= {_AV_TYPE[packing]} for k in in_bitstream)
        assert b"st3d" not in data
    assert "Spherical" not in report  # a flat screen's video, not a VR180 one
    with av.open(str(told)) as container:
        assert len(container.streams.audio) == 1


@pytest.mark.parametrize("codec", [VideoCodec.H264, VideoCodec.AV1])
def test_vr180_says_each_eye_is_a_half_sphere(tmp_path, codec):
    _, told = _convert(tmp_path, codec, Layout.VR180)
    assert _ffmpeg_decodes(told).returncode == 0
    report = ffmpeg_report(told)
    # 180 of 360 degrees: a quarter of the full sphere's width cut off each side (in pixels of this frame).
    assert "Stereo 3D: side by side" in report
    assert re.search(r"Spherical Mapping: tiled equirectangular \[6[3-5], 0, 6[3-5], 0\]", report), report
    assert not any(_bitstream_kinds(told))  # told once: the container


@pytest.mark.parametrize("codec, header", [("h264", b"\x06"), ("hevc", b"\x4e\x01")])
def test_the_sei_is_escaped_as_the_bitstream_requires(codec, header):
    nal = frame_packing_sei(codec, Packing.SIDE_BY_SIDE)
    assert nal.startswith(header)
    body = nal[len(header):]
    assert all(body[i:i + 3] not in (b"\x00\x00\x00", b"\x00\x00\x01", b"\x00\x00\x02") for i in range(len(body) - 2))
    assert body[0] == 45 and body[-1] == 0x80  # the frame-packing payload, then the stop bit


def test_our_h264_sei_is_read_as_x264s_is(tmp_path):
    """NVENC writes no frame-packing SEI, so the writer adds ours to its H.264 too: here to
    libx264's stream with x264's own message taken out."""
    encoder = choose_encoder(VideoCodec.H264, EncoderKind.SOFTWARE, preset="ultrafast")
    assert "x264-params" not in encoder.options and encoder.packing_sei is None
    encoder = dataclasses.replace(encoder, packing_sei=Packing.TOP_BOTTOM)
    path = tmp_path / "ours.mp4"
    with VideoWriter(path, 128, 64, Fraction(1, 10), encoder=encoder, rate=Fraction(10)) as writer:
        for i in range(5):
            writer.write(np.full((96, 128), 16 + 40 * i, np.uint8), i)
    kinds = _bitstream_kinds(path)
    assert len(kinds) == 5 and kinds[0] == {_AV_TYPE[Packing.TOP_BOTTOM]}


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _movie(offset: int) -> bytes:
    """A minimal faststart MP4: one video sample entry and one chunk at ``offset``."""
    entry = _box(b"avc1", bytes(78))
    stsd = _box(b"stsd", bytes(4) + struct.pack(">I", 1) + entry)
    stco = _box(b"stco", bytes(4) + struct.pack(">II", 1, offset))
    moov = _box(b"moov", _box(b"trak", _box(b"mdia", _box(b"minf", _box(b"stbl", stsd + stco)))))
    return _box(b"ftyp", b"isom" + bytes(4)) + moov + _box(b"mdat", b"frame")


def test_chunk_offsets_move_with_the_box_and_an_overflow_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "small.mp4"
    path.write_bytes(_movie(1000))
    assert add_st3d(path, Packing.TOP_BOTTOM)
    data = path.read_bytes()
    assert data[data.index(b"st3d") - 4:data.index(b"st3d") + 9] == struct.pack(">I4sIB", 13, b"st3d", 0, 1)
    assert struct.unpack(">I", data[data.index(b"stco") + 12:data.index(b"stco") + 16])[0] == 1013
    assert len(data) == len(_movie(1000)) + 13

    near = tmp_path / "near-4gib.mp4"
    near.write_bytes(before := _movie(0xFFFFFFF8))  # an stco offset 7 bytes short of 4 GiB
    assert not add_st3d(near, Packing.SIDE_BY_SIDE)
    assert near.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["near-4gib.mp4", "small.mp4"]  # no temporary left
