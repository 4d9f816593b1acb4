"""Tell someone when a run fails: a Slack-compatible webhook message (``{"text", "blocks"}``) per
failed run, naming the video, the failed step, the error and a link to the run in the UI.
Active when STEREOSPOT_ALERT_WEBHOOK_URL is set; successful runs send nothing."""

from __future__ import annotations

import json
import urllib.request

from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor

from stereospot_pipeline.settings import Settings

_ERROR_CHARS = 1500  # Slack cuts a section's text at 3000 characters


def _root_error(error) -> str:
    """The innermost user-facing message: Dagster wraps the real one in framework errors."""
    while error.cause is not None and error.cls_name not in ("Failure", "InvalidVideoError"):
        error = error.cause
    message = error.message.strip()
    kind, _, rest = message.partition(": ")
    return rest if rest and kind.split(".")[-1] == error.cls_name else message


def failure_message(context: RunFailureSensorContext, ui_url: str) -> dict:
    run = context.dagster_run
    video = run.tags.get("dagster/partition") or run.tags.get("stereospot/video") or "(no video)"
    source = run.tags.get("stereospot/source")
    steps = [(e.step_key, _root_error(e.event_specific_data.error)) for e in context.get_step_failure_events()
             if e.event_specific_data and e.event_specific_data.error]
    step, error = steps[0] if steps else ("(run)", context.failure_event.message or "the run failed")
    link = f"{ui_url.rstrip('/')}/runs/{run.run_id}"
    title = f"stereospot: a run failed for video {video}" + (f" ({source})" if source else "")
    error = error[:_ERROR_CHARS]
    return {
        "text": f"{title}: step {step}: {error} {link}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*Video*\n{video}"},
                {"type": "mrkdwn", "text": f"*Failed step*\n`{step}`"},
                {"type": "mrkdwn", "text": f"*Job*\n{run.job_name}"},
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Error*\n```{error}```"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|Open run {run.run_id[:8]} in the Dagster UI>"}},
        ],
    }


def post_json(url: str, payload: dict, timeout_s: float = 10.0) -> None:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        response.read()


@run_failure_sensor(default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=5)
def alert_on_run_failure(context: RunFailureSensorContext) -> None:
    """Posts each failed run of this code location to STEREOSPOT_ALERT_WEBHOOK_URL. A post that
    fails raises: Dagster then records the error on the sensor's tick and in the failed run's log."""
    settings = Settings()
    if not settings.alert_webhook_url:
        return
    post_json(settings.alert_webhook_url, failure_message(context, settings.ui_url))
    context.log.info(f"alerted about run {context.dagster_run.run_id}")
