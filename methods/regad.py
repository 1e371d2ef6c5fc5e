"""RegAD: few-shot anomaly detection by feature registration, meta-trained without the target category.

Huang et al., "Registration based Few-Shot Anomaly Detection", ECCV 2022; official code
github.com/MediaBrain-SJTU/RegAD; official defaults: docs/REFERENCE.md, section "RegAD". A backbone with a spatial
transformer (STN) after each of stages 1-3 is meta-trained with a Siamese registration loss on other categories
(episodes of one query and `train_shot` supports); at test time the STN features of the augmented support images,
warped back to image coordinates, give a per-position Gaussian, and a test image's anomaly map is its Mahalanobis
distance map (bilinear up, Gaussian sigma 4, image score = max).

Departures from the official code, each with its reason:
- Meta-training data `source`: procedural by default; `dataset` (the paper's leave-one-category-out on the run's
  dataset) breaks the VAND 3.0 rule for MVTec LOCO, and `info()` says so.
- One model per (target, source, config) serves every k and seed (official: one per shot count): training cost.
- Meta-training draws from its own stream seeded by `train_seed`: the cached model never depends on the cell.
- The final model (official: the checkpoint best on the target's test set): that would leak the test labels.
- The cosine schedule starts at the base lr (official: one step of decay first; its last epoch learns nothing).
- Images resized to `input_size` inside, maps returned at the run's size; the STNs adaptive-pool: any size works.
- No cosine map at test time (the official test computes one and discards it): the same scores, less work.
- Inverse warps composed and resampled once per stage (official: once per warp): the same map, less blur.
- Gaussian via batched Cholesky factors and triangular solves over chunks of positions: no inverse, bounded memory.
- Raw distances, no min-max normalisation over the test set (official): a per-image evaluator cannot do it.
- Test and support-view features of a saved model kept in the run's content cache: fusion's refits reuse them.
- `offline`: Lite0 split at strides 4, 8, 16 (24, 40, 112 channels; head width 112), normalised (0.5), 4 epochs of
  16-query batches at 128 px, `gaussian_stride` 8 (2x2-pooled grid: 93 MiB instead of 373): the CPU budget (see
  BENCHMARKS.md, section "Per-method CPU benches (procedural data, 256 px, k = 4, seeds 42 0 1234, preset offline)").
- `offline` `train_bn_stats=false` (meta-training at 128 px would move BatchNorm statistics used at 224 px): chosen on
  the procedural dev split, see BENCHMARKS.md, section "Settings chosen on the procedural dev split: PatchCore's
  Lite0 dimensions, RegAD's BatchNorm statistics".
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Iterator, Literal

import torch
import torch.nn.functional as F

from methods.augment import luma
from methods.backbones import BackboneName
from methods.base import AuxiliaryCategory, FitContext, Prediction, Requirements, WeightFile
from methods.cache import ContentCache
from methods.common import rotation_matrices, torch_threads, upsample_and_blur, warp
from methods.options import (Check, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability,
                             Range)
from methods.regad_modules import RegADNet, affine_from_params, cosine_lr, registration_loss
from methods.registry import register

OFFICIAL_ROTATIONS = (-45.0, -33.75, -22.5, -11.25, 11.25, 22.5, 33.75, 45.0)  # official: +-pi/16 ... +-pi/4
StnMode = Literal["affine", "translation", "rotation", "scale", "shear", "rotation_scale", "translation_scale",
                  "rotation_translation", "rotation_translation_scale"]  # regad_modules.STN_MODES
ImageSize = Annotated[int, Range(ge=32)]
Source = Annotated[str, Check(lambda value: value in ("procedural", "dataset") or Path(value).is_dir(),
                              "procedural, dataset or the path of an existing dataset folder")]


@dataclass(frozen=True)
class RegADConfig:
    backbone: BackboneName = "resnet18"  # official: ResNet-18, ImageNet init, fine-tuned
    stn_mode: StnMode = "rotation_scale"  # official default
    input_size: ImageSize | None = 224  # official --img_size 224; None = the run's image size
    normalize: bool = False  # official: no ImageNet normalisation
    source: Source = "procedural"  # our choice: meta-training categories (procedural | dataset | path)
    train_epochs: NonNegativeInt = 50  # official --epochs 50; 0 = no meta-training (ImageNet backbone, identity STNs)
    train_batch: PositiveInt = 32  # official --batch_size 32 (queries per step, all of one category)
    train_shot: PositiveInt = 2  # official default --shot 2: supports averaged per query
    train_size: ImageSize | None = None  # our choice: meta-training input size; None = input_size
    train_lr: PositiveFloat = 1e-4  # official: SGD lr 1e-4
    train_momentum: Probability = 0.9  # official: SGD momentum 0.9
    train_seed: int = 668  # official default --seed 668
    train_bn_stats: bool = True  # official: backbone BatchNorm in train mode (batch statistics, running stats updated)
    rotation_degrees: tuple[float, ...] = OFFICIAL_ROTATIONS  # official support augmentation
    translations: tuple[NonNegativeFloat, ...] = (0.2, 0.1)  # official: shifts (+-t, +-t) in normalised coordinates
    flip: bool = True  # official: horizontal flip
    grey: bool = True  # official: greyscale copy
    rot90: bool = True  # official: rotations by 90, 180, 270 degrees
    covariance_eps: PositiveFloat = 0.01  # official: covariance + 0.01 I
    gaussian_stride: Literal[4, 8, 16] = 4  # official: the stage-1 grid (stride 4); 8 = 2x2 average-pooled
    gaussian_chunk: PositiveInt = 256  # our choice: positions per Cholesky / solve chunk (bounds memory)
    inference_batch: PositiveInt = 32  # our choice: images per forward pass at test time
    blur_sigma: NonNegativeFloat = 4.0  # official: Gaussian sigma 4


def augment_support(images: torch.Tensor, config: RegADConfig) -> torch.Tensor:
    """The support images and their official augmentations (rotations, shifts, flip, grey, rot90)."""
    views = [images]
    b = len(images)
    for degrees in config.rotation_degrees:
        views.append(warp(images, rotation_matrices(images.new_full((b,), math.radians(degrees)))))
    for shift in config.translations:
        for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1)):
            params = images.new_tensor([sx * shift, sy * shift]).expand(b, 2)
            views.append(warp(images, affine_from_params(params, "translation")))
    if config.flip:
        views.append(images.flip(-1))
    if config.grey:
        views.append(luma(images).expand_as(images))
    if config.rot90:
        views.extend(torch.rot90(images, turns, dims=(2, 3)) for turns in (1, 2, 3))
    return torch.cat(views)


def single_thread_on_cpu(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Run torch single-threaded on the CPU for a while: batched small LAPACK calls (Cholesky, triangular
    solves of 176x176 matrices) are up to 25x slower with two OpenMP threads (BENCHMARKS.md, section "Method settings
    and measurements moved from the method docstrings")."""
    return torch_threads(1 if device.type == "cpu" else None)


