"""A folder as an object store (the embedded default)."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stereospot_pipeline.storage.base import ObjectStore, check_key, disk_full


def _umask() -> int:
    """The process umask, read without changing it (os.umask sets it, racing other threads)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_PARTIAL = ".partial-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_partials_of_dead_writers(dest: Path) -> None:
    """Temp files of earlier writes of ``dest`` whose process is gone (killed mid-write)."""
    prefix = f"{_PARTIAL}{dest.name}."
    for stale in dest.parent.glob(f"{glob.escape(prefix)}*"):
        pid = stale.name[len(prefix):].partition(".")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            stale.unlink(missing_ok=True)


def new_file_mode() -> int:
    """The mode ``cp`` or ``open()`` would give a new file (mkstemp's 0600 would hide outputs
    from the other users of a shared outbox)."""
    return 0o666 & ~_umask()


class LocalObjectStore(ObjectStore):
    root: str

    def _path(self, key: str) -> Path:
        return Path(self.root) / check_key(key)

    def _atomic_write(self, key: str, write) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_partials_of_dead_writers(dest)
        # A temp name in the same folder, then rename: readers never see a partial file. The name
        # says whose it is, so a writer killed mid-write leaves a file the next writer removes.
        fd, tmp = tempfile.mkstemp(prefix=f"{_PARTIAL}{dest.name}.{os.getpid()}.", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), new_file_mode())
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            if full := disk_full(exc, str(dest)):
                raise full from exc
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
            if p.is_file() and not p.name.startswith(_PARTIAL)
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
