"""Deleting a video (the delete_video job, `stereospot delete`) removes its partition, work objects
and outputs, locally and on S3, and keeps its cost history; stale local work objects are swept."""

from __future__ import annotations

import re

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import AssetMaterialization, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from stereospot_pipeline import keys
from stereospot_pipeline.analytics.gather import gather
from stereospot_pipeline.cli import open_instance
from stereospot_pipeline.definitions import build_definitions
from stereospot_pipeline.defs.library import delete_video, sweep_work_objects
from stereospot_pipeline.defs.videos import remove_video
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.defs.resources import build_resources
from stereospot_pipeline.errors import StereospotError
from stereospot_pipeline.ingest import content_key, file_sha256, register_local_file, registry_key
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.storage.s3 import s3_client
from stereospot_pipeline_tests.clips import make_clip
from stereospot_pipeline_tests.conftest import convert, metadata, outbox_file
from stereospot_pipeline_tests.support.s3 import make_buckets

STEREOSPOT = str(Path(sys.executable).with_name("stereospot"))


def test_the_delete_job_removes_a_video_and_keeps_its_history(instance, resources, settings, tmp_path):
    store, outbox = resources["store"], resources["outbox"]
    gone = make_clip(tmp_path / "gone.mp4", seconds=1.0, size="96x64")
    kept = make_clip(tmp_path / "kept.mp4", seconds=1.0, size="64x48", audio=False)
    key, result = convert(instance, resources, gone)
    other, other_result = convert(instance, resources, kept)
    assert result.success and other_result.success
    output = Path(metadata(result, "published_video")["output"])
    assert output.is_file() and metadata(result, "published_video")["outbox_key"] == output.name

    run = delete_video.execute_in_process(
        run_config={"ops": {"delete_video_files": {"config": {"video": key}}}},
        resources={"store": store, "outbox": outbox}, instance=instance)
    assert run.success

    root = Path(store.root)
    assert not any((root / prefix).exists() for prefix in keys.work_prefixes(key))
    assert not store.exists(registry_key(key)) and not store.exists(content_key(file_sha256(gone)))
    assert not output.exists() and gone.is_file()  # the source itself is never touched
    assert not instance.has_dynamic_partition(videos.name, key)
    # The other video is untouched.
    assert instance.has_dynamic_partition(videos.name, other) and store.exists(registry_key(other))
    assert Path(metadata(other_result, "published_video")["output"]).is_file()
    # Its conversion stays in the analytics (cost history is read from the instance's records).
    assert {c.video for c in gather(instance)} == {key, other}
    # The same bytes can be added again later, as a new video.
    assert register_local_file(store, gone) == key

    with pytest.raises(StereospotError, match="no video 'nothing-0000000000'"):
        remove_video(instance, store, outbox, "nothing-0000000000")
    create_run_for_test(instance, status=DagsterRunStatus.STARTED, tags={"dagster/partition": other})
    with pytest.raises(StereospotError, match="is being converted"):
        remove_video(instance, store, outbox, other)
    assert store.exists(registry_key(other))


def test_an_output_name_another_video_now_uses_is_kept(instance, resources):
    store, outbox = resources["store"], resources["outbox"]
    for key in ("one-1111111111", "two-2222222222"):
        store.put_json({"key": key, "sha256": key}, registry_key(key))
    instance.add_dynamic_partitions(videos.name, ["one-1111111111", "two-2222222222"])

    def published(key: str, name: str) -> None:
        outbox.put_bytes(b"video", name)
        instance.report_runless_asset_event(AssetMaterialization(
            "published_video", partition=key, metadata={"outbox_key": name}))

    published("one-1111111111", "old_name.mp4")
    published("one-1111111111", "shared.mp4")
    published("two-2222222222", "shared.mp4")  # the other video published under the same name since
    remove_video(instance, store, outbox, "one-1111111111")
    assert not outbox.exists("old_name.mp4") and outbox.exists("shared.mp4")


