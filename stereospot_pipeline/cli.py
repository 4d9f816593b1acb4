"""The ``stereospot`` command line: convert videos through the Dagster assets, open the UI."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from stereospot_pipeline.analytics.report import Prices
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.stereo.params import Layout, StereoParams, WarpMethod

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
    create its SQLite schema and one would fail: the first opening happens under a file lock."""
    from dagster import DagsterInstance

    home = prepare_instance(settings)
    with open(home / ".open.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return DagsterInstance.get()


@app.command()
def convert(
    input: Path = typer.Argument(..., help="video file to convert (anything ffmpeg decodes)"),
    output: Path | None = typer.Option(None, "-o", "--output", help="where to write the result"),
    layout: Layout = typer.Option(Layout.FULL_SBS, help="output layout"),
    divergence: float = typer.Option(2.0, help="stereo strength: max disparity in % of the frame"),
    convergence: float = typer.Option(0.5, help="depth on the screen plane (0 far .. 1 near)"),
    method: WarpMethod = typer.Option(WarpMethod.FORWARD_FILL, help="view synthesis method"),
    depth_model: str = typer.Option("heuristic", help="'heuristic' or a Depth Anything name/folder"),
    segment_seconds: float = typer.Option(10.0, help="target segment length in seconds"),
) -> None:
    """Convert INPUT to stereo 3D; the run is recorded in the local Dagster instance."""
    from dagster import materialize

    from stereospot_pipeline.definitions import CONVERSION_ASSETS
    from stereospot_pipeline.defs.assets.stereo import stereo_run_config
    from stereospot_pipeline.defs.partitions import videos
    from stereospot_pipeline.defs.resources import build_resources
    from stereospot_pipeline.ingest import register_local_file

    if not input.is_file():
        err.print(f"[red]error:[/] {input}: no such file")
        raise typer.Exit(2)
    params = StereoParams(layout=layout, divergence=divergence, convergence=convergence, method=method,
                          depth_model=depth_model)
    settings = Settings()
    instance = open_instance(settings)
    resources = build_resources(settings)
    key = register_local_file(resources["store"], input)
    if not instance.has_dynamic_partition(videos.name, key):
        instance.add_dynamic_partitions(videos.name, [key])
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}, "ops": {
        "segments": {"config": {"segment_seconds": segment_seconds}},
        "stereo_segments": {"ops": {"plan_stereo_segments": {"config": stereo_run_config(params)}}},
    }}
    token = uuid.uuid4().hex
    watcher = _ProgressWatcher(instance, token)
    started = time.perf_counter()
    watcher.start()
    try:
        result = materialize(CONVERSION_ASSETS, instance=instance, partition_key=key, resources=resources,
                             run_config=run_config, tags={_TOKEN_TAG: token, "stereospot/source": input.name},
                             raise_on_error=False)
    finally:
        watcher.stop()
    _print_checks(result)
    if not result.success:
        err.print(f"[red]conversion of {input} failed[/] (run {result.run_id}):")
        for message in _failure_messages(result):
            err.print(f"  {message}")
        raise typer.Exit(1)
    meta = {m.asset_key.to_user_string(): m.materialization.metadata
            for m in result.get_asset_materialization_events()}
    produced = Path(meta["published_video"]["output"].value)
    meta = meta["final_video"]
    if output is not None:
        _copy_atomic(produced, output)
        produced = output
    seconds = time.perf_counter() - started
    frames = meta["frames"].value
    out.print(f"[green]done:[/] {produced.resolve()}")
    out.print(f"{frames} frames, {meta['resolution'].value} {meta['layout'].value}, "
              f"{meta['duration_s'].value:.2f}s of video in {seconds:.1f}s ({frames / seconds:.1f} fps); "
              f"run {result.run_id}")


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
    settings_file: Path | None = typer.Option(None, "--settings", help="YAML/JSON conversion settings: sections "
                                              "stereo, segments, comfort, seams (see README)"),
) -> None:
    """Add a video to the library and print its partition key (only that, on stdout), for
    `KEY=$(stereospot add f.mp4)`; then convert it with `dg launch --assets ... --partition $KEY`.
    Settings given replace those stored with the video; without --settings they are kept."""
    from stereospot_pipeline.defs.videos import add_video_to_library
    from stereospot_pipeline.defs.resources import build_resources
    from stereospot_pipeline.defs.video_settings import validate_settings
    from stereospot_pipeline.errors import StereospotError

    settings = Settings()
    try:
        conversion = validate_settings(_read_settings(settings_file), str(settings_file)) if settings_file else None
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

    from stereospot_pipeline.stereo.models import list_models, models_dir

    table = Table(title=f"Depth models (local folder: {models_dir()})")
    for column in ("name", "weights", "licence", "parameters", "installed"):
        table.add_column(column)
    table.add_row("heuristic", "none (built in)", "Apache-2.0", "0", "yes")
    for name, repo, licence, params, installed in list_models():
        table.add_row(name, repo, licence, params, "yes" if installed else "no")
    out.print(table)


@models_app.command("pull")
def models_pull(name: str = typer.Argument(..., help="a name from `stereospot models list`"),
                dest: Path | None = typer.Option(None, help="folder to put the weights in")) -> None:
    """Download a depth model's weights (needs network access to the Hugging Face Hub)."""
    from stereospot_pipeline.errors import StereospotError
    from stereospot_pipeline.stereo.models import pull_model

    try:
        target = pull_model(name, dest)
    except StereospotError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    out.print(f"installed {name} in {target}")


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
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_settings(path: Path):
    import yaml

    from stereospot_pipeline.errors import StereospotError

    try:
        return yaml.safe_load(path.read_text())  # YAML is a superset of JSON: both work
    except (OSError, yaml.YAMLError) as exc:
        raise StereospotError(f"{path}: cannot read the settings file ({exc})") from exc


def _failure_messages(result) -> list[str]:
    messages = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            while error.cause is not None and error.cls_name not in ("Failure", "InvalidVideoError"):
                error = error.cause
            messages.append(f"{event.step_key}: {error.message.strip()}")
    return messages or ["see the run's logs in the Dagster UI (`stereospot ui`)"]


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
        from dagster import RunsFilter

        run_id, cursor = None, None
        while not self._stop.wait(0.5):
            if run_id is None:
                runs = self.instance.get_runs(filters=RunsFilter(tags={_TOKEN_TAG: self.token}), limit=1)
                if not runs:
                    continue
                run_id = runs[0].run_id
            page = self.instance.get_records_for_run(run_id, cursor=cursor)
            cursor = page.cursor
            for record in page.records:
                if record.event_log_entry.dagster_event is not None:
                    yield record.event_log_entry.dagster_event

    def _run(self) -> None:
        from dagster import DagsterEventType

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
                elif event.event_type == DagsterEventType.STEP_START and event.step_key == "final_video":
                    progress.update(task, description="joining segments + audio")
                    if not live:
                        err.print("joining segments + audio")


if __name__ == "__main__":
    app()
