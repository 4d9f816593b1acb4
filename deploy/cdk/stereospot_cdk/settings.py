"""Deployment settings read from CDK context (`cdk deploy -c key=value`).

Feature flags live in cdk.json so the CLI and the tests synthesise the same template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from constructs import Node

# Placeholders that let the app synthesise offline (tests, `cdk synth`); a real deploy overrides
# every one of them on the command line, see deploy/README.md.
DEFAULTS = {
    "account": "123456789012",
    "region": "us-east-1",
    "availability_zones": "us-east-1a,us-east-1b",
    "certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000",
    "domain_name": "dagster.example.com",
    "cognito_domain_prefix": "stereospot-example",
    "image_tag": "0.1.0",
    "gpu_instance_type": "g5.xlarge",
    "gpu_max_instances": "2",
}


@dataclass(frozen=True)
class Settings:
    account: str
    region: str
    availability_zones: tuple[str, ...]
    certificate_arn: str
    domain_name: str
    cognito_domain_prefix: str
    image_tag: str
    gpu_instance_type: str
    gpu_max_instances: int

    @classmethod
    def from_context(cls, node: Node, fallback: dict[str, str] | None = None) -> Settings:
        def get(key: str) -> str:
            value = node.try_get_context(key)
            if value is None:
                value = (fallback or {}).get(key) or DEFAULTS[key]
            return value

        return cls(
            account=str(get("account")),
            region=str(get("region")),
            availability_zones=_as_list(get("availability_zones")),
            certificate_arn=get("certificate_arn"),
            domain_name=get("domain_name"),
            cognito_domain_prefix=get("cognito_domain_prefix"),
            image_tag=str(get("image_tag")),
            gpu_instance_type=get("gpu_instance_type"),
            gpu_max_instances=int(get("gpu_max_instances")),
        )


def _as_list(value: object) -> tuple[str, ...]:
    # `-c availability_zones=a,b` arrives as a string, cdk.json may hold a JSON list.
    if isinstance(value, str):
        value = json.loads(value) if value.startswith("[") else value.split(",")
    return tuple(str(zone).strip() for zone in value if str(zone).strip())
