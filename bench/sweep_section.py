"""Writes a k-shot sweep's overall tables into a section of BENCHMARKS.md, from a run folder's
leaderboard.csv and score_parts.csv (run `python -m leaderboard report RUN_DIR` first).

Run: `.venv/bin/python -m bench.sweep_section RUN_DIR --section NAME --title TITLE --intro TEXT
[--parts gcad fusion] [--methods M ...] [--paired-per-k FUSION]`. The numbers are those of the run folder; nothing
is typed by hand.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from bench.markdown import add_section_arguments, write_tables
from leaderboard.aggregate import read_results
from leaderboard.paired import EXPLANATION, fusion_members, paired, paired_rows
from leaderboard.render import format_value, shown_categories
from runfolder.schema import RunPaths


def method_table(board: pd.DataFrame, pixel: bool = False) -> list[str]:
    """method x k rows: image AUROC logical / structural / mean and F1-max (with `pixel`: pixel AUROC and
    AU-sPRO@0.05), timings, then the normalised AUFC."""
    shown = board[board["category"] == shown_categories(board)[0]]
    aufc = shown[shown["k"] == "all"].set_index("method")["aufc_norm"]
    metrics = ["image_auroc_logical", "image_auroc_structural", "image_auroc_mean", "f1_max"]
    labels = ["AUROC logical", "AUROC structural", "AUROC mean", "F1-max"]
    if pixel:
        metrics, labels = metrics + ["pixel_auroc", "auspro_0.05"], labels + ["pixel AUROC", "AU-sPRO@0.05"]
    header = ["method", "k", *labels, "fit s", "predict s", "nAUFC"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in shown[shown["k"] != "all"].iterrows():
        norm = aufc.get(row["method"])
        cells = [row["method"], row["k"], *(format_value(row, m) for m in metrics), f"{row['fit_s']:.1f}",
                 f"{row['predict_s']:.1f}", "–" if norm is None or math.isnan(norm) else f"{norm:.3f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def parts_table(parts: pd.DataFrame, methods: list[str]) -> list[str]:
    """Score parts (branches, fusion members) of the chosen methods: AUROC logical / structural, and the
    part's std over the normal test images."""
    shown = parts[(parts["category"] == shown_categories(parts)[0]) & parts["method"].isin(methods)]
    lines = ["| method | k | part | AUROC logical | AUROC structural | std on normal test images |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['k']} | `{r['part']}` | {format_value(r, 'auroc_logical')} | "
              f"{format_value(r, 'auroc_structural')} | {format_value(r, 'normal_std')} |"
              for _, r in shown.iterrows()]
    return lines


def paired_per_k(results: pd.DataFrame, fusion: str) -> list[str]:
    """Fusion variant `fusion` vs each of its members, per k: image AUROC logical / structural and F1-max (those the
    data has), paired over the matching cells."""
    metrics = tuple(m for m in ("image_auroc_logical", "image_auroc_structural", "f1_max")
                    if pd.to_numeric(results[m], errors="coerce").notna().any())
    members = [(member, preset) for method, member, preset in fusion_members(results) if method == fusion]
    if not members:
        raise SystemExit(f"--paired-per-k {fusion}: not a fusion variant of this run (or no member of it ran)")
    header, lines = None, []
    for k in sorted(results.loc[results["method"] == fusion, "k"].astype(int).unique()):
        for member, preset in members:
            header, rows = paired_rows(paired(results, fusion, member, preset=preset, shots=(int(k),), metrics=metrics))
            lines += ["| " + " | ".join([str(k), *row]) + " |" for row in rows]
    return [EXPLANATION, "", "| " + " | ".join(["k", *header]) + " |", "|" + "---|" * (len(header) + 1), *lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    add_section_arguments(parser)
    parser.add_argument("--parts", nargs="*", default=[], help="methods (folder names) whose score parts to list")
    parser.add_argument("--pixel", action="store_true", help="add pixel AUROC and AU-sPRO@0.05 columns")
    parser.add_argument("--methods", nargs="*", default=[], help="only these methods' rows (default: every method)")
    parser.add_argument("--paired-per-k", default=None, metavar="FUSION",
                        help="add this fusion variant vs each member, per k (paired over the matching cells)")
    args = parser.parse_args()
    board = pd.read_csv(RunPaths(args.run_dir).leaderboard, dtype={"k": str})
    if args.methods:
        board = board[board["method"].isin(args.methods)]
    tables = [f"Mean ± std (ddof=1) over seeds; category: {shown_categories(board)[0]} "
              "(the mean over categories within each seed). fit/predict: seconds per cell.", "",
              *method_table(board, args.pixel)]
    if args.parts:
        parts = pd.read_csv(RunPaths(args.run_dir).score_parts)
        tables += ["", "Score parts (from the per-image score CSVs, `score_parts.csv`):", "",
                   *parts_table(parts, args.parts)]
    if args.paired_per_k:
        tables += ["", f"`{args.paired_per_k}` vs each member, per k:", "",
                   *paired_per_k(read_results(args.run_dir), args.paired_per_k)]
    write_tables(args, tables)


if __name__ == "__main__":
    main()
