"""Resources built from ``Settings``: the same code runs on local folders or on S3."""

from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext

from stereospot_pipeline.runs import record_worker
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.storage import LocalObjectStore, ObjectStore


class EngineResource(ConfigurableResource):
    """Where the stereo step runs."""

    device: str = "auto"

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # A local run worker names itself, so a run whose process dies is recovered (runs.py).
        if Settings().executor == "local":
            record_worker(context.instance, context.dagster_run)


def make_store(url: str, settings: Settings) -> ObjectStore:
    if url.startswith("s3://"):
        from stereospot_pipeline.storage.s3 import S3ObjectStore

        return S3ObjectStore.from_url(url, endpoint_url=settings.s3_endpoint_url)
    return LocalObjectStore(root=url)


def build_resources(settings: Settings) -> dict:
    return {
        "store": make_store(settings.url(settings.store_url, "store"), settings),
        "outbox": make_store(settings.url(settings.outbox_url, "outbox"), settings),
        "engine": EngineResource(device=settings.device),
    }
