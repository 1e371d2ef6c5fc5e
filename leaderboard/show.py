"""`python -m leaderboard show RUN_DIR`: aggregate a run folder, write leaderboard.csv, report.md, plots."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

from leaderboard.aggregate import aggregate, read_results, status_counts
from leaderboard.render import markdown_report, plot_f1_vs_k, print_tables


def show(run_dir: Path, console: Console | None = None) -> Path:
    """Aggregate a run folder, write its leaderboard files, print the tables; returns leaderboard.csv."""
    run_dir = Path(run_dir)
    results = read_results(run_dir)
    board = aggregate(results)
    statuses = status_counts(results)
    target = run_dir / "leaderboard.csv"
    board.to_csv(target, index=False, float_format="%.6f")
    (run_dir / "report.md").write_text(markdown_report(board, statuses))
    if not board.empty:
        plot_f1_vs_k(board, run_dir / "plots" / "f1_vs_k.png")
    print_tables(board, statuses, console)
    (console or Console()).print(f"[dim]{target}, report.md and plots/ written in {run_dir}[/dim]")
    return target
