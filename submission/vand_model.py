"""The VAND challenge kit's model interface around any registered method, as the official evaluator drives it.

The evaluator (cvpr-vand/challenge, src/eval/evaluate.py) builds `Model()` with no arguments, calls `eval()`
and `to(DEVICE)`, then for every (seed, k) on the same instance: `torch.manual_seed(seed)`,
`setup({"few_shot_samples": [k,3,256,256] in [0,1] on DEVICE, "dataset_category": str})`, and feeds the test
set in batches it sizes itself (128 first, halved on CUDA out-of-memory), reading `output.pred_score` next
to labels on DEVICE. So: `setup` forgets everything fitted before and fits the method (and, for fusion, its
members) on the samples' device, with the kit's seed as the cell seed; `forward` scores any batch size in
chunks of `CHUNK` images (memory bounded), and returns scores (and maps, at the input's size) on the input's
device, as anomalib's `ImageBatch` when anomalib is importable.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from methods.features import FeatureCache
from methods.base import Method
from methods.cell import CellSetting, fit_cell
from methods.registry import build_variant, load_builtins
from submission.bundle_plugins import load_bundle_plugins


CHUNK = 16  # images per method call inside one evaluator batch: bounds memory whatever batch size the kit picks


@dataclass
class ImageBatch:
    """The fields of anomalib's ImageBatch that VAND evaluators read; `"anomaly_map" in batch` as an earlier
    evaluator revision tests it."""

    pred_score: torch.Tensor
    anomaly_map: torch.Tensor | None = None

    def __contains__(self, name: str) -> bool:
        return getattr(self, name, None) is not None


def image_batch(images: torch.Tensor, scores: torch.Tensor, maps: torch.Tensor | None) -> Any:
    """anomalib's `ImageBatch` when anomalib is installed (the evaluator's own type), else the minimal record."""
    try:
        from anomalib.data import ImageBatch as AnomalibImageBatch
    except ImportError:
        return ImageBatch(pred_score=scores, anomaly_map=maps)
    return AnomalibImageBatch(image=images, pred_score=scores, anomaly_map=maps)


class CategoryNotServed(ValueError):
    """`setup` on a category the bundle cannot fit: a variant needs a model trained for that category (RegAD's
    meta-trained model) that the bundle does not hold, and a bundle holds no data to train one."""


def check_serves(bundle: dict, category: str) -> None:
    """`CategoryNotServed` naming the category and the ones the bundle serves, when a variant cannot fit it."""
    from methods.regad import artifact_category

    for spec, names in bundle.get("serves", {}).items():
        if artifact_category(category) not in names:
            raise CategoryNotServed(
                f"this bundle cannot serve category {category!r}: {spec} has meta-trained models only for "
                f"{', '.join(names) or 'no category'} (a bundle carries no auxiliary data to train one); "
                f"categories it serves: {', '.join(bundle.get('categories') or []) or 'none'}")


def register_clip_configs(bundle: dict) -> None:
    """Make the CLIP model configs a bundle carries (models open_clip does not know by name) known to the tower
    builder and to the config checks, before any variant is built."""
    if bundle.get("clip_configs"):
        from methods.clip_towers import EXTRA_MODEL_CONFIGS

        for name, config in bundle["clip_configs"].items():
            EXTRA_MODEL_CONFIGS.setdefault(name, config)


class VandModel(nn.Module):
    """A bundled method behind the VAND kit's `Model` interface; `bundle_dir` holds bundle.json and weights/."""

    bundle_dir: Path

    def __init__(self, device: str | None = None) -> None:
        super().__init__()
        self.bundle = json.loads((Path(self.bundle_dir) / "bundle.json").read_text())
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # backbones by name, CLIP towers by open_clip model name: FeatureCache builds both from these files
        self.weights = {name: Path(self.bundle_dir) / path for name, path in self.bundle["weights"].items()}
        register_clip_configs(self.bundle)
        load_builtins(entry_points=False)  # only the code the bundle carries: never an installed plugin's copy
        load_bundle_plugins(Path(self.bundle_dir), self.bundle)  # outside methods: their code ships in the bundle
        self.features: FeatureCache | None = None
        self.method: Method | None = None

    def weights_url(self, category: str) -> str | None:
        """Weights ship inside the bundle: nothing to download."""
        return None

    def setup(self, data: dict[str, Any]) -> None:
        """Forget everything fitted so far and fit on the few-shot samples of one category, on their device."""
        support = data["few_shot_samples"]
        self.device = support.device
        seed = torch.initial_seed()  # the kit's torch.manual_seed(seed), as the harness seeds its cells
        self.method = None
        check_serves(self.bundle, data["dataset_category"])
        self.features = FeatureCache(self.device, self.weights, precision=self.bundle.get("precision", "fp32"))
        setting = CellSetting(data["dataset_category"], seed, self.device, self.features,
                              Path(self.bundle_dir) / "artifacts")
        variants = [build_variant(spec, self.bundle["preset"]) for spec in [*self.bundle["members"], self.bundle["method"]]]
        self.method = fit_cell(variants, support, setting)[self.bundle["method"]].method

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> Any:
        """Image scores [b] (and maps [b,H,W]) of a batch of any size, on the batch's device; `setup` must have run."""
        if self.method is None:
            raise RuntimeError("Model.forward before Model.setup: call setup with the few-shot samples first")
        scores, maps = [], []
        for start in range(0, len(images), CHUNK):
            prediction = self.method.predict(images[start:start + CHUNK].to(self.device))
            scores.append(prediction.scores.float().to(images.device))
            if prediction.maps is not None:
                maps.append(prediction.maps.float().to(images.device))
        return image_batch(images, torch.cat(scores), torch.cat(maps) if maps else None)
