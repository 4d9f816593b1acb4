"""Every transformers depth architecture, read the right way round: a tiny randomly initialised
model of each, built from a config, saved with save_pretrained and loaded through the user path
(a registry name in the models folder, or a folder given as ``depth_model``)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from stereospot_pipeline.stereo import models
from stereospot_pipeline.stereo.convert import StereoConverter
from stereospot_pipeline.stereo.depth import HeuristicDepth, load_estimator
from stereospot_pipeline.stereo.models import (
    PULL_HINT,
    OutputKind,
    choose_model,
    list_models,
    load_learned_depth,
    to_nearness,
)
from stereospot_pipeline.stereo.params import Layout, StereoParams
from stereospot_pipeline_tests.support.tiny_models import depth_anything, dinov2


def _dpt():
    from transformers import DPTConfig, DPTForDepthEstimation

    return DPTForDepthEstimation(DPTConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=64,
        patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 16, 32],
        reassemble_factors=[4, 2, 1, 0.5], fusion_hidden_size=16, head_in_index=-1))


def _zoedepth():
    from transformers import BeitConfig, ZoeDepthConfig, ZoeDepthForDepthEstimation

    beit = BeitConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                      image_size=64, patch_size=16, out_indices=[1, 2, 3, 4], use_relative_position_bias=True,
                      reshape_hidden_states=False)
    return ZoeDepthForDepthEstimation(ZoeDepthConfig(
        backbone_config=beit, neck_hidden_sizes=[8, 16, 16, 32], fusion_hidden_size=16,
        reassemble_factors=[4, 2, 1, 0.5], bottleneck_features=16, num_relative_features=8, bin_embedding_dim=16,
        num_attractors=[4, 4, 2, 2],
        bin_configurations=[{"n_bins": 8, "min_depth": 0.001, "max_depth": 10.0, "name": "nyu"}]))


def _depth_pro():
    from transformers import DepthProConfig, DepthProForDepthEstimation

    def dino():
        return dinov2(image_size=32, patch_size=8)

    return DepthProForDepthEstimation(DepthProConfig(
        patch_size=32, fusion_hidden_size=16, intermediate_hook_ids=[1, 0], intermediate_feature_dims=[16, 16],
        scaled_images_ratios=[0.5, 1], scaled_images_overlap_ratios=[0.0, 0.5], scaled_images_feature_dims=[32, 16],
        image_model_config=dino(), patch_model_config=dino(), fov_model_config=dino(), use_fov_model=False))


# architecture -> (builder, the kind its config must map to)
ARCHITECTURES = {
    "depth-anything-relative": (lambda: depth_anything("relative"), OutputKind.RELATIVE_INVERSE),
    "depth-anything-metric": (lambda: depth_anything("metric"), OutputKind.METRIC_DEPTH),
    "dpt": (_dpt, OutputKind.RELATIVE_INVERSE),
    "zoedepth": (_zoedepth, OutputKind.METRIC_DEPTH),
    "depth-pro": (_depth_pro, OutputKind.CANONICAL_INVERSE),
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("arch")
    dirs = {}
    for name, (build, _) in ARCHITECTURES.items():
        torch.manual_seed(0)
        dirs[name] = root / name
        build().eval().save_pretrained(dirs[name])
    return dirs


@pytest.fixture(autouse=True)
def empty_model_caches(tmp_path, monkeypatch):
    """No test may find real weights on the machine, nor reach the network."""
    monkeypatch.setenv("STEREOSPOT_MODELS_DIR", str(tmp_path / "stereospot-models"))
    monkeypatch.delenv("STEREOSPOT_MODEL_STORE_URL", raising=False)
    monkeypatch.setattr(models, "_hf_cache_snapshot", lambda repo: None)


def test_nearness_mapping_keeps_order_for_inverse_and_reverses_metric_depth():
    # Three surfaces at known distances: 1 m (near), 4 m, 16 m (far).
    metres = torch.tensor([1.0, 4.0, 16.0]).view(1, 1, 1, 3)
    near = to_nearness(metres, OutputKind.METRIC_DEPTH)
    assert near[..., 0] > near[..., 1] > near[..., 2]  # the nearest surface gets the largest value
    torch.testing.assert_close(near, 1 / metres)
    assert float(to_nearness(torch.zeros(1), OutputKind.METRIC_DEPTH)) == pytest.approx(1e3)  # no inf
    disparity = 1 / metres  # inverse depth already orders near > far
    for kind in (OutputKind.RELATIVE_INVERSE, OutputKind.CANONICAL_INVERSE):
        assert torch.equal(to_nearness(disparity, kind), disparity)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_each_architecture_loads_from_a_folder_and_reads_the_right_way_round(model_dirs, arch):
    from transformers import AutoModelForDepthEstimation

    est = load_learned_depth(str(model_dirs[arch]), "cpu", short_side=64)
    assert est.kind is ARCHITECTURES[arch][1]
    frames = torch.rand(2, 3, 64, 96)
    near = est(frames)
    assert near.shape[:2] == (2, 1) and torch.isfinite(near).all()
    assert min(near.shape[-2:]) == pytest.approx(64, abs=16) and near.shape[-1] > near.shape[-2]  # aspect kept
    # The same raw output straight from transformers: nearness is it (inverse kinds) or 1/it.
    raw_model = AutoModelForDepthEstimation.from_pretrained(model_dirs[arch], local_files_only=True).eval()
    if est.spec.square:
        x = torch.nn.functional.interpolate(frames, size=(est.spec.square,) * 2, mode="bilinear", align_corners=False)
    else:
        x = torch.nn.functional.interpolate(frames, size=near.shape[-2:], mode="bilinear", align_corners=False)
    with torch.inference_mode():
        raw = raw_model(pixel_values=(x - est.mean) / est.std).predicted_depth.unsqueeze(1)
    expected = raw if est.kind.is_inverse else 1 / raw.clamp_min(1e-3)
    if est.spec.square:
        expected = torch.nn.functional.interpolate(expected, size=near.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(near, expected, atol=1e-5, rtol=1e-4)


def test_every_architecture_converts_a_clip_from_the_models_folder(model_dirs, tmp_path):
    for arch in ARCHITECTURES:
        shutil.copytree(model_dirs[arch], tmp_path / "stereospot-models" / arch)
        params = StereoParams(depth_model=str(tmp_path / "stereospot-models" / arch), depth_short_side=64,
                              layout=Layout.HALF_SBS, ema_lookahead=0)
        converter = StereoConverter(params, device=torch.device("cpu"))
        frames = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
        assert converter(frames).shape == (2, 48, 64, 3), arch


def test_auto_takes_the_best_installed_model_else_the_heuristic_with_the_pull_command(model_dirs, tmp_path):
    choice = choose_model("auto")
    assert choice.model == "heuristic"
    assert PULL_HINT in choice.describe() == (
        f"depth model: heuristic (auto); no learned depth model installed; for better depth run `{PULL_HINT}`")
    assert PULL_HINT == "stereospot models pull depth-anything-v2-small"
    assert isinstance(load_estimator("auto"), HeuristicDepth)
    folder = tmp_path / "stereospot-models"
    shutil.copytree(model_dirs["dpt"], folder / "dpt-large")
    assert choose_model("auto").model == "dpt-large"
    shutil.copytree(model_dirs["depth-anything-relative"], folder / "depth-anything-v2-small")
    choice = choose_model("auto")
    assert (choice.model, choice.hint) == ("depth-anything-v2-small", None)
    assert load_estimator("auto", "cpu").name == "depth-anything-v2-small"
    # A metric model alone is never picked by auto (trained for one kind of scene).
    shutil.rmtree(folder / "dpt-large")
    shutil.rmtree(folder / "depth-anything-v2-small")
    shutil.copytree(model_dirs["zoedepth"], folder / "zoedepth-nyu-kitti")
    assert choose_model("auto").model == "heuristic"
    assert choose_model("zoedepth-nyu-kitti").model == "zoedepth-nyu-kitti"


def test_depth_resolution_by_device(model_dirs):
    assert StereoParams().depth_short_side is None and StereoParams().depth_model == "auto"
    assert load_learned_depth(str(model_dirs["depth-anything-relative"]), "cpu").short_side == 224
    assert load_learned_depth(str(model_dirs["depth-anything-relative"]), "cpu", 112).short_side == 112
    spec = load_learned_depth(str(model_dirs["depth-anything-relative"]), "cpu").spec
    assert spec.cuda_short_side == 392 and spec.multiple == 14


def test_models_list_names_licences_and_kinds():
    rows = {name: (licence, kind, installed) for name, _, licence, _, kind, installed in list_models()}
    assert rows["depth-anything-v2-small"] == ("Apache-2.0", "relative inverse depth", False)
    assert rows["depth-anything-v2-large"][0] == "CC-BY-NC-4.0"
    assert rows["zoedepth-nyu-kitti"][1] == rows["depth-anything-v2-metric-indoor-small"][1] == "metric depth"
    assert rows["depth-pro"][1] == "canonical inverse depth"
    assert rows["distill-any-depth-small"][0] == "MIT"
