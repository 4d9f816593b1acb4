"""The AWS deployment rehearsed on one machine, from the synthesized CloudFormation template.

What stands in for AWS, and nothing else:

- S3 and EC2 (network interfaces): a moto server on 127.0.0.1 with IAM enforced. Every task
  role of the template becomes an IAM user carrying exactly that role's statements; a task's
  processes sign with its role's keys, so a call the role may not make answers 403.
- ECS: ``EcsShim``, a loopback endpoint for the calls dagster-aws makes (RunTask, DescribeTasks,
  StopTask, DescribeTaskDefinition) plus the task metadata endpoint. RunTask starts the named
  task definition's container as a local process: the image's ENV, then the task definition's
  environment and secrets, then the call's overrides, then what the ECS runtime injects (region,
  credentials, metadata URI). ECS calls are checked against the caller's role statements
  (``ecs:RunTask`` with its cluster condition, ``iam:PassRole`` of both roles of the started task
  definition, tagging on create), and RunTask is validated the way ECS validates it (launch type
  xor capacity provider strategy, GPUs only on EC2 capacity, the 8,192-character overrides cap,
  subnets and security groups of the stack's own).
- RDS: a PostgreSQL server on 127.0.0.1 that only takes SSL (as RDS does), reached through the
  template's own endpoint variables.

Substitutions, all listed here: image paths (the virtual environment, DAGSTER_HOME, the state
and models folders) are re-rooted under a temporary folder, one state folder per task as ECS
gives each task its own filesystem; a task's own interface (0.0.0.0) and Cloud Map names are
127.0.0.1; ``STEREOSPOT_DEVICE=cuda`` becomes ``cpu`` on a machine without CUDA; the container
entry point (tini) is left out; endpoints of the local servers are passed as
``AWS_ENDPOINT_URL_<SERVICE>``, which boto3 reads in every process. Nothing of the test's own
environment reaches a task: a variable the code reads that neither the image nor the task
definition sets is unset there, as in production.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3

from stereospot_pipeline_tests.support.cdk import DEPLOY
from stereospot_pipeline_tests.support.net import free_port
from stereospot_pipeline_tests.support.postgres import _server_bin
from stereospot_pipeline_tests.support.template import (
    ACCOUNT,
    REGION,
    Names,
    allowed,
    container_environment,
    of_type,
    refs,
    statements_of_role,
    task_definitions,
)

ECS_OVERRIDES_LIMIT = 8192
# The image paths re-rooted under the rehearsal folder (see the module docstring).
VENV = "/opt/venv"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLOUD_MAP_SUFFIX = ".stereospot.internal"
DB_SECRET = {"username": "postgres", "password": "rehearsal-only"}


# --- images ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    env: dict[str, str]
    workdir: str
    cmd: list[str]


def image_of(dockerfile: Path) -> Image:
    """ENV, WORKDIR and CMD of the Dockerfile's final stage, ``$VAR`` references expanded."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    env: dict[str, str] = {"PATH": BASE_PATH}
    workdir, cmd = "/", []
    for line in lines[last_from + 1:]:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", rest):
                env[name] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
        elif keyword == "WORKDIR":
            workdir = rest.strip()
        elif keyword == "CMD":
            cmd = json.loads(rest)
    return Image(env, workdir, cmd)


def image_for(container: dict, names: Names) -> Image:
    """The image a container runs, read from the Dockerfile that builds its ECR repository."""
    uri = str(names.resolve(container["Image"]))
    return image_of(DEPLOY / "docker" / ("Dockerfile.cuda" if "stereospot-cuda" in uri else "Dockerfile.cpu"))


# --- PostgreSQL with SSL only ------------------------------------------------------------------


def _self_signed(cert: Path, key: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
                   .sign(private, hashes.SHA256()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))


