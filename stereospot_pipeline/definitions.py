"""The one Definitions object of the code location (``dagster dev -m stereospot_pipeline.definitions``)."""

from __future__ import annotations

from dagster import Definitions

from stereospot_pipeline.defs.assets.final import final_video
from stereospot_pipeline.defs.assets.segments import segments
from stereospot_pipeline.defs.assets.source import source_video
from stereospot_pipeline.defs.assets.stereo import stereo_segments
from stereospot_pipeline.defs.inbox import LocalInbox, inbox_sensor
from stereospot_pipeline.defs.jobs import convert_video
from stereospot_pipeline.defs.resources import build_resources
from stereospot_pipeline.settings import Settings

CONVERSION_ASSETS = [source_video, segments, stereo_segments, final_video]


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or Settings()
    resources = build_resources(settings)
    resources["inbox"] = LocalInbox(
        path=settings.url(settings.inbox_url, "inbox"),
        settle_seconds=settings.inbox_settle_seconds,
        max_per_tick=settings.inbox_max_per_tick,
    )
    return Definitions(
        assets=CONVERSION_ASSETS,
        jobs=[convert_video],
        sensors=[inbox_sensor],
        resources=resources,
    )


defs = build_definitions()
