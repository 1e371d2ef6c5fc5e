"""Z-score fusion of registered methods: each member's scores standardised on held-out normals, then summed.

Sources: GCAD (Bergmann et al., IJCV 2022; no official code) sums its branches' z-scores, standardised on normal
images it did not train on; PUAD (Sugawara and Imamura, arXiv 2402.15143; github.com/LeapMind/PUAD) standardises
with numpy mean/std (ddof 0), as here (`scale=held_out`: ddof 1). Specification: docs/REFERENCE.md, section
"Z-score fusion".

Members: the instances fitted before it in the cell (`FitContext.members`) whose per-cell fit trains nothing
(`cheap_fit`: PatchCore, clip_logic, RegAD), unless named by `members` or widened by `trained_members=true`. Each
member's z = (score - mean) / scale; the fused score (and map, when every member has one) is the weighted sum of the
z-scores: `weights`, else `weighting` = `equal` or `pseudo` (max(AUROC - 1/2, 0) of held-out normals against
pseudo-anomalies made on them, scaled to sum to the member count). `combine` reuses the members' test predictions.
- Held-out normals (`holdout`): `auto` = leave-one-out refits for cheap-fit members (k-1 supports, scoring the
  one left out and `loo_views` views of it, for k <= `loo_views_max_k`, None = every k), views of the supports
  scored by the member fitted in the cell for the others; `loo` / `refit` = leave-one-out for all; `augment` =
  views for all. Views: `views` per support, brightness/contrast `view_jitter`, rotation up to `view_degrees`,
  never a flip.
- mean = the held-out mean; scale (`scale=geomean`, the default) = sqrt(std(held-out) x std(views)), the views
  being `views` per support scored by the member fitted in the cell; `scale=held_out` = the held-out
  normals' sample standard deviation (ddof 1), views of supports the member saw never used; with it use
  `loo_views_max_k=none` (views of each left-out image, scored by the refit that did not see it, join the
  held-out normals at every k): `fusion:scale=held_out,loo_views_max_k=none`.
- Members declaring `distance_scores` (PatchCore, RegAD, anomalib's PatchCore and PaDiM): the scale at least
  `distance_floor` x |held-out mean| (`distance_floor=0`: off), under either scale rule; maps are not floored.

Departures, each with its reason:
- Statistics from the k supports only, never from other normal images: the VAND few-shot rule.
- The distance floor (ours): at k = 2 the two leave-one-out scores are one pair of images scored both ways (a
  against b, b against a), nearly equal, so their spread says nothing of how unseen normals spread; a distance's
  spread over normal images grows with its level, so its level bounds the scale from below. 0.15 is the larger of
  PatchCore's and RegAD's median coefficient of variation (std / mean) of held-out normals over the dev sets' cells
  at k >= 4 (0.115 / 0.150: held-out values only, no test image). 0.10 and 0.13 leave RegAD's z std on normal test
  images above 2 on ELPV at k = 2; 0.15 and the per-member medians bring both members within [0.5, 2] at every
  k >= 2 on both dev sets, and the single value needs no constant per method (BENCHMARKS.md, section "Fusion
  calibration: a floor for distance scores").
- At k = 1 views are the held-out normals: there is nothing to leave out.
- The geometric-mean scale (ours): leave-one-out spreads rest on k points, views' spreads are too small.
- `scale=held_out`: ddof 1 (PUAD: ddof 0), the scale resting on a few values (ddof 0 of two is |a - b| / 2).

Calibrated z-scores (BENCHMARKS.md, sections "Fusion calibration: the fix" and "Fusion calibration: a floor for
distance scores"). A view of a support scored by the member fitted on it is not an unseen normal (PatchCore 3.5
against 26 on ELPV's normal test images at k = 2), so `scale=held_out` never reads such views; it calibrates ELPV
better but costs fusion 0.011-0.018 image AUROC on the procedural dev split, so it is an option, not the default.
The distance floor mends the k = 2 pair under either rule. What no estimate from the supports fixes (measured): at
k = 1 only views of the one support exist; clip_logic's spread on unseen normals moves with how alike its supports
happen to be (its term standardisers sit at their relative floor, 0.5 x a held-out mean that alike supports make
small), which no statistic of those supports sees; at k = 8 the k-1-support refits spread more than the k-support
model (RegAD z std 0.7 on both dev sets under `held_out`).

Chosen on the procedural dev split (k = 1, 2, 4, 8), never on a reported split: the members (see BENCHMARKS.md,
section "Fusion members on the dev split: every member vs the leave-one-out ones"); `weighting=equal` and
`loo_views_max_k=0` (section "Fusion design on the dev split"); the scale (section "Fusion scale on the dev split",
kept after the calibration comparison on ELPV and the dev split, section "Fusion calibration: the fix"); `views=4`,
`view_degrees=0`, `view_jitter=0.1` (section "Fusion views on the dev split"); the weighted sum (section "Fusion
combiners and weights on the dev split (today's views, 6 seeds)"). Chosen on both dev sets (ELPV and the procedural
dev split): `distance_floor=0.15` (section "Fusion calibration: a floor for distance scores").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping, Sequence, get_args

import torch

from methods.augment import AugmentConfig, PseudoAnomalyConfig, augmented_views, pseudo_anomalies
from methods.base import FitContext, FittedMember, Method, MethodVariant, Prediction
from methods.cell import refit
from methods.options import UNRECORDED, NonNegativeFloat, NonNegativeInt, PositiveInt
from methods.registry import register
from methods.standardise import Standardiser

Holdout = Literal["auto", "loo", "refit", "augment"]
HOLDOUTS = get_args(Holdout)
Weighting = Literal["equal", "pseudo"]
Scale = Literal["held_out", "geomean"]
# Views for held-out statistics: brightness/contrast jitter, no rotation (chosen on the procedural dev split:
# BENCHMARKS.md, section "Fusion views on the dev split"), never a flip (a flip swaps slots in layout categories,
# part_slots and breakfast_box: a logic-aware member would score those views as anomalous).
HOLDOUT_VIEWS = AugmentConfig(max_degrees=0.0, brightness=0.1, contrast=0.1)  # the defaults of the two options below
PSEUDO_ANOMALIES = PseudoAnomalyConfig()


def holdout_views(config: "FusionConfig") -> AugmentConfig:
    """The views' augmentation: rotation up to `view_degrees`, brightness and contrast jitter `view_jitter`."""
    return AugmentConfig(max_degrees=config.view_degrees, brightness=config.view_jitter, contrast=config.view_jitter)


