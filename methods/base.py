"""The public method API: the `Method` protocol, the records a method exchanges with the harness, and what the
registry knows of a method before any cell runs (`MethodEntry`: its config, presets, flags and `Requirements`).

`methods/` knows nothing of the harness: a method receives image tensors and a `FitContext`, never file
paths or test labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import torch

if TYPE_CHECKING:
    from methods.features import FeatureCache


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

    variant: MethodVariant
    method: Method
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


@dataclass(frozen=True)
class WeightFile:
    """One weight file a method config needs before any cell runs: a backbone (`name` one of
    `methods.backbones.BACKBONES`) or, with a `tag`, an open_clip tower (`name` the model, `tag` its pretrained tag).
    `name` is also the `--weights NAME=PATH` key."""

    name: str
    tag: str | None = None

    @property
    def is_clip(self) -> bool:
        return self.tag is not None


@dataclass(frozen=True)
class Requirements:
    """What a config needs up front: its weight files, and where its auxiliary categories come from (methods
    trained off the target, such as RegAD: `procedural`, `dataset` or a folder; None: it needs none); or why it
    cannot run here at all (`unavailable`: a missing optional package, a model no few-shot cell can fit)."""

    weights: tuple[WeightFile, ...] = ()
    auxiliary_source: str | None = None
    unavailable: str | None = None  # why this config cannot run here at all (the pre-flight skips it, saying so)


def backbone_requirements(config: Any) -> Requirements:
    """The default declaration: the backbones named by the config's `backbone` field or `backbones` tuple."""
    names = getattr(config, "backbones", None)
    if names is None:
        names = (config.backbone,) if getattr(config, "backbone", None) else ()
    return Requirements(tuple(WeightFile(name) for name in names))


@dataclass(frozen=True)
class MethodEntry:
    """What the registry knows of a method before any cell runs."""

    name: str
    factory: Callable[..., Method]
    config: type
    presets: dict[str, Any]  # preset name -> config instance
    summary: str
    trains: bool = False  # trains a network (in the cell, or once per category like RegAD's meta-training)
    uses_auxiliary: bool = False  # needs other categories (RegAD): `Requirements.auxiliary_source` says which
    needs_fitted: bool = False  # consumes other members fitted in the same cell (fusion): give `members`
    cheap_fit: bool = False  # its per-cell fit trains nothing (a memory, a Gaussian): fusion refits it leave-one-out
    # its image score is a distance to the normal data (nearest neighbour, Mahalanobis): positive, its spread over
    # normal images growing with its level; fusion floors its scale at a fraction of its held-out mean
    distance_scores: bool = False
    uses_anomalies: bool = False  # receives labelled anomalies (`FitContext.anomalies`) when the run has them (BGAD)
    requires: Callable[[Any], Requirements] = backbone_requirements  # config -> what it needs up front
    members: Callable[[Any, Sequence["MethodVariant"]], list["MethodVariant"]] | None = None
    # a fusing method's choice of members among the candidates (raises ValueError when it cannot choose)
    in_default_run: bool = True  # False: only run when named in --methods (it needs an argument, e.g. `vand:DIR`)
    positional: str | None = None  # the config field a bare value after the name sets (`vand:DIR` = `vand:dir=DIR`)
    source: str = "builtin"  # where the method comes from: builtin, or the plugin / package that registered it

    def requirements(self, config: Any) -> Requirements:
        """Every weight file the config needs (CLIP towers included) and its auxiliary source."""
        return self.requires(config)


@dataclass(frozen=True)
class MethodVariant:
    """A method variant as the run names it: its spec, registry entry and checked config."""

    spec: str
    entry: MethodEntry
    config: Any

    def create(self) -> Method:
        """A new, unfitted instance."""
        return self.entry.factory(self.config)
