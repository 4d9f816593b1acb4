"""The asset checks on final_video: good conversions pass, each kind of bad output fails the
right check, and a failing blocking check keeps the output out of the outbox."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg

import av
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
from stereospot_pipeline.media.mux import concat_and_mux
from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline.media.verify import SegmentVerificationError, verify_joined, verify_segment
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
