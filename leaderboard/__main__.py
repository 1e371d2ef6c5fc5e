"""Command line of the leaderboard package: `python -m leaderboard show|report RUN_DIR`, `compare RUN_A RUN_B`,
`paired RUN --a X --b Y [--preset P] [--run-b RUN_B] [--k K ...] [--metric M ...]`, `page RUN [RUN ...] [--out DIR]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from leaderboard.aggregate import read_results
from leaderboard.compare import anomaly_shots_note, compare, compare_paired, print_comparison
from leaderboard.paired import PAIRED_METRICS, paired, print_paired
from leaderboard.merge import merge
from leaderboard.page import write_page
from leaderboard.show import show, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("show", help="aggregate a run folder and print its leaderboard").add_argument("run_dir", type=Path)
    commands.add_parser("report", help="write report.md with figures").add_argument("run_dir", type=Path)
    pair = commands.add_parser("compare", help="per-method differences between two runs (B − A)")
    pair.add_argument("run_a", type=Path)
    pair.add_argument("run_b", type=Path)
    test = commands.add_parser("paired", help="paired comparison of two methods over matching cells (A − B): "
                               "Wilcoxon signed-rank p and a paired bootstrap interval of the mean difference")
    test.add_argument("run_dir", type=Path)
    test.add_argument("--a", required=True, help="method A (a results.csv method, e.g. fusion)")
    test.add_argument("--b", required=True, help="method B")
    test.add_argument("--preset", help="the preset of both, when a method ran under several")
    test.add_argument("--run-b", type=Path, help="take method B from this run folder instead")
    test.add_argument("--k", type=int, nargs="+", default=[], help="only the cells of these shot counts")
    test.add_argument("--metric", nargs="+", default=list(PAIRED_METRICS),
                      help="results.csv columns to compare (default: image_auroc f1_max; e.g. image_auroc_logical)")
    merging = commands.add_parser("merge", help="merge shard run folders into one")
    merging.add_argument("out", type=Path)
    merging.add_argument("runs", type=Path, nargs="+")
    site = commands.add_parser("page", help="write a static site (board, VAND curve, method and comparison pages) "
                               "that opens from file:// offline")
    site.add_argument("runs", type=Path, nargs="+", help="run folders (two or more: compared with the first)")
    site.add_argument("--out", type=Path, help="the site's folder (default: FIRST_RUN/page)")
    args = parser.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=170)
    try:
        if args.command == "show":
            show(args.run_dir, console)
        elif args.command == "report":
            console.print(f"written {write_report(args.run_dir)}")
        elif args.command == "page":
            console.print(f"page written: {write_page(args.runs, args.out).resolve()}", highlight=False, soft_wrap=True)
        elif args.command == "merge":
            show(merge(args.out, args.runs), console)
        elif args.command == "paired":
            results = read_results(args.run_dir)
            other = read_results(args.run_b) if args.run_b else None
            table = paired(results, args.a, args.b, other, args.preset, tuple(args.k), tuple(args.metric))
            print_paired(table, console, f"{args.a} − {args.b}" + (f", k = {' '.join(map(str, args.k))}" if args.k else ""))
        else:
            results_a, results_b = read_results(args.run_a), read_results(args.run_b)
            if (note := anomaly_shots_note(results_a, results_b)) is not None:
                console.print(f"[yellow]{escape(note)}[/yellow]", highlight=False, soft_wrap=True)
            print_comparison(compare(results_a, results_b), console)
            print_paired(compare_paired(results_a, results_b), console, "paired per method, B − A")
    except (OSError, ValueError) as error:  # RunFolderError (a ValueError): a missing or malformed run-folder file
        console.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
