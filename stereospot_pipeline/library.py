"""The video library outside Dagster: add a video from wherever it is, remove everything a video
left behind, sweep stale work objects. The Dagster glue (partitions, runs) is in defs/library.py."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path, PurePosixPath

from stereospot_pipeline import keys
from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.fetch_source import download
from stereospot_pipeline.ingest import (
    content_key,
    file_sha256,
    is_video_name,
    partition_key,
    register_local_file,
    register_video,
    registry_key,
    settings_key,
)
from stereospot_pipeline.media.probe import probe_video
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.storage import ObjectStore

_KEY = re.compile(r"[a-z0-9_-]+")


def add_source(store: ObjectStore, location: str, settings: Settings) -> str:
    """Register the video at ``location`` (a local path, an ``s3://`` URI or an ``http(s)`` URL);
    returns its partition key. Local and downloaded files are validated here, so a bad file
    fails when it is added, naming the problem."""
    location = location.strip()
    if location.startswith("s3://"):
        return _add_s3_object(store, location, settings)
    if location.startswith(("http://", "https://")):
        return _add_url(store, location, settings)
    if "://" in location:
        raise InvalidVideoError(location, "unsupported location", "give a local path, an s3:// URI or an http(s) URL")
    path = Path(location).expanduser()
    if not path.is_file():
        raise InvalidVideoError(location, "no such file", "check the path (relative paths are from the current folder)")
    probe_video(path, max_pixels=settings.max_pixels, max_duration_s=settings.max_duration_s)
    return register_local_file(store, path)


def _add_s3_object(store: ObjectStore, uri: str, settings: Settings) -> str:
    # The same identity as the S3 upload sensor gives the object (its ETag): adding an uploaded
    # video by hand and the sensor seeing it are one partition, and nothing is downloaded here.
    from botocore.exceptions import ClientError

    from stereospot_pipeline.defs.s3_sensor import s3_video_id
    from stereospot_pipeline.storage.s3 import s3_client, split_s3_url

    bucket, key = split_s3_url(uri)
    name = PurePosixPath(key).name
    if not key or not is_video_name(name):
        raise InvalidVideoError(uri, "not a video file name", "give the key of a video file (.mp4, .mov, .mkv ...)")
    try:
        head = s3_client(settings.s3_endpoint_url).head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        problem = "no such object" if code in ("404", "NoSuchKey", "NotFound") else f"cannot be read ({code})"
        raise InvalidVideoError(uri, problem, "check the URI and that this deployment may read the bucket") from exc
    return register_video(store, uri=uri, name=name, sha256=s3_video_id(head["ETag"].strip('"')),
                          size=head["ContentLength"])


def _add_url(store: ObjectStore, url: str, settings: Settings) -> str:
    with tempfile.TemporaryDirectory(prefix="stereospot-download-") as tmp:
        path = download(url, Path(tmp), max_bytes=settings.fetch_max_bytes, allow_private=settings.fetch_allow_private,
                        timeout_s=settings.fetch_timeout_s)
        try:
            probe_video(path, max_pixels=settings.max_pixels, max_duration_s=settings.max_duration_s)
        except InvalidVideoError as exc:
            raise InvalidVideoError(url, exc.problem, exc.hint) from exc
        sha = file_sha256(path)
        if store.exists(content_key(sha)):
            return store.get_json(content_key(sha))["key"]
        key = partition_key(path.name, sha)
        stored = keys.download(key, path.suffix.lower())
        store.put_file(path, stored)
        return register_video(store, uri=store.location(stored), name=path.name, sha256=sha,
                              size=path.stat().st_size)


def resolve_video(store: ObjectStore, key_or_file: str) -> str | None:
    """A partition key, or the key a local file (by its content) was registered under."""
    if _KEY.fullmatch(key_or_file) and store.exists(registry_key(key_or_file)):
        return key_or_file
    path = Path(key_or_file).expanduser()
    if path.is_file():
        marker = content_key(file_sha256(path))
        if store.exists(marker):
            return store.get_json(marker)["key"]
    return None


def video_objects(store: ObjectStore, key: str) -> list[str]:
    """Every store key that belongs to one video: work objects, its download, its registration."""
    found = [k for prefix in (*keys.work_prefixes(key), f"downloads/{key}") for k in store.list_keys(prefix)]
    return found + [k for k in (registry_key(key), settings_key(key)) if store.exists(k)]


def delete_video_objects(store: ObjectStore, outbox: ObjectStore, key: str, outputs: list[str]) -> list[str]:
    """Remove a video's objects and the given outbox keys; returns the locations removed.

    The registration goes last, so an interrupted delete can simply be run again.
    """
    removed = []
    for prefix in (*keys.work_prefixes(key), f"downloads/{key}"):
        removed += [store.location(k) for k in store.delete_prefix(prefix)]
    for name in outputs:
        if outbox.exists(name):
            outbox.delete(name)
            removed.append(outbox.location(name))
    if store.exists(registry_key(key)):
        marker = content_key(store.get_json(registry_key(key))["sha256"])
        # The content marker lets the same bytes be added again later as a new video.
        if store.exists(marker) and store.get_json(marker).get("key") == key:
            store.delete(marker)
            removed.append(store.location(marker))
    for k in (settings_key(key), registry_key(key)):
        if store.exists(k):
            store.delete(k)
            removed.append(store.location(k))
    return removed


def sweep_work(root: Path, older_than_days: float, keep: set[str], now: float | None = None) -> list[str]:
    """In a local store at ``root``, remove the work folders of every video whose newest work
    object is older than ``older_than_days`` (whole videos: a half-swept one would leave
    records pointing at files that are gone). Videos in ``keep`` (being converted) are left
    alone. Returns the keys of the videos swept."""
    limit = (now if now is not None else time.time()) - older_than_days * 86400
    folders: dict[str, list[Path]] = {}
    for work_root in keys.WORK_ROOTS:
        base = root / work_root
        if base.is_dir():
            for folder in base.iterdir():
                if folder.is_dir():
                    folders.setdefault(folder.name, []).append(folder)
    swept = []
    for key, dirs in sorted(folders.items()):
        if key in keep:
            continue
        newest = max((p.stat().st_mtime for d in dirs for p in d.rglob("*")), default=0.0)
        newest = max([newest, *(d.stat().st_mtime for d in dirs)])
        if newest < limit:
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
            swept.append(key)
    return swept
