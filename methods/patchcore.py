"""Few-shot PatchCore: the baseline every other method is compared with.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022; official code
github.com/amazon-science/patchcore-inspection (`patchcore/common.py`, `patchcore/patchcore.py`); official defaults:
docs/REFERENCE.md, section "PatchCore". What it computes, as the official code does:

- Local features: each backbone level's zero-padded 3x3 neighbourhood (the padded zeros count in the averages) read
  as one C*9 vector and pooled to `pretrain_dim` values by 1-D adaptive average pooling; deeper levels resized
  bilinearly to the first level's grid; the joined levels pooled again to `target_dim`
  (`methods.common.aggregate_official`), so each level gets the same share of the feature.
- Memory: every support patch feature; a test patch's score is its distance to the nearest memory patch.
- Image score: the maximum of the raw patch scores. The anomaly map (patch scores upsampled bilinearly to the input
  size, then Gaussian blur sigma 4) is only for localisation.

Departures from the official code, each with its reason:
- `coreset_ratio` 1.0 (keep every patch; the paper subsamples 10 % / 1 %): with k <= 8 images the memory is small.
- `aggregation=concat` (an option, not the default): anomalib's PatchCore features, so its numbers can be compared
  with anomalib's on the same cells (bench/vs_anomalib.py).
- With every patch kept, each (test image, support image) pair's nearest distances are kept in the run's content
  cache and a cell takes the nearest over its supports: the VAND support sets are nested over k, so a grid computes
  each pair once (the same distances up to float rounding).
- `offline` preset: the bundled Lite0 (levels 2 + 3: 40 + 112 channels) with `pretrain_dim` = `target_dim` = 112,
  the official relation for WideResNet-50-2 (1024 / 1024 = the deeper level's channels; the official code has no
  Lite0 setting). 112 was chosen among 112, 256, 512, 1024 on the procedural dev split (k = 1, 2, 4, 8 x 3 seeds):
  see BENCHMARKS.md, section "Settings chosen on the procedural dev split: PatchCore's Lite0 dimensions, RegAD's
  BatchNorm statistics".
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from methods.backbones import BackboneName, FeatureLevels
from methods.base import FitContext, Prediction
from methods.common import (aggregate_local, aggregate_official, flatten_patches, nearest_distance, nearest_distances,
                            upsample_and_blur)
from methods.options import NonNegativeFloat, PositiveFraction, PositiveInt
from methods.registry import register


@dataclass(frozen=True)
class PatchCoreConfig:
    backbone: BackboneName = "wide_resnet50_2"  # official code: WideResNet-50-2
    levels: FeatureLevels = (2, 3)  # official code: layer2 + layer3
    patch_size: PositiveInt = 3  # official code: 3x3 neighbourhood aggregation
    num_neighbors: PositiveInt = 1  # official code: nearest neighbour
    coreset_ratio: PositiveFraction = 1.0  # paper: 0.1 / 0.01 on full training sets; few-shot keeps all patches
    blur_sigma: NonNegativeFloat = 4.0  # official code: Gaussian sigma 4
    # official code: each level projected to pretrain_dim, then the joined levels to target_dim (each level weighs
    # the same); "concat": anomalib's PatchCore features (3x3 average, zero padding counted, levels' raw channels
    # concatenated: the deeper level weighs more), to compare with anomalib's numbers
    aggregation: Literal["official", "concat"] = "official"
    pretrain_dim: PositiveInt = 1024  # official default for WideResNet-50-2 (`pretrain_embed_dimension`)
    target_dim: PositiveInt = 1024  # official default for WideResNet-50-2 (`target_embed_dimension`)


def greedy_coreset(features: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of `count` rows chosen by greedy k-center selection, started from a seeded random row."""
    start = int(torch.randint(len(features), (1,), generator=generator))
    chosen = [start]
    distances = torch.cdist(features, features[start:start + 1]).squeeze(1)
    for _ in range(count - 1):
        index = int(distances.argmax())
        chosen.append(index)
        distances = torch.minimum(distances, torch.cdist(features, features[index:index + 1]).squeeze(1))
    return torch.tensor(chosen)


