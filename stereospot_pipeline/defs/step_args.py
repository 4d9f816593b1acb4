"""Step arguments through the work store instead of ECS container overrides.

dagster-aws passes each step's arguments (the run's known state: every dynamic mapping key and
every ready output so far) as one compressed variable in the RunTask container overrides, which
ECS caps at 8,192 characters; they grow with the segment count (measured: 4.4k characters at
500 segments, 8.2k at 1,000, 16k at 2,000 once every segment's output is ready, as for the
collect step), so a video of a few hours could not finish. The run worker stores them under the run's work prefix instead, and the step task
starts with a short command naming the stored object:

    python -m stereospot_pipeline.defs.step_args <store key>
"""

from __future__ import annotations

import hashlib
import os
import sys

from stereospot_pipeline.storage import ObjectStore

# What dagster's `api execute_step` reads when no argument is given on its command line.
STEP_ARGS_ENV = "DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS"
STEP_ARGS_PREFIX = "dagster-step-args"


def store_step_args(store: ObjectStore, run_id: str, payload: str) -> list[str]:
    """Stores ``payload`` (content-addressed under the run) and returns the step's command."""
    key = f"{STEP_ARGS_PREFIX}/{run_id}/{hashlib.sha256(payload.encode()).hexdigest()[:40]}.txt"
    store.put_bytes(payload.encode(), key)
    return ["python", "-m", "stereospot_pipeline.defs.step_args", key]


def run_stored_step(key: str) -> None:
    """Runs ``dagster api execute_step`` in this process with the arguments stored at ``key``."""
    from dagster._cli.api import execute_step_command

    from stereospot_pipeline.defs.resources import make_store
    from stereospot_pipeline.settings import Settings

    settings = Settings()
    store = make_store(settings.url(settings.store_url, "store"), settings)
    # In-process: an environment variable has no size limit here, unlike ECS overrides.
    os.environ[STEP_ARGS_ENV] = store.get_bytes(key).decode()
    execute_step_command.main(args=[], prog_name="dagster api execute_step")


if __name__ == "__main__":
    run_stored_step(sys.argv[1])
