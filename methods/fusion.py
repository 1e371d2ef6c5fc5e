"""Z-score fusion of registered methods: each member's scores standardised on held-out normals, then summed.

The GCAD paper combines its branches this way; PUAD standardises with numpy mean/std (ddof 0), as
here. Under the few-shot rules the normal statistics come only from the k support images.

Held-out normals (`holdout`):
- `auto` (default): every member whose per-cell fit trains nothing (`cheap_fit` in the registry: PatchCore,
  clip_logic, RegAD — RegAD meta-trains once per category off the target, and its per-cell fit is only a
  Gaussian over support features) is refitted on k-1 supports and scores the one left out, in turn (for
  k <= `loo_views_max_k` also `loo_views` views of it; off by default: on the dev split views of the left-out
  images lowered the fused AUROC at k = 2, 0.760 -> 0.735 mean of logical and structural).
  Members that train in the cell (SimpleNet, GCAD) score augmented views of the supports with the member
  fitted in the cell: cheap, but the views are close to what the member trained on, so its statistics are
  optimistic (a smaller spread than unseen normals).
- `views_if_trains`: the previous default: views for every member that trains at all (RegAD included: its
  Gaussian was fitted on augmented views of the same supports, so their spread is tiny and its z-scores
  blow up). Kept to reproduce earlier results.
- `loo` / `refit`: leave-one-out refits for every member; `augment`: views for all.
- k = 1 always uses augmented views (nothing to leave out).

Members: with no `members` named, fusion fuses the members whose per-cell fit is cheap (`cheap_fit`), whose
held-out normals are honest leave-one-out refits for k >= 2; members that train in the cell join only when
named or with `trained_members=true`. Chosen on the procedural dev split: there, the views-based statistics of
the trained members were far from their test normals (GCAD's z-scores on the dev split's normal test images
had a mean of ~200 and a std of ~96 at k = 1, SimpleNet's ~14 and ~5: one member outvoted the rest); fusing
the three leave-one-out members beat fusing all five at every k on the 12 dev cells measured with every
member (11 of cable_pair, 1 of part_slots; re-fused from one run by `bench/fusion_design.py`), and beat each
of its members in mean AUROC and F1-max at every k over the three dev categories (BENCHMARKS.md, "Fusion design on
the dev split").

Each member's z-score is (score - mean) / scale, the mean from its held-out normals and the scale by `scale`:
- `geomean` (default): the geometric mean of two spreads, sqrt(std(held-out) x std(views)): the held-out one
  above, and the std of the member fitted in the cell on `views` augmented views per support (a random stream of
  its own, so the held-out statistics are the same under either scale). Leave-one-out spreads come from k models
  with k-1 supports and few points (two at k = 2: one draw of |a - b| / 2), views' spreads are steady but small
  (views stay close to what the member fitted on); each errs in its own direction, and the geometric mean sits
  between. Chosen on the procedural dev split (k = 1, 2, 4, 8 x 3 seeds; BENCHMARKS.md "Fusion scale on the dev
  split"), among the held-out std, the views std, their root-sum-square, a pooled std, pseudo-anomaly gaps and
  weights from them: in a first, exploratory pass it was the only rule within 0.01 of the best member in logical
  and structural AUROC and F1-max at every k; re-measured with this code, it and the views std, root-sum-square
  and pooled std are all within 0.01 at k = 2, 4 and 8 (largest shortfall 0.005 for this rule) and 0.016-0.019
  short at k = 1 with the rotated views of that time, while the held-out std alone fell 0.018 short (logical
  AUROC at k = 4).
  A choice within the noise of 9 cells per k; the views below closed the gap at k = 1.
- `holdout`: the held-out std alone (the previous default; kept to reproduce earlier results).
At k = 1 the held-out normals are views too, so `geomean` joins two independent draws of views. The views:
`views` per support image (4), brightness and contrast jitter `view_jitter` (0.1), rotation up to `view_degrees`
(0: none). Chosen on the dev split (BENCHMARKS.md "Fusion views on the dev split"): with the earlier 5 degrees
fusion stayed 0.019 below RegAD's structural AUROC at k = 1; without rotation it was within 0.01 of its best
member at every k and metric (largest shortfall 0.009), 2 degrees fell between; 16 views changed little, and
stronger views (15 degrees, 0.3) lifted k = 1 but lowered the logical AUROC at every k. What moved: at k = 1
the z-scores' spread on the dev split's normal test images went from 1.04 / 1.05 / 2.71 (PatchCore / RegAD /
clip_logic) to 2.29 / 2.96 / 5.93, so RegAD, the best structural member there, weighs more next to PatchCore:
RegAD models each position's features, and a rotation moves features off their positions.

Member weights (`weighting`), without test images and without labels:
- `equal`: every member weighs 1.
- `pseudo`: each member's weight is how well it tells its held-out normals from pseudo-anomalies made on
  them (`methods.augment.pseudo_anomalies`: a jittered region of the image pasted elsewhere), as
  max(AUROC - 1/2, 0), scaled so the weights sum to the number of members (all equal when no member
  separates them). Scored by the same held-out fits as the statistics, with their own random stream, so the
  statistics do not depend on the weighting.
Explicit `weights` override both. Other combiners than the weighted sum were tried on the dev split with today's
views and 6 seeds (`bench/fusion_scale.py`; BENCHMARKS.md "Fusion combiners and weights on the dev split"): there
the default is above its best member at every k and metric, and sum + max is as close, not closer beyond the noise;
a sum of sign(z) log(1 + |z|) and the median mute a member's strong detection (lower logical AUROC); the `pseudo`
weights cost structural AUROC at k = 2 (the pseudo-anomalies are told from normals perfectly by a member in most
(cell, member) pairs, so they cannot tell the members apart); weighing a member down by min(1, views std /
held-out std) fell 0.015 short. The defaults (members, `weighting=equal`, `loo_views_max_k=0`) were chosen
on the procedural dev split (`python -m submission run --procedural-split dev`, k = 1, 2, 4, 8 x 3 seeds), never
on a reported split; `pseudo` weights were no better there (F1-max averaged over k 0.861 both; mean AUROC
within 0.015 at every k). BENCHMARKS.md section "Fusion design on the dev split" has the comparison.

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

from methods.augment import AugmentConfig, PseudoAnomalyConfig, augmented_views, pseudo_anomalies
from methods.base import FitContext, FittedMember, Method, Prediction
from methods.cell import refit
from methods.options import NonNegativeFloat, NonNegativeInt, PositiveInt
from methods.registry import register
from methods.standardise import Standardiser

Holdout = Literal["auto", "views_if_trains", "loo", "refit", "augment"]
HOLDOUTS = get_args(Holdout)
Weighting = Literal["equal", "pseudo"]
Scale = Literal["geomean", "holdout"]
SCALES = get_args(Scale)
# Views for held-out statistics: brightness/contrast jitter, no rotation (chosen on the dev split: a rotation
# moves features off their positions, so a member that models each position, RegAD, spreads far more on rotated
# views than on aligned normal test images and weighs too little), never a flip (a flip swaps slots in layout
# categories, part_slots and breakfast_box: a logic-aware member would score those views as anomalous).
HOLDOUT_VIEWS = AugmentConfig(max_degrees=0.0, brightness=0.1, contrast=0.1)  # the defaults of the two options below
PSEUDO_ANOMALIES = PseudoAnomalyConfig()


def holdout_views(config: "FusionConfig") -> AugmentConfig:
    """The views' augmentation: rotation up to `view_degrees`, brightness and contrast jitter `view_jitter`."""
    return AugmentConfig(max_degrees=config.view_degrees, brightness=config.view_jitter, contrast=config.view_jitter)


