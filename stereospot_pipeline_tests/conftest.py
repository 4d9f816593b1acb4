from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance, instance_for_test, materialize

from stereospot_pipeline.definitions import CONVERSION_ASSETS
from stereospot_pipeline.defs.assets.stereo import stereo_run_config
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.defs.resources import build_resources
from stereospot_pipeline.ingest import register_local_file
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.stereo.params import StereoParams
from stereospot_pipeline_tests.clips import REPO, real_clips

# Shared fixtures: a moto S3 server on loopback (s3_endpoint, aws_env), a throwaway PostgreSQL.
pytest_plugins = ["stereospot_pipeline_tests.support.s3", "stereospot_pipeline_tests.support.postgres"]


@pytest.fixture(scope="session")
def corpus() -> dict[str, Path]:
    return real_clips(REPO / ".real-clips")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def resources(settings: Settings) -> dict:
    return build_resources(settings)


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


def convert(instance: DagsterInstance, resources: dict, path: Path, *, segment_seconds: float = 10.0,
            params: StereoParams | None = None, **stereo_options):
    """Register ``path`` as a partition and materialize the four conversion assets for it."""
    key = register_local_file(resources["store"], path)
    if not instance.has_dynamic_partition(videos.name, key):
        instance.add_dynamic_partitions(videos.name, [key])
    config = stereo_run_config(params or StereoParams())
    config.update(stereo_options)
    result = materialize(
        CONVERSION_ASSETS, instance=instance, partition_key=key, resources=resources, raise_on_error=False,
        run_config={"ops": {
            "segments": {"config": {"segment_seconds": segment_seconds}},
            "stereo_segments": {"ops": {"plan_stereo_segments": {"config": config}}},
        }},
    )
    return key, result


def metadata(result, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise KeyError(asset)


def outbox_file(folder: Path, stem: str, suffix: str = "_LRF_Full_SBS") -> Path:
    """The one output of source ``stem`` in ``folder``: ``<stem>-<content+settings tag><suffix>.mp4``."""
    import re

    found = [p for p in folder.glob("*.mp4") if re.fullmatch(rf"{re.escape(stem)}-[0-9a-f]{{6}}{suffix}\.mp4", p.name)]
    assert len(found) == 1, f"outputs of {stem} in {folder}: {sorted(p.name for p in folder.glob('*'))}"
    return found[0]
