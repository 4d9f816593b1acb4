"""The conformance matrix (matrix.py): every class of real-world input converts to what a viewer
should see, or fails with a clear reason. Writes test-artifacts/conformance.md (the README table)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from stereospot_pipeline.media.preview import frame_at
from stereospot_pipeline.media.sample import sample_frames
from stereospot_pipeline_tests.clips import REPO
from stereospot_pipeline_tests.conftest import convert, metadata
from stereospot_pipeline_tests.matrix import CLIPS, LARGE as LARGE_FORM, SMALL, Form, MatrixClip, made_in, reference

STEREOSPOT = str(Path(sys.executable).with_name("stereospot"))
ARTIFACT = REPO / "test-artifacts" / "conformance.md"

# ffmpeg's names of the colour tags (libavutil/pixfmt.h), for messages and the matrix's expectations.
PRIMARIES = {1: "bt709", 2: "unknown", 6: "smpte170m", 9: "bt2020"}
TRC = {1: "bt709", 2: "unknown", 6: "smpte170m", 14: "bt2020-10", 16: "smpte2084", 18: "arib-std-b67"}
MATRIX = {1: "bt709", 2: "unknown", 5: "bt470bg", 6: "smpte170m", 9: "bt2020nc"}

_rows: dict[str, tuple[MatrixClip, str]] = {}


@pytest.fixture(scope="module", autouse=True)
def conformance_table():
    yield
    if not _rows:
        return
    lines = ["| group | class | outcome |", "|---|---|---|"]
    order = {c.id: i for i, c in enumerate(CLIPS)}
    for clip, outcome in sorted(_rows.values(), key=lambda r: (r[0].group, order[r[0].id])):
        lines.append(f"| {clip.group} | {clip.what} (`{clip.id}`) | {outcome} |")
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text("\n".join(lines) + "\n")


def _failures(result) -> list[str]:
    """The root cause of each failed step (Dagster wraps it in its own errors)."""
    messages = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            while error.cause is not None:
                error = error.cause
            messages.append(error.message.strip())
    return messages


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _facts(path: Path) -> dict:
    """What a player sees of the first picture: size, pixel shape, turn, colour."""
    with av.open(str(path)) as c:
        stream = c.streams.best("video")  # as ffmpeg picks it: never a cover picture
        frame = next(c.decode(stream))
        sar = stream.codec_context.sample_aspect_ratio
        return {"width": frame.width, "height": frame.height, "sar": Fraction(sar) if sar else Fraction(1),
                "rotation": round(frame.rotation or 0) % 360, "format": frame.format.name,
                "primaries": PRIMARIES.get(frame.color_primaries, frame.color_primaries),
                "trc": TRC.get(frame.color_trc, frame.color_trc),
                "matrix": MATRIX.get(frame.colorspace, frame.colorspace),
                "range": {1: "tv", 2: "pc"}.get(frame.color_range, "unknown")}


def _source_aspect(clip: MatrixClip, facts: dict) -> Fraction:
    """Width/height as the source is shown: display aspect, turned upright."""
    aspect = clip.display_aspect or Fraction(facts["width"], facts["height"]) * facts["sar"]
    return 1 / aspect if facts["rotation"] in (90, 270) else aspect


def _decoded(path: Path, crop_left_half: bool = False, pix_fmt: str = "gray") -> np.ndarray:
    """[N,H,W,C] every frame in presentation order as the ffmpeg CLI shows it (its reading of the
    colour tags included), in ``pix_fmt`` (gray: luma; rgb24)."""
    facts = _facts(path)
    w, h = (facts["width"] // 2 if crop_left_half else facts["width"]), facts["height"]
    vf = ["-vf", f"crop={w}:{h}:0:0"] if crop_left_half else []
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), *vf, "-fps_mode",
                          "passthrough", "-pix_fmt", pix_fmt, "-f", "rawvideo", "-"],
                         check=True, capture_output=True, timeout=120).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3 if pix_fmt == "rgb24" else 1).astype(np.int16)


# Timing classes whose frames need their presentation time derived (decode-order stamps, hidden
# edit-list frames, rate changes, far-from-zero starts), cut into several segments.
SEGMENTED = ["avi-divx-packed-bframes", "avi-xvid-bframes", "vob-mpeg2-ac3-dvd", "mp4-edit-list", "fps-change",
             "mp4-vfr", "avi-msmpeg4", "flv-sorenson-mp3", "ts-pts-wrap", "ts-joined-fps-change"]


def _assert_same_frames_in_order(source: Path, out: Path) -> None:
    """Through segment cuts, the renderer's frame selection and the join."""
    src, left = _decoded(source)[..., 0], _decoded(out, crop_left_half=True)[..., 0]
    assert len(left) == len(src)
    h, w = min(src.shape[1], left.shape[1]), min(src.shape[2], left.shape[2])
    for i, frame in enumerate(left):
        errors = np.abs(src[:, :h, :w] - frame[:h, :w]).mean(axis=(1, 2))
        # testsrc2 restarts in the joined fps-change clip: an identical earlier frame is no error.
        assert errors[i] <= errors.min() + 0.5, f"output frame {i} shows source frame {int(errors.argmin())}"


