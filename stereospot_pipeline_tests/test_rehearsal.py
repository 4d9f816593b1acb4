"""Production rehearsal: the AWS deployment as synthesized, run end to end on one machine.

The static check reads which variables each process of the deployment reads (deploy/dagster.yaml,
deploy/workspace.yaml, the Settings fields and any STEREOSPOT_* variable the code reads directly)
and asserts the task definition of that process (or its image) sets each one.

The rehearsal starts the three services from their task definitions (the code location until its
own health check passes, the webserver until the load balancer's health check path answers), uploads a clip
to the input bucket and waits for the stereo video in the output bucket: the S3 sensor registers
it, the daemon's EcsRunLauncher starts a run worker through ECS RunTask, the run worker's ECS
executor starts every step as a task of its own, GPU steps on the GPU task definition. What
stands in for AWS is described in support/rehearsal.py.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import av
import boto3
import botocore.exceptions
import psycopg2
import pytest

from stereospot_pipeline.settings import Settings
from stereospot_pipeline_tests.clips import make_clip
from stereospot_pipeline_tests.support.cdk import DEPLOY, REPO, synthesized  # isort: skip
from stereospot_pipeline_tests.support.rehearsal import (
    DB_SECRET,
    Deployment,
    EcsShim,
    Task,
    denied_requests,
    enforce_iam,
    image_for,
    moto_server,
    ssl_postgres,
)
from stereospot_pipeline_tests.support.template import Names, of_type, refs, task_definitions

# Settings fields whose defaults are right in production too, each with the reason; any other
# field must be set by every task definition whose process loads the definitions.
DEFAULTS_SUFFICE = {
    "s3_endpoint_url": "production uses AWS's own endpoints (and must not set it)",
    "device": "auto picks CUDA where present; the run and GPU task definitions pin it anyway",
    "inbox_settle_seconds": "only the local folder inbox reads it",
    "inbox_max_per_tick": "10 new videos per sensor tick is the production bound",
    "max_pixels": "8K frames are the production bound",
    "max_duration_s": "six hours is the production bound",
    "hdr": "tone-mapped SDR is the production default",
    "fetch_allow_private": "URLs on private addresses stay refused in production",
    "fetch_max_bytes": "20 GB per downloaded video is the production bound",
    "fetch_timeout_s": "30 s of a stalled download is the production bound",
    "alert_webhook_url": "optional: unset sends no alerts (set it on the services to get them)",
    "work_retention_days": "only a local store is swept by age; S3 expires work/ by a lifecycle rule",
}
# What each process of the deployment loads, by task definition.
SERVICES = {"dagster code-server": "code", "dagster-webserver": "webserver", "dagster-daemon": "daemon"}
LOADS = {
    "code": {"instance", "definitions"},
    "webserver": {"instance", "workspace"},
    "daemon": {"instance", "workspace"},
    "run": {"instance", "definitions"},
    "gpu-step": {"instance", "definitions"},
}
# Step keys as dagster-aws tags them (sanitize_tag: "." and "[" become "-").
GPU_OP = "stereo_segments-render_stereo_segment-"
WAIT_SECONDS = 300


@pytest.fixture(scope="session")
def template() -> dict:
    return synthesized()[0].to_json()


def processes(template: dict) -> dict[str, dict]:
    """Each process kind -> its task definition's properties."""
    found = {}
    for family, definition in task_definitions(template["Resources"]).items():
        if family in ("Stereospot-run", "Stereospot-gpu-step"):
            found[family.removeprefix("Stereospot-")] = definition
            continue
        command = " ".join(definition["ContainerDefinitions"][0].get("Command", []))
        (kind,) = [kind for marker, kind in SERVICES.items() if command.startswith(marker)]
        found[kind] = definition
    assert set(found) == set(LOADS)
    return found


def _yaml_vars(name: str) -> set[str]:
    return set(re.findall(r"\{env: (\w+)\}", (DEPLOY / name).read_text()))


def _read_directly() -> set[str]:
    """STEREOSPOT_* variables the code reads itself, outside Settings."""
    found = set()
    for path in (REPO / "stereospot_pipeline").rglob("*.py"):
        found |= set(re.findall(r"os\.(?:environ\.get\(|environ\[|getenv\()\"(STEREOSPOT_\w+)\"", path.read_text()))
    return found


def _settings_vars() -> set[str]:
    prefix = Settings.model_config["env_prefix"]
    return {f"{prefix}{name.upper()}" for name in Settings.model_fields}


