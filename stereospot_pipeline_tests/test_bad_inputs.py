"""Unusual and broken inputs through the real pipeline: each ends in a correct output or in an error
naming the file, the problem and what to do; the input is never modified and a failed conversion
publishes nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path, PurePosixPath

import av
import numpy as np
import pytest
from dagster import materialize

from stereospot_pipeline.definitions import CONVERSION_ASSETS
from stereospot_pipeline.defs.assets.final import output_key, output_name
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.defs.resources import build_resources
from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.stereo.params import Layout, StereoParams
from stereospot_pipeline.storage import check_key
from stereospot_pipeline.storage.s3 import s3_client
from stereospot_pipeline_tests.clips import REPO, decode_all, make_clip, real_clips
from stereospot_pipeline_tests.conftest import convert, metadata
from stereospot_pipeline_tests.support.ffmpeg import ffmpeg
from stereospot_pipeline_tests.test_s3_sensor import Inbox, _added

STEREOSPOT = str(Path(sys.executable).with_name("stereospot"))
TINY = "testsrc2=size=96x64:rate=10"

# --- inputs that must fail -------------------------------------------------------------------


def _not_a_video(p: Path) -> None:
    p.write_text("this is a shopping list, not a video\n" * 50)


def _zero_bytes(p: Path) -> None:
    p.write_bytes(b"")


def _cut_mid_file(p: Path) -> None:
    data = make_clip(p.with_name("whole.mp4"), seconds=2.0).read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _audio_only(p: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", p)


def _huge_resolution(p: Path) -> None:
    # One flat 9000x5000 frame (45 Mpx, above the default 8K limit): a few KB to store.
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=9000x5000:rate=1:duration=1", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", p)


def _hours_long(p: Path) -> None:
    # 3 hours at 64x36, 1 fps: generated in seconds; above the limit the test sets.
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=64x36:rate=1:duration=10800", "-c:v", "libx264",
           "-preset", "ultrafast", "-g", "600", "-pix_fmt", "yuv420p", p)


FAILING = {
    "not_a_video": (_not_a_video, "not a readable video", {}),
    "zero_bytes": (_zero_bytes, "empty (0 bytes)", {}),
    "truncated": (_cut_mid_file, "truncated", {}),
    "audio_only": (_audio_only, "has no video stream (found: audio)", {}),
    "huge_resolution": (_huge_resolution, "resolution 9000x5000 is above the limit", {}),
    "hours_long": (_hours_long, "is 3.00 h long, above the limit of 1.00 h", {"STEREOSPOT_MAX_DURATION_S": "3600"}),
}


def _outbox_files(settings) -> list[Path]:
    outbox = settings.resolved_home / "outbox"
    return sorted(outbox.rglob("*")) if outbox.exists() else []


@pytest.mark.parametrize("case", list(FAILING))
def test_bad_input_fails_clearly(instance, resources, settings, tmp_path, monkeypatch, case):
    build, expected, env = FAILING[case]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / f"{case}.mp4"
    build(path)
    before = path.read_bytes()
    started = time.monotonic()
    _, result = convert(instance, resources, path)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [f.step_key for f in failures] == ["source_video"]
    message = failures[0].event_specific_data.error.message
    # Which file, what is wrong, what to do (the hint in parentheses).
    assert str(path) in message and expected in message and message.rstrip().endswith(")"), message
    assert _outbox_files(settings) == []
    assert path.read_bytes() == before
    # Limits are checked from the header: no decoding or indexing of the oversized video.
    assert time.monotonic() - started < 30


def test_garbage_in_the_middle_fails_naming_the_file(instance, resources, settings, tmp_path):
    """Damaged bytes inside the stream: the packet index still reads, but a picture cannot be
    decoded: the run fails naming the file and what to do, and publishes nothing."""
    path = make_clip(tmp_path / "garbled.mp4", seconds=3.0, gop=10)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2048] = np.random.default_rng(7).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    _, result = convert(instance, resources, path, segment_seconds=1.0)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert str(path) in message and "cannot be decoded" in message and "re-export" in message, message
    assert _outbox_files(settings) == []
    assert path.read_bytes() == before


# --- inputs that must convert ------------------------------------------------------------------


def _frame_times(path: Path) -> list[Fraction]:
    """Presentation times of the first video track's frames, relative to the first (seconds)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        times = sorted(f.pts * f.time_base for f in c.decode(s))
    return [t - times[0] for t in times]