def _assert_same_colours(source: Path, out: Path) -> None:
    """The left eye (divergence 0: the source picture) shows the source's colours, each file read
    as a player reads it, through its tags. Compared as 4x4-block means, so that what every
    4:2:0 output loses at sharp colour edges (and the choice of chroma filter) does not count; a
    YUV matrix read or tagged wrongly moves whole colour bars by several levels."""
    src, left = _decoded(source, pix_fmt="rgb24"), _decoded(out, crop_left_half=True, pix_fmt="rgb24")
    h, w = min(src.shape[1], left.shape[1]) // 4 * 4, min(src.shape[2], left.shape[2]) // 4 * 4

    def blocks(x: np.ndarray) -> np.ndarray:
        return x[:, :h, :w].reshape(len(x), h // 4, 4, w // 4, 4, 3).mean(axis=(2, 4))

    error = np.abs(blocks(src) - blocks(left)).mean()
    assert error <= COLOUR_ERROR, f"colours off by {error:.2f} levels on average"


# Levels of 255: re-encoding moves these block means by about 1; the BT.601 reading of BT.709
# bars (or the reverse) by about 6.
COLOUR_ERROR = 2.5


@pytest.mark.parametrize("clip", CLIPS, ids=[c.id for c in CLIPS])
def test_input_class_converts_faithfully(clip: MatrixClip, instance, resources, settings, tmp_path):
    _rows[clip.id] = (clip, _converts_faithfully(clip, SMALL, instance, resources, settings, tmp_path))


# The larger form in CI: the classes whose handling depends most on size and length (timing
# across many segments, scaling, odd sizes, colour, HDR); STEREOSPOT_MATRIX_LARGE=all runs every class.
LARGE_IN_CI = ["m2ts-avchd-far-start", "ts-pts-wrap", "avi-divx-packed-bframes", "vob-mpeg2-ac3-dvd", "mp4-vfr",
               "pal-16x9-anamorphic", "ogg-theora-214px", "odd-size-97x63", "hlg-phone", "surround-5.1-eac3"]
LARGE = [c for c in CLIPS if os.environ.get("STEREOSPOT_MATRIX_LARGE") == "all" or c.id in LARGE_IN_CI]


@pytest.mark.slow
@pytest.mark.parametrize("clip", LARGE, ids=[c.id for c in LARGE])
def test_input_class_converts_faithfully_at_a_larger_size(clip: MatrixClip, instance, resources, settings, tmp_path):
    _converts_faithfully(clip, LARGE_FORM, instance, resources, settings, tmp_path)


def _converts_faithfully(clip: MatrixClip, form: Form, instance, resources, settings, tmp_path: Path) -> str:
    """Converts ``clip`` made in ``form`` and checks what a viewer sees; returns the outcome."""
    path = tmp_path / "in" / f"clip{clip.suffix}"
    path.parent.mkdir()
    with made_in(form):
        clip.build(path)
    before, src, src_facts = _digest(path), reference(path), _facts(path)
    # The timing classes are cut into several segments, with divergence 0 so the left eye is the
    # source picture: each output frame must be its own source frame, in order. The SDR colour
    # classes also keep the source picture, to compare colours.
    segmented = clip.id in SEGMENTED
    same_picture = segmented or (clip.group == "colour" and not clip.hdr)
    _, result = convert(instance, resources, path, segment_seconds=0.4 * form.stretch if segmented else 30.0,
                        **({"divergence": 0.0} if same_picture else {}))
    assert _digest(path) == before, "the source was modified"
    outbox = settings.url(settings.outbox_url, "outbox")
    if not result.success:
        errors = _failures(result)
        if form is SMALL:
            _rows[clip.id] = (clip, "fails: " + errors[0].splitlines()[0][:160] if errors else "fails")
        assert not list(Path(outbox).glob("*")), "a failed conversion published something"
        pytest.fail(f"{clip.id} did not convert: {errors}")
    out = Path(metadata(result, "published_video")["output"])
    got, out_facts = reference(out), _facts(out)
    frame_s = (src.last_video_s - src.first_video_s) / max(src.frames - 1, 1)

    assert got.frames == src.frames, f"{got.frames} frames, source {src.frames}"
    assert abs((got.last_video_s - got.first_video_s) - (src.last_video_s - src.first_video_s)) <= frame_s + 1e-3
    if src.first_audio_s is not None:
        offset, src_offset = got.first_audio_s - got.first_video_s, src.first_audio_s - src.first_video_s
        assert abs(offset - src_offset) <= frame_s + 1e-3, f"audio-video offset {offset:.3f}s, source {src_offset:.3f}s"
    else:
        assert got.first_audio_s is None

    # Full SBS: each eye at the source's display aspect in square pixels, upright.
    eye_w, eye_h = out_facts["width"] // 2, out_facts["height"]
    aspect = _source_aspect(clip, src_facts)
    assert out_facts["sar"] == 1 and out_facts["rotation"] == 0
    # One rule for sizes: the display size rounded to whole pixels, odd sides padded to even.
    assert abs(eye_w - eye_h * aspect) <= 1.5, f"eye {eye_w}x{eye_h}, display aspect {float(aspect):.4f}"
    assert eye_h in (src_facts["height"], src_facts["height"] + 1) or src_facts["rotation"] in (90, 270)

    # Frames reach the encoder in limited range (full-range sources are converted), tagged so
    # where the source says anything about colour (x264 writes the range only beside other tags).
    assert out_facts["range"] != "pc" and out_facts["format"] == "yuv420p"
    if clip.tags:
        assert out_facts["range"] == "tv"
    expected_tags = clip.tags or {}
    for name, key in (("color_primaries", "primaries"), ("color_trc", "trc"), ("colorspace", "matrix")):
        if name in expected_tags:
            assert out_facts[key] == expected_tags[name], f"{key} {out_facts[key]}, expected {expected_tags[name]}"
    if clip.hdr:
        assert metadata(result, "source_video")["working_copy"].startswith("tone-mapped")
    if segmented:
        # (In the larger form a 33-bit wrap falls in the first segment's cut, and the step
        # rightly falls back to one segment: the frames must still be right.)
        assert metadata(result, "segments")["count"] >= 2 or form is not SMALL
        _assert_same_frames_in_order(path, out)
    if same_picture and not clip.hdr:
        _assert_same_colours(path, out)
    outcome = _outcome(clip, src_facts, out_facts, eye_w, eye_h)
    return outcome + ("; in several segments, every frame in order" if segmented else "") + (
        "; same colours" if same_picture else "")


def _outcome(clip: MatrixClip, src: dict, out: dict, eye_w: int, eye_h: int) -> str:
    notes = [f"converts: eye {eye_w}x{eye_h}"]
    if src["sar"] != 1:
        notes.append(f"SAR {src['sar'].numerator}:{src['sar'].denominator} scaled to square pixels")
    if src["rotation"]:
        notes.append(f"turned upright ({src['rotation']} degrees)")
    if clip.hdr:
        notes.append(f"{src['trc']} tone-mapped to SDR BT.709")
    elif out["primaries"] != "unknown":
        notes.append(f"tags {out['primaries']}/{out['trc']}/{out['matrix']} {out['range']}")
    return "; ".join(notes)


def test_matrix_covers_the_issue_list():
    """At least 40 classes, every group of the issue represented."""
    assert len(CLIPS) >= 40 and len({c.id for c in CLIPS}) == len(CLIPS)
    assert {c.group for c in CLIPS} >= {"container", "codec", "timing", "geometry", "colour", "audio", "streams"}


def test_an_anamorphic_dvd_converts_through_the_cli(tmp_path):
    """One class end to end through the real command: an anamorphic NTSC 16:9 DVD program stream
    (MPEG-2 with B-frames, AC-3), which failed on the original main in three places."""
    clip = next(c for c in CLIPS if c.id == "ntsc-anamorphic-vob")
    path = tmp_path / f"dvd{clip.suffix}"
    clip.build(path)
    env = {**os.environ, "STEREOSPOT_HOME": str(tmp_path / "home")}
    env.pop("DAGSTER_HOME", None)
    out = tmp_path / "dvd_sbs.mp4"
    proc = subprocess.run([STEREOSPOT, "convert", str(path), "-o", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts, src = _facts(out), reference(path)
    assert reference(out).frames == src.frames
    assert abs(facts["width"] // 2 - facts["height"] * clip.display_aspect) <= 1.5


def _clip(tmp_path: Path, clip_id: str) -> Path:
    clip = next(c for c in CLIPS if c.id == clip_id)
    path = tmp_path / f"{clip_id}{clip.suffix}"
    clip.build(path)
    return path


def test_preview_is_made_where_the_seek_lands_past_every_frame(tmp_path):
    """In a TS starting far from zero with a long GOP the seek to the middle lands past every
    frame (this failed every such conversion); the preview then comes from decoding from the start."""
    path = _clip(tmp_path, "m2ts-avchd-far-start")
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        c.seek(stream.start_time + stream.duration // 2, stream=stream)
        assert next(c.decode(stream), None) is None
    assert frame_at(path).shape == (64, 96, 3)


def test_frame_samples_need_no_seek(tmp_path):
    """An FLV without an index cannot seek back once read (EPERM): the depth-range samples open
    the file afresh instead."""
    path = _clip(tmp_path, "flv-sorenson-mp3")
    with av.open(str(path)) as c:
        list(c.demux(c.streams.video[0]))
        with pytest.raises(av.error.FFmpegError):
            c.seek(0)
    assert len(list(sample_frames(path, every_s=0.1))) >= 2


def test_a_preview_that_cannot_be_made_does_not_fail_the_conversion(instance, resources, tmp_path, monkeypatch):
    """Fault injection: the preview extractor fails; the conversion succeeds and says why there is
    no preview."""
    import stereospot_pipeline.defs.assets.final as final
    import stereospot_pipeline.defs.assets.source as source

    def no_frame(path, fraction=0.5):
        raise ValueError(f"{path} has no decodable video frame")

    monkeypatch.setattr(source, "frame_at", no_frame)
    monkeypatch.setattr(final, "frame_at", no_frame)
    _, result = convert(instance, resources, _clip(tmp_path, "mp4-h264-aac"))
    assert result.success, _failures(result)
    assert metadata(result, "source_video")["preview"].startswith("no preview: ")
    assert metadata(result, "final_video")["preview"].startswith("no preview: ")


def test_keeping_hdr_in_an_anaglyph_fails_clearly(instance, resources, settings, tmp_path, monkeypatch):
    """HDR is kept (STEREOSPOT_HDR=keep: 10-bit HEVC, test_output_encodings.py) only where each
    eye's pixels stay as they are: an anaglyph mixes the eyes' colours, defined for SDR only."""
    monkeypatch.setenv("STEREOSPOT_HDR", "keep")
    path = _clip(tmp_path, "hdr10-pq")
    before = _digest(path)
    _, result = convert(instance, resources, path, layout="ANAGLYPH")
    assert not result.success
    [message] = _failures(result)
    assert "smpte2084" in message and "anaglyph" in message and "STEREOSPOT_HDR=tonemap" in message
    assert _digest(path) == before
    assert not list(Path(settings.url(settings.outbox_url, "outbox")).glob("*"))
