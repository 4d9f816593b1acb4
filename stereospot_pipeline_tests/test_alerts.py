"""Failed runs are reported to a Slack-compatible webhook (a real HTTP server on 127.0.0.1);
successful runs send nothing. The sensor is evaluated tick by tick as the daemon does."""

from __future__ import annotations

from dagster import DagsterInstance, build_sensor_context, materialize

from stereospot_pipeline.definitions import CONVERSION_ASSETS
from stereospot_pipeline.defs.alerts import alert_on_run_failure
from stereospot_pipeline.defs.library import add_video
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline_tests.clips import make_clip
from stereospot_pipeline_tests.support.http import loopback_http


def _tick(instance: DagsterInstance, cursor: str | None) -> str | None:
    data = alert_on_run_failure.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor))
    return data.cursor


def test_a_failed_conversion_is_posted_once_and_successes_are_not(instance, resources, tmp_path, monkeypatch):
    with loopback_http() as hook:
        monkeypatch.setenv("STEREOSPOT_ALERT_WEBHOOK_URL", f"{hook.url}/hook")
        monkeypatch.setenv("STEREOSPOT_UI_URL", "http://dagster.example:3000/")
        cursor = _tick(instance, None)  # the first tick starts watching from now

        # A run that succeeds: a video added through the add_video job.
        clip = make_clip(tmp_path / "fine.mp4", seconds=1.0, size="64x48")
        ok = add_video.execute_in_process(
            run_config={"ops": {"add_new_video": {"config": {"location": str(clip)}}}},
            resources={"store": resources["store"]}, instance=instance)
        assert ok.success
        # A run that fails: a partition added by hand, with no video registered behind it.
        instance.add_dynamic_partitions(videos.name, ["handmade-0123456789"])
        failed = materialize(CONVERSION_ASSETS, instance=instance, partition_key="handmade-0123456789",
                             resources=resources, raise_on_error=False, tags={"stereospot/source": "nothing.mp4"})
        assert not failed.success

        cursor = _tick(instance, cursor)
        assert len(hook.posts) == 1
        _tick(instance, cursor)
        assert len(hook.posts) == 1  # each failure once

    payload = hook.posts[0]
    assert set(payload) == {"text", "blocks"}
    text = payload["text"]
    assert "handmade-0123456789" in text and "(nothing.mp4)" in text
    assert "step source_video" in text and "is not registered" in text and "add_video" in text
    assert f"http://dagster.example:3000/runs/{failed.run_id}" in text
    blocks = " ".join(str(b) for b in payload["blocks"])
    assert "*Failed step*\\n`source_video`" in blocks and f"/runs/{failed.run_id}|" in blocks
    print(payload)


def test_no_webhook_configured_posts_nothing(instance, resources, monkeypatch):
    monkeypatch.delenv("STEREOSPOT_ALERT_WEBHOOK_URL", raising=False)
    with loopback_http() as hook:
        cursor = _tick(instance, None)
        instance.add_dynamic_partitions(videos.name, ["handmade-9876543210"])
        assert not materialize(CONVERSION_ASSETS, instance=instance, partition_key="handmade-9876543210",
                               resources=resources, raise_on_error=False).success
        _tick(instance, cursor)
    assert hook.posts == []
