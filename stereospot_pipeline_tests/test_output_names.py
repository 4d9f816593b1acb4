"""One output never silently replaces another: names are readable, keep the player suffix last, are
unique per (content, settings) and stable, and mirror the inbox's / input prefix's folders. Through
the CLI, the local inbox sensor and the S3 sensor."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from dagster import materialize

from stereospot_pipeline.definitions import CONVERSION_ASSETS, build_definitions
from stereospot_pipeline.defs.assets.final import output_key, output_name
from stereospot_pipeline.defs.inbox import LocalInbox
from stereospot_pipeline.defs.resources import build_resources
from stereospot_pipeline.ingest import registry_key
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.storage import LocalObjectStore
from stereospot_pipeline_tests.clips import decode_all, make_clip
from stereospot_pipeline_tests.test_inbox_sensor import _age, _tick
from stereospot_pipeline_tests.test_s3_sensor import Inbox

STEREOSPOT = str(Path(sys.executable).with_name("stereospot"))
NAME = re.compile(r"VID_0001-[0-9a-f]{6}_LRF_Full_SBS\.mp4")


def _width(path: Path) -> int:
    return decode_all(path)[0][0].width


def test_names_keep_the_player_suffix_last_and_fold_unsafe_characters():
    assert output_name("VID_0001.MP4", "_LRF_Full_SBS", "3f9a2c") == "VID_0001-3f9a2c_LRF_Full_SBS.mp4"
    assert output_name("Été à Paris (1).mov", "_LR", "000abc") == "Ete a Paris 1-000abc_LR.mp4"
    assert output_key("2024/../trip/ünï", "x.mp4") == "2024/trip/uni/x.mp4"
    assert output_key("", "x.mp4") == "x.mp4"


def test_the_cli_never_overwrites_another_videos_or_another_settings_output(tmp_path):
    """Two cameras' VID_0001.mp4, then the first again with other settings of the same layout:
    three outputs (a repeated conversion rewriting its own is checked through the inbox below)."""
    for folder in ("phone", "camera"):
        (tmp_path / folder).mkdir()
    first = make_clip(tmp_path / "phone" / "VID_0001.mp4", seconds=0.5, size="96x64")
    second = make_clip(tmp_path / "camera" / "VID_0001.mp4", seconds=0.5, size="128x72")
    env = {**os.environ, "STEREOSPOT_HOME": str(tmp_path / "home")}
    env.pop("DAGSTER_HOME", None)
    outbox = tmp_path / "home" / "outbox"

    def run(clip: Path, *options: str) -> Path:
        proc = subprocess.run([STEREOSPOT, "convert", str(clip), *options], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return Path(re.search(r"done: (\S.*\.mp4)", proc.stdout).group(1))

    a = run(first)
    b = run(second)
    stronger = run(first, "--divergence", "3.0")
    assert len({a, b, stronger}) == 3 and all(NAME.fullmatch(p.name) for p in (a, b, stronger))
    assert sorted(outbox.iterdir()) == sorted([a, b, stronger])
    assert (_width(a), _width(b), _width(stronger)) == (192, 256, 192)
    umask = os.umask(0o022)
    os.umask(umask)
    assert {stat.S_IMODE(p.stat().st_mode) for p in (a, b, stronger)} == {0o666 & ~umask}  # as cp would


def test_stored_files_get_the_permissions_cp_would_give(tmp_path):
    store = LocalObjectStore(root=str(tmp_path / "shared outbox"))
    before = os.umask(0o002)  # a group-shared folder
    try:
        store.put_bytes(b"x", "a/group.mp4")
        os.umask(0o077)  # a private one
        store.put_bytes(b"x", "a/private.mp4")
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "shared outbox" / "a" / "group.mp4").stat().st_mode) == 0o664
    assert stat.S_IMODE((tmp_path / "shared outbox" / "a" / "private.mp4").stat().st_mode) == 0o600


def test_the_inbox_mirrors_its_folders_and_keeps_same_named_videos_apart(instance, tmp_path):
    settings = Settings(home=tmp_path / "home")
    resources = build_resources(settings)
    inbox_dir = settings.resolved_home / "inbox"
    drops = {"VID_0001.mp4": "96x64", "2024/trip/VID_0001.mp4": "128x72", "other/VID_0001.mp4": "64x48"}
    for rel, size in drops.items():
        (inbox_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        _age(make_clip(inbox_dir / rel, seconds=0.5, size=size, audio=False))
    (inbox_dir / ".hidden").mkdir()
    _age(make_clip(inbox_dir / ".hidden" / "VID_0001.mp4", seconds=0.5, size="80x48", audio=False))
    inbox = LocalInbox(path=str(inbox_dir), settle_seconds=2.0)
    result = _tick(instance, build_definitions(settings), resources, inbox, None)
    assert len(result.run_requests) == 3
    for request in result.run_requests:
        assert materialize(CONVERSION_ASSETS, instance=instance, partition_key=request.partition_key,
                           resources=resources, raise_on_error=False).success
    outbox = settings.resolved_home / "outbox"
    outputs = sorted(str(p.relative_to(outbox)) for p in outbox.rglob("*.mp4"))
    folders = sorted(str(Path(p).parent) for p in outputs)
    assert folders == sorted([".", "2024/trip", "other"]) and all(NAME.fullmatch(Path(p).name) for p in outputs)
    widths = {str(Path(p).parent): _width(outbox / p) for p in outputs}
    assert widths == {".": 192, "2024/trip": 256, "other": 128}
    # Stable: the same conversion again rewrites its own output, nothing else.
    again = outbox / next(p for p in outputs if p.startswith("2024/"))
    before = again.stat().st_mtime_ns
    trip = next(r.partition_key for r in result.run_requests
                if resources["store"].get_json(registry_key(r.partition_key))["folder"] == "2024/trip")
    assert materialize(CONVERSION_ASSETS, instance=instance, partition_key=trip, resources=resources,
                       raise_on_error=False).success
    assert sorted(str(p.relative_to(outbox)) for p in outbox.rglob("*.mp4")) == outputs
    assert again.stat().st_mtime_ns > before


def test_s3_uploads_named_alike_under_different_prefixes_keep_their_own_outputs(s3_endpoint, instance, tmp_path,
                                                                                 monkeypatch):
    inbox = Inbox(s3_endpoint, tmp_path)
    for prefix, size in (("alice", "96x64"), ("bob/holiday", "128x72")):
        clip = make_clip(tmp_path / f"{size}.mp4", seconds=0.5, size=size, audio=False)
        inbox.upload(f"incoming/{prefix}/VID_0001.mp4", clip.read_bytes())
    result = inbox.tick()
    assert len(result.run_requests) == 2
    monkeypatch.setenv("STEREOSPOT_S3_ENDPOINT_URL", s3_endpoint)
    resources = build_resources(Settings(home=tmp_path / "home", store_url="s3://out-bucket/work",
                                         outbox_url="s3://out-bucket/outputs"))
    for request in result.run_requests:
        instance.add_dynamic_partitions("videos", [request.partition_key])
        assert materialize(CONVERSION_ASSETS, instance=instance, partition_key=request.partition_key,
                           resources=resources, raise_on_error=False).success
    listed = sorted(o["Key"] for o in inbox.client.list_objects_v2(Bucket="out-bucket", Prefix="outputs/")["Contents"])
    assert [k.rsplit("/", 1)[0] for k in listed] == ["outputs/alice", "outputs/bob/holiday"]
    assert all(NAME.fullmatch(k.rsplit("/", 1)[1]) for k in listed)
    widths = []
    for key in listed:
        local = tmp_path / "check.mp4"
        inbox.client.download_file("out-bucket", key, str(local))
        widths.append(_width(local))
    assert widths == [192, 256]