def needed_by(kind: str) -> set[str]:
    loads = LOADS[kind]
    needed = set()
    if "instance" in loads:
        needed |= _yaml_vars("dagster.yaml")
    if "workspace" in loads:
        needed |= _yaml_vars("workspace.yaml")
    if "definitions" in loads:
        prefix = Settings.model_config["env_prefix"]
        needed |= {f"{prefix}{name.upper()}" for name in Settings.model_fields if name not in DEFAULTS_SUFFICE}
        needed |= _read_directly()
    return needed


def provided(definition: dict, names: Names) -> set[str]:
    (container,) = definition["ContainerDefinitions"]
    image = image_for(container, names)
    return ({item["Name"] for item in container.get("Environment", [])}
            | {item["Name"] for item in container.get("Secrets", [])} | set(image.env))


def test_every_variable_a_process_reads_is_set_on_its_task_definition(template):
    names = Names(template["Resources"])
    assert set(DEFAULTS_SUFFICE) <= set(Settings.model_fields), "a field named here no longer exists"
    for kind, definition in processes(template).items():
        missing = needed_by(kind) - provided(definition, names)
        assert not missing, f"the {kind} task definition ({definition['Family']}) does not set {sorted(missing)}"


def test_task_definitions_set_no_variable_nothing_reads(template):
    """A misspelt STEREOSPOT_* name on a task definition would be silently ignored."""
    known = _settings_vars() | _read_directly() | _yaml_vars("dagster.yaml") | _yaml_vars("workspace.yaml")
    for kind, definition in processes(template).items():
        (container,) = definition["ContainerDefinitions"]
        names = {item["Name"] for item in container["Environment"]}
        unknown = {name for name in names if name.startswith("STEREOSPOT_")} - known
        assert not unknown, f"{kind} sets {sorted(unknown)}, which nothing reads"
        # Production talks to AWS's own endpoints.
        assert "STEREOSPOT_S3_ENDPOINT_URL" not in names, kind


# --- the rehearsal -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(template, tmp_path_factory):
    """The template's buckets, network and IAM users on an IAM-enforcing moto (no database)."""
    root = tmp_path_factory.mktemp("rehearsal")
    with moto_server(root / "moto.log") as moto:
        made = Deployment(template, root / "deployment", moto, pg_port=5432)
        enforce_iam(moto)
        yield made


def _client(deployment: Deployment, service: str, kind: str, endpoint: str | None = None):
    definition = _service(deployment, kind) if kind in SERVICES.values() else deployment.definitions[f"Stereospot-{kind}"]
    key_id, secret = deployment.keys[next(iter(refs(definition["TaskRoleArn"])))]
    return boto3.client(service, endpoint_url=endpoint or deployment.moto, region_name="us-west-2",
                        aws_access_key_id=key_id, aws_secret_access_key=secret)


def test_the_rehearsal_enforces_each_roles_s3_statements(deployment):
    input_bucket, output_bucket = deployment.output("InputBucketName"), deployment.output("OutputBucketName")
    code = _client(deployment, "s3", "code")
    gpu = _client(deployment, "s3", "gpu-step")
    log = deployment.root.parent / "moto.log"
    denied_before = len(denied_requests(log))

    def status(call, **kwargs) -> int:
        try:
            call(**kwargs)
            return 200
        except botocore.exceptions.ClientError as exc:
            return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])

    # A missing registry record is a 404 to the code location (it may list the bucket)...
    assert status(code.head_object, Bucket=output_bucket, Key="work/registry/none.json") == 404
    assert status(code.put_object, Bucket=output_bucket, Key="work/registry/a.json", Body=b"{}") == 200
    # ...but it may not write outputs, and no worker may write uploads.
    assert status(code.put_object, Bucket=output_bucket, Key="outputs/a.mp4", Body=b"") == 403
    assert status(gpu.put_object, Bucket=input_bucket, Key="incoming/a.mp4", Body=b"") == 403
    assert status(gpu.put_object, Bucket=output_bucket, Key="work/a.bin", Body=b"") == 200
    assert len(denied_requests(log)) - denied_before == 2


