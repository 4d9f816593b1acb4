"""An S3 bucket (or any S3-compatible endpoint) as an object store, for production and the tests.

Files stream between disk and S3 through boto3's transfer manager (multipart above a threshold),
so a video is never held in memory. An object appears at its key only when complete: a single PUT
and CompleteMultipartUpload are atomic, and a failed multipart upload is aborted.
"""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from pydantic import PrivateAttr

from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.storage.base import ObjectStore, check_key

# Standard-mode retries back off exponentially on throttling, 5xx and connection errors.
S3_MAX_ATTEMPTS = 8
MIB = 1 << 20
# SigV4 presigned URLs cannot live longer than 7 days.
MAX_URL_SECONDS = 7 * 24 * 3600


def s3_client(endpoint_url: str | None = None, region_name: str | None = None) -> Any:
    """A boto3 S3 client with retries; credentials and region come from the usual AWS chain.

    Built here rather than by dagster_aws's S3Resource, whose client cannot be given a signature
    version: botocore would presign with the deprecated SigV2 in us-east-1.
    """
    config = Config(signature_version="s3v4",
                    retries={"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS})
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region_name,
                                          config=config)


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, path = url[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    return bucket, path.strip("/")


def _is_missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class S3ObjectStore(ObjectStore):
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region_name: str | None = None
    multipart_threshold: int = 64 * MIB
    multipart_chunksize: int = 16 * MIB
    url_seconds: int = MAX_URL_SECONDS

    _client: Any = PrivateAttr(default=None)

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None, **fields) -> "S3ObjectStore":
        bucket, prefix = split_s3_url(url)
        return cls(bucket=bucket, prefix=prefix, endpoint_url=endpoint_url, **fields)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(self.endpoint_url, self.region_name)
        return self._client

    @property
    def transfer_config(self) -> TransferConfig:
        return TransferConfig(multipart_threshold=self.multipart_threshold,
                              multipart_chunksize=self.multipart_chunksize, max_concurrency=4)

    @property
    def _root(self) -> str:
        """The store's prefix with a trailing slash, or "" for a whole bucket."""
        prefix = self.prefix.strip("/")
        return f"{prefix}/" if prefix else ""

    def _key(self, key: str) -> str:
        return self._root + check_key(key)

    def put_file(self, local: Path, key: str) -> None:
        # On failure the transfer manager aborts the multipart upload: nothing appears at the key.
        self.client.upload_file(str(local), self.bucket, self._key(key), Config=self.transfer_config)

    def get_file(self, key: str, local: Path) -> Path:
        local.parent.mkdir(parents=True, exist_ok=True)
        # boto3 downloads to a temporary name and renames on success.
        self.client.download_file(self.bucket, self._key(key), str(local), Config=self.transfer_config)
        return local

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    def size(self, key: str) -> int:
        return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]

    def list_keys(self, prefix: str) -> list[str]:
        root = self._root
        # Folder semantics like the local store: "a/b" lists "a/b/..." but not "a/bc".
        full = root + (prefix.strip("/") + "/" if prefix.strip("/") else "")
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
        return sorted(obj["Key"][len(root):] for page in pages for obj in page.get("Contents", []))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def url(self, key: str) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)},
            ExpiresIn=min(self.url_seconds, MAX_URL_SECONDS),
        )

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def link(self, key: str) -> str:
        return self.url(key)

    def put_bytes(self, data: bytes, key: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="stereospot-s3-") as tmp:
            # Keep the suffix: some demuxers are picked by file extension.
            yield self.get_file(key, Path(tmp) / f"object{PurePosixPath(key).suffix}")


@contextmanager
def download_uri(uri: str) -> Iterator[Path]:
    """A local copy of ``s3://bucket/key`` (any key the user uploaded) for the duration of the block.

    The endpoint comes from Settings (STEREOSPOT_S3_ENDPOINT_URL), credentials from the AWS chain,
    the same as the stores of the run that reads it.
    """
    from stereospot_pipeline.settings import Settings

    bucket, key = split_s3_url(uri)
    store = S3ObjectStore(bucket=bucket, endpoint_url=Settings().s3_endpoint_url)
    # The key is not a store key (users name uploads freely): only its suffix names the local file.
    suffix = PurePosixPath(key).suffix.lower()
    suffix = suffix if suffix[1:].isalnum() and len(suffix) <= 10 else ""
    with tempfile.TemporaryDirectory(prefix="stereospot-source-") as tmp:
        local = Path(tmp) / f"source{suffix}"
        try:
            store.client.download_file(bucket, key, str(local), Config=store.transfer_config)
        except ClientError as exc:
            if _is_missing(exc):
                raise InvalidVideoError(uri, "the source object no longer exists", "upload the video again") from exc
            raise
        yield local