def _single_frame(p: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", TINY, "-frames:v", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", p)


def _very_short(p: Path) -> None:
    make_clip(p, seconds=0.3, fps=10, size="96x64")


def _odd_size(p: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=65x37:rate=10:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv444p", p)


def _variable_rate(p: Path) -> None:
    # 0.1 s steps with a 0.3 s pause after frame 4.
    expr = "(N*0.1+gt(N,4)*0.2)/TB"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10:duration=1.6", "-vf", f"setpts='{expr}'",
           "-fps_mode", "vfr", "-video_track_timescale", "1000", "-c:v", "libx264", "-pix_fmt", "yuv420p", p)


def _ten_bit(p: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", f"{TINY}:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p10le", p)


def _yuv444(p: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", f"{TINY}:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv444p", p)


def _interlaced(p: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=128x96:rate=25:duration=1", "-c:v", "libx264",
           "-flags", "+ildct+ilme", "-x264opts", "interlaced=1", "-field_order", "tt", "-pix_fmt", "yuv420p", p)


def _surround(p: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", f"{TINY}:duration=1", "-f", "lavfi",
           "-i", "sine=frequency=300:sample_rate=48000:duration=1", "-filter_complex",
           "[1:a]pan=5.1|FL=c0|FR=c0|FC=c0|LFE=c0|BL=c0|BR=c0[a]", "-map", "0:v", "-map", "[a]",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", p)


def _two_audio_tracks(p: Path) -> None:
    # An AAC track MP4 keeps as-is and a PCM one it cannot carry (re-encoded to AAC), in MKV.
    ffmpeg("-f", "lavfi", "-i", f"{TINY}:duration=1", "-f", "lavfi", "-i", "sine=frequency=300:duration=1",
           "-f", "lavfi", "-i", "sine=frequency=500:duration=1", "-map", "0", "-map", "1", "-map", "2",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a:0", "aac", "-c:a:1", "pcm_s16le", p)


def _subtitles_and_data(p: Path) -> None:
    srt = p.with_suffix(".srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:00,900\nhello\n")
    # A text subtitle track and a timecode data track (tmcd) beside the video and audio.
    ffmpeg("-f", "lavfi", "-i", f"{TINY}:duration=1", "-f", "lavfi", "-i", "sine=duration=1", "-i", srt,
           "-map", "0", "-map", "1", "-map", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
           "-c:s", "mov_text", "-timecode", "01:00:00:00", p)


def _portrait_phone(p: Path) -> None:
    """An upright 64x96 picture stored the way phones do: turned to 96x64 landscape pixels plus a
    display matrix telling players to turn it back."""
    upright = p.with_name("upright.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x96:rate=10:duration=1", "-c:v", "libx264", "-qp", "0",
           "-pix_fmt", "yuv444p", upright)
    stored = p.with_name("stored.mp4")
    ffmpeg("-i", upright, "-vf", "transpose=clock", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", stored)
    ffmpeg("-display_rotation", "90", "-i", stored, "-c", "copy", p)


CONVERTING = {
    "single_frame": (_single_frame, ".mp4"),
    "very_short": (_very_short, ".mp4"),
    "odd_size": (_odd_size, ".mp4"),
    "variable_rate": (_variable_rate, ".mp4"),
    "ten_bit": (_ten_bit, ".mp4"),
    "yuv444": (_yuv444, ".mp4"),
    "interlaced": (_interlaced, ".mp4"),
    "surround_5_1": (_surround, ".mp4"),
    "two_audio_tracks": (_two_audio_tracks, ".mkv"),
    "subtitles_and_data": (_subtitles_and_data, ".mp4"),
    "portrait_phone": (_portrait_phone, ".mp4"),
}


@pytest.mark.parametrize("case", list(CONVERTING))
def test_unusual_input_converts(instance, resources, settings, tmp_path, case):
    build, suffix = CONVERTING[case]
    path = tmp_path / f"{case}{suffix}"
    build(path)
    before = path.read_bytes()
    src = probe_video(path)
    divergence = 0.0 if case == "portrait_phone" else 2.0
    _, result = convert(instance, resources, path, segment_seconds=0.5, divergence=divergence)
    assert result.success, [e.event_specific_data.error.message for e in result.all_events
                            if e.event_type_value == "STEP_FAILURE"]
    assert path.read_bytes() == before
    out = Path(metadata(result, "published_video")["output"])
    frames, has_audio = decode_all(out)
    info = probe_video(out)
    assert len(frames) == info.frames == src.frames
    assert abs(info.duration_s - src.duration_s) <= 1 / src.fps + 1e-6
    assert has_audio == src.has_audio
    upright = (src.height, src.width) if src.rotation in (90, 270) else (src.width, src.height)
    # Full SBS of the upright picture; yuv420p output is padded to even sizes (edge repeated).
    w, h = 2 * upright[0], upright[1]
    assert (info.width, info.height) == (w + w % 2, h + h % 2)
    assert info.rotation == 0 and info.pix_fmt == "yuv420p"

    if case == "variable_rate":
        assert max(abs(a - b) for a, b in zip(_frame_times(out), _frame_times(path))) <= Fraction(1, 1000)
        assert len(set(np.diff([float(t) for t in _frame_times(out)]).round(3))) >= 2  # really variable
    if case == "surround_5_1":
        assert [(a.channels, a.layout) for a in info.audio] == [(6, "5.1")]
    if case in ("two_audio_tracks", "subtitles_and_data"):
        assert len(info.audio) == len(src.audio)
        with av.open(str(out)) as c:
            assert [s.type for s in c.streams] == ["video"] + ["audio"] * len(src.audio)
    if case == "interlaced":
        assert src.interlaced and metadata(result, "source_video")["interlaced"] is True
        assert not frames[0].interlaced_frame
    if case == "portrait_phone":
        assert src.rotation == 270 and metadata(result, "source_video")["rotation"] == 270
        with av.open(str(path.with_name("upright.mp4"))) as c:
            expected = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
        left = [f.to_ndarray(format="rgb24")[:, : upright[0]].astype(int) for f in frames]
        # Divergence 0: the left eye is the upright source picture up to chroma subsampling and
        # H.264 noise, far closer than to the picture turned the other way round or mirrored.
        for a, b in zip(left, expected):
            wrong = min(np.abs(a - np.rot90(b, 2)).mean(), np.abs(a - b[:, ::-1]).mean())
            assert np.abs(a - b).mean() < 0.25 * wrong


def test_every_real_clip_converts(instance, resources, settings, corpus, clip_name):
    source = corpus[clip_name]
    before = source.read_bytes()
    src = probe_video(source)
    _, result = convert(instance, resources, source, params=StereoParams(layout=Layout.HALF_SBS))
    assert result.success
    out = Path(metadata(result, "published_video")["output"])
    frames, has_audio = decode_all(out)
    assert len(frames) == src.frames and has_audio == src.has_audio
    # Each eye at the display size: anamorphic pixels (ball_576p is PAL 4:3, SAR 16:15) made square.
    w, h = src.display_size
    assert (frames[0].width, frames[0].height) == (w + w % 2, h + h % 2)
    assert source.read_bytes() == before


def pytest_generate_tests(metafunc):
    if "clip_name" in metafunc.fixturenames:
        metafunc.parametrize("clip_name", sorted(real_clips(REPO / ".real-clips")))


# --- hours-long input: probing and segmenting stay fast and small ------------------------------

_PROBE_AND_SPLIT = """
from stereospot_pipeline_tests.support.memory import peak_rss_kb
import sys, time, tempfile
from pathlib import Path
from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline.media.segment import plan_segments, split_video
started = time.perf_counter()
info = probe_video(sys.argv[1])
plans = plan_segments(info, 600.0)
with tempfile.TemporaryDirectory() as tmp:
    split_video(Path(sys.argv[1]), plans, Path(tmp))
print(info.frames, len(plans), time.perf_counter() - started, peak_rss_kb())
"""


def test_an_hours_long_video_is_probed_and_segmented_quickly_in_bounded_memory(tmp_path):
    path = tmp_path / "three_hours.mp4"
    _hours_long(path)
    proc = subprocess.run([sys.executable, "-c", _PROBE_AND_SPLIT, str(path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    frames, pieces, seconds, rss_kb = proc.stdout.split()
    assert int(frames) == 10800 and int(pieces) == 18
    assert float(seconds) < 60
    # The index is a few numbers per frame; ffmpeg cuts run as separate processes.
    assert int(rss_kb) < 400_000, f"peak RSS {int(rss_kb) // 1024} MiB"


# --- hostile names -------------------------------------------------------------------------------

HOSTILE_NAME = "it's \"my\" clip $(touch pwned) `id`; ünï cødé & | *.mp4"


def test_a_hostile_file_name_converts_through_the_assets(instance, resources, settings, tmp_path):
    path = make_clip(tmp_path / HOSTILE_NAME, seconds=1.0)
    _, result = convert(instance, resources, path)
    assert result.success
    out = Path(metadata(result, "published_video")["output"])
    assert out.parent == settings.resolved_home / "outbox" and out.is_file()
    assert re.fullmatch(r"its my clip touch pwned id uni cde-[0-9a-f]{6}_LRF_Full_SBS\.mp4", out.name), out.name
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_a_hostile_file_name_converts_through_the_cli(tmp_path):
    path = make_clip(tmp_path / HOSTILE_NAME, seconds=1.0)
    env = {**os.environ, "STEREOSPOT_HOME": str(tmp_path / "home")}
    env.pop("DAGSTER_HOME", None)
    out = tmp_path / "result $(touch pwned2).mp4"
    proc = subprocess.run([STEREOSPOT, "convert", str(path), "-o", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(decode_all(out)[0]) == 10
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_hostile_s3_keys_convert_and_stay_inside_the_stores(s3_endpoint, instance, tmp_path, monkeypatch):
    """Keys with ``..``, a leading ``/`` and 900 characters: registered through the S3 sensor and
    converted from S3 to S3; every object written lands under the store's and outbox's prefixes."""
    inbox = Inbox(s3_endpoint, tmp_path)
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.5, audio=False)
    hostile = ["incoming/../../outputs/escape.mp4", "incoming//abs/../x.mp4", "incoming/" + "long name " * 90 + ".mp4"]
    for i, key in enumerate(hostile):
        # Trailing bytes make each object its own video (MP4 demuxers ignore them).
        inbox.client.put_object(Bucket="in-bucket", Key=key, Body=clip.read_bytes() + bytes([i]))
    added = _added(inbox.tick())
    assert len(added) == 3
    # The run reads s3:// sources with the endpoint from the environment, as a deployed run does.
    monkeypatch.setenv("STEREOSPOT_S3_ENDPOINT_URL", s3_endpoint)
    settings = Settings(home=tmp_path / "home", store_url="s3://out-bucket/work",
                        outbox_url="s3://out-bucket/outputs")
    resources = build_resources(settings)
    for key in added:
        instance.add_dynamic_partitions(videos.name, [key])
        run = materialize(CONVERSION_ASSETS, instance=instance, partition_key=key, resources=resources,
                          raise_on_error=False)
        assert run.success, key
    client = s3_client(s3_endpoint)
    listed = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="out-bucket")
              for o in page.get("Contents", [])]
    assert all(k.startswith(("work/", "outputs/")) and ".." not in k.split("/") for k in listed)
    outputs = sorted(k for k in listed if k.startswith("outputs/"))
    # Folders below the inbox prefix are mirrored, with "..", empty and unsafe parts dropped.
    folders = ["outputs", "abs", ""]
    expected = sorted(f"outputs/{output_key(f, output_name(PurePosixPath(k).name, '_LRF_Full_SBS', 'TAG'))}"
                      for f, k in zip(folders, hostile))
    assert sorted(re.sub(r"-[0-9a-f]{6}_LRF", "-TAG_LRF", k) for k in outputs) == expected
    assert "outputs/outputs/escape-TAG_LRF_Full_SBS.mp4" in expected
    for key in outputs:
        check_key(key.removeprefix("outputs/"))
    # The uploads are untouched.
    for i, key in enumerate(hostile):
        assert client.get_object(Bucket="in-bucket", Key=key)["Body"].read() == clip.read_bytes() + bytes([i])
