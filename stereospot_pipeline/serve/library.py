"""What the outbox holds, as VR players see it: each finished video with its stereo packing read
from the file-name suffix the converter wrote (the same tags players use), and its size and length
from the file itself."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

import av

from stereospot_pipeline.stereo.params import LAYOUT_SUFFIX, Layout

_SEEN_AS = {
    # layout: (stereo packing, full resolution per eye, projection)
    Layout.FULL_SBS: ("sbs", True, "flat"),
    Layout.HALF_SBS: ("sbs", False, "flat"),
    Layout.FULL_TB: ("tb", True, "flat"),
    Layout.HALF_TB: ("tb", False, "flat"),
    # Right|left is for free viewing on a flat screen; a headset playing it as SBS would invert
    # the depth, so it is listed as a flat video.
    Layout.CROSS_EYED: ("mono", True, "flat"),
    Layout.ANAGLYPH: ("mono", True, "flat"),
    Layout.VR180: ("sbs", True, "180"),
    Layout.DEPTH: ("mono", True, "flat"),
}
# Longest first: `_180x180_3dh_LR` also ends in `_LR`.
_BY_SUFFIX = sorted(((suffix, layout) for layout, suffix in LAYOUT_SUFFIX.items() if layout in _SEEN_AS),
                    key=lambda item: -len(item[0]))


_OUTPUT_TAG = re.compile(r"-[0-9a-f]{6}$")


@dataclass(frozen=True)
class Entry:
    id: str  # stable per path inside the outbox: players bookmark it
    path: Path
    relpath: str
    title: str
    stereo: str  # "sbs" | "tb" | "mono"
    full: bool
    projection: str  # "flat" | "180"
    size: int
    duration_s: float
    width: int
    height: int


def layout_of(name: str) -> Layout | None:
    stem = Path(name).stem
    for suffix, layout in _BY_SUFFIX:
        if stem.endswith(suffix):
            return layout
    return None


@lru_cache(maxsize=4096)
def _facts(path: str, size: int, mtime_ns: int) -> tuple[float, int, int] | None:
    """(duration s, width, height), or None for a file that is no playable video. Cached per
    (size, mtime): a rewritten output is read again."""
    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            duration = container.duration / av.time_base if container.duration else 0.0
            return duration, stream.codec_context.width, stream.codec_context.height
    except av.error.FFmpegError:
        return None


def scan(root: Path) -> list[Entry]:
    """Every finished video under ``root`` (recursively; hidden and partial files skipped, as are
    links that lead out of ``root``), newest first."""
    root = root.resolve()
    entries = []
    for path in root.rglob("*.mp4"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if not path.resolve().is_relative_to(root):
            continue
        stat = path.stat()
        facts = _facts(str(path), stat.st_size, stat.st_mtime_ns)
        if facts is None:
            continue
        layout = layout_of(path.name)
        stereo, full, projection = _SEEN_AS.get(layout, ("mono", True, "flat"))
        title = path.stem
        if layout is not None:
            title = title[: -len(LAYOUT_SUFFIX[layout])]
        # The content+settings tag keeps outputs apart on disk; a person browsing needs the name.
        title = _OUTPUT_TAG.sub("", title)
        entries.append(Entry(
            id=hashlib.sha256(rel.as_posix().encode()).hexdigest()[:16], path=path, relpath=rel.as_posix(),
            title=title.replace("_", " ").strip() or path.stem, stereo=stereo, full=full, projection=projection,
            size=stat.st_size, duration_s=facts[0], width=facts[1], height=facts[2]))
    entries.sort(key=lambda e: (-e.path.stat().st_mtime_ns, e.relpath))
    return entries


def deovr_library(entries: list[Entry], base: str) -> dict:
    """DeoVR's library document (its "deovr" JSON): one scene listing every video."""
    return {"scenes": [{"name": "stereospot", "list": [
        {"title": e.title, "videoLength": round(e.duration_s), "thumbnailUrl": f"{base}/thumb/{e.id}.png",
         "video_url": f"{base}/deovr/{e.id}.json"} for e in entries]}]}


def deovr_video(e: Entry, base: str) -> dict:
    video = {
        "id": e.id, "title": e.title, "videoLength": round(e.duration_s), "is3d": e.stereo != "mono",
        "thumbnailUrl": f"{base}/thumb/{e.id}.png",
        "encodings": [{"name": "h264", "videoSources": [
            {"resolution": e.height, "url": f"{base}/media/{e.id}/{quote(e.path.name)}"}]}],
    }
    if e.stereo != "mono":
        video["stereoMode"] = e.stereo
        video["screenType"] = "dome" if e.projection == "180" else "flat"
    return video


def heresphere_library(entries: list[Entry], base: str) -> dict:
    """HereSphere's library document (JSON API version 1)."""
    return {"access": 1, "library": [{"name": "stereospot", "list": [f"{base}/heresphere/{e.id}" for e in entries]}]}


def heresphere_video(e: Entry, base: str) -> dict:
    return {
        "access": 1, "title": e.title, "duration": round(e.duration_s * 1000),
        "thumbnailImage": f"{base}/thumb/{e.id}.png",
        "projection": "equirectangular" if e.projection == "180" else "perspective",
        "stereo": e.stereo, "fov": 180.0 if e.projection == "180" else 90.0, "lens": "Linear",
        "media": [{"name": "h264", "sources": [{"resolution": e.height, "height": e.height, "width": e.width,
                                                "size": e.size, "url": f"{base}/media/{e.id}/{quote(e.path.name)}"}]}],
    }
