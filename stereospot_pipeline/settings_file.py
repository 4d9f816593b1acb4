"""Settings files: one format for ``convert --settings``, ``add --settings``, the UI's run config
and inbox folders (``stereospot.toml``).

A file has the sections of ``defs/video_settings.py`` (stereo, segments, comfort, seams), in TOML
(``.toml``) or YAML/JSON (any other name)::

    [stereo]                      # ops.stereo_segments.ops.plan_stereo_segments.config
    layout = "half-sbs"           # run config: layout: HALF_SBS (either spelling is accepted here)
    divergence = "auto"           # run config: auto_divergence: true
    [segments]                    # ops.segments.config
    segment_seconds = 5
    start = "1:30"                # seconds or h:mm:ss; run config: start: 90.0

Values are those of the run config, with three conveniences: enum values by their value or
their member name, 'auto' for divergence/convergence, and times as h:mm:ss.
"""

from __future__ import annotations

import tomllib
from enum import Enum
from pathlib import Path

from stereospot_pipeline.errors import StereospotError
from stereospot_pipeline.media.selection import parse_time
from stereospot_pipeline.stereo.params import AUTO, StereoParams

FOLDER_FILE = "stereospot.toml"


def read_settings_file(path: Path) -> dict:
    """The file's settings, validated, as sections of plain values (only the fields given)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise StereospotError(f"{path}: cannot read the settings file ({exc.strerror or exc})") from exc
    return parse_settings(text, str(path))


def parse_settings(text: str, source: str) -> dict:
    """``read_settings_file`` of a file's text; ``source`` (a path or URL) names the file, and its
    suffix the format."""
    from stereospot_pipeline.defs.video_settings import validate_settings

    try:
        if source.lower().endswith(".toml"):
            raw = tomllib.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)  # YAML is a superset of JSON: both work
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise StereospotError(f"{source}: not a valid settings file ({exc})") from exc
    return validate_settings(normalized(raw, source), source)


def normalized(raw: object, source: str) -> object:
    """The conveniences of the file format turned into run-config values."""
    if not isinstance(raw, dict):
        return raw
    raw = {name: dict(fields) if isinstance(fields, dict) else fields for name, fields in raw.items()}
    stereo = raw.get("stereo")
    if isinstance(stereo, dict):
        for name in ("divergence", "convergence"):
            if stereo.get(name) == AUTO:
                del stereo[name]
                stereo[f"auto_{name}"] = True
        for name, field in StereoParams.model_fields.items():
            kind = field.annotation
            value = stereo.get(name)
            if isinstance(kind, type) and issubclass(kind, Enum) and isinstance(value, str) and value in kind.__members__:
                stereo[name] = kind[value].value
    segments = raw.get("segments")
    if isinstance(segments, dict):
        for name in ("start", "end"):
            if isinstance(segments.get(name), str):
                try:
                    segments[name] = parse_time(segments[name])
                except ValueError as exc:
                    raise StereospotError(f"{source}: segments.{name}: {exc}") from exc
    return raw


def folder_settings(path: Path, root: Path) -> tuple[dict, Path | None]:
    """The settings for a file dropped at ``path`` below ``root``: the nearest ``stereospot.toml``
    from its folder up to ``root`` wins (no merging: one file says everything for its folder)."""
    folder = path.parent
    root = root.resolve()
    while True:
        candidate = folder / FOLDER_FILE
        if candidate.is_file():
            return read_settings_file(candidate), candidate
        if folder.resolve() == root or folder.parent == folder:
            return {}, None
        folder = folder.parent
