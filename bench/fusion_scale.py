"""Fusion's member scale on the procedural dev split: every candidate scale (and the combiners tried with them)
re-fused from the held-out, views and pseudo-anomaly scores that `fusion:record_spreads=true` keeps in method_info.

A fused score is sum_m w_m (s_m - mean_m) / scale_m over the members m, so within one cell only the scales and
weights move the ranking (the means shift every test image alike). Each candidate below is a rule for scale_m
(and w_m) computed from what the member scored before the test set: its held-out normals (leave-one-out for the
cheap-fit members, views at k = 1), views of the supports scored by the member fitted in the cell, and
pseudo-anomalous versions of the held-out images. `oracle` takes each member's std on the cell's normal test
images: a diagnosis of how much a better scale could give, never a candidate.

Run on a dev run folder only (settings are chosen there, never on a reported split):
`.venv/bin/python -m bench.fusion_scale runs/dev_geo --variant fusion:record_spreads=true --section fusion_scale_dev
--title "..."`.

`--oracle-subsets` is a diagnosis only, for any run (a reported one included, since nothing is chosen from it):
every subset of the members fused with the oracle scale, from the `z_<member>` columns of the variant's score
CSVs (no recorded spreads needed). It says whether any scale rule could bring equal-weight fusion up to its best
member, or whether a weak member has to weigh less.
"""
from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.fusion_design import _metrics
from bench.markdown import add_section_arguments, write_tables
from methods.fusion import pseudo_weights, separation
from methods.registry import parse_spec
from runfolder.schema import RunPaths, variant_dirname

Spreads = dict[str, np.ndarray]  # held_out, views, pseudo: one member's scores before the test set


def _std(values: np.ndarray) -> float:
    return float(np.std(values)) or 1.0  # constant scores: shifted only, as fusion's Standardiser


def _gap(spreads: Spreads) -> float:
    return max(float(spreads["pseudo"].mean() - spreads["held_out"].mean()), 1e-12)


GEOMETRIC = "geometric mean of held-out and views std"  # fusion's default scale
SCALES: dict[str, Callable[[Spreads], float]] = {
    "held-out std": lambda s: _std(s["held_out"]),
    "views std": lambda s: _std(s["views"]),
    GEOMETRIC: lambda s: float(np.sqrt(_std(s["held_out"]) * _std(s["views"]))),
    "root-sum-square of held-out and views std": lambda s: float(np.hypot(_std(s["held_out"]), _std(s["views"]))),
    "pooled std (held-out and views, each centred)": lambda s: _std(np.concatenate(
        [s["held_out"] - s["held_out"].mean(), s["views"] - s["views"].mean()])),
    "pseudo-anomaly gap (mean pseudo - mean held-out)": _gap,
    "pseudo-anomaly gap + held-out std": lambda s: _gap(s) + _std(s["held_out"]),
    "pseudo-anomaly std": lambda s: _std(s["pseudo"]),
}
# the scales tried with every combiner and with the weights from the pseudo-anomaly gap (w = gap / scale, with
# z = (s - mean) / scale: Fisher's discriminant for independent members, each with the scale it divides by)
MAIN_SCALES = ("held-out std", "views std", GEOMETRIC)


def log_sum(z: np.ndarray) -> np.ndarray:
    """Sum over members of sign(z) log(1 + |z|): a member's scale error becomes (for large |z|) a shift."""
    return (np.sign(z) * np.log1p(np.abs(z))).sum(0)


# how the members' z-scores (members x images) become one score; `log-sum` and `median` only with the scales in
# MAIN_SCALES (and the oracle), to keep the table short
COMBINERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sum": lambda z: z.sum(0),
    "sum + max": lambda z: z.sum(0) + z.max(0),
    "log-sum": log_sum,
    "median": lambda z: np.median(z, axis=0),
}
ORACLE = "oracle: std on the normal test images (diagnosis)"


def candidates(spreads: dict[str, Spreads], scores: dict[str, np.ndarray], normal: np.ndarray
               ) -> dict[str, np.ndarray]:
    """Every candidate's fused score of the cell's test images (members' raw scores in `scores`)."""
    out = {}
    for name, rule in {**SCALES, ORACLE: None}.items():
        z = np.stack([(scores[m] - spreads[m]["held_out"].mean())
                      / (rule(spreads[m]) if rule else _std(scores[m][normal])) for m in scores])
        for combiner, combine in COMBINERS.items():
            if combiner in ("sum", "sum + max") or name in (*MAIN_SCALES, ORACLE):
                out[f"{name}; {combiner}"] = combine(z)
    for name in MAIN_SCALES:
        z = np.stack([(scores[m] - spreads[m]["held_out"].mean()) * _gap(spreads[m]) / SCALES[name](spreads[m]) ** 2
                      for m in scores])
        out[f"{name}; sum weighted by gap / scale"] = z.sum(0)
    # fusion's `weighting=pseudo`: each member weighed by how well it tells its held-out normals from their
    # pseudo-anomalous versions (AUROC - 1/2), with the default scale
    geometric = {m: (scores[m] - spreads[m]["held_out"].mean()) / SCALES[GEOMETRIC](spreads[m]) for m in scores}
    weights = pseudo_weights({m: separation(torch.from_numpy(spreads[m]["held_out"]),
                                            torch.from_numpy(spreads[m]["pseudo"])) for m in scores})
    out[f"{GEOMETRIC}; sum weighted by pseudo-anomaly AUROC"] = sum(weights[m] * geometric[m] for m in scores)
    # a member whose held-out spread is far above its views spread moves between supports more than between views
    # of one: weighed down by min(1, views std / held-out std), the weights scaled to sum to the member count
    steadiness = {m: min(1.0, _std(spreads[m]["views"]) / _std(spreads[m]["held_out"])) for m in scores}
    out[f"{GEOMETRIC}; sum weighted by min(1, views std / held-out std)"] = sum(
        len(scores) * steadiness[m] / sum(steadiness.values()) * geometric[m] for m in scores)
    return out


