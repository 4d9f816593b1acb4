"""The AWS deployment (deploy/cdk and deploy/docker), checked offline.

The CDK app is synthesised once per session (support/cdk.py); assertions walk the CloudFormation template for
the security and GPU properties the pipeline depends on, then cfn-lint checks the whole template.
"""

from __future__ import annotations

import json
import re

import pytest

# First: support.cdk silences jsii's banner before aws_cdk loads.
from stereospot_pipeline_tests.support.cdk import DEPLOY, REPO, TEST_CONTEXT, synthesized  # isort: skip
from stereospot_pipeline_tests.support.template import Names, allowed, as_list, of_type, refs, statements_of_role

from aws_cdk.assertions import Match, Template
from cfnlint.api import ManualArgs, lint_file

# The zones are pinned on purpose (GPU instance types are not offered in every zone), so the
# "avoid hardcoding availability zones" warning is the one rule skipped.
CFN_LINT_IGNORED = ["W3010"]

DAGSTER_SERVICE_COMMANDS = {
    "webserver": "dagster-webserver",
    "daemon": "dagster-daemon",
    "code_server": "code-server",
}


@pytest.fixture(scope="session")
def synth():
    return synthesized()


@pytest.fixture(scope="module")
def template(synth) -> Template:
    return synth[0]


@pytest.fixture(scope="module")
def resources(template) -> dict[str, dict]:
    return template.to_json()["Resources"]


def task_definition(resources, family_suffix: str) -> dict:
    (definition,) = [
        res["Properties"]
        for res in of_type(resources, "AWS::ECS::TaskDefinition").values()
        if res["Properties"].get("Family") == f"Stereospot-{family_suffix}"
    ]
    return definition


def task_definition_id(resources, family_suffix: str) -> str:
    (logical_id,) = [
        name
        for name, res in of_type(resources, "AWS::ECS::TaskDefinition").items()
        if res["Properties"].get("Family") == f"Stereospot-{family_suffix}"
    ]
    return logical_id


def service_containers(resources) -> dict[str, dict]:
    """The single container of each Dagster service, keyed by role."""
    containers = {}
    for service in of_type(resources, "AWS::ECS::Service").values():
        (definition_id,) = refs(service["Properties"]["TaskDefinition"])
        (container,) = resources[definition_id]["Properties"]["ContainerDefinitions"]
        command = " ".join(container["Command"])
        (role,) = [role for role, marker in DAGSTER_SERVICE_COMMANDS.items() if marker in command]
        containers[role] = {"service": service["Properties"], "container": container}
    return containers


# --- GPU -----------------------------------------------------------------------------------------


def test_gpu_task_definition_requests_one_gpu_on_ec2(resources):
    definition = task_definition(resources, "gpu-step")
    assert definition["RequiresCompatibilities"] == ["EC2"]
    assert definition["NetworkMode"] == "awsvpc"
    (container,) = definition["ContainerDefinitions"]
    # dagster_aws's ECS executor overrides the container that has the run launcher's name.
    assert container["Name"] == "run"
    assert {"Type": "GPU", "Value": "1"} in container["ResourceRequirements"]
    env = {item["Name"]: item["Value"] for item in container["Environment"]}
    assert env["STEREOSPOT_DEVICE"] == "cuda"


def test_gpu_capacity_provider_scales_from_zero(template, resources):
    ((asg_id, asg),) = of_type(resources, "AWS::AutoScaling::AutoScalingGroup").items()
    assert asg["Properties"]["MinSize"] == "0"
    assert "LaunchTemplate" in asg["Properties"]
    ((provider_id, provider),) = of_type(resources, "AWS::ECS::CapacityProvider").items()
    settings = provider["Properties"]["AutoScalingGroupProvider"]
    assert refs(settings["AutoScalingGroupArn"]) == {asg_id}
    assert settings["ManagedScaling"]["Status"] == "ENABLED"
    template.has_resource_properties(
        "AWS::ECS::ClusterCapacityProviderAssociations",
        {"CapacityProviders": Match.array_with([{"Ref": provider_id}])},
    )
    (launch_template,) = of_type(resources, "AWS::EC2::LaunchTemplate").values()
    data = launch_template["Properties"]["LaunchTemplateData"]
    assert re.fullmatch(r"g[56]\.\w+", data["InstanceType"])
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    # The AMI comes from the public SSM parameter for the ECS GPU-optimised Amazon Linux 2023
    # image (Amazon Linux 2's reaches end of life on 2026-06-30, with an older driver).
    (image_parameter,) = refs(data["ImageId"])
    assert template.to_json()["Parameters"][image_parameter]["Default"] == (
        "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id")


