"""`stereospot convert` with settings from options and a file, and with several inputs, through
the real CLI: the run's config read back from the instance, skipping, the summary, the exit code."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from dagster import DagsterInstance, RunsFilter

from stereospot_pipeline.defs.assets.stereo import StereoConfig
from stereospot_pipeline.stereo.params import Layout
from stereospot_pipeline_tests.clips import make_clip
from stereospot_pipeline_tests.test_cli import REPO, STEREOSPOT


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "STEREOSPOT_HOME": str(home), "COLUMNS": "200"}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run([STEREOSPOT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_batch_convert_with_settings_file_and_options(tmp_path):
    home = tmp_path / "home"
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    make_clip(videos / "one.mp4", seconds=1.0, fps=10, size="64x48")
    make_clip(videos / "sub" / "two.mov", seconds=1.2, fps=10, size="64x48", audio=False)
    (videos / "sub" / "broken.mkv").write_bytes(b"\x1a\x45\xdf\xa3 not really a matroska file")
    (videos / "notes.txt").write_text("not a video: left out")
    settings = tmp_path / "settings.toml"
    settings.write_text("[stereo]\nlayout = 'half-sbs'\ndepth_model = 'heuristic'\nema_lookahead = 2\ncrf = 30\n"
                        "[segments]\nsegment_seconds = 5\n")
    options = ["--settings", str(settings), "--divergence", "3", "--convergence", "auto", "--crf", "28",
               "--preserve-screen-border", "--synthetic-view", "left", "--end", "0:00.9", "--max-fps", "5"]

    proc = _run(["convert", str(videos), *options], home)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one input failed
    summary = proc.stdout[proc.stdout.index("3 input(s)"):]
    rows = {line.split("│")[1].strip(): line for line in summary.splitlines() if line.startswith("│")}
    assert set(rows) == {str(videos / "one.mp4"), str(videos / "sub" / "two.mov"), str(videos / "sub" / "broken.mkv")}
    assert "converted" in rows[str(videos / "one.mp4")] and "failed" in rows[str(videos / "sub" / "broken.mkv")]
    assert "not a readable video" in proc.stderr
    outputs = sorted(p.name for p in (home / "outbox").glob("*.mp4"))
    assert len(outputs) == 2 and all(name.endswith("_LR.mp4") for name in outputs)

    # The runs' config in the instance: file values, overridden by the options, defaults elsewhere.
    instance = DagsterInstance.from_config(str(home / "dagster"))
    try:
        runs = [r for r in instance.get_runs(filters=RunsFilter(tags={"stereospot/source": "one.mp4"}))]
        assert len(runs) == 1
        config = runs[0].run_config["ops"]
        assert config["segments"]["config"] == {"segment_seconds": 5.0, "start": 0.0, "end": 0.9, "max_fps": 5.0}
        stereo = config["stereo_segments"]["ops"]["plan_stereo_segments"]["config"]
        assert stereo["layout"] == "HALF_SBS" and stereo["crf"] == 28
        params = StereoConfig(**{**stereo, "layout": Layout[stereo["layout"]]}).stereo_params()
        assert (params.divergence, params.convergence, params.preserve_screen_border, params.synthetic_view,
                params.ema_lookahead, params.depth_model) == (3.0, "auto", True, "left", 2, "heuristic")
    finally:
        instance.dispose()

    # Again, the two converted ones with the same settings: skipped; -o with several inputs refused.
    again = _run(["convert", str(videos / "one.mp4"), str(videos / "sub" / "two.mov"), *options], home)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("skipped") >= 4  # a line and a table row each
    refused = _run(["convert", str(videos), "-o", str(tmp_path / "x.mp4")], home)
    assert refused.returncode == 2 and "one input" in refused.stderr
