"""Paired comparison of two methods over their matching cells: is a leaderboard difference real?

Cells are matched by (category, k, seed) only: A's cell and B's cell with the same category, shot count
and seed saw the same test images and the same support draw. Cells ok for one method but not the other
are left out and counted (`only_a`, `only_b`); a matched cell where the metric does not apply for either
method is left out and counted (`undefined`). On the n remaining cells, with d = A − B per cell
(`metrics.bootstrap.paired_comparison`): the mean difference, its 95 % percentile interval from a
paired bootstrap over the cells (1000 resamples, seed 0), and the two-sided Wilcoxon signed-rank test's
p-value (scipy.stats.wilcoxon). `python -m leaderboard paired RUN --a X --b Y [--k K ...] [--metric M ...]`
prints it (on the cells of those k, for those results.csv columns: image AUROC and F1-max by default); report.md
has fusion − each member.
"""
from __future__ import annotations

import json

import pandas as pd
from rich.console import Console
from rich.table import Table

from metrics.bootstrap import N_RESAMPLES, SEED, paired_comparison

PAIRED_METRICS = ("image_auroc", "f1_max")
MATCH = ["category", "k", "seed"]
PAIRED_COLUMNS = ("metric", "a", "b", "n_cells", "only_a", "only_b", "undefined", "mean_a", "mean_b", "mean_diff",
                  "ci_low", "ci_high", "p_value", "a_better", "b_better")


def method_cells(results: pd.DataFrame, method: str, preset: str | None = None) -> pd.DataFrame:
    """The ok cells of one method (one preset: `preset`, or the method's only one), one row per (category, k, seed)."""
    rows = results[(results["method"].astype(str) == method) & (results["status"] == "ok")]
    if preset is not None:
        rows = rows[rows["preset"].astype(str) == preset]
    presets = sorted(set(rows["preset"].astype(str)))
    if len(presets) > 1:
        raise ValueError(f"method {method!r} has cells under several presets ({', '.join(presets)}): name one with --preset")
    rows = rows.assign(category=rows["category"].astype(str), k=rows["k"].astype(int), seed=rows["seed"].astype(int))
    return rows.drop_duplicates(MATCH, keep="last")


def paired_table(cells_a: pd.DataFrame, cells_b: pd.DataFrame, a: str, b: str,
                 metrics: tuple[str, ...] = PAIRED_METRICS, n_resamples: int = N_RESAMPLES,
                 seed: int = SEED) -> pd.DataFrame:
    """One row per metric: the paired comparison of A − B over the cells both have (see the module)."""
    keys_a = set(map(tuple, cells_a[MATCH].itertuples(index=False)))
    keys_b = set(map(tuple, cells_b[MATCH].itertuples(index=False)))
    joined = cells_a[MATCH + list(metrics)].merge(cells_b[MATCH + list(metrics)], on=MATCH, suffixes=("_a", "_b"))
    joined = joined.sort_values(MATCH).reset_index(drop=True)
    rows = []
    for metric in metrics:
        values = joined[[f"{metric}_a", f"{metric}_b"]].apply(pd.to_numeric, errors="coerce")
        defined = values.notna().all(axis=1)
        x, y = values.loc[defined, f"{metric}_a"].to_numpy(), values.loc[defined, f"{metric}_b"].to_numpy()
        result = paired_comparison(x, y, n_resamples=n_resamples, seed=seed)
        rows.append({"metric": metric, "a": a, "b": b, "n_cells": result.n, "only_a": len(keys_a - keys_b),
                     "only_b": len(keys_b - keys_a), "undefined": int((~defined).sum()),
                     "mean_a": float(x.mean()) if x.size else float("nan"),
                     "mean_b": float(y.mean()) if y.size else float("nan"),
                     "mean_diff": result.mean_diff, "ci_low": result.ci_low, "ci_high": result.ci_high,
                     "p_value": result.p_value, "a_better": result.n_positive, "b_better": result.n_negative})
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def paired(results_a: pd.DataFrame, a: str, b: str, results_b: pd.DataFrame | None = None,
           preset: str | None = None, shots: tuple[int, ...] = (),
           metrics: tuple[str, ...] = PAIRED_METRICS) -> pd.DataFrame:
    """Method `a` (of `results_a`) vs method `b` (of `results_b`, or the same results), A − B, on the cells with
    k in `shots` (empty: every k), for each of `metrics` (results.csv columns)."""
    results_b = results_a if results_b is None else results_b
    cells_a, cells_b = method_cells(results_a, a, preset), method_cells(results_b, b, preset)
    if shots:
        cells_a, cells_b = cells_a[cells_a["k"].isin(shots)], cells_b[cells_b["k"].isin(shots)]
    where = (f" under preset {preset!r}" if preset else "") + (f" at k = {', '.join(map(str, shots))}" if shots else "")
    if cells_a.empty or cells_b.empty:
        raise ValueError(f"method {a if cells_a.empty else b!r} has no ok cells{where}")
    unknown = [m for m in metrics if m not in cells_a.columns or m not in cells_b.columns]
    if unknown:
        raise ValueError(f"--metric {', '.join(unknown)}: not a results.csv column")
    return paired_table(cells_a, cells_b, a, b, metrics)


