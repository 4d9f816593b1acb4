"""Learned depth: any model ``transformers.AutoModelForDepthEstimation`` loads, strictly offline.

Weights are looked up by registry name in the models folder (``$STEREOSPOT_MODELS_DIR/<name>``,
default ``~/.cache/stereospot/models/<name>``), then in the Hugging Face cache, then (where one is
configured) fetched from the S3 model store (``model_store.py``); any other value is taken as a
folder holding a ``save_pretrained`` model. Downloading from the Hub is a separate, explicit step
(``pull_model``) so conversions never reach the internet.

Models differ in what their raw ``predicted_depth`` means, and the converter needs nearness
(larger = nearer). ``output_kind`` reads it from the model's config:

- relative inverse depth (disparity-like): Depth Anything V1/V2 with ``depth_estimation_type``
  "relative" (and the Distill-Any-Depth weights, which use that architecture), DPT/MiDaS. Used as is.
- canonical inverse depth: Depth Pro. A metric model, but its network predicts inverse depth and
  only ``post_process_depth_estimation`` turns it into metres (1 / x): used as is.
- metric depth (metres): Depth Anything with ``depth_estimation_type`` "metric", ZoeDepth, GLPN,
  TIPSv2-DPT. Nearness = 1 / depth.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch
import torch.nn.functional as F

from stereospot_pipeline.errors import StereospotError
from stereospot_pipeline.stereo.depth import resize_short_side
from stereospot_pipeline.stereo.params import AUTO, CPU_DEPTH_SHORT_SIDE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
# Metric models predict metres; nearer than this is treated as this near (no division by 0).
_MIN_METRIC_DEPTH_M = 1e-3


class OutputKind(str, Enum):
    RELATIVE_INVERSE = "relative inverse depth"
    CANONICAL_INVERSE = "canonical inverse depth"
    METRIC_DEPTH = "metric depth"

    @property
    def is_inverse(self) -> bool:
        return self is not OutputKind.METRIC_DEPTH


def to_nearness(predicted: torch.Tensor, kind: OutputKind) -> torch.Tensor:
    """A model's raw output -> nearness (larger = nearer), order-preserving for inverse kinds and
    order-reversing for metric depth."""
    if kind.is_inverse:
        return predicted
    return 1.0 / predicted.clamp_min(_MIN_METRIC_DEPTH_M)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    repo: str
    licence: str
    params: str
    kind: OutputKind


R, C, M = OutputKind.RELATIVE_INVERSE, OutputKind.CANONICAL_INVERSE, OutputKind.METRIC_DEPTH
REGISTRY = {
    info.name: info
    for info in (
        ModelInfo("depth-anything-v2-small", "depth-anything/Depth-Anything-V2-Small-hf", "Apache-2.0", "24.8M", R),
        ModelInfo("depth-anything-v2-base", "depth-anything/Depth-Anything-V2-Base-hf", "CC-BY-NC-4.0", "97.5M", R),
        ModelInfo("depth-anything-v2-large", "depth-anything/Depth-Anything-V2-Large-hf", "CC-BY-NC-4.0", "335.3M", R),
        ModelInfo("distill-any-depth-small", "xingyang1/Distill-Any-Depth-Small-hf", "MIT", "24.8M", R),
        ModelInfo("depth-anything-small", "LiheYoung/depth-anything-small-hf", "Apache-2.0", "24.8M", R),
        ModelInfo("depth-anything-large", "LiheYoung/depth-anything-large-hf", "Apache-2.0", "335.3M", R),
        ModelInfo("dpt-hybrid-midas", "Intel/dpt-hybrid-midas", "Apache-2.0", "123M", R),
        ModelInfo("dpt-large", "Intel/dpt-large", "Apache-2.0", "343M", R),
        ModelInfo("depth-anything-v2-metric-indoor-small",
                  "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf", "Apache-2.0", "24.8M", M),
        ModelInfo("depth-anything-v2-metric-outdoor-small",
                  "depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf", "Apache-2.0", "24.8M", M),
        ModelInfo("zoedepth-nyu-kitti", "Intel/zoedepth-nyu-kitti", "MIT", "345M", M),
        ModelInfo("depth-pro", "apple/DepthPro-hf", "Apple-AMLR (research only)", "952M", C),
    )
}
# What ``depth_model="auto"`` takes, best first: general-purpose relative models under licences
# that allow commercial use. Metric models are trained for one kind of scene (indoor or driving)
# and non-commercial weights must be chosen knowingly, by name.
AUTO_ORDER = ("depth-anything-v2-small", "distill-any-depth-small", "depth-anything-small",
              "dpt-hybrid-midas", "dpt-large")
RECOMMENDED = AUTO_ORDER[0]
PULL_HINT = f"stereospot models pull {RECOMMENDED}"


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
    return (f"run `stereospot models pull {info.name}` ({info.repo}, {info.licence}) on a machine with "
            f"internet access (or `stereospot_pipeline.stereo.models.pull_model({info.name!r})`, or "
            f"`hf download {info.repo} --local-dir {dest}`) and copy the folder to {dest}")


def _installed_dir(info: ModelInfo) -> Path | None:
    """The local folder of a registry model's weights, fetching it from the model store (when one
    is configured) into the models folder; None where it is nowhere."""
    local = models_dir() / info.name
    if _is_model_dir(local):
        return local
    cached = _hf_cache_snapshot(info.repo)
    if cached is not None and _is_model_dir(cached):
        return cached
    from stereospot_pipeline.stereo.model_store import fetch_from_store

    fetched = fetch_from_store(info.name, models_dir())
    return fetched if fetched is not None and _is_model_dir(fetched) else None


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
    found = _installed_dir(info)
    if found is not None:
        return found
    from huggingface_hub.constants import HF_HUB_CACHE

    local = models_dir() / info.name
    raise ModelUnavailableError(
        f"depth model {name!r} is not installed; searched {local} and the Hugging Face cache "
        f"{HF_HUB_CACHE} (repo {info.repo}). To install it, {_how_to_get(info, local)}")


def is_installed(name: str) -> bool:
    try:
        resolve_model_dir(name)
        return True
    except ModelUnavailableError:
        return False


@dataclass(frozen=True)
class DepthChoice:
    """What ``depth_model`` resolved to: the model used and, on a fallback, how to do better."""

    requested: str
    model: str
    hint: str | None = None

    def describe(self) -> str:
        line = f"depth model: {self.model}"
        if self.requested == AUTO:
            line += " (auto)"
        return line + (f"; {self.hint}" if self.hint else "")


def upgrade_hint(model: str) -> str | None:
    """For a conversion that used the weight-free estimator: the command that installs a learned one."""
    return f"no learned depth model installed; for better depth run `{PULL_HINT}`" if model.startswith("heuristic") else None


def choose_model(requested: str) -> DepthChoice:
    """``depth_model`` -> the concrete model a conversion uses. "auto" takes the first installed
    model of ``AUTO_ORDER``, else the weight-free estimator with the command that installs a
    learned one. Any other value is kept as given (loading it reports what is missing)."""
    if requested != AUTO:
        return DepthChoice(requested, requested)
    for name in AUTO_ORDER:
        if is_installed(name):
            return DepthChoice(AUTO, name)
    return DepthChoice(AUTO, "heuristic", hint=upgrade_hint("heuristic"))


def list_models() -> list[tuple[str, str, str, str, str, bool]]:
    """Rows (name, repo, licence, params, output kind, installed) for every registry entry.
    Only local places are searched (a listing never downloads from the model store)."""
    rows = []
    for info in REGISTRY.values():
        local = _is_model_dir(models_dir() / info.name) or _hf_cache_snapshot(info.repo) is not None
        rows.append((info.name, info.repo, info.licence, info.params, info.kind.value, local))
    return rows


def pull_model(name: str, dest: str | Path | None = None, progress: type | None = None) -> Path:
    """Download a registry model into ``dest`` (default ``models_dir()/<name>``) and return it.
    ``progress``: a tqdm-compatible class for the download bars (``huggingface_hub``'s
    ``tqdm_class``).

    The only function here that uses the network; failures say what to fetch and where to put it.
    """
    info = REGISTRY.get(name)
    if info is None:
        raise ModelUnavailableError(f"unknown depth model {name!r}; known: {', '.join(REGISTRY)}")
    target = Path(dest) if dest is not None else models_dir() / info.name
    from huggingface_hub import snapshot_download

    kwargs = {"tqdm_class": progress} if progress is not None else {}
    try:
        snapshot_download(info.repo, local_dir=target, **kwargs)
    except Exception as exc:  # network, proxy, auth and disk errors all end the same way for a user
        raise ModelUnavailableError(
            f"could not download {info.repo} to {target} ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            f"Without network access, {_how_to_get(info, target)}") from exc
    return target


@dataclass(frozen=True)
class InputSpec:
    """How a model wants its pixels: normalisation, side multiple, or one fixed square size."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    multiple: int = 1
    square: int | None = None  # the input is resized to square x square (aspect not kept)
    cuda_short_side: int = 384  # working resolution on a GPU, unless overridden


