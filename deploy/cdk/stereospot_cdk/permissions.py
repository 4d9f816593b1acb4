"""IAM statements for starting Dagster run and step tasks, scoped to this stack's ECS resources."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam


def task_definition_family_arn(scope: cdk.Stack, family: str) -> str:
    # Any revision: a run started before a deploy keeps launching steps from its own revision.
    return scope.format_arn(service="ecs", resource="task-definition", resource_name=f"{family}:*")


def grant_instance_load(role: iam.IRole) -> None:
    """Every process that loads deploy/dagster.yaml builds its EcsRunLauncher (run monitoring asks
    it whether runs can resume), and the launcher describes the run task definition at once:
    without this a code location or GPU step fails before it starts. The call supports no
    resource-level permissions and is read-only."""
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=["ecs:DescribeTaskDefinition"], resources=["*"])
    )


def grant_task_launch(
    role: iam.IRole,
    *,
    cluster: ecs.ICluster,
    families: list[str],
    passable_roles: list[iam.IRole],
) -> None:
    """What dagster_aws's EcsRunLauncher and ecs_executor call, and nothing else."""
    stack = cdk.Stack.of(cluster)
    tasks_in_cluster = stack.format_arn(
        service="ecs", resource="task", resource_name=f"{cluster.cluster_name}/*"
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["ecs:RunTask"],
            resources=[task_definition_family_arn(stack, family) for family in families],
            conditions={"ArnEquals": {"ecs:cluster": cluster.cluster_arn}},
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["ecs:DescribeTasks", "ecs:StopTask"], resources=[tasks_in_cluster]
        )
    )
    # Run and step tasks are started with tags (run id, step key); tagging on create needs this.
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["ecs:TagResource"],
            resources=[tasks_in_cluster],
            conditions={"StringEquals": {"ecs:CreateAction": "RunTask"}},
        )
    )
    # Neither call supports resource-level permissions; both are read-only.
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["ecs:DescribeTaskDefinition", "ec2:DescribeNetworkInterfaces"], resources=["*"]
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["iam:PassRole"],
            resources=[passable.role_arn for passable in passable_roles],
            conditions={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
        )
    )