def fit_gaussian(embeddings: torch.Tensor, eps: float, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position mean [P,C] and Cholesky factor [P,C,C] of covariance + eps I from embeddings [n,C,h,w]."""
    n, channels = embeddings.shape[:2]
    samples = embeddings.flatten(2).permute(2, 0, 1)  # [P, n, C]
    mean = samples.mean(dim=1)
    factor = samples.new_empty(samples.shape[0], channels, channels)
    identity = eps * torch.eye(channels, dtype=samples.dtype, device=samples.device)
    for start in range(0, len(samples), chunk):
        centred = samples[start:start + chunk] - mean[start:start + chunk, None]  # [p, n, C]
        covariance = centred.transpose(1, 2) @ centred / max(n - 1, 1) + identity  # [p, C, C]
        factor[start:start + chunk] = torch.linalg.cholesky(covariance)
    return mean, factor


def mahalanobis_map(embeddings: torch.Tensor, mean: torch.Tensor, factor: torch.Tensor, chunk: int) -> torch.Tensor:
    """Mahalanobis distance [b,h,w] of embeddings [b,C,h,w] to the per-position Gaussians (mean, Cholesky)."""
    b, _, h, w = embeddings.shape
    samples = embeddings.flatten(2).permute(2, 1, 0)  # [P, C, b]
    distances = []
    for start in range(0, len(samples), chunk):
        centred = samples[start:start + chunk] - mean[start:start + chunk, :, None]  # [p, C, b]
        whitened = torch.linalg.solve_triangular(factor[start:start + chunk], centred, upper=False)
        distances.append(whitened.square().sum(dim=1).sqrt())  # [p, b]
    return torch.cat(distances).T.reshape(b, h, w)


def episodes(categories: list[torch.Tensor], batch: int, shot: int,
             generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (queries [q,3,H,W], supports [q,shot,3,H,W]) batches, each from one category.

    Every image is a query once; its supports are drawn from the other images of its category."""
    batches = []
    for images in categories:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch):
            queries = order[start:start + batch]
            supports = torch.stack([_others(len(images), int(q), shot, generator) for q in queries])
            batches.append((images, queries, supports))
    for index in torch.randperm(len(batches), generator=generator).tolist():
        images, queries, supports = batches[index]
        yield images[queries], images[supports]


