"""The S3 inbox sensor against a real S3 protocol server (moto on loopback)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from dagster import DagsterInstance, SensorResult, build_sensor_context

from stereospot_pipeline.definitions import build_definitions
from stereospot_pipeline.defs.inbox import inbox_sensor
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.defs.s3_sensor import S3Inbox, s3_inbox_sensor, s3_video_id
from stereospot_pipeline.ingest import load_settings, partition_key, registry_key
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.storage import check_key
from stereospot_pipeline.storage.s3 import S3ObjectStore, s3_client
from stereospot_pipeline_tests.support.s3 import make_buckets


class Inbox:
    """One sensor under test: the definitions, resources and cursor carried between ticks."""

    def __init__(self, endpoint: str, tmp_path, max_per_tick: int = 10):
        make_buckets(endpoint, "in-bucket", "out-bucket")
        self.client = s3_client(endpoint)
        settings = Settings(home=tmp_path / "home", inbox_url="s3://in-bucket/incoming",
                            store_url="s3://out-bucket/work", outbox_url="s3://out-bucket/outputs",
                            s3_endpoint_url=endpoint, inbox_max_per_tick=max_per_tick)
        self.defs = build_definitions(settings)
        self.resources = {"inbox": S3Inbox(url=settings.inbox_url, endpoint_url=endpoint,
                                           max_per_tick=max_per_tick),
                          "store": S3ObjectStore.from_url(settings.store_url, endpoint_url=endpoint)}
        self.instance = DagsterInstance.ephemeral()
        self.cursor: str | None = None

    def upload(self, key: str, body: bytes = b"not really a video, but the sensor never reads it") -> str:
        return self.client.put_object(Bucket="in-bucket", Key=key, Body=body)["ETag"].strip('"')

    def tick(self) -> SensorResult:
        context = build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=self.defs,
                                       resources=self.resources)
        result = s3_inbox_sensor(context)
        self.cursor = result.cursor
        # What the daemon does with a result: add the requested partitions.
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result


def _added(result: SensorResult) -> list[str]:
    return [k for r in result.dynamic_partitions_requests or [] for k in r.partition_keys]


@pytest.fixture
def inbox(s3_endpoint, tmp_path) -> Inbox:
    return Inbox(s3_endpoint, tmp_path)


def test_an_s3_inbox_url_selects_the_s3_sensor(inbox, tmp_path):
    def inbox_sensors(defs) -> list[str]:  # the library and alert sensors are there either way
        return [s.name for s in defs.sensors if s.name.endswith("inbox_sensor")]

    assert inbox_sensors(inbox.defs) == ["s3_inbox_sensor"]
    assert inbox_sensors(build_definitions(Settings(home=tmp_path / "local"))) == [inbox_sensor.name]


def test_new_same_and_changed_uploads(inbox):
    etag = inbox.upload("incoming/Holiday Trip.MP4")
    first = inbox.tick()
    key = partition_key("Holiday Trip.MP4", s3_video_id(etag))
    assert _added(first) == [key] and [r.partition_key for r in first.run_requests] == [key]
    assert first.run_requests[0].run_key == f"{key}@{etag}"
    assert s3_inbox_sensor.job_name == "convert_video"
    registered = inbox.resources["store"].get_json(registry_key(key))
    assert registered["uri"] == "s3://in-bucket/incoming/Holiday Trip.MP4"
    assert registered["name"] == "Holiday Trip.MP4" and registered["size"] > 0

    # The same bytes again (a new LastModified, the same ETag): nothing to do.
    inbox.upload("incoming/Holiday Trip.MP4")
    again = inbox.tick()
    assert again.run_requests == [] and _added(again) == []

    # Changed content under the same name: a new ETag, so a new video.
    changed_etag = inbox.upload("incoming/Holiday Trip.MP4", b"edited cut")
    changed = inbox.tick()
    new_key = partition_key("Holiday Trip.MP4", s3_video_id(changed_etag))
    assert new_key != key and _added(changed) == [new_key]
    assert [r.run_key for r in changed.run_requests] == [f"{new_key}@{changed_etag}"]
    assert inbox.instance.get_dynamic_partitions(videos.name) == [key, new_key]

    # The same bytes under another name are the same video (one partition per content).
    inbox.upload("incoming/copy of the trip.mp4", b"edited cut")
    assert inbox.tick().run_requests == []


def test_non_videos_and_empty_objects_are_skipped_with_a_reason(inbox, capsys):
    inbox.upload("incoming/notes.txt")
    inbox.upload("incoming/folder/")
    inbox.upload("incoming/empty.mp4", b"")
    result = inbox.tick()
    assert result.run_requests == [] and _added(result) == []
    logged = capsys.readouterr().err  # the sensor's log goes to Dagster's console handler
    assert "skipped (not a video file, or empty)" in logged and "incoming/notes.txt" in logged
    # Skipped objects are remembered: the next tick neither logs nor looks at them again.
    assert inbox.tick().run_requests == [] and "notes.txt" not in capsys.readouterr().err


def test_prefixes_convert_with_their_nearest_settings_file(inbox):
    """As in a local inbox: the nearest stereospot.toml from the video's prefix up to the inbox
    prefix sets its conversion; a broken one holds its videos (and only them) until it is fixed."""
    inbox.upload("incoming/anaglyph/stereospot.toml", b"[stereo]\nlayout = 'anaglyph'\ndivergence = 'auto'\n")
    inbox.upload("incoming/stereospot.toml", b"[segments]\nsegment_seconds = 4\n")
    inbox.upload("incoming/broken/stereospot.toml", b"[stereo]\nlayout = 'sideways'\n")
    inbox.upload("incoming/anaglyph/2024/deep.mp4", b"one video")
    inbox.upload("incoming/plain.mp4", b"another video")
    inbox.upload("incoming/broken/held.mp4", b"a third video")
    first = inbox.tick()
    by_source = {r.tags["stereospot/source"]: r for r in first.run_requests}
    assert sorted(by_source) == ["deep.mp4", "plain.mp4"]
    deep, plain = by_source["deep.mp4"], by_source["plain.mp4"]
    assert deep.run_config == {"ops": {"stereo_segments": {"ops": {"plan_stereo_segments": {
        "config": {"layout": "ANAGLYPH", "auto_divergence": True}}}}}}
    assert deep.tags["stereospot/settings-file"] == "s3://in-bucket/incoming/anaglyph/stereospot.toml"
    assert load_settings(inbox.resources["store"], deep.partition_key) == {
        "stereo": {"layout": "anaglyph", "auto_divergence": True}}
    assert plain.run_config == {"ops": {"segments": {"config": {"segment_seconds": 4.0}}}}
    assert plain.tags["stereospot/settings-file"] == "s3://in-bucket/incoming/stereospot.toml"
    # Settings files are neither videos nor skipped noise.
    assert not any("stereospot.toml" in k for k in _added(first))

    assert inbox.tick().run_requests == []  # still broken: still held
    inbox.upload("incoming/broken/stereospot.toml", b"[stereo]\nlayout = 'half-tb'\n")
    fixed = inbox.tick()
    assert [r.tags["stereospot/source"] for r in fixed.run_requests] == ["held.mp4"]
    assert fixed.run_requests[0].run_config["ops"]["stereo_segments"]["ops"]["plan_stereo_segments"] == {
        "config": {"layout": "HALF_TB"}}


def test_hostile_keys_become_safe_partition_and_registry_keys(inbox):
    keys = ["incoming/../../etc/passwd.mp4", "incoming//leading-slash.mp4", "incoming/./dot.mkv",
            "incoming/" + "very long name " * 60 + ".mov", "incoming/ünïcødé (1) ,|*.webm"]
    for key in keys:
        inbox.upload(key, key.encode())
    result = inbox.tick()
    added = _added(result)
    assert len(added) == len(keys) == len(result.run_requests)
    for key in added:
        assert all(c.isascii() and (c.isalnum() or c in "-_") for c in key) and len(key) <= 51
        check_key(registry_key(key))
    uris = {inbox.resources["store"].get_json(registry_key(k))["uri"] for k in added}
    assert uris == {f"s3://in-bucket/{k}" for k in keys}


def test_a_large_backlog_is_worked_through_a_bounded_number_per_tick(s3_endpoint, tmp_path):
    inbox = Inbox(s3_endpoint, tmp_path, max_per_tick=10)
    for i in range(25):
        inbox.upload(f"incoming/clip-{i:02d}.mp4", f"clip {i}".encode())
    counts = [len(inbox.tick().run_requests) for _ in range(4)]
    assert counts == [10, 10, 5, 0]
    assert len(inbox.instance.get_dynamic_partitions(videos.name)) == 25


def test_the_cursor_trails_the_clock_and_forgets_old_objects(s3_endpoint, tmp_path):
    inbox = Inbox(s3_endpoint, tmp_path)
    inbox.resources["inbox"] = S3Inbox(url="s3://in-bucket/incoming", endpoint_url=s3_endpoint, lag_seconds=0)
    inbox.upload("incoming/a.mp4", b"bytes of a")
    assert len(inbox.tick().run_requests) == 1
    state = json.loads(inbox.cursor)
    # With no lag, the object is older than `since`, so the cursor does not keep it.
    assert datetime.fromisoformat(state["since"]) <= datetime.now(timezone.utc)
    assert state["seen"] == {}
    # A default lag keeps recent objects in `seen` so late listings are still deduplicated.
    inbox.resources["inbox"] = S3Inbox(url="s3://in-bucket/incoming", endpoint_url=s3_endpoint)
    inbox.cursor = json.dumps({"since": (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()})
    inbox.upload("incoming/b.mp4", b"other bytes")
    result = inbox.tick()
    assert len(result.run_requests) == 1  # a.mp4's partition already exists, b.mp4 is new
    assert set(json.loads(inbox.cursor)["seen"]) == {"incoming/a.mp4", "incoming/b.mp4"}
