"""Trim (--start/--end) and frame-rate cap (--max-fps): the frames kept, the output's timeline and
its audio, through the conversion assets with real encodes."""

from fractions import Fraction

import av
import pytest
from dagster import materialize

from stereospot_pipeline.defs.assets.stereo import stereo_run_config
from stereospot_pipeline.definitions import CONVERSION_ASSETS
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.ingest import register_local_file
from stereospot_pipeline.media.selection import SegmentOptions, capped, parse_time
from stereospot_pipeline.stereo.params import StereoParams
from stereospot_pipeline_tests.clips import make_clip
from stereospot_pipeline_tests.conftest import metadata


def _convert(instance, resources, path, segments: dict):
    key = register_local_file(resources["store"], path)
    instance.add_dynamic_partitions(videos.name, [key])
    params = StereoParams(depth_model="heuristic", ema_lookahead=2)
    return materialize(CONVERSION_ASSETS, instance=instance, partition_key=key, resources=resources,
                       raise_on_error=False, run_config={"ops": {
                           "segments": {"config": segments},
                           "stereo_segments": {"ops": {"plan_stereo_segments": {"config": stereo_run_config(params)}}},
                       }})


def _timeline(path):
    """(video frame times, first audio time, audio end) of a file, in seconds."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        times = sorted(float(p.pts * v.time_base) for p in c.demux(v) if p.size)
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        spans = [(float(p.pts * a.time_base), float((p.pts + p.duration) * a.time_base)) for p in c.demux(a) if p.size]
    return times, spans[0][0], spans[-1][1]


def test_parse_time_and_window_rules():
    assert parse_time("90") == 90 and parse_time("1:30") == 90 and parse_time("1:02:03.5") == 3723.5
    for bad in ("", "1:", "a", "1:2:3:4", "-1"):
        with pytest.raises(ValueError):
            parse_time(bad)
    with pytest.raises(ValueError, match="must be after start"):
        SegmentOptions(start=3, end=2)
    # 30 fps capped at 12: kept frames alternate 3 and 2 source frames apart, at most 12 a second.
    times = [Fraction(n, 30) for n in range(60)]
    kept = [t for t, k in zip(times, capped(times, Fraction(1, 30), 12)) if k]
    assert len(kept) == 24 and {b - a for a, b in zip(kept, kept[1:])} == {Fraction(3, 30), Fraction(2, 30)}


def test_trim_keeps_the_window_with_audio_in_sync(tmp_path, instance, resources):
    # 4 s at 10 fps, a keyframe every 10 frames; a 1.5 s segment target cuts it in pieces, so
    # the window starts and ends inside segments.
    src = make_clip(tmp_path / "clip.mp4", seconds=4.0, fps=10, size="96x64", gop=10)
    result = _convert(instance, resources, src, {"segment_seconds": 1.5, "start": 1.25, "end": 3.05})
    assert result.success
    final = metadata(result, "final_video")
    out = tmp_path / "out.mp4"
    resources["store"].get_file(final["storage_key"], out)
    times, audio_start, audio_end = _timeline(out)
    # Frames at 1.3, 1.4 ... 3.0 s of the source: 18 frames, the first at 0 in the output.
    assert len(times) == 18 == final["frames"]
    assert times[0] == pytest.approx(0.0, abs=1e-3) and times[-1] == pytest.approx(1.7, abs=1e-3)
    assert final["duration_s"] == pytest.approx(1.8, abs=0.01)
    # Audio starts where the video does (the first AAC packet at or after 1.3 s: < 1024/44100 s late)
    # and ends with it.
    assert 0 <= audio_start < 1024 / 44100 + 1e-3
    assert audio_end == pytest.approx(1.8, abs=0.05)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert all(c.passed for name, c in checks.items() if name != "comfortable_disparity"), checks
    assert metadata(result, "segments")["count"] >= 2
    # The previews in the UI: the output at 10%, 50%, 90% (as `stereospot preview` shows) and depth.
    assert all(f"frame at {p}%" in final["preview"] for p in (10, 50, 90))
    assert set(final["preview_files"]) == {"frame", "depth", "frame_10", "frame_90"}


def test_max_fps_drops_frames_evenly_and_keeps_the_duration(tmp_path, instance, resources):
    src = make_clip(tmp_path / "clip.mp4", seconds=3.0, fps=25, size="96x64", gop=25)
    result = _convert(instance, resources, src, {"segment_seconds": 1.0, "max_fps": 10})
    assert result.success
    final = metadata(result, "final_video")
    out = tmp_path / "out.mp4"
    resources["store"].get_file(final["storage_key"], out)
    times, _, _ = _timeline(out)
    assert len(times) == 30 == final["frames"]  # 75 frames at 25 fps -> 10 a second
    gaps = {round(b - a, 3) for a, b in zip(times, times[1:])}
    assert gaps <= {0.08, 0.12}, gaps  # 2 or 3 source frames apart: dropped evenly
    with av.open(str(out)) as c:
        assert float(c.streams.video[0].average_rate) == pytest.approx(10, abs=0.5)
    assert final["duration_s"] == pytest.approx(3.0, abs=0.1)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["frames_match_source"].passed and checks["audio_matches_source"].passed, checks
