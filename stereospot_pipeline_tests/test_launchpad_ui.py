"""A new video from the Dagster UI, on a live `stereospot ui` (dg dev: webserver + daemon): the
add_video job launched over GraphQL as the Launchpad launches it, with a URL (a real loopback
server) and stereo settings; its partition appears and it is converted with those settings. A run
for a partition added by hand fails saying how to add videos, and that failure (only that) reaches
the alert webhook. A screenshot of the Launchpad goes to test-artifacts/."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
import requests
import yaml
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from stereospot_pipeline.ingest import file_sha256, partition_key
from stereospot_pipeline_tests.clips import REPO, decode_all, make_clip
from stereospot_pipeline_tests.support.http import Answer, loopback_http
from stereospot_pipeline_tests.support.ui import Ui
from stereospot_pipeline_tests.support_ui import ensure_chromium, headless_chromium

ARTIFACTS = REPO / "test-artifacts"
REPOSITORY = {"repositoryLocationName": "stereospot", "repositoryName": "__repository__"}
DONE = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


def _wait(predicate, timeout: float, what: str, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _graphql(port: int, query: str, **variables) -> dict:
    reply = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": variables},
                          timeout=30).json()
    assert "errors" not in reply, reply
    return reply["data"]


def _partitions(port: int) -> list[str]:
    data = _graphql(port, """{ assetNodeOrError(assetKey: {path: ["source_video"]}) {
                                 ... on AssetNode { partitionKeys } } }""")
    return data["assetNodeOrError"]["partitionKeys"]


def _runs(port: int, key: str) -> list[dict]:
    data = _graphql(port, """query($key: String!) { runsOrError(filter: {tags: [{key: "dagster/partition", value: $key}]}) {
                               ... on Runs { results { runId status jobName runConfigYaml } } } }""", key=key)
    return data["runsOrError"]["results"]


def _finished(client: DagsterGraphQLClient, run_id: str, timeout: float) -> DagsterRunStatus:
    return _wait(lambda: (s := client.get_run_status(run_id)) in DONE and s, timeout, f"run {run_id}", every=2)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_new_video_from_the_launchpad_is_added_and_converted(tmp_path, monkeypatch):
    clip = make_clip(tmp_path / "clip.mp4", seconds=1.0, size="128x72", gop=5)
    key = partition_key("Sunset Pier.mp4", file_sha256(clip))
    with loopback_http({"/videos/Sunset%20Pier.mp4": Answer(clip.read_bytes())}) as server:
        # The tests' web server is on loopback, which the download guard refuses by default.
        monkeypatch.setenv("STEREOSPOT_FETCH_ALLOW_PRIVATE", "true")
        monkeypatch.setenv("STEREOSPOT_ALERT_WEBHOOK_URL", f"{server.url}/alerts")
        ui = Ui(tmp_path / "home", tmp_path / "ui.log")
        try:
            ui.start()
            port, outbox = ui.port, ui.home / "outbox"
            client = DagsterGraphQLClient("127.0.0.1", port_number=port)
            add_config = {"location": f"{server.url}/videos/Sunset%20Pier.mp4",
                          "stereo": {"layout": "HALF_SBS", "divergence": 2.5}, "segments": {"segment_seconds": 0.5}}
            run_config = {"ops": {"add_new_video": {"config": add_config}}}

            added = client.submit_job_execution("add_video", run_config=run_config)
            assert _finished(client, added, 240) == DagsterRunStatus.SUCCESS, ui.log.read_text()[-4000:]
            assert key in _partitions(port)  # the partition appears with the add run
            assert server.requests == ["/videos/Sunset%20Pier.mp4"]

            # The sensor converts it with the settings given at launch.
            result = _wait(lambda: next(iter(sorted(outbox.glob("Sunset Pier*_LR.mp4"))), None), 300,
                           "the added video to be converted", every=2)
            frames, has_audio = decode_all(result)
            assert len(frames) == 10 and (frames[0].width, frames[0].height) == (128, 72) and has_audio
            # The output is written before the run's last step is recorded as done.
            conversions = _wait(lambda: (runs := _runs(port, key)) and all(
                DagsterRunStatus(r["status"]) in DONE for r in runs) and runs, 120, "the conversion run to end")
            assert [r["status"] for r in conversions] == ["SUCCESS"]
            assert yaml.safe_load(conversions[0]["runConfigYaml"])["ops"]["stereo_segments"]["ops"][
                "plan_stereo_segments"]["config"] == {"layout": "HALF_SBS", "divergence": 2.5}

            # A partition added by hand, with no video behind it.
            handmade = "handmade-0000000000"
            data = _graphql(port, """mutation($selector: RepositorySelector!, $key: String!) {
                addDynamicPartition(repositorySelector: $selector, partitionsDefName: "videos", partitionKey: $key) {
                  __typename } }""", selector=REPOSITORY, key=handmade)
            assert data["addDynamicPartition"]["__typename"] == "AddDynamicPartitionSuccess"
            failed = client.submit_job_execution("convert_video", tags={"dagster/partition": handmade})
            assert _finished(client, failed, 240) == DagsterRunStatus.FAILURE
            alert = _wait(lambda: server.posts, 120, "the failure alert", every=2)

            _launchpad_screenshot(port, add_config, tmp_path)
        finally:
            ui.stop()

    # Two runs succeeded (add, convert), one failed: one alert, about the failure.
    assert len(alert) == 1
    text = alert[0]["text"]
    assert handmade in text and "step source_video" in text and f"/runs/{failed}" in text
    assert "is not registered" in text and "add_video job in the UI's Launchpad" in text


def _launchpad_screenshot(port: int, add_config: dict, tmp_path) -> None:
    """The add_video Launchpad with a filled-in config, as a user sees it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ensure_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    config = yaml.safe_dump({"ops": {"add_new_video": {"config": {
        **add_config, "location": "https://videos.example.com/Sunset%20Pier.mp4"}}}}, sort_keys=False)
    url = (f"http://127.0.0.1:{port}/locations/stereospot/jobs/add_video/playground/setup"
           f"?config={quote(config)}")
    with headless_chromium(tmp_path / "chromium", size=(1400, 1000)) as browser:
        wait = WebDriverWait(browser, 90)
        browser.get(url)
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "videos.example.com"))
        try:  # a first visit gets a newsletter dialog over the page, a few seconds in
            WebDriverWait(browser, 10).until(ec.element_to_be_clickable(
                (By.XPATH, "//button[normalize-space()='Skip']"))).click()
        except Exception:  # noqa: BLE001 - no dialog this time
            pass
        page = browser.find_element(By.TAG_NAME, "body").text
        assert "Launch Run" in page and "add_new_video" in page and "HALF_SBS" in page
        browser.save_screenshot(str(ARTIFACTS / "launchpad_add_video.png"))