def test_the_rehearsal_ecs_refuses_what_ecs_refuses(deployment):
    with EcsShim(deployment) as shim:
        run = _client(deployment, "ecs", "run", shim.endpoint)
        gpu = _client(deployment, "ecs", "gpu-step", shim.endpoint)
        network = {"awsvpcConfiguration": {"subnets": deployment.private_subnets,
                                           "securityGroups": [deployment.tasks_security_group]}}
        provider = deployment.output("GpuCapacityProviderName")
        gpu_definition = deployment.output("GpuTaskDefinitionArn")
        base = {"cluster": deployment.cluster_arn, "taskDefinition": gpu_definition, "networkConfiguration": network}
        with pytest.raises(run.exceptions.InvalidParameterException, match="both a launch type"):
            run.run_task(**base, launchType="FARGATE", capacityProviderStrategy=[{"capacityProvider": provider}])
        with pytest.raises(run.exceptions.InvalidParameterException, match="at most 8192"):
            run.run_task(**base, capacityProviderStrategy=[{"capacityProvider": provider}], overrides={
                "containerOverrides": [{"name": "run", "environment": [{"name": "X", "value": "x" * 9000}]}]})
        with pytest.raises(run.exceptions.InvalidParameterException, match="private subnets"):
            run.run_task(**{**base, "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-other"]}}},
                         capacityProviderStrategy=[{"capacityProvider": provider}])
        # GPU steps start nothing: their role may not.
        with pytest.raises(gpu.exceptions.AccessDeniedException, match="ecs:RunTask"):
            gpu.run_task(**base, capacityProviderStrategy=[{"capacityProvider": provider}])
        assert not shim.tasks


def _service(deployment: Deployment, kind: str) -> dict:
    return next(d for d in deployment.definitions.values()
                if " ".join(d["ContainerDefinitions"][0].get("Command", [])).startswith(
                    next(marker for marker, k in SERVICES.items() if k == kind)))


