"""The `stereospot` command as a user runs it, in a fresh state folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline_tests.clips import EXAMPLE, REPO, decode_all

STEREOSPOT = str(Path(sys.executable).with_name("stereospot"))


def _run(args: list[str], home: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "STEREOSPOT_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run([STEREOSPOT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_convert_the_shipped_example(tmp_path):
    out = tmp_path / "result" / "cockatoo_3d.mp4"
    proc = _run(["convert", str(EXAMPLE), "-o", str(out), "--segment-seconds", "3"], tmp_path / "home", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"done: {out}" in proc.stdout
    src = probe_video(EXAMPLE)
    assert f"{src.frames} frames, {2 * src.width}x{src.height} full-sbs" in proc.stdout
    frames, has_audio = decode_all(out)
    assert len(frames) == src.frames and has_audio
    assert (frames[0].width, frames[0].height) == (2 * src.width, src.height)
    # Progress, one line per converted segment when not on a terminal.
    assert "converting 3 segment(s)" in proc.stderr and "segment 3/3 converted" in proc.stderr
    # The run is in the persistent local instance, where the UI will show it.
    assert list((tmp_path / "home" / "dagster" / "storage").iterdir())


def test_convert_reports_bad_input_and_exits_nonzero(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 4096)
    proc = _run(["convert", str(bad)], tmp_path / "home", tmp_path)
    assert proc.returncode == 1
    assert str(bad) in proc.stderr and "not a readable video" in proc.stderr
    assert bad.read_bytes() == b"\x00" * 4096


def test_dg_check_defs(tmp_path):
    """The project is a `dg` project ([tool.dg] in pyproject.toml): the current commands work, with
    no superseded or virtual-environment warnings."""
    env = {**os.environ, "STEREOSPOT_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster")}
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_bytes((REPO / "dagster.yaml").read_bytes())
    dg = str(Path(sys.executable).with_name("dg"))
    proc = subprocess.run([dg, "check", "defs"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert output.strip().splitlines() == ["All component YAML validated successfully.",
                                           "All definitions loaded successfully."]
    listed = subprocess.run([dg, "list", "defs", "--json"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert listed.returncode == 0, listed.stderr[-3000:]
    for name in ("add_video", "convert_video", "delete_video", "convert_added_videos", "alert_on_run_failure",
                 "sweep_work_daily", "published_video"):
        assert f'"{name}"' in listed.stdout, name


def test_models_list_shows_licences_and_pull_without_network_says_what_to_do(tmp_path):
    models = tmp_path / "models"
    env_home = tmp_path / "home"
    proc = subprocess.run([STEREOSPOT, "models", "list"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "STEREOSPOT_MODELS_DIR": str(models), "STEREOSPOT_HOME": str(env_home)})
    assert proc.returncode == 0, proc.stderr
    assert "depth-anything-v2-small" in proc.stdout and "Apache-2.0" in proc.stdout
    assert "CC-BY-NC-4.0" in proc.stdout
    # No network here (and the endpoint is forced unreachable, so this holds anywhere).
    proc = subprocess.run([STEREOSPOT, "models", "pull", "depth-anything-v2-small"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "STEREOSPOT_MODELS_DIR": str(models),
                                            "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2",
                                            "HF_HUB_DOWNLOAD_TIMEOUT": "2"})
    assert proc.returncode == 1
    assert "depth-anything/Depth-Anything-V2-Small-hf" in proc.stderr and str(models) in proc.stderr
