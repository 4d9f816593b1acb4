"""Conversion settings stored with a video when it is added, so that every way of converting it
(the UI's Materialize, `dagster asset materialize` / `dg launch` in CI, the sensors) uses them.

A settings file (``stereospot add --settings FILE``, or the ``add_video`` job's run config) has one
section per configurable step, each holding that step's run-config fields::

    stereo:   {layout: half-sbs, divergence: 3.0}     # stereo_segments.plan_stereo_segments
    segments: {segment_seconds: 5}                     # segments
    comfort:  {max_disparity_fraction: 0.03, blocking: true}   # the comfortable_disparity check
    seams:    {max_ratio: 3.0}                         # the seamless_depth check

Only the fields given are stored, so defaults keep following the code. When a run is launched,
a field given in the run's own config wins; the stored value fills in for a field it leaves out.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from dagster import Config
from pydantic import ValidationError

from stereospot_pipeline.errors import StereospotError
from stereospot_pipeline.ingest import load_settings
from stereospot_pipeline.storage import ObjectStore

C = TypeVar("C", bound=Config)


def sections() -> dict[str, tuple[type[Config], tuple[str, ...]]]:
    """Section name -> (its config class, the path of its op in a run config)."""
    # Imported here: the assets import this module to read their stored settings.
    from stereospot_pipeline.defs.assets.segments import SegmentsConfig
    from stereospot_pipeline.defs.assets.stereo import StereoConfig
    from stereospot_pipeline.defs.checks import ComfortConfig, SeamConfig

    return {
        "segments": (SegmentsConfig, ("segments",)),
        "stereo": (StereoConfig, ("stereo_segments", "plan_stereo_segments")),
        "comfort": (ComfortConfig, ("final_video_comfortable_disparity",)),
        "seams": (SeamConfig, ("final_video_seamless_depth",)),
    }


def validate_settings(raw: object, source: str) -> dict:
    """Check a settings document; returns it as plain JSON values, only the fields given."""
    known = sections()
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise StereospotError(f"{source}: settings must be a mapping of sections ({', '.join(known)})")
    result = {}
    for name, fields in raw.items():
        if name not in known:
            raise StereospotError(f"{source}: unknown settings section {name!r} (sections: {', '.join(known)})")
        if not isinstance(fields, dict):
            raise StereospotError(f"{source}: section {name!r} must be a mapping of fields")
        cls = known[name][0]
        unknown = sorted(set(fields) - set(cls.model_fields))
        if unknown:
            raise StereospotError(f"{source}: unknown field(s) {', '.join(unknown)} in {name!r} "
                                  f"(fields: {', '.join(cls.model_fields)})")
        try:
            parsed = cls(**fields)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise StereospotError(f"{source}: invalid {name!r} settings: {problems}") from exc
        if fields:
            result[name] = parsed.model_dump(mode="json", include=set(fields))
    return result


def settings_from_config(config: Config, given: dict) -> dict:
    """The settings sections of a config object holding them as fields (the add_video job), only
    the fields the run config gave (``given``: that config's raw run config)."""
    return validate_settings({name: getattr(config, name).model_dump(mode="json", include=set(fields))
                              for name, fields in given.items() if name in sections() and fields}, "run config")


def run_config(settings: dict) -> dict:
    """Stored settings as a run config of the conversion job (enum fields by member name, as
    Dagster's config schema names them)."""
    ops: dict = {}
    for name, fields in settings.items():
        cls, path = sections()[name]
        parsed = cls(**fields)
        values = {f: (v.name if isinstance(v := getattr(parsed, f), Enum) else v) for f in fields}
        node = ops
        for step in path[:-1]:
            node = node.setdefault(step, {}).setdefault("ops", {})
        node[path[-1]] = {"config": values}
    return {"ops": ops} if ops else {}


def given_config(context) -> dict:
    """The op's run config exactly as launched. Dagster fills in defaults (and marks enum fields
    as set) before the op sees its config object, so only the run's own record tells what a user
    actually gave."""
    op_context = getattr(context, "op_execution_context", context)
    node = op_context.run.run_config or {}
    for name in op_context.op_handle.path:
        node = (node.get("ops") or {}).get(name) or {}
    return node.get("config") or {}


def with_stored(context, config: C, store: ObjectStore, section: str) -> C:
    """``config`` with the video's stored settings filling in for fields the run did not give."""
    stored = load_settings(store, context.partition_key).get(section)
    if not stored:
        return config
    given = {name: getattr(config, name) for name in given_config(context)}
    return type(config)(**{**stored, **given})
