"""`stereospot preview`: stereo stills and a sample clip to tune settings before a long job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline.stereo.params import Layout, StereoParams
from stereospot_pipeline.tuning import make_previews, parse_positions
from stereospot_pipeline_tests.clips import make_clip, stereo_types

STEREOSPOT = str(Path(sys.executable).with_name("stereospot"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("src") / "walk.mp4", seconds=4.0, fps=10, size="96x64")


def test_positions_parse_percentages_and_times():
    assert parse_positions("10%, 50%,1:30") == ["10%", "50%", "1:30"]
    for bad in ("", "half", "-5"):
        with pytest.raises(ValueError):
            parse_positions(bad)


def test_stills_and_sample_clip_follow_the_settings(tmp_path, clip):
    previews = make_previews(clip, StereoParams(layout=Layout.HALF_TB), ["25%", "3"], tmp_path / "p", clip_seconds=1.5)
    assert [p.name for p in previews.stills] == ["walk.at-1.0s_TB.png", "walk.at-3.0s_TB.png"]
    still = mpimg.imread(previews.stills[0])
    assert still.shape[:2] == (64, 96)  # half top-bottom: two squeezed eyes in the source's size
    top, bottom = still[:32], still[32:]
    assert not np.array_equal(top, bottom)  # two views, not one picture twice
    info = probe_video(previews.clip)
    assert previews.clip.name == "walk.sample-1.0s_TB.mp4"
    assert info.frames == 15 and (info.width, info.height) == (96, 64)
    assert stereo_types(previews.clip) == {2}  # top-bottom, told as the converted video will tell it


def test_preview_command_prints_the_files(tmp_path, clip):
    env = {**os.environ, "STEREOSPOT_HOME": str(tmp_path / "home")}
    proc = subprocess.run([STEREOSPOT, "preview", str(clip), "--at", "50%", "--clip-seconds", "1"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    paths = [Path(line) for line in proc.stdout.split()]
    assert [p.name for p in paths] == ["walk.at-2.0s_LRF_Full_SBS.png", "walk.sample-2.0s_LRF_Full_SBS.mp4"]
    assert all(p.is_file() and p.parent == tmp_path / "home" / "previews" / "walk" for p in paths)
    assert "1 still(s) and a sample clip" in proc.stderr

    proc = subprocess.run([STEREOSPOT, "preview", str(clip), "--at", "soon"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "'soon' is neither a percentage" in proc.stderr
