"""Fusion calibration diagnosis: what each member's held-out statistics say against its spread on the
normal test images, and how fusion would rank with other scale estimates. A diagnosis tool, never a fit.

    python -m bench.fusion_calibration record -- <submission run arguments>   # a run whose fusion rows also carry
        # each member's held-out candidates in method_info["diag"] (the fused scores are today's, unchanged)
    python -m bench.fusion_calibration analyse RUN [RUN ...]                   # per member and k: z std on normal
        # test images under each candidate scale; fused AUROC / F1-max minus the best member per candidate
    python -m bench.fusion_calibration cv RUN [RUN ...]                        # the CV prior's c per positive member
        # (median std / mean of the held-out normals over the runs' cells at k >= 4; held-out values only)

Candidates recorded per member (k supports, V = `views` views per image, jitter views as fusion's):
- `loo`: the k leave-one-out scores (refit on k-1 supports, score the one left out);
- `loo_views`: V views of each left-out image scored by the model that did not see it;
- `views_full`: V views of each support scored by the member fitted on all k (fusion's scale views);
- `used`: the mean and scale fusion used.
Scale candidates re-fused from them (`candidate_scales`): the leave-one-out spreads (ddof 0 / 1, with and without
the views of the left-out images: `loo+loo_views_ddof1` is `scale=held_out`), the default geometric mean,
`cv_max` / `cv_shrink` (a coefficient-of-variation prior for PatchCore and RegAD), `log_held_out` (their log scores
standardised) and `clip_floor` (clip_logic's scale at least 1); BENCHMARKS.md, section "Fusion calibration: further
candidates on the completed dev sets".
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


def _patch() -> None:
    from methods import fusion as fusion_module
    from methods.augment import augmented_views
    from methods.cell import refit

    original_fit, original_info = fusion_module.Fusion.fit, fusion_module.Fusion.info

    def fit(self, support, *, category, context):
        original_fit(self, support, category=category, context=context)
        generator = torch.Generator().manual_seed(20260)
        views_config = fusion_module.holdout_views(self.config)
        chosen = self._select_members(context.members)
        diag = {}
        with torch.no_grad():
            views = augmented_views(support, 4 * len(support), views_config, generator)
            for spec, member in chosen.items():
                entry = {"used": self.score_stats[spec].facts(),
                         "views_full": member.method.predict(views).scores.double().tolist()}
                if len(support) >= 2:
                    loo, loo_views = [], []
                    for i in range(len(support)):
                        rest = torch.cat([support[:i], support[i + 1:]])
                        fresh = refit(member, rest, category, generator)
                        image = support[i:i + 1]
                        loo.append(float(fresh.predict(image).scores[0]))
                        loo_views += fresh.predict(augmented_views(image, 4, views_config, generator)).scores.tolist()
                    entry["loo"], entry["loo_views"] = loo, loo_views
                diag[spec] = entry
        self._diag = diag

    def info(self):
        return {**original_info(self), "diag": getattr(self, "_diag", {})}

    fusion_module.Fusion.fit, fusion_module.Fusion.info = fit, info


def record(argv: list[str]) -> int:
    _patch()
    from submission.cli import main
    return main(argv)


def _scores(run: Path, member: str, category: str, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One member's test labels and scores in one cell (category, k, seed)."""
    labels, scores = [], []
    with (run / "scores" / member / f"k{k}_s{seed}" / f"{category}.csv").open() as handle:
        for row in csv.DictReader(handle):
            labels.append(int(row["label"]))
            scores.append(float(row["score"]))
    return np.array(labels), np.array(scores)


def _std(values, ddof=0) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=ddof)) if len(values) > ddof else float("nan")


# Members whose raw scores are positive distances (PatchCore's nearest-neighbour distance, RegAD's Mahalanobis
# distance): the log and coefficient-of-variation candidates apply to them; clip_logic's score is a sum of z-values.
POSITIVE = ("patchcore", "regad")
# coefficient-of-variation priors c (std / mean of the held-out normals: leave-one-out scores and views of the
# left-out images), estimated from the dev sets' held-out values only: the median over ELPV's and the procedural dev
# split's cells at k >= 4 (`python -m bench.fusion_calibration cv RUN ...` prints it); no test image is read
CV_PRIOR = {"patchcore": 0.115, "regad": 0.150}
CLIP_FLOOR = 1.0  # clip_logic's floor in its own units (its score sums three z-values)


def _positive(member: str) -> bool:
    return member.partition(":")[0] in POSITIVE


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
    out["geomean(loo, views_full)"] = ("linear", (_std(loo) * _std(views)) ** 0.5)  # the default rule
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
        print("| candidate | " + " | ".join(f"z std {m} (mean; min-max)" for m in members)
              + " | fusion - best AUROC | fusion - best F1 |")
        for name in names + ["oracle"]:
            cells = []
            for m in members:
                v = np.array(zstd.get((k, m, name), [np.nan]))
                cells.append(f"{np.exp(np.log(v).mean()):.2f} ({v.min():.2f}-{v.max():.2f})" if name != "oracle"
                             else "1")
            g = np.array(gaps[(k, name)])
            print(f"| {name} | " + " | ".join(cells) + f" | {g[:, 0].mean():+.3f} | {g[:, 1].mean():+.3f} |")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "record":
        rest = argv[1:]
        return record(rest[1:] if rest and rest[0] == "--" else rest)
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["analyse", "cv"])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.command == "cv":
        print(json.dumps({m: round(c, 3) for m, c in cv_prior(args.runs).items()}))
    else:
        analyse(args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
