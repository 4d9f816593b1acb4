"""Charts as PNG bytes at a fixed pixel size (Figure without pyplot: no global state, no GUI)."""

from __future__ import annotations

import io
from datetime import datetime

from matplotlib.figure import Figure

from stereospot_pipeline.analytics.report import VideoRow

SIZE_PX = (640, 360)
_DPI = 100


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # No bbox_inches="tight": it would change the pixel size with the labels.
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _figure(title: str) -> tuple[Figure, object]:
    fig = Figure(figsize=(SIZE_PX[0] / _DPI, SIZE_PX[1] / _DPI), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def throughput_over_time(rows: list[VideoRow]) -> bytes:
    fig, ax = _figure("Conversion throughput")
    ax.plot([datetime.fromtimestamp(r.converted_at) for r in rows], [r.fps for r in rows], "o-")
    ax.set_ylabel("frames per second (end to end)")
    ax.set_ylim(bottom=0)
    fig.autofmt_xdate()
    return _png(fig)


def cost_per_minute_by_resolution(costs: list[tuple[str, float]]) -> bytes:
    fig, ax = _figure("Cost per minute of video")
    ax.bar([resolution for resolution, _ in costs], [cost for _, cost in costs])
    ax.set_xlabel("source resolution")
    ax.set_ylabel("USD per minute of video")
    return _png(fig)
