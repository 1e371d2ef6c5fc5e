"""The run's networks and what they compute from image content, shared by every cell and method.

`FeatureCache` builds each backbone extractor and CLIP tower once per run and keeps their outputs in one
byte-bounded `ContentCache`; methods reach it as `FitContext.features`.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from methods.backbones import FeatureExtractor, load_backbone
from methods.cache import ContentCache
from methods.clip_towers import ClipTower, build_tower
from methods.common import autocast_dtype, mixed_precision

DEFAULT_CACHE_BYTES = 4 * 2**30  # our choice: the run's content cache; one LOCO category's ~330 test images
# at 256 px take ~1 GiB with WideResNet-50-2 levels 2+3 (3 MiB an image)


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
        self._towers: dict[tuple[str, str], ClipTower] = {}

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

    def clip_tower(self, model: str, tag: str) -> ClipTower:
        """The open_clip tower of a model/tag (weights from `weights[model]` or the search order), built once;
        its encodings are kept in `store`."""
        if (model, tag) not in self._towers:
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
        digests = digests or self.store.digests(images)
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
