"""The ``stereospot`` command line: convert videos through the Dagster assets, open the UI."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from stereospot_pipeline.analytics.report import Prices
from stereospot_pipeline.cli_options import model_options, with_options
from stereospot_pipeline.media.selection import SegmentOptions
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.stereo.params import StereoParams

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Turn 2D videos into stereo 3D.")
# Logs and pipes get wide lines: tables and paths are never cut to a default 80 columns.
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)

_PROJECT_ROOT = Path(__file__).resolve().parent.parent
_TOKEN_TAG = "stereospot/cli-token"
_RENDER_STEP = "stereo_segments.render_stereo_segment["


def prepare_instance(settings: Settings) -> Path:
    """Point DAGSTER_HOME at the state folder and give it the project's instance config."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = _PROJECT_ROOT / "dagster.yaml"
    target = home / "dagster.yaml"
    if config.is_file() and (not target.exists() or target.read_bytes() != config.read_bytes()):
        _copy_atomic(config, target)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ["STEREOSPOT_HOME"] = str(settings.resolved_home)
    return home


def open_instance(settings: Settings):
    """The local Dagster instance. Two commands started at once on a fresh state folder would both
    create its SQLite schema and one would fail: the first opening happens under a file lock.

    Runs whose process died (killed, out of memory, power loss) are recovered first: marked
    failed and their pool slots freed, so they never block this command's conversion."""
    from dagster import DagsterInstance

    from stereospot_pipeline.runs import recover_dead_runs

    home = prepare_instance(settings)
    with open(home / ".open.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        instance = DagsterInstance.get()
    for run_id in recover_dead_runs(instance):
        err.print(f"[yellow]run {run_id} had died with its process: marked failed, its pool slots freed[/]")
    return instance


@app.command()
@with_options(model_options(StereoParams, "Stereo settings"),
              model_options(SegmentOptions, "Segments and frames", as_text=("start", "end")))
def convert(
    inputs: list[Path] = typer.Argument(..., metavar="INPUT...", help="video files and folders (searched "
                                        "recursively for video files) to convert"),
    output: Path | None = typer.Option(None, "-o", "--output", help="where to write the result (one input only)"),
    settings_file: Path | None = typer.Option(None, "--settings", help="settings file (TOML, or YAML/JSON): "
                                              "sections stereo, segments, comfort, seams; options override it"),
    **options,
) -> None:
    """Convert videos to stereo 3D; each run is recorded in the local Dagster instance. Content
    already converted with the same settings is skipped; with several inputs a summary table ends."""
    from stereospot_pipeline.errors import StereospotError

    files, missing = _expand_inputs(inputs)
    single = len(inputs) == 1 and inputs[0].is_file()
    if output is not None and not single:
        err.print("[red]error:[/] -o/--output names one file: give exactly one input file, or leave -o out "
                  "(results go to the outbox)")
        raise typer.Exit(2)
    if len(inputs) == 1 and missing:
        err.print(f"[red]error:[/] {missing[0]}: no such file")
        raise typer.Exit(2)
    try:
        run_config, params, segment_options = _conversion_config(settings_file, options)
    except (StereospotError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if not files and not missing:
        err.print(f"[red]error:[/] no video files in {', '.join(map(str, inputs))} (extensions: mp4, mov, mkv ...)")
        raise typer.Exit(2)
    from stereospot_pipeline.stereo.models import choose_model

    out.print(choose_model(params.depth_model).describe())
    settings = Settings()
    instance = open_instance(settings)
    rows = [(str(path), "failed", "no such file", 0.0) for path in missing]
    for path in files:
        started = time.perf_counter()
        try:
            result, produced = _convert_one(instance, settings, path, run_config, params, segment_options, output)
        except typer.Exit as exc:
            if single:
                raise
            result, produced = ("failed", "see above") if exc.exit_code == 1 else ("stopped", "")
            if exc.exit_code not in (0, 1):
                raise
        rows.append((str(path), result, produced, time.perf_counter() - started))
    if not single:
        _print_summary(rows)
        if any(r[1] == "failed" for r in rows):
            raise typer.Exit(1)


def _expand_inputs(inputs: list[Path]) -> tuple[list[Path], list[Path]]:
    """(video files to convert, inputs that do not exist): folders searched recursively for video
    file names (hidden ones left out), files taken as given, each file once."""
    from stereospot_pipeline.ingest import is_video_name

    files, missing, seen = [], [], set()
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and is_video_name(p.name)
                           and not any(part.startswith(".") for part in p.relative_to(item).parts))
        elif item.is_file():
            found = [item]
        else:
            missing.append(item)
            continue
        for path in found:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                files.append(path)
    return files, missing


def _conversion_config(settings_file: Path | None, options: dict) -> tuple[dict, StereoParams, SegmentOptions]:
    """The run config of a conversion: the model's defaults < the settings file < options given."""
    from stereospot_pipeline.cli_options import given
    from stereospot_pipeline.defs.assets.stereo import StereoConfig, stereo_run_config
    from stereospot_pipeline.defs.video_settings import run_config as sections_run_config
    from stereospot_pipeline.media.selection import parse_time
    from stereospot_pipeline.settings_file import read_settings_file

    sections = read_settings_file(settings_file) if settings_file else {}
    stereo = dict(sections.get("stereo", {}))
    cli_stereo = given(options, StereoParams)
    for name in ("divergence", "convergence"):
        if name in cli_stereo:
            stereo[f"auto_{name}"] = cli_stereo[name] == "auto"
            if cli_stereo[name] == "auto":
                del cli_stereo[name]
    cli_segments = given(options, SegmentOptions)
    for name in ("start", "end"):
        if name in cli_segments:
            try:
                cli_segments[name] = parse_time(cli_segments[name])
            except ValueError as exc:
                raise ValueError(f"--{name}: {exc}") from exc
    try:
        config = StereoConfig(**{**stereo, **cli_stereo})
        segment_options = SegmentOptions(**{**sections.get("segments", {}), **cli_segments})
    except ValidationError as exc:
        problems = "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        raise ValueError(problems) from None
    params = config.stereo_params()
    stereo_config = {**stereo_run_config(params), "seam_free": config.seam_free}
    ops = sections_run_config({k: v for k, v in sections.items() if k in ("comfort", "seams")}).get("ops", {})
    ops["segments"] = {"config": segment_options.model_dump(exclude_none=True)}
    ops["stereo_segments"] = {"ops": {"plan_stereo_segments": {"config": stereo_config}}}
    return {"loggers": {"console": {"config": {"log_level": "WARNING"}}}, "ops": ops}, params, segment_options


def _already_converted(store, outbox, key: str, params: StereoParams, segment_options: SegmentOptions) -> str | None:
    """The outbox key of this content converted with these settings, if it is there: the output
    name's tag identifies content + settings (the depth model as 'auto' resolves now)."""
    from stereospot_pipeline import keys
    from stereospot_pipeline.defs.assets.final import output_key, output_name, output_tag
    from stereospot_pipeline.errors import StereospotError
    from stereospot_pipeline.ingest import registry_key
    from stereospot_pipeline.media.probe import VideoInfo
    from stereospot_pipeline.render import plan_video_output
    from stereospot_pipeline.stereo.models import choose_model
    from stereospot_pipeline.stereo.params import LAYOUT_SUFFIX

    reg = store.get_json(registry_key(key))
    if not store.exists(keys.source_info(key)):
        return None  # never probed, so never converted
    source = VideoInfo.model_validate(store.get_json(keys.source_info(key)))
    resolved = params.model_copy(update={"depth_model": choose_model(params.depth_model).model})
    try:
        # As the stereo step resolves them (codec and bit depth fixed for this source).
        resolved, _ = plan_video_output(resolved, source.display_size, source.colour)
    except StereospotError:
        return None
    selection = segment_options.model_dump(include={"start", "end", "max_fps"}) if segment_options.selects else None
    name = output_name(reg["name"], LAYOUT_SUFFIX[params.layout], output_tag(reg["sha256"], resolved, selection))
    published = output_key(reg.get("folder", ""), name)
    return published if outbox.exists(published) else None


def _print_summary(rows: list[tuple[str, str, str, float]]) -> None:
    from rich.table import Table

    table = Table(title=f"{len(rows)} input(s)")
    for column in ("file", "result", "output", "time"):
        table.add_column(column, justify="right" if column == "time" else "left")
    colours = {"converted": "green", "skipped": "cyan", "failed": "red", "stopped": "yellow"}
    for file, result, produced, seconds in rows:
        table.add_row(escape(file), f"[{colours.get(result, 'white')}]{result}[/]", escape(produced), f"{seconds:.1f}s")
    out.print(table)


def _convert_one(instance, settings: Settings, input: Path, run_config: dict, params: StereoParams,
                 segment_options: SegmentOptions, output: Path | None) -> tuple[str, str]:
    """Convert one file (or find it already converted); returns (result, output path)."""
    from dagster import materialize

    from stereospot_pipeline.definitions import CONVERSION_ASSETS
    from stereospot_pipeline.defs.partitions import videos
    from stereospot_pipeline.defs.resources import build_resources
    from stereospot_pipeline.ingest import register_local_file
    from stereospot_pipeline.runs import worker_tags

    resources = build_resources(settings)
    with _byte_progress(f"hashing {input.name}", input.stat().st_size) as progress:
        key = register_local_file(resources["store"], input, on_progress=progress)
    if not instance.has_dynamic_partition(videos.name, key):
        instance.add_dynamic_partitions(videos.name, [key])
    done = _already_converted(resources["store"], resources["outbox"], key, params, segment_options)
    if done is not None:
        produced = Path(resources["outbox"].location(done))
        if output is not None:
            _copy_atomic(produced, output)
            produced = output
        out.print(f"[cyan]skipped:[/] {input} was converted with these settings: {produced.resolve()}")
        return "skipped", str(produced)
    token = uuid.uuid4().hex
    watcher = _ProgressWatcher(instance, token)
    started = time.perf_counter()
    tags = {_TOKEN_TAG: token, "stereospot/source": input.name, **worker_tags()}
    result = None
    with _StopOnSignal(instance, token) as stopper:
        watcher.start()
        try:
            result = materialize(CONVERSION_ASSETS, instance=instance, partition_key=key, resources=resources,
                                 run_config=run_config, tags=tags, raise_on_error=False)
        except KeyboardInterrupt:
            if stopper.signal is None:
                stopper.signal = signal.SIGINT
        finally:
            watcher.stop()
            run = _run_of(instance, token)
            if run is not None:
                # Dagster frees a step's slot when the step ends; a step cut short may keep it.
                instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        if stopper.signal is not None:
            stopper.finish()
    _print_checks(result)
    if not result.success:
        err.print(f"[red]conversion of {input} failed[/] (run {result.run_id}):")
        for message in _failure_messages(result):
            err.print(f"  {message}")
        raise typer.Exit(1)
    meta = {m.asset_key.to_user_string(): m.materialization.metadata
            for m in result.get_asset_materialization_events()}
    produced = Path(meta["published_video"]["output"].value)
    reused, segments = (meta["stereo_segments"][k].value for k in ("reused_segments", "segments"))
    meta = meta["final_video"]
    if output is not None:
        try:
            _copy_atomic(produced, output)
        except OSError as exc:
            from stereospot_pipeline.storage import disk_full

            if (full := disk_full(exc, str(output))) is None:
                raise
            err.print(f"[red]error:[/] {full} (the converted video is in {produced})")
            raise typer.Exit(1) from exc
        produced = output
    seconds = time.perf_counter() - started
    frames = meta["frames"].value
    if reused:
        out.print(f"reused {reused} of {segments} segment(s) converted by an earlier run")
    out.print(f"[green]done:[/] {produced.resolve()}")
    out.print(f"{frames} frames, {meta['resolution'].value} {meta['layout'].value}, "
              f"{meta['duration_s'].value:.2f}s of video in {seconds:.1f}s ({frames / seconds:.1f} fps); "
              f"run {result.run_id}")
    return "converted", str(produced.resolve())


@app.command()
def ui(port: int = typer.Option(3000, help="port on 127.0.0.1")) -> None:
    """Start the Dagster UI and daemon (sensors, queued runs) on 127.0.0.1 (`dg dev`)."""
    settings = Settings()
    prepare_instance(settings)
    exe = str(Path(sys.executable).with_name("dg"))
    exe = exe if Path(exe).is_file() else shutil.which("dg") or exe
    # A background shell starts us with SIGINT ignored, and exec keeps ignored signals ignored:
    # reset it so `dg dev` can be stopped.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execv(exe, [exe, "dev", "--target-path", str(_PROJECT_ROOT), "-h", "127.0.0.1", "-p", str(port)])


@app.command()
def add(
    source: str = typer.Argument(..., help="a local video file, an s3:// URI or an http(s) URL"),
    settings_file: Path | None = typer.Option(None, "--settings", help="conversion settings (TOML, YAML or JSON): sections "
                                              "stereo, segments, comfort, seams (see README)"),
) -> None:
    """Add a video to the library and print its partition key (only that, on stdout), for
    `KEY=$(stereospot add f.mp4)`; then convert it with `dg launch --assets ... --partition $KEY`.
    Settings given replace those stored with the video; without --settings they are kept."""
    from stereospot_pipeline.defs.videos import add_video_to_library
    from stereospot_pipeline.defs.resources import build_resources
    from stereospot_pipeline.errors import StereospotError
    from stereospot_pipeline.settings_file import read_settings_file

    settings = Settings()
    try:
        conversion = read_settings_file(settings_file) if settings_file else None
        instance = open_instance(settings)
        key = add_video_to_library(instance, build_resources(settings)["store"], source, conversion, settings)
    except StereospotError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    err.print(f"added {source} as {key}")
    print(key)


@app.command()
def delete(
    video: str = typer.Argument(..., help="a partition key (as `stereospot add` prints) or the video file"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
) -> None:
    """Delete a video: its partition, work objects and published outputs (its run history and
    cost analytics stay in the instance)."""
    from stereospot_pipeline.defs.videos import published_outputs, remove_video
    from stereospot_pipeline.defs.resources import build_resources
    from stereospot_pipeline.errors import StereospotError
    from stereospot_pipeline.library import resolve_video, video_objects

    settings = Settings()
    resources = build_resources(settings)
    instance = open_instance(settings)
    key = resolve_video(resources["store"], video) or video
    if not yes:
        objects = video_objects(resources["store"], key)
        outputs = published_outputs(instance, key)
        err.print(f"video {key}: {len(objects)} stored object(s), published output(s): {', '.join(outputs) or 'none'}")
        if not typer.confirm(f"delete video {key}?", err=True):
            err.print("nothing deleted")
            raise typer.Exit(1)
    try:
        removed = remove_video(instance, resources["store"], resources["outbox"], key)
    except StereospotError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    out.print(f"deleted video {key}: {len(removed)} object(s) removed")


@app.command()
@with_options(model_options(StereoParams, "Stereo settings"))
def preview(
    input: Path = typer.Argument(..., help="video file to preview"),
    at: str = typer.Option("10%,50%,90%", help="moments: percentages or times in seconds (1:30 = 90 s)"),
    clip_seconds: float = typer.Option(5.0, help="length of the sample clip from the first moment (0: none)"),
    out_dir: Path | None = typer.Option(None, "--out", help="folder for the previews "
                                        "[default: STEREOSPOT_HOME/previews/<name>]"),
    settings_file: Path | None = typer.Option(None, "--settings", help="settings file, as for convert; "
                                              "options override it"),
    **options,
) -> None:
    """Stereo stills and a short sample clip with the chosen settings, in seconds: tune before a long job."""
    from stereospot_pipeline.errors import StereospotError
    from stereospot_pipeline.tuning import make_previews, parse_positions

    if not input.is_file():
        err.print(f"[red]error:[/] {input}: no such file")
        raise typer.Exit(2)
    try:
        positions = parse_positions(at)
        # The same settings, from the same options and file, as `convert` would use.
        _, params, _ = _conversion_config(settings_file, options)
    except (StereospotError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    folder = out_dir or Settings().resolved_home / "previews" / input.stem
    started = time.perf_counter()
    try:
        previews = make_previews(input, params, positions, folder, clip_seconds)
    except StereospotError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    for path in [*previews.stills, *([previews.clip] if previews.clip else [])]:
        out.print(str(path.resolve()))
    err.print(f"{len(previews.stills)} still(s){' and a sample clip' if previews.clip else ''} "
              f"in {time.perf_counter() - started:.1f}s")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0: every network the machine is on)"),
    port: int = typer.Option(8080, help="TCP port"),
) -> None:
    """Serve the outbox read-only as a VR video library (DeoVR and HereSphere JSON, seeking)."""
    from stereospot_pipeline.serve.server import make_server

    settings = Settings()
    outbox = settings.url(settings.outbox_url, "outbox")
    if outbox.startswith("s3://"):
        err.print(f"[red]error:[/] the outbox is {outbox}: `serve` shows a local outbox folder; "
                  "players can stream S3 outputs from their presigned links in the UI")
        raise typer.Exit(2)
    root = Path(outbox)
    root.mkdir(parents=True, exist_ok=True)
    server = make_server(root, host, port)
    base = f"http://{host if host not in ('0.0.0.0', '::') else '<this machine>'}:{server.server_address[1]}"
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]serving {root} to the network on {host}[/] (read-only)")
    out.print(f"serving {root}\n  browser: {base}/\n  DeoVR: {base}/deovr\n  HereSphere: {base}/heresphere")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def report(
    out_dir: Path | None = typer.Option(None, "--out", help="folder for the CSV and charts "
                                        "[default: STEREOSPOT_HOME/report]"),
    cpu_hour_usd: float = typer.Option(Prices().cpu_hour_usd, help="price of one CPU machine hour"),
    gpu_hour_usd: float = typer.Option(Prices().gpu_hour_usd, help="price of one GPU machine hour"),
) -> None:
    """Cost and speed of every conversion in the local instance (as the conversion_analytics asset)."""
    from rich.table import Table

    from stereospot_pipeline.analytics.files import report_files
    from stereospot_pipeline.analytics.gather import gather
    from stereospot_pipeline.analytics.report import video_rows

    settings = Settings()
    prices = Prices(cpu_hour_usd=cpu_hour_usd, gpu_hour_usd=gpu_hour_usd)
    conversions = gather(open_instance(settings))
    rows = video_rows(conversions, prices)
    table = Table(title=f"Conversions (CPU ${prices.cpu_hour_usd}/h, GPU ${prices.gpu_hour_usd}/h)")
    for column in ("video", "resolution", "video min", "frames", "fps", "compute s/video min",
                   "segment s min/median/max", "failed runs", "retries", "cost $", "$/video min"):
        table.add_column(column, justify="left" if column in ("video", "resolution") else "right")
    for r in rows:
        table.add_row(r.video, r.resolution, f"{r.video_min:.2f}", str(r.frames), f"{r.fps:.1f}",
                      f"{r.compute_s_per_video_min:.0f}",
                      f"{r.segment_s_min:.1f}/{r.segment_s_median:.1f}/{r.segment_s_max:.1f}",
                      str(r.failed_runs), str(r.retries), f"{r.cost_usd:.5f}", f"{r.cost_per_video_min_usd:.5f}")
    out.print(table)
    folder = out_dir or settings.resolved_home / "report"
    folder.mkdir(parents=True, exist_ok=True)
    files = report_files(conversions, prices)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    out.print(f"wrote {', '.join(files)} to {folder}")


