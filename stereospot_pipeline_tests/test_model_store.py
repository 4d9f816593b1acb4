"""The S3 model store against a real S3 protocol server (moto on 127.0.0.1): a GPU worker
fetches weights once, verified, and concurrent tasks on one host never see half a model."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import pytest
import torch

from stereospot_pipeline.stereo import models
from stereospot_pipeline.stereo.model_store import ModelStoreError, fetch_from_store, publish_to_store
from stereospot_pipeline.stereo.models import choose_model, load_learned_depth, resolve_model_dir
from stereospot_pipeline.storage.s3 import s3_client
from stereospot_pipeline_tests.support.s3 import make_buckets
from stereospot_pipeline_tests.support.tiny_models import saved_depth_anything

BUCKET = "model-store"
URL = f"s3://{BUCKET}/weights"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return saved_depth_anything(tmp_path_factory.mktemp("published") / "tiny")


@pytest.fixture
def store(s3_endpoint, monkeypatch, tmp_path, tiny_model):
    make_buckets(s3_endpoint, BUCKET)
    monkeypatch.setenv("STEREOSPOT_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("STEREOSPOT_MODEL_STORE_URL", URL)
    monkeypatch.setenv("STEREOSPOT_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setattr(models, "_hf_cache_snapshot", lambda repo: None)
    publish_to_store(tiny_model, "depth-anything-v2-small")
    return s3_endpoint


def test_a_bare_worker_fetches_the_model_once_and_auto_uses_it(store, tmp_path, tiny_model, monkeypatch):
    assert not (tmp_path / "models").exists()
    assert choose_model("auto").model == "depth-anything-v2-small"  # found in the store
    folder = resolve_model_dir("depth-anything-v2-small")
    assert folder == tmp_path / "models" / "depth-anything-v2-small"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in tiny_model.iterdir())
    est = load_learned_depth("depth-anything-v2-small", "cpu", 56)
    assert est(torch.rand(1, 3, 56, 56)).shape == (1, 1, 56, 56)
    # Fetched once: the next lookup is local even with the store gone.
    monkeypatch.setenv("STEREOSPOT_MODEL_STORE_URL", "s3://no-such-bucket/x")
    assert resolve_model_dir("depth-anything-v2-small") == folder
    assert fetch_from_store("no-such-model", tmp_path / "models", URL) is None


def test_a_corrupt_object_is_refused_and_leaves_nothing_behind(store, tmp_path):
    client = s3_client(store)
    client.put_object(Bucket=BUCKET, Key="weights/depth-anything-v2-small/config.json", Body=b"{}")
    with pytest.raises(ModelStoreError, match="config.json has SHA-256.*re-publish"):
        fetch_from_store("depth-anything-v2-small", tmp_path / "models")
    assert [p.name for p in (tmp_path / "models").iterdir()] == [".depth-anything-v2-small.lock"]


def test_concurrent_tasks_on_one_host_share_one_verified_copy(store, tmp_path):
    code = ("import sys; from pathlib import Path; from stereospot_pipeline.stereo.model_store import "
            "fetch_from_store; print(fetch_from_store('depth-anything-v2-small', Path(sys.argv[1])))")
    env = {**os.environ}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "models")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    target = tmp_path / "models" / "depth-anything-v2-small"
    assert {out.strip() for out, _ in outputs} == {str(target)}
    # One folder, no partial downloads left over, every file as published.
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [".depth-anything-v2-small.lock",
                                                                      "depth-anything-v2-small"]
    from transformers import AutoModelForDepthEstimation

    AutoModelForDepthEstimation.from_pretrained(target, local_files_only=True)


def test_cli_publishes_an_installed_model_and_lists_what_auto_uses(s3_endpoint, tmp_path, tiny_model, monkeypatch):
    import shutil

    make_buckets(s3_endpoint, BUCKET)
    exe = shutil.which("stereospot") or str(Path(sys.executable).with_name("stereospot"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEREOSPOT_")}
    env.update(STEREOSPOT_MODELS_DIR=str(tmp_path / "here"), STEREOSPOT_S3_ENDPOINT_URL=s3_endpoint,
               HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    listed = subprocess.run([exe, "models", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "metric depth" in listed.stdout and "canonical inverse depth" in listed.stdout
    assert "depth model: heuristic (auto)" in listed.stdout
    assert "stereospot models pull depth-anything-v2-small" in listed.stdout
    missing = subprocess.run([exe, "models", "publish", "depth-anything-v2-small", "--store", URL], env=env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "stereospot models pull depth-anything-v2-small" in missing.stderr
    shutil.copytree(tiny_model, tmp_path / "here" / "depth-anything-v2-small")
    done = subprocess.run([exe, "models", "publish", "depth-anything-v2-small", "--store", URL], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("STEREOSPOT_S3_ENDPOINT_URL", s3_endpoint)
    fetched = fetch_from_store("depth-anything-v2-small", tmp_path / "worker", URL)
    assert sorted(p.name for p in fetched.iterdir()) == sorted(p.name for p in tiny_model.iterdir())
    listed = subprocess.run([exe, "models", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert "depth model: depth-anything-v2-small (auto)" in listed.stdout