@dataclass(frozen=True)
class FusionConfig:
    members: tuple[str, ...] = ()  # variant specs or method names; empty = the members chosen by `trained_members`
    # with no `members`: False = every fitted member whose per-cell fit trains nothing (`cheap_fit`: held out by
    # leave-one-out); True = every fitted member (chosen on the procedural dev split: see the module docstring)
    trained_members: bool = False
    weights: tuple[NonNegativeFloat, ...] = ()  # explicit weights (override `weighting`)
    weighting: Weighting = "equal"  # equal | pseudo (see the module docstring; chosen on the procedural dev split)
    holdout: Holdout = "auto"  # see the module docstring
    views: PositiveInt = 4  # views per support image: held-out normals of trained members and at k = 1; geomean's scale
    view_degrees: NonNegativeFloat = HOLDOUT_VIEWS.max_degrees  # the views' rotation range (never a flip)
    view_jitter: NonNegativeFloat = HOLDOUT_VIEWS.brightness  # the views' brightness and contrast jitter
    # views of each left-out image scored with it (held-out normals too), for k <= loo_views_max_k (None: every k)
    loo_views: NonNegativeInt = 4
    loo_views_max_k: NonNegativeInt | None = 0  # 0 chosen on the procedural dev split (geomean scale)
    # geomean: sqrt(held-out std x std of the supports' views scored by the member fitted on them) (default: see the
    # module docstring); held_out: the held-out normals' sample std (ddof 1)
    scale: Scale = "geomean"
    # members declaring `distance_scores`: scale at least this x their held-out mean (0: no floor; 0.15 derived from
    # the dev sets' held-out values, see the module docstring); rows made before the floor existed had none
    distance_floor: NonNegativeFloat = field(default=0.15, metadata={UNRECORDED: 0.0})
    fuse_maps: bool = True


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


