"""Fusion calibration diagnosis: what each member's held-out statistics say against its spread on the
normal test images, and how fusion would rank with other scale estimates. A diagnosis tool, never a fit.

    python -m bench.fusion_calibration record -- <submission run arguments>   # a run whose fusion rows also carry
        # each member's held-out candidates in method_info["diag"] (the fused scores are today's, unchanged)
    python -m bench.fusion_calibration analyse RUN [RUN ...]                   # per member and k: z std on normal
        # test images under each candidate scale; fused AUROC / F1-max minus the best member per candidate
    python -m bench.fusion_calibration cv RUN [RUN ...]                        # the CV prior's c per positive member
        # (median std / mean of the held-out normals over the runs' cells at k >= 4; held-out values only)
    python -m bench.fusion_calibration terms RUN [RUN ...]                     # clip_logic's raw terms per cell:
        # its held-out standardisers against the terms' spread on the normal test images
    python -m bench.fusion_calibration clip-rules RUN [RUN ...]                # clip_logic's term standardiser
        # re-fitted under candidate rules on the recorded raw terms, re-fused with the other members

Candidates recorded per member (k supports, V = `views` views per image, jitter views as fusion's):
- `loo`: the k leave-one-out scores (refit on k-1 supports, score the one left out);
- `loo_views`: V views of each left-out image scored by the model that did not see it;
- `views_full`: V views of each support scored by the member fitted on all k (fusion's scale views);
- `used`: the mean and scale fusion used;
- `terms` (clip_logic only): its raw terms (few_shot, global, components) on the same images, and the held-out raw
  terms its own standardiser was fitted on (`held`; each refit's: `nested_held`), for `clip-rules`.
Scale candidates re-fused from them (`candidate_scales`): the leave-one-out spreads (ddof 0 / 1, with and without
the views of the left-out images: `loo+loo_views_ddof1` is `scale=held_out`), the geometric mean unfloored
(`geomean(loo, views_full)`) and floored as fusion's default (`geomean+floor`; `held_out+floor`), `cv_max` /
`cv_shrink` (a coefficient-of-variation prior for PatchCore and RegAD), `log_held_out` (their log scores
standardised) and `clip_floor` (clip_logic's scale at least 1); BENCHMARKS.md, sections "Fusion calibration: further
candidates on the completed dev sets" and "Fusion calibration: a floor for distance scores".
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

csv.field_size_limit(10**9)


RAW_TERMS = ("few_shot", "global", "components")  # clip_logic's raw terms (its prediction extras)


def _raw_terms(prediction) -> list[list[float]] | None:
    """clip_logic's raw terms [b, 3] from a prediction's extras (None for another member)."""
    if not all(name in prediction.extras for name in RAW_TERMS):
        return None
    return torch.stack([prediction.extras[name] for name in RAW_TERMS], dim=1).double().tolist()


def _patch() -> None:
    from methods import clip_logic as clip_module
    from methods import fusion as fusion_module
    from methods.augment import augmented_views
    from methods.cell import refit

    original_fit, original_info = fusion_module.Fusion.fit, fusion_module.Fusion.info
    original_held_out_terms = clip_module.ClipLogic._held_out_terms

    def held_out_terms(self, support):  # clip_logic keeps its held-out raw terms for the diagnosis
        terms = original_held_out_terms(self, support)
        self.diag_held_out_terms = terms.double().tolist()
        return terms

    def fit(self, support, *, category, context):
        original_fit(self, support, category=category, context=context)
        generator = torch.Generator().manual_seed(20260)
        views_config = fusion_module.holdout_views(self.config)
        chosen = self._select_members(context.members)
        diag = {}
        with torch.no_grad():
            views = augmented_views(support, 4 * len(support), views_config, generator)
            for spec, member in chosen.items():
                on_views = member.method.predict(views)
                entry = {"used": self.score_stats[spec].facts(), "views_full": on_views.scores.double().tolist()}
                terms = {"views_full": _raw_terms(on_views),
                         "held": getattr(member.method, "diag_held_out_terms", None)}
                if len(support) >= 2:
                    loo, loo_views = [], []
                    terms.update(loo=[], loo_views=[], nested_held=[])
                    for i in range(len(support)):
                        rest = torch.cat([support[:i], support[i + 1:]])
                        fresh = refit(member, rest, category, generator)
                        image = support[i:i + 1]
                        on_image = fresh.predict(image)
                        on_image_views = fresh.predict(augmented_views(image, 4, views_config, generator))
                        loo.append(float(on_image.scores[0]))
                        loo_views += on_image_views.scores.tolist()
                        if terms["views_full"] is not None:  # clip_logic: the refit's own held-out terms too
                            terms["loo"] += _raw_terms(on_image)
                            terms["loo_views"].append(_raw_terms(on_image_views))
                            terms["nested_held"].append(getattr(fresh, "diag_held_out_terms", None))
                    entry["loo"], entry["loo_views"] = loo, loo_views
                if terms["views_full"] is not None:
                    entry["terms"] = terms
                diag[spec] = entry
        self._diag = diag

    def info(self):
        return {**original_info(self), "diag": getattr(self, "_diag", {})}

    fusion_module.Fusion.fit, fusion_module.Fusion.info = fit, info
    clip_module.ClipLogic._held_out_terms = held_out_terms


def record(argv: list[str]) -> int:
    _patch()
    from submission.cli import main
    return main(argv)


def _score_rows(run: Path, member: str, category: str, k: int, seed: int) -> list[dict[str, str]]:
    """One member's score CSV rows in one cell (category, k, seed): label, score and its named parts."""
    with (run / "scores" / member / f"k{k}_s{seed}" / f"{category}.csv").open() as handle:
        return list(csv.DictReader(handle))


