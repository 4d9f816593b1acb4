"""The whole conversion through a real Dagster instance, real ffmpeg/PyAV and the torch engine."""

from __future__ import annotations

import numpy as np
import pytest

from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline.stereo.params import Layout, StereoParams
from stereospot_pipeline_tests.clips import decode_all, make_clip
from stereospot_pipeline_tests.conftest import convert, metadata, outbox_file


def _band_disparity(left: np.ndarray, right: np.ndarray, max_shift: int = 16) -> int:
    """The integer d for which left(x) best matches right(x - d) in a band of rows: the
    left view is the right view moved right by d pixels (d > 0: the band is in front of the
    screen)."""
    l, r = left.astype(np.float32), right.astype(np.float32)
    w = l.shape[1]
    errors = {d: np.abs(l[:, max_shift:w - max_shift] - r[:, max_shift - d:w - max_shift - d]).mean()
              for d in range(-max_shift, max_shift + 1)}
    return min(errors, key=errors.get)


def test_real_clip_end_to_end_full_sbs(instance, resources, settings, corpus):
    source = corpus["realshort_240p_h264_2997.mp4"]
    before = source.read_bytes()
    key, result = convert(instance, resources, source, divergence=6.0)
    assert result.success
    src = probe_video(source)
    # Seam-free by default: one whole-video nearness range, from sampled frames, shown with the segments.
    depth_range = metadata(result, "stereo_segments")["whole_video_depth_range"]
    assert depth_range["lo"] < depth_range["hi"] and depth_range["frames"] >= 1
    final = metadata(result, "final_video")
    out = outbox_file(settings.resolved_home / "outbox", "realshort_240p_h264_2997")
    assert metadata(result, "published_video")["output"] == str(out) and out.is_file()
    frames, has_audio = decode_all(out)
    assert len(frames) == src.frames == final["frames"]
    assert (frames[0].width, frames[0].height) == (2 * src.width, src.height)
    info = probe_video(out)
    assert abs(info.duration_s - src.duration_s) <= 1 / src.fps
    assert has_audio == src.has_audio is True
    assert source.read_bytes() == before

    # The heuristic depth puts the bottom of the frame nearer than the top, so with
    # divergence 6% the bottom band must pop out of the screen (positive disparity)
    # and the top band sit behind it (negative).
    rgb = frames[len(frames) // 2].to_ndarray(format="rgb24").mean(axis=2)
    left, right = rgb[:, : src.width], rgb[:, src.width:]
    assert np.abs(left - right).mean() > 2.0
    h = src.height
    assert _band_disparity(left[int(0.8 * h):], right[int(0.8 * h):]) > 0
    assert _band_disparity(left[: int(0.2 * h)], right[: int(0.2 * h)]) < 0


def test_clip_without_audio_gives_output_without_audio(instance, resources, settings, corpus):
    source = corpus["mars_768p_mpeg4_10fps_noaudio.avi"]
    key, result = convert(instance, resources, source, params=StereoParams(layout=Layout.HALF_SBS))
    assert result.success
    src = probe_video(source)
    out = outbox_file(settings.resolved_home / "outbox", "mars_768p_mpeg4_10fps_noaudio", "_LR")
    frames, has_audio = decode_all(out)
    assert len(frames) == src.frames and not has_audio
    assert (frames[0].width, frames[0].height) == (src.width, src.height)


def test_one_segment_and_many_segments_give_the_same_frames(instance, resources, tmp_path):
    clip = make_clip(tmp_path / "gop10.mp4", seconds=3.0, fps=10, gop=10)
    src = probe_video(clip)
    _, one = convert(instance, resources, clip, segment_seconds=100.0)
    assert one.success and metadata(one, "segments")["count"] == 1
    out_one = metadata(one, "published_video")["output"]
    first = [f.to_ndarray(format="rgb24") for f in decode_all(out_one)[0]]

    _, many = convert(instance, resources, clip, segment_seconds=0.9)
    assert many.success and metadata(many, "segments")["count"] >= 3
    second = [f.to_ndarray(format="rgb24") for f in decode_all(metadata(many, "published_video")["output"])[0]]
    assert len(first) == len(second) == src.frames == 30
    # Same pictures up to encoder noise: a frame dropped, duplicated or shifted at a seam would
    # match its neighbour better than its counterpart.
    def diff(a, b):
        return np.abs(a.astype(int) - b.astype(int)).mean()

    for i, (a, b) in enumerate(zip(first, second)):
        neighbours = [diff(first[j], b) for j in (i - 1, i + 1) if 0 <= j < len(first)]
        assert diff(a, b) < 0.5 * min(neighbours), f"frame {i} does not line up"


@pytest.mark.parametrize("case", ["not_a_video", "zero_bytes", "truncated"])
def test_bad_input_fails_clearly_and_loses_nothing(instance, resources, settings, tmp_path, case):
    path = tmp_path / f"{case}.mp4"
    if case == "not_a_video":
        path.write_text("this is a shopping list, not a video\n" * 50)
        expected = "not a readable video"
    elif case == "zero_bytes":
        path.write_bytes(b"")
        expected = "empty (0 bytes)"
    else:
        good = make_clip(tmp_path / "good.mp4", seconds=2.0)
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        expected = "truncated"
    before = path.read_bytes()
    _, result = convert(instance, resources, path)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures[0].step_key == "source_video"
    message = failures[0].event_specific_data.error.message
    assert str(path) in message and expected in message
    outbox = settings.resolved_home / "outbox"
    assert not outbox.exists() or not any(outbox.iterdir())
    assert path.read_bytes() == before


def test_rerun_with_same_settings_reuses_segments_and_new_settings_do_not(instance, resources, tmp_path):
    clip = make_clip(tmp_path / "rerun.mp4", seconds=2.0, gop=5)
    _, first = convert(instance, resources, clip, segment_seconds=0.5)
    _, again = convert(instance, resources, clip, segment_seconds=0.5)
    _, changed = convert(instance, resources, clip, segment_seconds=0.5, divergence=3.0)
    count = metadata(first, "segments")["count"]
    assert count >= 3
    assert metadata(first, "stereo_segments")["reused_segments"] == 0
    assert metadata(again, "stereo_segments")["reused_segments"] == count
    assert metadata(changed, "stereo_segments")["reused_segments"] == 0
