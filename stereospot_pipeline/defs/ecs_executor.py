"""The production executor: dagster-aws's ECS executor with the project's step handler.

Its own module because dagster-aws's ECS package costs about 0.6 s to import, and only ECS
deployments need it: a local run, the CLI and every test that runs locally never load it.
"""

from dagster import InitExecutorContext, executor, multiple_process_executor_requirements
from dagster import _check as check
from dagster._core.execution.retries import RetryMode
from dagster._core.execution.step_dependency_config import StepDependencyConfig
from dagster._core.executor.step_delegating import StepDelegatingExecutor
from dagster_aws.ecs import EcsRunLauncher, ecs_executor
from dagster_aws.ecs.executor import EcsStepHandler

from stereospot_pipeline.defs.executor import STEP_ARGS_ENV, SUBNETS_TAG
from stereospot_pipeline.defs.resources import make_store
from stereospot_pipeline.defs.step_args import store_step_args
from stereospot_pipeline.settings import Settings
from stereospot_pipeline.storage import ObjectStore


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
