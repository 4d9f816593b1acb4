"""Per-video cost and speed figures from gathered conversions (pure: no Dagster, no files)."""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from dataclasses import dataclass

from pydantic import BaseModel, Field


@dataclass(frozen=True)
class SegmentTiming:
    index: int
    seconds: float
    reused: bool


@dataclass(frozen=True)
class Conversion:
    """One converted video, as its latest materializations and runs recorded it."""

    video: str
    converted_at: float  # unix time of the final_video materialization
    resolution: str  # of the source
    pixels: int
    duration_s: float  # of the source
    frames: int  # of the output
    run_s: float  # wall time of the run that produced final_video
    render_s: float  # stereo step: segment render time actually spent (reused segments cost 0)
    device: str
    segments: tuple[SegmentTiming, ...]
    failed_runs: int
    retries: int  # step retries plus re-executed runs


class Prices(BaseModel):
    """Hourly prices of the machines (defaults: AWS on-demand, us-east-1: c6i.xlarge and the
    g4dn.xlarge T4 box the original system ran on)."""

    cpu_hour_usd: float = Field(0.17, ge=0, description="price of one hour of the CPU machine")
    gpu_hour_usd: float = Field(0.526, ge=0, description="price of one hour of the GPU machine")


class VideoRow(BaseModel):
    video: str
    converted_at: float
    resolution: str
    video_min: float
    frames: int
    run_s: float
    compute_s_per_video_min: float
    fps: float  # frames per second of wall time, end to end
    segments: int
    segment_s_min: float
    segment_s_median: float
    segment_s_max: float
    failed_runs: int
    retries: int
    cost_usd: float
    cost_per_video_min_usd: float


def video_row(c: Conversion, prices: Prices) -> VideoRow:
    """The render step runs on the GPU machine when it used CUDA; everything else is CPU time."""
    minutes = c.duration_s / 60
    gpu_s = c.render_s if c.device.startswith("cuda") else 0.0
    cost = ((c.run_s - gpu_s) * prices.cpu_hour_usd + gpu_s * prices.gpu_hour_usd) / 3600
    # Reused segments took no time in this conversion: they would skew the distribution to 0.
    timings = [s.seconds for s in c.segments if not s.reused] or [0.0]
    return VideoRow(
        video=c.video, converted_at=c.converted_at, resolution=c.resolution, video_min=minutes,
        frames=c.frames, run_s=c.run_s, compute_s_per_video_min=c.run_s / minutes,
        fps=c.frames / c.run_s, segments=len(c.segments), segment_s_min=min(timings),
        segment_s_median=statistics.median(timings), segment_s_max=max(timings),
        failed_runs=c.failed_runs, retries=c.retries, cost_usd=cost, cost_per_video_min_usd=cost / minutes,
    )


def video_rows(conversions: list[Conversion], prices: Prices) -> list[VideoRow]:
    return [video_row(c, prices) for c in conversions]


def cost_by_resolution(conversions: list[Conversion], prices: Prices) -> list[tuple[str, float]]:
    """(resolution, mean cost per minute of video), smallest frame first."""
    groups: dict[tuple[int, str], list[float]] = defaultdict(list)
    for c in conversions:
        groups[(c.pixels, c.resolution)].append(video_row(c, prices).cost_per_video_min_usd)
    return [(resolution, statistics.fmean(costs)) for (_, resolution), costs in sorted(groups.items())]


def to_csv(rows: list[VideoRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(VideoRow.model_fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(row.model_dump() for row in rows)
    return buffer.getvalue()