def test_scale_in_never_picks_an_instance_running_a_gpu_step(resources):
    ((_, asg),) = of_type(resources, "AWS::AutoScaling::AutoScalingGroup").items()
    ((_, provider),) = of_type(resources, "AWS::ECS::CapacityProvider").items()
    settings = provider["Properties"]["AutoScalingGroupProvider"]
    assert settings["ManagedTerminationProtection"] == "ENABLED"
    # ECS can only protect instances the group starts protected.
    assert asg["Properties"]["NewInstancesProtectedFromScaleIn"] is True


def test_run_and_gpu_task_definitions_keep_their_old_revisions(resources):
    # Every change replaces a task definition; a replaced revision that CloudFormation deletes is
    # deregistered, and in-flight runs launch their next steps from the revision they pinned.
    for family in ("run", "gpu-step"):
        resource = resources[task_definition_id(resources, family)]
        assert resource.get("UpdateReplacePolicy") == "Retain", family
        assert resource.get("DeletionPolicy") == "Retain", family


def test_gpu_steps_may_start_in_every_private_subnet(resources):
    private = sorted(
        name for name, subnet in of_type(resources, "AWS::EC2::Subnet").items()
        if {"Key": "aws-cdk:subnet-type", "Value": "Private"} in subnet["Properties"]["Tags"]
    )
    assert len(private) == len(TEST_CONTEXT["availability_zones"].split(","))
    # The run worker builds the GPU op's tags from this (each process loads the definitions).
    containers = [entry["container"] for entry in service_containers(resources).values()]
    containers += task_definition(resources, "run")["ContainerDefinitions"]
    containers += task_definition(resources, "gpu-step")["ContainerDefinitions"]
    for container in containers:
        env = {item["Name"]: item["Value"] for item in container["Environment"]}
        joined = env["STEREOSPOT_GPU_SUBNETS"]["Fn::Join"]
        assert joined[0] == "," and sorted(refs(joined[1])) == private


def test_gpu_settings_reach_the_dagster_services_and_run_workers(resources):
    (provider_id,) = of_type(resources, "AWS::ECS::CapacityProvider")
    gpu_definition_id = task_definition_id(resources, "gpu-step")
    containers = [entry["container"] for entry in service_containers(resources).values()]
    containers += task_definition(resources, "run")["ContainerDefinitions"]
    for container in containers:
        env = {item["Name"]: item["Value"] for item in container["Environment"]}
        assert env["STEREOSPOT_EXECUTOR"] == "ecs"
        assert env["STEREOSPOT_GPU_CAPACITY_PROVIDER"] == {"Ref": provider_id}
        # Revision-pinned: a run launches all its GPU steps from one revision.
        assert env["STEREOSPOT_GPU_TASK_DEFINITION"] == {"Ref": gpu_definition_id}


def test_gpu_steps_load_the_same_production_definitions_as_the_run(resources):
    """A GPU step worker builds the definitions again: without the executor settings it gets
    in-process ones with the filesystem IO manager and cannot load the planner's S3 output."""
    (gpu,) = task_definition(resources, "gpu-step")["ContainerDefinitions"]
    (run,) = task_definition(resources, "run")["ContainerDefinitions"]
    gpu_env = {item["Name"]: item["Value"] for item in gpu["Environment"]}
    run_env = {item["Name"]: item["Value"] for item in run["Environment"]}
    assert gpu_env["STEREOSPOT_EXECUTOR"] == "ecs"
    assert gpu_env["STEREOSPOT_STORE_URL"] == run_env["STEREOSPOT_STORE_URL"]
    assert gpu_env["STEREOSPOT_GPU_CAPACITY_PROVIDER"] == run_env["STEREOSPOT_GPU_CAPACITY_PROVIDER"]
    # Its own ARN would be a self-reference; the step launches nothing, the family name serves.
    assert gpu_env["STEREOSPOT_GPU_TASK_DEFINITION"] == "Stereospot-gpu-step"


# --- Dagster services ----------------------------------------------------------------------------


