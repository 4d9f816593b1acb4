"""The library's doors in Dagster: add a new video from the Launchpad (and convert it with the
settings given there), delete a video, sweep stale local work objects on a schedule."""

from pathlib import Path

from dagster import (
    Config,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    OpExecutionContext,
    RunRequest,
    RunStatusSensorContext,
    ScheduleDefinition,
    job,
    op,
    run_status_sensor,
)
from pydantic import Field

from stereospot_pipeline.defs.assets.segments import SegmentsConfig
from stereospot_pipeline.defs.assets.stereo import StereoConfig
from stereospot_pipeline.defs.checks import ComfortConfig, SeamConfig
from stereospot_pipeline.defs.errors import reported_as_failure
from stereospot_pipeline.defs.jobs import convert_video
from stereospot_pipeline.defs.video_settings import given_config, run_config, settings_from_config
from stereospot_pipeline.defs.videos import add_video_to_library, busy_videos, remove_video
from stereospot_pipeline.ingest import load_settings, registry_key
from stereospot_pipeline.library import sweep_work
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.storage import LocalObjectStore, ObjectStore

ADDED_VIDEO_TAG = "stereospot/video"


# --- add a video from the Launchpad -----------------------------------------------------------


class AddVideoConfig(Config):
    location: str = Field(description="the video: a local path, an s3:// URI or an http(s) URL (downloaded)")
    stereo: StereoConfig = Field(default_factory=StereoConfig, description="stereo settings (layout, "
                                 "divergence, convergence, method, depth_model ...)")
    segments: SegmentsConfig = Field(default_factory=SegmentsConfig, description="how long each segment is")
    comfort: ComfortConfig = Field(default_factory=ComfortConfig, description="comfort check budget")
    seams: SeamConfig = Field(default_factory=SeamConfig, description="seam check limits")


@op(name="add_new_video")
def add_video_op(context: OpExecutionContext, config: AddVideoConfig, store: ObjectStore) -> None:
    """Register the video and its settings; the convert_added_videos sensor then converts it."""
    with reported_as_failure():
        settings = settings_from_config(config, given_config(context)) or None
        key = add_video_to_library(context.instance, store, config.location, settings, Settings())
    # The sensor that starts the conversion reads the key from the run's tags.
    context.instance.add_run_tags(context.run_id, {ADDED_VIDEO_TAG: key})
    context.log.info(f"added {config.location} as video {key} with settings "
                     f"{settings if settings is not None else '(unchanged)'}")


@job(description="Add a new video (local path, s3:// URI or http(s) URL) with its stereo settings; "
                 "its conversion starts as soon as this run succeeds.")
def add_video():
    add_video_op()


@run_status_sensor(run_status=DagsterRunStatus.SUCCESS, monitored_jobs=[add_video], request_job=convert_video,
                   minimum_interval_seconds=5, default_status=DefaultSensorStatus.RUNNING)
def convert_added_videos(context: RunStatusSensorContext, store: ObjectStore):
    """Each successful add_video run becomes one conversion run of its video, with the stored
    settings as run config (so the run's config shows what it converts with)."""
    run = context.instance.get_run_by_id(context.dagster_run.run_id)
    key = run.tags.get(ADDED_VIDEO_TAG) if run else None
    if key is None:
        return None
    name = store.get_json(registry_key(key))["name"]
    return RunRequest(run_key=f"added:{run.run_id}", partition_key=key, run_config=run_config(load_settings(store, key)),
                      tags={"stereospot/source": name[:200], "stereospot/added-by": run.run_id})


# --- delete a video ---------------------------------------------------------------------------


class DeleteVideoConfig(Config):
    video: str = Field(description="partition key of the video to delete (Assets > source_video > Partitions)")


@op(name="delete_video_files")
def delete_video_op(context: OpExecutionContext, config: DeleteVideoConfig, store: ObjectStore,
                    outbox: ObjectStore) -> None:
    with reported_as_failure():
        removed = remove_video(context.instance, store, outbox, config.video)
    context.log.info(f"deleted video {config.video}: {len(removed)} objects removed\n" + "\n".join(removed))


@job(description="Delete a video: its partition, work objects and published outputs (its run history stays).")
def delete_video():
    delete_video_op()


# --- sweep stale work objects (local stores; S3 expires them by a lifecycle rule) ---------------


class SweepConfig(Config):
    older_than_days: float | None = Field(None, gt=0, description="default: STEREOSPOT_WORK_RETENTION_DAYS")


@op(name="sweep_work")
def sweep_work_op(context: OpExecutionContext, config: SweepConfig, store: ObjectStore) -> None:
    if not isinstance(store, LocalObjectStore):
        context.log.info("the work store is not a local folder: its lifecycle rule expires work objects")
        return
    days = config.older_than_days or Settings().work_retention_days
    swept = sweep_work(Path(store.root), days, keep=busy_videos(context.instance))
    context.log.info(f"swept the work objects of {len(swept)} video(s) untouched for {days:g} days: "
                     f"{', '.join(swept) or 'none'}")


@job(description="Remove local work objects (source copies, segments, stereo segments, joined files) of "
                 "videos untouched for N days; outputs, registrations and history stay.")
def sweep_work_objects():
    sweep_work_op()


sweep_work_daily = ScheduleDefinition(name="sweep_work_daily", job=sweep_work_objects, cron_schedule="17 3 * * *",
                                      default_status=DefaultScheduleStatus.RUNNING)
