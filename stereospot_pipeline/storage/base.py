"""The object-store interface every asset writes through."""

from __future__ import annotations

import errno
import json
import re
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import ConfigurableResource

from stereospot_pipeline.errors import StereospotError

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,199}$")


def check_key(key: str) -> str:
    """Reject keys that could escape the store's root or are not portable between stores."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") or not _SEGMENT.match(p) for p in parts):
        raise ValueError(f"unsafe storage key {key!r}")
    return key


# A full disk, a full quota, a file-size limit: the same remedy for the user.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class DiskFullError(StereospotError):
    """Writing ``path`` ran out of space; nothing partial is left behind."""

    def __init__(self, path: str, reason: str = "No space left on device"):
        self.path = str(path)
        super().__init__(f"no space left writing {self.path} ({reason}): free space there and run again")


def disk_full(exc: BaseException, path: str | None = None) -> DiskFullError | None:
    """``exc`` as a DiskFullError naming where it happened, or None if it is another error."""
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return DiskFullError(path or exc.filename or "a temporary file", exc.strerror or str(exc))
    return None


class ObjectStore(ConfigurableResource):
    """Files by key. Writes are atomic: a key holds a complete object or nothing."""

    @abstractmethod
    def put_file(self, local: Path, key: str) -> None: ...

    @abstractmethod
    def get_file(self, key: str, local: Path) -> Path: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def url(self, key: str) -> str:
        """Where a person can fetch the object (a path, or a presigned URL for S3)."""

    @abstractmethod
    def location(self, key: str) -> str:
        """The object's stable address: an absolute path, or an ``s3://`` URI (never expires)."""

    @abstractmethod
    def link(self, key: str) -> str:
        """A URL a browser opens: ``file://`` for a folder, presigned (and so expiring) for S3."""

    def delete_prefix(self, prefix: str) -> list[str]:
        """Delete every object under the folder ``prefix``; returns the keys deleted."""
        keys = self.list_keys(check_key(prefix))
        for key in keys:
            self.delete(key)
        return keys

    @abstractmethod
    def put_bytes(self, data: bytes, key: str) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @contextmanager
    @abstractmethod
    def local_copy(self, key: str) -> Iterator[Path]:
        """A readable local path for ``key`` for the duration of the block (no copy when local)."""

    def put_json(self, obj, key: str) -> None:
        self.put_bytes(json.dumps(obj, indent=1, sort_keys=True).encode(), key)

    def get_json(self, key: str):
        return json.loads(self.get_bytes(key))