class PatchCore:
    """Nearest-neighbour distance of test patches to the support images' patch memory."""

    name = "patchcore"

    def __init__(self, config: PatchCoreConfig) -> None:
        self.config = config
        self.memory: torch.Tensor | None = None
        # with every patch kept: (digest, patches [h*w, C]) of each support image, and the patch grid (h, w)
        self._support_patches: list[tuple[bytes, torch.Tensor]] | None = None
        self._grid: tuple[int, int] = (0, 0)
        self._context: FitContext | None = None

    def _patch_features(self, images: torch.Tensor, digests: list[bytes] | None = None) -> torch.Tensor:
        config = self.config
        maps = self._context.features.get(config.backbone, images, config.levels, digests)
        if config.aggregation == "concat":  # anomalib's computation: [b, sum C_i, h, w]
            return aggregate_local(maps, config.patch_size, count_include_pad=True)
        return aggregate_official(maps, config.patch_size, config.pretrain_dim, config.target_dim)  # [b, target_dim, h, w]

    def fit(self, support: torch.Tensor, *, category: str, context: FitContext) -> None:
        self._context = context
        digests = context.features.store.digests(support)
        features = self._patch_features(support, digests)
        self._grid = tuple(features.shape[-2:])
        patches = flatten_patches(features)
        self._support_patches = None
        if self.config.coreset_ratio < 1.0:
            count = max(1, int(len(patches) * self.config.coreset_ratio))
            patches = patches[greedy_coreset(patches, count, context.generator).to(patches.device)]
        else:
            # each image's own flattened view, not slices of `memory`: the layout decides how the distances' matrix
            # product rounds, and these are the numbers measured (slices move scores by ~1e-5)
            self._support_patches = [(digest, flatten_patches(features[i:i + 1])) for i, digest in enumerate(digests)]
        self.memory = patches

    def _nearest_by_support_image(self, images: torch.Tensor) -> torch.Tensor:
        """Patch scores [b,h,w]: each test patch's nearest distances to every support image (kept in the run's
        content cache per test image, support image and configuration), merged over the cell's support images."""
        store, n, tag = self._context.features.store, self.config.num_neighbors, repr(self.config)
        digests = store.digests(images)
        features: list[torch.Tensor] = []  # the test images' patch features, computed only if a pair is missing

        def distances_to(support_patches: torch.Tensor) -> Callable[[list[int]], list[torch.Tensor]]:
            def compute(indices: list[int]) -> list[torch.Tensor]:
                if not features:
                    features.append(self._patch_features(images, digests))
                nearest = nearest_distances(flatten_patches(features[0][indices]), support_patches, n)
                return [rows.clone() for rows in nearest.view(len(indices), -1, nearest.shape[1])]
            return compute

        per_support = [torch.stack(store.get_many([("patchcore_nearest", tag, test, support) for test in digests],
                                                  distances_to(patches)))
                       for support, patches in self._support_patches]
        merged = torch.cat(per_support, dim=2)  # [b, h*w, n per support image]
        nearest = merged.topk(min(n, merged.shape[2]), dim=2, largest=False).values
        return nearest.mean(dim=2).view(len(images), *self._grid)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        if self._support_patches is not None:
            patch_scores = self._nearest_by_support_image(images)
        else:
            features = self._patch_features(images)
            b, _, h, w = features.shape
            patch_scores = nearest_distance(flatten_patches(features), self.memory, k=self.config.num_neighbors)
            patch_scores = patch_scores.view(b, h, w)
        maps = upsample_and_blur(patch_scores, images.shape[-2:], self.config.blur_sigma)
        return Prediction(scores=patch_scores.flatten(1).max(dim=1).values, maps=maps)

    def info(self) -> dict[str, Any]:
        return {**asdict(self.config), "memory_size": 0 if self.memory is None else len(self.memory)}


@register(
    "patchcore",
    config=PatchCoreConfig,
    # offline: Lite0 levels 2 + 3 have 40 + 112 channels; 112 / 112: the official rule, confirmed on the dev split
    presets={"paper": PatchCoreConfig(),
             "offline": PatchCoreConfig(backbone="lite0", pretrain_dim=112, target_dim=112)},
    summary="few-shot PatchCore: nearest-neighbour distance to the support patch memory (baseline)",
    cheap_fit=True,
    distance_scores=True,
)
def create_patchcore(config: PatchCoreConfig) -> PatchCore:
    return PatchCore(config)