models_app = typer.Typer(no_args_is_help=True, help="Depth models: what exists, what is installed.")
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """Named depth models with their licences and whether their weights are installed here."""
    from rich.table import Table

    from stereospot_pipeline.stereo.models import choose_model, list_models, models_dir

    table = Table(title=f"Depth models (local folder: {models_dir()})")
    for column in ("name", "weights", "licence", "parameters", "output", "installed"):
        table.add_column(column)
    table.add_row("heuristic", "none (built in)", "Apache-2.0", "0", "relative nearness", "yes")
    for name, repo, licence, params, kind, installed in list_models():
        table.add_row(name, repo, licence, params, kind, "yes" if installed else "no")
    out.print(table)
    out.print(f"--depth-model auto uses: {choose_model('auto').describe()}")


@models_app.command("pull")
def models_pull(name: str = typer.Argument(..., help="a name from `stereospot models list`"),
                dest: Path | None = typer.Option(None, help="folder to put the weights in")) -> None:
    """Download a depth model's weights (needs network access to the Hugging Face Hub)."""
    from huggingface_hub.utils import enable_progress_bars
    from tqdm.auto import tqdm

    from stereospot_pipeline.errors import StereospotError
    from stereospot_pipeline.stereo.models import pull_model

    # Byte-level bars per file from huggingface_hub, and one bar over the files.
    enable_progress_bars()
    try:
        target = pull_model(name, dest, progress=tqdm)
    except StereospotError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    out.print(f"installed {name} in {target}")


