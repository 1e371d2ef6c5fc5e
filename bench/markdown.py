"""Writing one bench's section of BENCHMARKS.md between markers, leaving the other sections alone."""
from __future__ import annotations

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


def publish(text: str, section: str | None, tag: str) -> None:
    """Print a bench's section; also write it into BENCHMARKS.md when `section` is named."""
    print(text, flush=True)
    if section:
        write_section(section, text)
        print(f"[{tag}] wrote section {section} of BENCHMARKS.md", flush=True)