def _scores(run: Path, member: str, category: str, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One member's test labels and scores in one cell (category, k, seed)."""
    rows = _score_rows(run, member, category, k, seed)
    return np.array([int(row["label"]) for row in rows]), np.array([float(row["score"]) for row in rows])


def _std(values, ddof=0) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=ddof)) if len(values) > ddof else float("nan")


# Members whose raw scores are positive distances (those declaring `distance_scores`: PatchCore's nearest-neighbour
# distance, RegAD's Mahalanobis distance): the log, coefficient-of-variation and floor candidates apply to them;
# clip_logic's score is a sum of z-values.
# coefficient-of-variation priors c (std / mean of the held-out normals: leave-one-out scores and views of the
# left-out images), estimated from the dev sets' held-out values only: the median over ELPV's and the procedural dev
# split's cells at k >= 4 (`python -m bench.fusion_calibration cv RUN ...` prints it); no test image is read
CV_PRIOR = {"patchcore": 0.115, "regad": 0.150}
CLIP_FLOOR = 1.0  # clip_logic's floor in its own units (its score sums three z-values)


def _positive(member: str) -> bool:
    from methods.registry import get_entry
    return get_entry(member.partition(":")[0]).distance_scores


def candidate_scales(entry: dict, k: int, member: str = "") -> dict[str, tuple[str, float]]:
    """Scale candidates from one member's recorded held-out values (no test image): name -> (transform, scale),
    transform `linear` (z = score / scale, up to the mean) or `log` (z = log score / scale, positive members)."""
    out = {"used": ("linear", entry["used"]["std"])}
    views = entry["views_full"]
    out["views_full"] = ("linear", _std(views))
    if k < 2:
        return out
    loo, loo_views = entry["loo"], entry["loo_views"]
    held = loo + loo_views
    out["loo"] = ("linear", _std(loo))
    out["loo_ddof1"] = ("linear", _std(loo, 1))
    out["loo+loo_views"] = ("linear", _std(held))
    out["loo+loo_views_ddof1"] = ("linear", _std(held, 1))  # scale=held_out
    out["geomean(loo, views_full)"] = ("linear", (_std(loo) * _std(views)) ** 0.5)  # the default rule, unfloored
    from methods.fusion import FusionConfig
    level = abs(float(np.mean(loo))) if _positive(member) else 0.0
    unfloored = out["geomean(loo, views_full)"][1]
    out["geomean+floor"] = ("linear", max(unfloored, FusionConfig().distance_floor * level))  # the default rule
    held_level = abs(float(np.mean(held))) if _positive(member) else 0.0  # scale=held_out's mean: views join
    out["held_out+floor"] = ("linear", max(_std(held, 1), FusionConfig().distance_floor * held_level))
    for fraction in (0.10, 0.13):  # other floors; and the per-member CV prior as the floor
        out[f"geomean+floor={fraction:.2f}"] = ("linear", max(unfloored, fraction * level))
    prior = CV_PRIOR.get(member.partition(":")[0], 0.0)
    out["geomean+floor=cv_prior"] = ("linear", max(unfloored, prior * level))
    sd, positive = _std(held, 1), _positive(member) and min(held) > 0
    base = member.partition(":")[0]
    if positive:
        mean, c = float(np.mean(held)), CV_PRIOR[base]
        out["cv_max"] = ("linear", max(sd, c * mean))  # max(held-out std, c x held-out mean)
        # shrinkage of the held-out variance (k - 1 degrees of freedom) towards (c x mean)^2 with one pseudo-count
        out["cv_shrink"] = ("linear", float(np.sqrt(((k - 1) * sd**2 + (c * mean) ** 2) / k)))
        out["log_held_out"] = ("log", _std(np.log(held), 1))  # held_out on log scores: a level factor is a shift
    else:
        out["cv_max"] = out["cv_shrink"] = out["log_held_out"] = ("linear", sd)
    out["clip_floor"] = ("linear", max(sd, CLIP_FLOOR) if base == "clip_logic" else sd)
    return out


