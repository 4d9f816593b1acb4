"""The CI door (`stereospot add` then `dg launch` / `dagster asset materialize`, run exactly as the
shipped workflow runs them), settings stored with a video, S3 sources added by hand, and stale
partitions after an engine change."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import av
import imageio_ffmpeg
import pytest
import yaml
from dagster import AssetKey, materialize
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from stereospot_pipeline.definitions import CONVERSION_ASSETS
from stereospot_pipeline.defs.assets.final import final_video, published_video
from stereospot_pipeline.defs.assets.stereo import ENGINE_VERSION, stereo_segments
from stereospot_pipeline.defs.videos import add_video_to_library
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.defs.s3_sensor import s3_video_id
from stereospot_pipeline.defs.video_settings import run_config, validate_settings
from stereospot_pipeline.errors import InvalidVideoError, StereospotError
from stereospot_pipeline.ingest import registry_key
from stereospot_pipeline.library import add_source
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.storage.s3 import s3_client
from stereospot_pipeline_tests.clips import EXAMPLE, REPO, make_clip
from stereospot_pipeline_tests.conftest import metadata, outbox_file
from stereospot_pipeline_tests.support.s3 import make_buckets

BIN = Path(sys.executable).parent
WORKFLOW = REPO / "examples" / "ci" / "convert-videos.yml"
SELECTION = "*published_video"


def _real_clip(dest: Path, start_s: float) -> Path:
    """Two seconds of the shipped real footage (cockatoo), scaled down so the test stays quick."""
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-ss", str(start_s), "-t", "2",
                    "-i", str(EXAMPLE), "-vf", "scale=320:180", "-c:v", "libx264", "-g", "10", "-c:a", "aac",
                    str(dest)], check=True)
    return dest


def _size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        return ctx.width, ctx.height


def _convert_step() -> str:
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["convert"]["steps"]
    return next(s for s in steps if s.get("name") == "Convert")["run"]


@pytest.mark.slow
def test_ci_commands_convert_with_the_blocking_checks_and_fail_when_one_fails(tmp_path):
    home = tmp_path / "ci" / ".stereospot"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "STEREOSPOT_HOME": str(home),
           "DAGSTER_HOME": str(home / "dagster"), "SETTINGS": str(REPO / "examples" / "ci" / "settings.yaml")}

    def shell(script: str, **extra) -> subprocess.CompletedProcess:
        started = time.monotonic()
        proc = subprocess.run(["bash", "-c", script], cwd=REPO, env={**env, **extra}, capture_output=True,
                              text=True, timeout=400)
        print(f"$ {script.strip()}\n[exit {proc.returncode} in {time.monotonic() - started:.1f}s]\n"
              f"{proc.stdout[-1500:]}{proc.stderr[-2500:]}")
        return proc

    def materialize_cli(key: str) -> subprocess.CompletedProcess:
        return shell(f"dagster asset materialize -m stereospot_pipeline.definitions --select '{SELECTION}' "
                     f"--partition {key}")

    # The workflow's Convert step, verbatim: add with the shipped settings, then `dg launch`.
    passing = _real_clip(tmp_path / "cockatoo_start.mp4", 0)
    proc = shell(_convert_step(), VIDEO=str(passing))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "superseded" not in (proc.stdout + proc.stderr).lower()
    assert (home / "dagster" / "dagster.yaml").read_bytes() == (REPO / "dagster.yaml").read_bytes()
    output = outbox_file(home / "outbox", "cockatoo_start", "_LR")
    assert _size(output) == (320, 180)  # half SBS, from the settings file
    key = next(iter((home / "store" / "sources").iterdir())).name
    # The older command converts the same partition (the stored settings apply to it too).
    proc = materialize_cli(key)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (home / "outbox").iterdir()) == [output.name]

    # Stronger stereo than the comfort budget allows: the blocking check fails, nothing is
    # published, and both commands exit non-zero.
    strong = tmp_path / "strong.yaml"
    strong.write_text("stereo: {divergence: 8.0}\ncomfort: {max_disparity_fraction: 0.03, blocking: true}\n")
    failing = _real_clip(tmp_path / "cockatoo_later.mp4", 4)
    add = shell(f'stereospot add "{failing}" --settings "{strong}"')
    key = add.stdout.strip()
    # Only the key on stdout, so KEY=$(stereospot add ...) works.
    assert add.returncode == 0 and add.stdout == f"{key}\n" and key.startswith("cockatoo-later-")
    proc = materialize_cli(key)
    assert proc.returncode != 0
    assert "comfortable_disparity" in proc.stderr and "% of the width (limit 3.00%)" in proc.stderr
    proc = shell(f"dg launch --assets '{SELECTION}' --partition {key}")
    assert proc.returncode != 0 and "comfortable_disparity" in proc.stderr
    assert sorted(p.name for p in (home / "outbox").iterdir()) == [output.name]


def test_stored_settings_apply_and_the_run_config_wins(instance, resources, tmp_path):
    store = resources["store"]
    clip = make_clip(tmp_path / "walk.mp4", seconds=2.0, size="96x64", gop=5)
    settings = validate_settings({"stereo": {"layout": "half-sbs", "divergence": 3.0},
                                  "segments": {"segment_seconds": 1.0}}, "test")
    key = add_video_to_library(instance, store, str(clip), settings, Settings(home=tmp_path / "home"))
    assert instance.has_dynamic_partition(videos.name, key)

    plain = materialize(CONVERSION_ASSETS, instance=instance, partition_key=key, resources=resources)
    final = metadata(plain, "final_video")
    assert (final["layout"], float(final["divergence"]), final["width"]) == ("half-sbs", 3.0, 96)
    assert metadata(plain, "segments")["count"] == 2  # segment_seconds from the stored settings

    # Given in the run config: that wins, the rest still comes from the stored settings.
    config = {"ops": {"stereo_segments": {"ops": {"plan_stereo_segments": {"config": {"layout": "FULL_TB"}}}}}}
    explicit = materialize(CONVERSION_ASSETS, instance=instance, partition_key=key, resources=resources,
                           run_config=config)
    final = metadata(explicit, "final_video")
    assert (final["layout"], float(final["divergence"]), final["height"]) == ("full-tb", 3.0, 128)
    # What the sensor passes as run config is the stored settings, in Dagster's enum names.
    assert run_config(settings) == {"ops": {
        "segments": {"config": {"segment_seconds": 1.0}},
        "stereo_segments": {"ops": {"plan_stereo_segments": {"config": {"layout": "HALF_SBS", "divergence": 3.0}}}}}}
    assert final["storage_url"].startswith("file:///") and Path(final["storage_location"]).is_file()


def test_bad_settings_are_refused_with_the_reason():
    with pytest.raises(StereospotError, match="unknown settings section 'stero'"):
        validate_settings({"stero": {}}, "s.yaml")
    with pytest.raises(StereospotError, match="unknown field.*layot"):
        validate_settings({"stereo": {"layot": "x"}}, "s.yaml")
    with pytest.raises(StereospotError, match="s.yaml: invalid 'stereo' settings: divergence"):
        validate_settings({"stereo": {"divergence": 50}}, "s.yaml")


def test_an_s3_object_added_by_hand_is_the_video_the_upload_sensor_would_register(s3_endpoint, resources, tmp_path):
    make_buckets(s3_endpoint, "in-bucket")
    client = s3_client(s3_endpoint)
    clip = make_clip(tmp_path / "drone.mp4", seconds=1.0, size="64x48")
    client.upload_file(str(clip), "in-bucket", "incoming/trip/drone.mp4")
    settings = Settings(home=tmp_path / "home", s3_endpoint_url=s3_endpoint)
    key = add_source(resources["store"], "s3://in-bucket/incoming/trip/drone.mp4", settings)
    etag = client.head_object(Bucket="in-bucket", Key="incoming/trip/drone.mp4")["ETag"].strip('"')
    reg = resources["store"].get_json(registry_key(key))
    assert reg["uri"] == "s3://in-bucket/incoming/trip/drone.mp4" and reg["sha256"] == s3_video_id(etag)
    with pytest.raises(InvalidVideoError, match="no such object"):
        add_source(resources["store"], "s3://in-bucket/incoming/missing.mp4", settings)


def test_an_engine_change_marks_converted_partitions_stale(instance, resources, tmp_path):
    clip = make_clip(tmp_path / "engine.mp4", seconds=1.0, size="64x48")
    key = add_video_to_library(instance, resources["store"], str(clip), {}, Settings(home=tmp_path / "home"))
    assert materialize(CONVERSION_ASSETS, instance=instance, partition_key=key, resources=resources).success
    assets = [a for a in CONVERSION_ASSETS if hasattr(a, "specs")]
    stereo = AssetKey("stereo_segments")
    now = get_stale_status_resolver(instance, assets)
    assert stereo_segments.specs_by_key[stereo].code_version == ENGINE_VERSION
    assert now.get_status(stereo, key) == StaleStatus.FRESH

    # The next engine version, as a new release of the code would declare it.
    made_by_engine = {*stereo_segments.keys, *final_video.keys, *published_video.keys}
    newer = [a.map_asset_specs(lambda spec: spec.replace_attributes(code_version=f"{ENGINE_VERSION}+1"))
             if set(a.keys) & made_by_engine else a for a in assets]
    after = get_stale_status_resolver(instance, newer)
    for name in ("stereo_segments", "final_video", "published_video"):
        assert after.get_status(AssetKey(name), key) == StaleStatus.STALE, name
    # What the engine does not make stays fresh: the source copy and its segments.
    assert after.get_status(AssetKey("source_video"), key) == StaleStatus.FRESH
    assert after.get_status(AssetKey("segments"), key) == StaleStatus.FRESH
