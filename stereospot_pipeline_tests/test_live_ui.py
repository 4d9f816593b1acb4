"""`stereospot ui` for real: Dagster webserver + daemon on 127.0.0.1, the inbox sensor converting a
dropped file, duplicates ignored, and a launch with stereo settings through the UI's GraphQL API."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import requests
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from stereospot_pipeline.defs.assets.stereo import stereo_run_config
from stereospot_pipeline.ingest import file_sha256, partition_key
from stereospot_pipeline.stereo.params import Layout, StereoParams
from stereospot_pipeline_tests.clips import decode_all, make_clip
from stereospot_pipeline_tests.conftest import outbox_file
from stereospot_pipeline_tests.support.ui import Ui

ASSET_GRAPH = """
{ assetNodes { assetKey { path } dependencyKeys { path } partitionDefinition { type name } } }
"""


def _wait(predicate, timeout: float, what: str, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _dropped(path: Path, src: Path) -> None:
    """Copy into the inbox the way a finished copy looks: complete and settled."""
    shutil.copy(src, path)
    past = time.time() - 30
    os.utime(path, (past, past))


@pytest.fixture
def live_ui(tmp_path):
    ui = Ui(tmp_path / "home", tmp_path / "ui.log")
    try:
        ui.start()
        yield ui.home, ui.port
    finally:
        ui.stop()


def _runs_for(port: int, key: str) -> list[dict]:
    query = """query($key: String!) { runsOrError(filter: {tags: [{key: "dagster/partition", value: $key}]}) {
                 ... on Runs { results { runId status } } } }"""
    reply = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": {"key": key}},
                          timeout=30).json()
    return reply["data"]["runsOrError"]["results"]


@pytest.mark.slow
def test_ui_daemon_inbox_and_launch_with_settings(live_ui, tmp_path):
    home, port = live_ui
    graph = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": ASSET_GRAPH}, timeout=30).json()
    nodes = {"/".join(n["assetKey"]["path"]): n for n in graph["data"]["assetNodes"]}
    chain = ["source_video", "segments", "stereo_segments", "final_video"]
    for upstream, downstream in zip(chain, chain[1:]):
        assert [upstream] in [d["path"] for d in nodes[downstream]["dependencyKeys"]]
    for name in chain:
        assert nodes[name]["partitionDefinition"] == {"type": "DYNAMIC", "name": "videos"}

    clip = make_clip(tmp_path / "Garden Walk.mp4", seconds=1.0, fps=10)
    key = partition_key(clip.name, file_sha256(clip))
    inbox, outbox = home / "inbox", home / "outbox"
    _wait(inbox.is_dir, 60, "the inbox sensor to create the inbox")
    _dropped(inbox / clip.name, clip)
    result = _wait(lambda: list(outbox.glob("*.mp4")) and outbox_file(outbox, "Garden Walk"),
                   300, "the dropped video to be converted", every=2)
    frames, _ = decode_all(result)
    assert len(frames) == 10 and frames[0].width == 320

    _dropped(inbox / "same bytes again.mp4", clip)
    time.sleep(20)  # several sensor ticks
    runs = _runs_for(port, key)
    assert len(runs) == 1 and runs[0]["status"] == "SUCCESS"

    # Launch from the UI's API with stereo settings as run config (what the launchpad sends).
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    settings = stereo_run_config(StereoParams(layout=Layout.HALF_SBS, divergence=3.0))
    run_id = client.submit_job_execution(
        "convert_video", run_config={"ops": {"stereo_segments": {"ops": {"plan_stereo_segments": {"config": settings}}}}},
        tags={"dagster/partition": key},
    )
    status = _wait(lambda: (s := client.get_run_status(run_id)) in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE) and s,
                   300, "the launched run", every=2)
    assert status == DagsterRunStatus.SUCCESS
    half, _ = decode_all(outbox_file(outbox, "Garden Walk", "_LR"))
    assert len(half) == 10 and half[0].width == 160