def output_kind(config) -> OutputKind:
    """What a transformers depth model's raw ``predicted_depth`` is, from its config."""
    kind = config.model_type
    if kind in ("depth_anything", "prompt_depth_anything"):
        return M if getattr(config, "depth_estimation_type", "relative") == "metric" else R
    if kind == "dpt":
        return R
    if kind == "depth_pro":
        return C
    if kind in ("zoedepth", "glpn", "tipsv2_dpt"):
        return M
    raise ModelUnavailableError(
        f"depth model type {kind!r} is not supported: its output is not scene depth this converter "
        "knows how to read (supported: depth_anything, prompt_depth_anything, dpt, depth_pro, zoedepth, "
        "glpn, tipsv2_dpt)")


def input_spec(config, folder: Path) -> InputSpec:
    """The preprocessing a model was trained with: mean/std from the folder's
    ``preprocessor_config.json`` when it has one (Hub snapshots do), else the architecture's."""
    kind = config.model_type
    if kind in ("depth_anything", "prompt_depth_anything"):
        patch = getattr(config.backbone_config, "patch_size", 14)
        # iw3 runs Depth Anything at 392 on GPUs: near its 518 training size at half the cost.
        spec = InputSpec(IMAGENET_MEAN, IMAGENET_STD, multiple=patch, cuda_short_side=392)
    elif kind == "dpt":
        backbone = config.backbone_config
        if backbone is None or config.is_hybrid:
            # DPT's own ViT reshapes its tokens into a square grid: square inputs only.
            spec = InputSpec(HALF, HALF, square=config.image_size)
        else:
            spec = InputSpec(HALF, HALF, multiple=backbone.patch_size)
    elif kind == "depth_pro":
        # Depth Pro tiles a fixed-size image (1536 for the released weights) into patches.
        spec = InputSpec(HALF, HALF, square=round(config.patch_size / min(config.scaled_images_ratios)))
    elif kind == "zoedepth":
        spec = InputSpec(HALF, HALF, multiple=32)
    else:
        spec = InputSpec(IMAGENET_MEAN, IMAGENET_STD, multiple=32, cuda_short_side=480)
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        data = json.loads(pre.read_text())
        if data.get("do_normalize", True) is False:
            spec = InputSpec((0.0,) * 3, (1.0,) * 3, spec.multiple, spec.square, spec.cuda_short_side)
        elif "image_mean" in data and "image_std" in data:
            spec = InputSpec(tuple(data["image_mean"]), tuple(data["image_std"]), spec.multiple, spec.square,
                             spec.cuda_short_side)
    return spec


