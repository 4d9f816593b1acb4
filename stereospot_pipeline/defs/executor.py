"""Where steps run: in the run worker locally; in production (STEREOSPOT_EXECUTOR=ecs) each step is its
own ECS task, CPU steps on the run's Fargate task definition and the stereo step on GPU capacity.

The GPU routing is op tags read by dagster-aws's ECS executor (run tags would not reach steps of a
run started from the UI's Materialize button). Locally the tags are inert and the `gpu` concurrency
pool bounds how many stereo steps run at once.
"""

import json

from dagster import ExecutorDefinition, in_process_executor

from stereospot_pipeline.defs.step_args import STEP_ARGS_ENV
from stereospot_pipeline.settings import Settings

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


def build_executor(settings: Settings) -> ExecutorDefinition:
    # Locally a run is one process: a process per step would re-import torch for every segment,
    # and the gpu pool admits one stereo step at a time anyway. Steps still retry on their own.
    if settings.executor != "ecs":
        return in_process_executor
    from stereospot_pipeline.defs.ecs_executor import stereospot_ecs_executor

    return stereospot_ecs_executor


def execution_resources(settings: Settings) -> dict:
    """ECS steps run in separate tasks: op outputs (small manifests) travel through S3."""
    if settings.executor != "ecs":
        return {}
    if not (settings.store_url or "").startswith("s3://"):
        raise ValueError("STEREOSPOT_EXECUTOR=ecs needs an s3:// STEREOSPOT_STORE_URL shared by all tasks")
    from dagster_aws.s3 import S3PickleIOManager, S3Resource

    from stereospot_pipeline.storage.s3 import S3_MAX_ATTEMPTS, split_s3_url

    bucket, prefix = split_s3_url(settings.store_url)
    return {"io_manager": S3PickleIOManager(
        s3_resource=S3Resource(endpoint_url=settings.s3_endpoint_url, max_attempts=S3_MAX_ATTEMPTS),
        s3_bucket=bucket,
        s3_prefix=f"{prefix}/dagster-io" if prefix else "dagster-io",
    )}


def __getattr__(name: str):
    # The ECS executor's names, importable from here as before, loaded only when asked for.
    if name in ("StereospotEcsStepHandler", "stereospot_ecs_executor"):
        from stereospot_pipeline.defs import ecs_executor

        return getattr(ecs_executor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