def cv_prior(runs: list[Path], min_k: int = 4) -> dict[str, float]:
    """The median coefficient of variation (sample std / mean) of each positive member's held-out normals over the
    runs' cells at k >= min_k: held-out values only (the CV prior's c)."""
    values = defaultdict(list)
    for run in runs:
        with (run / "results.csv").open() as handle:
            rows = [r for r in csv.DictReader(handle) if r["method"] == "fusion" and r["status"] == "ok"]
        for row in rows:
            if int(row["k"]) < min_k:
                continue
            for member, entry in json.loads(row["method_info"]).get("diag", {}).items():
                if _positive(member):
                    held = entry["loo"] + entry["loo_views"]
                    values[member.partition(":")[0]].append(_std(held, 1) / abs(float(np.mean(held))))
    return {member: float(np.median(v)) for member, v in sorted(values.items())}


def _z(scores: np.ndarray, transform: str) -> np.ndarray:
    return np.log(np.maximum(scores, 1e-12)) if transform == "log" else scores


def analyse(runs: list[Path]) -> None:
    from metrics import f1_max, image_auroc
    zstd = defaultdict(list)  # (k, member, candidate) -> z std over cells
    gaps = defaultdict(list)  # (k, candidate) -> (auroc - best, f1 - best)
    for run in runs:
        with (run / "results.csv").open() as handle:
            rows = [r for r in csv.DictReader(handle) if r["method"] == "fusion" and r["status"] == "ok"]
        for row in rows:
            k, seed, info = int(row["k"]), int(row["seed"]), json.loads(row["method_info"])
            diag = info.get("diag", {})
            if not diag:
                continue
            per_member = {}
            for member, entry in diag.items():
                labels, scores = _scores(run, member, row["category"], k, seed)
                per_member[member] = (labels, scores, candidate_scales(entry, k, member))
            best_auroc = max(image_auroc(l, s) for l, s, _ in per_member.values())
            best_f1 = max(f1_max(l, s) for l, s, _ in per_member.values())
            names = set.intersection(*(set(c) for _, _, c in per_member.values()))
            labels = next(iter(per_member.values()))[0]
            oracle = {m: _std(s[l == 0]) for m, (l, s, _) in per_member.items()}
            for name in sorted(names) + ["oracle"]:
                fused = 0.0
                for member, (l, s, c) in per_member.items():
                    transform, scale = ("linear", oracle[member]) if name == "oracle" else c[name]
                    scale = scale if scale > 1e-12 else 1.0
                    z = _z(s, transform)
                    fused = fused + z / scale
                    if name != "oracle":
                        zstd[(k, member, name)].append(_std(z[l == 0]) / scale)
                gaps[(k, name)].append((image_auroc(labels, fused) - best_auroc, f1_max(labels, fused) - best_f1))
    members = sorted({m for (_, m, _) in zstd})
    for k in sorted({k for (k, _, _) in zstd}):
        print(f"\n## k = {k} ({len(gaps[(k, 'oracle')])} cells)")
        names = sorted({n for (kk, _, n) in zstd if kk == k})
        print("| candidate | " + " | ".join(f"z std {m} (geometric mean; min-max; mean)" for m in members)
              + " | fusion - best AUROC | fusion - best F1 |")
        for name in names + ["oracle"]:
            cells = []
            for m in members:
                v = np.array(zstd.get((k, m, name), [np.nan]))
                summary = f"{np.exp(np.log(v).mean()):.2f} ({v.min():.2f}-{v.max():.2f}; {v.mean():.2f})"
                cells.append(summary if name != "oracle" else "1")
            g = np.array(gaps[(k, name)])
            print(f"| {name} | " + " | ".join(cells) + f" | {g[:, 0].mean():+.3f} | {g[:, 1].mean():+.3f} |")


