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
from dagster._core.storage.dagster_run import DagsterRun
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.ecs import executor as upstream
from dagster_aws.ecs.container_context import EcsContainerContext
from dagster_aws.ecs.executor import EcsStepHandler
from dagster_aws.ecs.tasks import CurrentEcsTaskMetadata
from dagster_aws.s3 import S3PickleIOManager
from moto import mock_aws

from stereospot_pipeline.definitions import build_definitions
from stereospot_pipeline.defs.executor import CapacityProviderEcsStepHandler, gpu_op_tags, stereospot_ecs_executor
from stereospot_pipeline.settings import Settings

ECS_ENV = {
    "STEREOSPOT_EXECUTOR": "ecs",
    "STEREOSPOT_GPU_CAPACITY_PROVIDER": "Stereospot-gpu-cp",
    "STEREOSPOT_GPU_TASK_DEFINITION": "arn:aws:ecs:us-east-1:123456789012:task-definition/Stereospot-gpu-step:3",
    "STEREOSPOT_STORE_URL": "s3://out-bucket/work",
    "STEREOSPOT_INBOX_URL": "s3://in-bucket/incoming",
    "STEREOSPOT_OUTBOX_URL": "s3://out-bucket/outputs",
}
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

    moto serves the task definition; the task metadata endpoint and DescribeTasks answer with the
    run worker's task (moto cannot run awsvpc Fargate tasks).
    """
    with mock_aws():
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
        yield EcsRunLauncher(task_definition=run_td, container_name="run")


def _step_run_task_kwargs(handler: EcsStepHandler, launcher: EcsRunLauncher, step_tags: dict) -> dict:
    run = DagsterRun(job_name="convert_video", run_id="0123456789abcdef0123456789abcdef")
    context = SimpleNamespace(instance=SimpleNamespace(run_launcher=launcher), dagster_run=run,
                              execute_step_args=SimpleNamespace(get_command_env=lambda: []))
    return handler._get_run_task_kwargs(run, ["dagster", "api", "execute_step"], GPU_STEP, step_tags,
                                        step_handler_context=context, container_context=EcsContainerContext())


def _handler(cls, launcher):
    return cls(run_launcher=launcher, run_task_kwargs=None, cpu=None, memory=None, ephemeral_storage=None,
               task_overrides=None)


def test_gpu_steps_drop_the_inherited_fargate_launch_type(fargate_run_worker, tmp_path):
    launcher = fargate_run_worker
    tags = gpu_op_tags(_ecs_settings(tmp_path))
    # The defect being worked around: upstream sends launchType and capacityProviderStrategy together.
    broken = _step_run_task_kwargs(_handler(EcsStepHandler, launcher), launcher, tags)
    assert broken["launchType"] == "FARGATE" and broken["capacityProviderStrategy"]

    # The production executor builds its steps with the fixed handler.
    executor = stereospot_ecs_executor.executor_creation_fn(SimpleNamespace(
        instance=SimpleNamespace(run_launcher=launcher), executor_config={"retries": {"enabled": {}}}))
    handler = executor._step_handler
    assert type(handler) is CapacityProviderEcsStepHandler
    gpu = _step_run_task_kwargs(handler, launcher, tags)
    assert "launchType" not in gpu
    assert gpu["capacityProviderStrategy"] == [{"capacityProvider": "Stereospot-gpu-cp"}]
    assert gpu["taskDefinition"] == ECS_ENV["STEREOSPOT_GPU_TASK_DEFINITION"]
    (container,) = gpu["overrides"]["containerOverrides"]
    assert container["name"] == "run" and container["command"] == ["dagster", "api", "execute_step"]
    assert container["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert any(t["key"] == "dagster/step-key" for t in gpu["tags"])

    # CPU steps keep the run's Fargate launch type and task definition.
    cpu = _step_run_task_kwargs(handler, launcher, {})
    assert cpu["launchType"] == "FARGATE" and "capacityProviderStrategy" not in cpu
    assert cpu["taskDefinition"].endswith("task-definition/Stereospot-run:1")
    assert "resourceRequirements" not in cpu["overrides"]["containerOverrides"][0]
