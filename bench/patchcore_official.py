"""PatchCore as the official code computes it vs the harness's previous PatchCore, on two run folders, written
into one section of BENCHMARKS.md. Every number is read from the run folders' results.csv; none is typed.

Run the two grids first (each runs both variants on the same cells, preset offline, 2 CPU cores):
```
python -m submission run --shots 1 2 4 8 --seeds 42 0 1234 --methods patchcore \
    patchcore:aggregation=concat,count_include_pad=false,image_score=map_max --preset offline --out runs/pc_proc
python -m submission run --data ../shared/data/mvtec_loco --format loco --categories juice_bottle \
    --shots 1 2 4 8 --seeds 42 0 1234 --methods patchcore \
    patchcore:aggregation=concat,count_include_pad=false,image_score=map_max --preset offline --out runs/pc_juice
.venv/bin/python -m bench.patchcore_official runs/pc_proc runs/pc_juice
```
Optionally `--one-departure RUN ...`: run folders of the variants `patchcore:image_score=map_max`,
`patchcore:count_include_pad=false`, `patchcore:aggregation=concat` (same commands, other `--methods` / `--out`).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from bench.markdown import write_section
from leaderboard.aggregate import read_results

NEW = "patchcore"
OLD = "patchcore:aggregation=concat,count_include_pad=false,image_score=map_max"
METRICS = {"image_auroc_logical": "AUROC logical", "image_auroc_structural": "AUROC structural",
           "f1_max": "F1-max"}


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    std = values.std(ddof=1) if len(values) > 1 else math.nan
    return f"{values.mean():.3f}" + ("" if math.isnan(std) else f" ± {std:.3f}")


def before_after(run_dir: Path) -> list[str]:
    """k x metric rows: previous, official, and the paired change (official − previous) over seeds; each seed's
    value is the mean over the run's categories (as the leaderboard's `overall`)."""
    results = read_results(run_dir)
    ok = results[(results["status"] == "ok") & results["method"].isin([NEW, OLD])]
    per_seed = ok.groupby(["method", "k", "seed"])[list(METRICS)].mean().reset_index()
    header = ["k", "metric", "previous", "official (new default)", "change (paired over seeds)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k in sorted(per_seed["k"].unique()):
        at_k = per_seed[per_seed["k"] == k]
        old = at_k[at_k["method"] == OLD].set_index("seed")
        new = at_k[at_k["method"] == NEW].set_index("seed")
        for metric, label in METRICS.items():
            if old[metric].isna().all() and new[metric].isna().all():
                continue
            change = (new[metric] - old[metric]).dropna()
            lines.append(f"| {k} | {label} | {_mean_std(old[metric])} | {_mean_std(new[metric])} | "
                         f"{'–' if change.empty else f'{change.mean():+.3f}'}"
                         f"{f' ± {change.std(ddof=1):.3f}' if len(change) > 1 else ''} |")
    cells = ok.groupby("method").size().to_dict()
    lines += ["", f"Cells with status ok: previous {cells.get(OLD, 0)}, official {cells.get(NEW, 0)}; "
              f"categories: {', '.join(sorted(ok['category'].unique()))}."]
    return lines


def one_departure(run_dir: Path) -> list[str]:
    """k x variant rows of a run whose variants each put back one previous setting on the new default
    (a diagnosis of where the change comes from, not a choice: the default stays the official computation)."""
    results = read_results(run_dir)
    ok = results[results["status"] == "ok"]
    per_seed = ok.groupby(["method", "k", "seed"])[list(METRICS)].mean().reset_index()
    shown = [m for m in METRICS if per_seed[m].notna().any()]
    header = ["k", "variant", *(METRICS[m] for m in shown)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (k, method), group in per_seed.groupby(["k", "method"], sort=True):
        lines.append(f"| {k} | `{method}` | " + " | ".join(_mean_std(group[m]) for m in shown) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("procedural", type=Path, help="run folder of the procedural grid")
    parser.add_argument("real", type=Path, help="run folder of the juice_bottle grid")
    parser.add_argument("--section", default="patchcore_official")
    parser.add_argument("--one-departure", type=Path, nargs="*", default=[],
                        help="run folders whose variants each restore one previous setting (diagnosis)")
    args = parser.parse_args()
    lines = [
        "## PatchCore: official computation vs the previous one (preset offline)",
        "",
        "The new default (`patchcore`) follows amazon-science/patchcore-inspection: zero-padded 3x3 "
        "neighbourhoods (the padding counts), each level projected by adaptive average pooling to a fixed "
        "dimension (Lite0: 112, then 112 for the joined levels) so each level weighs the same, image score = "
        f"max of the raw patch scores. Previous: `{OLD}`. k = 1, 2, 4, 8 x seeds 42 0 1234, both variants on the "
        "same cells of one run; mean ± std (ddof=1) over seeds; nothing here was tuned on these splits.",
        "",
        f"### Procedural reported split (`{args.procedural}`)",
        "",
        *before_after(args.procedural),
        "",
        f"### Real partial LOCO category, juice_bottle (`{args.real}`; logical anomalies only)",
        "",
        *before_after(args.real),
    ]
    for run_dir in args.one_departure:
        lines += ["", f"#### One previous setting at a time on the new default (`{run_dir}`; diagnosis, not a choice)",
                  "", *one_departure(run_dir)]
    write_section(args.section, "\n".join(lines))
    print("\n".join(lines))
    print(f"\nwrote section {args.section!r} of BENCHMARKS.md")


if __name__ == "__main__":
    main()
