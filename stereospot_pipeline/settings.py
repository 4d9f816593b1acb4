"""One settings object for every deployment, read from STEREOSPOT_* environment variables.

The embedded default keeps everything in a project-local state folder; production points the
same code at S3 and Postgres with environment variables alone.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STEREOSPOT_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.cwd() / ".stereospot",
                       description="state folder: Dagster instance, local storage, inbox, outbox")
    store_url: str | None = Field(None, description="work storage: a folder or s3://bucket/prefix")
    inbox_url: str | None = Field(None, description="where new videos arrive: a folder or s3://bucket/prefix")
    outbox_url: str | None = Field(None, description="where finished videos go: a folder or s3://bucket/prefix")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (tests, MinIO)")
    model_store_url: str | None = Field(None, description="s3://bucket/prefix of depth model weights that "
                                        "workers fetch once per host (stereospot models publish)")
    device: str = Field("auto", description="torch device for the stereo step: auto, cpu, cuda")
    inbox_settle_seconds: float = Field(2.0, ge=0, description="a file must be unchanged this long")
    inbox_max_per_tick: int = Field(10, ge=1, description="new videos registered per sensor tick")
    # Guards against uploads that would tie up a worker for days or exhaust its memory; a video
    # above a limit fails in the first step with a message naming the limit.
    max_pixels: int = Field(8192 * 4320, ge=1, description="largest frame (width x height), 8K by default")
    max_duration_s: float = Field(6 * 3600, gt=0, description="longest video in seconds")
    hdr: Literal["tonemap", "keep"] = Field(
        "tonemap", description="HDR (PQ/HLG) sources: tone-map to SDR BT.709, or keep HDR (10-bit HEVC/AV1 "
                   "with the source's tags and HDR10 metadata)")
    executor: Literal["local", "ecs"] = Field(
        "local", description="local: steps in the run's process(es); ecs: each step its own ECS task")
    gpu_capacity_provider: str | None = Field(None, description="ECS capacity provider of GPU instances")
    gpu_task_definition: str | None = Field(None, description="ECS task definition of the GPU step")
    gpu_subnets: str | None = Field(None, description="comma-separated subnets GPU steps may start in")
    # Videos added by URL (the add_video job, `stereospot add`): a URL that resolves to a private,
    # loopback or link-local address (a cloud metadata endpoint, the LAN) is refused before any
    # connection, unless allowed here.
    fetch_allow_private: bool = Field(False, description="allow http(s) sources on private/loopback addresses")
    fetch_max_bytes: int = Field(20 * 1024**3, ge=1, description="largest video downloaded from a URL")
    fetch_timeout_s: float = Field(30.0, gt=0, description="seconds a URL download may stall")
    alert_webhook_url: str | None = Field(None, description="Slack-compatible webhook told about failed runs")
    ui_url: str = Field("http://127.0.0.1:3000", description="the Dagster UI's address, for links in alerts")
    work_retention_days: float = Field(7.0, gt=0, description="local work objects of a video untouched this "
                                       "long are swept (S3 stores expire them by a lifecycle rule)")

    @cached_property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    def url(self, value: str | None, default_subdir: str) -> str:
        return value or str(self.resolved_home / default_subdir)

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.resolved_home / "dagster")