@models_app.command("publish")
def models_publish(name: str = typer.Argument(..., help="an installed name from `stereospot models list`"),
                   store: str | None = typer.Option(None, envvar="STEREOSPOT_MODEL_STORE_URL",
                                                    help="s3://bucket/prefix of the model store")) -> None:
    """Upload an installed model to the S3 model store GPU workers fetch their weights from."""
    from stereospot_pipeline.errors import StereospotError
    from stereospot_pipeline.stereo.model_store import publish_to_store
    from stereospot_pipeline.stereo.models import REGISTRY, _is_model_dir, models_dir

    folder = models_dir() / name
    if name not in REGISTRY or not _is_model_dir(folder):
        err.print(f"[red]error:[/] {name}: not installed in {models_dir()}; run `stereospot models pull {name}` first")
        raise typer.Exit(1)
    if not store:
        err.print("[red]error:[/] no model store: pass --store s3://bucket/prefix or set STEREOSPOT_MODEL_STORE_URL")
        raise typer.Exit(2)
    try:
        manifest = publish_to_store(folder, name, store)
    except StereospotError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    out.print(f"published {name} ({len(manifest['files'])} files) to {store.rstrip('/')}/{name}/")


def _interrupt(*_) -> None:
    """SIGTERM handler: stop like Ctrl-C does (service managers and `kill` send SIGTERM)."""
    raise KeyboardInterrupt


