"""Learned depth: Depth Anything V2 through transformers, loaded strictly offline.

Weights are looked up by registry name in the models folder (``$STEREOSPOT_MODELS_DIR/<name>``,
default ``~/.cache/stereospot/models/<name>``), then in the Hugging Face cache; any other value is
taken as a folder holding a ``save_pretrained`` model. Downloading is a separate, explicit step
(``pull_model``) so conversions never reach the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from stereospot_pipeline.errors import StereospotError
from stereospot_pipeline.stereo.depth import resize_short_side

# Depth Anything's DINOv2 backbone works on 14-px patches.
PATCH = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    repo: str
    licence: str
    params: str


REGISTRY = {
    info.name: info
    for info in (
        ModelInfo("depth-anything-v2-small", "depth-anything/Depth-Anything-V2-Small-hf", "Apache-2.0", "24.8M"),
        ModelInfo("depth-anything-v2-base", "depth-anything/Depth-Anything-V2-Base-hf", "CC-BY-NC-4.0", "97.5M"),
        ModelInfo("depth-anything-v2-large", "depth-anything/Depth-Anything-V2-Large-hf", "CC-BY-NC-4.0", "335.3M"),
    )
}


class ModelUnavailableError(StereospotError):
    """Weights cannot be found locally or downloaded; the message says where to put them."""


def models_dir() -> Path:
    """Folder holding one sub-folder of weights per registry name."""
    return Path(os.environ.get("STEREOSPOT_MODELS_DIR") or Path.home() / ".cache" / "stereospot" / "models")


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def _hf_cache_snapshot(repo: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def _how_to_get(info: ModelInfo, dest: Path) -> str:
    return (f"download {info.repo!r} ({info.licence}) with `stereospot_pipeline.stereo.models.pull_model"
            f"({info.name!r})` on a machine with internet access, or `hf download {info.repo} --local-dir "
            f"{dest}`, and copy the folder to {dest}")


def resolve_model_dir(name: str) -> Path:
    """The local folder of weights for a registry name or a folder path. Raises
    ``ModelUnavailableError`` naming every place searched and how to get the weights."""
    info = REGISTRY.get(name)
    if info is None:
        path = Path(name).expanduser()
        if _is_model_dir(path):
            return path
        known = ", ".join(REGISTRY)
        raise ModelUnavailableError(
            f"depth model {name!r}: not a known name ({known}) and {path} is not a folder with a "
            "config.json (a folder written by save_pretrained)")
    local = models_dir() / info.name
    if _is_model_dir(local):
        return local
    cached = _hf_cache_snapshot(info.repo)
    if cached is not None and _is_model_dir(cached):
        return cached
    from huggingface_hub.constants import HF_HUB_CACHE

    raise ModelUnavailableError(
        f"depth model {name!r} is not installed; searched {local} and the Hugging Face cache "
        f"{HF_HUB_CACHE} (repo {info.repo}). To install it, {_how_to_get(info, local)}")


def list_models() -> list[tuple[str, str, str, str, bool]]:
    """Rows (name, repo, licence, params, installed) for every registry entry."""
    rows = []
    for info in REGISTRY.values():
        try:
            resolve_model_dir(info.name)
            installed = True
        except ModelUnavailableError:
            installed = False
        rows.append((info.name, info.repo, info.licence, info.params, installed))
    return rows


def pull_model(name: str, dest: str | Path | None = None) -> Path:
    """Download a registry model into ``dest`` (default ``models_dir()/<name>``) and return it.

    The only function here that uses the network; failures say what to fetch and where to put it.
    """
    info = REGISTRY.get(name)
    if info is None:
        raise ModelUnavailableError(f"unknown depth model {name!r}; known: {', '.join(REGISTRY)}")
    target = Path(dest) if dest is not None else models_dir() / info.name
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(info.repo, local_dir=target)
    except Exception as exc:  # network, proxy, auth and disk errors all end the same way for a user
        raise ModelUnavailableError(
            f"could not download {info.repo} to {target} ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            f"Without network access, {_how_to_get(info, target)}") from exc
    return target


class DepthAnything:
    """Estimator (see ``depth.py``) around a transformers depth model.

    frames [B,3,H,W] 0..1 -> relative inverse depth [B,1,h,w] (DA-V2 predicts nearness directly),
    with min(h, w) ~= short_side rounded to the 14-px patch grid.
    """

    def __init__(self, model: torch.nn.Module, name: str, device: torch.device, short_side: int):
        self.model = model
        self.name = name
        self.device = device
        self.short_side = short_side
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        # Half precision is the fast path on GPUs only; on CPU it is slower than fp32.
        self.autocast_dtype = None
        if device.type == "cuda":
            self.autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        x = resize_short_side(frames.to(self.device, torch.float32), self.short_side, multiple=PATCH)
        x = (x - self.mean) / self.std
        if self.autocast_dtype is None:
            depth = self.model(pixel_values=x).predicted_depth
        else:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                depth = self.model(pixel_values=x).predicted_depth
        return depth.unsqueeze(1).float()


def load_depth_anything(name: str, device: torch.device | str = "cpu", short_side: int = 224) -> DepthAnything:
    """A Depth Anything estimator from a registry name or a local folder, without network access."""
    from transformers import AutoModelForDepthEstimation

    path = resolve_model_dir(name)
    device = torch.device(device)
    model = AutoModelForDepthEstimation.from_pretrained(path, local_files_only=True)
    model.to(device).eval()
    return DepthAnything(model, name=name if name in REGISTRY else path.name,
                         device=device, short_side=short_side)
