"""HTML building blocks of the leaderboard page (`leaderboard.page`): escaped cells and tables, filters, notes,
the page frame. Plain string templating with `html.escape`; no template engine."""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Iterable, Mapping, Sequence

ASSETS = ("page.css", "page.js")  # package data in leaderboard/page_assets/, copied to <out>/assets/


@dataclass(frozen=True)
class Cell:
    """One table cell: `html` is already escaped markup; `value` is what the page sorts it by (a number, or
    None for text sorted by its content)."""

    html: str
    value: float | str | None = None
    text_column: bool = False


@dataclass(frozen=True)
class Column:
    """A table column: its sort key, its label, and whether it sorts as numbers."""

    key: str
    label: str
    numeric: bool = True
    title: str = ""


@dataclass(frozen=True)
class Row:
    """A table row: its cells, its filter attributes (`data-f-<name>`), and an extra CSS class."""

    cells: Sequence[Cell]
    filters: Mapping[str, str]
    css: str = ""


@dataclass(frozen=True)
class Note:
    """A visible note at the top of a page: `level` is `bad` (failed cells), `warn` or `info`; `run` and `methods`
    name what it is about, when it is about methods of one run (it is shown on their pages too)."""

    level: str
    text: str
    run: str = ""
    methods: tuple[str, ...] = ()


def text(value: object) -> Cell:
    """A text cell."""
    return Cell(escape(str(value)), str(value), text_column=True)


def link(label: str, href: str) -> Cell:
    """A text cell that links to another page of the site."""
    return Cell(f'<a href="{escape(href)}">{escape(label)}</a>', label, text_column=True)


def is_missing(value: object) -> bool:
    """True for None and NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: object, digits: int = 3, std: object = None, low: object = None, high: object = None,
           flag: str = "") -> Cell:
    """A numeric cell: the value, `± std` when given, the interval `[low, high]` beneath it, then a flag."""
    if is_missing(value):
        return Cell("–" + flag, None)
    markup = f"{float(value):.{digits}f}"
    if not is_missing(std):
        markup += f' <span class="std">± {float(std):.{digits}f}</span>'
    if not is_missing(low) and not is_missing(high):
        markup += f'<span class="ci">[{float(low):.{digits}f}, {float(high):.{digits}f}]</span>'
    return Cell(markup + flag, float(value))


def flag(label: str, bad: bool = False, title: str = "") -> str:
    """A small badge after a cell's content."""
    tip = f' title="{escape(title)}"' if title else ""
    return f'<span class="flag{" bad" if bad else ""}"{tip}>{escape(label)}</span>'


def table(table_id: str, columns: Sequence[Column], rows: Iterable[Row], default_sort: str = "",
          default_dir: str = "desc", main: bool = False) -> str:
    """A sortable table (click a header); `main` marks the table whose sort and filters live in the URL fragment."""
    attributes = f'id="{escape(table_id)}" class="sortable"'
    attributes += f' data-default-sort="{escape(default_sort)}" data-default-dir="{escape(default_dir)}"'
    attributes += " data-main" if main else ""
    head = "".join(_header(c) for c in columns)
    body = []
    for row in rows:
        filters = "".join(f' data-f-{escape(name)}="{escape(value)}"' for name, value in row.filters.items())
        css = f' class="{escape(row.css)}"' if row.css else ""
        cells = "".join(_cell(cell) for cell in row.cells)
        body.append(f"<tr{css}{filters}>{cells}</tr>")
    return (f'<div class="scroll"><table {attributes}><thead><tr>{head}</tr></thead>'
            f'<tbody>\n{chr(10).join(body)}\n</tbody></table></div>')


def _header(column: Column) -> str:
    kind = "num" if column.numeric else "text"
    css = "" if column.numeric else ' class="text"'
    tip = f' title="{escape(column.title)}"' if column.title else ""
    return f'<th data-key="{escape(column.key)}" data-type="{kind}"{css}{tip}>{escape(column.label)}</th>'


def _cell(cell: Cell) -> str:
    value = "" if cell.value is None else (repr(cell.value) if isinstance(cell.value, float) else str(cell.value))
    css = ' class="text"' if cell.text_column else ""
    return f'<td{css} data-value="{escape(value)}">{cell.html}</td>'


def filter_controls(table_id: str, filters: Sequence[tuple[str, str, Sequence[tuple[str, str]], str]]) -> str:
    """`<select>` filters of a table: (name, label, [(value, label)], selected); value "" shows every row."""
    parts = []
    for name, label, options, selected in filters:
        choices = "".join(f'<option value="{escape(value)}"{" selected" if value == selected else ""}>'
                          f"{escape(shown)}</option>" for value, shown in [("", "all"), *options])
        parts.append(f'<label>{escape(label)}<select data-table="{escape(table_id)}" data-filter="{escape(name)}">'
                     f"{choices}</select></label>")
    parts.append(f'<span class="count" data-count-of="{escape(table_id)}"></span>')
    return f'<div class="controls">{"".join(parts)}</div>'


def notes(items: Sequence[Note]) -> str:
    """The notes of a page as a list (empty markup without any)."""
    if not items:
        return ""
    lines = "".join(f'<li class="{escape(n.level)}">{escape(n.text)}</li>' for n in items)
    return f'<ul class="notes" id="notes">{lines}</ul>'


def figure(src: str | None, caption: str, missing: str) -> str:
    """An image of the site with its caption, or the note saying why there is none."""
    if src is None:
        return f'<p class="muted">{escape(missing)}</p>'
    return (f'<figure><img src="{escape(src)}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def forest(low: object, mean: object, high: object, scale: float, width: int = 150) -> str:
    """An inline SVG of one difference: its 95 % interval as a line, its mean as a dot, a dashed zero line;
    `scale` is the largest absolute value drawn in the table (the half width)."""
    if any(is_missing(v) for v in (low, mean, high)) or scale <= 0:
        return ""

    def x(value: object) -> float:
        return round(width / 2 + float(value) / scale * (width / 2 - 4), 1)

    return (f'<svg class="forest" width="{width}" height="14" role="img" aria-label="interval">'
            f'<line class="zero" x1="{width / 2}" y1="0" x2="{width / 2}" y2="14"/>'
            f'<line class="ci" x1="{x(low)}" y1="7" x2="{x(high)}" y2="7"/>'
            f'<circle cx="{x(mean)}" cy="7" r="3"/></svg>')


def document(title: str, body: str, nav: Sequence[tuple[str, str]], active: str, heading: str) -> str:
    """A whole page: the site's header with its navigation (label, href), the title, then `body`."""
    current = ' class="active"'
    links = "".join(f'<a href="{escape(href)}"{current if href == active else ""}>{escape(label)}</a>'
                    for label, href in nav)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="stylesheet" href="assets/page.css">
</head>
<body>
<header class="site"><span class="title">Few-shot AD leaderboard</span><nav>{links}</nav></header>
<main>
<h1>{escape(heading)}</h1>
{body}
</main>
<script src="assets/page.js"></script>
</body>
</html>
"""
