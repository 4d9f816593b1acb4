"""The production executor: what would reach ECS, checked without ECS (moto stands in for the API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import boto3
import pytest
from dagster import in_process_executor
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.execution.plan.outputs import StepOutputHandle
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._grpc.types import ExecuteStepArgs
from dagster._core.storage.dagster_run import DagsterRun
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.ecs import executor as upstream
from dagster_aws.ecs.container_context import EcsContainerContext
from dagster_aws.ecs.executor import EcsStepHandler
from dagster_aws.ecs.tasks import CurrentEcsTaskMetadata
from dagster_aws.s3 import S3PickleIOManager
from moto import mock_aws

from stereospot_pipeline.definitions import build_definitions
from stereospot_pipeline.defs.executor import StereospotEcsStepHandler, gpu_op_tags, stereospot_ecs_executor
from stereospot_pipeline.defs.step_args import STEP_ARGS_ENV
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.storage.s3 import S3ObjectStore

ECS_ENV = {
    "STEREOSPOT_EXECUTOR": "ecs",
    "STEREOSPOT_GPU_CAPACITY_PROVIDER": "Stereospot-gpu-cp",
    "STEREOSPOT_GPU_TASK_DEFINITION": "arn:aws:ecs:us-east-1:123456789012:task-definition/Stereospot-gpu-step:3",
    "STEREOSPOT_STORE_URL": "s3://out-bucket/work",
    "STEREOSPOT_INBOX_URL": "s3://in-bucket/incoming",
    "STEREOSPOT_OUTBOX_URL": "s3://out-bucket/outputs",
    "STEREOSPOT_GPU_SUBNETS": "subnet-private-a,subnet-private-b",
}
# ECS's cap on a RunTask call's overrides, JSON formatting included.
ECS_OVERRIDES_LIMIT = 8192
GPU_STEP = "stereo_segments.render_stereo_segment[segment_00000]"


def _ecs_settings(tmp_path) -> Settings:
    return Settings(home=tmp_path, **{k.removeprefix("STEREOSPOT_").lower(): v for k, v in ECS_ENV.items()})


def test_locally_the_gpu_op_keeps_only_inert_tags_and_steps_run_in_process(tmp_path):
    assert gpu_op_tags(Settings(home=tmp_path)) == {"stereospot/step": "gpu"}
    defs = build_definitions(Settings(home=tmp_path))
    assert defs.resolve_job_def("convert_video").executor_def is in_process_executor
    assert "io_manager" not in defs.resources


def test_production_tags_route_the_gpu_op_to_gpu_capacity(tmp_path):
    tags = gpu_op_tags(_ecs_settings(tmp_path))
    assert json.loads(tags["ecs/container_overrides"]) == {"resourceRequirements": [{"type": "GPU", "value": "1"}]}
    assert json.loads(tags["ecs/run_task_kwargs"]) == {
        "capacityProviderStrategy": [{"capacityProvider": "Stereospot-gpu-cp"}],
        "taskDefinition": ECS_ENV["STEREOSPOT_GPU_TASK_DEFINITION"],
    }
    assert tags["stereospot/subnets"] == ECS_ENV["STEREOSPOT_GPU_SUBNETS"]
    with pytest.raises(ValueError, match="STEREOSPOT_GPU_CAPACITY_PROVIDER"):
        gpu_op_tags(Settings(home=tmp_path, executor="ecs"))


def test_the_stereo_op_carries_the_tags_computed_from_the_environment():
    # Tags are fixed when the code location imports the op, so import it under each environment.
    code = ("import json; from stereospot_pipeline.defs.assets.stereo import render_stereo_segment as op; "
            "print(json.dumps({'tags': dict(op.tags), 'pool': op.pool}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEREOSPOT_")}
    local = json.loads(subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120,
                                      capture_output=True, text=True).stdout)
    assert local == {"tags": {"stereospot/step": "gpu"}, "pool": "gpu"}
    prod = json.loads(subprocess.run([sys.executable, "-c", code], env={**env, **ECS_ENV}, check=True,
                                     timeout=120, capture_output=True, text=True).stdout)
    assert json.loads(prod["tags"]["ecs/run_task_kwargs"])["capacityProviderStrategy"] == [
        {"capacityProvider": "Stereospot-gpu-cp"}]
    assert prod["pool"] == "gpu"


def test_production_definitions_use_the_ecs_executor_and_s3_for_op_outputs(tmp_path):
    defs = build_definitions(_ecs_settings(tmp_path))
    job = defs.resolve_job_def("convert_video")
    assert job.executor_def.name == "ecs"
    io_manager = defs.resources["io_manager"]
    assert isinstance(io_manager, S3PickleIOManager)
    assert (io_manager.s3_bucket, io_manager.s3_prefix) == ("out-bucket", "work/dagster-io")
    with pytest.raises(ValueError, match="s3://"):
        build_definitions(Settings(home=tmp_path, executor="ecs", gpu_capacity_provider="cp",
                                   gpu_task_definition="td"))


@pytest.fixture
def fargate_run_worker(aws_env, monkeypatch):
    """The ECS executor's view from inside a Fargate run worker started by EcsRunLauncher.

    moto serves the task definition and the work store's bucket; the task metadata endpoint and
    DescribeTasks answer with the run worker's task (moto cannot run awsvpc Fargate tasks).
    """
    for name, value in ECS_ENV.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="out-bucket")
        ecs = boto3.client("ecs")
        cluster = ecs.create_cluster(clusterName="stereospot")["cluster"]["clusterArn"]
        run_td = ecs.register_task_definition(
            family="Stereospot-run", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
            cpu="1024", memory="4096", containerDefinitions=[{"name": "run", "image": "stereospot-cpu"}],
        )["taskDefinition"]["taskDefinitionArn"]
        task = {"taskArn": f"{cluster}/task/0123", "clusterArn": cluster, "taskDefinitionArn": run_td,
                "launchType": "FARGATE", "attachments": []}
        monkeypatch.setattr(upstream, "get_current_ecs_task_metadata",
                            lambda: CurrentEcsTaskMetadata(cluster=cluster, task_arn=task["taskArn"]))
        monkeypatch.setattr(upstream, "get_current_ecs_task", lambda ecs, task_arn, cluster: task)
        # What use_current_ecs_task_config copies from the run worker's task: its one subnet.
        network = {"awsvpcConfiguration": {"subnets": ["subnet-private-a"], "securityGroups": ["sg-tasks"],
                                           "assignPublicIp": "DISABLED"}}
        monkeypatch.setattr(upstream, "get_task_kwargs_from_current_task", lambda ec2, cluster, task: {
            "cluster": cluster, "launchType": "FARGATE", "networkConfiguration": network})
        yield EcsRunLauncher(task_definition=run_td, container_name="run", use_current_ecs_task_config=True)


RUN_ID = "0123456789abcdef0123456789abcdef"


def _step_args(segments: int) -> ExecuteStepArgs:
    """A GPU step's real arguments once ``segments`` segments are planned and rendered."""
    keys = [f"segment_{i:05d}" for i in range(segments)]
    origin = JobPythonOrigin("__ASSET_JOB", RepositoryPythonOrigin(
        "/opt/venv/bin/python", ModuleCodePointer("stereospot_pipeline.definitions", "defs", None)))
    known = KnownExecutionState(
        dynamic_mappings={"stereo_segments.plan_stereo_segments": {"result": keys}},
        ready_outputs={StepOutputHandle("stereo_segments.render_stereo_segment", "result", k) for k in keys},
    )
    return ExecuteStepArgs(job_origin=origin, run_id=RUN_ID, step_keys_to_execute=[GPU_STEP],
                           known_state=known, should_verify_step=True)


