"""One settings format for `convert --settings`, `add --settings`, the UI's run config and inbox
folders (stereospot.toml)."""

from __future__ import annotations

import pytest
import yaml
from dagster import build_sensor_context

from stereospot_pipeline.definitions import build_definitions
from stereospot_pipeline.defs.assets.segments import SegmentsConfig
from stereospot_pipeline.defs.assets.stereo import StereoConfig
from stereospot_pipeline.defs.inbox import LocalInbox, inbox_sensor
from stereospot_pipeline.defs.video_settings import run_config
from stereospot_pipeline.errors import StereospotError
from stereospot_pipeline.ingest import load_settings
from stereospot_pipeline.settings_file import folder_settings, read_settings_file
from stereospot_pipeline.stereo.params import Layout, StereoParams
from stereospot_pipeline_tests.clips import make_clip
from stereospot_pipeline_tests.test_inbox_sensor import _age

TOML = """
[stereo]
layout = "half-sbs"
divergence = "auto"
convergence = 0.4
method = "BACKWARD"
flip_tta = true
[segments]
segment_seconds = 5
start = "1:30"
max_fps = 24
[comfort]
blocking = true
"""

# The same settings as a Launchpad run config of the conversion (what the README documents).
RUN_CONFIG = """
ops:
  segments: {config: {segment_seconds: 5, start: 90, max_fps: 24}}
  stereo_segments:
    ops:
      plan_stereo_segments:
        config: {layout: HALF_SBS, auto_divergence: true, convergence: 0.4, method: BACKWARD, flip_tta: true}
  final_video_comfortable_disparity: {config: {blocking: true}}
"""


def _op_config(config: dict, *path: str) -> dict:
    node = config
    for step in path[:-1]:
        node = node["ops"][step]
    return node["ops"][path[-1]]["config"]


def _dagster_values(config: dict) -> dict:
    """Run-config values as an op sees them (Dagster gives enums by member name)."""
    return {k: (Layout[v].value if k == "layout" else v.lower() if k == "method" else v) for k, v in config.items()}


def test_a_toml_file_and_the_equivalent_run_config_give_the_same_settings(tmp_path):
    path = tmp_path / "stereospot.toml"
    path.write_text(TOML)
    from_file = run_config(read_settings_file(path))
    by_hand = yaml.safe_load(RUN_CONFIG)
    stereo = [StereoConfig(**_dagster_values(_op_config(c, "stereo_segments", "plan_stereo_segments"))).stereo_params()
              for c in (from_file, by_hand)]
    assert stereo[0] == stereo[1]
    assert stereo[0].divergence == "auto" and stereo[0].layout is Layout.HALF_SBS and stereo[0].flip_tta
    assert stereo[0] != StereoParams()
    segments = [SegmentsConfig(**_op_config(c, "segments")) for c in (from_file, by_hand)]
    assert segments[0] == segments[1] and segments[0].start == 90.0
    assert from_file["ops"]["final_video_comfortable_disparity"] == by_hand["ops"]["final_video_comfortable_disparity"]
    # YAML settings (as `stereospot add --settings` always took) read the same way.
    as_yaml = tmp_path / "settings.yaml"
    as_yaml.write_text("stereo: {layout: half-sbs, divergence: auto, convergence: 0.4, method: backward, flip_tta: true}\n"
                       "segments: {segment_seconds: 5, start: '1:30', max_fps: 24}\ncomfort: {blocking: true}\n")
    assert read_settings_file(as_yaml) == read_settings_file(path)


@pytest.mark.parametrize("text, named", [
    ("[stereo]\nlayout = 'sideways'\n", ["stereospot.toml", "layout", "full-sbs"]),
    ("[stereo]\ndivergence = 40\n", ["stereospot.toml", "divergence", "less than or equal to 10"]),
    ("[stereo]\nstrength = 1\n", ["stereospot.toml", "strength", "divergence"]),
    ("[segment]\nsegment_seconds = 1\n", ["stereospot.toml", "segment", "segments"]),
    ("[segments]\nstart = 'soon'\n", ["stereospot.toml", "segments.start", "h:mm:ss"]),
    ("[stereo\n", ["stereospot.toml", "not a valid settings file"]),
])
def test_bad_settings_files_name_the_file_the_key_and_what_is_allowed(tmp_path, text, named):
    path = tmp_path / "stereospot.toml"
    path.write_text(text)
    with pytest.raises(StereospotError) as caught:
        read_settings_file(path)
    for part in named:
        assert part in str(caught.value)


def test_inbox_folders_convert_with_their_nearest_settings_file(instance, settings, resources, tmp_path):
    inbox_dir = settings.resolved_home / "inbox"
    (inbox_dir / "anaglyph" / "2024").mkdir(parents=True)
    (inbox_dir / "anaglyph" / "stereospot.toml").write_text("[stereo]\nlayout = 'anaglyph'\n")
    assert folder_settings(inbox_dir / "anaglyph" / "2024" / "x.mp4", inbox_dir)[0] == {"stereo": {"layout": "anaglyph"}}
    assert folder_settings(inbox_dir / "x.mp4", inbox_dir) == ({}, None)
    for name, seconds in (("anaglyph/2024/deep.mp4", 0.5), ("plain.mp4", 0.6)):  # two contents
        _age(make_clip(inbox_dir / name, seconds=seconds, size="64x48"))
    context = build_sensor_context(instance=instance, definitions=build_definitions(settings),
                                   resources={"store": resources["store"], "inbox": LocalInbox(path=str(inbox_dir))})
    result = inbox_sensor(context)
    by_source = {r.tags["stereospot/source"]: r for r in result.run_requests}
    deep = by_source["deep.mp4"]
    assert deep.run_config == {"ops": {"stereo_segments": {"ops": {"plan_stereo_segments": {
        "config": {"layout": "ANAGLYPH"}}}}}}
    assert deep.tags["stereospot/settings-file"] == "anaglyph/stereospot.toml"
    assert load_settings(resources["store"], deep.partition_key) == {"stereo": {"layout": "anaglyph"}}
    assert by_source["plain.mp4"].run_config == {}
