"""conversion_analytics: numbers recomputed from the instance's records, charts as valid PNGs,
automatic refresh after a conversion."""

from __future__ import annotations

import csv
import io
import struct

import pytest
from dagster import AssetKey, evaluate_automation_conditions, materialize

from stereospot_pipeline.analytics.plots import SIZE_PX
from stereospot_pipeline.analytics.report import Conversion, Prices, SegmentTiming, video_row
from stereospot_pipeline.definitions import build_definitions
from stereospot_pipeline.defs.analytics import conversion_analytics
from stereospot_pipeline.defs.assets import final
from stereospot_pipeline_tests.clips import make_clip
from stereospot_pipeline_tests.conftest import convert, metadata

PRICES = {"cpu_hour_usd": 0.2, "gpu_hour_usd": 1.5}


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the PNG signature and IHDR chunk, which must come first."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_analytics_match_the_instance_records(instance, resources, settings, tmp_path):
    defs = build_definitions(settings)
    before = evaluate_automation_conditions(defs=defs, instance=instance)
    assert before.get_num_requested(AssetKey("conversion_analytics")) == 0
    clips = [make_clip(tmp_path / "small.mp4", size="160x96", gop=5),
             make_clip(tmp_path / "wide.mp4", size="192x108", gop=5, audio=False)]
    conversions = [convert(instance, resources, clip, segment_seconds=1.0) for clip in clips]
    assert all(result.success for _, result in conversions)

    # A finished conversion makes the automation daemon refresh the analytics.
    requested = evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert requested.get_num_requested(AssetKey("conversion_analytics")) == 1

    result = materialize([conversion_analytics], instance=instance, resources=resources,
                         run_config={"ops": {"conversion_analytics": {"config": PRICES}}})
    assert result.success
    meta = metadata(result, "conversion_analytics")
    table = {r.data["video"]: r.data for r in meta["per_video"].records}
    assert meta["videos"] == 2

    # Recompute from what each run recorded: its events' metadata and its start/end times.
    total_cost = 0.0
    for key, run in conversions:
        row = table[key]
        source, stereo, final = (metadata(run, a) for a in ("source_video", "stereo_segments", "final_video"))
        stats = instance.get_run_stats(run.run_id)
        run_s = stats.end_time - stats.start_time
        minutes = source["duration_s"] / 60
        cost = run_s * PRICES["cpu_hour_usd"] / 3600  # CPU only on this machine
        total_cost += cost
        assert row["resolution"] == source["resolution"]
        assert row["frames"] == final["frames"] == 20
        assert row["run_s"] == pytest.approx(run_s, abs=0.01)
        assert row["compute_s_per_video_min"] == pytest.approx(run_s / minutes, rel=1e-2)
        assert row["fps"] == pytest.approx(final["frames"] / run_s, rel=1e-2)
        assert row["cost_per_video_min_usd"] == pytest.approx(cost / minutes, rel=1e-2)
        assert row["segments"] == stereo["segments"] == 2
        seconds = sorted(r.data["wall_s"] for r in stereo["per_segment"].records)
        assert (row["segment_s_min"], row["segment_s_max"]) == (seconds[0], seconds[-1])
        assert row["failed_runs"] == 0 and row["retries"] == 0
    assert meta["cost_usd"] == pytest.approx(total_cost, rel=1e-2)
    assert "data:image/png;base64," in meta["charts"]

    store = settings.resolved_home / "store" / "analytics"
    for chart in ("throughput.png", "cost_by_resolution.png"):
        assert png_size((store / chart).read_bytes()) == SIZE_PX
    rows = list(csv.DictReader(io.StringIO((store / "conversions.csv").read_text())))
    assert {r["video"]: float(r["fps"]) for r in rows} == pytest.approx({k: r["fps"] for k, r in table.items()})


def test_failed_runs_are_counted(instance, resources, tmp_path, monkeypatch):
    clip = make_clip(tmp_path / "clip.mp4", gop=5)
    with monkeypatch.context() as patch:
        patch.setattr(final, "concat_and_mux", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
        key, bad = convert(instance, resources, clip, segment_seconds=1.0)
    assert not bad.success
    key, good = convert(instance, resources, clip, segment_seconds=1.0)
    assert good.success
    result = materialize([conversion_analytics], instance=instance, resources=resources)
    [row] = metadata(result, "conversion_analytics")["per_video"].records
    assert row.data["failed_runs"] == 1


def test_gpu_time_is_priced_as_gpu():
    conversion = Conversion(video="v", converted_at=0.0, resolution="1920x1080", pixels=1920 * 1080,
                            duration_s=120.0, frames=3600, run_s=400.0, render_s=300.0, device="cuda:0",
                            segments=(SegmentTiming(0, 100.0, False), SegmentTiming(1, 200.0, False),
                                      SegmentTiming(2, 0.0, True)),
                            failed_runs=1, retries=2)
    row = video_row(conversion, Prices(cpu_hour_usd=0.36, gpu_hour_usd=3.6))
    assert row.cost_usd == pytest.approx(100 * 0.0001 + 300 * 0.001)
    assert row.cost_per_video_min_usd == pytest.approx(row.cost_usd / 2)
    assert row.compute_s_per_video_min == 200.0
    assert (row.segment_s_min, row.segment_s_median, row.segment_s_max) == (100.0, 150.0, 200.0)