def test_dagster_services_run_on_fargate_in_private_subnets(resources):
    services = service_containers(resources)
    assert set(services) == set(DAGSTER_SERVICE_COMMANDS)
    for entry in services.values():
        service = entry["service"]
        # dagster_aws copies the daemon's launch type onto runs and breaks on capacity strategies.
        assert service["LaunchType"] == "FARGATE"
        assert (
            service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
        )
    # Two daemons at once would both launch queued runs.
    assert services["daemon"]["service"]["DeploymentConfiguration"]["MaximumPercent"] == 100
    assert "ServiceRegistries" in services["code_server"]["service"]
    assert "stereospot_pipeline.definitions" in services["code_server"]["container"]["Command"]


def test_every_env_var_of_dagster_yaml_is_provided(resources):
    """Run workers and GPU steps load deploy/dagster.yaml too (the executor rebuilds the instance
    in every task), so every process needs every variable it names."""
    needed = set(re.findall(r"\{env: (\w+)\}", (DEPLOY / "dagster.yaml").read_text()))
    assert "STEREOSPOT_RUN_TASK_DEFINITION" in needed
    containers = {role: entry["container"] for role, entry in service_containers(resources).items()}
    containers["run"] = task_definition(resources, "run")["ContainerDefinitions"][0]
    containers["gpu-step"] = task_definition(resources, "gpu-step")["ContainerDefinitions"][0]
    for role, container in containers.items():
        provided = {item["Name"] for item in container["Environment"]}
        provided |= {item["Name"] for item in container.get("Secrets", [])}
        assert needed <= provided, f"{role} lacks {sorted(needed - provided)}"
    workspace = set(re.findall(r"\{env: (\w+)\}", (DEPLOY / "workspace.yaml").read_text()))
    for role in ("webserver", "daemon"):
        assert workspace <= {item["Name"] for item in containers[role]["Environment"]}, role


def test_database_password_is_injected_from_secrets_manager(resources):
    (secret_id,) = of_type(resources, "AWS::SecretsManager::Secret")
    (attachment_id,) = of_type(resources, "AWS::SecretsManager::SecretTargetAttachment")
    containers = [entry["container"] for entry in service_containers(resources).values()]
    containers += task_definition(resources, "run")["ContainerDefinitions"]
    containers += task_definition(resources, "gpu-step")["ContainerDefinitions"]
    for container in containers:
        assert "DAGSTER_PG_PASSWORD" not in {item["Name"] for item in container["Environment"]}
        secrets = {item["Name"]: item["ValueFrom"] for item in container["Secrets"]}
        assert refs(secrets["DAGSTER_PG_PASSWORD"]) & {secret_id, attachment_id}


def test_database_is_private_and_encrypted(resources):
    (database,) = of_type(resources, "AWS::RDS::DBInstance").values()
    props = database["Properties"]
    assert props["Engine"] == "postgres"
    assert props["StorageEncrypted"] is True
    assert props["PubliclyAccessible"] is False
    assert props["DBInstanceClass"] == "db.t4g.micro"
    assert "resolve:secretsmanager" in json.dumps(props["MasterUserPassword"])


# --- Storage -------------------------------------------------------------------------------------


def test_buckets_are_private_encrypted_and_tls_only(resources):
    buckets = of_type(resources, "AWS::S3::Bucket")
    assert len(buckets) == 2
    policies = {
        next(iter(refs(policy["Properties"]["Bucket"]))): policy["Properties"]["PolicyDocument"]
        for policy in of_type(resources, "AWS::S3::BucketPolicy").values()
    }
    for bucket_id, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
        assert any(
            statement["Effect"] == "Deny"
            and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for statement in policies[bucket_id]["Statement"]
        )


