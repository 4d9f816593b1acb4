"""ECR repositories, in their own stack so images can be pushed before the services start.

The main stack imports the repositories by name instead of through CloudFormation exports, so
either stack can be updated on its own.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ecr as ecr
from constructs import Construct

CPU_REPOSITORY = "stereospot-cpu"
CUDA_REPOSITORY = "stereospot-cuda"


class ImagesStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self._repository("Cpu", CPU_REPOSITORY)
        self._repository("Cuda", CUDA_REPOSITORY)

    def _repository(self, construct_id: str, name: str) -> ecr.Repository:
        repository = ecr.Repository(
            self,
            construct_id,
            repository_name=name,
            image_scan_on_push=True,
            # Task definitions pin a tag; immutability makes that pin mean one image forever.
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            lifecycle_rules=[ecr.LifecycleRule(max_image_count=20)],
        )
        cdk.CfnOutput(self, f"{construct_id}RepositoryUri", value=repository.repository_uri)
        return repository
