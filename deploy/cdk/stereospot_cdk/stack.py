"""The stereospot production stack: storage, database, ECS cluster, Dagster and GPU capacity."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from stereospot_cdk.database import DB_NAME, Database
from stereospot_cdk.gpu import GpuCapacity
from stereospot_cdk.images import CPU_REPOSITORY, CUDA_REPOSITORY
from stereospot_cdk.ingress import AuthenticatedIngress
from stereospot_cdk.network import Network
from stereospot_cdk.services import DagsterServices
from stereospot_cdk.settings import Settings
from stereospot_cdk.storage import (
    COMPUTE_LOGS_PREFIX,
    INPUT_PREFIX,
    OUTPUT_PREFIX,
    WORK_PREFIX,
    Buckets,
)
from stereospot_cdk.tasks import ContainerEnvironment, GpuStepTask, RunWorkerTask, family_name

# Paths inside the images built by deploy/docker.
STATE_DIR = "/var/lib/stereospot"
MODELS_DIR = "/opt/stereospot/models"
MODELS_PREFIX = "models"


class StereospotStack(cdk.Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        network = Network(self, "Network", availability_zones=settings.availability_zones)
        buckets = Buckets(self, "Buckets")
        database = Database(self, "Database", network=network)

        cluster = ecs.Cluster(self, "Cluster", vpc=network.vpc)
        cluster.add_default_cloud_map_namespace(name="stereospot.internal")
        gpu = GpuCapacity(
            self,
            "Gpu",
            network=network,
            cluster=cluster,
            instance_type=settings.gpu_instance_type,
            max_instances=settings.gpu_max_instances,
        )

        cpu_image = self._image("CpuRepository", CPU_REPOSITORY, settings.image_tag)
        cuda_image = self._image("CudaRepository", CUDA_REPOSITORY, settings.image_tag)
        # One execution role pulls images, writes logs and injects the database secret for every
        # task, so launchers have a single role to pass.
        execution_role = iam.Role(
            self, "TaskExecutionRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com")
        )
        # Every process that loads deploy/dagster.yaml (services, run workers, GPU steps) needs
        # each variable it names, and every step worker needs the run's executor settings to
        # load the same definitions (in-process ones would look for op outputs on local disk).
        environment = self._environment(buckets, database).with_variables(
            STEREOSPOT_EXECUTOR="ecs",
            STEREOSPOT_GPU_CAPACITY_PROVIDER=gpu.capacity_provider.capacity_provider_name,
            # GPU instances start in any private subnet; a step confined to the launching
            # task's subnet could not use an instance the group started in another zone.
            STEREOSPOT_GPU_SUBNETS=cdk.Fn.join(",", network.private_subnet_ids),
            # Failure alerts link to the run in the UI behind the load balancer.
            STEREOSPOT_UI_URL=f"https://{settings.domain_name}",
        )
        run_family = family_name(self, "run")
        gpu_family = family_name(self, "gpu-step")
        gpu_step = GpuStepTask(
            self,
            "GpuStep",
            family=gpu_family,
            image=cuda_image,
            # A task definition cannot name its own ARN, and the run and GPU definitions
            # cannot name each other's (a cycle): where the process only needs a valid value
            # (it launches nothing of that kind), the family name stands in.
            environment=environment.with_variables(
                STEREOSPOT_GPU_TASK_DEFINITION=gpu_family,
                STEREOSPOT_RUN_TASK_DEFINITION=run_family,
            ),
            execution_role=execution_role,
            buckets=buckets,
            models_dir=MODELS_DIR,
        )
        # The revision-pinned ARN: a run keeps starting its GPU steps from the revision it was
        # launched with, across deploys (old revisions are kept).
        environment = environment.with_variables(
            STEREOSPOT_GPU_TASK_DEFINITION=gpu_step.definition.task_definition_arn,
        )
        run_worker = RunWorkerTask(
            self,
            "RunWorker",
            family=run_family,
            image=cpu_image,
            # CPU steps start from the run worker's own task definition revision (dagster-aws
            # reads it from the task), so this only has to load the instance.
            environment=environment.with_variables(STEREOSPOT_RUN_TASK_DEFINITION=run_family),
            execution_role=execution_role,
            buckets=buckets,
            cluster=cluster,
            gpu_step=gpu_step,
        )
        services = DagsterServices(
            self,
            "Dagster",
            network=network,
            cluster=cluster,
            image=cpu_image,
            environment=environment,
            execution_role=execution_role,
            buckets=buckets,
            run_worker=run_worker,
            gpu_step=gpu_step,
        )
        ingress = AuthenticatedIngress(
            self,
            "Ingress",
            network=network,
            webserver=services.webserver,
            certificate_arn=settings.certificate_arn,
            domain_name=settings.domain_name,
            cognito_domain_prefix=settings.cognito_domain_prefix,
        )

        outputs = {
            "InputBucketName": buckets.input.bucket_name,
            "OutputBucketName": buckets.output.bucket_name,
            "LoadBalancerDnsName": ingress.load_balancer.load_balancer_dns_name,
            "UserPoolId": ingress.user_pool.user_pool_id,
            "GpuCapacityProviderName": gpu.capacity_provider.capacity_provider_name,
            "GpuTaskDefinitionArn": gpu_step.definition.task_definition_arn,
            "RunTaskDefinitionArn": run_worker.definition.task_definition_arn,
            "ClusterName": cluster.cluster_name,
        }
        for name, value in outputs.items():
            cdk.CfnOutput(self, name, value=value)

    def _image(self, construct_id: str, repository_name: str, tag: str) -> ecs.ContainerImage:
        repository = ecr.Repository.from_repository_name(self, construct_id, repository_name)
        return ecs.ContainerImage.from_ecr_repository(repository, tag)

    @staticmethod
    def _environment(buckets: Buckets, database: Database) -> ContainerEnvironment:
        output = buckets.output.bucket_name
        return ContainerEnvironment(
            variables={
                "DAGSTER_PG_HOST": database.instance.db_instance_endpoint_address,
                "DAGSTER_PG_PORT": database.instance.db_instance_endpoint_port,
                "DAGSTER_PG_DB": DB_NAME,
                "DAGSTER_COMPUTE_LOGS_BUCKET": output,
                "DAGSTER_COMPUTE_LOGS_PREFIX": COMPUTE_LOGS_PREFIX,
                "STEREOSPOT_HOME": STATE_DIR,
                "STEREOSPOT_MODELS_DIR": MODELS_DIR,
                # Learned depth weights published with `stereospot models publish`; workers fetch
                # them once per host into MODELS_DIR (the GPU hosts keep it on a host volume).
                "STEREOSPOT_MODEL_STORE_URL": f"s3://{output}/{MODELS_PREFIX}",
                "STEREOSPOT_INBOX_URL": f"s3://{buckets.input.bucket_name}/{INPUT_PREFIX}",
                "STEREOSPOT_OUTBOX_URL": f"s3://{output}/{OUTPUT_PREFIX}",
                "STEREOSPOT_STORE_URL": f"s3://{output}/{WORK_PREFIX}",
            },
            secrets={
                "DAGSTER_PG_USERNAME": ecs.Secret.from_secrets_manager(database.secret, "username"),
                "DAGSTER_PG_PASSWORD": ecs.Secret.from_secrets_manager(database.secret, "password"),
            },
        )
