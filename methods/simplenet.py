"""Few-shot SimpleNet: a discriminator trained to tell adapted normal patch features from noised copies.

Liu et al., "SimpleNet: A Simple Network for Image Anomaly Detection and Localization", CVPR 2023; official code
github.com/DonaldRR/SimpleNet (simplenet.py, common.py, main.py, run.sh); official defaults: docs/REFERENCE.md,
section "SimpleNet". As the official code: frozen backbone features (two levels, 3x3 neighbourhoods unfolded, the
deeper level resized bilinearly to the shallower grid, each level's C*9 vector adaptive-avg-pooled to
`pretrain_dim`, the levels stacked and pooled again to `target_dim`) pass through a linear adaptor (AdamW, Xavier-
normal weights); Gaussian noise added to the adapted features gives "anomalous" features; a discriminator D =
Linear -> BatchNorm1d -> LeakyReLU(0.2) -> Linear (Adam) is trained with a truncated L1 loss (th = 0.5) to score true
features above +th and noised ones below -th, true and fake as one batch; 40 meta-epochs x 4 epochs of shuffled
8-image batches. A test patch scores -D(adapted feature); the image score is the maximum of the raw patch scores
(before the blur); the map is the patch scores upsampled bilinearly and blurred (sigma 4).

Departures from the official code, each with its reason:
- Images whole at the run's size (official: resize 329, centre crop 288): a crop cuts LOCO's logic at the borders.
- The final model (official: the best test epoch): choosing by test AUROC leaks the test labels.
- No cosine lr schedule: it is off by default in the official code, so it is not implemented.
- `augment_views` fixed views per support (flips, small rotation, jitter; no flips in `no_flip_categories`): k <= 8.
- Weights, shuffling, views and noise from `FitContext.generator`: the global RNG depends on other methods.
- The linear feature chain runs as one conv kernel per level (`embedding_kernels`): equal up to rounding, faster.
- `offline` preset: Lite0 (levels 2 + 3), dims 256 (D hidden 170 = 256 // 1.5, the official ratio), 2 views,
  400 steps of 512 sampled patches, one CPU thread (`train_threads`): the CPU budget.
- `offline` noise std 1.0 (official 0.015): Lite0's pooled features spread more, and with 0.015 D never learns; chosen
  among 0.1/0.3/1/3 on synthetic defects in held-out procedural train images (never test images): see BENCHMARKS.md,
  section "Method settings and measurements moved from the method docstrings".
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from methods.augment import AugmentConfig, augment
from methods.backbones import BackboneName, FeatureLevels
from methods.base import FitContext, Prediction
from methods.common import torch_threads, upsample_and_blur
from methods.options import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability
from methods.registry import register


@dataclass(frozen=True)
class SimpleNetConfig:
    # features
    backbone: BackboneName = "wide_resnet50_2"  # official run.sh: wideresnet50
    levels: FeatureLevels = (2, 3)  # official run.sh: layer2 + layer3
    patch_size: PositiveInt = 3  # official run.sh: patchsize 3 (unfold, stride 1)
    pretrain_dim: PositiveInt = 1536  # official run.sh: pretrain_embed_dimension
    target_dim: PositiveInt = 1536  # official run.sh: target_embed_dimension
    # adaptor and discriminator
    adaptor_lr: PositiveFloat = 1e-4  # official code: AdamW(lr * 0.1) with default lr 1e-3, weight decay 0.01
    adaptor_weight_decay: NonNegativeFloat = 0.01  # official code: AdamW default
    discriminator_hidden: PositiveInt = 1024  # official run.sh: dsc_hidden
    discriminator_lr: PositiveFloat = 2e-4  # official code: dsc_lr
    discriminator_weight_decay: NonNegativeFloat = 1e-5  # official code
    noise_std: PositiveFloat = 0.015  # official run.sh
    margin: NonNegativeFloat = 0.5  # official run.sh: dsc_margin (th)
    # schedule
    batch_size: PositiveInt = 8  # official run.sh: images per step
    meta_epochs: PositiveInt = 40  # official run.sh
    epochs_per_meta: PositiveInt = 4  # official run.sh: gan_epochs
    patches_per_step: PositiveInt | None = None  # official: every patch of the batch; offline: a seeded sample
    train_threads: PositiveInt | None = None  # our choice: CPU threads of the training loop (None = torch's setting)
    # few-shot augmentation (the issue, after the seed project)
    augment_views: NonNegativeInt = 4  # our choice: fixed augmented views per support image, 0 = off
    hflip_p: Probability = 0.5  # seed project: RandomHorizontalFlip
    vflip_p: Probability = 0.5  # seed project: RandomVerticalFlip
    rotation_degrees: NonNegativeFloat = 5.0  # the issue: small rotation (seed project: 30)
    brightness: Probability = 0.1  # seed project: ColorJitter (strength our choice)
    contrast: Probability = 0.1  # seed project: ColorJitter (strength our choice)
    saturation: Probability = 0.1  # seed project: ColorJitter (strength our choice; no hue: colours carry logic)
    no_flip_categories: tuple[str, ...] = ("part_slots", "breakfast_box", "juice_bottle")  # our choice
    # scoring
    blur_sigma: NonNegativeFloat = 4.0  # official code: Gaussian sigma 4


# ----------------------------------------------------------------------------------- features
def pooling_matrix(length: int, size: int) -> torch.Tensor:
    """`adaptive_avg_pool1d` from `length` to `size` as a matrix [length, size]: pooled(x) = x @ matrix.

    Output i averages inputs floor(i*length/size) .. ceil((i+1)*length/size) - 1, as torch does."""
    outputs = torch.arange(size)
    starts = outputs * length // size
    ends = -(-(outputs + 1) * length // size)  # ceiling division
    inputs = torch.arange(length).unsqueeze(1)  # [length, 1]
    inside = (inputs >= starts) & (inputs < ends)  # [length, size]
    return inside.float() / (ends - starts).float()


def embedding_kernels(channels: list[int], patch_size: int, pretrain_dim: int, target_dim: int) -> list[torch.Tensor]:
    """One conv kernel [target_dim, C_i, p, p] per level, equal to the official chain: unfold the level's
    p x p neighbourhood (C_i*p*p values, ordered channel, row, column), adaptive-avg-pool it to
    `pretrain_dim`, concatenate the levels and pool again to `target_dim` (all linear maps)."""
    second = pooling_matrix(len(channels) * pretrain_dim, target_dim)  # [levels*pretrain_dim, target_dim]
    kernels = []
    for index, count in enumerate(channels):
        first = pooling_matrix(count * patch_size**2, pretrain_dim)  # [C*p*p, pretrain_dim]
        combined = first @ second[index * pretrain_dim:(index + 1) * pretrain_dim]  # [C*p*p, target_dim]
        kernels.append(combined.T.reshape(target_dim, count, patch_size, patch_size).contiguous())
    return kernels


def neighbourhood_embedding(maps: list[torch.Tensor], kernels: list[torch.Tensor]) -> torch.Tensor:
    """Backbone maps [b,C_i,h_i,w_i] -> patch features [b,h,w,target_dim] on the first map's grid.

    Each level goes through its `embedding_kernels` kernel (zero padding, as the unfold's); deeper
    levels are then resized bilinearly to the first grid. Resizing before or after the channel pooling
    is the same linear map, so this equals the official unfold -> resize -> pool -> concatenate -> pool."""
    height, width = maps[0].shape[-2:]
    total: torch.Tensor | None = None
    for level, kernel in zip(maps, kernels):
        pooled = F.conv2d(level, kernel.to(level), padding=kernel.shape[-1] // 2)  # [b, target_dim, h_i, w_i]
        if pooled.shape[-2:] != (height, width):
            pooled = F.interpolate(pooled, size=(height, width), mode="bilinear", align_corners=False)
        total = pooled if total is None else total + pooled
    return total.permute(0, 2, 3, 1)  # [b, h, w, target_dim]


def augment_config(config: SimpleNetConfig, flips: bool) -> AugmentConfig:
    """The support views' augmentation: the config's flips (none when `flips` is False), rotation and jitter."""
    return AugmentConfig(hflip_p=config.hflip_p if flips else 0.0, vflip_p=config.vflip_p if flips else 0.0,
                         max_degrees=config.rotation_degrees, brightness=config.brightness,
                         contrast=config.contrast, saturation=config.saturation)


# ----------------------------------------------------------------------------------- modules
class Discriminator(nn.Module):
    """Patch features [n,d] -> normality logits [n,1]: Linear -> BatchNorm1d -> LeakyReLU(0.2) -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2))
        self.tail = nn.Linear(hidden, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(features))