def _print_checks(result) -> None:
    """One line per asset check of the run: failures say why, blocking ones stop publishing."""
    for check in result.get_asset_check_evaluations():
        if check.passed:
            mark = "[green]passed[/]"
        elif check.severity.value == "WARN":
            mark = "[yellow]warning[/]"
        else:
            mark = "[red]FAILED[/]"
        out.print(f"check {check.check_name}: {mark} - {check.description}")


def _copy_atomic(src: Path, dest: Path) -> None:
    """Copy under a unique temp name, then rename: readers and concurrent writers never see a
    partial file."""
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    from stereospot_pipeline.storage.local import new_file_mode

    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    os.fchmod(fd, new_file_mode())
    os.close(fd)
    try:
        with _byte_progress(f"copying to {dest}", src.stat().st_size) as progress:
            if progress is None:
                shutil.copyfile(src, tmp)
            else:
                _copy_with_progress(src, Path(tmp), progress)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# A film takes a while to hash or copy: show how far it got (smaller files are done before a bar
# would be worth drawing).
_PROGRESS_MIN_BYTES = 256 << 20


@contextmanager
def _byte_progress(label: str, total: int):
    """A ``(done, total)`` callback drawing a bar on stderr, or None for a small file."""
    if total < _PROGRESS_MIN_BYTES:
        yield None
        return
    with Progress(TextColumn(escape(label)), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done, _total: bar.update(task, completed=done)


def _copy_with_progress(src: Path, dest: Path, progress) -> None:
    total, done = src.stat().st_size, 0
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while block := fin.read(16 << 20):
            fout.write(block)
            done += len(block)
            progress(done, total)


def _failure_messages(result) -> list[str]:
    messages = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            while error.cause is not None and error.cls_name not in ("Failure", "InvalidVideoError", "DiskFullError"):
                error = error.cause
            text = error.message.strip()
            # "dagster._core.definitions.events.Failure: <what to do>": the class path says nothing to a user.
            head, sep, rest = text.partition(": ")
            messages.append(f"{event.step_key}: {rest if sep and head.endswith(error.cls_name) else text}")
    return messages or ["see the run's logs in the Dagster UI (`stereospot ui`)"]


def _run_of(instance, token: str):
    """The run this command started (found by its token tag), or None before it exists."""
    from dagster import RunsFilter

    runs = instance.get_runs(filters=RunsFilter(tags={_TOKEN_TAG: token}), limit=1)
    return runs[0] if runs else None


class _StopOnSignal:
    """Ctrl-C (SIGINT) and SIGTERM stop the conversion within seconds at any point: its run ends
    CANCELED with its pool slots freed, and finished segments stay in the store for the next run.

    Dagster swaps its own SIGINT/SIGTERM handlers in and out during a run (a signal outside a step
    is only noted; inside a step with a retry policy it becomes a retry), so the signal is watched
    through ``signal.set_wakeup_fd``, which sees every signal whatever handler is installed. The
    watching thread marks the run CANCELING (Dagster then ends it CANCELED when the interrupt
    unwinds the run) and sets ``pool_wait.STOP`` (the run loop stops before its next step or
    during a wait). If the run has not unwound after ``GRACE_S`` (a step stuck in native code), or
    on a second signal, the thread marks the run canceled itself and ends the process.
    """

    GRACE_S = 8.0

    def __init__(self, instance, token: str):
        self.instance, self.token = instance, token
        self.signal: int | None = None
        self._done = threading.Event()

    def __enter__(self) -> "_StopOnSignal":
        # SIGTERM as Ctrl-C; SIGINT restored in case a background shell started us with it ignored.
        self._handlers = {s: signal.signal(s, signal.default_int_handler) for s in (signal.SIGINT, signal.SIGTERM)}
        self._reader, writer = socket.socketpair()
        writer.setblocking(False)
        self._writer = writer
        self._previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        threading.Thread(target=self._watch, name="stop-on-signal", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        signal.set_wakeup_fd(self._previous_fd)
        for signo, handler in self._handlers.items():
            signal.signal(signo, handler)
        self._writer.close()

    def _watch(self) -> None:
        from stereospot_pipeline.defs.pool_wait import STOP

        while data := self._reader.recv(64):
            for signo in data:
                if signo not in (signal.SIGINT, signal.SIGTERM):
                    continue
                if self.signal is not None:
                    self._hard_stop()
                self.signal = signo
                STOP.set()
                err.print(f"\n{signal.Signals(signo).name}: stopping the conversion ...")
                run = _run_of(self.instance, self.token)
                if run is not None and not run.is_finished and run.status.value != "CANCELING":
                    self.instance.report_run_canceling(run, message=f"stereospot convert got "
                                                       f"{signal.Signals(signo).name}: stopping")
                timer = threading.Timer(self.GRACE_S, self._hard_stop)
                timer.daemon = True
                timer.start()
        self._reader.close()

    def _mark_canceled(self):
        run = _run_of(self.instance, self.token)
        if run is None:
            return None
        if run.status.value != "CANCELED":
            self.instance.report_run_canceled(run, message=f"stopped by {signal.Signals(self.signal).name}; "
                                              "finished segments are kept for the next conversion")
        self.instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        return run

    def _hard_stop(self) -> None:
        if self._done.is_set():
            return
        run = self._mark_canceled()
        err.print(f"stopped: run {run.run_id if run else '(not started)'} canceled")
        os._exit(128 + (self.signal or signal.SIGINT))

    def finish(self) -> None:
        """After the run unwound: make sure it reads CANCELED, then end the command."""
        self._done.set()
        run = self._mark_canceled()
        err.print(f"stopped: run {run.run_id if run else '(not started)'} canceled; finished segments "
                  "are kept and the next `stereospot convert` of this video reuses them")
        raise typer.Exit(128 + self.signal)


class _ProgressWatcher:
    """Follows the run's events in the instance: a per-segment progress bar with ETA on a terminal,
    one line per step of progress otherwise (logs, CI)."""

    def __init__(self, instance, token: str):
        self.instance, self.token = instance, token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _events(self):
        """Yield the run's Dagster events as they are written, until stopped."""
        run_id, cursor = None, None
        while not self._stop.wait(0.5):
            if run_id is None:
                run = _run_of(self.instance, self.token)
                if run is None:
                    continue
                run_id = run.run_id
            page = self.instance.get_records_for_run(run_id, cursor=cursor)
            cursor = page.cursor
            for record in page.records:
                if record.event_log_entry.dagster_event is not None:
                    yield record.event_log_entry.dagster_event

    def _run(self) -> None:
        from dagster import DagsterEventType

        from stereospot_pipeline.defs.pool_wait import WAIT_MESSAGE

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        live = err.is_terminal
        started = time.monotonic()
        with Progress(*columns, console=err, transient=False, disable=not live) as progress:
            task = progress.add_task("preparing", total=None)
            total, done = None, 0
            for event in self._events():
                if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
                    mat = event.event_specific_data.materialization
                    if mat.asset_key.to_user_string() == "segments":
                        total = mat.metadata["count"].value
                        progress.update(task, total=total, description="converting segments")
                        if not live:
                            err.print(f"converting {total} segment(s)")
                elif event.event_type == DagsterEventType.STEP_SUCCESS and event.step_key.startswith(_RENDER_STEP):
                    done += 1
                    progress.update(task, completed=done)
                    if not live:
                        elapsed = time.monotonic() - started
                        eta = elapsed / done * (total - done) if total else 0.0
                        err.print(f"segment {done}/{total} converted ({elapsed:.0f}s elapsed, ETA {eta:.0f}s)")
                elif event.event_type == DagsterEventType.ENGINE_EVENT and WAIT_MESSAGE in (event.message or ""):
                    held_by = escape(event.event_specific_data.metadata["held_by"].value)
                    progress.update(task, description=f"waiting for the gpu slot: held by {held_by}")
                    if not live:
                        err.print(f"waiting for the gpu slot: held by {held_by}")
                elif event.event_type == DagsterEventType.STEP_START and event.step_key.startswith(_RENDER_STEP):
                    progress.update(task, description="converting segments")  # after a wait for the slot
                elif event.event_type == DagsterEventType.STEP_START and event.step_key == "final_video":
                    progress.update(task, description="joining segments + audio")
                    if not live:
                        err.print("joining segments + audio")


if __name__ == "__main__":
    app()
