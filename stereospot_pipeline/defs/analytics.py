"""The ``conversion_analytics`` asset: cost and speed of every conversion, refreshed by the
automation daemon whenever a video finishes."""

from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    Config,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from stereospot_pipeline.analytics.files import COST, CSV, THROUGHPUT, report_files
from stereospot_pipeline.analytics.gather import gather
from stereospot_pipeline.analytics.report import Prices, VideoRow, video_rows
from stereospot_pipeline.defs.assets.final import final_video
from stereospot_pipeline.media.preview import markdown_image
from stereospot_pipeline.storage import ObjectStore

ANALYTICS_PREFIX = "analytics"

_TYPES = {int: "int", float: "float", str: "string"}
VIDEO_ROW_SCHEMA = TableSchema(columns=[
    TableColumn(name, _TYPES[field.annotation]) for name, field in VideoRow.model_fields.items()
])


class AnalyticsConfig(Config, Prices):
    """Machine prices for the cost estimate (run config of the analytics asset)."""


@asset(
    group_name="analytics",
    deps=[final_video],
    kinds={"matplotlib"},
    # Not eager(): that waits until no video partition is missing, and failed videos stay missing.
    # A finished video is handled once, after any refresh already running.
    automation_condition=AutomationCondition.any_deps_updated().since_last_handled()
    & ~AutomationCondition.in_progress(),
)
def conversion_analytics(context: AssetExecutionContext, config: AnalyticsConfig,
                         store: ObjectStore) -> MaterializeResult:
    """Per video: compute seconds per minute of video, throughput, failures and retries,
    per-segment time spread and estimated cost, from the instance's records only."""
    prices = Prices.model_validate(config.model_dump())
    conversions = gather(context.instance)
    files = report_files(conversions, prices)
    for name, data in files.items():
        store.put_bytes(data, f"{ANALYTICS_PREFIX}/{name}")
    rows = video_rows(conversions, prices)
    minutes = sum(r.video_min for r in rows)
    return MaterializeResult(metadata={
        "videos": len(rows),
        "video_minutes": MetadataValue.float(minutes),
        "cost_usd": MetadataValue.float(sum(r.cost_usd for r in rows)),
        "cost_per_video_min_usd": MetadataValue.float(sum(r.cost_usd for r in rows) / minutes if minutes else 0.0),
        "per_video": MetadataValue.table([TableRecord(r.model_dump()) for r in rows], schema=VIDEO_ROW_SCHEMA),
        "charts": MetadataValue.md("\n\n".join(markdown_image(files[n], n) for n in (THROUGHPUT, COST))),
        "csv": MetadataValue.path(store.url(f"{ANALYTICS_PREFIX}/{CSV}")),
        "prices": MetadataValue.json(prices.model_dump()),
    })