def test_delete_on_s3_removes_work_objects_and_outputs(s3_endpoint, instance, tmp_path):
    make_buckets(s3_endpoint, "out-bucket")
    settings = Settings(home=tmp_path / "home", store_url="s3://out-bucket/work",
                        outbox_url="s3://out-bucket/outputs", s3_endpoint_url=s3_endpoint)
    resources = build_resources(settings)
    clip = make_clip(tmp_path / "cloud.mp4", seconds=1.0, size="64x48")
    key, result = convert(instance, resources, clip)
    assert result.success
    client = s3_client(s3_endpoint)

    def listed() -> list[str]:
        return [o["Key"] for o in client.list_objects_v2(Bucket="out-bucket").get("Contents", [])]

    published = metadata(result, "published_video")
    name = published["outbox_key"]
    assert re.fullmatch(r"cloud-[0-9a-f]{6}_LRF_Full_SBS\.mp4", name)
    assert published["output"] == f"s3://out-bucket/outputs/{name}"
    assert published["output_url"].startswith(f"{s3_endpoint}/out-bucket/outputs/{name}?")
    assert any(key in k for k in listed())

    removed = remove_video(instance, resources["store"], resources["outbox"], key)
    assert f"s3://out-bucket/outputs/{name}" in removed
    assert [k for k in listed() if key in k or k.startswith("outputs/")] == []


def _cli(args: list[str], home: Path, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "STEREOSPOT_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run([STEREOSPOT, *args], env=env, cwd=home.parent, input=stdin, capture_output=True,
                          text=True, timeout=300)


def test_stereospot_delete_asks_first_and_keeps_the_history(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("STEREOSPOT_HOME", str(home))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    settings = Settings()
    clip = make_clip(tmp_path / "Beach Day.mp4", seconds=1.0, size="64x48")
    # Converted in this process, into the same persistent instance the CLI opens.
    key, result = convert(open_instance(settings), build_resources(settings), clip)
    assert result.success
    output = outbox_file(home / "outbox", "Beach Day")

    declined = _cli(["delete", str(clip)], home, stdin="n\n")
    assert declined.returncode == 1 and "nothing deleted" in declined.stderr
    assert f"video {key}:" in declined.stderr and output.name in declined.stderr
    assert output.is_file()

    deleted = _cli(["delete", key, "--yes"], home)
    assert deleted.returncode == 0, deleted.stderr
    assert f"deleted video {key}" in deleted.stdout and not output.exists()
    assert not (home / "store" / "sources" / key).exists() and clip.is_file()

    assert [c.video for c in gather(open_instance(settings))] == [key]  # its cost history stays


def _age(folder: Path, days: float) -> None:
    stamp = time.time() - days * 86400
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (stamp, stamp))


def test_the_sweep_removes_old_work_objects_only(instance, resources, tmp_path):
    store = resources["store"]
    root = Path(store.root)
    for key in ("old-1111111111", "recent-2222222222", "busy-3333333333"):
        for prefix in keys.work_prefixes(key):
            store.put_bytes(b"x", f"{prefix}/part.bin")
        store.put_json({"key": key}, registry_key(key))
        store.put_bytes(b"v", keys.download(key, ".mp4"))
    for key, days in (("old-1111111111", 9), ("recent-2222222222", 2), ("busy-3333333333", 30)):
        for prefix in keys.work_prefixes(key):
            _age(root / prefix, days)
    # One recent object keeps a whole video: it is swept as a unit or not at all.
    _age(root / "stereo" / "recent-2222222222", 30)
    create_run_for_test(instance, status=DagsterRunStatus.STARTED, tags={"dagster/partition": "busy-3333333333"})

    run = sweep_work_objects.execute_in_process(
        run_config={"ops": {"sweep_work": {"config": {"older_than_days": 7}}}}, resources={"store": store},
        instance=instance)
    assert run.success
    assert not any((root / p).exists() for p in keys.work_prefixes("old-1111111111"))
    for key in ("recent-2222222222", "busy-3333333333"):
        assert all((root / p / "part.bin").is_file() for p in keys.work_prefixes(key))
    for key in ("old-1111111111", "recent-2222222222", "busy-3333333333"):
        # Registrations and downloaded sources stay: the video can be converted again.
        assert store.exists(registry_key(key)) and store.exists(keys.download(key, ".mp4"))


def test_the_sweep_is_scheduled_for_local_stores_only(tmp_path):
    local = build_definitions(Settings(home=tmp_path / "home"))
    assert local.resolve_schedule_def("sweep_work_daily").cron_schedule == "17 3 * * *"
    cloud = build_definitions(Settings(home=tmp_path / "home", store_url="s3://bucket/work"))
    assert cloud.resolve_job_def("sweep_work_objects") and not cloud.get_repository_def().schedule_defs
