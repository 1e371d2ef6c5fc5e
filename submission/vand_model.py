"""The VAND challenge kit's model interface around any registered method.

`Model.setup({"few_shot_samples": [k,3,256,256] in [0,1], "dataset_category": str})` resets all
fitted state and fits the method (and, for fusion, its members) on the samples; the kit calls
`torch.manual_seed(seed)` first, and that seed also seeds the method's generator, as in the harness.
`forward(images [b,3,H,W])` returns an object with `.pred_score` [b] and `.anomaly_map` [b,H,W] (or None).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from methods.backbones import FeatureCache
from methods.base import FitContext, Method
from methods.registry import build_config


@dataclass
class ImageBatch:
    """The fields of anomalib's ImageBatch that the VAND evaluator reads."""

    pred_score: torch.Tensor
    anomaly_map: torch.Tensor | None = None


class VandModel(nn.Module):
    """A bundled method behind the VAND kit's `Model` interface; `bundle_dir` holds bundle.json and weights/."""

    bundle_dir: Path

    def __init__(self, device: str | None = None) -> None:
        super().__init__()
        self.bundle = json.loads((Path(self.bundle_dir) / "bundle.json").read_text())
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.weights = {name: Path(self.bundle_dir) / path for name, path in self.bundle["weights"].items()}
        self.features: FeatureCache | None = None
        self.method: Method | None = None

    def weights_url(self, category: str) -> str | None:
        """Weights ship inside the bundle: nothing to download."""
        return None

    def _build(self, spec: str) -> Method:
        entry, config = build_config(spec, self.bundle["preset"])
        return entry.factory(config)

    def setup(self, data: dict[str, Any]) -> None:
        """Forget everything fitted so far and fit on the few-shot samples of one category."""
        support = data["few_shot_samples"].to(self.device)
        category = data["dataset_category"]
        seed = torch.initial_seed()  # the kit's torch.manual_seed(seed), as the harness seeds its cells
        self.features = FeatureCache(self.device, self.weights)
        artifacts = Path(self.bundle_dir) / "artifacts"
        fitted: dict[str, Method] = {}
        contexts: dict[str, FitContext] = {}
        for spec in [*self.bundle["members"], self.bundle["method"]]:
            method = self._build(spec)
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            context = FitContext(self.device, generator, self.features, None, artifacts / self.bundle["dirs"][spec],
                                 dict(fitted), dict(contexts))
            method.fit(support, category=category, context=context)
            fitted[spec], contexts[spec] = method, context
        self.method = fitted[self.bundle["method"]]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> ImageBatch:
        """Image scores (and maps) of a batch; `setup` must have run."""
        if self.method is None:
            raise RuntimeError("Model.forward before Model.setup: call setup with the few-shot samples first")
        prediction = self.method.predict(images.to(self.device))
        return ImageBatch(pred_score=prediction.scores, anomaly_map=prediction.maps)
