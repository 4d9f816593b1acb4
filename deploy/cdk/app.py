"""CDK CLI entry point (`npx --yes aws-cdk@2 deploy` from deploy/cdk); see deploy/README.md."""

import os

import aws_cdk as cdk
from stereospot_cdk import build_app

app = cdk.App()
# Without -c account=/region= the CLI's current credentials choose where to deploy.
build_app(
    app,
    fallback={
        "account": os.environ.get("CDK_DEFAULT_ACCOUNT"),
        "region": os.environ.get("CDK_DEFAULT_REGION"),
    },
)
app.synth()
