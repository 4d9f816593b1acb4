"""Where each asset keeps its files in the object store (one place, so layouts never drift)."""

from __future__ import annotations


def source(key: str, suffix: str) -> str:
    return f"sources/{key}/source{suffix}"


def source_info(key: str) -> str:
    return f"sources/{key}/info.json"


def segment_plan(key: str) -> str:
    return f"segments/{key}/plan.json"


def segment_chunk(key: str, plan_id: str, index: int) -> str:
    return f"segments/{key}/{plan_id}/{index:05d}.nut"


def stereo_segment(key: str, fingerprint: str, index: int) -> str:
    """Content-addressed: changed settings or sources never reuse a stale segment."""
    return f"stereo/{key}/{fingerprint}/{index:05d}.mp4"


def stereo_result(key: str, fingerprint: str, index: int) -> str:
    return f"stereo/{key}/{fingerprint}/{index:05d}.json"


def depth_range(key: str, range_id: str) -> str:
    return f"stereo/{key}/depth-range-{range_id}.json"


def stereo_manifest(key: str) -> str:
    return f"stereo/{key}/manifest.json"


def final(key: str, name: str) -> str:
    return f"final/{key}/{name}"


def download(key: str, suffix: str) -> str:
    """A video added by URL: the downloaded file is its source of record (kept until deleted)."""
    return f"downloads/{key}/source{suffix}"


# Folders of intermediate objects, one per video under each: rebuilt by a re-run, so they may be swept.
WORK_ROOTS = ("sources", "segments", "stereo", "final")


def work_prefixes(key: str) -> list[str]:
    return [f"{root}/{key}" for root in WORK_ROOTS]
