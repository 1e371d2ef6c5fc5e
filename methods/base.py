"""The `Method` protocol every registered method follows, and the records it exchanges with the harness.

`methods/` knows nothing of the harness: it receives image tensors and a `FitContext`, never file
paths or test labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol

import torch

if TYPE_CHECKING:
    from methods.backbones import FeatureCache


@dataclass(frozen=True)
class AuxiliaryCategory:
    """Normal images of a category other than the target, for methods trained off the target (RegAD)."""

    name: str
    images: torch.Tensor  # [n,3,H,W] in [0,1], the category's train/good images at the run's size


@dataclass(frozen=True)
class FitContext:
    """What a method may use besides its support images."""

    device: torch.device
    generator: torch.Generator  # seeded with the cell's seed: the only randomness a method may use
    features: "FeatureCache"  # shared backbone features, computed once per image per run
    auxiliary: Callable[[], Iterable[AuxiliaryCategory]] | None = None  # never the target category (RegAD)
    artifacts: Path | None = None  # runs/<id>/artifacts/<variant>/: kept across cells
    fitted: Mapping[str, "Method"] = field(default_factory=dict)  # members fitted in this cell (fusion)
    member_contexts: Mapping[str, "FitContext"] = field(default_factory=dict)  # the contexts they were fitted with


@dataclass(frozen=True)
class Prediction:
    """Scores for a batch of b images; higher = more anomalous.

    scores: [b]; maps: [b,H,W] at the input size, or None; extras: named per-image parts ([b] each).
    """

    scores: torch.Tensor
    maps: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Method(Protocol):
    """Fit on k support images [k,3,H,W] in [0,1], then score test batches."""

    name: str

    def fit(self, support: torch.Tensor, *, category: str, context: FitContext) -> None: ...

    def predict(self, images: torch.Tensor) -> Prediction: ...

    def info(self) -> dict[str, Any]: ...