def choose_members(config: FusionConfig, candidates: Sequence[MethodVariant]) -> list[MethodVariant]:
    """The members a fusion config fuses among the candidate variants (those that fuse nothing): the named ones in
    the order named (an exact spec, else every variant of the method of that name), else the cheap-fit ones
    (every one with `trained_members`). `ValueError` when a named one is missing, none is chosen, or `weights`
    does not have one value per member. The one rule: the runner, its pre-flight and `Fusion.fit` all ask it."""
    if not config.members:
        chosen = [v for v in candidates if config.trained_members or v.entry.cheap_fit]
        if candidates and not chosen:
            raise ValueError(f"fusion: no member with a cheap per-cell fit (PatchCore, clip_logic, RegAD) among "
                             f"{', '.join(v.spec for v in candidates)}; name its members (fusion:members=...) or "
                             "set fusion:trained_members=true")
    else:
        chosen = []
        for wanted in config.members:  # in the order named (the order the held-out statistics draw in)
            matches = [v for v in candidates if v.spec == wanted] or [v for v in candidates if v.entry.name == wanted]
            if not matches:
                raise ValueError(f"fusion member {wanted!r} is not among the members in this run "
                                 f"({', '.join(v.spec for v in candidates) or 'none'}); add it to --methods")
            chosen += [v for v in matches if v not in chosen]
    if not chosen:
        raise ValueError("fusion has no member in this run")
    if config.weights and len(config.weights) != len(chosen):
        raise ValueError(f"fusion weights has {len(config.weights)} values for {len(chosen)} members "
                         f"({', '.join(v.spec for v in chosen)})")
    return chosen


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
        self.separations: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def _select_members(self, fitted: Mapping[str, FittedMember]) -> dict[str, FittedMember]:
        candidates = [m.variant for m in fitted.values() if not m.variant.entry.needs_fitted]
        try:
            return {v.spec: fitted[v.spec] for v in choose_members(self.config, candidates)}
        except ValueError as error:
            raise RuntimeError(str(error)) from None

    def _mode(self, member: FittedMember, k: int) -> str:
        """How the member's held-out normals are made: `augment` (views) or `loo` (refits)."""
        mode, entry = self.config.holdout, member.variant.entry
        if mode == "auto":
            mode = "loo" if entry.cheap_fit else "augment"
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
            max_k = self.config.loo_views_max_k
            if self.config.loo_views and (max_k is None or len(support) <= max_k):
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
        # whatever the settings), so the held-out statistics are the same under every weighting
        stream_seed = int(torch.randint(2**62, (1,), generator=context.generator))
        weigh_by_pseudo = self.config.weighting == "pseudo" and not self.config.weights
        pseudo = torch.Generator().manual_seed(stream_seed) if weigh_by_pseudo else None
        # the geometric-mean scale's views: the same for every member (their own stream: no other draw moves)
        geomean = self.config.scale == "geomean"
        views = self._support_views(support, torch.Generator().manual_seed(stream_seed + 1)) if geomean else None
        with torch.no_grad():
            for spec, member in chosen.items():
                self.holdout_used[spec], held, anomalous = self._holdout(member, support, category, context, pseudo)
                if geomean:
                    held_out_stats = Standardiser.fit(held.scores.double())
                    view_scores = member.method.predict(views).scores.double()
                    self.score_stats[spec] = geometric_scale(held_out_stats, view_scores)
                else:
                    self.score_stats[spec] = Standardiser.fit(held.scores.double(), ddof=1)
                if member.variant.entry.distance_scores and self.config.distance_floor > 0:
                    self.score_stats[spec] = self.score_stats[spec].floored(self.config.distance_floor)
                if held.maps is not None:
                    self.map_stats[spec] = Standardiser.fit(held.maps.double())
                if anomalous is not None:
                    self.separations[spec] = separation(held.scores, anomalous)
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
                "stats": {s: v.facts() for s, v in self.score_stats.items()}}


@register(
    "fusion",
    config=FusionConfig,
    presets={"paper": FusionConfig(), "offline": FusionConfig()},
    summary="z-score fusion of the cheap-fit members fitted in the cell (leave-one-out statistics from the supports)",
    needs_fitted=True,
    members=choose_members,
)
def create_fusion(config: FusionConfig) -> Fusion:
    return Fusion(config)
