"""Read access to where videos come from (local paths now; S3 URIs through the S3 store)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stereospot_pipeline.errors import InvalidVideoError


@contextmanager
def open_source(uri: str) -> Iterator[Path]:
    """A local, read-only path to the source for the duration of the block."""
    if uri.startswith("s3://"):
        from stereospot_pipeline.storage.s3 import download_uri

        with download_uri(uri) as path:
            yield path
        return
    path = Path(uri)
    if not path.is_file():
        raise InvalidVideoError(uri, "the source file no longer exists", "add the video again")
    yield path
