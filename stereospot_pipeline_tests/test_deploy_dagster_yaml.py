"""The production instance config (deploy/dagster.yaml) against Dagster's own config schemas.

Everything is validated offline: the instance schema, each configured class's schema with the
environment variables resolved, and the AWS classes instantiated against moto.
"""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes.config_class import ConfigurableClassData
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_postgres import DagsterPostgresStorage
from moto import mock_aws

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy"

# What deploy/cdk puts into every Dagster task's environment.
TASK_ENV = {
    "DAGSTER_PG_HOST": "dagster.abc123.us-east-1.rds.amazonaws.com",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "from-secrets-manager",
    "DAGSTER_COMPUTE_LOGS_BUCKET": "stereospot-output",
    "DAGSTER_COMPUTE_LOGS_PREFIX": "dagster/compute-logs",
    "STEREOSPOT_RUN_TASK_DEFINITION": "Stereospot-run",
    "STEREOSPOT_STORE_URL": "s3://stereospot-output/work/",
    "STEREOSPOT_INBOX_URL": "s3://stereospot-input/incoming/",
    "STEREOSPOT_OUTBOX_URL": "s3://stereospot-output/outputs/",
    "STEREOSPOT_GPU_CAPACITY_PROVIDER": "Stereospot-GpuCapacityProvider",
    "STEREOSPOT_GPU_TASK_DEFINITION": "arn:aws:ecs:us-east-1:123456789012:task-definition/Stereospot-gpu-step:1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


@pytest.fixture
def task_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in TASK_ENV.items():
        monkeypatch.setenv(name, value)
    return TASK_ENV


@pytest.fixture
def instance_config(task_env: dict[str, str]) -> dict:
    config, custom_instance_class = dagster_instance_config(
        str(DEPLOY_DIR), config_filename="dagster.yaml"
    )
    assert custom_instance_class is None
    return dict(config)


def resolved(config_schema, value: dict) -> dict:
    """Validate against a class's schema and resolve `{env: NAME}` the way the instance does."""
    result = process_config(resolve_to_config_type(config_schema), value)
    assert result.success, result.errors
    return result.value


def rehydrate(section: dict, as_type: type):
    return ConfigurableClassData(
        section["module"], section["class"], yaml.safe_dump(section.get("config", {}))
    ).rehydrate(as_type)


def test_storage_is_postgres_with_credentials_from_the_environment(instance_config, task_env):
    assert list(instance_config["storage"]) == ["postgres"]
    raw = instance_config["storage"]["postgres"]["postgres_db"]
    for key, env_name in {
        "hostname": "DAGSTER_PG_HOST",
        "db_name": "DAGSTER_PG_DB",
        "username": "DAGSTER_PG_USERNAME",
        "password": "DAGSTER_PG_PASSWORD",
    }.items():
        # A literal here would bake a credential or an endpoint into the image.
        assert raw[key] == {"env": env_name}

    db = resolved(DagsterPostgresStorage.config_type(), instance_config["storage"]["postgres"])[
        "postgres_db"
    ]
    assert db["hostname"] == task_env["DAGSTER_PG_HOST"]
    assert db["port"] == 5432
    assert db["password"] == task_env["DAGSTER_PG_PASSWORD"]
    assert db["params"] == {"sslmode": "require"}


def test_compute_logs_go_to_s3(instance_config, task_env):
    section = instance_config["compute_logs"]
    assert (section["module"], section["class"]) == (
        "dagster_aws.s3.compute_log_manager",
        "S3ComputeLogManager",
    )
    config = resolved(S3ComputeLogManager.config_type(), section["config"])
    assert config["bucket"] == task_env["DAGSTER_COMPUTE_LOGS_BUCKET"]
    assert config["prefix"] == task_env["DAGSTER_COMPUTE_LOGS_PREFIX"]
    assert config["upload_interval"] > 0

    with mock_aws():
        manager = rehydrate(section, S3ComputeLogManager)
    assert manager._s3_bucket == task_env["DAGSTER_COMPUTE_LOGS_BUCKET"]  # noqa: SLF001


def test_run_launcher_uses_the_cdk_run_task_definition(instance_config, task_env):
    section = instance_config["run_launcher"]
    assert (section["module"], section["class"]) == ("dagster_aws.ecs", "EcsRunLauncher")
    config = resolved(EcsRunLauncher.config_type(), section["config"])
    assert config["task_definition"] == {"env": "STEREOSPOT_RUN_TASK_DEFINITION"}
    assert config["use_current_ecs_task_config"] is True
    assert config["secrets_tag"] is None
    assert config["run_resources"] == {"cpu": "1024", "memory": "4096"}
    # With a fixed task definition dagster-aws only puts env_vars into task definitions it
    # registers itself: forwarded variables would silently never reach a run.
    assert "env_vars" not in config

    with mock_aws():
        ecs = boto3.client("ecs")
        ecs.register_task_definition(
            family=task_env["STEREOSPOT_RUN_TASK_DEFINITION"],
            containerDefinitions=[{"name": "run", "image": "stereospot-cpu:test", "memory": 4096}],
        )
        launcher = rehydrate(section, EcsRunLauncher)
    assert launcher.task_definition.endswith(
        f":task-definition/{task_env['STEREOSPOT_RUN_TASK_DEFINITION']}:1"
    )
    assert launcher.container_name == "run"
    assert launcher.secrets_tags == []
    assert launcher.run_ecs_tags == [{"key": "app", "value": "stereospot"}]


def test_run_launcher_rejects_a_task_definition_without_the_run_container(
    instance_config, task_env
):
    # Guards the coupling with deploy/cdk: the ECS executor overrides the container named "run".
    with mock_aws():
        boto3.client("ecs").register_task_definition(
            family=task_env["STEREOSPOT_RUN_TASK_DEFINITION"],
            containerDefinitions=[
                {"name": "worker", "image": "stereospot-cpu:test", "memory": 4096}
            ],
        )
        with pytest.raises(Exception, match="container is not defined"):
            rehydrate(instance_config["run_launcher"], EcsRunLauncher)


def test_runs_are_queued_with_limits(instance_config):
    coordinator = instance_config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    runs = instance_config["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] > 0
    limits = {limit["key"]: limit for limit in runs["tag_concurrency_limits"]}
    assert limits["dagster/partition"]["value"] == {"applyLimitPerUniqueValue": True}
    assert limits["dagster/partition"]["limit"] == 1
    assert instance_config["concurrency"]["pools"]["default_limit"] >= 1


def test_run_monitoring_retries_and_telemetry(instance_config):
    monitoring = instance_config["run_monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["start_timeout_seconds"] > 0
    assert monitoring["cancel_timeout_seconds"] > 0
    assert monitoring["max_resume_run_attempts"] >= 1
    assert instance_config["run_retries"]["enabled"] is True
    assert instance_config["run_retries"]["max_retries"] >= 1
    assert instance_config["telemetry"] == {"enabled": False}


def test_workspace_points_at_the_code_location_service(task_env, monkeypatch):
    from dagster._core.workspace.config_schema import ensure_workspace_config

    monkeypatch.setenv("STEREOSPOT_CODE_SERVER_HOST", "code.stereospot.internal")
    workspace_path = DEPLOY_DIR / "workspace.yaml"
    workspace = yaml.safe_load(workspace_path.read_text())
    ensure_workspace_config(workspace, str(workspace_path))
    (entry,) = workspace["load_from"]
    assert entry["grpc_server"]["host"] == {"env": "STEREOSPOT_CODE_SERVER_HOST"}
    assert entry["grpc_server"]["port"] == 4000
