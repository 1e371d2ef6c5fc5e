"""BGAD: conditional normalizing flows on frozen patch features, trained by maximum likelihood on normal patches and
by a boundary-guided semi-push-pull loss against anomalous ones; a patch scores 1 - exp(normalised log-likelihood).

Yao et al., "Explicit Boundary Guided Semi-Push-Pull Contrastive Learning for Supervised Anomaly Detection",
CVPR 2023; official code github.com/xcyao00/BGAD (config.py, scripts.sh, models/fc_flow.py, models/modules.py,
losses/losses.py, engines/bgad_fas_train_engine.py, utils/utils.py); official defaults: docs/REFERENCE.md, section
"BGAD". Per feature level, a FrEIA flow conditioned on a 2-D positional encoding maps patch features to a standard
Gaussian (l = log p(x) / C); the loss is -mean(log sigmoid(l)) over normal patches plus the semi-push-pull terms
against the boundaries b_n, b_a set by each step's normal patches. Anomalous patches come from labelled anomalies
when the run provides them (`FitContext.anomalies`) and from pseudo-anomalies made on the supports, so without
labelled anomalies the method uses nothing of the target category but its k normal images (VAND rules).

Departures from the official code, each with its reason:
- beta = 0.01 (`scripts.sh`'s MVTec runs; `config.py`: 0.05); no `--focal_weighting`: the plain loss is specified.
- Pseudo-anomalies from `methods.augment.pseudo_anomalies` (official: RandAugmented CutPaste of labelled anomalies
  into a foreground mask), made once per fit: it needs no labelled anomaly and no foreground mask.
- Steps of `patches_per_step` over each level's patches, one smaller step kept when a level has fewer: k is small.
- Warm-up ramped per sub-epoch (official: per image batch): k images make one batch per epoch.
- An all-anomalous batch is skipped; an empty pull or push set adds 0 (official: NaN): no boundary, no NaN.
- Scores normalised by the support patches' maximum log-likelihood (official: the test set's): per-image scores.
- Levels' scores averaged (official: normality summed, then subtracted from its maximum): the same ranking.
- The returned map is blurred with sigma 4 (the image score is the unblurred map's maximum): as the other methods.
- The final flows (official: the best test epoch): choosing by test results leaks the test labels.
- Weights, FrEIA's soft permutations, shuffling and pseudo-anomalies from `FitContext.generator`: reproducible.
- `offline` preset: Lite0 levels 2 + 3, 4 coupling layers, 32-d encoding, 8 epochs of 1024-patch steps, one
  pseudo-anomaly per support, no warm-up, one CPU thread, features standardised by the support's mean and std, and
  lr 1e-2: the CPU budget. lr and epochs chosen on the procedural dev split (part_slots), never on test images: see
  BENCHMARKS.md, section "Method settings and measurements moved from the method docstrings".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.augment import PseudoAnomalyConfig, pseudo_anomalies
from methods.backbones import BackboneName, FeatureLevels
from methods.base import FitContext, Prediction
from methods.bgad_modules import (ConditionalFlow, boundaries, flow_log_likelihood, learning_rate, ml_loss,
                                  positional_encoding_2d, semi_push_pull_loss)
from methods.common import gaussian_blur, seeded_from, torch_threads
from methods.options import Check, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveFraction, PositiveInt
from methods.registry import register

EncodingDim = Annotated[int, Check(lambda d: d >= 4 and d % 4 == 0, "a multiple of 4, >= 4")]


@dataclass(frozen=True)
class BGADConfig:
    # features
    backbone: BackboneName = "efficientnet_b6"  # official config.py: timm tf_efficientnet_b6
    levels: FeatureLevels = (1, 2, 3)  # official config.py: feature_levels 3 = timm out_indices 1-3 (strides 4-16)
    # flows
    coupling_layers: PositiveInt = 8  # official config.py
    clamp: PositiveFloat = 1.9  # official config.py: clamp_alpha
    pos_embed_dim: EncodingDim = 128  # official config.py
    # boundaries and loss
    beta: PositiveFraction = 0.01  # official scripts.sh: pos_beta (config.py default 0.05)
    tau: NonNegativeFloat = 0.1  # official scripts.sh and config.py: margin_tau
    normalizer: PositiveFloat = 10.0  # official config.py
    spp_weight: NonNegativeFloat = 1.0  # official config.py: bgspp_lambda
    # anomalous images
    pseudo_per_image: NonNegativeInt = 2  # our choice: pseudo-anomalies made from each support image
    # schedule
    lr: PositiveFloat = 2e-4  # official config.py (Adam)
    meta_epochs: PositiveInt = 25  # official config.py; the first is normal-only
    sub_epochs: PositiveInt = 8  # official config.py
    patches_per_step: PositiveInt = 4096  # official train engine: N_batch
    warmup_epochs: NonNegativeInt = 2  # official config.py: lr_warm_epochs (from lr / 10)
    cosine: bool = True  # official config.py: lr_cosine (down to lr * 0.1**3)
    train_threads: PositiveInt | None = None  # our choice: CPU threads of the training loop (None = torch's)
    standardise: bool = False  # official: raw features; offline: per channel by the support's mean and std
    # scoring
    blur_sigma: NonNegativeFloat = 4.0  # the harness's maps (official: no blur)


@dataclass(frozen=True)
class LevelPatches:
    """One level's training patches: features [n,C], grid position index [n], anomalous [n], from a normal
    image [n] (the first epoch's), and the grid (h, w)."""

    features: torch.Tensor
    positions: torch.Tensor
    anomalous: torch.Tensor
    normal_image: torch.Tensor
    grid: tuple[int, int]


def level_patches(maps: torch.Tensor, masks: torch.Tensor, normal_image: torch.Tensor) -> LevelPatches:
    """Patches of one level's maps [b,C,h,w] with pixel masks [b,H,W] (nearest-resized to the grid) and whether
    each image is normal [b]."""
    b, c, h, w = maps.shape
    grid_masks = F.interpolate(masks.unsqueeze(1).float(), size=(h, w), mode="nearest").squeeze(1) > 0.5
    return LevelPatches(maps.permute(0, 2, 3, 1).reshape(-1, c), torch.arange(h * w).repeat(b).to(maps.device),
                        grid_masks.reshape(-1), normal_image.to(maps.device).repeat_interleave(h * w), (h, w))


class BGAD:
    """One conditional flow per feature level, trained on the support patches against anomalous patches."""

    name = "bgad"

    def __init__(self, config: BGADConfig) -> None:
        self.config = config
        self.flows: nn.ModuleList | None = None
        self.maxima: list[float] = []  # per level: the support patches' largest per-dimension log-likelihood
        self.scales: list[tuple[torch.Tensor, torch.Tensor]] = []  # per level: the support patches' mean, std
        self.losses: list[float] = []
        self._context: FitContext | None = None
        self._encodings: dict[tuple[int, int], torch.Tensor] = {}
        self._facts: dict[str, Any] = {}

    def _maps(self, images: torch.Tensor, cached: bool = True) -> list[torch.Tensor]:
        """The levels' feature maps [b,C,h,w] of images, standardised by the support's statistics once known."""
        c, features = self.config, self._context.features
        maps = (features.get if cached else features.compute)(c.backbone, images, c.levels)
        return [(m - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1) for m, (mean, std) in zip(maps, self.scales)] \
            if self.scales else maps

    def _encoding(self, grid: tuple[int, int]) -> torch.Tensor:
        """Positional encoding rows [h*w, P] of a grid, built once."""
        if grid not in self._encodings:
            encoding = positional_encoding_2d(self.config.pos_embed_dim, *grid)
            self._encodings[grid] = encoding.flatten(1).T.contiguous().to(self._context.device)
        return self._encodings[grid]

    def _training_patches(self, support: torch.Tensor) -> list[LevelPatches]:
        """Every level's patches of the support images, their pseudo-anomalies and the labelled anomalies."""
        c, context = self.config, self._context
        k, _, height, width = support.shape
        maps = self._maps(support)
        if c.standardise:
            self.scales = [(m.mean(dim=(0, 2, 3)), m.std(dim=(0, 2, 3)).clamp_min(1e-6)) for m in maps]
            maps = self._maps(support)
        masks = [support.new_zeros(k, height, width)]
        normal = [torch.ones(k, dtype=torch.bool)]
        parts = [maps]
        if c.pseudo_per_image:
            sources = support.repeat(c.pseudo_per_image, 1, 1, 1)
            images, pseudo_masks = pseudo_anomalies(sources, PseudoAnomalyConfig(), context.generator)
            parts.append(self._maps(images, cached=False))
            masks.append(pseudo_masks)
            normal.append(torch.zeros(len(images), dtype=torch.bool))
        labelled = context.anomalies
        if labelled is not None and len(labelled.images):
            parts.append(self._maps(labelled.images.to(context.device)))
            masks.append(labelled.masks.to(support))
            normal.append(torch.zeros(len(labelled.images), dtype=torch.bool))
        masks_all, normal_all = torch.cat(masks), torch.cat(normal)
        levels = [level_patches(torch.cat(level), masks_all, normal_all) for level in zip(*parts)]
        self._facts.update(labelled_anomalies=0 if labelled is None else len(labelled.images),
                           pseudo_anomalies=c.pseudo_per_image * k, grids=[list(p.grid) for p in levels],
                           anomalous_patches=[int(p.anomalous.sum()) for p in levels],
                           patches=[len(p.anomalous) for p in levels])
        return levels

    def fit(self, support: torch.Tensor, *, category: str, context: FitContext) -> None:
        """Train one flow per level on the support images [k,3,H,W] and the anomalous images."""
        c, device, generator = self.config, context.device, context.generator
        self._context, self._facts, self.losses, self._encodings, self.scales = context, {}, [], {}, []
        with torch.no_grad():
            levels = self._training_patches(support.to(device))
        with seeded_from(generator):
            self.flows = nn.ModuleList(ConditionalFlow(p.features.shape[1], c.pos_embed_dim, c.coupling_layers,
                                                       c.clamp, generator) for p in levels)
        self.flows.to(device).train()
        optimiser = torch.optim.Adam(self.flows.parameters(), lr=c.lr)
        skipped = 0
        with torch.enable_grad(), torch_threads(c.train_threads if device.type == "cpu" else None):
            for epoch in range(c.meta_epochs):
                for sub_epoch in range(c.sub_epochs):
                    rate = learning_rate(c.lr, epoch + sub_epoch / c.sub_epochs, c.meta_epochs, c.warmup_epochs,
                                         c.cosine)
                    for group in optimiser.param_groups:
                        group["lr"] = rate
                    for flow, patches in zip(self.flows, levels):
                        for rows in self._batches(patches, normal_only=epoch == 0, generator=generator):
                            loss = self._step_loss(flow, patches, rows)
                            if loss is None:
                                skipped += 1
                                continue
                            optimiser.zero_grad()
                            loss.backward()
                            optimiser.step()
                            self.losses.append(float(loss.detach()))
        self.flows.eval()
        with torch.no_grad():  # the score's normalising constants, from the support patches alone
            self.maxima = [float(self._log_likelihoods(flow, m).max()) for flow, m in zip(self.flows,
                                                                                          self._maps(support))]
        self._facts.update(steps=len(self.losses), skipped_steps=skipped)

    def _batches(self, patches: LevelPatches, normal_only: bool, generator: torch.Generator) -> list[torch.Tensor]:
        """Row indices of one epoch's steps: the level's patches (of normal images only in the first epoch)
        shuffled and cut into `patches_per_step` (the remainder dropped, unless it is the only step)."""
        rows = torch.nonzero(patches.normal_image).squeeze(1) if normal_only else torch.arange(len(patches.anomalous))
        rows = rows[torch.randperm(len(rows), generator=generator).to(rows.device)]
        size = self.config.patches_per_step
        return [rows[i:i + size] for i in range(0, max(len(rows) - size + 1, 1), size)]

    def _step_loss(self, flow: ConditionalFlow, patches: LevelPatches, rows: torch.Tensor) -> torch.Tensor | None:
        """ML loss on the step's normal patches plus the weighted semi-push-pull loss when it has anomalous
        ones; None when it has no normal patch."""
        c = self.config
        anomalous = patches.anomalous[rows]
        if anomalous.all():
            return None
        conditions = self._encoding(patches.grid)[patches.positions[rows]]
        likelihoods = flow_log_likelihood(flow, patches.features[rows], conditions)
        loss = ml_loss(likelihoods[~anomalous])
        if anomalous.any():
            b_n, b_a = boundaries(likelihoods[~anomalous], c.beta, c.tau, c.normalizer)
            pull, push = semi_push_pull_loss(likelihoods, anomalous, b_n, b_a, c.normalizer)
            loss = loss + c.spp_weight * (pull + push)
        return loss

    def _log_likelihoods(self, flow: ConditionalFlow, maps: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
        """Per-dimension log-likelihoods [b,h,w] of a level's maps [b,C,h,w]."""
        b, c, h, w = maps.shape
        features = maps.permute(0, 2, 3, 1).reshape(-1, c)
        conditions = self._encoding((h, w)).repeat(b, 1)
        out = [flow_log_likelihood(flow, features[i:i + chunk], conditions[i:i + chunk])
               for i in range(0, len(features), chunk)]
        return torch.cat(out).view(b, h, w)

    @torch.no_grad()
    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """Mean over levels of 1 - exp(l - max over the support), upsampled to the input size: [b,H,W] (unblurred)."""
        total = None
        for flow, maps, top in zip(self.flows, self._maps(images), self.maxima):
            normality = torch.exp(self._log_likelihoods(flow, maps) - top).unsqueeze(1)
            score = 1 - F.interpolate(normality, size=images.shape[-2:], mode="bilinear", align_corners=True)
            total = score if total is None else total + score
        return total.squeeze(1) / len(self.flows)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        scores = self.anomaly_map(images)
        return Prediction(scores=scores.flatten(1).max(dim=1).values,
                          maps=gaussian_blur(scores, self.config.blur_sigma))

    def info(self) -> dict[str, Any]:
        return {**asdict(self.config), **self._facts, "final_loss": self.losses[-1] if self.losses else None,
                "score_maxima": self.maxima, "image_score": "max of the unblurred map", "checkpoint": "final"}


@register(
    "bgad",
    config=BGADConfig,
    presets={
        "paper": BGADConfig(),
        "offline": BGADConfig(backbone="lite0", levels=(2, 3), coupling_layers=4, pos_embed_dim=32,
                              pseudo_per_image=1, lr=1e-2, meta_epochs=8, sub_epochs=1, patches_per_step=1024,
                              warmup_epochs=0, train_threads=1, standardise=True),
    },
    summary="BGAD: conditional flows with an explicit boundary and a semi-push-pull loss against "
            "(pseudo-)anomalies, score 1 - exp(normalised log-likelihood)",
    trains=True,
    uses_anomalies=True,
)
def create_bgad(config: BGADConfig) -> BGAD:
    return BGAD(config)