def _cells(run_dirs: list[Path], variant: str) -> Iterator[tuple[Path, dict, dict, pd.DataFrame]]:
    """Each finished cell of `variant`: its run folder, key (category, k, seed), method_info and score CSV."""
    for run_dir in run_dirs:
        paths = RunPaths(run_dir)
        results = pd.read_csv(paths.results)
        results = results[(results["status"] == "ok") & (results["method"] == variant)]
        for r in results.itertuples():
            frame = pd.read_csv(paths.scores(variant_dirname(variant), int(r.k), int(r.seed), r.category),
                                dtype={"image": str, "kind": str, "path": str})
            key = {"category": r.category, "k": int(r.k), "seed": int(r.seed)}
            yield run_dir, key, json.loads(r.method_info), frame


def refused(run_dirs: list[Path], variant: str) -> pd.DataFrame:
    """One row per (candidate, cell) and per (member alone, cell): AUROC logical / structural and F1-max."""
    rows = []
    for run_dir, key, info, frame in _cells(run_dirs, variant):
        if "spreads" not in info:
            raise SystemExit(f"{run_dir}: {variant} has no recorded spreads (run it with record_spreads=true)")
        stats = info["stats"]
        scores = {m: frame[f"z_{m}"].to_numpy() * stats[m]["std"] + stats[m]["mean"] for m in info["fused"]}
        spreads = {m: {name: np.asarray(v) for name, v in info["spreads"][m].items()} for m in info["fused"]}
        fused = {**candidates(spreads, scores, frame["label"].to_numpy() == 0),
                 **{f"{member} alone": raw for member, raw in scores.items()}}
        rows += [{**key, "candidate": name, **_metrics(frame, score)} for name, score in fused.items()]
    return pd.DataFrame(rows)


def oracle_subsets(z: dict[str, np.ndarray], normal: np.ndarray) -> dict[str, np.ndarray]:
    """Every subset of two or more members fused with the oracle scale (each member's std on the normal test
    images; a member's mean only shifts every image alike, so it is left out)."""
    out = {}
    for size in range(2, len(z) + 1):
        for subset in itertools.combinations(z, size):
            out[f"oracle (diagnosis): {' + '.join(subset)}; sum"] = sum(z[m] / _std(z[m][normal]) for m in subset)
    return out


def refused_oracle(run_dirs: list[Path], variant: str) -> pd.DataFrame:
    """One row per (member subset fused with the oracle scale, cell) and per (member alone, cell)."""
    rows = []
    for _, key, info, frame in _cells(run_dirs, variant):
        z = {m: frame[f"z_{m}"].to_numpy() for m in info["fused"]}
        fused = {**oracle_subsets(z, frame["label"].to_numpy() == 0),
                 **{f"{member} alone": values for member, values in z.items()}}
        rows += [{**key, "candidate": name, **_metrics(frame, score)} for name, score in fused.items()]
    return pd.DataFrame(rows)


def _cell(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.3f}"  # a kind of anomaly the data lacks


def table(frame: pd.DataFrame) -> list[str]:
    """Markdown rows: each candidate's mean over cells per k, and its largest shortfall from the best member."""
    metrics = ["logical", "structural", "f1_max"]
    summary = frame.groupby(["candidate", "k"])[metrics].mean().astype(float)  # a kind the data lacks: NaN
    alone = summary[summary.index.get_level_values("candidate").str.endswith(" alone")]
    best = alone.groupby("k").max()
    cells = frame.groupby("k")[["category", "seed"]].apply(lambda f: len(f.drop_duplicates())).to_dict()
    ks = sorted(best.index)
    lines = ["| candidate | " + " | ".join(f"k={k}: log. / str. / F1" for k in ks)
             + " | largest shortfall from the best member |",
             "|---|" + "---|" * len(ks) + "---|"]
    order = []
    for candidate, per_k in summary.groupby(level="candidate"):
        per_k = per_k.droplevel("candidate")
        shortfall = float(np.nanmax((best - per_k[metrics]).to_numpy()))
        order.append((candidate.endswith(" alone"), shortfall, candidate, per_k))
    for is_member, shortfall, candidate, per_k in sorted(order, key=lambda o: (o[0], o[1])):
        values = " | ".join(" / ".join(_cell(per_k.loc[k, m]) for m in metrics) for k in ks)
        lines.append(f"| {candidate} | {values} | {'' if is_member else f'{shortfall:+.3f}'} |")
    lines += ["", "Best member per k (logical / structural / F1-max): "
              + "; ".join(f"k={k}: " + " / ".join(_cell(best.loc[k, m]) for m in metrics) for k in ks)
              + f". Cells per k: {', '.join(f'{cells[k]}' for k in ks)} (categories x seeds)."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", help="dev run folders (shards of one run)")
    parser.add_argument("--variant", default="fusion:record_spreads=true")
    parser.add_argument("--oracle-subsets", action="store_true",
                        help="diagnosis only: every member subset fused with the oracle scale (any run)")
    add_section_arguments(parser)
    args = parser.parse_args()
    if parse_spec(args.variant)[0] != "fusion":
        parser.error(f"--variant {args.variant}: not a fusion variant")
    refuse = refused_oracle if args.oracle_subsets else refused
    write_tables(args, table(refuse(args.run_dirs, args.variant)))


if __name__ == "__main__":
    main()
