"""Command line of the leaderboard package: `python -m leaderboard show RUN_DIR`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from leaderboard.show import show


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard")
    commands = parser.add_subparsers(dest="command", required=True)
    show_parser = commands.add_parser("show", help="aggregate a run folder and print its leaderboard")
    show_parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        show(args.run_dir, None if sys.stdout.isatty() else Console(width=170))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
