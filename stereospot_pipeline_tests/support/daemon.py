"""A real ``dagster-daemon run`` in a subprocess with its own DAGSTER_HOME, stopped by the caller."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A shell started without job control leaves SIGINT ignored in background children, and dagster's
# daemon then ignores the signals it uses to shut down: restore the default before exec.
_LAUNCHER = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
             "os.execvp(sys.argv[1], sys.argv[1:])")

WORKSPACE = """load_from:
  - python_module:
      module_name: stereospot_pipeline.definitions
      location_name: stereospot
"""


@contextmanager
def dagster_daemon(home: Path, instance_yaml: str, env: dict[str, str], stop_seconds: float = 30) -> Iterator[Path]:
    """Runs the daemon until the block ends; yields the path of its log."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(instance_yaml)
    (home / "workspace.yaml").write_text(WORKSPACE)
    log = home / "daemon.log"
    daemon = str(Path(sys.executable).with_name("dagster-daemon"))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, daemon, "run", "-w", str(home / "workspace.yaml")],
            cwd=home, env={**os.environ, **env, "DAGSTER_HOME": str(home)},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        yield log
    finally:
        # The daemon, its code server and any run workers share the process group.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=stop_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