def _term_standardiser(rule: str, held: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """clip_logic's term standardiser under a candidate rule, from held-out raw terms [n, 3]: (centre, scale, log)."""
    from methods.standardise import Standardiser
    name, _, value = rule.partition("=")
    if name == "relative_floor":  # clip_logic's own standardiser (today's rule at 0.5)
        own = Standardiser.fit(torch.from_numpy(held), dim=0, relative_floor=float(value))
        return own.mean[0].numpy(), own.scale[0].numpy(), False
    if name == "median_mad":  # median, max(1.4826 MAD, 0.5 x |median|)
        centre = np.median(held, 0)
        scale = np.maximum(1.4826 * np.median(np.abs(held - centre), 0), 0.5 * np.abs(centre))
        return centre, np.where(scale <= 1e-8 * np.maximum(np.abs(centre), 1), 1.0, scale), False
    if name == "log":  # log terms: mean, max(std ddof 0, floor) in log units
        logs = np.log(held + 1e-6)
        return logs.mean(0), np.maximum(logs.std(0), float(value)), True
    raise ValueError(rule)


def _clip_scores(rule: str, held, terms) -> np.ndarray:
    """clip_logic's image scores of raw terms [b, 3] with the standardiser a rule fits on held-out raw terms."""
    centre, scale, log = _term_standardiser(rule, np.asarray(held, float))
    values = np.asarray(terms, float)
    return (((np.log(values + 1e-6) if log else values) - centre) / scale).sum(axis=1)


CLIP_RULES = ("relative_floor=0.5", "relative_floor=0.25", "relative_floor=1", "median_mad", "log=0.25", "log=0.5")


def clip_rules(runs: list[Path]) -> None:
    """clip_logic's term standardiser re-fitted under candidate rules on the recorded raw terms (its own, and each
    leave-one-out refit's), fused with the other members under today's rule (geometric mean, distance floor):
    clip_logic's z std on normal test images (mean over cells, as the report), its image AUROC, and fusion - best
    member (image AUROC, means over cells first as the leaderboard), per k >= 2. `relative_floor=0.5` is today's."""
    from metrics import image_auroc
    table = defaultdict(lambda: defaultdict(list))  # (rule, clip fusion scale, k) -> quantity -> values
    for run in runs:
        with (run / "results.csv").open() as handle:
            rows = [r for r in csv.DictReader(handle) if r["method"] == "fusion" and r["status"] == "ok"]
        for row in rows:
            k, seed, diag = int(row["k"]), int(row["seed"]), json.loads(row["method_info"]).get("diag", {})
            if k < 2 or not any("terms" in entry for entry in diag.values()):
                continue
            others, clip = {}, None
            for member, entry in diag.items():
                if "terms" in entry:
                    rows_csv = _score_rows(run, member, row["category"], k, seed)
                    clip = (np.array([int(r["label"]) for r in rows_csv]),
                            np.array([[float(r[t]) for t in RAW_TERMS] for r in rows_csv]), entry["terms"])
                else:
                    labels, scores = _scores(run, member, row["category"], k, seed)
                    scale = candidate_scales(entry, k, member)["geomean+floor"][1]  # today's rule
                    others[member] = (labels, scores / (scale if scale > 1e-12 else 1.0))
            labels, test_terms, terms = clip
            rest = sum(z for _, z in others.values())
            member_aurocs = {m: image_auroc(l, z) for m, (l, z) in others.items()}
            for rule in CLIP_RULES:
                test = _clip_scores(rule, terms["held"], test_terms)
                views = _clip_scores(rule, terms["held"], terms["views_full"])
                loo = np.concatenate([_clip_scores(rule, nested, [one]) for nested, one
                                      in zip(terms["nested_held"], terms["loo"])])
                loo_views = np.concatenate([_clip_scores(rule, nested, v) for nested, v
                                            in zip(terms["nested_held"], terms["loo_views"])])
                for clip_scale, scale in (("geomean", (_std(loo) * _std(views)) ** 0.5),
                                          ("held_out", _std(np.concatenate([loo, loo_views]), 1))):
                    z = test / (scale if scale > 1e-12 else 1.0)
                    cell = table[(rule, clip_scale, k)]
                    cell["z std"].append(_std(z[labels == 0]))
                    cell["clip_logic"].append(image_auroc(labels, test))
                    cell["fusion"].append(image_auroc(labels, rest + z))
                    for member, value in member_aurocs.items():
                        cell[member].append(value)
    print("| clip_logic term rule | clip_logic fusion scale | k | cells | clip_logic z std | clip_logic AUROC | "
          "fusion AUROC | fusion - best member |")
    print("|---|---|---|---|---|---|---|---|")
    for (rule, clip_scale, k), cell in sorted(table.items(), key=lambda item: (item[0][2], item[0][0], item[0][1])):
        best = max(np.mean(v) for name, v in cell.items() if name not in ("z std", "fusion"))
        fusion = np.mean(cell["fusion"])
        print(f"| {rule} | {clip_scale} | {k} | {len(cell['fusion'])} | {np.mean(cell['z std']):.2f} | "
              f"{np.mean(cell['clip_logic']):.3f} | {fusion:.3f} | {fusion - best:+.3f} |")


def terms(runs: list[Path]) -> None:
    """clip_logic's three raw terms per cell: the held-out mean and scale its standardisers use against the mean
    and std on the normal test images, and the resulting z std of each term (a diagnosis; reads the test set)."""
    print("| cell | " + " | ".join(f"{t}: held-out mean / scale; test mean / std; z std" for t in RAW_TERMS) + " |")
    for run in runs:
        with (run / "results.csv").open() as handle:
            rows = [r for r in csv.DictReader(handle) if r["method"] == "clip_logic" and r["status"] == "ok"]
        for row in sorted(rows, key=lambda r: (r["category"], int(r["k"]), int(r["seed"]))):
            k, seed, info = int(row["k"]), int(row["seed"]), json.loads(row["method_info"])
            test = [r for r in _score_rows(run, "clip_logic", row["category"], k, seed) if r["label"] == "0"]
            cells = []
            for i, name in enumerate(RAW_TERMS):
                values = np.array([float(r[name]) for r in test])
                mean, scale = info["term_mean"][i], info["term_scale"][i]
                cells.append(f"{mean:.4g} / {scale:.4g}; {values.mean():.4g} / {values.std():.4g}; "
                             f"{values.std() / scale:.2f}")
            print(f"| {row['category']} k={k} s{seed} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "record":
        rest = argv[1:]
        return record(rest[1:] if rest and rest[0] == "--" else rest)
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["analyse", "cv", "terms", "clip-rules"])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.command == "cv":
        print(json.dumps({m: round(c, 3) for m, c in cv_prior(args.runs).items()}))
    elif args.command == "terms":
        terms(args.runs)
    elif args.command == "clip-rules":
        clip_rules(args.runs)
    else:
        analyse(args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