@dataclass(frozen=True)
class FusionConfig:
    members: tuple[str, ...] = ()  # variant specs or method names; empty = the members chosen by `trained_members`
    # with no `members`: False = every fitted member whose per-cell fit trains nothing (`cheap_fit`: held out by
    # leave-one-out); True = every fitted member (chosen on the dev split: see the module docstring)
    trained_members: bool = False
    weights: tuple[NonNegativeFloat, ...] = ()  # explicit weights (override `weighting`)
    weighting: Weighting = "equal"  # equal | pseudo (see the module docstring; chosen on the dev split)
    scale: Scale = "geomean"  # geomean | holdout (see the module docstring; chosen on the dev split)
    holdout: Holdout = "auto"  # see the module docstring
    views: PositiveInt = 4  # augmented views per support image (statistics for trained members, and k = 1)
    view_degrees: NonNegativeFloat = HOLDOUT_VIEWS.max_degrees  # the views' rotation range (never a flip)
    view_jitter: NonNegativeFloat = HOLDOUT_VIEWS.brightness  # the views' brightness and contrast jitter
    # views of each left-out image scored with it, for k <= loo_views_max_k only (chosen on the dev split)
    loo_views: NonNegativeInt = 4
    loo_views_max_k: NonNegativeInt = 0
    fuse_maps: bool = True
    # method_info keeps every member's held-out, views and pseudo-anomaly scores (bench/fusion_scale.py re-fuses
    # them under other scales); the fused scores do not change
    record_spreads: bool = False


