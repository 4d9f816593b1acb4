"""AWS CDK app for stereospot: Dagster on ECS with a scale-from-zero GPU capacity provider."""

from stereospot_cdk.builder import build_app

__all__ = ["build_app"]
