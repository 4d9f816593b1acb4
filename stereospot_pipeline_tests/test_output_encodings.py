"""Every output encoding through the whole pipeline (real encodes, outputs decoded back): H.264,
HEVC and AV1 at 8 and 10 bits, the NVIDIA encoders' recorded fallback, the player-limit policy
scaling each eye, and HDR (PQ, HLG) kept 10-bit with its tags and HDR10 metadata."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import imageio_ffmpeg
import pytest

from stereospot_pipeline.media.encoders import encoder_opens
from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline.stereo.params import StereoParams
from stereospot_pipeline_tests.clips import stereo_types
from stereospot_pipeline_tests.conftest import convert, metadata, outbox_file
from stereospot_pipeline_tests.matrix import _tagged, video_in
from stereospot_pipeline_tests.support.ffmpeg import ffmpeg, ffmpeg_report

DECODERS = {"h264": "h264", "hevc": "hevc", "av1": "av1"}
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
MASTER = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"


def _sdr_clip(path: Path) -> Path:
    ffmpeg(*video_in(), *_tagged("bt709", "bt709", "bt709"), str(path))
    return path


def _hdr_clip(path: Path, transfer: str) -> Path:
    """10-bit HEVC BT.2020 with ``transfer``, mastering display and content light level."""
    ffmpeg(*video_in(), "-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-color_primaries", "bt2020",
           "-color_trc", transfer, "-colorspace", "bt2020nc", "-x265-params",
           f"log-level=error:colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc:"
           f"master-display={MASTER}:max-cll=1000,400", "-tag:v", "hvc1", str(path))
    return path


def _stream_facts(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        frame = next(container.decode(stream))
        return {"codec": ctx.codec.name, "tag": stream.codec_tag, "pix_fmt": ctx.pix_fmt, "width": frame.width,
                "height": frame.height, "primaries": frame.color_primaries, "trc": frame.color_trc,
                "matrix": frame.colorspace, "frames": stream.frames}


def _output(settings, stem: str) -> Path:
    return outbox_file(Path(settings.url(settings.outbox_url, "outbox")), stem)


@pytest.mark.parametrize("codec, bit_depth", [("h264", 8), ("h264", 10), ("hevc", 8), ("hevc", 10),
                                              ("av1", 8), ("av1", 10)])
def test_each_codec_and_bit_depth_is_written_and_joined(instance, resources, settings, tmp_path, codec, bit_depth):
    """Two segments per video, so the join by packet copy is exercised for every codec."""
    src = _sdr_clip(tmp_path / f"clip_{codec}{bit_depth}.mp4")
    params = StereoParams(depth_model="heuristic", codec=codec, bit_depth=bit_depth, encoder="nvenc")
    _, result = convert(instance, resources, src, segment_seconds=0.5, params=params)
    assert result.success
    facts = _stream_facts(_output(settings, src.stem))
    assert DECODERS[codec] in facts["codec"] or (codec == "av1" and facts["codec"] == "libdav1d")
    assert facts["pix_fmt"] == ("yuv420p10le" if bit_depth == 10 else "yuv420p")
    assert (facts["width"], facts["height"]) == (192, 64) and facts["frames"] == 10
    assert (facts["primaries"], facts["trc"], facts["matrix"]) == (1, 1, 1)  # BT.709 carried through
    if codec == "hevc":
        assert facts["tag"] == "hvc1"  # Apple's and the Quest's players need it
    # The packing is told once (render.packing_in_bitstream): an SEI, or for AV1 the st3d box.
    out = _output(settings, src.stem)
    assert ("Stereo 3D: side by side" in ffmpeg_report(out)) is (codec == "av1")
    assert stereo_types(out) == {1}  # side by side, as a decoder reports it either way
    assert subprocess.run([FFMPEG, "-v", "error", "-i", str(out), "-f", "null", "-"]).returncode == 0
    stereo, final = metadata(result, "stereo_segments"), metadata(result, "final_video")
    software = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}[codec]
    assert final["codec"] == codec and final["bit_depth"] == bit_depth
    if encoder_opens(f"{codec}_nvenc", "p010le" if bit_depth == 10 else "yuv420p"):
        assert stereo["encoder"] == f"{codec}_nvenc", "NVENC opens here and must be used"
    else:
        # No NVIDIA encoder opens here: the software encoder wrote it, and the reason is recorded.
        assert stereo["encoder"] == final["encoder"] == software
        assert f"{codec}_nvenc cannot open here" in stereo["encoder_fallback"]
    assert stereo["player_limits"] == "fits"


def test_auto_codec_and_player_limits_scale_each_eye(instance, resources, settings, tmp_path):
    """codec=auto keeps H.264 while the frame fits; a player limit of 128 px scales each eye
    96x64 -> 64x42 (aspect kept, even), decoded at that size, and the geometry check agrees."""
    src = _sdr_clip(tmp_path / "limited.mp4")
    params = StereoParams(depth_model="heuristic", encoder="software", max_output_width=128)
    _, result = convert(instance, resources, src, params=params)
    assert result.success
    facts = _stream_facts(_output(settings, src.stem))
    assert facts["codec"] == "h264" and (facts["width"], facts["height"]) == (128, 42)
    stereo = metadata(result, "stereo_segments")
    assert "each eye scaled 96x64 -> 64x42" in stereo["player_limits"]
    assert stereo["encoder_fallback"].startswith("none")
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["layout_geometry"] is True


@pytest.mark.parametrize("layout, suffix, types, says", [
    ("half-tb", "_TB", {2}, []),
    ("vr180", "_180x180_3dh_LR", {1}, ["Stereo 3D: side by side", "Spherical Mapping: tiled equirectangular"]),
    ("cross-eyed", "_RLF_cross", set(), []),
    ("anaglyph", "_redcyan", set(), []),
])
def test_players_are_told_the_layout(instance, resources, settings, tmp_path, layout, suffix, types, says):
    """Packed layouts say their packing (H.264: the SEI; VR180: st3d and the half-sphere sv3d in
    the MP4); cross-eyed and anaglyph claim none, which a player would show wrong."""
    src = _sdr_clip(tmp_path / f"told_{layout}.mp4")
    _, result = convert(instance, resources, src, params=StereoParams(depth_model="heuristic", layout=layout))
    assert result.success
    out = outbox_file(Path(settings.url(settings.outbox_url, "outbox")), src.stem, suffix)
    report = ffmpeg_report(out)
    assert stereo_types(out) == types
    assert all(s in report for s in says), report
    if not says:
        assert "Spherical" not in report
    assert subprocess.run([FFMPEG, "-v", "error", "-i", str(out), "-f", "null", "-"]).returncode == 0


@pytest.mark.parametrize("transfer, code", [("smpte2084", 16), ("arib-std-b67", 18)])
def test_hdr_kept_on_request(instance, resources, settings, tmp_path, monkeypatch, transfer, code):
    monkeypatch.setenv("STEREOSPOT_HDR", "keep")
    src = _hdr_clip(tmp_path / f"hdr_{code}.mp4", transfer)
    _, result = convert(instance, resources, src, params=StereoParams(depth_model="heuristic"))
    assert result.success
    out = _output(settings, src.stem)
    facts = _stream_facts(out)
    assert facts["codec"] == "hevc" and facts["pix_fmt"] == "yuv420p10le" and facts["tag"] == "hvc1"
    assert (facts["primaries"], facts["trc"], facts["matrix"]) == (9, code, 9)
    colour = probe_video(out).colour
    assert colour.mastering_display == MASTER and colour.content_light == "1000,400"
    stereo = metadata(result, "stereo_segments")
    assert stereo["codec"] == "hevc" and stereo["bit_depth"] == 10 and "HDR" in stereo["player_limits"]


def test_hdr_kept_keeps_ten_bits_from_decoder_to_encoder(instance, resources, settings, tmp_path, monkeypatch):
    """A 10-bit PQ ramp (one code value per column, 256 of them) through the pipeline, eyes not
    moved: the output keeps nearly every level. Through 8 bits it would keep a quarter (a
    staircase of steps of 4), banding that PQ makes visible."""
    monkeypatch.setenv("STEREOSPOT_HDR", "keep")
    src = tmp_path / "ramp.mp4"
    ffmpeg("-f", "lavfi", "-i", "nullsrc=s=256x64:r=10:d=1", "-vf", "format=yuv420p10le,geq=lum='300+X':cb=512:cr=512",
           "-c:v", "libx265", "-x265-params", "log-level=error:lossless=1:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc",
           "-pix_fmt", "yuv420p10le",
           "-color_primaries", "bt2020", "-color_trc", "smpte2084", "-colorspace", "bt2020nc", "-tag:v", "hvc1", str(src))
    with av.open(str(src)) as container:
        source_row = next(container.decode(video=0)).to_ndarray()[32, :256].astype(int)
    assert len(set(source_row)) == 256  # the source: every level of 300..555
    params = StereoParams(depth_model="heuristic", divergence=0.0, convergence=0.0, crf=4, preset="fast")
    _, result = convert(instance, resources, src, params=params)
    assert result.success
    with av.open(str(_output(settings, src.stem))) as container:
        frame = next(container.decode(video=0))
        assert frame.format.name == "yuv420p10le"
        left_row = frame.to_ndarray()[32, 16:240].astype(int)  # the left eye, away from its borders
    assert len(set(left_row)) > 180, sorted(set(left_row))
    assert abs(left_row - source_row[16:240]).max() <= 3


def test_hdr_kept_refuses_h264(instance, resources, settings, tmp_path, monkeypatch):
    monkeypatch.setenv("STEREOSPOT_HDR", "keep")
    src = _hdr_clip(tmp_path / "hdr_h264.mp4", "smpte2084")
    _, result = convert(instance, resources, src, params=StereoParams(depth_model="heuristic", codec="h264"))
    assert not result.success
    assert not list(Path(settings.url(settings.outbox_url, "outbox")).glob("*"))


def test_depth_sees_hdr_kept_frames_tone_mapped():
    """PQ code values read as SDR look washed out; the analysis frames of HDR kept are mapped
    to SDR BT.709: PQ black stays black, 100-nit white (PQ code 0.508) lands near SDR's upper
    mid-tones, and 1000-nit highlights near white."""
    import torch

    from stereospot_pipeline.stereo.convert import analysis_frames
    from stereospot_pipeline.stereo.planes import PixelFormat
    from stereospot_pipeline.stereo.tonemap import PQ, sdr_view

    grey = torch.tensor([0.0, 0.508, 0.752]).view(3, 1, 1, 1).expand(3, 3, 4, 4)
    mapped = sdr_view(grey, PQ)[:, 0, 0, 0]
    assert mapped[0] < 0.02 and 0.35 < mapped[1] < 0.75 and mapped[2] > 0.9
    # Through the engine's own analysis path (8-bit planes as the decoder gives them).
    yuv = torch.full((1, 96, 64), 128, dtype=torch.uint8)
    yuv[0, :64] = round(16 + 219 * 0.508)
    sdr = analysis_frames(yuv, 32, PixelFormat.YUV420P)
    hdr = analysis_frames(yuv, 32, PixelFormat.YUV420P, hdr_transfer=PQ)
    assert abs(float(sdr.mean()) - 0.508) < 0.01 and abs(float(hdr.mean()) - float(mapped[1])) < 0.02
