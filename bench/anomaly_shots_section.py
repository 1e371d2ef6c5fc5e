"""Writes a BENCHMARKS.md section comparing every method of two run folders that differ only in `--anomaly-shots`
(m = 0 and m > 0): image AUROC logical / structural and F1-max per k, side by side, with fit and predict seconds.

Run (after `python -m leaderboard show` on both folders):
`.venv/bin/python -m bench.anomaly_shots_section RUN_M0 RUN_M --section NAME --title TITLE [--intro TEXT]`.
The numbers are those of the run folders' leaderboard.csv; nothing is typed by hand. Methods missing from one
folder are shown with `–` on that side.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from bench.markdown import add_section_arguments, write_tables
from leaderboard.render import format_value, shown_categories
from runfolder.schema import RunPaths


def _board(run_dir: Path) -> pd.DataFrame:
    board = pd.read_csv(RunPaths(run_dir).leaderboard, dtype={"k": str})
    board = board[(board["category"] == shown_categories(board)[0]) & (board["k"] != "all")]
    return board.set_index(["method", "k"])


def _cells(board: pd.DataFrame, key: tuple[str, str], structural: bool) -> list[str]:
    if key not in board.index:
        return ["–"] * (4 if structural else 3)
    row = board.loc[key]
    metrics = ["image_auroc_logical", *(["image_auroc_structural"] if structural else []), "f1_max"]
    return [*(format_value(row, m) for m in metrics), f"{row['fit_s']:.1f} / {row['predict_s']:.1f}"]


def table(m0: pd.DataFrame, m: pd.DataFrame, shots: int) -> list[str]:
    """Markdown rows: method x k, the m = 0 columns then the m = `shots` columns."""
    structural = m0["image_auroc_structural"].notna().any()
    names = ["AUROC logical", *(["AUROC structural"] if structural else []), "F1-max", "fit / predict s"]
    header = ["method", "k", *(f"{n} (m=0)" for n in names), *(f"{n} (m={shots})" for n in names)]
    keys = sorted(set(m0.index) | set(m.index), key=lambda key: (key[0], int(key[1])))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in keys:
        lines.append("| " + " | ".join([key[0], key[1], *_cells(m0, key, structural), *_cells(m, key, structural)])
                     + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_m0", type=Path)
    parser.add_argument("run_m", type=Path)
    add_section_arguments(parser)
    args = parser.parse_args()
    m = _board(args.run_m)
    shots = int(m["anomaly_shots"].max())  # one m per run folder
    category = m.reset_index()["category"].iloc[0]
    write_tables(args, [f"Mean ± std (ddof=1) over seeds; category: {category}; "
                        "fit / predict: seconds per cell.", "", *table(_board(args.run_m0), m, shots)])


if __name__ == "__main__":
    main()
