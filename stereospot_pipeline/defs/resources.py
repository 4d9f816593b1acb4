"""Resources built from ``Settings``: the same code runs on local folders or on S3."""

from __future__ import annotations

from dagster import ConfigurableResource

from stereospot_pipeline.settings import Settings
from stereospot_pipeline.storage import LocalObjectStore, ObjectStore


class EngineResource(ConfigurableResource):
    """Where the stereo step runs."""

    device: str = "auto"


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
