"""The GPU step: one op per segment, fanned out with DynamicOut and collected again."""


import hashlib
import json
from enum import Enum
import tempfile
import time
from pathlib import Path

from dagster import (
    AssetIn,
    Config,
    DynamicOut,
    DynamicOutput,
    Failure,
    In,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Output,
    RetryPolicy,
    TableRecord,
    graph_asset,
    op,
)
from pydantic import Field

from stereospot_pipeline import keys
from stereospot_pipeline.defs.errors import reported_as_failure
from stereospot_pipeline.defs.executor import gpu_op_tags
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.defs.resources import EngineResource
from stereospot_pipeline.defs.tables import STEREO_SEGMENT_SCHEMA
from stereospot_pipeline.defs.video_settings import with_stored
from stereospot_pipeline.ingest import registry_key
from stereospot_pipeline.render import (
    RenderResult,
    output_encoder,
    plan_video_output,
    render_segment,
    whole_video_depth_range,
)
from stereospot_pipeline.media.probe import Colour, VideoInfo
from stereospot_pipeline.media.segment import SegmentPlan
from stereospot_pipeline.media.verify import verify_segment
from stereospot_pipeline.stereo.convert import StereoConverter, pick_device
from stereospot_pipeline.stereo.models import choose_model, upgrade_hint
from stereospot_pipeline.stereo.planes import PixelFormat
from stereospot_pipeline.stereo.normalize import DepthRange
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.stereo.params import AUTO, LAYOUT_SUFFIX, StereoParams
from stereospot_pipeline.storage import ObjectStore

ENGINE_VERSION = "8"  # bump whenever the engine writes different segments (pixels, bitstream): cached segments are keyed on it

# Production routes this op to GPU capacity through the ECS executor; locally the tags are inert.
GPU_OP_TAGS = gpu_op_tags(Settings())


class StereoConfig(Config, StereoParams):
    """Run config of the stereo step: the engine's StereoParams plus pipeline options."""

    # Dagster config has no number-or-"auto" type: the numbers stay numbers, and these flags
    # say "auto" (the number is then ignored).
    divergence: float = Field(2.0, ge=0.0, le=10.0, description="max disparity, % of the larger side")
    convergence: float = Field(0.5, ge=0.0, le=1.0, description="depth (0=far, 1=near) on the screen plane")
    auto_divergence: bool = Field(False, description="per scene, as much strength as the comfort budget "
                                                     "allows (divergence='auto')")
    auto_convergence: bool = Field(False, description="the main subject on the screen plane "
                                                      "(convergence='auto')")

    def stereo_params(self) -> StereoParams:
        values = self.model_dump(exclude={"seam_free", "auto_divergence", "auto_convergence"})
        for name in ("divergence", "convergence"):
            if getattr(self, f"auto_{name}"):
                values[name] = AUTO
        return StereoParams.model_validate(values)

    seam_free: bool = Field(
        True, description="normalise depth with one range measured over the whole video, so "
                          "independently converted segments join without depth jumps")


def _hdr_transfer(colour: Colour) -> str | None:
    """The source's HDR transfer where the frames stay HDR (STEREOSPOT_HDR=keep): depth then sees
    them tone-mapped. A tone-mapped working copy is SDR and gives None."""
    return colour.transfer if colour.hdr else None


def stereo_run_config(params: StereoParams) -> dict:
    """``params`` as run config: Dagster names enum values by member name (``FULL_SBS``)."""
    config = {k: (v.name if isinstance(v, Enum) else v) for k, v in params.model_dump().items()}
    defaults = StereoParams()
    for name in ("divergence", "convergence"):
        if config[name] == AUTO:
            config[name], config[f"auto_{name}"] = getattr(defaults, name), True
    return config


def _whole_video_depth_range(context: OpExecutionContext, store: ObjectStore, engine: EngineResource,
                             params: StereoParams, sha: str, source: VideoInfo) -> dict:
    """One nearness range for the whole video from sparse low-resolution samples, stored once
    per video and depth setting and shared by every segment."""
    key = context.partition_key
    range_id = hashlib.sha256(
        f"{sha}|{params.depth_model}|{params.depth_short_side}|{params.flip_tta}|{ENGINE_VERSION}".encode()
    ).hexdigest()[:12]
    stored = keys.depth_range(key, range_id)
    if store.exists(stored):
        return store.get_json(stored)
    started = time.perf_counter()
    converter = StereoConverter(params, device=pick_device(engine.device), pixel_format=PixelFormat.YUV420P,
                                hdr_transfer=_hdr_transfer(source.colour), matrix=source.colour.yuv_matrix)
    source_key = store.get_json(keys.source_info(key))["storage_key"]
    with store.local_copy(source_key) as src:
        depth_range = whole_video_depth_range(src, converter)
    result = depth_range.model_dump(mode="json")
    store.put_json(result, stored)
    context.log.info(f"whole-video depth range {result} in {time.perf_counter() - started:.1f}s")
    return result