def _step_run_task_kwargs(handler: EcsStepHandler, launcher: EcsRunLauncher, step_tags: dict,
                          segments: int = 1) -> dict:
    run = DagsterRun(job_name="convert_video", run_id=RUN_ID)
    args = _step_args(segments)
    context = SimpleNamespace(instance=SimpleNamespace(run_launcher=launcher), dagster_run=run,
                              execute_step_args=args)
    return handler._get_run_task_kwargs(run, args.get_command_args(skip_serialized_namedtuple=True),
                                        GPU_STEP, step_tags, step_handler_context=context,
                                        container_context=EcsContainerContext())


def _production_handler(launcher) -> StereospotEcsStepHandler:
    executor = stereospot_ecs_executor.executor_creation_fn(SimpleNamespace(
        instance=SimpleNamespace(run_launcher=launcher), executor_config={"retries": {"enabled": {}}}))
    handler = executor._step_handler
    assert type(handler) is StereospotEcsStepHandler
    return handler


def test_gpu_steps_drop_the_inherited_fargate_launch_type(fargate_run_worker, tmp_path):
    launcher = fargate_run_worker
    tags = gpu_op_tags(_ecs_settings(tmp_path))
    # The defect being worked around: upstream sends launchType and capacityProviderStrategy together.
    upstream_handler = EcsStepHandler(run_launcher=launcher, run_task_kwargs=None, cpu=None, memory=None,
                                      ephemeral_storage=None, task_overrides=None)
    broken = _step_run_task_kwargs(upstream_handler, launcher, tags)
    assert broken["launchType"] == "FARGATE" and broken["capacityProviderStrategy"]

    handler = _production_handler(launcher)
    gpu = _step_run_task_kwargs(handler, launcher, tags)
    assert "launchType" not in gpu
    assert gpu["capacityProviderStrategy"] == [{"capacityProvider": "Stereospot-gpu-cp"}]
    assert gpu["taskDefinition"] == ECS_ENV["STEREOSPOT_GPU_TASK_DEFINITION"]
    (container,) = gpu["overrides"]["containerOverrides"]
    assert container["name"] == "run"
    assert container["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert any(t["key"] == "dagster/step-key" for t in gpu["tags"])

    # CPU steps keep the run's Fargate launch type, task definition and subnet.
    cpu = _step_run_task_kwargs(handler, launcher, {})
    assert cpu["launchType"] == "FARGATE" and "capacityProviderStrategy" not in cpu
    assert cpu["taskDefinition"].endswith("task-definition/Stereospot-run:1")
    assert "resourceRequirements" not in cpu["overrides"]["containerOverrides"][0]
    assert cpu["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == ["subnet-private-a"]


def test_gpu_steps_may_start_in_every_private_subnet(fargate_run_worker, tmp_path):
    launcher = fargate_run_worker
    tags = gpu_op_tags(_ecs_settings(tmp_path))
    upstream_handler = EcsStepHandler(run_launcher=launcher, run_task_kwargs=None, cpu=None, memory=None,
                                      ephemeral_storage=None, task_overrides=None)
    # Upstream: the GPU step inherits the run worker's single subnet.
    broken = _step_run_task_kwargs(upstream_handler, launcher, tags)
    assert broken["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == ["subnet-private-a"]
    vpc = _step_run_task_kwargs(_production_handler(launcher), launcher, tags)["networkConfiguration"][
        "awsvpcConfiguration"]
    assert vpc == {"subnets": ["subnet-private-a", "subnet-private-b"], "securityGroups": ["sg-tasks"],
                   "assignPublicIp": "DISABLED"}


def test_step_arguments_stay_within_the_ecs_overrides_limit_at_any_segment_count(fargate_run_worker, tmp_path):
    launcher = fargate_run_worker
    tags = gpu_op_tags(_ecs_settings(tmp_path))
    upstream_handler = EcsStepHandler(run_launcher=launcher, run_task_kwargs=None, cpu=None, memory=None,
                                      ephemeral_storage=None, task_overrides=None)
    # Upstream puts the compressed arguments into the overrides: past the limit at 2,000 segments
    # (5.6 hours in 10 s segments, inside the allowed video length).
    broken = _step_run_task_kwargs(upstream_handler, launcher, tags, segments=2000)
    assert len(json.dumps(broken["overrides"])) > ECS_OVERRIDES_LIMIT

    handler = _production_handler(launcher)
    sizes = {}
    for segments in (1, 2000):
        kwargs = _step_run_task_kwargs(handler, launcher, tags, segments=segments)
        sizes[segments] = len(json.dumps(kwargs["overrides"]))
        (container,) = kwargs["overrides"]["containerOverrides"]
        assert STEP_ARGS_ENV not in {item["name"] for item in container["environment"]}
        python, dash_m, module, key = container["command"]
        assert (python, dash_m, module) == ("python", "-m", "stereospot_pipeline.defs.step_args")
        # The stored object is exactly what upstream would have passed.
        stored = S3ObjectStore.from_url(ECS_ENV["STEREOSPOT_STORE_URL"]).get_bytes(key).decode()
        assert stored == _step_args(segments).get_command_env()[0]["value"]
        assert key.startswith(f"dagster-step-args/{RUN_ID}/")
    assert sizes[1] == sizes[2000] < ECS_OVERRIDES_LIMIT // 4


def test_a_stored_step_runs_dagster_execute_step_with_its_arguments(fargate_run_worker, monkeypatch):
    """The step task's entry point hands the stored arguments to `dagster api execute_step`
    (in-process here: moto's mock lives in this process; the rehearsal runs it for real)."""
    from dagster._cli import api

    from stereospot_pipeline.defs.step_args import run_stored_step

    kwargs = _step_run_task_kwargs(_production_handler(fargate_run_worker), fargate_run_worker, {}, segments=3)
    (container,) = kwargs["overrides"]["containerOverrides"]
    seen = {}
    monkeypatch.setattr(api.execute_step_command, "callback",
                        lambda input_json, compressed_input_json: seen.update(args=compressed_input_json))
    monkeypatch.setenv(STEP_ARGS_ENV, "")  # restored after the test; run_stored_step sets it
    with pytest.raises(SystemExit) as exit_info:
        run_stored_step(container["command"][-1])
    assert exit_info.value.code == 0
    assert seen["args"] == _step_args(3).get_command_env()[0]["value"]
