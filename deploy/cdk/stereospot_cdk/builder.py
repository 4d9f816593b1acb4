"""Builds both stacks; shared by deploy/cdk/app.py (the CLI entry point) and the tests."""

from __future__ import annotations

import aws_cdk as cdk

from stereospot_cdk.images import ImagesStack
from stereospot_cdk.settings import Settings
from stereospot_cdk.stack import StereospotStack


def build_app(
    app: cdk.App, fallback: dict[str, str] | None = None
) -> tuple[ImagesStack, StereospotStack]:
    settings = Settings.from_context(app.node, fallback)
    # Seeding the look-up cache keeps synthesis offline: an explicit account/region would
    # otherwise make the VPC ask AWS for the region's availability zones.
    app.node.set_context(
        f"availability-zones:account={settings.account}:region={settings.region}",
        list(settings.availability_zones),
    )
    env = cdk.Environment(account=settings.account, region=settings.region)
    images = ImagesStack(app, "StereospotImages", env=env)
    main = StereospotStack(app, "Stereospot", settings=settings, env=env)
    # `cdk deploy --all` creates the repositories first; push images before services start.
    main.add_stack_dependency(images)
    return images, main