@op(ins={"segments": In(Nothing)}, out=DynamicOut(dict))
def plan_stereo_segments(context: OpExecutionContext, config: StereoConfig, store: ObjectStore,
                         engine: EngineResource):
    key = context.partition_key
    config = with_stored(context, config, store, "stereo")
    plan = store.get_json(keys.segment_plan(key))
    sha = store.get_json(registry_key(key))["sha256"]
    params = config.stereo_params()
    # "auto" is resolved once, here: every segment (and the cache key) then names the same model.
    choice = choose_model(params.depth_model)
    context.log.info(choice.describe())
    params = params.model_copy(update={"depth_model": choice.model})
    # One output decision for the whole video (codec, each eye's size: player limits, HDR kept).
    source = VideoInfo.model_validate(store.get_json(keys.source_info(key)))
    try:
        params, output = plan_video_output(params, source.display_size, source.colour)
        output_encoder(params, source.colour)  # a codec that cannot carry the source fails here, once
    except ValueError as exc:
        raise Failure(f"{key}: {exc}", allow_retries=False) from exc
    context.log.info(f"output: {output.codec.value} {output.width}x{output.height} ({output.decision})")
    depth_range = _whole_video_depth_range(context, store, engine, params, sha, source) if config.seam_free else None
    fingerprint = hashlib.sha256(
        f"{sha}|{plan['plan_id']}|{params.fingerprint()}|{json.dumps(depth_range, sort_keys=True)}|"
        f"{ENGINE_VERSION}".encode()
    ).hexdigest()[:16]
    count = len(plan["segments"])
    # Each eye at the source's display size (anamorphic pixels made square) or, scaled to fit the
    # player limits, at the planned eye size: frames are decoded straight to it.
    eye = (output.eye_width, output.eye_height) if output.scaled else source.display_size
    picture = {"size": list(eye), "colour": source.colour.model_dump(), "coded_depth": source.coded_depth,
               "output_plan": {"codec": output.codec.value, "eye": [output.eye_width, output.eye_height],
                               "frame": [output.width, output.height], "decision": output.decision}}
    for seg in plan["segments"]:
        task = {**seg, **picture, "video": key, "count": count, "fingerprint": fingerprint,
                "params": params.model_dump(mode="json"), "depth_range": depth_range}
        yield DynamicOutput(task, mapping_key=f"segment_{seg['index']:05d}")


@op(tags=GPU_OP_TAGS, pool="gpu", retry_policy=RetryPolicy(max_retries=2, delay=2))
def render_stereo_segment(context: OpExecutionContext, store: ObjectStore, engine: EngineResource,
                          task: dict) -> dict:
    """Depth + stereo warp + encode for one segment. Finished segments are reused by content key."""
    video, index, fingerprint = task["video"], task["index"], task["fingerprint"]
    out_key = keys.stereo_segment(video, fingerprint, index)
    result_key = keys.stereo_result(video, fingerprint, index)
    label = f"segment {index + 1}/{task['count']} ({task['start_s']:.2f}s-{task['start_s'] + task['duration_s']:.2f}s)"
    if store.exists(out_key) and store.exists(result_key):
        context.log.info(f"{label}: already converted with these settings, reusing {out_key}")
        record = store.get_json(result_key)
        if "packet_digest" not in record:  # stored before segments were verified in their step
            with store.local_copy(out_key) as stored:
                verified = verify_segment(stored, record["frames"], (record["width"], record["height"]))
            record.update(packets=verified.packets, packet_digest=verified.packet_digest)
            store.put_json(record, result_key)
        return {**record, "reused": True}
    params = StereoParams.model_validate(task["params"])
    depth_range = DepthRange.model_validate(task["depth_range"]) if task["depth_range"] else None
    colour = Colour(**task["colour"])
    converter = StereoConverter(params, device=pick_device(engine.device), depth_range=depth_range,
                                pixel_format=PixelFormat.YUV420P, hdr_transfer=_hdr_transfer(colour),
                                matrix=colour.yuv_matrix)
    started = time.perf_counter()
    last_logged = [0.0]

    def progress(done: int) -> None:
        now = time.perf_counter()
        if now - last_logged[0] < 5 and done < task["frames"]:
            return
        last_logged[0] = now
        elapsed = now - started
        eta = elapsed / done * (task["frames"] - done) if done else 0.0
        context.log.info(f"{label}: {100 * done / task['frames']:.0f}% ({done}/{task['frames']} frames), "
                         f"{done / elapsed:.1f} fps, ETA {eta:.0f}s")

    with tempfile.TemporaryDirectory(prefix="stereospot-render-") as tmp, reported_as_failure():
        out = Path(tmp) / "stereo.mp4"
        with store.local_copy(task["key"]) as chunk:
            try:
                result: RenderResult = render_segment(chunk, out, params, plan=SegmentPlan.model_validate(task),
                                                      converter=converter, on_progress=progress,
                                                      size=tuple(task["size"]), colour=colour,
                                                      coded_depth=task.get("coded_depth", 0))
            except Exception as exc:
                exc.args = (f"{label} of {video} failed: {exc}",) + exc.args[1:]
                raise
        store.put_file(out, out_key)
    if result.encoder_fallback:
        context.log.warning(f"{label}: {result.encoder_fallback}; encoded with {result.encoder}")
    record = {"index": index, "key": out_key, "fingerprint": fingerprint, "params": task["params"],
              "depth_range": task["depth_range"], "output_plan": task.get("output_plan"), **result.model_dump()}
    store.put_json(record, result_key)
    return {**record, "reused": False}


