"""One video's place in the Dagster instance: its partition added with its registration, and
removed with everything it left behind. Kept apart from the jobs (defs/library.py) so the CLI
can use it without importing the conversion assets."""

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus, RunsFilter

from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.errors import StereospotError
from stereospot_pipeline.ingest import registry_key, save_settings
from stereospot_pipeline.library import add_source, delete_video_objects
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.storage import ObjectStore

_BUSY = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
         DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def add_video_to_library(instance: DagsterInstance, store: ObjectStore, location: str, settings: dict | None,
                         app_settings: Settings) -> str:
    """Register the video at ``location`` and add its partition; returns the partition key.

    ``settings`` (validated sections, see defs/video_settings.py) replace the ones stored with the
    video; ``None`` keeps them (a video added again without settings converts as before).
    """
    key = add_source(store, location, app_settings)
    if settings is not None:
        save_settings(store, key, settings)
    if not instance.has_dynamic_partition(videos.name, key):
        instance.add_dynamic_partitions(videos.name, [key])
    return key


def busy_videos(instance: DagsterInstance) -> set[str]:
    """Partition keys of the runs queued or running now."""
    runs = instance.get_runs(filters=RunsFilter(statuses=_BUSY))
    return {r.tags["dagster/partition"] for r in runs if "dagster/partition" in r.tags}


def published_outputs(instance: DagsterInstance, key: str) -> list[str]:
    """Outbox keys this video ever published, less any that another video's latest output uses
    (two videos could once publish under one name; deleting one must not take the other's)."""
    asset = AssetKey("published_video")

    def outbox_key(record) -> str | None:
        value = record.asset_materialization.metadata.get("outbox_key")
        return value.value if value is not None else None

    ours = {outbox_key(r) for r in instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset, asset_partitions=[key]), limit=10_000).records} - {None}
    if not ours:
        return []
    # One pass over every video's materializations, newest first: the first seen is the latest.
    current, latest, cursor = set(instance.get_dynamic_partitions(videos.name)) - {key}, {}, None
    while True:
        page = instance.fetch_materializations(AssetRecordsFilter(asset_key=asset), limit=1000, cursor=cursor)
        for record in page.records:
            if record.partition_key in current:
                latest.setdefault(record.partition_key, outbox_key(record))
        if not page.has_more:
            break
        cursor = page.cursor
    return sorted(ours - set(latest.values()))


def remove_video(instance: DagsterInstance, store: ObjectStore, outbox: ObjectStore, key: str) -> list[str]:
    """Delete a video: its partition, work objects, download, registration and published outputs.

    Its runs and materializations stay in the instance, so the analytics keep its cost history.
    """
    if not (store.exists(registry_key(key)) or instance.has_dynamic_partition(videos.name, key)):
        raise StereospotError(f"no video {key!r} in this library (partition keys are listed in the UI under "
                              "Assets > source_video > Partitions, or printed by `stereospot add`)")
    if key in busy_videos(instance):
        raise StereospotError(f"video {key!r} is being converted; wait for the run to end or terminate it in "
                              "the UI, then delete it")
    removed = delete_video_objects(store, outbox, key, published_outputs(instance, key))
    if instance.has_dynamic_partition(videos.name, key):
        instance.delete_dynamic_partition(videos.name, key)
    return removed
