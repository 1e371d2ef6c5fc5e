"""GCAD: a local branch for structural anomalies and a bottlenecked global branch for logical ones.

Bergmann et al., "Beyond Dents and Scratches: Logical Constraints in Unsupervised Anomaly Detection and
Localization", IJCV 2022 (doi 10.1007/s11263-022-01578-9); no official code. Specification: docs/REFERENCE.md,
section "GCAD". A local regressor R_loc with a restricted receptive field regresses a frozen dense descriptor E_loc;
an encoder E_glo squeezes the image through a g = 32 bottleneck into a d_glo = 10 map that an upsampling head U must
turn back into E_loc (L_kd), and an unconstrained U-Net-like R_glo regresses E_glo. A = sum of the two z-normalised
squared-error maps; image score = max of A, each branch's max in `extras` ("local", "global").

Departures from the paper, each with its reason:
- `distilled` E_loc (paper preset): one FCN, 31 px receptive field at 256 px (paper: p = 17 and 33 averaged): time.
- It is distilled in each cell on augmented support views only (paper: ImageNet): the few-shot rule allows no more.
- `grid` E_loc (offline; the seed project's idea): pooled backbone levels 2+3 on a `grid_stride` grid: no distilling
  (its receptive field is backbone level 3's, not local).
- Network sizes are ours (`methods/gcad_modules.py`, no normalisation layers): the paper gives only d_loc, d_glo, g.
- E_glo's map is on a coarser grid (`global_stride` 16) that U upsamples: cheaper.
- L_glo regresses a detached E_glo output: E_glo cannot shrink its map to make L_glo small.
- Augmentation: 3 degrees, brightness/contrast, flips only in `flip_categories`: colours and slots carry logic.
- mu, sigma from `stat_views` fresh views of the supports after training (paper: other normals): few-shot rule
  (optimistic: views of trained images; holding supports out would cost k more trainings).
- Maps upsampled bilinearly and blurred (sigma 4) before the max: as the harness's other methods.
- Weights, views and batches drawn from the cell's generator: a cell is reproducible.
- `offline`: 128 px input (`input_scale`), widths 32, lr 3e-3 x 150 steps, 24 views: the ~10 s per-cell CPU budget.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from methods.backbones import BackboneName, FeatureLevels
from methods.base import FitContext, Prediction
from methods.augment import AugmentConfig, augmented_views
from methods.common import aggregate_local, seeded_from, upsample_and_blur
from methods.gcad_modules import (DistillationHead, GlobalEncoder, LocalRegressor, UNetRegressor, local_receptive_field,
                                  normalise_images)
from methods.options import NonNegativeFloat, PositiveFloat, PositiveFraction, PositiveInt, Probability
from methods.registry import register
from methods.standardise import Standardiser

LocalEncoder = Literal["grid", "distilled"]
LOCAL_ENCODERS = get_args(LocalEncoder)


@dataclass(frozen=True)
class GCADConfig:
    """GCAD settings; the defaults are the `paper` preset, `OFFLINE` below overrides what the CPU budget needs."""

    # local descriptor E_loc
    local_encoder: LocalEncoder = "distilled"  # paper: distilled dense descriptor; "grid": seed project's grid features
    teacher: BackboneName = "resnet18"  # paper: ImageNet ResNet-18 teaches the distilled descriptor
    backbone: BackboneName = "wide_resnet50_2"  # seed project: WideResNet-50-2 features for local_encoder="grid"
    levels: FeatureLevels = (2, 3)  # our choice (as PatchCore / SimpleNet): ResNet layer2 + layer3
    grid_stride: PositiveInt = 8  # our choice: pixels per E_loc cell (32x32 at 256 px); seed project: 16 (16x16 cells)
    global_stride: PositiveInt = 16  # our choice: pixels per cell of E_glo / R_glo maps (16x16 at 256 px); U upsamples
    input_scale: PositiveFraction = 1.0  # paper: the networks see the 256 px image (offline: a half-size copy)
    d_loc: PositiveInt = 128  # paper
    d_glo: PositiveInt = 10  # paper
    bottleneck: PositiveInt = 32  # paper: g = 32
    # networks (paper: R_loc with a restricted receptive field, U-Net-like R_glo; widths: our choice, for the CPU)
    local_width: PositiveInt = 64  # our choice: R_loc channels (16, 32, 64 strided, then 128)
    descriptor_width: PositiveInt = 64  # our choice: distilled E_loc channels
    global_width: PositiveInt = 64  # our choice: E_glo, U and R_glo channels
    # training
    steps: PositiveInt = 2000  # our choice (paper trains much longer on full training sets)
    distill_steps: PositiveInt = 1000  # our choice (paper distils on ImageNet)
    batch_size: PositiveInt = 8  # our choice
    lr: PositiveFloat = 1e-4  # paper: Adam 1e-4
    weight_decay: NonNegativeFloat = 1e-5  # paper
    train_views: PositiveInt = 64  # our choice: support images + augmented views trained on
    stat_views: PositiveInt = 16  # our choice: fresh augmented views for mu, sigma (never trained on)
    # augmentation (paper: flips / a few degrees / colour jitter where the category allows)
    max_rotation: NonNegativeFloat = 3.0  # paper: "a few degrees"
    brightness: Probability = 0.1  # our choice: relative gain range
    contrast: Probability = 0.1  # our choice
    flip_categories: tuple[str, ...] = ("pill_tray", "pushpins", "screw_bag")  # our choice: flips keep their rules
    blur_sigma: NonNegativeFloat = 4.0  # our choice, as the other methods

    @property
    def backbones(self) -> tuple[str, ...]:
        """The one backbone whose weights this config needs (pre-flight)."""
        return (self.teacher,) if self.local_encoder == "distilled" else (self.backbone,)


def _log2(value: float, what: str) -> int:
    """log2 of a power of two >= 2, or an error naming the setting."""
    exponent = round(math.log2(value)) if value > 0 else 0
    if exponent < 1 or 2 ** exponent != value:
        raise ValueError(f"gcad: {what} = {value} must be a power of two >= 2")
    return exponent


def project_channels(features: torch.Tensor, channels: int) -> torch.Tensor:
    """[b,C,h,w] -> [b,channels,h,w] by adaptive average pooling over the channel axis."""
    b, c, h, w = features.shape
    flat = features.permute(0, 2, 3, 1).reshape(-1, 1, c)  # [b*h*w, 1, C]
    return F.adaptive_avg_pool1d(flat, channels).view(b, h, w, channels).permute(0, 3, 1, 2)


class GCAD:
    """Local and global regression branches, z-normalised on augmented support views and summed."""

    name = "gcad"

    def __init__(self, config: GCADConfig) -> None:
        if config.local_encoder not in LOCAL_ENCODERS:
            raise ValueError(f"gcad: local_encoder={config.local_encoder!r}; choose one of {', '.join(LOCAL_ENCODERS)}")
        self.config = config
        self.n_down = _log2(config.grid_stride * config.input_scale, "grid_stride * input_scale")
        self.n_down_glo = _log2(config.global_stride * config.input_scale, "global_stride * input_scale")
        self._context: FitContext | None = None
        self._facts: dict[str, Any] = {}
        self.networks: nn.ModuleDict | None = None  # built in `fit`, from the cell's generator
        neutral = Standardiser(torch.zeros(1), torch.ones(1))
        self.feature_stats = neutral  # per channel of the teacher / grid features, on the training views
        self.branch_stats = (neutral, neutral)  # A_loc, A_glo on the statistics views

    @property
    def stats(self) -> torch.Tensor:
        """[mu_loc, sigma_loc, mu_glo, sigma_glo]: each branch's map statistics on the statistics views."""
        return torch.stack([t.flatten()[0] for s in self.branch_stats for t in (s.mean, s.scale)])

    def _build_networks(self) -> nn.ModuleDict:
        c = self.config
        local = LocalRegressor(c.d_loc, c.local_width, self.n_down)
        glob = UNetRegressor(c.d_glo, c.global_width, self.n_down_glo)
        networks = nn.ModuleDict({"e_glo": GlobalEncoder(c.d_glo, c.bottleneck, c.global_width),
                                  "u": DistillationHead(c.d_glo, c.d_loc, c.global_width),
                                  "r_glo": glob, "r_loc": local})
        if c.local_encoder == "distilled":
            networks["descriptor"] = LocalRegressor(c.d_loc, c.descriptor_width, self.n_down)
        return networks

    def _map_size(self, images: torch.Tensor, n_down: int) -> tuple[int, int]:
        """Size of a network's output map: n_down stride-2 convs (padding 1) on the scaled input copy."""
        size = [math.floor(side * self.config.input_scale) for side in images.shape[-2:]]
        for _ in range(n_down):
            size = [(side + 1) // 2 for side in size]
        return size[0], size[1]

    # ---- E_loc -------------------------------------------------------------------------------------------
    def _grid_features(self, images: torch.Tensor, cache: bool) -> torch.Tensor:
        """Backbone (or teacher) features on the E_loc grid, d_loc channels: [b,d_loc,H/stride,W/stride]."""
        features, name = self._context.features, self.config.backbones[0]
        maps = (features.get if cache else features.compute)(name, images, self.config.levels)
        local = aggregate_local(maps)  # [b,C,h2,w2] on the first level's grid
        grid = self._map_size(images, self.n_down)
        if local.shape[-2:] != grid:
            local = F.adaptive_avg_pool2d(local, grid)
        return project_channels(local, self.config.d_loc)

    def _local_descriptor(self, images: torch.Tensor, cache: bool = True) -> torch.Tensor:
        """E_loc(images): [b,d_loc,h,w]."""
        if self.config.local_encoder == "distilled":
            return self.networks["descriptor"](self._network_input(images)[0])
        return self.feature_stats(self._grid_features(images, cache))

    # ---- fit ---------------------------------------------------------------------------------------------
    def _augment_config(self, category: str) -> AugmentConfig:
        """Training and statistics views: flips only in `flip_categories`, a small rotation, brightness/contrast."""
        c, flip_p = self.config, 0.5 if category in self.config.flip_categories else 0.0
        return AugmentConfig(hflip_p=flip_p, vflip_p=flip_p, max_degrees=c.max_rotation, brightness=c.brightness,
                             contrast=c.contrast)

    def _batches(self, n: int, steps: int) -> torch.Tensor:
        """[steps, batch] indices into a pool of n views, drawn with the cell's generator."""
        return torch.randint(n, (steps, min(self.config.batch_size, n)), generator=self._context.generator)

    def _distil(self, views: torch.Tensor, targets: torch.Tensor) -> list[float]:
        """Stage 1 (distilled E_loc only): train the dense descriptor to regress the teacher's standardised grid
        features on the training views; then freeze it. Returns the loss per step."""
        c, descriptor = self.config, self.networks["descriptor"].train()
        optimizer = torch.optim.Adam(descriptor.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        losses = []
        for batch in self._batches(len(views), c.distill_steps).to(views.device):
            loss = F.mse_loss(descriptor(self._network_input(views[batch])[0]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        descriptor.eval().requires_grad_(False)
        return losses

    def _network_input(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The normalised image copy the trained networks see, and the size of the global map."""
        grid = self._map_size(images, self.n_down_glo)
        x = normalise_images(images)
        if self.config.input_scale != 1.0:
            x = F.interpolate(x, scale_factor=self.config.input_scale, mode="bilinear", antialias=True,
                              align_corners=False)
        return x, grid

    def _train(self, views: torch.Tensor, local_targets: torch.Tensor) -> dict[str, list[float]]:
        """Stage 2: joint training of E_glo, U, R_glo and R_loc on the training views; returns each loss term per
        step. Each term is a squared error divided by its depth (a mean over channels and cells)."""
        c, nets = self.config, self.networks
        modules = [nets["e_glo"], nets["u"], nets["r_glo"], nets["r_loc"]]
        for module in modules:
            module.train()
        optimizer = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=c.lr, weight_decay=c.weight_decay)
        history: dict[str, list[float]] = {"kd": [], "glo": [], "loc": []}
        for batch in self._batches(len(views), c.steps).to(views.device):
            (x, grid), target = self._network_input(views[batch]), local_targets[batch]
            global_map = nets["e_glo"](x, grid)
            losses = {"kd": F.mse_loss(nets["u"](global_map, target.shape[-2:]), target),  # U(E_glo) -> E_loc
                      "glo": F.mse_loss(nets["r_glo"](x), global_map.detach()),  # R_glo -> E_glo (E_glo not moved)
                      "loc": F.mse_loss(nets["r_loc"](x), target)}  # R_loc -> E_loc
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
            for name, value in losses.items():
                history[name].append(value.item())
        for module in modules:
            module.eval().requires_grad_(False)
        return history

    def _teacher_targets(self, support: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Grid features of the training views [n,d_loc,h,w], standardised with their own channel statistics."""
        teacher = self._grid_features(support, cache=True)  # the support images: cached like test images
        if len(views) > len(support):  # augmented views: computed, not cached
            teacher = torch.cat([teacher, self._grid_features(views[len(support):], cache=False)])
        self.feature_stats = Standardiser.fit(teacher, dim=(0, 2, 3))
        return self.feature_stats(teacher)

    def fit(self, support: torch.Tensor, *, category: str, context: FitContext) -> None:
        c, start = self.config, time.perf_counter()
        self._context, generator = context, context.generator
        with seeded_from(generator):  # initial weights from the cell's generator, never the global RNG
            self.networks = self._build_networks().to(context.device)
        support, augment = support.to(context.device), self._augment_config(category)
        extra = c.train_views - len(support)
        views = torch.cat([support, augmented_views(support, extra, augment, generator)]) if extra > 0 else support
        stat_views = augmented_views(support, c.stat_views, augment, generator)  # other draws than the training views
        teacher = self._teacher_targets(support, views)
        with torch.enable_grad():
            distil_history = self._distil(views, teacher) if c.local_encoder == "distilled" else []
            with torch.no_grad():
                local_targets = teacher if c.local_encoder == "grid" else self._local_descriptor(views)
            history = self._train(views, local_targets)
        with torch.no_grad():  # mu, sigma: from support views only, fixed before any predict
            a_loc, a_glo = self._branch_maps(stat_views, cache=False)
        self.branch_stats = (Standardiser.fit(a_loc), Standardiser.fit(a_glo))
        self._facts = self._fit_facts(len(support), len(views), history, distil_history, time.perf_counter() - start)

    def _fit_facts(self, k: int, n_views: int, history: dict[str, list[float]], distil: list[float],
                   seconds: float) -> dict[str, Any]:
        c = self.config
        tail = max(1, c.steps // 10)
        mean = lambda values: sum(values) / max(1, len(values))  # noqa: E731
        total = [sum(terms) for terms in zip(*history.values())]
        facts = {"train_images": f"{k} support images + {n_views - k} augmented views",
                 "normalisation": f"{c.stat_views} fresh augmented views of the support set, scored after training",
                 "mu_sigma_loc_glo": [round(v, 6) for v in self.stats.tolist()],
                 "loss_first": mean(total[:tail]), "loss_last": mean(total[-tail:]),
                 **{f"loss_last_{name}": mean(values[-tail:]) for name, values in history.items()},
                 "r_loc_receptive_field_px": local_receptive_field(self.n_down) / c.input_scale,
                 "local_encoder_backbone": c.backbones[0], "fit_internal_s": round(seconds, 3)}
        if distil:
            facts.update(distill_images="augmented views of the support set only", distill_steps_run=len(distil),
                         distill_loss_first=mean(distil[:tail]), distill_loss_last=mean(distil[-tail:]))
        return facts

    # ---- predict -----------------------------------------------------------------------------------------
    def _branch_maps(self, images: torch.Tensor, cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw A_loc [b,h,w] on the E_loc grid and A_glo [b,h',w'] on the global grid (channel-mean squared errors)."""
        (x, grid), nets = self._network_input(images), self.networks
        a_loc = (self._local_descriptor(images, cache) - nets["r_loc"](x)).pow(2).mean(dim=1)
        a_glo = (nets["e_glo"](x, grid) - nets["r_glo"](x)).pow(2).mean(dim=1)
        return a_loc, a_glo

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        a_loc, a_glo = self._branch_maps(images.to(self._context.device))
        local_stats, global_stats = self.branch_stats
        size = images.shape[-2:]
        local = upsample_and_blur(local_stats(a_loc), size, self.config.blur_sigma)  # [b,H,W]
        glob = upsample_and_blur(global_stats(a_glo), size, self.config.blur_sigma)
        maps = local + glob
        peak = lambda m: m.flatten(1).max(dim=1).values  # noqa: E731  [b,H,W] -> [b]
        return Prediction(scores=peak(maps), maps=maps, extras={"local": peak(local), "global": peak(glob)})

    def info(self) -> dict[str, Any]:
        return {**asdict(self.config), **self._facts}


# `paper`: the defaults above. ResNet-18 teacher, full-size input, widths 64, 2000 steps (+1000 distillation
# steps) at lr 1e-4: estimated (not measured, no GPU was lent) at ~30 s per cell on one GPU, i.e. ~30 min
# for the 5 category x 4 k x 3 seed grid. `offline`: sized for ~10 s per cell on 2 CPU cores at 256 px.
OFFLINE = GCADConfig(
    local_encoder="grid", teacher="lite0", backbone="lite0",  # bundled backbone, no distillation to pay for
    input_scale=0.5,  # networks on a 128 px copy: a quarter of the convolution cost
    local_width=32, descriptor_width=32, global_width=32,  # a third of the cost of width 64
    steps=150, distill_steps=100, lr=3e-3,  # few steps, so a higher lr (1e-2 diverged)
    train_views=24, stat_views=12,  # backbone passes on augmented views cost ~50 ms each on the CPU
)


@register(
    "gcad",
    config=GCADConfig,
    presets={"paper": GCADConfig(), "offline": OFFLINE},
    summary="GCAD: local (restricted receptive field) and bottlenecked global regression branches, z-normalised",
    trains=True,
)
def create_gcad(config: GCADConfig) -> GCAD:
    return GCAD(config)
