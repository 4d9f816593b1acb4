"""Reading the synthesized CloudFormation template the way AWS would: intrinsic functions resolved
to concrete names, the task definitions' containers, the roles' statements, and an IAM check of
one call against a role's statements (actions and resources with wildcards, the condition
operators the stack uses)."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from stereospot_pipeline_tests.support.cdk import TEST_CONTEXT

REGION = TEST_CONTEXT["region"]
ACCOUNT = TEST_CONTEXT["account"]


def of_type(resources: Mapping[str, dict], type_name: str) -> dict[str, dict]:
    return {name: res for name, res in resources.items() if res["Type"] == type_name}


def refs(value) -> set[str]:
    """Logical ids a CloudFormation value refers to through Ref or Fn::GetAtt."""
    found: set[str] = set()
    if isinstance(value, dict):
        if "Ref" in value:
            found.add(value["Ref"])
        if "Fn::GetAtt" in value:
            found.add(value["Fn::GetAtt"][0])
        for inner in value.values():
            found |= refs(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= refs(inner)
    return found


@dataclass
class Names:
    """The concrete value of every Ref and Fn::GetAtt: what AWS would assign at deploy time.
    ``given`` overrides by logical id (a Ref) or ``(logical id, attribute)``."""

    resources: Mapping[str, dict]
    given: dict = field(default_factory=dict)

    def ref(self, logical_id: str) -> str:
        pseudo = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
                  "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": "Stereospot"}
        if logical_id in pseudo:
            return pseudo[logical_id]
        if logical_id in self.given:
            return self.given[logical_id]
        kind = self.resources[logical_id]["Type"]
        props = self.resources[logical_id].get("Properties", {})
        if kind == "AWS::S3::Bucket":
            return logical_id.lower()
        if kind == "AWS::ECS::TaskDefinition":
            return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{props.get('Family', logical_id)}:1"
        if kind == "AWS::EC2::Subnet":
            return f"subnet-{logical_id.lower()[-12:]}"
        if kind in ("AWS::SecretsManager::Secret", "AWS::SecretsManager::SecretTargetAttachment"):
            return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{logical_id}"
        return logical_id  # names: clusters, capacity providers, log groups, roles

    def attr(self, logical_id: str, attribute: str) -> str:
        if (logical_id, attribute) in self.given:
            return self.given[(logical_id, attribute)]
        kind = self.resources[logical_id]["Type"]
        name = self.ref(logical_id)
        arns = {
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::ECS::Cluster": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{name}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{name}",
        }
        if attribute == "Arn" and kind in arns:
            return arns[kind]
        raise KeyError(f"no rehearsal value for {logical_id}.{attribute} ({kind})")

    def resolve(self, value):
        if isinstance(value, dict) and len(value) == 1:
            ((fn, arg),) = value.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::GetAtt":
                return self.attr(*arg)
            if fn == "Fn::Join":
                return arg[0].join(str(self.resolve(part)) for part in arg[1])
            if fn == "Fn::Select":
                return self.resolve(arg[1])[int(arg[0])]
        if isinstance(value, dict):
            return {key: self.resolve(inner) for key, inner in value.items()}
        if isinstance(value, list):
            return [self.resolve(inner) for inner in value]
        return value


def task_definitions(resources) -> dict[str, dict]:
    """Task definition properties by family."""
    return {res["Properties"]["Family"]: {"id": name, **res["Properties"]}
            for name, res in of_type(resources, "AWS::ECS::TaskDefinition").items()}


def container_environment(container: dict, names: Names) -> dict[str, str]:
    return {item["Name"]: str(names.resolve(item["Value"])) for item in container.get("Environment", [])}


def statements_of_role(resources, role_id: str) -> list[dict]:
    statements = []
    for policy in of_type(resources, "AWS::IAM::Policy").values():
        if role_id in refs(policy["Properties"].get("Roles", [])):
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    for inline in resources[role_id]["Properties"].get("Policies", []):
        statements += inline["PolicyDocument"]["Statement"]
    return statements


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


_CONDITIONS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda actual, expected: actual == expected,
    "ArnEquals": lambda actual, expected: actual == expected,
    "ArnLike": lambda actual, expected: fnmatch.fnmatchcase(actual, expected),
    "StringLike": lambda actual, expected: fnmatch.fnmatchcase(actual, expected),
}


def _matches(statement: dict, action: str, resource: str, context: Mapping[str, str]) -> bool:
    if not any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in as_list(statement["Action"])):
        return False
    if not any(fnmatch.fnmatchcase(resource, pattern) for pattern in as_list(statement["Resource"])):
        return False
    for operator, tests in statement.get("Condition", {}).items():
        if operator not in _CONDITIONS:
            raise ValueError(f"condition operator {operator} is not modelled: {json.dumps(statement)}")
        for key, expected in tests.items():
            if key not in context or not any(_CONDITIONS[operator](context[key], e) for e in as_list(expected)):
                return False
    return True


def allowed(statements: list[dict], action: str, resource: str, context: Mapping[str, str] | None = None) -> bool:
    """IAM's verdict for one call: an explicit Deny wins, otherwise some Allow must match."""
    context = context or {}
    matching = [s for s in statements if _matches(s, action, resource, context)]
    return bool(matching) and all(s["Effect"] == "Allow" for s in matching)
