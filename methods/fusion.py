"""Z-score fusion of registered methods: each member's scores standardised on held-out normals, then summed.

The GCAD paper combines its branches this way; PUAD standardises with numpy mean/std (ddof 0), as
here. Under the few-shot rules the normal statistics come only from the k support images:
- `holdout=auto` (default): training-free members (PatchCore, clip_logic) use leave-one-out — refit
  on k-1 supports, score the held-out one, in turn (for k = 2 also `loo_views` views of it: two
  held-out scores alone are too few for a std); trained members (SimpleNet, GCAD,
  RegAD) score augmented views of the supports with the member fitted in the cell (cheap; the views
  are close to what the member trained on, so its statistics are optimistic — measured in
  BENCHMARKS.md).
- `holdout=loo` / `refit`: leave-one-out refits for every member; `holdout=augment`: views for all.
- k = 1 always uses augmented views (nothing to leave out).
The members are the instances fitted before it in the same cell (`FitContext.members`): fusion never
refits a member to score the test set, and the runner hands it the members' test predictions it already
made (`combine`), so fusion costs only its held-out statistics and a weighted sum. A member with
constant held-out scores gets std 1 (no division by zero). Maps are fused when every member has them;
each map is standardised by the member's held-out map pixels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping, get_args

import torch

from methods.augment import AugmentConfig, augmented_views
from methods.base import FitContext, FittedMember, Method, Prediction
from methods.cell import refit
from methods.options import NonNegativeFloat, NonNegativeInt, PositiveInt
from methods.registry import register
from methods.standardise import Standardiser

Holdout = Literal["auto", "loo", "refit", "augment"]
HOLDOUTS = get_args(Holdout)
# Views for held-out statistics: a small rotation and brightness/contrast jitter, never a flip. A flip swaps
# slots in layout categories (part_slots, breakfast_box): a logic-aware member would score those views as
# anomalous, and their spread would wrongly shrink that member's z-scores.
HOLDOUT_VIEWS = AugmentConfig(max_degrees=5.0, brightness=0.1, contrast=0.1)


@dataclass(frozen=True)
class FusionConfig:
    members: tuple[str, ...] = ()  # variant specs or method names; empty = every member fitted in the cell
    weights: tuple[NonNegativeFloat, ...] = ()  # empty = equal weights (our default; no tuning on real test sets)
    holdout: Holdout = "auto"  # auto | loo | refit | augment (see the module docstring)
    views: PositiveInt = 4  # augmented views per support image (statistics for trained members, and k = 1)
    # views of each left-out image scored with it, for k <= loo_views_max_k only. Chosen on the procedural data
    # (BENCHMARKS.md): at k = 2 leave-one-out gives two scores, and views lifted the fused mean AUROC from 0.700
    # to 0.742; at k = 4 and 8 they lowered it (0.814 -> 0.794, 0.874 -> 0.847): their spread inflates the std
    # of a logic-aware member (clip_logic) and shrinks its weight.
    loo_views: NonNegativeInt = 4
    loo_views_max_k: NonNegativeInt = 2
    fuse_maps: bool = True


class Fusion:
    """Weighted sum of members' z-scored image scores (and maps)."""

    name = "fusion"

    def __init__(self, config: FusionConfig) -> None:
        if config.holdout not in HOLDOUTS:
            raise ValueError(f"fusion holdout {config.holdout!r}: choose one of {', '.join(HOLDOUTS)}")
        self.config = config
        self.members: dict[str, Method] = {}
        self.score_stats: dict[str, Standardiser] = {}
        self.map_stats: dict[str, Standardiser] = {}
        self.holdout_used: dict[str, str] = {}

    def _select_members(self, fitted: Mapping[str, FittedMember]) -> dict[str, FittedMember]:
        candidates = {spec: m for spec, m in fitted.items() if not m.variant.entry.needs_fitted}
        if not self.config.members:
            chosen = candidates
        else:
            chosen = {}
            for wanted in self.config.members:
                matches = {s: m for s, m in candidates.items() if s == wanted or m.variant.entry.name == wanted}
                if not matches:
                    raise RuntimeError(f"fusion member {wanted!r} was not fitted in this cell; "
                                       f"fitted: {', '.join(candidates) or 'none'} (add it to --methods)")
                chosen.update(matches)
        if not chosen:
            raise RuntimeError("fusion has no fitted member in this cell")
        if self.config.weights and len(self.config.weights) != len(chosen):
            raise RuntimeError(f"fusion weights has {len(self.config.weights)} values for {len(chosen)} members")
        return chosen

    def _holdout_predictions(self, member: FittedMember, support: torch.Tensor, category: str,
                             context: FitContext) -> tuple[str, Prediction]:
        """Predictions of the member on normal images it did not fit on (held-out supports or views)."""
        mode = self.config.holdout
        if mode == "auto":
            mode = "augment" if member.variant.entry.trains else "loo"
        if len(support) == 1 or mode == "augment":
            views = augmented_views(support, self.config.views * len(support), HOLDOUT_VIEWS, context.generator)
            return "augment", member.method.predict(views)
        parts = []
        for held_out in range(len(support)):  # refit on k-1 supports, score the one left out (and its views)
            rest = torch.cat([support[:held_out], support[held_out + 1:]])
            fresh = refit(member, rest, category, context.generator)
            image = support[held_out:held_out + 1]
            if self.config.loo_views and len(support) <= self.config.loo_views_max_k:
                image = torch.cat([image, augmented_views(image, self.config.loo_views, HOLDOUT_VIEWS,
                                                          context.generator)])
            parts.append(fresh.predict(image))
        maps = None if parts[0].maps is None else torch.cat([p.maps for p in parts])
        return "leave-one-out", Prediction(torch.cat([p.scores for p in parts]), maps)

    def fit(self, support: torch.Tensor, *, category: str, context: FitContext) -> None:
        chosen = self._select_members(context.members)
        self.members = {spec: member.method for spec, member in chosen.items()}
        with torch.no_grad():
            for spec, member in chosen.items():
                self.holdout_used[spec], held = self._holdout_predictions(member, support, category, context)
                self.score_stats[spec] = Standardiser.fit(held.scores.double())
                if held.maps is not None:
                    self.map_stats[spec] = Standardiser.fit(held.maps.double())

    def predict(self, images: torch.Tensor) -> Prediction:
        return self.combine({spec: member.predict(images) for spec, member in self.members.items()})

    def combine(self, predictions: Mapping[str, Prediction]) -> Prediction:
        """The fused prediction from the members' predictions on the same images (one per member spec).

        The runner calls this with the test predictions it already made for each member in the cell, so
        fusion never runs a member on the test set a second time."""
        weights = self.config.weights or (1.0,) * len(self.members)
        fuse_maps = self.config.fuse_maps and len(self.map_stats) == len(self.members)
        score, fused_map, extras = None, None, {}
        for weight, spec in zip(weights, self.members):
            prediction = predictions[spec]
            extras[f"z_{spec}"] = z = self.score_stats[spec](prediction.scores.float())
            score = weight * z if score is None else score + weight * z
            if fuse_maps and prediction.maps is not None:
                z_map = weight * self.map_stats[spec](prediction.maps.float())
                fused_map = z_map if fused_map is None else fused_map + z_map
        return Prediction(scores=score, maps=fused_map, extras=extras)

    def info(self) -> dict[str, Any]:
        return {**asdict(self.config), "fused": list(self.members), "holdout_used": self.holdout_used,
                "stats": {s: v.facts() for s, v in self.score_stats.items()}}


@register(
    "fusion",
    config=FusionConfig,
    presets={"paper": FusionConfig(), "offline": FusionConfig()},
    summary="z-score fusion of the other methods fitted in the cell (statistics from the support set only)",
    needs_fitted=True,
)
def create_fusion(config: FusionConfig) -> Fusion:
    return Fusion(config)
