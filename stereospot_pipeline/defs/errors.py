"""Turn user-facing engine errors into Dagster failures that say what to do, without retries."""

from __future__ import annotations

from contextlib import contextmanager

from dagster import Failure

from stereospot_pipeline.errors import InvalidVideoError, StereospotError
from stereospot_pipeline.storage.base import disk_full


@contextmanager
def reported_as_failure():
    try:
        yield
    except InvalidVideoError as exc:
        raise Failure(
            description=str(exc),
            metadata={"file": exc.path, "problem": exc.problem, "what to do": exc.hint},
            allow_retries=False,
        ) from exc
    except StereospotError as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc
    except OSError as exc:
        # Temporary files (the encoder's, the joined file) on a full disk: retrying cannot help.
        if full := disk_full(exc):
            raise Failure(description=str(full), allow_retries=False) from exc
        raise

