"""The Dagster UI in a real (headless) browser shows a conversion's metadata, preview and checks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stereospot_pipeline.ingest import file_sha256, partition_key
from stereospot_pipeline_tests.clips import REPO, make_clip
from stereospot_pipeline_tests.support_ui import dagster_webserver, ensure_chromium, headless_chromium

ARTIFACTS = REPO / "test-artifacts"
CHECKS = ("frames_match_source", "audio_matches_source", "decodes_without_errors", "layout_geometry",
          "comfortable_disparity", "seamless_depth")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_asset_page_shows_metadata_preview_and_checks(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ensure_chromium()
    clip = make_clip(tmp_path / "ui.mp4", size="192x108", gop=5)
    env = {**os.environ, "STEREOSPOT_HOME": str(tmp_path / "home"),
           "DAGSTER_HOME": str(tmp_path / "home" / "dagster")}
    subprocess.run([sys.executable, "-m", "stereospot_pipeline.cli", "convert", str(clip), "--segment-seconds", "1"],
                   env=env, cwd=tmp_path, check=True, timeout=180, capture_output=True)
    key = partition_key(clip.name, file_sha256(clip))
    ARTIFACTS.mkdir(exist_ok=True)

    with dagster_webserver(env, tmp_path / "webserver.log") as url, headless_chromium(tmp_path / "chromium") as browser:
        wait = WebDriverWait(browser, 60)
        browser.get(f"{url}/assets/final_video?view=partitions&partition={key}")
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "bitrate_kbps"))
        # A first visit gets a newsletter dialog over the page, a few seconds in: dismiss it.
        skip = (By.XPATH, "//button[normalize-space()='Skip']")
        WebDriverWait(browser, 20).until(ec.element_to_be_clickable(skip)).click()
        wait.until(ec.invisibility_of_element_located(skip))
        page = browser.find_element(By.TAG_NAME, "body").text
        for label in ("storage_key", "storage_url", "layout", "full-sbs", "384x108", "frames", "duration_s",
                      "size_bytes", "preview"):
            assert label in page, label
        # Markdown metadata opens in a dialog; the preview images are inline data URIs there.
        browser.find_element(By.XPATH, "//*[text()='[Show Markdown]']").click()
        images = wait.until(ec.presence_of_all_elements_located(
            (By.CSS_SELECTOR, "[role='dialog'] img[src^='data:image/png']")))
        assert len(images) == 4  # output at 50%, depth at 50%, output at 10% and 90%
        wait.until(lambda _: all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images))
        browser.save_screenshot(str(ARTIFACTS / "final_video_partition.png"))

        browser.get(f"{url}/assets/final_video?view=checks")
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "seamless_depth"))
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Evaluation result"))
        page = browser.find_element(By.TAG_NAME, "body").text
        assert all(name in page for name in CHECKS)
        assert page.count("Succeeded") >= len(CHECKS) and "Failed" not in page
        browser.save_screenshot(str(ARTIFACTS / "final_video_checks.png"))
