"""The one Definitions object of the code location (``dg dev`` in the project folder; `[tool.dg]`)."""

from __future__ import annotations

from dagster import Definitions

from stereospot_pipeline.defs.alerts import alert_on_run_failure
from stereospot_pipeline.defs.analytics import conversion_analytics
from stereospot_pipeline.defs.assets.final import final_video, published_video
from stereospot_pipeline.defs.assets.segments import segments
from stereospot_pipeline.defs.assets.source import source_video
from stereospot_pipeline.defs.assets.stereo import stereo_segments
from stereospot_pipeline.defs.checks import VIDEO_CHECKS
from stereospot_pipeline.defs.executor import build_executor, execution_resources
from stereospot_pipeline.defs.inbox import LocalInbox, inbox_sensor
from stereospot_pipeline.defs.jobs import convert_video
from stereospot_pipeline.defs.pool_wait import install as install_pool_wait
from stereospot_pipeline.defs.recovery import dead_run_sensor
from stereospot_pipeline.defs.library import (
    add_video,
    convert_added_videos,
    delete_video,
    sweep_work_daily,
    sweep_work_objects,
)
from stereospot_pipeline.defs.resources import build_resources
from stereospot_pipeline.defs.s3_sensor import S3Inbox, s3_inbox_sensor
from stereospot_pipeline.settings import Settings

# Every run of this code location (CLI and daemon) waits for pool slots without spinning.
install_pool_wait()

# One video's conversion, checks included: the blocking ones run between final_video and
# published_video, so materializing this list never publishes an output that failed them.
CONVERSION_ASSETS = [source_video, segments, stereo_segments, final_video, *VIDEO_CHECKS, published_video]


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or Settings()
    resources = {**build_resources(settings), **execution_resources(settings)}
    if (settings.inbox_url or "").startswith("s3://"):
        resources["inbox"] = S3Inbox(url=settings.inbox_url, endpoint_url=settings.s3_endpoint_url,
                                     max_per_tick=settings.inbox_max_per_tick)
        inbox = s3_inbox_sensor
    else:
        resources["inbox"] = LocalInbox(
            path=settings.url(settings.inbox_url, "inbox"),
            settle_seconds=settings.inbox_settle_seconds,
            max_per_tick=settings.inbox_max_per_tick,
        )
        inbox = inbox_sensor
    # S3 work stores expire work objects by a lifecycle rule; a local one is swept on a schedule.
    local_store = not (settings.store_url or "").startswith("s3://")
    return Definitions(
        assets=[*CONVERSION_ASSETS, conversion_analytics],
        jobs=[convert_video, add_video, delete_video, sweep_work_objects],
        sensors=[inbox, dead_run_sensor, convert_added_videos, alert_on_run_failure],
        schedules=[sweep_work_daily] if local_store else [],
        resources=resources,
        executor=build_executor(settings),
    )


defs = build_definitions()