def separation(normal: torch.Tensor, anomalous: torch.Tensor) -> float:
    """AUROC of anomalous vs normal scores (the Mann-Whitney statistic; ties count 1/2)."""
    difference = anomalous.double()[:, None] - normal.double()[None, :]
    return float(((difference > 0).double() + 0.5 * (difference == 0).double()).mean())


def geometric_scale(held_out: Standardiser, view_scores: torch.Tensor) -> Standardiser:
    """The held-out mean, and the geometric mean of the held-out scale and the views' scale."""
    views = Standardiser.fit(view_scores)
    return Standardiser(held_out.mean, torch.sqrt(held_out.scale * views.scale.to(held_out.scale)))


def pseudo_weights(separations: Mapping[str, float]) -> dict[str, float]:
    """Weights max(AUROC - 1/2, 0) scaled to sum to the number of members; equal when all are 0."""
    raw = {spec: max(value - 0.5, 0.0) for spec, value in separations.items()}
    total = sum(raw.values())
    if total <= 0:
        return {spec: 1.0 for spec in raw}
    return {spec: len(raw) * value / total for spec, value in raw.items()}


class Fusion:
    """Weighted sum of members' z-scored image scores (and maps)."""

    name = "fusion"

    def __init__(self, config: FusionConfig) -> None:
        if config.holdout not in HOLDOUTS:
            raise ValueError(f"fusion holdout {config.holdout!r}: choose one of {', '.join(HOLDOUTS)}")
        if config.scale not in SCALES:
            raise ValueError(f"fusion scale {config.scale!r}: choose one of {', '.join(SCALES)}")
        self.config = config
        self.members: dict[str, Method] = {}
        self.score_stats: dict[str, Standardiser] = {}
        self.map_stats: dict[str, Standardiser] = {}
        self.holdout_used: dict[str, str] = {}
        self.separations: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.spreads: dict[str, dict[str, list[float]]] = {}

    def _select_members(self, fitted: Mapping[str, FittedMember]) -> dict[str, FittedMember]:
        candidates = {spec: m for spec, m in fitted.items() if not m.variant.entry.needs_fitted}
        if not self.config.members:
            chosen = {spec: m for spec, m in candidates.items()
                      if self.config.trained_members or m.variant.entry.cheap_fit}
            if candidates and not chosen:
                raise RuntimeError(f"fusion: no member with a cheap per-cell fit (PatchCore, clip_logic, RegAD) was "
                                   f"fitted in this cell (fitted: {', '.join(candidates)}); name its members "
                                   "(fusion:members=...) or set fusion:trained_members=true")
        else:
            chosen = {}
            for wanted in self.config.members:  # an exact spec, else every variant of the method of that name
                matches = ({wanted: candidates[wanted]} if wanted in candidates else
                           {s: m for s, m in candidates.items() if m.variant.entry.name == wanted})
                if not matches:
                    raise RuntimeError(f"fusion member {wanted!r} was not fitted in this cell; "
                                       f"fitted: {', '.join(candidates) or 'none'} (add it to --methods)")
                chosen.update(matches)
        if not chosen:
            raise RuntimeError("fusion has no fitted member in this cell")
        if self.config.weights and len(self.config.weights) != len(chosen):
            raise RuntimeError(f"fusion weights has {len(self.config.weights)} values for {len(chosen)} members")
        return chosen

    def _mode(self, member: FittedMember, k: int) -> str:
        """How the member's held-out normals are made: `augment` (views) or `loo` (refits)."""
        mode, entry = self.config.holdout, member.variant.entry
        if mode == "auto":
            mode = "loo" if entry.cheap_fit else "augment"
        elif mode == "views_if_trains":
            mode = "augment" if entry.trains else "loo"
        return "augment" if k == 1 else mode

    def _support_views(self, support: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`views` augmented views of each support image (the held-out normals at k = 1, and the scale's views)."""
        return augmented_views(support, self.config.views * len(support), holdout_views(self.config), generator)

    def _holdout(self, member: FittedMember, support: torch.Tensor, category: str, context: FitContext,
                 pseudo: torch.Generator | None) -> tuple[str, Prediction, torch.Tensor | None]:
        """The member's predictions on normal images it did not fit on (held-out supports or views), and its
        scores of pseudo-anomalous versions of those images (when `pseudo` gives their random stream)."""

        def score(method: Method, images: torch.Tensor) -> tuple[Prediction, torch.Tensor | None]:
            normal = method.predict(images)
            if pseudo is None:
                return normal, None
            return normal, method.predict(pseudo_anomalies(images, PSEUDO_ANOMALIES, pseudo)[0]).scores

        if self._mode(member, len(support)) == "augment":
            return "augment", *score(member.method, self._support_views(support, context.generator))
        parts = []
        for held_out in range(len(support)):  # refit on k-1 supports, score the one left out (and its views)
            rest = torch.cat([support[:held_out], support[held_out + 1:]])
            fresh = refit(member, rest, category, context.generator)
            image = support[held_out:held_out + 1]
            if self.config.loo_views and len(support) <= self.config.loo_views_max_k:
                image = torch.cat([image, augmented_views(image, self.config.loo_views, holdout_views(self.config),
                                                          context.generator)])
            parts.append(score(fresh, image))
        normal = [p for p, _ in parts]
        maps = None if normal[0].maps is None else torch.cat([p.maps for p in normal])
        anomalous = None if pseudo is None else torch.cat([a for _, a in parts])
        return "leave-one-out", Prediction(torch.cat([p.scores for p in normal]), maps), anomalous

    def fit(self, support: torch.Tensor, *, category: str, context: FitContext) -> None:
        chosen = self._select_members(context.members)
        self.members = {spec: member.method for spec, member in chosen.items()}
        # pseudo-anomalies and the scale's views draw from streams of their own (one draw from the cell's,
        # whatever the settings), so the held-out statistics are the same under every weighting and scale
        stream_seed = int(torch.randint(2**62, (1,), generator=context.generator))
        weigh_by_pseudo = self.config.weighting == "pseudo" and not self.config.weights
        pseudo = None
        if weigh_by_pseudo or self.config.record_spreads:
            pseudo = torch.Generator().manual_seed(stream_seed)
        views = None  # the scale's views: the same for every member
        if self.config.scale == "geomean" or self.config.record_spreads:
            views = self._support_views(support, torch.Generator().manual_seed(stream_seed + 1))
        with torch.no_grad():
            for spec, member in chosen.items():
                self.holdout_used[spec], held, anomalous = self._holdout(member, support, category, context, pseudo)
                self.score_stats[spec] = Standardiser.fit(held.scores.double())
                view_scores = None if views is None else member.method.predict(views).scores.double()
                if self.config.scale == "geomean":
                    self.score_stats[spec] = geometric_scale(self.score_stats[spec], view_scores)
                if held.maps is not None:
                    self.map_stats[spec] = Standardiser.fit(held.maps.double())
                if anomalous is not None:
                    self.separations[spec] = separation(held.scores, anomalous)
                if self.config.record_spreads:
                    self.spreads[spec] = {"held_out": held.scores.tolist(), "views": view_scores.tolist(),
                                          "pseudo": anomalous.tolist()}
        if self.config.weights:
            self.weights = dict(zip(self.members, self.config.weights))
        elif weigh_by_pseudo:
            self.weights = pseudo_weights(self.separations)
        else:
            self.weights = {spec: 1.0 for spec in self.members}

    def predict(self, images: torch.Tensor) -> Prediction:
        return self.combine({spec: member.predict(images) for spec, member in self.members.items()})

    def combine(self, predictions: Mapping[str, Prediction]) -> Prediction:
        """The fused prediction from the members' predictions on the same images (one per member spec).

        The runner calls this with the test predictions it already made for each member in the cell, so
        fusion never runs a member on the test set a second time."""
        fuse_maps = self.config.fuse_maps and len(self.map_stats) == len(self.members)
        score, fused_map, extras = None, None, {}
        for spec in self.members:
            weight, prediction = self.weights[spec], predictions[spec]
            extras[f"z_{spec}"] = z = self.score_stats[spec](prediction.scores.float())
            score = weight * z if score is None else score + weight * z
            if fuse_maps and prediction.maps is not None:
                z_map = weight * self.map_stats[spec](prediction.maps.float())
                fused_map = z_map if fused_map is None else fused_map + z_map
        return Prediction(scores=score, maps=fused_map, extras=extras)

    def info(self) -> dict[str, Any]:
        return {**asdict(self.config), "fused": list(self.members), "holdout_used": self.holdout_used,
                "weights_used": {s: round(w, 4) for s, w in self.weights.items()},
                "pseudo_separation": {s: round(v, 4) for s, v in self.separations.items()},
                "stats": {s: v.facts() for s, v in self.score_stats.items()},
                **({"spreads": self.spreads} if self.spreads else {})}


@register(
    "fusion",
    config=FusionConfig,
    presets={"paper": FusionConfig(), "offline": FusionConfig()},
    summary="z-score fusion of the cheap-fit members fitted in the cell (leave-one-out statistics from the supports)",
    needs_fitted=True,
)
def create_fusion(config: FusionConfig) -> Fusion:
    return Fusion(config)
