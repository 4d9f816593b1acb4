"""`stereospot ui` (Dagster webserver + daemon) in its own process group, for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from stereospot_pipeline_tests.clips import REPO
from stereospot_pipeline_tests.support.net import free_port

STEREOSPOT = str(Path(sys.executable).with_name("stereospot"))


class Ui:
    """`stereospot ui` (webserver + daemon) in its own process group, restartable."""

    def __init__(self, home: Path, log: Path):
        self.home, self.log, self.proc = home, log, None

    def start(self) -> None:
        self.port = port = free_port()
        env = {**os.environ, "STEREOSPOT_HOME": str(self.home)}
        env.pop("DAGSTER_HOME", None)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([STEREOSPOT, "ui", "--port", str(port)], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(1)
        raise AssertionError("the UI did not start")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
