"""Writing one benchmark's section of BENCHMARKS.md, between markers, leaving the other sections alone."""
from __future__ import annotations

import argparse
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the section between `<!-- name -->` and `<!-- /name -->`."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def add_section_arguments(parser: argparse.ArgumentParser, title: str | None = None) -> None:
    """`--section`, `--title`, `--intro`, `--outro`: where a bench writes its tables, and the text around them.
    `--section` is required unless a default `title` is given (then, without it, the text is printed)."""
    parser.add_argument("--section", required=title is None, default=None)
    parser.add_argument("--title", required=title is None, default=title)
    parser.add_argument("--intro", default="")
    parser.add_argument("--outro", default="", help="text after the tables")


def write_tables(args: argparse.Namespace, tables: list[str]) -> None:
    """Section `args.section` of BENCHMARKS.md (printed when there is none): the title, the intro, the table lines,
    then the outro."""
    lines = [f"## {args.title}", "", args.intro, "", *tables]
    if args.outro:
        lines += ["", args.outro]
    if args.section is None:
        print("\n".join(lines))
        return
    write_section(args.section, "\n".join(lines))
    print(f"wrote section {args.section!r} of BENCHMARKS.md")
