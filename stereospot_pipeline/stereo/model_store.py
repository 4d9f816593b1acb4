"""An S3 model store: depth weights fetched once per host into the models folder.

GPU workers start from a bare image; the store (``STEREOSPOT_MODEL_STORE_URL=s3://bucket/prefix``,
endpoint ``STEREOSPOT_S3_ENDPOINT_URL`` where not AWS) holds one folder per registry name plus a
``manifest.json`` of every file's size and SHA-256. A fetch downloads into a temporary folder
beside the target, verifies every checksum, then renames the folder into place, all under a file
lock: concurrent tasks on one host download once, and none ever loads a half-written model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from stereospot_pipeline.errors import StereospotError

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


class ModelStoreError(StereospotError):
    """The store is configured but a model in it is missing or corrupt."""


def store_url() -> str | None:
    from stereospot_pipeline.settings import Settings

    return Settings().model_store_url or None


def _split(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise ModelStoreError(f"STEREOSPOT_MODEL_STORE_URL={url!r}: expected s3://bucket/prefix")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")


def _client():
    from stereospot_pipeline.settings import Settings
    from stereospot_pipeline.storage.s3 import s3_client

    return s3_client(Settings().s3_endpoint_url)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _key(prefix: str, *parts: str) -> str:
    return "/".join(p for p in (prefix, *parts) if p)


def publish_to_store(folder: Path, name: str, url: str | None = None) -> dict:
    """Upload a model folder (e.g. written by ``stereospot models pull``) under ``name`` with its
    manifest, the manifest last so a fetch never sees a model without all its files."""
    bucket, prefix = _split(url or store_url() or "")
    client = _client()
    files = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and ".cache" not in p.parts):
        rel = path.relative_to(folder).as_posix()
        files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        client.upload_file(str(path), bucket, _key(prefix, name, rel))
    manifest = {"name": name, "files": files}
    client.put_object(Bucket=bucket, Key=_key(prefix, name, MANIFEST), Body=json.dumps(manifest).encode())
    return manifest


def fetch_from_store(name: str, dest_root: Path, url: str | None = None) -> Path | None:
    """``dest_root/name`` with the store's copy of the model, downloading it if not there yet;
    None when no store is configured or it has no such model. Raises ``ModelStoreError`` when a
    download does not match its manifest (nothing is left in ``dest_root`` then)."""
    url = url or store_url()
    if url is None:
        return None
    bucket, prefix = _split(url)
    dest_root.mkdir(parents=True, exist_ok=True)
    target = dest_root / name
    with open(dest_root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").is_file():
            return target  # another task on this host fetched it while we waited
        client = _client()
        try:
            body = client.get_object(Bucket=bucket, Key=_key(prefix, name, MANIFEST))["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
        manifest = json.loads(body)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=dest_root))
        try:
            for rel, meta in manifest["files"].items():
                path = tmp / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, _key(prefix, name, rel), str(path))
                got = sha256_file(path)
                if got != meta["sha256"] or path.stat().st_size != meta["size"]:
                    raise ModelStoreError(
                        f"model store {url}: {name}/{rel} has SHA-256 {got[:12]}..., its manifest says "
                        f"{meta['sha256'][:12]}...; re-publish the model (publish_to_store) and retry")
            if target.exists():  # a leftover without config.json: never a usable model
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
