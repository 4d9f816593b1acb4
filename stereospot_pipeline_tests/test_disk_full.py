"""A full disk while writing a segment, the joined file or the published output: a clear error
naming the location, nothing partial left in the store or the outbox, and the next run succeeds
once there is space again. Each location is a small tmpfs (mounted for the test, made larger
with a remount, which keeps its files, to "free space")."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dagster import instance_for_test

from stereospot_pipeline.defs.resources import build_resources
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.stereo.params import StereoParams
from stereospot_pipeline_tests.clips import make_clip
from stereospot_pipeline_tests.conftest import convert, metadata, outbox_file
from stereospot_pipeline_tests.test_resume import _frames, _same_frames

STEREOSPOT = str(Path(sys.executable).with_name("stereospot"))
SEGMENT_SECONDS = 0.5
PAGE = 4096
MARGIN = 64 * 1024


@contextmanager
def small_filesystem(path: Path, size: int) -> Iterator:
    """A tmpfs of ``size`` bytes at ``path``; yields a function that gives it more room."""
    assert os.geteuid() == 0, "mounting the small test filesystem (tmpfs) needs root"
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield lambda: subprocess.run(["mount", "-o", "remount,size=256m", str(path)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _on_disk(paths) -> int:
    return sum(math.ceil(p.stat().st_size / PAGE) * PAGE for p in paths if p.is_file())


# High quality, so the joined file outgrows the cut pieces (which carry a pre-roll each).
LARGE = StereoParams(crf=8)


@pytest.fixture(scope="module")
def sized(tmp_path_factory) -> dict:
    """A 4-segment clip converted once without limits, at the CLI's defaults and with LARGE
    segments: what each location needs, and the frames to compare with."""
    folder = tmp_path_factory.mktemp("disk-full")
    clip = make_clip(folder / "VID_0001.mp4", seconds=2.0, fps=10, gop=5, size="320x180")
    sizes = {"clip": clip}
    with instance_for_test() as instance:
        for name, params in (("default", StereoParams()), ("large", LARGE)):
            home = folder / name
            _, result = convert(instance, build_resources(Settings(home=home)), clip,
                                segment_seconds=SEGMENT_SECONDS, params=params)
            assert result.success
            sizes[f"{name}_frames"] = _frames(metadata(result, "published_video")["output"])
    store = folder / "large" / "store"
    stereo = sorted((store / "stereo").rglob("*.mp4"))
    final = next((store / "final").rglob("*.mp4"))
    assert len(stereo) == 4
    return {
        **sizes,
        # Everything the store holds before the stereo segments, then half of them.
        "store": _on_disk(p for p in store.rglob("*") if "stereo" not in p.parts and "final" not in p.parts)
        + MARGIN + _on_disk(stereo) // 2,
        # The temporary folder holds the cut pieces, then one stereo segment, then the joined file.
        "tmp": max(_on_disk((store / "segments").rglob("*.nut")), _on_disk(stereo[:1])) + MARGIN,
        "joined": final.stat().st_size,
        "outbox": next((folder / "default" / "store" / "final").rglob("*.mp4")).stat().st_size // 2,
    }


def _failure_text(result) -> str:
    texts = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            while error is not None:
                texts.append(error.message)
                error = error.cause
    return " | ".join(texts)


def _partials(*folders: Path) -> list[Path]:
    return [p for f in folders if f.exists() for p in f.rglob("*") if ".partial" in p.name]


@pytest.mark.parametrize("where", ["segment", "join"])
def test_a_full_disk_names_the_location_leaves_nothing_partial_and_the_next_run_succeeds(
        tmp_path, sized, where, monkeypatch):
    small = tmp_path / "small"
    home = tmp_path / "home"
    if where == "segment":
        settings, size = Settings(home=home, store_url=str(small)), sized["store"]
    else:
        assert sized["tmp"] < sized["joined"], sized
        settings, size = Settings(home=home), sized["tmp"]
    with small_filesystem(small, size) as free_space, instance_for_test() as instance:
        if where == "join":
            monkeypatch.setattr(tempfile, "tempdir", str(small))
        resources = build_resources(settings)
        _, result = convert(instance, resources, sized["clip"], segment_seconds=SEGMENT_SECONDS, params=LARGE)
        assert not result.success
        text = _failure_text(result)
        assert f"no space left writing {small}/" in text and "free space there and run again" in text, text
        failed_step = next(e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert ("render_stereo_segment" in failed_step) if where == "segment" else failed_step == "final_video"
        outbox, store = home / "outbox", Path(resources["store"].root)
        assert _partials(store, outbox, small) == []
        assert not outbox.exists() or not list(outbox.iterdir())
        # Every stored stereo segment is complete (it has its record, written after it).
        for segment in (store / "stereo").rglob("0*.mp4"):
            assert segment.with_suffix(".json").is_file()
        free_space()
        _, again = convert(instance, resources, sized["clip"], segment_seconds=SEGMENT_SECONDS, params=LARGE)
        assert again.success
        _same_frames(_frames(outbox_file(outbox, "VID_0001")), sized["large_frames"])
        assert _partials(store, outbox, small) == []
    print(f"\ndisk full at the {where}: {text.split(' | ')[0]}")


def test_a_full_outbox_fails_the_cli_conversion_with_a_clear_message(tmp_path, sized):
    small = tmp_path / "outbox"
    env = {**os.environ, "STEREOSPOT_HOME": str(tmp_path / "home"), "STEREOSPOT_OUTBOX_URL": str(small)}
    env.pop("DAGSTER_HOME", None)
    command = [STEREOSPOT, "convert", str(sized["clip"]), "--segment-seconds", str(SEGMENT_SECONDS)]
    with small_filesystem(small, sized["outbox"]) as free_space:
        failed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert failed.returncode == 1, failed.stderr[-3000:]
        assert "published_video: no space left writing " in failed.stderr, failed.stderr[-3000:]
        assert f"{small}/VID_0001-" in failed.stderr and "free space there and run again" in failed.stderr
        assert list(small.iterdir()) == []  # not even a temp file
        free_space()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "reused 4 of 4 segment(s)" in done.stdout
        _same_frames(_frames(outbox_file(small, "VID_0001")), sized["default_frames"])
        assert [p.name for p in small.iterdir() if p.name.startswith(".")] == []
    line = next(l for l in failed.stderr.splitlines() if l.strip().startswith("published_video: no space"))
    print(f"\ndisk full at publishing, as the CLI says it:\n{line.strip()}")
