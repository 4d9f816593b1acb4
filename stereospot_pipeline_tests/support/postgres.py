"""A throwaway PostgreSQL server on 127.0.0.1 for the test that needs one; installed when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stereospot_pipeline_tests.support.net import free_port

_INSTALL_SECONDS = 600


def _as_root(cmd: list[str]) -> list[str]:
    return cmd if os.geteuid() == 0 else ["sudo", "-n", *cmd]


def _server_bin() -> Path:
    """The newest installed server's bin folder; ``apt-get install postgresql`` on a fresh machine."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not found:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = _as_root(["apt-get", "install", "-y", "--no-install-recommends", "postgresql"])
        if subprocess.run(install, env=env, timeout=_INSTALL_SECONDS).returncode != 0:
            subprocess.run(_as_root(["apt-get", "update"]), env=env, check=True, timeout=_INSTALL_SECONDS)
            subprocess.run(install, env=env, check=True, timeout=_INSTALL_SECONDS)
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/postgres`` of a fresh server, stopped after the test."""
    bin_dir = _server_bin()
    port = free_port()
    # Not under pytest's tmp_path: its folders are private to the user running pytest, and the
    # server must run as `postgres` when that user is root (PostgreSQL refuses to run as root).
    root = Path(tempfile.mkdtemp(prefix="stereospot-pg-"))
    data = root / "data"

    def run(*args: str) -> None:
        cmd = " ".join(f"'{a}'" for a in args)
        full = ["su", "postgres", "-s", "/bin/sh", "-c", cmd] if os.geteuid() == 0 else ["sh", "-c", cmd]
        subprocess.run(full, check=True, timeout=120, stdout=subprocess.DEVNULL)

    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
            "-o", f"-k {root} -p {port} -c listen_addresses=127.0.0.1", "start")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