class LearnedDepth:
    """Estimator (see ``depth.py``) around a transformers depth model.

    frames [B,3,H,W] 0..1 -> nearness [B,1,h,w] with min(h, w) ~= short_side (the input grid the
    model works on, or for square-input models the frame's aspect at that short side).
    """

    def __init__(self, model: torch.nn.Module, name: str, device: torch.device, short_side: int,
                 spec: InputSpec, kind: OutputKind):
        self.model, self.name, self.device = model, name, device
        self.short_side, self.spec, self.kind = short_side, spec, kind
        self.mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
        # Half precision is the fast path on GPUs only; on CPU it is slower than fp32.
        self.autocast_dtype = None
        if device.type == "cuda":
            self.autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.to(self.device, torch.float32)
        if self.spec.square:
            x = F.interpolate(frames, size=(self.spec.square,) * 2, mode="bilinear", align_corners=False)
        else:
            x = resize_short_side(frames, self.short_side, multiple=self.spec.multiple)
        x = (x - self.mean) / self.std
        if self.autocast_dtype is None:
            depth = self.model(pixel_values=x).predicted_depth
        else:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                depth = self.model(pixel_values=x).predicted_depth
        # Metric depth is inverted in float32: 1/x of a half-precision value loses the far range.
        nearness = to_nearness(depth.unsqueeze(1).float(), self.kind)
        if self.spec.square:
            size = resize_short_side(frames[:1, :1], self.short_side).shape[-2:]
            nearness = F.interpolate(nearness, size=size, mode="bilinear", align_corners=False)
        return nearness


def load_learned_depth(name: str, device: torch.device | str = "cpu", short_side: int | None = None) -> LearnedDepth:
    """An estimator from a registry name or a local folder, without network access.
    ``short_side`` None: the model's own working size on CUDA, 224 on CPU."""
    from transformers import AutoModelForDepthEstimation

    path = resolve_model_dir(name)
    device = torch.device(device)
    model = AutoModelForDepthEstimation.from_pretrained(path, local_files_only=True)
    kind = output_kind(model.config)
    spec = input_spec(model.config, path)
    if short_side is None:
        short_side = spec.cuda_short_side if device.type == "cuda" else CPU_DEPTH_SHORT_SIDE
    model.to(device).eval()
    return LearnedDepth(model, name=name if name in REGISTRY else path.name, device=device,
                        short_side=short_side, spec=spec, kind=kind)
