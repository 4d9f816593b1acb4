"""The report's files (a CSV table and PNG charts), the same for the asset and the CLI."""

from __future__ import annotations

from stereospot_pipeline.analytics.report import Conversion
from stereospot_pipeline.analytics.report import Prices, cost_by_resolution, to_csv, video_rows

CSV = "conversions.csv"
THROUGHPUT = "throughput.png"
COST = "cost_by_resolution.png"


def report_files(conversions: list[Conversion], prices: Prices) -> dict[str, bytes]:
    # matplotlib takes a second to import: paid by reports, not by every command that loads the
    # definitions.
    from stereospot_pipeline.analytics import plots

    rows = video_rows(conversions, prices)
    return {
        CSV: to_csv(rows).encode(),
        THROUGHPUT: plots.throughput_over_time(rows),
        COST: plots.cost_per_minute_by_resolution(cost_by_resolution(conversions, prices)),
    }
