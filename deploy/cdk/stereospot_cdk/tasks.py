"""Task definitions for Dagster run workers (Fargate) and GPU steps (EC2), with their roles."""

from __future__ import annotations

from dataclasses import dataclass, field

import aws_cdk as cdk
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from stereospot_cdk.permissions import grant_instance_load, grant_task_launch
from stereospot_cdk.storage import Buckets

# dagster_aws overrides this container's command for every run and step, and the ECS executor
# assumes the step task definition uses the same container name as the run's.
RUN_CONTAINER = "run"
LOG_RETENTION = logs.RetentionDays.ONE_MONTH


@dataclass
class ContainerEnvironment:
    variables: dict[str, str]
    secrets: dict[str, ecs.Secret] = field(default_factory=dict)

    def with_variables(self, **extra: str) -> ContainerEnvironment:
        return ContainerEnvironment({**self.variables, **extra}, self.secrets)


def task_role(scope: Construct, construct_id: str, description: str) -> iam.Role:
    return iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
        description=description,
    )


def video_task_role(scope: Construct, construct_id: str, description: str, buckets: Buckets) -> iam.Role:
    """The role of tasks that convert videos: read uploads, read and write work and outputs,
    nothing else (uploads are never written)."""
    role = task_role(scope, construct_id, description)
    buckets.input.grant_read(role)
    buckets.output.grant_read_write(role)
    return role


def log_group(scope: Construct, construct_id: str) -> logs.LogGroup:
    return logs.LogGroup(scope, construct_id, retention=LOG_RETENTION)


def log_driver(group: logs.ILogGroup, stream_prefix: str) -> ecs.LogDriver:
    return ecs.LogDrivers.aws_logs(stream_prefix=stream_prefix, log_group=group)


def keep_old_revisions(definition: ecs.TaskDefinition) -> None:
    """A task definition change is a replacement, and CloudFormation deregisters the replaced
    revision; in-flight runs still start steps from the revision ARN they were launched with
    (their own, and STEREOSPOT_GPU_TASK_DEFINITION), so old revisions stay registered."""
    definition.apply_removal_policy(cdk.RemovalPolicy.RETAIN)


class GpuStepTask(Construct):
    """EC2-compatible task definition for the per-segment stereo op (Fargate has no GPUs)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        family: str,
        image: ecs.ContainerImage,
        environment: ContainerEnvironment,
        execution_role: iam.IRole,
        buckets: Buckets,
        models_dir: str,
    ) -> None:
        super().__init__(scope, construct_id)
        # GPU steps only convert segments; unlike run workers they never start other tasks.
        self.role = video_task_role(self, "Role", "stereospot GPU step tasks", buckets)
        grant_instance_load(self.role)
        self.log_group = log_group(self, "Logs")
        self.definition = ecs.Ec2TaskDefinition(
            self,
            "Definition",
            family=family,
            # awsvpc lets the executor reuse the run task's subnets and security group as-is.
            network_mode=ecs.NetworkMode.AWS_VPC,
            task_role=self.role,
            execution_role=execution_role,
        )
        # One models folder per GPU host: the tasks on it fetch each model from the model store
        # once (under a file lock) instead of once per task.
        self.definition.add_volume(name="models", host=ecs.Host(source_path="/var/lib/stereospot/models"))
        container = self.definition.add_container(
            RUN_CONTAINER,
            image=image,
            gpu_count=1,
            # Sized for one step per g5/g6.xlarge (4 vCPU, 16 GiB) after the ECS agent's share.
            cpu=3072,
            memory_reservation_mib=12288,
            environment={**environment.variables, "STEREOSPOT_DEVICE": "cuda"},
            secrets=environment.secrets,
            logging=log_driver(self.log_group, "gpu"),
        )
        container.add_mount_points(ecs.MountPoint(container_path=models_dir, source_volume="models", read_only=False))
        keep_old_revisions(self.definition)


class RunWorkerTask(Construct):
    """Fargate task definition for run workers and CPU steps launched by the ECS executor."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        family: str,
        image: ecs.ContainerImage,
        environment: ContainerEnvironment,
        execution_role: iam.IRole,
        buckets: Buckets,
        cluster: ecs.ICluster,
        gpu_step: GpuStepTask,
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = video_task_role(self, "Role", "stereospot run workers and CPU steps", buckets)
        self.log_group = log_group(self, "Logs")
        # The run worker hosts the ECS executor, which starts one task per step.
        grant_task_launch(
            self.role,
            cluster=cluster,
            families=[family, gpu_step.definition.family],
            passable_roles=[self.role, gpu_step.role, execution_role],
        )
        self.definition = ecs.FargateTaskDefinition(
            self,
            "Definition",
            family=family,
            cpu=1024,
            memory_limit_mib=4096,
            # Source copies and segment files are staged on local disk before upload.
            ephemeral_storage_gib=50,
            task_role=self.role,
            execution_role=execution_role,
        )
        self.definition.add_container(
            RUN_CONTAINER,
            image=image,
            environment={**environment.variables, "STEREOSPOT_DEVICE": "cpu"},
            secrets=environment.secrets,
            logging=log_driver(self.log_group, "run"),
        )
        keep_old_revisions(self.definition)


def family_name(stack: cdk.Stack, suffix: str) -> str:
    return f"{stack.stack_name}-{suffix}"