def _wait_until(ready, task: Task, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if task.process.poll() is not None:
            pytest.fail(f"{task.family} exited {task.process.returncode}:\n{_tail(task)}")
        if ready():
            return
        time.sleep(1)
    pytest.fail(f"{task.family}: {what} not within {seconds}s:\n{_tail(task)}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _alb_health_check(deployment: Deployment) -> tuple[int, str]:
    """Port and path of the load balancer's health check of the webserver."""
    (group,) = of_type(deployment.resources, "AWS::ElasticLoadBalancingV2::TargetGroup").values()
    return group["Properties"]["Port"], group["Properties"]["HealthCheckPath"]


def _tail(task: Task, chars: int = 6000) -> str:
    return task.log.read_text(errors="replace")[-chars:]


def _runs(pg_port: int) -> list[tuple[str, str]]:
    with psycopg2.connect(host="127.0.0.1", port=pg_port, dbname="dagster", user=DB_SECRET["username"],
                          sslmode="require") as conn, conn.cursor() as cursor:
        cursor.execute("select to_regclass('runs')")
        if cursor.fetchone()[0] is None:
            return []
        cursor.execute("select run_id, status from runs")
        return cursor.fetchall()


def _problems(shim: EcsShim, moto_log: Path, pg_port: int) -> str | None:
    if shim.denied or shim.rejected:
        return f"ECS refused calls: {shim.denied + shim.rejected}"
    if denied := denied_requests(moto_log):
        return "S3/EC2 calls a role may not make:\n" + "\n".join(denied[:10])
    for task in shim.tasks.values():
        if task.process.poll() not in (None, 0):
            return f"task {task.family} ({' '.join(task.command[:6])}) exited {task.process.returncode}:\n{_tail(task)}"
    failed = [run for run in _runs(pg_port) if run[1] in ("FAILURE", "CANCELED")]
    if failed:
        workers = [t for t in shim.tasks.values() if "execute_run" in t.command]
        return f"runs failed: {failed}\n" + "\n".join(_tail(t) for t in workers)
    return None


def _step_key(task: Task) -> str | None:
    return {tag["key"]: tag["value"] for tag in task.launch.get("tags", [])}.get("dagster/step-key")


@pytest.mark.slow
@pytest.mark.timeout(WAIT_SECONDS + 240)
def test_an_upload_is_converted_by_the_deployment_as_synthesized(template, tmp_path):
    started = time.monotonic()
    clip = make_clip(tmp_path / "holiday.mp4", seconds=1.0)
    moto_log = tmp_path / "moto.log"
    with moto_server(moto_log) as moto, ssl_postgres("dagster") as pg_port:
        deployment = Deployment(template, tmp_path / "deployment", moto, pg_port)
        enforce_iam(moto)
        s3 = deployment.operator.client("s3", endpoint_url=moto)
        input_bucket, output_bucket = deployment.output("InputBucketName"), deployment.output("OutputBucketName")
        with EcsShim(deployment) as shim:
            code = shim.start(_service(deployment, "code"))
            # Its own health check, as the ECS agent runs it, gates the others (as on ECS, where
            # the webserver and daemon fail to load the location until it serves).
            _wait_until(code.healthy, code, 180, "healthy")
            daemon = shim.start(_service(deployment, "daemon"))
            webserver = shim.start(_service(deployment, "webserver"))
            s3.upload_file(str(clip), input_bucket, "incoming/holiday.mp4")
            uploaded = time.monotonic()
            outputs: list[str] = []
            deadline = time.monotonic() + WAIT_SECONDS
            while time.monotonic() < deadline and not outputs:
                time.sleep(2)
                if problem := _problems(shim, moto_log, pg_port):
                    pytest.fail(f"{problem}\n--- daemon:\n{_tail(daemon, 3000)}")
                listed = s3.list_objects_v2(Bucket=output_bucket, Prefix="outputs/").get("Contents", [])
                outputs = [o["Key"] for o in listed]
            converted = time.monotonic()
            assert outputs, (f"no output after {WAIT_SECONDS}s\n--- daemon:\n{_tail(daemon)}\n--- code:\n"
                             f"{_tail(code, 3000)}")
            port, path = _alb_health_check(deployment)
            _wait_until(lambda: _answers(f"http://127.0.0.1:{port}{path}"), webserver, 60, f"{path} answering")
            # Let the run worker record its end before the tasks are stopped.
            end = time.monotonic() + 60
            while time.monotonic() < end and any(t.process.poll() is None for t in shim.tasks.values()
                                                  if "execute_run" in t.command):
                time.sleep(1)
            assert (problem := _problems(shim, moto_log, pg_port)) is None, problem
            tasks = [t for t in shim.tasks.values() if t not in (code, daemon, webserver)]
            runs = _runs(pg_port)

        result = tmp_path / "result.mp4"
        s3.download_file(output_bucket, outputs[0], str(result))

    assert len(outputs) == 1 and re.fullmatch(r"outputs/holiday-[0-9a-f]{6}_LRF_Full_SBS\.mp4", outputs[0]), outputs
    with av.open(str(result)) as out, av.open(str(clip)) as src:
        assert out.streams.video[0].codec_context.width == 2 * src.streams.video[0].codec_context.width
        assert sum(1 for _ in out.decode(video=0)) == sum(1 for _ in src.decode(video=0))
    assert [status for _, status in runs] == ["SUCCESS"]

    summary = [{"family": t.family, "command": t.command, "exit": t.process.returncode,
                "launched_by": t.launched_by, "step": _step_key(t),
                "launch": {k: v for k, v in t.launch.items() if k not in ("overrides", "clientToken")}}
               for t in tasks]
    (tmp_path / "tasks.json").write_text(json.dumps(summary, indent=1))
    definitions = deployment.definitions
    run_workers = [t for t in tasks if "execute_run" in t.command]
    steps = {_step_key(t): t for t in tasks if _step_key(t)}
    assert len(run_workers) == 1 and run_workers[0].family == "Stereospot-run"
    control_role = next(iter(refs(definitions[daemon.family]["TaskRoleArn"])))
    assert run_workers[0].launched_by == control_role
    assert all(t.process.returncode == 0 for t in tasks)
    gpu_steps = {key: t for key, t in steps.items() if key.startswith(GPU_OP)}
    cpu_steps = {key: t for key, t in steps.items() if not key.startswith(GPU_OP)}
    assert gpu_steps and cpu_steps and len(steps) == len(tasks) - 1
    provider = deployment.output("GpuCapacityProviderName")
    for key, task in gpu_steps.items():
        assert task.family == "Stereospot-gpu-step", key
        assert task.launch["capacityProviderStrategy"] == [{"capacityProvider": provider}], key
        assert "launchType" not in task.launch
        assert task.launch["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == deployment.private_subnets
        (override,) = task.launch["overrides"]["containerOverrides"]
        assert override["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    for key, task in cpu_steps.items():
        assert task.family == "Stereospot-run" and task.launch["launchType"] == "FARGATE", key
    for task in steps.values():
        assert task.command[:3] == ["python", "-m", "stereospot_pipeline.defs.step_args"]
    def size(task: Task) -> int:
        return len(json.dumps(task.launch.get("overrides", {}), separators=(",", ":")))

    # Step overrides no longer carry the step's arguments: small, whatever the segment count.
    assert max(size(t) for t in steps.values()) < 2048
    print(f"\nrehearsal: services up and clip uploaded after {uploaded - started:.0f}s; converted "
          f"{converted - uploaded:.0f}s after the upload; {len(tasks)} tasks: 1 run worker "
          f"(Stereospot-run), {len(cpu_steps)} CPU steps (Stereospot-run, FARGATE), {len(gpu_steps)} GPU "
          f"steps (Stereospot-gpu-step on {provider}); overrides: run worker {size(run_workers[0])}, steps at "
          f"most {max(size(t) for t in steps.values())} characters")

