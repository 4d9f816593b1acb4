"""A folder as an object store (the embedded default)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stereospot_pipeline.storage.base import ObjectStore, check_key


class LocalObjectStore(ObjectStore):
    root: str

    def _path(self, key: str) -> Path:
        return Path(self.root) / check_key(key)

    def _atomic_write(self, key: str, write) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A temp name in the same folder, then rename: readers never see a partial file.
        fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, local: Path, key: str) -> None:
        with open(local, "rb") as src:
            self._atomic_write(key, lambda fh: shutil.copyfileobj(src, fh, 1 << 20))

    def put_bytes(self, data: bytes, key: str) -> None:
        self._atomic_write(key, lambda fh: fh.write(data))

    def get_file(self, key: str, local: Path) -> Path:
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(key), local)
        return local

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def list_keys(self, prefix: str) -> list[str]:
        base = Path(self.root)
        start = base / prefix if prefix else base
        if not start.exists():
            return []
        return sorted(
            str(p.relative_to(base)) for p in start.rglob("*")
            if p.is_file() and not p.name.startswith(".partial-")
        )

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def url(self, key: str) -> str:
        return str(self._path(key))

    def location(self, key: str) -> str:
        return str(self._path(key).resolve())

    def link(self, key: str) -> str:
        return self._path(key).resolve().as_uri()

    def delete_prefix(self, prefix: str) -> list[str]:
        keys = self.list_keys(check_key(prefix))
        # The folder goes too (and with it any partial file a crashed writer left).
        shutil.rmtree(self._path(prefix), ignore_errors=True)
        return keys

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"{key} is not in the store at {self.root}")
        yield path
