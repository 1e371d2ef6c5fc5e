"""`python -m leaderboard show|report RUN_DIR`: aggregate a run folder, write leaderboard.csv, report.md, figures."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

from leaderboard.aggregate import aggregate, read_results, status_counts
from leaderboard.figures import plot_auroc_bars, plot_f1_vs_k, plot_overlays
from leaderboard.render import markdown_report, markdown_score_parts, print_score_parts, print_tables
from leaderboard.score_parts import aggregate_score_parts, read_score_parts


def write_report(run_dir: Path) -> Path:
    """Write leaderboard.csv, score_parts.csv (when methods wrote score parts), report.md and plots/*.png
    of a run folder; returns report.md."""
    run_dir = Path(run_dir)
    results = read_results(run_dir)
    board = aggregate(results)
    board.to_csv(run_dir / "leaderboard.csv", index=False, float_format="%.6f")
    plots = run_dir / "plots"
    drawn = {
        "F1-max vs k (VAND curve)": plot_f1_vs_k(board, plots / "f1_vs_k.png") if not board.empty else None,
        "Image AUROC per category": plot_auroc_bars(board, plots / "auroc_bars.png") if not board.empty else None,
        "Worst false positive and false negative per method": plot_overlays(run_dir, plots / "overlays.png"),
    }
    notes = {"Worst false positive and false negative per method": "no anomaly maps in this run: rerun with --save-maps"}
    figures = {title: str(path.relative_to(run_dir)) if path else notes.get(title, "nothing to draw")
               for title, path in drawn.items()}
    report = markdown_report(board, status_counts(results), figures)
    parts = aggregate_score_parts(read_score_parts(run_dir))
    if not parts.empty:
        parts.to_csv(run_dir / "score_parts.csv", index=False, float_format="%.6f")
        report += "\n" + markdown_score_parts(parts)
    target = run_dir / "report.md"
    target.write_text(report)
    return target


def show(run_dir: Path, console: Console | None = None) -> Path:
    """Write the report files of a run folder and print its tables; returns leaderboard.csv."""
    console = console or Console()
    write_report(run_dir)
    results = read_results(run_dir)
    print_tables(aggregate(results), status_counts(results), console)
    parts = aggregate_score_parts(read_score_parts(run_dir))
    if not parts.empty:
        print_score_parts(parts, console)
    console.print(f"[dim]leaderboard.csv, score_parts.csv, report.md and plots/ written in {run_dir}[/dim]")
    return Path(run_dir) / "leaderboard.csv"
