"""`python -m leaderboard show|report RUN_DIR`: aggregate a run folder, write leaderboard.csv, report.md, figures."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console

from leaderboard.aggregate import aggregate, read_results, status_counts
from leaderboard.intervals import read_replicates
from leaderboard.paired import fusion_comparisons, markdown_paired, print_paired
from leaderboard.figures import plot_auroc_bars, plot_f1_vs_k, plot_overlays
from leaderboard.render import (markdown_calibration, markdown_intervals, markdown_report, markdown_score_parts,
                                print_calibration, print_score_parts, print_tables)
from leaderboard.score_parts import aggregate_score_parts, calibration, fusion_folders, read_score_parts
from runfolder.schema import RunPaths


@dataclass(frozen=True)
class RunTables:
    """What a run folder aggregates to: its results, the leaderboard (with bootstrap intervals from the
    score CSVs), the score-parts table, and fusion's paired comparisons with each member."""

    results: pd.DataFrame
    board: pd.DataFrame
    parts: pd.DataFrame
    fusion: pd.DataFrame

    @classmethod
    def read(cls, run_dir: Path) -> "RunTables":
        results = read_results(run_dir)
        board = aggregate(results, read_replicates(run_dir, results))
        return cls(results, board, aggregate_score_parts(read_score_parts(run_dir)), fusion_comparisons(results))


def write_report(run_dir: Path, tables: RunTables | None = None) -> Path:
    """Write leaderboard.csv, score_parts.csv (when methods wrote score parts), report.md and plots/*.png
    of a run folder; returns report.md."""
    run_dir = Path(run_dir)
    paths = RunPaths(run_dir)
    tables = tables or RunTables.read(run_dir)
    board = tables.board
    board.to_csv(paths.leaderboard, index=False, float_format="%.6f")
    drawn = {
        "F1-max vs k (VAND curve)": plot_f1_vs_k(board, paths.plot("f1_vs_k.png")) if not board.empty else None,
        "Image AUROC per category": plot_auroc_bars(board, paths.plot("auroc_bars.png")) if not board.empty else None,
        "Worst false positive and false negative per method": plot_overlays(run_dir, paths.plot("overlays.png")),
    }
    notes = {"Worst false positive and false negative per method": "no anomaly maps in this run: rerun with --save-maps"}
    figures = {title: str(path.relative_to(run_dir)) if path else notes.get(title, "nothing to draw")
               for title, path in drawn.items()}
    report = markdown_report(board, status_counts(tables.results), figures)
    intervals = markdown_intervals(board)
    report += ("\n" + intervals) if intervals else ""
    if not tables.parts.empty:
        tables.parts.to_csv(paths.score_parts, index=False, float_format="%.6f")
        report += "\n" + markdown_score_parts(tables.parts)
        if not (fused := calibration(tables.parts, fusion_folders(tables.results))).empty:
            report += "\n" + markdown_calibration(fused)
    if not tables.fusion.empty:
        report += "\n" + markdown_paired(tables.fusion)
    target = paths.report
    target.write_text(report)
    return target


def show(run_dir: Path, console: Console | None = None) -> Path:
    """Write the report files of a run folder and print its tables; returns leaderboard.csv."""
    console = console or Console()
    tables = RunTables.read(Path(run_dir))
    write_report(run_dir, tables)
    print_tables(tables.board, status_counts(tables.results), console)
    if not tables.parts.empty:
        print_score_parts(tables.parts, console)
        if not (fused := calibration(tables.parts, fusion_folders(tables.results))).empty:
            print_calibration(fused, console)
    if not tables.fusion.empty:
        print_paired(tables.fusion, console, "fusion vs each member (A − B)")
    console.print(f"[dim]leaderboard.csv, score_parts.csv, report.md and plots/ written in {run_dir}[/dim]")
    return RunPaths(Path(run_dir)).leaderboard
