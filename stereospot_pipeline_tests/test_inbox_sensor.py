"""The local inbox sensor, evaluated against a real instance (partition requests applied by hand,
as the daemon would)."""

from __future__ import annotations

import os
import shutil
import time

from dagster import build_sensor_context

from stereospot_pipeline.definitions import build_definitions
from stereospot_pipeline.defs.inbox import LocalInbox, inbox_sensor
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline_tests.clips import make_clip


def _tick(instance, defs, resources, inbox, cursor):
    context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                   resources={"store": resources["store"], "inbox": inbox})
    result = inbox_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _age(path, seconds=60):
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_inbox_registers_each_content_once(instance, settings, resources, tmp_path):
    defs = build_definitions(settings)
    inbox_dir = settings.resolved_home / "inbox"
    inbox_dir.mkdir(parents=True)
    inbox = LocalInbox(path=str(inbox_dir), settle_seconds=2.0)
    clip = make_clip(tmp_path / "clip.mp4", seconds=1.0)

    first = inbox_dir / "Holiday Clip.mp4"
    shutil.copy(clip, first)
    result = _tick(instance, defs, resources, inbox, None)
    assert not result.run_requests, "a file modified just now may still be being copied in"
    _age(first)
    result = _tick(instance, defs, resources, inbox, result.cursor)
    assert len(result.run_requests) == 1
    key = result.run_requests[0].partition_key
    assert key.startswith("holiday-clip-") and set(key) <= set("abcdefghijklmnopqrstuvwxyz0123456789-_")
    assert result.run_requests[0].run_key == key
    assert instance.get_dynamic_partitions(videos.name) == [key]

    # The same file, and the same content dropped again under another name: nothing new.
    again = _tick(instance, defs, resources, inbox, result.cursor)
    assert not again.run_requests
    copy = inbox_dir / "holiday copy.mp4"
    shutil.copy(clip, copy)
    _age(copy)
    again = _tick(instance, defs, resources, inbox, again.cursor)
    assert not again.run_requests
    assert instance.get_dynamic_partitions(videos.name) == [key]

    # A changed file is a new video.
    make_clip(first, seconds=1.5)
    _age(first, 30)
    changed = _tick(instance, defs, resources, inbox, again.cursor)
    assert len(changed.run_requests) == 1 and changed.run_requests[0].partition_key != key

    # Non-video files are skipped, not registered.
    notes = inbox_dir / "notes.txt"
    notes.write_text("hello")
    _age(notes)
    skipped = _tick(instance, defs, resources, inbox, changed.cursor)
    assert not skipped.run_requests
    assert len(instance.get_dynamic_partitions(videos.name)) == 2


def test_inbox_work_per_tick_is_bounded(instance, settings, resources, tmp_path):
    defs = build_definitions(settings)
    inbox_dir = tmp_path / "inbox"
    inbox_dir.mkdir()
    inbox = LocalInbox(path=str(inbox_dir), settle_seconds=0.0, max_per_tick=2)
    clip = make_clip(tmp_path / "c.mp4", seconds=0.5, audio=False)
    data = clip.read_bytes()
    for i in range(5):
        (inbox_dir / f"v{i}.mp4").write_bytes(data + bytes([i]))  # distinct content each
    counts, cursor = [], None
    for _ in range(4):
        result = _tick(instance, defs, resources, inbox, cursor)
        counts.append(len(result.run_requests))
        cursor = result.cursor
    assert counts == [2, 2, 1, 0]
