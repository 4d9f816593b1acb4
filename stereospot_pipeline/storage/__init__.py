"""Object stores: where assets keep their files (local folders now, S3 in production)."""

from stereospot_pipeline.storage.base import ObjectStore, check_key
from stereospot_pipeline.storage.local import LocalObjectStore

__all__ = ["LocalObjectStore", "ObjectStore", "check_key"]