def fusion_members(results: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(fusion method, member, preset) for every fusion variant of a run: its members are the `fused` list of
    its `method_info` (the members it actually combined), else every other method of its preset."""
    ok = results[results["status"] == "ok"]
    pairs = []
    for (method, preset), rows in ok.groupby([ok["method"].astype(str), ok["preset"].astype(str)], sort=True):
        if not method.split(":")[0] == "fusion":
            continue
        members: list[str] = []
        for info in rows["method_info"].dropna():
            try:
                fused = json.loads(info).get("fused", [])
            except (json.JSONDecodeError, AttributeError):
                fused = []
            members += [m for m in fused if m not in members]
        if not members:
            members = sorted(m for m in set(ok.loc[ok["preset"].astype(str) == preset, "method"].astype(str))
                             if m.split(":")[0] != "fusion")
        present = set(ok.loc[ok["preset"].astype(str) == preset, "method"].astype(str))
        pairs += [(method, member, preset) for member in members if member in present and member != method]
    return pairs


def fusion_comparisons(results: pd.DataFrame) -> pd.DataFrame:
    """Fusion − each member, per metric, for every fusion variant of the run (empty without fusion)."""
    tables = [paired_table(method_cells(results, f, p), method_cells(results, m, p), f, m)
              for f, m, p in fusion_members(results)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(PAIRED_COLUMNS))


def _text(value: float, signed: bool = False) -> str:
    return "–" if pd.isna(value) else (f"{value:+.3f}" if signed else f"{value:.3f}")


def paired_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of a paired-comparison table."""
    header = ["A", "B", "metric", "cells", "A mean", "B mean", "A − B", "95% CI", "Wilcoxon p", "A>B / A<B",
              "unmatched (A only / B only / undefined)"]
    rows = [[r["a"], r["b"], r["metric"], str(int(r["n_cells"])), _text(r["mean_a"]), _text(r["mean_b"]),
             _text(r["mean_diff"], True),
             "–" if pd.isna(r["ci_low"]) else f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]",
             "–" if pd.isna(r["p_value"]) else f"{r['p_value']:.3g}", f"{int(r['a_better'])} / {int(r['b_better'])}",
             f"{int(r['only_a'])} / {int(r['only_b'])} / {int(r['undefined'])}"] for _, r in table.iterrows()]
    return header, rows


EXPLANATION = ("Cells matched by (category, k, seed); A − B per cell. Mean difference with a 95 % paired "
               "bootstrap interval over the cells (1000 resamples, seed 0) and the two-sided Wilcoxon "
               "signed-rank p-value on the per-cell differences; unmatched cells are left out and counted.")


def markdown_paired(table: pd.DataFrame, title: str = "Paired comparisons: fusion vs each member") -> str:
    """A report.md section for a paired-comparison table."""
    header, rows = paired_rows(table)
    lines = [f"## {title}", "", EXPLANATION, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def print_paired(table: pd.DataFrame, console: Console, title: str = "paired comparison (A − B)") -> None:
    """A paired-comparison table in the terminal."""
    header, rows = paired_rows(table)
    view = Table(title=title, title_justify="left", caption=EXPLANATION, caption_justify="left")
    for name in header:
        view.add_column(name, justify="left" if name in ("A", "B", "metric") else "right")
    for row in rows:
        view.add_row(*row)
    console.print(view)
