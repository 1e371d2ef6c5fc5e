"""`python -m leaderboard compare RUN_A RUN_B`: per-method differences (B − A) of the aggregated metrics, then
for each method of both runs a paired comparison (B − A) over the cells both ran (`leaderboard.paired`).
Each function takes the two runs' results (`leaderboard.aggregate.read_results`), read once by the caller."""
from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from leaderboard.aggregate import aggregate
from leaderboard.paired import PAIRED_COLUMNS, method_cells, paired_table

COMPARED = ("f1_max", "image_auroc", "image_auroc_logical", "image_auroc_structural", "pixel_auroc", "auspro_0.05")
KEY = ["method", "preset", "category", "k"]


def compare(results_a: pd.DataFrame, results_b: pd.DataFrame) -> pd.DataFrame:
    """Rows present in both runs' leaderboards, with A, B and B − A per compared metric."""
    a, b = aggregate(results_a), aggregate(results_b)
    a, b = a[a["k"] != "all"], b[b["k"] != "all"]
    joined = a[KEY + list(COMPARED)].merge(b[KEY + list(COMPARED)], on=KEY, suffixes=("_a", "_b"))
    for metric in COMPARED:
        joined[f"{metric}_diff"] = joined[f"{metric}_b"] - joined[f"{metric}_a"]
    return joined


def print_comparison(table: pd.DataFrame, console: Console) -> None:
    """One rich table: B − A per metric, signed, per (method, preset, category, k)."""
    view = Table(title="B − A (mean over seeds)", title_justify="left")
    for name in [*KEY, *COMPARED]:
        view.add_column(name, justify="left" if name in KEY[:3] else "right")
    for _, row in table.iterrows():
        cells = ["–" if pd.isna(row[f"{m}_diff"]) else f"{row[f'{m}_diff']:+.3f}" for m in COMPARED]
        view.add_row(*(str(row[c]) for c in KEY), *cells)
    console.print(view)


def compare_paired(results_a: pd.DataFrame, results_b: pd.DataFrame) -> pd.DataFrame:
    """Per (method, preset) present in both runs: the paired comparison B − A over matching (category, k, seed)."""
    a, b = (frame.assign(preset=frame["preset"].astype(str)) for frame in (results_a, results_b))
    tables = []
    keys_a = set(zip(a.loc[a["status"] == "ok", "method"].astype(str), a.loc[a["status"] == "ok", "preset"]))
    keys_b = set(zip(b.loc[b["status"] == "ok", "method"].astype(str), b.loc[b["status"] == "ok", "preset"]))
    for method, preset in sorted(keys_a & keys_b):
        tables.append(paired_table(method_cells(b, method, preset), method_cells(a, method, preset),
                                   f"B:{method} ({preset})", f"A:{method} ({preset})"))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(PAIRED_COLUMNS))


def anomaly_shots_note(results_a: pd.DataFrame, results_b: pd.DataFrame) -> str | None:
    """A line saying the two runs scored other test sets when their `--anomaly-shots` differ (each cell's labelled
    anomalies leave its test set), else None."""
    shots = [sorted(set(r["anomaly_shots"])) for r in (results_a, results_b)]  # read_results fills the column
    if shots[0] == shots[1]:
        return None
    return (f"note: A has --anomaly-shots {'/'.join(map(str, shots[0]))}, B {'/'.join(map(str, shots[1]))}: "
            "each cell's labelled anomalies leave its test set, so A and B are scored on different test images")
