"""Input and output buckets: private, encrypted, TLS-only, with expiry for intermediate data."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from constructs import Construct

INPUT_PREFIX = "incoming/"
OUTPUT_PREFIX = "outputs/"
WORK_PREFIX = "work/"
COMPUTE_LOGS_PREFIX = "dagster/compute-logs"

WORK_RETENTION = cdk.Duration.days(7)


def _private_bucket(scope: Construct, construct_id: str, **kwargs) -> s3.Bucket:
    return s3.Bucket(
        scope,
        construct_id,
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        removal_policy=cdk.RemovalPolicy.RETAIN,
        **kwargs,
    )


class Buckets(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        abort_uploads = s3.LifecycleRule(
            id="abort-incomplete-uploads",
            abort_incomplete_multipart_upload_after=cdk.Duration.days(2),
        )
        # Uploads are copied to work/ when a run starts, so the inbox needs no version history.
        self.input = _private_bucket(self, "Input", lifecycle_rules=[abort_uploads])
        self.output = _private_bucket(
            self,
            "Output",
            # Versioning protects finished videos from an accidental re-render or delete.
            versioned=True,
            lifecycle_rules=[
                abort_uploads,
                # Source copies and segments are only needed while a video is being converted.
                s3.LifecycleRule(
                    id="expire-work",
                    prefix=WORK_PREFIX,
                    expiration=WORK_RETENTION,
                    noncurrent_version_expiration=cdk.Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="expire-compute-logs",
                    prefix=f"{COMPUTE_LOGS_PREFIX}/",
                    expiration=cdk.Duration.days(90),
                    noncurrent_version_expiration=cdk.Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="expire-replaced-outputs",
                    prefix=OUTPUT_PREFIX,
                    noncurrent_version_expiration=cdk.Duration.days(30),
                ),
            ],
        )
