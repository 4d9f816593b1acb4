"""Object stores: where assets keep their files (local folders now, S3 in production)."""

from stereospot_pipeline.storage.base import DiskFullError, ObjectStore, check_key, disk_full
from stereospot_pipeline.storage.local import LocalObjectStore

__all__ = ["DiskFullError", "LocalObjectStore", "ObjectStore", "check_key", "disk_full"]
