"""Fitting one cell, the one way: build each variant, seed it, hand it its context, fit members before the
methods that fuse them.

The runner, the VAND entry point, `verify`, the benches and the tests fit through `fit_method` / `fit_cell`, so a
variant is fitted the same way wherever it runs; fusion's leave-one-out refits go through `refit`, which reuses the
member's own context with the fusion's random stream (the global RNG is not reseeded between refits). RNG policy: before a
variant fits, torch's global RNG is seeded with the cell's seed (as the VAND kit does) and the variant gets its
own `torch.Generator` seeded with the same seed; a method draws every random number from that generator.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import torch

from methods.base import AuxiliaryCategory, FitContext, FittedMember, LabelledAnomalies, Method, MethodVariant
from methods.features import FeatureCache
from runfolder.schema import variant_dirname


@dataclass(frozen=True)
class CellSetting:
    """What every variant of one (category, k, seed) cell shares."""

    category: str
    seed: int
    device: torch.device
    features: FeatureCache  # owned by the run: features (and content caches) outlive the cell
    artifacts: Path | None = None  # a variant keeps what it reuses across cells in artifacts/<variant dir>
    auxiliary: Callable[[str], Iterable[AuxiliaryCategory]] | None = None  # a `source` option -> other categories
    anomalies: LabelledAnomalies | None = None  # the cell's labelled anomalies (--anomaly-shots): for `uses_anomalies`


def _context(variant: MethodVariant, setting: CellSetting, members: Mapping[str, FittedMember]) -> FitContext:
    auxiliary = None
    source = variant.entry.requirements(variant.config).auxiliary_source
    if source is not None and setting.auxiliary is not None:
        load = setting.auxiliary
        auxiliary = lambda: load(source)  # noqa: E731  (loaded only if the method needs to train)
    artifacts = None if setting.artifacts is None else Path(setting.artifacts) / variant_dirname(variant.spec)
    generator = torch.Generator().manual_seed(setting.seed)
    anomalies = setting.anomalies if variant.entry.uses_anomalies else None  # the others never see them
    return FitContext(setting.device, generator, setting.features, auxiliary, artifacts, dict(members), anomalies)


def fit_method(variant: MethodVariant, support: torch.Tensor, setting: CellSetting,
               members: Mapping[str, FittedMember] | None = None, global_seed: int | None = None) -> FittedMember:
    """A new instance of `variant` fitted on `support` [k,3,H,W] in [0,1]; `members` are the variants fitted
    before it in the cell (a fusing method combines them). torch's global RNG is seeded with the cell's seed, as
    the VAND kit does, or with `global_seed` (the contract check: a method must not draw from it)."""
    method = variant.create()
    context = _context(variant, setting, members or {})
    torch.manual_seed(setting.seed if global_seed is None else global_seed)
    # a fusing method scores its members on views and pseudo-anomalies of the support images: not worth caching
    scope = setting.features.lookup_only() if variant.entry.needs_fitted else nullcontext()
    start = time.perf_counter()
    with scope:
        method.fit(support.to(setting.device), category=setting.category, context=context)
    return FittedMember(variant, method, context, time.perf_counter() - start)


def in_fitting_order(variants: Iterable[MethodVariant]) -> list[MethodVariant]:
    """Members first, then the methods that consume fitted members (fusion); otherwise in the given order."""
    variants = list(variants)
    return [v for v in variants if not v.entry.needs_fitted] + [v for v in variants if v.entry.needs_fitted]


def fit_cell(variants: Sequence[MethodVariant], support: torch.Tensor, setting: CellSetting) -> dict[str, FittedMember]:
    """Every variant of a cell fitted in order (members before fusion), by spec; an error propagates."""
    fitted: dict[str, FittedMember] = {}
    for variant in in_fitting_order(variants):
        fitted[variant.spec] = fit_method(variant, support, setting, fitted)
    return fitted


def refit(member: FittedMember, support: torch.Tensor, category: str, generator: torch.Generator) -> Method:
    """A fresh instance of a fitted member's variant fitted on other support images, with the member's own context
    (its auxiliary categories, artifacts) but the caller's random stream; for held-out statistics (fusion)."""
    method = member.variant.create()
    context = replace(member.context, generator=generator, members={})
    method.fit(support, category=category, context=context)
    return method