def _others(n: int, query: int, shot: int, generator: torch.Generator) -> torch.Tensor:
    picks = torch.randperm(n - 1, generator=generator)[:shot]
    return picks + (picks >= query).long()  # skip the query's own index


def _resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Images [b,3,H,W] resized to size x size (bilinear, antialiased); unchanged when size is None or equal."""
    if size is None or images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[-60:]


def _artifact_suffix(config: RegADConfig) -> str:
    """What follows the target category's slug in the name of a meta-trained model file of `config`."""
    fields = {k: v for k, v in asdict(config).items() if k.startswith("train_") or k in (
        "backbone", "stn_mode", "input_size", "normalize", "source")}
    fields["state_format"] = 2  # 2: normalisation buffers under `normalise.` (older files are not loaded)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
    return f"__{_slug(config.source)}__{digest}.pt"


def served_categories(config: RegADConfig, artifacts: Path) -> list[str] | None:
    """The target categories a variant can serve from its artifacts folder alone (no auxiliary data): those with a
    meta-trained model of this config; None when it needs none (`train_epochs=0`: any category)."""
    if config.train_epochs == 0:
        return None
    suffix = _artifact_suffix(config)
    folder = Path(artifacts)
    names = [path.name[:-len(suffix)] for path in folder.glob(f"*{suffix}")] if folder.is_dir() else []
    return sorted(name for name in names if name)


def artifact_category(category: str) -> str:
    """A category's name as it appears in its meta-trained model's file name (and in `served_categories`)."""
    return _slug(category)