@contextmanager
def ssl_postgres(database: str) -> Iterator[int]:
    """A PostgreSQL server on 127.0.0.1 that refuses unencrypted connections; yields its port."""
    bin_dir = _server_bin()
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="stereospot-rehearsal-pg-"))
    data = root / "data"
    as_root = os.geteuid() == 0

    def run(*args: str) -> None:
        cmd = " ".join(f"'{a}'" for a in args)
        full = ["su", "postgres", "-s", "/bin/sh", "-c", cmd] if as_root else ["sh", "-c", cmd]
        subprocess.run(full, check=True, timeout=120, stdout=subprocess.DEVNULL)

    try:
        if as_root:
            shutil.chown(root, "postgres", "postgres")
        run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", DB_SECRET["username"])
        _self_signed(data / "server.crt", data / "server.key")
        (data / "server.key").chmod(0o600)
        # hostssl only: a plain TCP connection is rejected, as RDS does with rds.force_ssl.
        (data / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
        if as_root:
            for name in ("server.crt", "server.key", "pg_hba.conf"):
                shutil.chown(data / name, "postgres", "postgres")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
            "-o", f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c ssl=on", "start")
        try:
            run(str(bin_dir / "createdb"), "-h", str(root), "-p", str(port), "-U", DB_SECRET["username"], database)
            yield port
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- moto with IAM enforced --------------------------------------------------------------------


@contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """``moto_server`` in its own process (its IAM switch is process-wide); yields the endpoint."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"moto_server did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def enforce_iam(endpoint: str) -> None:
    """From now on every call needs the keys of an IAM user allowed to make it."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request, timeout=10)


def denied_requests(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if '" 403 ' in line]


# --- ECS ---------------------------------------------------------------------------------------


class EcsError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Task:
    arn: str
    family: str
    definition: dict
    cluster_arn: str
    launch: dict
    eni: str
    subnet: str
    log: Path
    process: subprocess.Popen
    env: dict[str, str] = field(repr=False, default_factory=dict)
    command: list[str] = field(default_factory=list)
    launched_by: str | None = None
    stopped_reason: str | None = None

    @property
    def task_id(self) -> str:
        return self.arn.rsplit("/", 1)[1]

    def healthy(self) -> bool:
        """The task definition's container health check, run as the ECS agent runs it."""
        check = self.definition["ContainerDefinitions"][0].get("HealthCheck")
        assert check and check["Command"][0] == "CMD", f"{self.family} has no exec health check"
        done = subprocess.run(check["Command"][1:], env=self.env, cwd=self.log.parent,
                              capture_output=True, timeout=check.get("Timeout", 5) + 25)
        return done.returncode == 0

    def describe(self) -> dict:
        code = self.process.poll()
        status = "RUNNING" if code is None else "STOPPED"
        container = {"name": self.definition["ContainerDefinitions"][0]["Name"], "lastStatus": status}
        if code is not None:
            container["exitCode"] = code
        placement = ({"capacityProviderStrategy": self.launch["capacityProviderStrategy"]}
                     if self.launch.get("capacityProviderStrategy") else
                     {"launchType": self.launch.get("launchType", "FARGATE")})
        described = {
            "taskArn": self.arn, "clusterArn": self.cluster_arn, "lastStatus": status, "desiredStatus": status,
            "taskDefinitionArn": self.definition["arn"], "containers": [container], **placement,
            "attachments": [{"type": "ElasticNetworkInterface", "status": "ATTACHED", "details": [
                {"name": "subnetId", "value": self.subnet}, {"name": "networkInterfaceId", "value": self.eni}]}],
            "tags": self.launch.get("tags", []),
        }
        if code is not None:
            described["stopCode"] = "EssentialContainerExited"
            described["stoppedReason"] = self.stopped_reason or "Essential container in task exited"
        return described


class EcsShim:
    """The ECS API and task metadata endpoint of the rehearsal (see the module docstring)."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.tasks: dict[str, Task] = {}
        self.denied: list[str] = []
        self.rejected: list[str] = []
        self._lock = threading.Lock()
        self._subnet_turn = 0
        shim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # the tasks' logs are what matters
                pass

            def do_GET(self):
                parts = self.path.strip("/").split("/")
                task = shim.tasks.get(parts[1]) if len(parts) >= 2 and parts[0] == "meta" else None
                if task is None:
                    return self._send(404, {"message": "no such task"})
                if parts[2:] == ["task"]:
                    return self._send(200, {"Cluster": task.cluster_arn, "TaskARN": task.arn,
                                            "Family": task.family, "Revision": "1"})
                return self._send(200, {"Name": task.definition["ContainerDefinitions"][0]["Name"]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                operation = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
                caller = re.search(r"Credential=(\w+)/", self.headers.get("Authorization", ""))
                try:
                    result = shim.call(operation, body, caller.group(1) if caller else "")
                except EcsError as exc:
                    return self._send(400, {"__type": exc.code, "message": str(exc)})
                self._send(200, result)

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EcsShim:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.stop_all()

    # --- the API -------------------------------------------------------------------------------

    def call(self, operation: str, body: dict, access_key: str) -> dict:
        role = self.deployment.role_of_key.get(access_key)
        if role is None:
            raise EcsError("UnrecognizedClientException", f"unknown access key {access_key!r}")
        handler = {"RunTask": self._run_task, "DescribeTasks": self._describe_tasks, "StopTask": self._stop_task,
                   "DescribeTaskDefinition": self._describe_task_definition}.get(operation)
        if handler is None:
            raise EcsError("InvalidAction", f"the rehearsal's ECS does not serve {operation}")
        return handler(body, role)

    def _authorize(self, role: str, action: str, resource: str, context: dict | None = None) -> None:
        if not allowed(self.deployment.statements[role], action, resource, context):
            message = f"{role} is not authorized to perform {action} on {resource}"
            self.denied.append(message)
            raise EcsError("AccessDeniedException", message)

    def _reject(self, message: str):
        self.rejected.append(message)
        raise EcsError("InvalidParameterException", message)

    def _definition(self, name: str) -> dict:
        for family, definition in self.deployment.definitions.items():
            if name in (family, definition["arn"]):
                return definition
        raise EcsError("ClientException", f"Unable to describe task definition {name}")

    def _describe_task_definition(self, body: dict, role: str) -> dict:
        definition = self._definition(body["taskDefinition"])
        self._authorize(role, "ecs:DescribeTaskDefinition", definition["arn"])
        names = self.deployment.names
        containers = []
        for container in definition["ContainerDefinitions"]:
            containers.append({
                "name": container["Name"], "image": str(names.resolve(container["Image"])),
                "command": container.get("Command", []),
                "environment": [{"name": k, "value": v} for k, v in container_environment(container, names).items()],
                "secrets": [{"name": s["Name"], "valueFrom": str(names.resolve(s["ValueFrom"]))}
                            for s in container.get("Secrets", [])],
                "logConfiguration": {"logDriver": container["LogConfiguration"]["LogDriver"],
                                     "options": names.resolve(container["LogConfiguration"]["Options"])},
            })
        return {"taskDefinition": {
            "taskDefinitionArn": definition["arn"], "family": definition["Family"], "revision": 1,
            "status": "ACTIVE", "containerDefinitions": containers, "networkMode": definition.get("NetworkMode"),
            "requiresCompatibilities": definition.get("RequiresCompatibilities", []),
            "taskRoleArn": names.resolve(definition["TaskRoleArn"]),
            "executionRoleArn": names.resolve(definition["ExecutionRoleArn"]),
        }, "tags": []}

    def _task(self, arn: str) -> Task:
        task = self.tasks.get(arn.rsplit("/", 1)[-1])
        if task is None:
            raise EcsError("InvalidParameterException", f"no task {arn}")
        return task

    def _describe_tasks(self, body: dict, role: str) -> dict:
        found = []
        for arn in body.get("tasks", []):
            task = self._task(arn)
            self._authorize(role, "ecs:DescribeTasks", task.arn)
            found.append(task.describe())
        return {"tasks": found, "failures": []}

    def _stop_task(self, body: dict, role: str) -> dict:
        task = self._task(body["task"])
        self._authorize(role, "ecs:StopTask", task.arn)
        task.stopped_reason = body.get("reason") or "Task stopped by user"
        _stop(task.process)
        return {"task": task.describe()}

    def _run_task(self, body: dict, role: str) -> dict:
        deployment = self.deployment
        definition = self._definition(body["taskDefinition"])
        cluster = body.get("cluster")
        if cluster not in (deployment.cluster_name, deployment.cluster_arn):
            self._reject(f"cluster {cluster!r} is not the stack's cluster")
        self._authorize(role, "ecs:RunTask", definition["arn"], {"ecs:cluster": deployment.cluster_arn})
        for key in ("TaskRoleArn", "ExecutionRoleArn"):
            self._authorize(role, "iam:PassRole", deployment.names.resolve(definition[key]),
                            {"iam:PassedToService": "ecs-tasks.amazonaws.com"})
        overrides = body.get("overrides", {})
        size = len(json.dumps(overrides, separators=(",", ":")))
        if size > ECS_OVERRIDES_LIMIT:
            self._reject(f"Container Overrides length must be at most {ECS_OVERRIDES_LIMIT} (was {size})")
        strategy = body.get("capacityProviderStrategy")
        if strategy and body.get("launchType"):
            self._reject("Specifying both a launch type and capacity provider strategy is not supported.")
        compatibilities = definition.get("RequiresCompatibilities", [])
        container_overrides = overrides.get("containerOverrides", [])
        wants_gpu = any(r.get("type") == "GPU" for c in container_overrides for r in c.get("resourceRequirements", []))
        wants_gpu |= any(r.get("Type") == "GPU" for c in definition["ContainerDefinitions"]
                         for r in c.get("ResourceRequirements", []))
        if strategy:
            providers = {item["capacityProvider"] for item in strategy}
            if not providers <= deployment.capacity_providers:
                self._reject(f"unknown capacity providers {sorted(providers - deployment.capacity_providers)}")
            if "EC2" not in compatibilities:
                self._reject(f"{definition['Family']} is not EC2-compatible but is started on EC2 capacity")
        else:
            if body.get("launchType", "EC2") not in compatibilities:
                self._reject(f"{definition['Family']} does not support launch type {body.get('launchType')}")
            if wants_gpu:
                self._reject("GPUs are not available on Fargate")
        vpc = (body.get("networkConfiguration") or {}).get("awsvpcConfiguration")
        if definition.get("NetworkMode") == "awsvpc":
            if not vpc or not vpc.get("subnets"):
                self._reject("Network Configuration must be provided when networkMode 'awsvpc' is specified.")
            if not set(vpc["subnets"]) <= set(deployment.private_subnets):
                self._reject(f"subnets {vpc['subnets']} are not the stack's private subnets")
            if not set(vpc.get("securityGroups", [])) <= {deployment.tasks_security_group}:
                self._reject(f"security groups {vpc.get('securityGroups')} are not the tasks' group")
        arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{deployment.cluster_name}/{uuid.uuid4().hex}"
        if body.get("tags"):
            self._authorize(role, "ecs:TagResource", arn, {"ecs:CreateAction": "RunTask"})
        with self._lock:
            # ECS places each task in one of the given subnets.
            subnet = vpc["subnets"][self._subnet_turn % len(vpc["subnets"])]
            self._subnet_turn += 1
        task = self.start(definition, arn=arn, launch=body, subnet=subnet)
        task.launched_by = role
        return {"tasks": [task.describe()], "failures": []}

    # --- processes -----------------------------------------------------------------------------

    def start(self, definition: dict, *, arn: str | None = None, launch: dict | None = None,
              subnet: str | None = None) -> Task:
        """Starts the task definition's container as a local process (services and RunTask)."""
        deployment = self.deployment
        launch = launch or {"launchType": "FARGATE"}
        arn = arn or f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{deployment.cluster_name}/{uuid.uuid4().hex}"
        subnet = subnet or deployment.private_subnets[0]
        (container,) = definition["ContainerDefinitions"]
        (override,) = [c for c in launch.get("overrides", {}).get("containerOverrides", [])
                       if c["name"] == container["Name"]] or [{}]
        task_id = arn.rsplit("/", 1)[1]
        root = deployment.root / "tasks" / f"{definition['Family']}-{task_id[:8]}"
        remap = deployment.remap(root)
        image = image_for(container, deployment.names)
        env = {k: remap(v) for k, v in image.env.items()}
        env.update({k: remap(v) for k, v in container_environment(container, deployment.names).items()})
        env.update(deployment.secrets_of(definition))
        env.update({item["name"]: item["value"] for item in override.get("environment", [])})
        env = {k: deployment.local_host(v) for k, v in env.items()}
        if env.get("STEREOSPOT_DEVICE") == "cuda" and not deployment.has_cuda:
            env["STEREOSPOT_DEVICE"] = "cpu"
        role = next(iter(refs(definition["TaskRoleArn"])))
        key_id, secret = deployment.keys[role]
        env.update({
            # What the ECS runtime gives every task (credentials come from its role).
            "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret,
            "ECS_CONTAINER_METADATA_URI_V4": f"{self.endpoint}/meta/{task_id}",
            "HOME": remap("/var/lib/stereospot"),
            **deployment.endpoints(self.endpoint),
        })
        command = override.get("command") or container.get("Command") or image.cmd
        command = [deployment.local_host(remap(arg)) for arg in command]
        workdir = Path(remap(image.workdir))
        for folder in (workdir, Path(env["DAGSTER_HOME"]), Path(env.get("STEREOSPOT_MODELS_DIR", root / "models"))):
            folder.mkdir(parents=True, exist_ok=True)
        for name in ("dagster.yaml", "workspace.yaml"):
            target = Path(env["DAGSTER_HOME"]) / name
            if not target.exists():
                shutil.copy(DEPLOY / name, target)
        eni = deployment.network_interface(subnet)
        log = deployment.root / "logs" / f"{definition['Family']}-{task_id[:8]}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            # A shell without job control leaves SIGINT ignored in children; dagster shuts down on it.
            process = subprocess.Popen(
                [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                 "os.execvpe(sys.argv[1], sys.argv[1:], os.environ)", *command],
                cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        task = Task(arn=arn, family=definition["Family"], definition=definition, cluster_arn=deployment.cluster_arn,
                    launch=launch, eni=eni, subnet=subnet, log=log, process=process, env=env, command=command)
        with self._lock:
            self.tasks[task_id] = task
        return task

    def stop_all(self) -> None:
        for task in list(self.tasks.values()):
            _stop(task.process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


# --- the deployment ----------------------------------------------------------------------------


class Deployment:
    """The template's resources made concrete against the local stand-ins."""

    def __init__(self, template: dict, root: Path, moto: str, pg_port: int):
        self.template = template
        self.resources = template["Resources"]
        self.root = root
        self.moto = moto
        self.has_cuda = _has_cuda()
        resources = self.resources
        (database,) = of_type(resources, "AWS::RDS::DBInstance")
        # Before IAM is enforced (enforce_iam): the account's setup, as CloudFormation would do it.
        setup = boto3.session.Session(aws_access_key_id="setup", aws_secret_access_key="setup", region_name=REGION)
        ec2 = setup.client("ec2", endpoint_url=moto)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        given: dict = {(database, "Endpoint.Address"): "127.0.0.1", (database, "Endpoint.Port"): str(pg_port)}
        private = sorted(name for name, subnet in of_type(resources, "AWS::EC2::Subnet").items()
                         if {"Key": "aws-cdk:subnet-type", "Value": "Private"} in subnet["Properties"]["Tags"])
        for i, logical_id in enumerate(private):
            given[logical_id] = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{16 * i}.0/20")["Subnet"]["SubnetId"]
        self.private_subnets = [given[logical_id] for logical_id in private]
        (tasks_sg_id,) = [name for name, sg in of_type(resources, "AWS::EC2::SecurityGroup").items()
                          if "run/step tasks" in sg["Properties"].get("GroupDescription", "")]
        self.tasks_security_group = given[(tasks_sg_id, "GroupId")] = ec2.create_security_group(
            GroupName="tasks", Description="Dagster tasks", VpcId=vpc)["GroupId"]
        self.names = Names(resources, given)
        (cluster_id,) = of_type(resources, "AWS::ECS::Cluster")
        self.cluster_name = self.names.ref(cluster_id)
        self.cluster_arn = self.names.attr(cluster_id, "Arn")
        self.capacity_providers = {self.names.ref(p) for p in of_type(resources, "AWS::ECS::CapacityProvider")}
        self.definitions = {family: {**props, "arn": self.names.ref(props["id"])}
                            for family, props in task_definitions(resources).items()}
        self.buckets = {logical_id: self.names.ref(logical_id) for logical_id in of_type(resources, "AWS::S3::Bucket")}
        s3 = setup.client("s3", endpoint_url=moto)
        for bucket in self.buckets.values():
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})

        # One IAM user per role a task runs as, carrying exactly the role's statements.
        iam = setup.client("iam", endpoint_url=moto)
        roles = {next(iter(refs(d["TaskRoleArn"]))) for d in self.definitions.values()}
        roles |= {next(iter(refs(d["ExecutionRoleArn"]))) for d in self.definitions.values()}
        self.statements: dict[str, list[dict]] = {}
        self.keys: dict[str, tuple[str, str]] = {}
        self.role_of_key: dict[str, str] = {}
        for role in sorted(roles):
            statements = self.names.resolve(statements_of_role(resources, role))
            self.statements[role] = statements
            iam.create_user(UserName=role)
            for i, statement in enumerate(statements):
                # moto evaluates actions and resources, not condition keys; the ECS shim does both.
                plain = {k: v for k, v in statement.items() if k != "Condition"}
                iam.put_user_policy(UserName=role, PolicyName=f"statement-{i}",
                                    PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [plain]}))
            key = iam.create_access_key(UserName=role)["AccessKey"]
            self.keys[role] = (key["AccessKeyId"], key["SecretAccessKey"])
            self.role_of_key[key["AccessKeyId"]] = role
        # The operator who uploads and looks at results (not a task).
        iam.create_user(UserName="operator")
        iam.put_user_policy(UserName="operator", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="operator")["AccessKey"]
        self.operator = boto3.session.Session(aws_access_key_id=key["AccessKeyId"],
                                              aws_secret_access_key=key["SecretAccessKey"], region_name=REGION)
        self._ec2 = self.operator.client("ec2", endpoint_url=moto)

    def output(self, name: str) -> str:
        return str(self.names.resolve(self.template["Outputs"][name]["Value"]))

    def network_interface(self, subnet: str) -> str:
        """The ENI ECS attaches to an awsvpc task (dagster-aws reads the task's groups from it)."""
        return self._ec2.create_network_interface(SubnetId=subnet, Groups=[self.tasks_security_group])[
            "NetworkInterface"]["NetworkInterfaceId"]

    def endpoints(self, ecs: str) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_S3": self.moto, "AWS_ENDPOINT_URL_EC2": self.moto,
                "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": self.moto, "AWS_ENDPOINT_URL_ECS": ecs}

    def remap(self, task_root: Path):
        shared = {VENV: sys.prefix, "/opt/dagster/dagster_home": str(self.root / "dagster_home")}
        own = {"/var/lib/stereospot": str(task_root / "state"), "/opt/stereospot/models": str(task_root / "models")}
        prefixes = {**shared, **own}

        def apply(value: str) -> str:
            for image_path, local in prefixes.items():
                value = re.sub(rf"(^|:){re.escape(image_path)}(?=$|[/:])", lambda m: m.group(1) + local, value)
            return value
        return apply

    @staticmethod
    def local_host(value: str) -> str:
        if value == "0.0.0.0" or value.endswith(CLOUD_MAP_SUFFIX):
            return "127.0.0.1"
        return value

    def secrets_of(self, definition: dict) -> dict[str, str]:
        """What the ECS agent injects from Secrets Manager, with the execution role's permission."""
        execution_role = next(iter(refs(definition["ExecutionRoleArn"])))
        values = {}
        for container in definition["ContainerDefinitions"]:
            for secret in container.get("Secrets", []):
                value_from = str(self.names.resolve(secret["ValueFrom"]))
                arn, json_key = re.fullmatch(r"(arn:aws:secretsmanager:[^:]+:\d+:secret:[^:]+):(\w+)::", value_from).groups()
                if not allowed(self.statements[execution_role], "secretsmanager:GetSecretValue", arn):
                    raise PermissionError(f"{execution_role} may not read {arn}")
                values[secret["Name"]] = DB_SECRET[json_key]
        return values


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False
