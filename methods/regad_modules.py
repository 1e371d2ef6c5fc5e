"""RegAD's networks: backbone stages with a spatial transformer after each, and the Siamese registration head.

Huang et al., "Registration based Few-Shot Anomaly Detection", ECCV 2022; official code
github.com/MediaBrain-SJTU/RegAD (models/stn.py, models/siamese.py, losses/norm_loss.py); the specification:
docs/REFERENCE.md, section "RegAD". Written from those files' facts; `methods/regad.py` holds the method and its
departures from the official code.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from methods.common import Normalise, warp

# STN mode -> the names of the parameters its localisation network predicts (official N_PARAMS order)
STN_MODES: dict[str, tuple[str, ...]] = {
    "affine": ("a00", "a01", "a02", "a10", "a11", "a12"),
    "translation": ("tx", "ty"),
    "rotation": ("angle",),
    "scale": ("sx", "sy"),
    "shear": ("shx", "shy"),
    "rotation_scale": ("angle", "sx", "sy"),
    "translation_scale": ("tx", "ty", "sx", "sy"),
    "rotation_translation": ("angle", "tx", "ty"),
    "rotation_translation_scale": ("angle", "tx", "ty", "sx", "sy"),
}
_IDENTITY = {"a00": 1.0, "a11": 1.0, "sx": 1.0, "sy": 1.0}  # every other parameter is 0 at the identity
STN_POOLED_SIZES = (14, 7, 4)  # official: the localisation maps of stages 1-3 at 224 px input (56 // (4 i))


def backbone_stages(model: nn.Module, levels: tuple[int, ...] = (1, 2, 3)) -> nn.ModuleList:
    """Split a timm backbone into one nn.Sequential per level, ending at that level's feature module.

    The modules are the model's children in order, with `Sequential` children named in feature_info
    (`blocks.1`) opened up: resnet18 gives [conv1..layer1], [layer2], [layer3]; tf_efficientnet_lite0
    gives [conv_stem, bn1, blocks.0, blocks.1], [blocks.2], [blocks.3, blocks.4] (strides 4, 8, 16).
    """
    ends = [model.feature_info[level]["module"] for level in levels]
    opened = {end.split(".")[0] for end in ends if "." in end}
    atoms: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if name in opened:
            atoms.extend((f"{name}.{index}", block) for index, block in enumerate(child))
        else:
            atoms.append((name, child))
    stages, current = [], []
    for name, module in atoms:
        current.append(module)
        if name in ends:
            stages.append(nn.Sequential(*current))
            current = []
            if len(stages) == len(ends):
                return nn.ModuleList(stages)
    raise ValueError(f"feature modules {ends} not all found among {[name for name, _ in atoms]}")


def affine_from_params(params: torch.Tensor, mode: str) -> torch.Tensor:
    """STN parameters [b,n] -> affine matrices [b,2,3] (the official parameterisation of each mode)."""
    if mode == "affine":
        return params.view(-1, 2, 3)
    named = dict(zip(STN_MODES[mode], params.unbind(dim=1)))
    zero = params.new_zeros(params.shape[0])

    def get(key: str) -> torch.Tensor:  # a predicted parameter, or its identity value when the mode lacks it
        return named.get(key, zero + _IDENTITY.get(key, 0.0))

    angle, sx, sy = get("angle"), get("sx"), get("sy")
    rows = [
        torch.stack([torch.cos(angle) * sx, -torch.sin(angle) + get("shx"), get("tx")], dim=1),
        torch.stack([torch.sin(angle) + get("shy"), torch.cos(angle) * sy, get("ty")], dim=1),
    ]
    return torch.stack(rows, dim=1)


def homogeneous(theta: torch.Tensor) -> torch.Tensor:
    """Affine matrices [b,2,3] -> [b,3,3] with a last row (0, 0, 1)."""
    last = theta.new_tensor([0.0, 0.0, 1.0]).expand(theta.shape[0], 1, 3)
    return torch.cat([theta, last], dim=1)


class STN(nn.Module):
    """A spatial transformer: a small localisation network predicts an affine warp of its input map."""

    def __init__(self, channels: int, pooled_size: int, mode: str = "rotation_scale") -> None:
        super().__init__()
        if mode not in STN_MODES:
            raise ValueError(f"unknown stn_mode {mode!r}; choose one of {', '.join(STN_MODES)}")
        self.mode = mode
        names = STN_MODES[mode]
        self.localise = nn.Sequential(
            nn.Conv2d(channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(64, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.AdaptiveAvgPool2d(pooled_size),  # identity at 224 px input; any other size maps onto it
            nn.Flatten(),
            nn.Linear(16 * pooled_size * pooled_size, 1024), nn.ReLU(),
            nn.Linear(1024, len(names)),
        )
        last = self.localise[-1]
        nn.init.zeros_(last.weight)  # official: zero weights and identity bias, so the warp starts as identity
        with torch.no_grad():
            last.bias.copy_(torch.tensor([_IDENTITY.get(name, 0.0) for name in names]))

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Warped maps [b,C,h,w] and the affine matrices [b,2,3] used."""
        theta = affine_from_params(self.localise(maps), self.mode)
        return warp(maps, theta), theta


