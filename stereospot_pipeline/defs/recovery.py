"""The daemon's side of dead-run recovery: with `stereospot ui` running, a conversion whose CLI
process died is marked failed and its pool slots freed within a tick, with no command needed."""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from stereospot_pipeline.runs import recover_dead_runs


@sensor(minimum_interval_seconds=10, default_status=DefaultSensorStatus.RUNNING)
def dead_run_sensor(context: SensorEvaluationContext):
    """Finds runs whose worker process is gone (see stereospot_pipeline/runs.py)."""
    recovered = recover_dead_runs(context.instance)
    if recovered:
        context.log.info(f"marked failed, slots freed: {', '.join(recovered)}")
        return SkipReason(f"recovered {len(recovered)} dead run(s): {', '.join(recovered)}")
    return SkipReason("no dead runs")
