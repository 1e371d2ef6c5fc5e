"""Few-shot PatchCore: the baseline every other method is compared with.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022; official code
amazon-science/patchcore-inspection. Locally aggregated mid-level backbone features of the k support
images form a memory bank; a test patch's score is its distance to the nearest memory patch, the
map is upsampled and blurred (sigma 4), and the image score is the map's maximum.

Differences from the paper: with k <= 8 support images the memory is small, so the greedy coreset
is optional (`coreset_ratio`, default 1.0 = keep every patch), and features are not projected to a
fixed dimension (the official code's adaptive-average-pool projection only matters for memory size).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from methods.backbones import BackboneName, FeatureLevels
from methods.base import FitContext, Prediction
from methods.common import aggregate_local, flatten_patches, nearest_distance, upsample_and_blur
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
        self._context: FitContext | None = None

    def _patch_features(self, images: torch.Tensor) -> torch.Tensor:
        maps = self._context.features.get(self.config.backbone, images, self.config.levels)
        return aggregate_local(maps, self.config.patch_size)  # [b, C, h, w]

    def fit(self, support: torch.Tensor, *, category: str, context: FitContext) -> None:
        self._context = context
        patches = flatten_patches(self._patch_features(support))
        if self.config.coreset_ratio < 1.0:
            count = max(1, int(len(patches) * self.config.coreset_ratio))
            patches = patches[greedy_coreset(patches, count, context.generator).to(patches.device)]
        self.memory = patches

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        features = self._patch_features(images)
        b, _, h, w = features.shape
        patch_scores = nearest_distance(flatten_patches(features), self.memory, k=self.config.num_neighbors)
        maps = upsample_and_blur(patch_scores.view(b, h, w), images.shape[-2:], self.config.blur_sigma)
        return Prediction(scores=maps.flatten(1).max(dim=1).values, maps=maps)

    def info(self) -> dict[str, Any]:
        return {**asdict(self.config), "memory_size": 0 if self.memory is None else len(self.memory)}


@register(
    "patchcore",
    config=PatchCoreConfig,
    presets={"paper": PatchCoreConfig(), "offline": PatchCoreConfig(backbone="lite0")},
    summary="few-shot PatchCore: nearest-neighbour distance to the support patch memory (baseline)",
)
def create_patchcore(config: PatchCoreConfig) -> PatchCore:
    return PatchCore(config)
