"""Where steps run: in the run worker locally; in production (STEREOSPOT_EXECUTOR=ecs) each step is its
own ECS task, CPU steps on the run's Fargate task definition and the stereo step on GPU capacity.

The GPU routing is op tags read by dagster-aws's ECS executor (run tags would not reach steps of a
run started from the UI's Materialize button). Locally the tags are inert and the `gpu` concurrency
pool bounds how many stereo steps run at once.
"""

import json

from dagster import (
    ExecutorDefinition,
    InitExecutorContext,
    executor,
    in_process_executor,
    multiple_process_executor_requirements,
)
from dagster import _check as check
from dagster._core.execution.retries import RetryMode
from dagster._core.execution.step_dependency_config import StepDependencyConfig
from dagster._core.executor.step_delegating import StepDelegatingExecutor
from dagster_aws.ecs import EcsRunLauncher, ecs_executor
from dagster_aws.ecs.executor import EcsStepHandler
from dagster_aws.s3 import S3PickleIOManager, S3Resource

from stereospot_pipeline.defs.resources import make_store
from stereospot_pipeline.defs.step_args import STEP_ARGS_ENV, store_step_args
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.storage import ObjectStore
from stereospot_pipeline.storage.s3 import S3_MAX_ATTEMPTS, split_s3_url

INERT_GPU_TAGS = {"stereospot/step": "gpu"}
GPU_CONTAINER_OVERRIDES = {"resourceRequirements": [{"type": "GPU", "value": "1"}]}
# Comma-separated subnets a tagged step may start in, replacing the launching task's own subnet.
SUBNETS_TAG = "stereospot/subnets"


def gpu_op_tags(settings: Settings) -> dict[str, str]:
    """Tags of the stereo op: inert locally, GPU task definition and capacity provider on ECS."""
    if settings.executor != "ecs":
        return dict(INERT_GPU_TAGS)
    if not (settings.gpu_capacity_provider and settings.gpu_task_definition):
        raise ValueError("STEREOSPOT_EXECUTOR=ecs needs STEREOSPOT_GPU_CAPACITY_PROVIDER and "
                         "STEREOSPOT_GPU_TASK_DEFINITION (set by the deploy/cdk stack)")
    tags = {
        **INERT_GPU_TAGS,
        "ecs/container_overrides": json.dumps(GPU_CONTAINER_OVERRIDES),
        "ecs/run_task_kwargs": json.dumps({
            "capacityProviderStrategy": [{"capacityProvider": settings.gpu_capacity_provider}],
            "taskDefinition": settings.gpu_task_definition,
        }),
    }
    if settings.gpu_subnets:
        tags[SUBNETS_TAG] = settings.gpu_subnets
    return tags


class StereospotEcsStepHandler(EcsStepHandler):
    """dagster-aws 0.29.27's step handler with three changes to the RunTask call of each step:

    - it copies ``launchType: FARGATE`` from the run's own task and keeps it when a step's tags
      add a ``capacityProviderStrategy``; ECS rejects RunTask calls with both, so the launch
      type goes whenever a strategy is given;
    - a step tagged with ``stereospot/subnets`` may start in any of those subnets (GPU instances
      come up in every private subnet), not only in the run worker's own;
    - the step's arguments travel through the work store (see step_args.py), so the overrides
      stay far below ECS's 8,192 characters whatever the segment count.
    """

    def __init__(self, *args, store: ObjectStore, **kwargs):
        super().__init__(*args, **kwargs)
        self._store = store

    def _get_run_task_kwargs(self, run, args, step_key, step_tags, *rest, **kwargs):
        run_task_kwargs = super()._get_run_task_kwargs(run, args, step_key, step_tags, *rest, **kwargs)
        if run_task_kwargs.get("capacityProviderStrategy"):
            run_task_kwargs = {k: v for k, v in run_task_kwargs.items() if k != "launchType"}
        if subnets := step_tags.get(SUBNETS_TAG):
            network = run_task_kwargs.get("networkConfiguration") or {}
            vpc = {**network.get("awsvpcConfiguration", {}), "subnets": subnets.split(",")}
            run_task_kwargs["networkConfiguration"] = {**network, "awsvpcConfiguration": vpc}
        for container in run_task_kwargs["overrides"]["containerOverrides"]:
            environment = container.get("environment", [])
            payload = [item["value"] for item in environment if item["name"] == STEP_ARGS_ENV]
            if payload:
                container["command"] = store_step_args(self._store, run.run_id, payload[0])
                container["environment"] = [item for item in environment if item["name"] != STEP_ARGS_ENV]
        return run_task_kwargs


@executor(name="ecs", config_schema=ecs_executor.config_schema,
          requirements=multiple_process_executor_requirements())
def stereospot_ecs_executor(init_context: InitExecutorContext) -> StepDelegatingExecutor:
    """dagster-aws's ``ecs_executor`` (same config) with the step handler above."""
    check.invariant(isinstance(init_context.instance.run_launcher, EcsRunLauncher),
                    "the ECS executor needs runs launched by the EcsRunLauncher (deploy/dagster.yaml)")
    config = init_context.executor_config
    settings = Settings()
    return StepDelegatingExecutor(
        StereospotEcsStepHandler(
            run_launcher=init_context.instance.run_launcher,
            run_task_kwargs=config.get("run_task_kwargs"),
            cpu=config.get("cpu"),
            memory=config.get("memory"),
            ephemeral_storage=config.get("ephemeral_storage"),
            task_overrides=config.get("task_overrides"),
            store=make_store(settings.url(settings.store_url, "store"), settings),
        ),
        retries=RetryMode.from_config(config["retries"]),
        max_concurrent=config.get("max_concurrent"),
        tag_concurrency_limits=config.get("tag_concurrency_limits"),
        should_verify_step=True,
        step_dependency_config=StepDependencyConfig.from_config(config.get("step_dependency_config")),
    )


def build_executor(settings: Settings) -> ExecutorDefinition:
    # Locally a run is one process: a process per step would re-import torch for every segment,
    # and the gpu pool admits one stereo step at a time anyway. Steps still retry on their own.
    return stereospot_ecs_executor if settings.executor == "ecs" else in_process_executor


def execution_resources(settings: Settings) -> dict:
    """ECS steps run in separate tasks: op outputs (small manifests) travel through S3."""
    if settings.executor != "ecs":
        return {}
    if not (settings.store_url or "").startswith("s3://"):
        raise ValueError("STEREOSPOT_EXECUTOR=ecs needs an s3:// STEREOSPOT_STORE_URL shared by all tasks")
    bucket, prefix = split_s3_url(settings.store_url)
    return {"io_manager": S3PickleIOManager(
        s3_resource=S3Resource(endpoint_url=settings.s3_endpoint_url, max_attempts=S3_MAX_ATTEMPTS),
        s3_bucket=bucket,
        s3_prefix=f"{prefix}/dagster-io" if prefix else "dagster-io",
    )}
