"""Read the facts analytics needs out of a Dagster instance: materialization metadata of the
conversion assets and run records. Everything else works on these plain records."""

from __future__ import annotations

from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from stereospot_pipeline.analytics.report import Conversion, SegmentTiming


def _latest_metadata(instance: DagsterInstance, asset: str, partition: str):
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1).records
    return records[0] if records else None


def gather(instance: DagsterInstance) -> list[Conversion]:
    """Every video ever converted, oldest conversion first. Read from the materializations, not
    the current partitions: a deleted video keeps its cost history."""
    conversions = []
    for video in sorted(instance.get_materialized_partitions(AssetKey("final_video"))):
        final = _latest_metadata(instance, "final_video", video)
        source = _latest_metadata(instance, "source_video", video)
        stereo = _latest_metadata(instance, "stereo_segments", video)
        if final is None or source is None or stereo is None:
            continue
        src, out = source.asset_materialization.metadata, final.asset_materialization.metadata
        stereo_meta = stereo.asset_materialization.metadata
        rows = [r.data for r in stereo_meta["per_segment"].value.records]
        run = instance.get_run_record_by_id(final.run_id)
        runs = instance.get_run_records(RunsFilter(tags={"dagster/partition": video}))
        step_retries = sum(
            len(instance.get_records_for_run(r.dagster_run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY).records)
            for r in runs)
        conversions.append(Conversion(
            video=video,
            converted_at=final.timestamp,
            resolution=src["resolution"].value,
            pixels=src["width"].value * src["height"].value,
            duration_s=src["duration_s"].value,
            frames=out["frames"].value,
            run_s=run.end_time - run.start_time,
            render_s=stereo_meta["wall_seconds"].value,
            device=rows[0]["device"],
            segments=tuple(SegmentTiming(r["index"], r["wall_s"], r["reused"]) for r in rows),
            failed_runs=sum(r.dagster_run.status == DagsterRunStatus.FAILURE for r in runs),
            retries=step_retries + sum("dagster/parent_run_id" in r.dagster_run.tags for r in runs),
        ))
    return sorted(conversions, key=lambda c: c.converted_at)