def init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """Xavier-normal Linear weights (official code), PyTorch's default bias range, from `generator`."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight, generator=generator)
            if layer.bias is not None:
                bound = 1 / math.sqrt(layer.in_features)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


def truncated_l1_loss(true_scores: torch.Tensor, fake_scores: torch.Tensor, margin: float) -> torch.Tensor:
    """mean(relu(th - D(true))) + mean(relu(D(fake) + th)): zero once D separates the two by the margin."""
    return F.relu(margin - true_scores).mean() + F.relu(fake_scores + margin).mean()


# ----------------------------------------------------------------------------------- method
class SimpleNet:
    """Adaptor + discriminator trained on the k support images' patch features against noised copies."""

    name = "simplenet"

    def __init__(self, config: SimpleNetConfig) -> None:
        self.config = config
        self.adaptor: nn.Linear | None = None
        self.discriminator: Discriminator | None = None
        self.losses: list[float] = []  # one per step, for inspection and tests
        self._context: FitContext | None = None
        self._kernels: list[torch.Tensor] | None = None  # the fixed feature pooling, built on first use
        self._facts: dict[str, Any] = {}

    def embed(self, images: torch.Tensor, cached: bool = True) -> torch.Tensor:
        """Frozen patch features [b,h,w,target_dim]; through the shared cache unless `cached` is False."""
        c, features = self.config, self._context.features
        maps = (features.get if cached else features.compute)(c.backbone, images, c.levels)
        if self._kernels is None:
            channels = [level.shape[1] for level in maps]
            self._kernels = [kernel.to(maps[0].device) for kernel in
                             embedding_kernels(channels, c.patch_size, c.pretrain_dim, c.target_dim)]
        return neighbourhood_embedding(maps, self._kernels)

    def _training_pool(self, support: torch.Tensor, category: str) -> torch.Tensor:
        """Patch features of every support image and its views: [1 + views, k, h*w, target_dim]."""
        pool = [self.embed(support)]
        flips = category not in self.config.no_flip_categories
        views_config = augment_config(self.config, flips)
        for _ in range(self.config.augment_views):
            views = augment(support, views_config, self._context.generator)
            pool.append(self.embed(views, cached=False))
        self._facts.update(flips=flips and self.config.augment_views > 0, grid=list(pool[0].shape[1:3]))
        return torch.stack([p.flatten(1, 2) for p in pool])

    def fit(self, support: torch.Tensor, *, category: str, context: FitContext) -> None:
        """Train the adaptor and discriminator on the support images [k,3,H,W] for the configured epochs."""
        c, device, generator = self.config, context.device, context.generator
        self._context, self._facts, self.losses = context, {}, []
        self.adaptor = nn.Linear(c.target_dim, c.target_dim)
        self.discriminator = Discriminator(c.target_dim, c.discriminator_hidden)
        for module in (self.adaptor, self.discriminator):
            init_weights(module, generator)
            module.to(device).train()
        noise_generator = torch.Generator(device).manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        with torch.no_grad():
            pool = self._training_pool(support.to(device), category)  # [1 + views, k, h*w, d]
        optimisers = (
            torch.optim.AdamW(self.adaptor.parameters(), lr=c.adaptor_lr, weight_decay=c.adaptor_weight_decay),
            torch.optim.Adam(self.discriminator.parameters(), lr=c.discriminator_lr,
                             weight_decay=c.discriminator_weight_decay),
        )
        with torch.enable_grad(), torch_threads(c.train_threads if device.type == "cpu" else None):
            for true_features in self._training_batches(pool, generator):
                for optimiser in optimisers:
                    optimiser.zero_grad()
                loss = self._step_loss(true_features, noise_generator)
                loss.backward()
                for optimiser in optimisers:
                    optimiser.step()
                self.losses.append(float(loss.detach()))
        self.adaptor.eval()
        self.discriminator.eval()
        self._facts.update(steps=len(self.losses), pool_views=pool.shape[0], patches_per_image=pool.shape[2])

    def _training_batches(self, pool: torch.Tensor, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Each epoch: one view of every support image, in shuffled batches of `batch_size` images; yields
        the batch's patch features [B*h*w, d] (or a seeded sample of `patches_per_step` of them)."""
        c = self.config
        n_views, k = pool.shape[:2]
        for _ in range(c.meta_epochs * c.epochs_per_meta):
            order = torch.randperm(k, generator=generator)
            views = torch.randint(n_views, (k,), generator=generator)
            for start in range(0, k, c.batch_size):
                batch = order[start:start + c.batch_size]
                rows = pool[views[batch], batch].reshape(-1, c.target_dim)  # [B*h*w, d]
                if c.patches_per_step is not None and c.patches_per_step < len(rows):
                    rows = rows[torch.randperm(len(rows), generator=generator)[:c.patches_per_step].to(rows.device)]
                yield rows

    def _step_loss(self, true_features: torch.Tensor, noise_generator: torch.Generator) -> torch.Tensor:
        """Truncated L1 loss of one step; true and noised adapted features go through D as one batch."""
        adapted = self.adaptor(true_features)  # [n, d]
        noise = torch.randn(adapted.shape, generator=noise_generator, device=adapted.device) * self.config.noise_std
        scores = self.discriminator(torch.cat([adapted, adapted + noise])).squeeze(1)  # [2n]
        return truncated_l1_loss(scores[:len(adapted)], scores[len(adapted):], self.config.margin)

    @torch.no_grad()
    def patch_scores(self, images: torch.Tensor) -> torch.Tensor:
        """Patch anomaly scores -D(adaptor(feature)) on the feature grid: [b,h,w]."""
        features = self.embed(images)  # [b, h, w, d]
        b, h, w, d = features.shape
        return -self.discriminator(self.adaptor(features.reshape(-1, d))).view(b, h, w)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        scores = self.patch_scores(images)
        maps = upsample_and_blur(scores, images.shape[-2:], self.config.blur_sigma)
        return Prediction(scores=scores.flatten(1).max(dim=1).values, maps=maps)

    def info(self) -> dict[str, Any]:
        return {**asdict(self.config), **self._facts, "final_loss": self.losses[-1] if self.losses else None,
                "image_score": "max of the raw patch scores -D (before blur)", "checkpoint": "final"}


@register(
    "simplenet",
    config=SimpleNetConfig,
    presets={
        "paper": SimpleNetConfig(),
        "offline": SimpleNetConfig(backbone="lite0", pretrain_dim=256, target_dim=256, discriminator_hidden=170,
                                   noise_std=1.0, meta_epochs=100, patches_per_step=512, train_threads=1,
                                   augment_views=2),
    },
    summary="SimpleNet: adaptor + discriminator against Gaussian-noised features, score -D (max over patches)",
    trains=True,
)
def create_simplenet(config: SimpleNetConfig) -> SimpleNet:
    return SimpleNet(config)
