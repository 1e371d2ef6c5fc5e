"""Rendering of an aggregated leaderboard: rich terminal tables, report.md, F1-vs-k plot."""
from __future__ import annotations

import math

import pandas as pd
from rich.console import Console
from rich.table import Table

from leaderboard.aggregate import MISSING, OVERALL
from runfolder.schema import ANOMALY_SHOTS

SHOWN = (("f1_max", "F1-max"), ("image_auroc", "AUROC"), ("image_auroc_logical", "AUROC log."),
         ("image_auroc_structural", "AUROC str."), ("pixel_auroc", "pix AUROC"), ("auspro_0.05", "sPRO@.05"),
         ("fit_s", "fit s"), ("predict_s", "pred s"))


def shown_categories(table: pd.DataFrame) -> list[str]:
    """The categories a table is shown for: `overall` first when there are several, then each one."""
    categories = [c for c in table["category"].unique() if c != OVERALL]
    return ([OVERALL] if len(categories) > 1 else []) + categories


def format_value(row: pd.Series, column: str) -> str:
    """`value ± std` of a column (1 decimal for seconds, 3 otherwise); `–` where it does not apply."""
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    std = row.get(f"{column}_std")
    digits = 1 if column.endswith("_s") else 3
    text = f"{value:.{digits}f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {std:.{digits}f}"
    return text


def _missing_note(row: pd.Series | None) -> str:
    """` (n missing)` for a row whose scope lacks ok cells (its mean is over an incomplete set)."""
    missing = 0 if row is None else row.get(MISSING, 0)
    return f" ({int(missing)} missing)" if missing and not pd.isna(missing) else ""


def with_shots_in_names(board: pd.DataFrame) -> pd.DataFrame:
    """The board with each method shown as `name (m=M)` when some row is over labelled anomalies
    (`--anomaly-shots`), so rows with different m stay apart in every table; unchanged otherwise."""
    shots = board[ANOMALY_SHOTS].fillna(0).astype(int) if ANOMALY_SHOTS in board.columns else None
    if shots is None or not (shots > 0).any():
        return board
    return board.assign(method=[f"{method} (m={m})" for method, m in zip(board["method"], shots)])


def table_rows(board: pd.DataFrame, category: str) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of one category's table (k rows per method, plus AUFC); a row or AUFC over an
    incomplete set of cells says how many are missing."""
    board = with_shots_in_names(board)
    header = ["method", "preset", "k", "seeds", *(label for _, label in SHOWN), "AUFC (norm.)"]
    rows = []
    aufc_rows = board[(board["category"] == category) & (board["k"] == "all")].set_index(["method", "preset"])
    for _, row in board[(board["category"] == category) & (board["k"] != "all")].iterrows():
        key = (row["method"], row["preset"])
        summary = aufc_rows.loc[key] if key in aufc_rows.index else None
        aufc_text = "–"
        if summary is not None and not pd.isna(summary["aufc"]):
            aufc_text = f"{summary['aufc']:.3f} ({summary['aufc_norm']:.3f}){_missing_note(summary)}"
        rows.append([row["method"], row["preset"], str(row["k"]), f"{int(row['n_seeds'])}{_missing_note(row)}",
                     *(format_value(row, column) for column, _ in SHOWN), aufc_text])
    return header, rows


def print_tables(board: pd.DataFrame, statuses: pd.DataFrame, console: Console | None = None) -> None:
    """The overall table and one table per category, in the terminal; then skipped/failed cells."""
    console = console or Console()
    for category in shown_categories(board):
        header, rows = table_rows(board, category)
        table = Table(title=f"{category} (mean ± std over seeds)", title_justify="left")
        for name in header:
            table.add_column(name, justify="left" if name in ("method", "preset") else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    bad = statuses[statuses["status"] != "ok"]
    for _, row in bad.iterrows():
        console.print(f"[yellow]{row['method']} ({row['preset']}): {row['cells']} cells {row['status']}[/yellow]")
    console.print(cell_summary(statuses), highlight=False)


def cell_summary(statuses: pd.DataFrame) -> str:
    """One line: how many cells are ok, failed, skipped (and missing: no row at all)."""
    totals = statuses.groupby("status")["cells"].sum() if not statuses.empty else pd.Series(dtype=int)
    parts = [f"{int(totals.get(status, 0))} {status}" for status in ("ok", "failed", "skipped")]
    parts += [f"{int(n)} {status}" for status, n in totals.items() if status not in ("ok", "failed", "skipped")]
    note = "" if totals.drop("ok", errors="ignore").sum() == 0 else \
        "; rows over an incomplete set of cells say how many are missing"
    return f"cells: {', '.join(parts)}{note}"


def markdown_report(board: pd.DataFrame, statuses: pd.DataFrame, figures: dict[str, str | None]) -> str:
    """report.md: figures (relative paths, or a note where one could not be drawn), then the tables."""
    lines = ["# Leaderboard", "", "Mean ± std (ddof=1) over seeds; `overall` averages categories within each seed. "
             "The numbers are those of `leaderboard.csv`.", ""]
    for title, figure in figures.items():
        lines += [f"## {title}", "", f"![{title}]({figure})" if figure and figure.endswith(".png") else f"_{figure}_", ""]
    for category in shown_categories(board):
        header, rows = table_rows(board, category)
        lines += [f"## {category}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    lines += [cell_summary(statuses), ""]
    bad = statuses[statuses["status"] != "ok"]
    if not bad.empty:
        lines += ["## Cells that did not run", ""]
        lines += [f"- {r['method']} ({r['preset']}): {r['cells']} cells {r['status']}" for _, r in bad.iterrows()]
    return "\n".join(lines) + "\n"


PART_SHOWN = (("auroc_logical", "AUROC log."), ("auroc_structural", "AUROC str."), ("auroc", "AUROC"),
              ("normal_std", "std on normals"))


def score_part_rows(parts: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of the score-parts table (overall when there are several categories)."""
    shown = parts[parts["category"] == shown_categories(parts)[0]]
    header = ["method", "k", "part", "seeds", *(label for _, label in PART_SHOWN)]
    rows = [[row["method"], str(row["k"]), row["part"], str(int(row["n_seeds"])),
             *(format_value(row, column) for column, _ in PART_SHOWN)] for _, row in shown.iterrows()]
    return header, rows