def _conv1x1(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 1, bias=False)


class Encoder(nn.Module):
    """Siamese encoder: three 1x1 convolutions, BatchNorm and ReLU after the first two (official)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv1x1(channels), nn.BatchNorm2d(channels), nn.ReLU(),
                                  _conv1x1(channels), nn.BatchNorm2d(channels), nn.ReLU(), _conv1x1(channels))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.body(maps)


class Predictor(nn.Module):
    """Siamese predictor: 1x1 conv -> BatchNorm -> ReLU -> 1x1 conv (official)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv1x1(channels), nn.BatchNorm2d(channels), nn.ReLU(), _conv1x1(channels))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.body(maps)


def negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-position negative cosine similarity [b,h,w]; the target is a constant (stop-gradient)."""
    return -F.cosine_similarity(prediction, target.detach(), dim=1)


def registration_loss(p_query: torch.Tensor, z_query: torch.Tensor, p_support: torch.Tensor,
                      z_support: torch.Tensor) -> torch.Tensor:
    """Symmetric SimSiam loss: each side's prediction against the other side's (detached) encoding."""
    return (negative_cosine(p_query, z_support).mean() + negative_cosine(p_support, z_query).mean()) / 2


class RegADNet(nn.Module):
    """Backbone stages 1-3 each followed by an STN, plus the encoder/predictor on the stage-3 output."""

    def __init__(self, backbone: nn.Module, mean: torch.Tensor, std: torch.Tensor, normalize: bool,
                 stn_mode: str = "rotation_scale") -> None:
        super().__init__()
        self.stages = backbone_stages(backbone)
        channels = [backbone.feature_info[level]["num_chs"] for level in (1, 2, 3)]
        self.stns = nn.ModuleList(STN(c, size, stn_mode) for c, size in zip(channels, STN_POOLED_SIZES))
        self.encoder = Encoder(channels[-1])
        self.predictor = Predictor(channels[-1])
        self.normalize = normalize
        self.normalise = Normalise(mean, std)
        self.channels = channels

    def _stages(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each stage's STN-warped map and its affine matrices [b,2,3]."""
        x = self.normalise(images) if self.normalize else images
        x = x.contiguous(memory_format=torch.channels_last)
        maps, thetas = [], []
        for stage, stn in zip(self.stages, self.stns):
            x, theta = stn(stage(x))
            maps.append(x)
            thetas.append(theta)
        return maps, thetas

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The registered stage-3 map [b,C3,H/16,W/16] that the Siamese head compares."""
        return self._stages(images)[0][-1]

    def head(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoding z and prediction p of stage-3 maps, both [b,C3,h,w]."""
        z = self.encoder(maps)
        return z, self.predictor(z)

    def restored_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's STN output mapped back to image coordinates by the inverse of every warp so far.

        Stage i's output lives in the frame of theta_1..theta_i; one resampling with the composed inverse
        inv(theta_i) ... inv(theta_1) brings it back (the official code chains i resamplings instead).
        """
        maps, thetas = self._stages(images)
        restored, inverse = [], None
        for level_map, theta in zip(maps, thetas):
            step = torch.linalg.inv(homogeneous(theta.float()))  # [b,3,3]
            inverse = step if inverse is None else step @ inverse
            restored.append(warp(level_map, inverse[:, :2].to(level_map.dtype)))
        return restored


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Cosine schedule from base_lr at epoch 0 towards 0 after the last epoch."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
