"""One anomalib image model behind the harness's method protocol: built with the preset's backbone and layers,
fitted on the support batch by its own `training_step` + `fit()`, scored by its torch model in eval mode."""
from __future__ import annotations

import dataclasses
import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import Compose, Normalize, Resize

from methods.base import FitContext, Prediction


def copy_backbone_weights(extractor: Any, model: torch.nn.Module, layers: list[str]) -> int:
    """Copy the harness's loaded backbone (`FitContext.features.extractor(name).model`, a timm network) into
    anomalib's `TimmFeatureExtractor` of the same architecture; returns the tensors copied. Every tensor on the way
    to the deepest layer used must come from the harness's network (a missing one is an error, never a random
    layer); later stages, which the harness does not load and anomalib computes but does not return, keep their
    initial values."""
    target = model.feature_extractor.feature_extractor
    source = extractor.model.state_dict()
    order = {name: index for index, (name, _) in enumerate(target.named_modules())}
    last = max(order[layer] for layer in layers)
    deepest = max(layers, key=order.__getitem__)

    def after_the_layers(key: str) -> bool:
        module = key.rsplit(".", 1)[0]
        return order.get(module, -1) > last and not module.startswith(deepest + ".")

    missing = [key for key in target.state_dict() if key not in source and not after_the_layers(key)]
    if missing:
        raise ValueError(f"the harness's backbone lacks {len(missing)} of the tensors anomalib's layers need (e.g. "
                         f"{missing[0]}); choose layers the harness loads (its levels 1-3)")
    present = {key: value for key, value in source.items() if key in target.state_dict()}
    target.load_state_dict(present, strict=False)
    return len(present)


def keep_every_patch(model: Any) -> None:
    """PatchCore's memory bank at coreset ratio 1: every collected patch. anomalib's `subsample_embedding` would
    return the same patches in another order (which no nearest-neighbour search sees) after a k-center greedy pass
    whose memory grew with the square of the patch count in the harness's environment (10.7 GB and 20 s at 4096
    patches on CPU; 2.7 GB and 2 s in a bare anomalib venv with the same torch, cause not found)."""
    model.memory_bank = torch.vstack(model.embedding_store)
    model.embedding_store.clear()


def quiet_progress(iterable: Any, **_: Any) -> Any:
    """anomalib's tqdm bars, silenced: the harness shows its own progress."""
    return iterable


@contextmanager
def seeded_globals(seed: int) -> Iterator[None]:
    """torch's, NumPy's and Python's global RNGs seeded with `seed` inside the block, restored after it: anomalib
    draws from all three (PaDiM's channels and the coreset's first patch from torch, the coreset's random
    projection from NumPy through scikit-learn), and a cell's randomness must come from its generator only."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


class AnomalibMethod:
    """anomalib's `<model>` (its Lightning module, without engine, pre/post-processor, evaluator or visualiser)."""

    def __init__(self, model: str, config: Any) -> None:
        self.model_name = model
        self.name = f"anomalib:{model}"
        self.config = config
        self.module: Any = None
        self.transform: Compose | None = None
        self.copied = 0

    def _build(self, context: FitContext) -> Any:
        import anomalib.models
        from anomalib.models.components.sampling import k_center_greedy

        k_center_greedy.tqdm = quiet_progress  # its coreset loop draws a bar per cell over the harness's own

        options = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)
                   if f.name not in ("backbone", "input_size")}
        extractor = context.features.extractor(self.config.backbone)
        options["layers"] = list(options["layers"])
        module = getattr(anomalib.models, self.model_name)(
            backbone=extractor.spec.architecture, pre_trained=False, pre_processor=False, post_processor=False,
            evaluator=False, visualizer=False, **options)
        self.copied = copy_backbone_weights(extractor, module.model, options["layers"])
        size = self.config.input_size
        self.transform = Compose([Resize((size, size), antialias=True),
                                  Normalize(mean=list(extractor.spec.mean), std=list(extractor.spec.std))])
        return module.to(context.device)

    def fit(self, support: torch.Tensor, *, category: str, context: FitContext) -> None:
        from anomalib.data import ImageBatch

        if self.model_name == "Padim" and len(support) < 2:  # its covariance divides by n - 1: NaN scores at k = 1
            raise ValueError("anomalib's PaDiM estimates a covariance per patch position from the support images: "
                             "it needs k >= 2")

        with seeded_globals(int(torch.randint(2**32, (1,), generator=context.generator))), torch.no_grad():
            self.module = self._build(context)
            self.module.model.train()
            self.module.training_step(ImageBatch(image=self.transform(support.to(context.device))))
            if getattr(self.config, "coreset_sampling_ratio", None) == 1.0:
                keep_every_patch(self.module.model)
            else:
                self.module.fit()
        self.module.model.eval()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        output = self.module.model(self.transform(images))
        maps = output.anomaly_map.float().reshape(len(images), 1, *output.anomaly_map.shape[-2:])
        if maps.shape[-2:] != images.shape[-2:]:
            maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return Prediction(scores=output.pred_score.float().reshape(-1), maps=maps[:, 0])

    def info(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {"anomalib": version("anomalib"), "model": self.model_name, "backbone_tensors_copied": self.copied,
                **dataclasses.asdict(self.config)}
