"""Dagster's run, event and schedule storage: a small private PostgreSQL instance."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_rds as rds
from constructs import Construct

from stereospot_cdk.network import Network

DB_NAME = "dagster"
DB_PORT = 5432


class Database(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, network: Network) -> None:
        super().__init__(scope, construct_id)
        self.instance = rds.DatabaseInstance(
            self,
            "Postgres",
            # A pinned minor version without automatic upgrades: RDS upgrading behind
            # CloudFormation's back makes the next stack update try a downgrade and fail.
            engine=rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_17_7),
            auto_minor_version_upgrade=False,
            instance_type=ec2.InstanceType.of(
                ec2.InstanceClass.BURSTABLE4_GRAVITON, ec2.InstanceSize.MICRO
            ),
            vpc=network.vpc,
            vpc_subnets=network.private_subnets,
            port=DB_PORT,
            database_name=DB_NAME,
            # The generated secret holds username and password; tasks receive both through the
            # ECS secrets mechanism, so the password never appears in a task definition.
            credentials=rds.Credentials.from_generated_secret("dagster"),
            storage_encrypted=True,
            storage_type=rds.StorageType.GP3,
            allocated_storage=20,
            max_allocated_storage=100,
            multi_az=False,
            publicly_accessible=False,
            backup_retention=cdk.Duration.days(7),
            deletion_protection=True,
            removal_policy=cdk.RemovalPolicy.SNAPSHOT,
        )
        self.instance.connections.allow_default_port_from(network.tasks_sg, "Dagster tasks")
        self.secret = self.instance.secret
