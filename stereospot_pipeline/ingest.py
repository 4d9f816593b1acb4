"""Naming and registering incoming videos: content-derived partition keys and the source registry."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from stereospot_pipeline.storage import ObjectStore

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .m2ts .mts .ogv .wmv .flv .3gp .mxf .y4m".split()
)
_KEY_HASH_CHARS = 10
_SLUG_MAX = 40


def is_video_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in VIDEO_EXTENSIONS


# A film is tens of GB: its content id is a sha256 over the sha256 of each chunk, so hashing can
# stop at any chunk boundary and resume later (the inbox sensor spreads it over ticks, keeping
# the digests so far in its cursor) and every door computes the same id.
CHUNK_BYTES = 64 << 20
_READ_BYTES = 1 << 20
_ID_PREFIX = f"stereospot-chunked-sha256/{CHUNK_BYTES}:"

Progress = Callable[[int, int], None]  # (bytes hashed, bytes in all)


def _chunk_sha256(fh) -> str:
    h, left = hashlib.sha256(), CHUNK_BYTES
    while left and (block := fh.read(min(_READ_BYTES, left))):
        h.update(block)
        left -= len(block)
    return h.hexdigest()


def hash_chunks(path: Path, digests: list[str], *, deadline: float | None = None,
                on_progress: Progress | None = None) -> bool:
    """Extend ``digests`` (the chunk digests of ``path`` so far, in order) until the file is done
    (returns True) or ``time.monotonic()`` passes ``deadline`` (False). The deadline is checked
    after each chunk, so every call makes progress."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(len(digests) * CHUNK_BYTES)
        while len(digests) * CHUNK_BYTES < size:
            digests.append(_chunk_sha256(fh))
            if on_progress:
                on_progress(min(len(digests) * CHUNK_BYTES, size), size)
            if deadline is not None and time.monotonic() >= deadline and len(digests) * CHUNK_BYTES < size:
                return False
    return True


def content_id(digests: list[str]) -> str:
    """The id registered as a video's ``sha256``, from all of its chunk digests."""
    return hashlib.sha256((_ID_PREFIX + "".join(digests)).encode()).hexdigest()


def file_sha256(path: Path, on_progress: Progress | None = None) -> str:
    """The content id of a local file (see ``CHUNK_BYTES``), hashed in one go."""
    digests: list[str] = []
    hash_chunks(path, digests, on_progress=on_progress)
    return content_id(digests)


def partition_key(name: str, sha256: str) -> str:
    """``[a-z0-9_-]`` only (commas break UI backfills, ``|`` clashes with multi-partitions); the
    content hash keeps two files named alike apart and makes re-drops of a file the same key."""
    stem = PurePosixPath(name).stem.lower()
    slug = re.sub(r"[^a-z0-9]+", "-", stem).strip("-")[:_SLUG_MAX].strip("-") or "video"
    return f"{slug}-{sha256[:_KEY_HASH_CHARS]}"


def registry_key(key: str) -> str:
    return f"registry/{key}.json"


def content_key(sha256: str) -> str:
    return f"registry/by-content/{sha256}.json"


def settings_key(key: str) -> str:
    return f"registry/settings/{key}.json"


def save_settings(store: ObjectStore, key: str, settings: dict) -> None:
    """The conversion settings a video was added with, by section (see defs/video_settings.py)."""
    store.put_json(settings, settings_key(key))


def load_settings(store: ObjectStore, key: str) -> dict:
    return store.get_json(settings_key(key)) if store.exists(settings_key(key)) else {}


def register_video(store: ObjectStore, *, uri: str, name: str, sha256: str, size: int, folder: str = "") -> str:
    """Record where a video comes from under its partition key; returns the key.

    One partition per content: the same bytes arriving again, under any name, get the key they
    were first registered under, so they are never converted twice. ``folder`` is where it sits
    below the inbox or the input prefix (``""`` for the top and for the CLI): the outbox mirrors it.
    """
    marker = content_key(sha256)
    if store.exists(marker):
        return store.get_json(marker)["key"]
    key = partition_key(name, sha256)
    store.put_json(
        {"uri": uri, "name": name, "sha256": sha256, "size": size, "folder": folder,
         "registered_at": datetime.now(timezone.utc).isoformat()},
        registry_key(key),
    )
    store.put_json({"key": key}, marker)
    return key


def register_local_file(store: ObjectStore, path: Path, on_progress: Progress | None = None) -> str:
    path = path.resolve()
    return register_video(store, uri=str(path), name=path.name, sha256=file_sha256(path, on_progress),
                          size=path.stat().st_size)
