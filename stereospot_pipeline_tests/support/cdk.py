"""The deploy/cdk app synthesised once per test session (about 20 s), shared by every test module
that reads the production template."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

# jsii prints a large banner on node 20 unless told not to; it must be set before aws_cdk loads.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CDK_DIR = DEPLOY / "cdk"

TEST_CONTEXT = {
    "account": "111122223333",
    "region": "us-west-2",
    "availability_zones": "us-west-2a,us-west-2c",
    "certificate_arn": "arn:aws:acm:us-west-2:111122223333:certificate/11111111-2222-3333-4444-555555555555",
    "domain_name": "dagster.stereospot.test",
    "image_tag": "test-1",
}


@lru_cache(maxsize=1)
def synthesized():
    """``(Template of the main stack, cdk.out folder)`` with the CLI's feature flags."""
    if str(CDK_DIR) not in sys.path:
        sys.path.insert(0, str(CDK_DIR))
    import aws_cdk as cdk
    from aws_cdk.assertions import Template
    from stereospot_cdk import build_app

    context = {**json.loads((CDK_DIR / "cdk.json").read_text())["context"], **TEST_CONTEXT}
    outdir = Path(tempfile.mkdtemp(prefix="stereospot-cdk-out-"))
    app = cdk.App(context=context, outdir=str(outdir))
    _, main = build_app(app)
    app.synth()
    return Template.from_stack(main), outdir
