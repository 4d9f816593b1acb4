"""The asset checks on final_video: good conversions pass, each kind of bad output fails the
right check, and a failing blocking check keeps the output out of the outbox."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg

import av
import numpy as np
import pytest
from dagster import AssetCheckSeverity

from stereospot_pipeline.defs.assets import final
from stereospot_pipeline.defs.checks import (
    audio_durations,
    audio_matches,
    comfortable_parallax,
    decodes_fully,
    frames_match,
    geometry_matches,
    seam_continuity,
)
from stereospot_pipeline.media.codec import VideoWriter
from stereospot_pipeline.media.encoders import EncoderKind, VideoCodec, choose_encoder
from stereospot_pipeline.media.mux import concat_and_mux
from stereospot_pipeline.media.packing import Packing
from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline.media.verify import (
    EncodedStream,
    SegmentVerificationError,
    coded_units,
    verify_joined,
    verify_segment,
    verify_written,
)
from stereospot_pipeline.stereo.params import Layout
from stereospot_pipeline_tests.clips import make_clip
from stereospot_pipeline_tests.conftest import convert, metadata, outbox_file

BLOCKING = {"frames_match_source", "audio_matches_source", "decodes_without_errors", "layout_geometry"}


def _checks(result) -> dict:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_good_conversion_passes_every_check_and_is_published(instance, resources, settings, tmp_path):
    clip = make_clip(tmp_path / "good.mp4", seconds=2.0, size="160x96", gop=5)
    key, result = convert(instance, resources, clip, segment_seconds=1.0)
    assert result.success
    checks = _checks(result)
    assert set(checks) == BLOCKING | {"comfortable_disparity", "seamless_depth"}
    assert all(c.passed for c in checks.values()), {n: c.description for n, c in checks.items()}
    assert checks["seamless_depth"].metadata["seams"].value == 1
    published = Path(metadata(result, "published_video")["output"])
    assert published == outbox_file(settings.resolved_home / "outbox", "good") and published.is_file()


def test_failing_blocking_check_stops_publishing(instance, resources, settings, tmp_path, monkeypatch):
    """A join that loses the last segment: final_video is stored, the frame check fails, the
    outbox stays empty."""
    real_join = final.concat_and_mux
    monkeypatch.setattr(final, "concat_and_mux", lambda parts, *args, **kw: real_join(parts[:-1], *args, **kw))
    clip = make_clip(tmp_path / "bad.mp4", seconds=2.0, size="160x96", gop=5)
    key, result = convert(instance, resources, clip, segment_seconds=1.0)
    assert not result.success
    checks = _checks(result)
    assert not checks["frames_match_source"].passed
    assert checks["frames_match_source"].severity is AssetCheckSeverity.ERROR
    assert checks["layout_geometry"].passed  # the frames that are there are fine
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "final_video" in materialized and "published_video" not in materialized
    assert not list((settings.resolved_home / "outbox").glob("*.mp4"))


def _faststart(src: Path, dest: Path) -> Path:
    """``src`` remuxed with the index first (as published outputs are), so a cut file still opens."""
    with av.open(str(src)) as inp, av.open(str(dest), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dest


def test_frame_check_catches_a_truncated_output(tmp_path):
    source = _faststart(make_clip(tmp_path / "src.mp4", seconds=2.0, gop=5, audio=False), tmp_path / "fs.mp4")
    src = probe_video(source)
    assert frames_match(src, src).passed
    whole = source.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) // 2])  # an interrupted copy
    cut = probe_video(truncated)
    result = frames_match(src, cut)
    assert not result.passed and f"{cut.frames} frames" in result.description


def _overwrite(path: Path, at: float, length: int = 300) -> None:
    """Bytes overwritten ``at`` a fraction into the video data (not the index: the file still opens)."""
    data = bytearray(path.read_bytes())
    mdat = data.index(b"mdat") + 4
    moov = data.index(b"moov", mdat) if b"moov" in data[mdat:] else len(data)
    start = mdat + int((moov - mdat - length) * at)
    data[start:start + length] = bytes((b * 7 + 13) % 256 for b in data[start:start + length])
    path.write_bytes(bytes(data))


def _segments(tmp_path: Path, count: int) -> tuple[list[Path], list[dict]]:
    """``count`` one-second segments on one timeline, as the stereo step stores them."""
    parts = []
    for i in range(count):
        parts.append(tmp_path / f"seg{i}.mp4")
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size=96x64:rate=10:duration=1", "-c:v", "libx264", "-g", "10",
                        "-pix_fmt", "yuv420p", "-output_ts_offset", str(i), str(parts[-1])], check=True)
    return parts, [verify_segment(p, 10, (96, 64)).model_dump() for p in parts]


def test_segment_verification_decodes_every_frame_and_checks_count_and_size(tmp_path):
    parts, verified = _segments(tmp_path, 1)
    assert verified[0]["frames"] == verified[0]["packets"] == 10
    with pytest.raises(SegmentVerificationError, match="10 decodable frames in 10 packets, 11 were encoded"):
        verify_segment(parts[0], 11, (96, 64))  # one frame dropped by the encoder
    with pytest.raises(SegmentVerificationError, match="96x64, expected 192x64"):
        verify_segment(parts[0], 10, (192, 64))


def _written(path: Path, codec: str = "h264", bit_depth: int = 8, frames: int = 12,
             writer: type[VideoWriter] = VideoWriter) -> VideoWriter:
    """``frames`` of moving noise through the writer with its decode-as-written check."""
    encoder = choose_encoder(VideoCodec(codec), EncoderKind.SOFTWARE, bit_depth=bit_depth,
                             frame_packing=Packing.SIDE_BY_SIDE, colour={"colorprim": "bt709", "range": "tv"})
    rng = np.random.default_rng(7)
    with writer(path, 192, 64, Fraction(1, 25), encoder=encoder,
                check=True) as w:
        for i in range(frames):
            frame = rng.integers(16, 235, (96, 192), dtype=np.uint8)
            w.write(frame.astype(np.int16) * 4 if bit_depth == 10 else frame, i)
    return w


@pytest.mark.parametrize("codec, bit_depth", [("h264", 8), ("h264", 10), ("hevc", 8), ("hevc", 10),
                                              ("av1", 8), ("av1", 10)])
def test_segment_checked_as_written_agrees_with_a_full_decode_of_the_file(tmp_path, codec, bit_depth):
    """What the writer decoded, compared with the file's packet index, gives exactly what a full
    decode of the file gives; a wrong frame count or size still fails."""
    path = tmp_path / f"{codec}{bit_depth}.mp4"
    w = _written(path, codec, bit_depth)
    checked = verify_written(path, w.encoded, 12, (192, 64))
    assert checked == verify_segment(path, 12, (192, 64))
    assert checked.frames == checked.packets == 12
    with pytest.raises(SegmentVerificationError, match="12 decodable frames in 12 packets, 13 were encoded"):
        verify_written(path, w.encoded, 13, (192, 64))
    with pytest.raises(SegmentVerificationError, match="decodes at 192x64, expected 96x64"):
        verify_written(path, w.encoded, 12, (96, 64))


def test_segment_changed_between_encoder_and_disk_fails_its_check(tmp_path):
    path = tmp_path / "seg.mp4"
    w = _written(path, frames=20)
    intact = path.read_bytes()
    _overwrite(path, 0.6)
    with pytest.raises(SegmentVerificationError, match=r"packet \d+ of the written segment is not the one encoded"):
        verify_written(path, w.encoded, 20, (192, 64))
    path.write_bytes(intact[: len(intact) // 2])  # the index (at the end) is gone
    with pytest.raises(SegmentVerificationError, match="cannot be read back"):
        verify_written(path, w.encoded, 20, (192, 64))


class _DamagingWriter(VideoWriter):
    """An encoder whose output breaks after its keyframe (as a failing GPU encoder's can)."""

    def _mux(self, packets):
        super()._mux([p if p.is_keyframe else av.Packet(bytes(p)[:5] + bytes(range(256)) * 3) for p in packets])


def test_packets_that_do_not_decode_fail_as_they_are_written(tmp_path):
    with pytest.raises(SegmentVerificationError, match="does not decode after|decodable frames in"):
        w = _written(tmp_path / "bad.mp4", writer=_DamagingWriter)
        verify_written(tmp_path / "bad.mp4", w.encoded, 12, (192, 64))


def test_segment_damaged_on_its_way_to_disk_is_rendered_again(instance, resources, tmp_path, monkeypatch):
    """Through the real assets: the first stereo segment written is damaged on disk; its step
    fails naming the packet, is retried, and the conversion is whole."""
    real_close, damaged = VideoWriter.close, []

    def damaging_close(self):
        real_close(self)
        if not damaged:
            damaged.append(Path(self.container.name))
            _overwrite(damaged[0], 0.5)

    monkeypatch.setattr(VideoWriter, "close", damaging_close)
    clip = make_clip(tmp_path / "clip.mp4", seconds=2.0, size="160x96", gop=5)
    key, result = convert(instance, resources, clip, segment_seconds=1.0)
    assert result.success and len(damaged) == 1
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 1 and "render_stereo_segment" in retried[0].step_key
    failure = retried[0].event_specific_data.error
    assert "of the written segment is not the one encoded" in str(failure.message) + str(failure.cause)
    assert all(c.passed for c in _checks(result).values())


def test_coded_units_are_the_same_in_either_framing():
    """Start codes (what encoders write) and 4-byte lengths (what MP4 holds) give the same units;
    a 300-byte unit's length prefix begins like a start code and must not be read as one.
    In-band parameter sets, which the muxer may drop, are left out."""
    sps, pps = b"\x67\x64\x00\x1f", b"\x68\xee\x3c\x80"
    idr, sei = b"\x65" + bytes(range(1, 256)) + b"\x11" * 44, b"\x06\x05\x01\x80"
    units = [sei, idr]
    assert len(idr) == 300
    annex_b = b"".join(b"\x00\x00\x00\x01" + u for u in [sps, pps]) + b"\x00\x00\x01" + sei + b"\x00\x00\x00\x01" + idr
    mp4 = b"".join(len(u).to_bytes(4, "big") + u for u in units)
    assert mp4[:3] == b"\x00\x00\x00" and mp4[4 + len(sei):7 + len(sei)] == b"\x00\x00\x01"
    assert coded_units(annex_b, "h264", annex_b=True) == coded_units(mp4, "h264", annex_b=False) == units
    with pytest.raises(ValueError, match="lengths do not add up"):
        coded_units(mp4[:-1], "h264", annex_b=False)
    # AV1: the temporal delimiter (type 2) an encoder writes and MP4 leaves out.
    frame = bytes([6 << 3 | 0x02, 3]) + b"abc"
    assert coded_units(bytes([2 << 3 | 0x02, 0]) + frame, "av1", annex_b=True) == [frame]


def test_joined_check_catches_a_segment_corrupted_after_verification(tmp_path):
    parts, verified = _segments(tmp_path, 3)
    source = make_clip(tmp_path / "src.mp4", seconds=3.0, size="96x64", audio=False)
    info = probe_video(source)
    joined = tmp_path / "joined.mp4"
    concat_and_mux(parts, source, info, joined)
    good = verify_joined(joined, verified)
    assert good.passed, good.problem
    assert good.packets == 30 and good.sampled_points >= 2 + 1  # both seams and points between
    assert decodes_fully(good).passed
    _overwrite(parts[1], 0.6)  # bytes overwritten in the stored segment before the join
    concat_and_mux(parts, source, info, joined)
    bad = decodes_fully(verify_joined(joined, verified))
    assert not bad.passed and "segment 2/3" in bad.description
    # A join that lost a segment's packets.
    concat_and_mux([parts[0], parts[2]], source, info, joined)
    assert "20 video packets" in decodes_fully(verify_joined(joined, verified)).description


def test_corrupt_stored_segment_fails_the_blocking_decode_check(instance, resources, settings, tmp_path,
                                                                monkeypatch):
    """Through the real assets: the second stored stereo segment is damaged between its
    verification and the join; the blocking check fails and nothing is published."""
    real_join = final.concat_and_mux

    def damaging_join(parts, *args, **kwargs):
        _overwrite(Path(parts[1]), 0.6)
        return real_join(parts, *args, **kwargs)

    monkeypatch.setattr(final, "concat_and_mux", damaging_join)
    clip = make_clip(tmp_path / "bad.mp4", seconds=2.0, size="160x96", gop=5)
    key, result = convert(instance, resources, clip, segment_seconds=1.0)
    assert not result.success
    checks = _checks(result)
    assert not checks["decodes_without_errors"].passed
    assert checks["decodes_without_errors"].severity is AssetCheckSeverity.ERROR
    assert "segment 2/2" in checks["decodes_without_errors"].description
    assert not list((settings.resolved_home / "outbox").glob("*.mp4"))


def test_audio_check_requires_audio_exactly_when_the_source_has_it(tmp_path):
    with_audio = make_clip(tmp_path / "a.mp4", audio=True)
    silent = make_clip(tmp_path / "s.mp4", audio=False)
    shorter = make_clip(tmp_path / "short.mp4", seconds=1.0, audio=True)
    assert audio_durations(silent) == []
    assert audio_durations(with_audio)[0] >= 1.9
    assert audio_matches(audio_durations(with_audio), audio_durations(with_audio), 10).passed
    assert audio_matches([], audio_durations(silent), 10).passed
    assert not audio_matches(audio_durations(with_audio), audio_durations(silent), 10).passed
    assert not audio_matches([], audio_durations(with_audio), 10).passed
    assert not audio_matches(audio_durations(with_audio), audio_durations(shorter), 10).passed


def test_geometry_check_knows_each_layout(tmp_path):
    src = probe_video(make_clip(tmp_path / "src.mp4", size="160x96", audio=False))
    sbs = probe_video(make_clip(tmp_path / "sbs.mp4", size="320x96", audio=False))
    assert geometry_matches(src, sbs, Layout.FULL_SBS).passed
    assert geometry_matches(src, src, Layout.HALF_SBS).passed
    wrong = geometry_matches(src, src, Layout.FULL_SBS)
    assert not wrong.passed and "expected 320x96" in wrong.description
    assert not geometry_matches(src, sbs, Layout.FULL_TB).passed


def test_parallax_over_the_limit_warns():
    # disparity = 2 x per-eye shift: 2 x 3 px = 6 px = 3.75% of 160 px
    over = comfortable_parallax([1.0, 3.0], frame_width=160, max_fraction=0.03)
    assert not over.passed and over.severity is AssetCheckSeverity.WARN
    assert over.metadata["max_disparity_px"].value == 6.0
    assert comfortable_parallax([1.0, 2.0], frame_width=160, max_fraction=0.03).passed


def _segment(first: float, last: float, frames: int = 11, steps: float | None = None) -> dict:
    return {"frames": frames, "first_mean_depth": first, "last_mean_depth": last,
            "mean_depth_steps": abs(last - first) if steps is None else steps}


def test_seam_check_compares_jumps_with_change_inside_segments():
    smooth = [_segment(0.50, 0.60), _segment(0.61, 0.70), _segment(0.71, 0.80)]
    assert seam_continuity(smooth, max_ratio=3.0, jump_floor=0.02).passed
    # Inside: 0.01/frame; the second seam jumps 0.15 (each segment normalised on its own).
    jumpy = [_segment(0.50, 0.60), _segment(0.61, 0.70), _segment(0.55, 0.65)]
    result = seam_continuity(jumpy, max_ratio=3.0, jump_floor=0.02)
    assert not result.passed and result.severity is AssetCheckSeverity.WARN
    assert result.metadata["max_jump"].value == pytest.approx(0.15)
    # Still footage: no change inside, a jump below the floor still passes.
    still = [_segment(0.5, 0.5, steps=0.0), _segment(0.51, 0.51, steps=0.0)]
    assert seam_continuity(still, max_ratio=3.0, jump_floor=0.02).passed
    assert seam_continuity([_segment(0.2, 0.9)], max_ratio=3.0, jump_floor=0.02).passed
