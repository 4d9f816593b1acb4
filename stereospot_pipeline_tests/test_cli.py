"""The `stereospot` command as a user runs it, in a fresh state folder."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline_tests.clips import EXAMPLE, REPO, decode_all
from stereospot_pipeline_tests.support.http import Answer, loopback_http
from stereospot_pipeline_tests.support.tiny_models import saved_depth_anything

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


def _hub(model: Path, repo: str, sha: str) -> dict[str, Answer]:
    """What the Hugging Face Hub answers for a download of ``model``'s files as repo ``repo``."""
    files = sorted(model.iterdir())
    routes = {
        f"/api/models/{repo}/revision/main": Answer(json.dumps(
            {"id": repo, "sha": sha, "siblings": [{"rfilename": f.name} for f in files]}).encode(), "application/json"),
        f"/api/models/{repo}/tree/{sha}?recursive=true&expand=false": Answer(json.dumps(
            [{"type": "file", "path": f.name, "size": f.stat().st_size, "oid": hashlib.sha1(f.read_bytes()).hexdigest()}
             for f in files]).encode(), "application/json"),
    }
    for f in files:
        data = f.read_bytes()
        routes[f"/{repo}/resolve/{sha}/{f.name}"] = Answer(data, "application/octet-stream", headers={
            "X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'})
    return routes


def test_models_pull_shows_progress_and_installs_a_model_auto_then_uses(tmp_path):
    """`models pull` from a Hub on loopback (the weights: a tiny Depth Anything): byte progress
    bars while it downloads, then the model is installed, loads, and is what auto picks."""
    repo, sha = "depth-anything/Depth-Anything-V2-Small-hf", "0123456789abcdef" * 2 + "01234567"
    model = saved_depth_anything(tmp_path / "published")
    size = sum(f.stat().st_size for f in model.iterdir())
    models = tmp_path / "models"
    env = {**os.environ, "STEREOSPOT_MODELS_DIR": str(models), "HF_HOME": str(tmp_path / "hf")}
    with loopback_http(_hub(model, repo, sha)) as hub:
        proc = subprocess.run([STEREOSPOT, "models", "pull", "depth-anything-v2-small"], capture_output=True,
                              text=True, timeout=180, env={**env, "HF_ENDPOINT": hub.url})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"installed depth-anything-v2-small in {models / 'depth-anything-v2-small'}" in proc.stdout
    # A bar over the files and bars over the bytes, to the model's size (tqdm's kB are 1000 bytes).
    assert "Fetching 2 files: 100%" in proc.stderr and "2/2" in proc.stderr, proc.stderr
    assert f"{size / 1000:.0f}kB" in proc.stderr, proc.stderr
    for f in model.iterdir():
        assert (models / "depth-anything-v2-small" / f.name).read_bytes() == f.read_bytes()
    listed = subprocess.run([STEREOSPOT, "models", "list"], capture_output=True, text=True, timeout=120, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "--depth-model auto uses: depth model: depth-anything-v2-small (auto)" in listed.stdout, listed.stdout