class RegAD:
    """Mahalanobis distance of registered test features to the augmented supports' per-position Gaussian."""

    name = "regad"

    def __init__(self, config: RegADConfig) -> None:
        self.config = config
        self.net: RegADNet | None = None
        self.mean: torch.Tensor | None = None  # [P, C]
        self.factor: torch.Tensor | None = None  # [P, C, C] Cholesky factors
        self.grid: tuple[int, int] = (0, 0)
        self.model_digest: str | None = None
        self._store: ContentCache | None = None  # the run's content cache (test embeddings of a saved model)
        self.training_info: dict[str, Any] = {}
        self.support_views = 0

    # ---- meta-training (once per target category and source) -------------------------------
    def _build_net(self, context: FitContext) -> RegADNet:
        extractor = context.features.extractor(self.config.backbone)
        backbone = copy.deepcopy(extractor.model).requires_grad_(True)
        normalise = extractor.normalise
        net = RegADNet(backbone, normalise.mean, normalise.std, self.config.normalize, self.config.stn_mode)
        return net.to(context.device, memory_format=torch.channels_last)  # faster convolutions on CPU

    def _artifact_path(self, category: str, context: FitContext) -> Path | None:
        if context.artifacts is None:
            return None
        return Path(context.artifacts) / f"{_slug(category)}{_artifact_suffix(self.config)}"

    def _auxiliary_images(self, category: str, auxiliary: Callable[[], Iterable[AuxiliaryCategory]] | None,
                          device: torch.device) -> tuple[list[torch.Tensor], list[str]]:
        """Each auxiliary category's images at the meta-training size; never the target category."""
        if auxiliary is None:
            raise ValueError("regad: meta-training needs FitContext.auxiliary (other categories); "
                             "run it through the harness or set train_epochs=0")
        size = self.config.train_size or self.config.input_size
        images, names = [], []
        for aux in auxiliary():
            if aux.name == category:
                raise ValueError(f"regad: auxiliary categories include the target {category!r}")
            if len(aux.images) <= self.config.train_shot:
                raise ValueError(f"regad: auxiliary category {aux.name!r} has {len(aux.images)} images; "
                                 f"meta-training needs more than train_shot={self.config.train_shot}")
            images.append(_resize(aux.images.to(device), size))
            names.append(aux.name)
        if not images:
            raise ValueError(f"regad: no auxiliary category to meta-train on for {category!r}")
        return images, names

    def _meta_train(self, net: RegADNet, categories: list[torch.Tensor]) -> int:
        """SGD on the symmetric registration loss over episodes of the auxiliary categories; returns steps."""
        config = self.config
        generator = torch.Generator().manual_seed(config.train_seed)
        optimizer = torch.optim.SGD(net.parameters(), lr=config.train_lr, momentum=config.train_momentum)
        net.train()
        if not config.train_bn_stats:  # keep the backbone's ImageNet statistics; STN and head BatchNorms still train
            for module in net.stages.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        steps = 0
        with torch.enable_grad():
            for epoch in range(config.train_epochs):
                for group in optimizer.param_groups:
                    group["lr"] = cosine_lr(config.train_lr, epoch, config.train_epochs)
                for queries, supports in episodes(categories, config.train_batch, config.train_shot, generator):
                    q, k = supports.shape[:2]
                    query_maps = net(queries)
                    support_maps = net(supports.flatten(0, 1)).unflatten(0, (q, k)).mean(dim=1)  # mean of k
                    z_query, p_query = net.head(query_maps)
                    z_support, p_support = net.head(support_maps)
                    loss = registration_loss(p_query, z_query, p_support, z_support)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    steps += 1
        return steps

    def _trained_net(self, category: str, context: FitContext) -> RegADNet:
        """The meta-trained network for the target: loaded from the artifacts, else trained (and saved)."""
        config, path = self.config, self._artifact_path(category, context)
        with torch.random.fork_rng(devices=[]):  # initialisation and training: their own RNG stream
            torch.default_generator.manual_seed(config.train_seed)  # CPU only: CUDA generators are not forked
            net = self._build_net(context)
            if path is not None and path.is_file():
                saved = torch.load(path, map_location=context.device, weights_only=True)
                net.load_state_dict(saved["state"])
                self.training_info = {**saved["meta"], "loaded": True}
            elif config.train_epochs > 0:
                self.training_info = self._train_and_record(net, category, context)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(".tmp")
                    torch.save({"state": net.state_dict(), "meta": self.training_info}, tmp)
                    os.replace(tmp, path)  # atomic: a parallel shard never reads half a file
            else:
                self.training_info = {"source": None, "epochs": 0, "steps": 0}
        if path is not None and path.is_file():
            self.training_info["artifact"] = path.name
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            self.model_digest = f"{digest}:{config.input_size}:{config.gaussian_stride}"  # what _embed depends on
        return net.eval().requires_grad_(False)

    def _train_and_record(self, net: RegADNet, category: str, context: FitContext) -> dict[str, Any]:
        """Meta-train `net` on the auxiliary categories; the facts for info()."""
        start, cpu_start = time.perf_counter(), time.process_time()
        images, names = self._auxiliary_images(category, context.auxiliary, context.device)
        steps = self._meta_train(net, images)
        return {"source": self.config.source, "categories": names, "epochs": self.config.train_epochs,
                "steps": steps, "images": sum(len(i) for i in images),
                "size": self.config.train_size or self.config.input_size,
                "seconds": round(time.perf_counter() - start, 3),
                "cpu_seconds": round(time.process_time() - cpu_start, 3), "loaded": False}

    # ---- the Gaussian of the support features and scoring ---------------------------------
    @torch.no_grad()
    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """Restored STN features of the three stages, concatenated on the Gaussian grid: [b,C,h,w]."""
        parts = []
        for start in range(0, len(images), self.config.inference_batch):
            batch = _resize(images[start:start + self.config.inference_batch], self.config.input_size)
            levels = self.net.restored_features(batch)
            size = levels[0].shape[-2:]
            # nearest upsampling to the stage-1 grid = the official embedding_concat
            grid = torch.cat([levels[0]] + [F.interpolate(m, size=size, mode="nearest") for m in levels[1:]], dim=1)
            pool = self.config.gaussian_stride // 4
            parts.append(F.avg_pool2d(grid, pool) if pool > 1 else grid)
        return torch.cat(parts).float()

    def _cached_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """`_embed`, through the run's content cache when the model comes from a file."""
        if self.model_digest is None or self._store is None:
            return self._embed(images)
        keys = [("regad", self.model_digest, digest) for digest in self._store.digests(images)]
        embeddings = self._store.get_many(keys, lambda missing: [row.clone() for row in self._embed(images[missing])])
        return torch.stack(embeddings).to(images.device)

    def fit(self, support: torch.Tensor, *, category: str, context: FitContext) -> None:
        self.net, self._store = self._trained_net(category, context), context.features.store
        views = augment_support(_resize(support.to(context.device), self.config.input_size), self.config)
        embeddings = self._cached_embeddings(views)  # [n, C, h, w]; fusion's leave-one-out refits reuse them
        self.support_views, self.grid = len(views), tuple(embeddings.shape[-2:])
        with single_thread_on_cpu(embeddings.device):
            self.mean, self.factor = fit_gaussian(embeddings, self.config.covariance_eps, self.config.gaussian_chunk)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        embeddings = self._cached_embeddings(images)
        with single_thread_on_cpu(embeddings.device):
            distances = mahalanobis_map(embeddings, self.mean, self.factor, self.config.gaussian_chunk)
        maps = upsample_and_blur(distances, images.shape[-2:], self.config.blur_sigma)
        return Prediction(scores=maps.flatten(1).max(dim=1).values, maps=maps)

    def info(self) -> dict[str, Any]:
        facts: dict[str, Any] = {**asdict(self.config), "meta_training": self.training_info,
                                 "support_views": self.support_views, "gaussian_grid": list(self.grid)}
        if self.factor is not None:
            facts["gaussian_channels"] = int(self.factor.shape[-1])
            facts["gaussian_mb"] = round((self.factor.numel() + self.mean.numel()) * 4 / 2**20, 1)
        if self.config.source == "dataset":
            facts["protocol_note"] = ("meta-trained on the other categories of the run's dataset (the paper's "
                                      "leave-one-out): not allowed under VAND 3.0 rules for MVTec LOCO")
        return facts


@register(
    "regad",
    config=RegADConfig,
    presets={
        "paper": RegADConfig(),
        "offline": RegADConfig(backbone="lite0", normalize=True, train_epochs=4, train_batch=16, train_size=128,
                               gaussian_stride=8, train_bn_stats=False),
    },
    summary="RegAD: STN feature registration meta-trained off the target; Mahalanobis to augmented supports",
    trains=True,
    cheap_fit=True,
    distance_scores=True,
    uses_auxiliary=True,
    requires=lambda config: Requirements((WeightFile(config.backbone),),  # no other categories without meta-training
                                         auxiliary_source=config.source if config.train_epochs else None),
)
def create_regad(config: RegADConfig) -> RegAD:
    return RegAD(config)