@op
def collect_stereo_segments(context: OpExecutionContext, store: ObjectStore, results: list[dict]):
    key = context.partition_key
    results = sorted(results, key=lambda r: r["index"])
    params = StereoParams.model_validate(results[0]["params"])
    # Segments are joined by packet copy: one encoder's parameter sets must fit them all (a retry
    # on a machine without NVENC would otherwise mix h264_nvenc and libx264 streams).
    encoders = sorted({r.get("encoder", "libx264") for r in results})
    if len(encoders) > 1:
        raise Failure(f"{key}: segments were encoded by different encoders ({', '.join(encoders)}) and cannot "
                      "be joined; set encoder=software (or run every segment on NVENC machines) and convert again",
                      allow_retries=False)
    first = results[0]
    plan = first.get("output_plan") or {}
    used = strength_used(params, results)
    manifest = {
        "fingerprint": results[0]["fingerprint"],
        "eye_size": plan.get("eye"),
        "encoding": {"codec": first.get("codec", "h264"), "encoder": encoders[0],
                     "bit_depth": first.get("bit_depth", 8), "encoder_fallback": first.get("encoder_fallback"),
                     "player_limits": plan.get("decision")},
        "params": params.model_dump(mode="json"),
        "strength_used": used,
        "suffix": LAYOUT_SUFFIX[params.layout],
        "segments": [{k: r[k] for k in ("index", "key", "frames", "width", "height", "packets", "packet_digest")}
                     for r in results],
        # A trim or frame-rate cap (None: every frame): part of what the output name identifies.
        "selection": store.get_json(keys.segment_plan(key)).get("selection"),
    }
    store.put_json(manifest, keys.stereo_manifest(key))
    frames = sum(r["frames"] for r in results)
    wall = sum((r["seconds"] for r in results if not r["reused"]), 0.0)
    return Output(manifest, metadata={
        "segments": len(results),
        "frames": frames,
        "wall_seconds": MetadataValue.float(wall),
        "fps": MetadataValue.float(frames / wall if wall else 0.0),
        "reused_segments": sum(r["reused"] for r in results),
        "layout": params.layout.value,
        "divergence": str(params.divergence),
        "convergence": str(params.convergence),
        **used,
        "method": params.method.value,
        "codec": manifest["encoding"]["codec"],
        "encoder": encoders[0],
        "bit_depth": manifest["encoding"]["bit_depth"],
        "encoder_fallback": manifest["encoding"]["encoder_fallback"] or "none: the encoder asked for opened",
        "player_limits": manifest["encoding"]["player_limits"] or "not planned",
        "depth_model": params.depth_model,
        **({"depth_model_hint": hint} if (hint := upgrade_hint(params.depth_model)) else {}),
        # The one nearness range every segment was normalised with (seam-free), or why there is none.
        "whole_video_depth_range": MetadataValue.json(
            results[0].get("depth_range") or {"none": "seam_free is off: each segment smooths its own range"}),
        "settings": MetadataValue.json(params.model_dump(mode="json")),
        "per_segment": MetadataValue.table(
            [TableRecord({"index": r["index"], "frames": r["frames"], "wall_s": round(r["seconds"], 3),
                          "fps": round(r["fps"], 2), "depth_model": r["depth_model"], "device": r["device"],
                          "mean_depth": round(r["mean_depth"], 4), "max_shift_px": round(r["max_shift_px"], 2),
                          "depth_min": round(r["depth_min"], 4), "depth_max": round(r["depth_max"], 4),
                          "reused": r["reused"]}) for r in results],
            schema=STEREO_SEGMENT_SCHEMA,
        ),
    })


def strength_used(params: StereoParams, results: list[dict]) -> dict[str, float]:
    """The divergence and convergence the frames were rendered with, as numbers: the setting's
    own value, or the range the comfort controller chose over the video where it is "auto"."""
    used = {}
    for name in ("divergence", "convergence"):
        value = getattr(params, name)
        if value == AUTO:
            ranges = [r[f"auto_{name}"] for r in results if r.get(f"auto_{name}")]
            if not ranges:  # segments converted before the range was recorded
                continue
            lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        else:
            lo = hi = float(value)
        used |= {f"{name}_used_min": round(lo, 4), f"{name}_used_max": round(hi, 4)}
    return used


@graph_asset(
    partitions_def=videos,
    group_name="conversion",
    ins={"segments": AssetIn(dagster_type=Nothing)},
    kinds={"pytorch"},
    # The UI marks partitions converted by an older engine as stale (final and published videos
    # carry the same version).
    code_version=ENGINE_VERSION,
)
def stereo_segments(segments):
    """Every segment converted to stereo (depth estimation, warp, layout, encode), one step each."""
    tasks = plan_stereo_segments(segments)
    return collect_stereo_segments(tasks.map(render_stereo_segment).collect())
