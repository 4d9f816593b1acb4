"""Long-running Dagster services on Fargate: webserver, daemon and the gRPC code location."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from stereospot_cdk.network import Network
from stereospot_cdk.permissions import grant_instance_load, grant_task_launch
from stereospot_cdk.storage import COMPUTE_LOGS_PREFIX, WORK_PREFIX, Buckets
from stereospot_cdk.tasks import (
    ContainerEnvironment,
    GpuStepTask,
    RunWorkerTask,
    log_driver,
    log_group,
    task_role,
)

WEBSERVER_PORT = 3000
CODE_SERVER_PORT = 4000
CODE_SERVER_DNS_NAME = "code"
CODE_MODULE = "stereospot_pipeline.definitions"
# Written by deploy/docker/Dockerfile.* next to dagster.yaml.
WORKSPACE = "/opt/dagster/dagster_home/workspace.yaml"


class DagsterServices(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        network: Network,
        cluster: ecs.Cluster,
        image: ecs.ContainerImage,
        environment: ContainerEnvironment,
        execution_role: iam.IRole,
        buckets: Buckets,
        run_worker: RunWorkerTask,
        gpu_step: GpuStepTask,
    ) -> None:
        super().__init__(scope, construct_id)
        self._network = network
        self._cluster = cluster
        self._image = image
        self._execution_role = execution_role

        # Webserver and daemon both build the EcsRunLauncher: the daemon launches and monitors
        # runs, the webserver terminates them.
        self.control_role = task_role(
            self, "ControlRole", "stereospot Dagster webserver and daemon"
        )
        grant_task_launch(
            self.control_role,
            cluster=cluster,
            families=[run_worker.definition.family],
            passable_roles=[run_worker.role, execution_role],
        )
        buckets.output.grant_read(self.control_role, f"{COMPUTE_LOGS_PREFIX}/*")
        # Run monitoring quotes the last lines of a failed worker's log in the run's failure.
        for group in (run_worker.log_group, gpu_step.log_group):
            group.grant(self.control_role, "logs:GetLogEvents")
        # The S3 sensor runs inside the code location: it lists and inspects uploads and
        # registers each one in the work store (a HeadObject there without s3:ListBucket
        # answers 403, not 404, so the grant covers listing too). Sensor logs go to S3.
        self.code_role = task_role(self, "CodeRole", "stereospot Dagster code location")
        buckets.input.grant_read(self.code_role)
        for prefix in (f"{WORK_PREFIX}*", f"{COMPUTE_LOGS_PREFIX}/*"):
            # Reads and writes, never deletes.
            buckets.output.grant_read(self.code_role, prefix)
            buckets.output.grant_put(self.code_role, prefix)
        grant_instance_load(self.code_role)

        code_host = f"{CODE_SERVER_DNS_NAME}.{cluster.default_cloud_map_namespace.namespace_name}"
        environment = environment.with_variables(
            STEREOSPOT_RUN_TASK_DEFINITION=run_worker.definition.task_definition_arn,
            STEREOSPOT_CODE_SERVER_HOST=code_host,
        )

        self.code_server = self._service(
            "CodeServer",
            role=self.code_role,
            environment=environment,
            command=f"dagster code-server start -h 0.0.0.0 -p {CODE_SERVER_PORT} -m {CODE_MODULE}".split(),
            port=CODE_SERVER_PORT,
            memory_mib=2048,
            health_check=ecs.HealthCheck(
                command=["CMD", "dagster", "api", "grpc-health-check", "-p", str(CODE_SERVER_PORT)],
                start_period=cdk.Duration.seconds(120),
            ),
            cloud_map_options=ecs.CloudMapOptions(name=CODE_SERVER_DNS_NAME),
        )
        network.tasks_sg.add_ingress_rule(
            network.tasks_sg,
            ec2.Port.tcp(CODE_SERVER_PORT),
            "Webserver and daemon to the code location",
        )
        self.webserver = self._service(
            "Webserver",
            role=self.control_role,
            environment=environment,
            command=f"dagster-webserver -h 0.0.0.0 -p {WEBSERVER_PORT} -w {WORKSPACE}".split(),
            port=WEBSERVER_PORT,
            memory_mib=1024,
        )
        self.daemon = self._service(
            "Daemon",
            role=self.control_role,
            environment=environment,
            command=["dagster-daemon", "run", "-w", WORKSPACE],
            memory_mib=1024,
            # Two daemons would both launch queued runs: stop the old one before starting the new.
            min_healthy_percent=0,
            max_healthy_percent=100,
        )

    def _service(
        self,
        construct_id: str,
        *,
        role: iam.IRole,
        environment: ContainerEnvironment,
        command: list[str],
        memory_mib: int,
        port: int | None = None,
        health_check: ecs.HealthCheck | None = None,
        cloud_map_options: ecs.CloudMapOptions | None = None,
        min_healthy_percent: int = 100,
        max_healthy_percent: int = 200,
    ) -> ecs.FargateService:
        definition = ecs.FargateTaskDefinition(
            self,
            f"{construct_id}Task",
            cpu=512,
            memory_limit_mib=memory_mib,
            task_role=role,
            execution_role=self._execution_role,
        )
        container = definition.add_container(
            construct_id,
            image=self._image,
            command=command,
            environment=environment.variables,
            secrets=environment.secrets,
            logging=log_driver(log_group(self, f"{construct_id}Logs"), construct_id.lower()),
            health_check=health_check,
        )
        if port is not None:
            container.add_port_mappings(ecs.PortMapping(container_port=port))
        return ecs.FargateService(
            self,
            construct_id,
            cluster=self._cluster,
            task_definition=definition,
            desired_count=1,
            # Launch type FARGATE rather than a capacity provider strategy: dagster_aws copies
            # the daemon's launch settings onto runs and fails on tasks started by a strategy.
            vpc_subnets=self._network.private_subnets,
            security_groups=[self._network.tasks_sg],
            assign_public_ip=False,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            min_healthy_percent=min_healthy_percent,
            max_healthy_percent=max_healthy_percent,
            cloud_map_options=cloud_map_options,
        )
