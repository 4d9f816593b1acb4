"""Helpers for the browser test: headless Chromium from Debian and a Dagster webserver."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver when missing (a fresh CI machine)."""
    if Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file():
        return
    if os.geteuid() != 0:
        raise RuntimeError("chromium is missing and installing it needs root: "
                           "apt-get install -y chromium chromium-driver")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, timeout=300, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"],
                   check=True, env=env, timeout=600, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reset_sigint() -> None:
    # A non-interactive background shell starts children with SIGINT ignored; dagster ignores
    # SIGTERM, so without this the server could not be stopped.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def dagster_webserver(env: dict, log: Path, wait_s: float = 90.0) -> Iterator[str]:
    """Run ``dagster-webserver`` for the project's definitions on 127.0.0.1; yields its URL."""
    port = free_port()
    exe = shutil.which("dagster-webserver") or str(Path(sys.executable).with_name("dagster-webserver"))
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "-h", "127.0.0.1", "-p", str(port), "-m", "stereospot_pipeline.definitions"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_reset_sigint)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dagster-webserver did not start; see {log}") from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def headless_chromium(profile: Path, size: tuple[int, int] = (1400, 1600)):
    """A Selenium driver for Debian's headless Chromium (no downloads: the driver path is given)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