def print_score_parts(parts: pd.DataFrame, console: Console) -> None:
    """Branch / member AUROCs in the terminal."""
    header, rows = score_part_rows(parts)
    table = Table(title="score parts: AUROC of each branch or fusion member (mean ± std over seeds)",
                  title_justify="left")
    for name in header:
        table.add_column(name, justify="left" if name in ("method", "part") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def markdown_score_parts(parts: pd.DataFrame) -> str:
    """The score-parts table as a report.md section."""
    header, rows = score_part_rows(parts)
    lines = ["## Score parts (branches, fusion members)", "",
             "Image AUROC of each part of a method's score, from the per-image score CSVs; `std on normals` is "
             "the part's spread over the normal test images (about 1 for a fusion member whose held-out "
             "statistics describe unseen normals).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def _interval(row: pd.Series, metric: str) -> str:
    value, low, high = row.get(metric), row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    if any(v is None or pd.isna(v) for v in (value, low, high)):
        return "–"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def markdown_intervals(board: pd.DataFrame) -> str:
    """report.md section: image AUROC and F1-max with their 95 % bootstrap intervals (leaderboard.csv's
    `*_ci_low` / `*_ci_high` columns); empty when no row has one (no score CSVs)."""
    if "f1_max_ci_low" not in board or board[["image_auroc_ci_low", "f1_max_ci_low"]].isna().all().all():
        return ""
    lines = ["## Confidence intervals", "",
             "Mean over seeds with a 95 % percentile interval: a bootstrap over each cell's test images, stratified "
             "by label (1000 resamples, seed 0), averaged as the row is (see `leaderboard/intervals.py`). Two "
             "methods whose intervals overlap may still differ: the paired comparison decides.", ""]
    header = ["method", "preset", "k", "AUROC [95% CI]", "F1-max [95% CI]"]
    board = with_shots_in_names(board)
    for category in shown_categories(board):
        rows = board[(board["category"] == category) & (board["k"] != "all")]
        lines += [f"### {category}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += [f"| {r['method']} | {r['preset']} | {r['k']} | {_interval(r, 'image_auroc')} | {_interval(r, 'f1_max')} |"
                  for _, r in rows.iterrows()]
        lines.append("")
    return "\n".join(lines)


def calibration_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of the calibration table: one row per (fusion variant, member), one column per k."""
    shown = table[table["category"] == shown_categories(table)[0]] if not table.empty else table
    ks = sorted(shown["k"].unique())
    header = ["fusion", "member", *(f"k={k}" for k in ks)]
    rows = []
    def cell(row: pd.Series) -> str:
        spread = f" ± {row['normal_std_std']:.2f}" if pd.notna(row.get("normal_std_std")) else ""
        return f"{row['normal_std']:.2f}{spread}" + (f" ({row['flag']})" if row["flag"] else "")

    for (method, member), group in shown.groupby(["method", "member"], sort=True):
        by_k = {row["k"]: row for _, row in group.iterrows()}
        rows.append([method, member, *(cell(by_k[k]) if k in by_k else "–" for k in ks)])
    return header, rows


CALIBRATION_NOTE = ("Each fused member's z-score std on the normal test images, mean ± std over seeds: about 1 when "
                    "the member's held-out statistics describe unseen normals; a mean outside [0.5, 2] is flagged (a "
                    "member whose spread is underestimated outvotes the others whatever its quality; a large spread "
                    "over seeds says one draw of supports carries the mean).")


def print_calibration(table: pd.DataFrame, console: Console) -> None:
    """The calibration table in the terminal, flags in red."""
    header, rows = calibration_rows(table)
    out = Table(title="fusion calibration: member z std on normal test images", title_justify="left",
                caption=CALIBRATION_NOTE, caption_justify="left")
    for name in header:
        out.add_column(name, justify="left" if name in ("fusion", "member") else "right")
    for row in rows:
        out.add_row(*(f"[red]{cell}[/red]" if "(" in cell else cell for cell in row))
    console.print(out)


def markdown_calibration(table: pd.DataFrame) -> str:
    """The calibration table as a report.md section."""
    header, rows = calibration_rows(table)
    lines = ["## Fusion calibration", "", CALIBRATION_NOTE, "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"
