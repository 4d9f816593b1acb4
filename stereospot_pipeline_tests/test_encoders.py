"""Output encoders: real encodes of each codec and bit depth, decoded and checked."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from stereospot_pipeline.media.encoders import EncoderKind, VideoCodec, choose_encoder, encoder_opens


def _encode(path: Path, encoder, frames: int = 6, size=(128, 64)) -> None:
    w, h = size
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(encoder.name, rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, encoder.pix_fmt
        stream.options = encoder.options
        for i in range(frames):
            rgb = np.zeros((h, w, 3), np.uint8)
            rgb[:, (i * 8) % w:] = (200, 100, 50)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=encoder.pix_fmt)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.mark.parametrize("codec", list(VideoCodec))
@pytest.mark.parametrize("bit_depth", [8, 10])
def test_software_encoders_write_the_codec_and_depth_asked_for(tmp_path, codec, bit_depth):
    encoder = choose_encoder(codec, EncoderKind.SOFTWARE, bit_depth=bit_depth)
    assert encoder.fallback is None and not encoder.hardware
    out = tmp_path / f"{codec.value}-{bit_depth}.mp4"
    _encode(out, encoder)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        decoded = list(container.decode(stream))
        assert stream.codec_context.name in {VideoCodec.H264: ("h264",), VideoCodec.HEVC: ("hevc",),
                                              VideoCodec.AV1: ("av1", "libdav1d", "libaom-av1")}[codec]
        assert len(decoded) == 6
        assert decoded[0].format.name == ("yuv420p10le" if bit_depth == 10 else "yuv420p")


def test_nvenc_is_used_only_where_it_opens():
    for codec in VideoCodec:
        encoder = choose_encoder(codec, EncoderKind.NVENC)
        if encoder_opens(f"{codec.value}_nvenc", "yuv420p"):
            assert encoder.hardware and encoder.fallback is None
        else:
            # The software encoder of the same codec, and the reason, for the run's metadata.
            assert not encoder.hardware and encoder.codec is codec
            assert f"{codec.value}_nvenc cannot open here" in encoder.fallback


def test_h264_carries_the_frame_packing_sei_and_colour_tags(tmp_path):
    encoder = choose_encoder(VideoCodec.H264, EncoderKind.SOFTWARE, frame_packing=3,
                             colour={"colorprim": "bt709", "transfer": "bt709", "colormatrix": "bt709"})
    out = tmp_path / "packed.mp4"
    _encode(out, encoder)
    with av.open(str(out)) as container:
        ctx = container.streams.video[0].codec_context
        frame = next(container.decode(video=0))
        assert (frame.color_primaries, frame.color_trc, frame.colorspace) == (1, 1, 1)  # BT.709
        assert ctx.name == "h264"
        # The decoder found the frame-packing SEI and reports the stereo packing.
        assert "STEREO3D" in {sd.type.name for sd in frame.side_data}


def test_bad_settings_say_what_is_allowed():
    with pytest.raises(ValueError, match="bit depth 12"):
        choose_encoder(bit_depth=12)
    with pytest.raises(ValueError, match="preset 'warp'"):
        choose_encoder(preset="warp")
