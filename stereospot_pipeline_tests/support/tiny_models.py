"""Tiny randomly initialised transformers depth models, built from a config: the real loading
path without weights that can't be downloaded here."""

from __future__ import annotations

from pathlib import Path


def dinov2(**extra):
    from transformers import Dinov2Config

    return Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        reshape_hidden_states=False, **extra)


def depth_anything(kind: str = "relative"):
    """A ~50k-parameter Depth Anything (V2's architecture) of output ``kind`` ("relative", "metric")."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

    config = DepthAnythingConfig(backbone_config=dinov2(image_size=56, patch_size=14, out_features=["stage1", "stage2"]),
                                 neck_hidden_sizes=[16, 32], reassemble_factors=[4, 2], fusion_hidden_size=16,
                                 head_hidden_size=8, reassemble_hidden_size=32, depth_estimation_type=kind,
                                 max_depth=20)
    return DepthAnythingForDepthEstimation(config)


def saved_depth_anything(path: Path, seed: int = 0) -> Path:
    """A relative Depth Anything written by ``save_pretrained`` into ``path``."""
    import torch

    torch.manual_seed(seed)
    depth_anything("relative").eval().save_pretrained(path)
    return path
