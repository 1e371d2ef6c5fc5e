"""The `Method` protocol every registered method follows, and the records it exchanges with the harness.

`methods/` knows nothing of the harness: it receives image tensors and a `FitContext`, never file
paths or test labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from methods.backbones import FeatureCache
    from methods.registry import MethodVariant


@dataclass(frozen=True)
class AuxiliaryCategory:
    """Normal images of a category other than the target, for methods trained off the target (RegAD)."""

    name: str
    images: torch.Tensor  # [n,3,H,W] in [0,1], the category's train/good images at the run's size


@dataclass(frozen=True)
class LabelledAnomalies:
    """Labelled anomalous images of the target category with their masks (the `--anomaly-shots` track): given
    only to methods registered with `uses_anomalies=True` (BGAD)."""

    images: torch.Tensor  # [m,3,H,W] in [0,1], at the run's size
    masks: torch.Tensor  # [m,H,W] in {0,1}: 1 = anomalous pixel


@dataclass(frozen=True)
class FitContext:
    """What a method may use besides its support images."""

    device: torch.device
    generator: torch.Generator  # seeded with the cell's seed: the only randomness a method may use
    features: "FeatureCache"  # shared backbone features, computed once per image per run
    auxiliary: Callable[[], Iterable[AuxiliaryCategory]] | None = None  # never the target category (RegAD)
    artifacts: Path | None = None  # runs/<id>/artifacts/<variant>/: kept across cells
    members: Mapping[str, "FittedMember"] = field(default_factory=dict)  # variants fitted before, in this cell (fusion)
    anomalies: LabelledAnomalies | None = None  # None: m = 0 labelled anomalies (the VAND protocol)


@dataclass(frozen=True)
class FittedMember:
    """One method variant fitted in a cell: what was built, the instance, the context it saw, its fit time."""

    variant: "MethodVariant"
    method: "Method"
    context: FitContext
    fit_s: float = 0.0


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
    config: Any  # the frozen config dataclass the method was built from

    def fit(self, support: torch.Tensor, *, category: str, context: FitContext) -> None: ...

    def predict(self, images: torch.Tensor) -> Prediction: ...

    def info(self) -> dict[str, Any]: ...


@runtime_checkable
class FusingMethod(Method, Protocol):
    """A method that combines members fitted before it in the same cell (fusion).

    After `fit`, `members` holds the member instances it fuses, by variant spec; `combine` turns their
    predictions on the same images into its own, so the harness never predicts a member twice."""

    members: Mapping[str, Method]

    def combine(self, predictions: Mapping[str, Prediction]) -> Prediction: ...