def test_intermediate_work_data_expires(resources):
    rules = [
        rule
        for bucket in of_type(resources, "AWS::S3::Bucket").values()
        for rule in bucket["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
    ]
    (work_rule,) = [rule for rule in rules if rule.get("Prefix") == "work/"]
    assert work_rule["Status"] == "Enabled"
    assert 0 < work_rule["ExpirationInDays"] <= 30
    assert "NoncurrentVersionExpiration" in work_rule


# --- IAM -----------------------------------------------------------------------------------------


def test_no_iam_statement_allows_everything(resources):
    documents = [
        policy["Properties"]["PolicyDocument"]
        for policy in of_type(resources, "AWS::IAM::Policy").values()
    ]
    documents += [
        inline["PolicyDocument"]
        for role in of_type(resources, "AWS::IAM::Role").values()
        for inline in role["Properties"].get("Policies", [])
    ]
    documents += [
        policy["Properties"]["PolicyDocument"]
        for policy in of_type(resources, "AWS::IAM::ManagedPolicy").values()
    ]
    assert documents
    for document in documents:
        for statement in document["Statement"]:
            actions = as_list(statement.get("Action", []))
            assert "*" not in actions, statement
            if statement["Effect"] == "Allow" and "*" in as_list(statement.get("Resource")):
                # Unscoped resources are only acceptable for named actions that AWS cannot scope.
                assert all(":" in action and not action.endswith(":*") for action in actions), (
                    statement
                )


def test_workers_only_read_the_input_bucket(template, resources):
    (input_id,) = refs(template.to_json()["Outputs"]["InputBucketName"]["Value"])
    for family in ("run", "gpu-step"):
        (role_id,) = refs(task_definition(resources, family)["TaskRoleArn"])
        on_input = [
            s for s in statements_of_role(resources, role_id) if input_id in refs(s.get("Resource"))
        ]
        assert on_input, f"{family} task role cannot read the input bucket"
        actions = {action for statement in on_input for action in as_list(statement["Action"])}
        assert actions <= {"s3:GetBucket*", "s3:GetObject*", "s3:List*"}, actions


def _role_of(resources, container_marker: str) -> str:
    for entry in service_containers(resources).values():
        if container_marker in " ".join(entry["container"]["Command"]):
            definition_id = next(iter(refs(entry["service"]["TaskDefinition"])))
            return next(iter(refs(resources[definition_id]["Properties"]["TaskRoleArn"])))
    raise KeyError(container_marker)


def test_the_code_location_may_register_uploads_in_the_work_store(template, resources):
    """The S3 sensor runs in the code location and records each upload under work/ in the output
    bucket; without s3:ListBucket a HeadObject of a missing key answers 403, not 404."""
    names = Names(resources)
    outputs = template.to_json()["Outputs"]
    output = names.resolve(outputs["OutputBucketName"]["Value"])
    statements = statements_of_role(resources, _role_of(resources, "code-server"))
    for action, resource in [
        ("s3:GetObject", f"arn:aws:s3:::{output}/work/registry/clip-0123.json"),
        ("s3:PutObject", f"arn:aws:s3:::{output}/work/registry/clip-0123.json"),
        ("s3:ListBucket", f"arn:aws:s3:::{output}"),
        ("s3:PutObject", f"arn:aws:s3:::{output}/dagster/compute-logs/sensor.out"),
    ]:
        assert allowed(names.resolve(statements), action, resource), (action, resource)
    # Finished videos are the workers' to write, and the code location deletes nothing.
    assert not allowed(names.resolve(statements), "s3:PutObject", f"arn:aws:s3:::{output}/outputs/a.mp4")
    assert not allowed(names.resolve(statements), "s3:DeleteObject", f"arn:aws:s3:::{output}/work/registry/a.json")


def test_gpu_workers_fetch_depth_weights_once_per_host_from_the_model_store(template, resources):
    """A GPU step starts from a bare image: it reads the model store the definitions name and
    keeps what it fetched on a host volume, so later tasks on the host find the model there."""
    names = Names(resources)
    output = names.resolve(template.to_json()["Outputs"]["OutputBucketName"]["Value"])
    definition = task_definition(resources, "gpu-step")
    (gpu,) = definition["ContainerDefinitions"]
    env = {item["Name"]: item["Value"] for item in gpu["Environment"]}
    assert names.resolve(env["STEREOSPOT_MODEL_STORE_URL"]) == f"s3://{output}/models"
    (mount,) = gpu["MountPoints"]
    (volume,) = [v for v in definition["Volumes"] if v["Name"] == mount["SourceVolume"]]
    assert mount["ContainerPath"] == env["STEREOSPOT_MODELS_DIR"] and volume["Host"]["SourcePath"]
    role = next(iter(refs(definition["TaskRoleArn"])))
    statements = names.resolve(statements_of_role(resources, role))
    assert allowed(statements, "s3:GetObject", f"arn:aws:s3:::{output}/models/depth-anything-v2-small/manifest.json")


def test_every_process_may_build_the_run_launcher(resources):
    """Loading deploy/dagster.yaml builds the EcsRunLauncher (run monitoring asks it whether runs
    resume), which describes the run task definition: a role without the call cannot start."""
    names = Names(resources)
    run_definition = names.ref(task_definition_id(resources, "run"))
    roles = {_role_of(resources, marker) for marker in DAGSTER_SERVICE_COMMANDS.values()}
    roles |= {next(iter(refs(task_definition(resources, f)["TaskRoleArn"]))) for f in ("run", "gpu-step")}
    assert len(roles) == 4
    for role in roles:
        statements = names.resolve(statements_of_role(resources, role))
        assert allowed(statements, "ecs:DescribeTaskDefinition", run_definition), role


def test_run_monitoring_may_read_the_logs_of_failed_workers(resources):
    names = Names(resources)
    statements = names.resolve(statements_of_role(resources, _role_of(resources, "dagster-daemon")))
    for family in ("run", "gpu-step"):
        (container,) = task_definition(resources, family)["ContainerDefinitions"]
        group = names.resolve(container["LogConfiguration"]["Options"]["awslogs-group"])
        stream = f"arn:aws:logs:{TEST_CONTEXT['region']}:{TEST_CONTEXT['account']}:log-group:{group}:log-stream:run/run/0123"
        assert allowed(statements, "logs:GetLogEvents", stream), family


def test_only_run_workers_and_control_services_start_tasks(resources):
    gpu_role = next(iter(refs(task_definition(resources, "gpu-step")["TaskRoleArn"])))
    gpu_actions = {a for s in statements_of_role(resources, gpu_role) for a in as_list(s["Action"])}
    assert {a for a in gpu_actions if a.startswith(("ecs:", "iam:"))} == {"ecs:DescribeTaskDefinition"}
    run_role = next(iter(refs(task_definition(resources, "run")["TaskRoleArn"])))
    run_task = [
        s for s in statements_of_role(resources, run_role) if "ecs:RunTask" in as_list(s["Action"])
    ]
    (statement,) = run_task
    assert "ecs:cluster" in statement["Condition"]["ArnEquals"]
    assert all(
        ":task-definition/Stereospot-" in json.dumps(r) for r in as_list(statement["Resource"])
    )


# --- Ingress -------------------------------------------------------------------------------------


def test_no_listener_forwards_without_authentication(resources):
    action_lists = [
        res["Properties"]["DefaultActions"]
        for res in of_type(resources, "AWS::ElasticLoadBalancingV2::Listener").values()
    ]
    action_lists += [
        res["Properties"]["Actions"]
        for res in of_type(resources, "AWS::ElasticLoadBalancingV2::ListenerRule").values()
    ]
    assert len(action_lists) == 2
    for actions in action_lists:
        ordered = [
            action["Type"] for action in sorted(actions, key=lambda action: action.get("Order", 0))
        ]
        if ordered == ["redirect"]:
            continue
        assert ordered[0] in {"authenticate-cognito", "authenticate-oidc"}, ordered
        assert ordered[-1] == "forward"


def test_http_only_redirects_to_https(resources):
    listeners = {
        res["Properties"]["Port"]: res["Properties"]
        for res in of_type(resources, "AWS::ElasticLoadBalancingV2::Listener").values()
    }
    assert listeners[80]["DefaultActions"] == [
        {
            "Type": "redirect",
            "RedirectConfig": {"Port": "443", "Protocol": "HTTPS", "StatusCode": "HTTP_301"},
        }
    ]
    assert listeners[443]["Protocol"] == "HTTPS"
    assert listeners[443]["Certificates"] == [{"CertificateArn": TEST_CONTEXT["certificate_arn"]}]


def test_cognito_callback_uses_the_configured_domain(template):
    template.has_resource_properties(
        "AWS::Cognito::UserPoolClient",
        {
            "CallbackURLs": [f"https://{TEST_CONTEXT['domain_name']}/oauth2/idpresponse"],
            "GenerateSecret": True,
        },
    )
    template.has_resource_properties(
        "AWS::Cognito::UserPool", {"AdminCreateUserConfig": {"AllowAdminCreateUserOnly": True}}
    )


# --- Logs, network, outputs ----------------------------------------------------------------------


def test_every_container_logs_to_a_group_with_retention(resources):
    groups = of_type(resources, "AWS::Logs::LogGroup")
    assert groups
    assert all(group["Properties"]["RetentionInDays"] > 0 for group in groups.values())
    for definition in of_type(resources, "AWS::ECS::TaskDefinition").values():
        for container in definition["Properties"]["ContainerDefinitions"]:
            log = container["LogConfiguration"]
            assert log["LogDriver"] == "awslogs"
            assert refs(log["Options"]["awslogs-group"]) <= set(groups)


def test_vpc_uses_the_zones_from_context(resources):
    zones = {
        subnet["Properties"]["AvailabilityZone"]
        for subnet in of_type(resources, "AWS::EC2::Subnet").values()
    }
    assert zones == set(TEST_CONTEXT["availability_zones"].split(","))
    assert len(of_type(resources, "AWS::EC2::NatGateway")) == 1


def test_stack_outputs(template, resources):
    outputs = template.to_json()["Outputs"]
    (provider_id,) = of_type(resources, "AWS::ECS::CapacityProvider")
    assert outputs["GpuCapacityProviderName"]["Value"] == {"Ref": provider_id}
    assert outputs["GpuTaskDefinitionArn"]["Value"] == {
        "Ref": task_definition_id(resources, "gpu-step")
    }
    for name in (
        "InputBucketName",
        "OutputBucketName",
        "LoadBalancerDnsName",
        "RunTaskDefinitionArn",
    ):
        assert name in outputs


def test_cfn_lint_reports_nothing(synth):
    _, outdir = synth
    # Read the manifest directly: the cloud assembly API of the Python bindings cannot load it.
    manifest = json.loads((outdir / "manifest.json").read_text())
    templates = [
        outdir / artifact["properties"]["templateFile"]
        for artifact in manifest["artifacts"].values()
        if artifact["type"] == "aws:cloudformation:stack"
    ]
    assert len(templates) == 2
    for path in templates:
        matches = lint_file(
            path,
            config=ManualArgs(ignore_checks=CFN_LINT_IGNORED, regions=[TEST_CONTEXT["region"]]),
        )
        assert [str(match) for match in matches] == [], path.name


# --- Docker images (cannot be built here: no Docker engine) --------------------------------------


def dockerfile_instructions(name: str) -> list[tuple[str, str]]:
    text = (DEPLOY / "docker" / name).read_text()
    logical = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfile_is_multi_stage_pinned_and_non_root(name):
    instructions = dockerfile_instructions(name)
    args = dict(
        rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest
    )
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
        for kw, rest in instructions
        if kw == "FROM"
    ]
    assert len(bases) >= 2, "expected a builder stage and a final stage"
    for base in bases:
        if ":" not in base:
            continue  # a reference to an earlier stage
        image, tag = base.rsplit(":", 1)
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), base
    assert any(kw == "COPY" and rest.startswith("--from=builder") for kw, rest in instructions)

    final_stage = instructions[max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM") :]
    users = [rest for kw, rest in final_stage if kw == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert any(kw in {"ENTRYPOINT", "HEALTHCHECK"} for kw, _ in final_stage)
    copied = " ".join(rest for kw, rest in final_stage if kw == "COPY")
    assert "deploy/dagster.yaml" in copied and "deploy/workspace.yaml" in copied
    env = " ".join(rest for kw, rest in final_stage if kw == "ENV")
    # The CDK services pass `-w <DAGSTER_HOME>/workspace.yaml`.
    assert "DAGSTER_HOME=/opt/dagster/dagster_home" in env


def test_docker_build_context_leaves_out_local_state():
    """Builds run from the repository root: without .dockerignore the context carries .venv,
    the state folder (videos, the local instance) and the real-clip cache into every build."""
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for path in (".venv", ".stereospot", ".real-clips", ".git", ".bench", "cdk.out", "deploy/cdk/cdk.out"):
        assert any(re.fullmatch(fnmatch_to_regex(pattern), path) for pattern in ignored), path
    # ...but keeps what the Dockerfiles copy.
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        for keyword, rest in dockerfile_instructions(name):
            if keyword == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    assert not any(re.fullmatch(fnmatch_to_regex(p), source) for p in ignored), source


def fnmatch_to_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regex: ``**`` spans folders, ``*`` and ``?`` stay in one."""
    out, i, pattern = [], 0, pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])))
        i += 1
    return "".join(out)


def test_cuda_image_installs_a_cuda_torch_build():
    instructions = dockerfile_instructions("Dockerfile.cuda")
    args = dict(
        rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest
    )
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:12.")
    assert re.search(r"/whl/cu1\d+$", args["TORCH_INDEX_URL"])


def test_cuda_image_grants_the_video_driver_capability():
    """NVENC (h264/hevc/av1_nvenc) opens in a container only with the 'video' capability."""
    env = " ".join(rest for keyword, rest in dockerfile_instructions("Dockerfile.cuda") if keyword == "ENV")
    [capabilities] = re.findall(r"NVIDIA_DRIVER_CAPABILITIES=(\S+)", env)
    assert {"compute", "utility", "video"} <= set(capabilities.split(","))
