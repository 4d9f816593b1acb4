"""Depth Anything backend, offline: a tiny randomly initialised model stands in for the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stereospot_pipeline.stereo import models
from stereospot_pipeline.stereo.convert import StereoConverter
from stereospot_pipeline.stereo.depth import load_estimator
from stereospot_pipeline.stereo.models import (
    ModelUnavailableError,
    list_models,
    load_learned_depth,
    pull_model,
    resolve_model_dir,
)
from stereospot_pipeline.stereo.params import Layout, StereoParams
from stereospot_pipeline_tests.support.tiny_models import saved_depth_anything


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A folder written by save_pretrained, with a ~50k-parameter Depth Anything."""
    return saved_depth_anything(tmp_path_factory.mktemp("models") / "tiny-da")


@pytest.fixture(autouse=True)
def empty_model_caches(tmp_path, monkeypatch):
    """No test may find real weights on the machine, nor reach the network."""
    monkeypatch.setenv("STEREOSPOT_MODELS_DIR", str(tmp_path / "stereospot-models"))
    monkeypatch.delenv("STEREOSPOT_MODEL_STORE_URL", raising=False)
    monkeypatch.setattr(models, "_hf_cache_snapshot", lambda repo: None)


def test_load_from_folder_shape_range_and_batching(tiny_model_dir):
    est = load_learned_depth(str(tiny_model_dir), short_side=56)
    assert est.name == "tiny-da"
    frames = torch.rand(3, 3, 72, 128)
    out = est(frames)
    # Short side 56 (a multiple of the 14-px patch), long side rounded to the patch grid too.
    assert out.shape == (3, 1, 56, 98)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert (out >= 0).all()  # the relative head ends in a ReLU: nearness is never negative
    per_frame = torch.cat([est(frames[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(out, per_frame, atol=1e-5, rtol=1e-4)


def test_load_estimator_takes_a_params_style_name(tiny_model_dir):
    params = StereoParams(depth_model=str(tiny_model_dir), depth_short_side=56)
    est = load_estimator(params.depth_model, "cpu", params.depth_short_side)
    assert est(torch.rand(1, 3, 64, 64)).shape == (1, 1, 56, 56)


def test_registry_name_resolves_from_the_models_folder(tiny_model_dir, tmp_path):
    import shutil

    installed = tmp_path / "stereospot-models" / "depth-anything-v2-small"
    shutil.copytree(tiny_model_dir, installed)
    assert resolve_model_dir("depth-anything-v2-small") == installed
    assert load_learned_depth("depth-anything-v2-small", short_side=56).name == "depth-anything-v2-small"
    rows = {name: (repo, licence, installed) for name, repo, licence, _, _, installed in list_models()}
    assert rows["depth-anything-v2-small"] == ("depth-anything/Depth-Anything-V2-Small-hf", "Apache-2.0", True)
    assert rows["depth-anything-v2-large"][1:] == ("CC-BY-NC-4.0", False)


def test_missing_model_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(ModelUnavailableError) as err:
        load_estimator("depth-anything-v2-small")
    message = str(err.value)
    assert str(tmp_path / "stereospot-models" / "depth-anything-v2-small") in message
    assert "Hugging Face cache" in message
    assert "depth-anything/Depth-Anything-V2-Small-hf" in message
    assert "stereospot models pull depth-anything-v2-small" in message
    with pytest.raises(ModelUnavailableError, match="not a known name.*config.json"):
        load_estimator(str(tmp_path / "no-such-model"))


def test_pull_without_network_names_the_repo_and_the_folder(tmp_path, monkeypatch):
    # This machine has no route to huggingface.co; force the same failure for machines that do.
    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    dest = tmp_path / "weights"
    with pytest.raises(ModelUnavailableError) as err:
        pull_model("depth-anything-v2-base", dest)
    message = str(err.value)
    assert "depth-anything/Depth-Anything-V2-Base-hf" in message
    assert str(dest) in message
    assert "CC-BY-NC-4.0" in message
    with pytest.raises(ModelUnavailableError, match="unknown depth model"):
        pull_model("midas")


def test_converter_runs_end_to_end_on_the_tiny_model(tiny_model_dir):
    params = StereoParams(depth_model=str(tiny_model_dir), depth_short_side=56, layout=Layout.HALF_SBS,
                          batch_size=2, ema_lookahead=0)
    converter = StereoConverter(params, device=torch.device("cpu"))
    frames = np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    out = converter(frames)
    assert out.shape == (3, 48, 64, 3)
    assert out.dtype == np.uint8
    assert converter.stats.frames == 3
