"""`python -m leaderboard page RUN [RUN ...] --out DIR`: a self-contained static site of one or more run folders.

The site opens from `file://` offline (no server, no CDN: one CSS and one JS file in `assets/`, PNG figures in
`img/`):

- `index.html` — the board: one row per method variant and k (and category), sortable by any column, filtered by
  k, category, preset and anomaly shots (the state lives in the URL fragment, e.g. `#sort=image_auroc&k=4`, so a
  view is a link to share); means ± std over seeds with their 95 % bootstrap intervals; incomplete grids flagged;
- `vand.html` — F1-max vs k per method (the VAND curve) and the (normalised) AUFC;
- `method-<variant>.html` — per category and k the per-seed cells, fit/predict times, `method_info`, score parts,
  fusion's paired comparisons, and, when the run saved maps, the worst false positive and false negative overlays;
- `compare.html` — every pair of methods of a run (`leaderboard paired`), and with several runs, each run against
  the first (`leaderboard compare`).

Every number comes from `leaderboard.show.RunTables`, the tables report.md is written from; the figures are the
report's (`leaderboard.figures`). Bad input: a folder that is not a run folder is a `RunFolderError` (one line);
failed, skipped or missing cells and runs on different data are notes at the top of the page.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from html import escape
from importlib import resources
from itertools import combinations
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from leaderboard.aggregate import MISSING, OVERALL, status_counts
from leaderboard.compare import COMPARED, anomaly_shots_note, compare, compare_paired
from leaderboard.figures import plot_auroc_bars, plot_f1_vs_k, plot_overlays
from leaderboard.intervals import CI_METRICS
from leaderboard.page_html import (ASSETS, Cell, Column, Note, Row, document, figure, filter_controls, flag, forest, link,
                                   notes, number, table, text)
from leaderboard.paired import EXPLANATION, PAIRED_COLUMNS, paired, paired_rows
from leaderboard.render import SHOWN, shown_categories
from leaderboard.score_parts import METRICS as PART_METRICS
from leaderboard.show import RunTables
from runfolder.reading import RunFolderError, read_json
from runfolder.schema import ANOMALY_SHOTS, RunPaths, cell_name, variant_dirname

INDEX, VAND, COMPARE = "index.html", "vand.html", "compare.html"
IMAGES = "img"
LISTED_CELLS = 12  # failed cells named one by one in a note, then "and N more"


@dataclass(frozen=True)
class PageRun:
    """One run folder of the site: its label on the pages, the prefix of its files, and its tables."""

    label: str
    prefix: str
    path: Path
    tables: RunTables
    config: Mapping[str, Any]

    def method_page(self, method: str) -> str:
        """The file name of a method's page."""
        return f"method-{self.prefix}{variant_dirname(method)}.html"


def check_run_folder(run_dir: Path) -> None:
    """Raise a one-line `RunFolderError` when `run_dir` is not a run folder (no folder, no results.csv)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: not a run folder (no such folder)")
    if not RunPaths(run_dir).results.is_file():
        raise RunFolderError(f"{run_dir}: not a run folder (no results.csv; make one with python -m submission run)")


def read_runs(run_dirs: Sequence[Path]) -> list[PageRun]:
    """The tables of every run folder, checked first; labels are the folder names (numbered when two clash)."""
    for run_dir in run_dirs:
        check_run_folder(run_dir)
    names = [Path(d).resolve().name or str(d) for d in run_dirs]
    runs = []
    for index, (run_dir, name) in enumerate(zip(run_dirs, names)):
        label = f"{name} ({index + 1})" if names.count(name) > 1 else name
        prefix = f"r{index + 1}-" if len(run_dirs) > 1 else ""
        config = read_json(RunPaths(Path(run_dir)).config, required=False)
        runs.append(PageRun(label, prefix, Path(run_dir), RunTables.read(Path(run_dir)), config))
    return runs


# --- notes ----------------------------------------------------------------------------------------------------

def data_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a run's config.json says of its data: the recorded `settings` (data path, content digests, format,
    procedural split), or the top-level `data` of an older config.json; {} when it says nothing."""
    settings = config.get("settings") or {}
    if settings:
        return {key: settings[key] for key in ("data", "data_content", "format", "procedural_split") if key in settings}
    return {"data": config["data"]} if config.get("data") else {}


def data_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """How two data identities differ (None when they agree on everything both record); content digests are
    compared on the categories both hold."""
    for key in ("data", "format", "procedural_split"):
        if key in a and key in b and a[key] != b[key]:
            return f"{key} {a[key]} vs {b[key]}"
    before, now = a.get("data_content") or {}, b.get("data_content") or {}
    changed = sorted(c for c in before.keys() & now.keys() if before[c] != now[c])
    return f"the images of category {changed[0]} differ" if changed else None


def cell_list(rows: pd.DataFrame) -> str:
    """`category k<k>_s<seed>` of some results rows, the first `LISTED_CELLS`, then how many more."""
    names = [f"{c} {cell_name(k, s)}" for c, k, s in zip(rows["category"], rows["k"], rows["seed"])]
    more = len(names) - LISTED_CELLS
    return ", ".join(names[:LISTED_CELLS]) + (f" and {more} more" if more > 0 else "")


def cell_error(info: object) -> str:
    """The `error` a failed cell's method_info records, or ''."""
    try:
        parsed = json.loads(info) if isinstance(info, str) else {}
    except json.JSONDecodeError:
        return ""
    return str(parsed.get("error", "")) if isinstance(parsed, dict) else ""


def status_notes(run: PageRun, runs: int) -> list[Note]:
    """Failed cells (count, which, the first error), skipped and missing cells, incomplete grids of one run."""
    results, where = run.tables.results, f"{run.label}: " if runs > 1 else ""
    out = []
    if results.empty or not (results["status"] == "ok").any():
        out.append(Note("bad", f"{where}no cell finished ok in {run.path}: there is nothing to rank"))
    for (method, preset), rows in results[results["status"] == "failed"].groupby(["method", "preset"], sort=True):
        errors = [e for e in map(cell_error, rows["method_info"]) if e]
        out.append(Note("bad", f"{where}{method} ({preset}): {len(rows)} failed cell{'s' * (len(rows) > 1)} — "
                               f"{cell_list(rows)}" + (f"; first error: {errors[0]}" if errors else ""),
                        run.label, (str(method),)))
    counts = status_counts(results) if not results.empty else pd.DataFrame(columns=["method", "preset", "status"])
    absent = counts[counts["status"].isin(["skipped", "missing"])]
    for (status, preset, cells), rows in absent.groupby(["status", "preset", "cells"], sort=True):
        what = "skipped (missing weights or a failed pre-flight check)" if status == "skipped" else \
            "missing (no row in results.csv: an interrupted or sharded run)"
        methods = tuple(sorted(rows["method"].astype(str)))
        out.append(Note("warn", f"{where}{', '.join(methods)} ({preset}): {cells} cell{'s' * (cells > 1)} {what}"
                                f"{' each' if len(methods) > 1 else ''}", run.label, methods))
    board = run.tables.board
    overall = board[(board["category"] == shown_categories(board)[0]) & (board["k"] == "all")] if not board.empty \
        else board
    incomplete = overall[overall[MISSING].fillna(0) > 0]
    if not incomplete.empty:
        names = ", ".join(f"{r.method} ({r.preset}): {int(getattr(r, MISSING))}" for r in incomplete.itertuples())
        out.append(Note("warn", f"{where}incomplete grids — cells without an ok row that other methods have: {names}; "
                                "their means are over fewer cells and are flagged in the board"))
    return out


def run_notes(runs: Sequence[PageRun]) -> list[Note]:
    """Every note of the site: each run's cells, then runs that cannot be compared (other data, other m)."""
    out = [note for run in runs for note in status_notes(run, len(runs))]
    first = runs[0]
    for other in runs[1:]:
        mine, theirs = data_identity(first.config), data_identity(other.config)
        if not mine or not theirs:
            missing = first if not mine else other
            out.append(Note("warn", f"{missing.label} has no config.json recording its data: whether it ran on the "
                                    f"same data as the others is unknown"))
        elif (difference := data_difference(mine, theirs)) is not None:
            out.append(Note("bad", f"{first.label} and {other.label} ran on different data ({difference}): their "
                                   "numbers are not comparable, side by side or in the comparison"))
        if (shots := anomaly_shots_note(first.tables.results, other.tables.results)) is not None:
            out.append(Note("warn", f"{first.label} vs {other.label}: {shots.removeprefix('note: ')}"))
    return out


# --- the board --------------------------------------------------------------------------------------------------

def _summaries(board: pd.DataFrame) -> dict[tuple, pd.Series]:
    rows = board[board["k"] == "all"]
    return {(r["method"], r["preset"], r["category"], r[ANOMALY_SHOTS]): r for _, r in rows.iterrows()}


def board_columns(several_runs: bool) -> list[Column]:
    """The board's columns."""
    columns = [Column("run", "run", False)] if several_runs else []
    columns += [Column("method", "method", False), Column("preset", "preset", False),
                Column("m", "m", title="labelled anomalies per cell (--anomaly-shots; 0 = the VAND protocol)"),
                Column("category", "category", False), Column("k", "k"),
                Column("seeds", "seeds", title="seeds averaged; a flag counts the cells of this row without an ok row")]
    columns += [Column(key, label, title="mean ± std over seeds" + (", 95 % bootstrap interval beneath"
                                                                    if key in CI_METRICS else ""))
                for key, label in SHOWN]
    columns += [Column("aufc", "AUFC", title="area under F1-max over k (trapezoid)"),
                Column("aufc_norm", "nAUFC", title="AUFC / (k_max - k_min)"),
                Column("missing", "missing", title="cells of this row's scope without an ok row")]
    return columns


def board_rows(run: PageRun, several_runs: bool) -> list[Row]:
    """One row per (method, preset, m, category, k) of a run's leaderboard, with its k='all' AUFC."""
    board = run.tables.board
    summaries = _summaries(board)
    rows = []
    for _, r in board[board["k"] != "all"].iterrows():
        shots = int(r[ANOMALY_SHOTS]) if not pd.isna(r[ANOMALY_SHOTS]) else 0
        missing = int(r[MISSING]) if not pd.isna(r[MISSING]) else 0
        summary = summaries.get((r["method"], r["preset"], r["category"], r[ANOMALY_SHOTS]))
        cells = [text(run.label)] if several_runs else []
        cells += [link(str(r["method"]), run.method_page(str(r["method"]))), text(r["preset"]),
                  number(shots, 0), text(r["category"]), number(int(r["k"]), 0),
                  number(r["n_seeds"], 0, flag=flag(f"{missing} missing", title="cells without an ok row") if missing
                         else "")]
        for key, _ in SHOWN:
            digits = 1 if key.endswith("_s") else 3
            low, high = (r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high")) if key in CI_METRICS else (None, None)
            cells.append(number(r[key], digits, r.get(f"{key}_std"), low, high))
        summary_missing = 0 if summary is None or pd.isna(summary[MISSING]) else int(summary[MISSING])
        aufc_flag = flag("incomplete", title=f"{summary_missing} cells over all k without an ok row") \
            if summary_missing else ""
        cells += [number(None if summary is None else summary["aufc"], 3, flag=aufc_flag),
                  number(None if summary is None else summary["aufc_norm"], 3, flag=aufc_flag),
                  number(missing, 0)]
        filters = {"run": run.label, "category": str(r["category"]), "k": str(int(r["k"])),
                   "preset": str(r["preset"]), "shots": str(shots)}
        rows.append(Row(cells, filters, "incomplete" if missing or summary_missing else ""))
    return rows


def _options(values: set[str], numeric: bool = False) -> list[tuple[str, str]]:
    ordered = sorted(values, key=(lambda v: int(v)) if numeric else (lambda v: (v != OVERALL, v)))
    return [(v, v) for v in ordered]


def board_section(runs: Sequence[PageRun]) -> str:
    """The board: filters, then the sortable table (default: the main category at the largest k, by F1-max)."""
    several = len(runs) > 1
    rows = [row for run in runs for row in board_rows(run, several)]
    if not rows:
        return '<p class="muted">No ok cell in these runs: the board is empty.</p>'
    values = {name: {row.filters[name] for row in rows} for name in ("run", "category", "k", "preset", "shots")}
    boards = pd.concat([run.tables.board for run in runs], ignore_index=True)
    main_category = shown_categories(boards)[0]
    largest_k = max(values["k"], key=int)
    filters = [("run", "run", _options(values["run"]), "")] if several else []
    filters += [("category", "category", _options(values["category"]), main_category),
                ("k", "k", _options(values["k"], True), largest_k),
                ("preset", "preset", _options(values["preset"]), ""),
                ("shots", "anomaly shots", _options(values["shots"], True), "")]
    return (filter_controls("board", filters) +
            table("board", board_columns(several), rows, default_sort="f1_max", main=True) +
            '<p class="muted">Click a column to sort; the view is in the address (copy it to share). Mean ± std '
            "over seeds; beneath F1-max and AUROC, the 95 % bootstrap interval over the test images. "
            "<code>overall</code> averages the categories within each seed. Rows over an incomplete set of cells "
            "are shaded and flagged.</p>")


# --- the VAND view ------------------------------------------------------------------------------------------------

def vand_section(runs: Sequence[PageRun], figures: Mapping[str, str | None]) -> str:
    """Per run, the F1-max vs k figure; then one table of F1-max at each k and AUFC per method variant."""
    several = len(runs) > 1
    ks = sorted({int(k) for run in runs for k in run.tables.board["k"] if k != "all"})
    columns = [Column("run", "run", False)] if several else []
    columns += [Column("method", "method", False), Column("preset", "preset", False), Column("m", "m"),
                Column("category", "category", False), *(Column(f"f1_k{k}", f"F1-max k={k}") for k in ks),
                Column("aufc", "AUFC"), Column("aufc_norm", "nAUFC", title="AUFC / (k_max - k_min)")]
    rows = []
    for run in runs:
        board = run.tables.board
        per_k = {(r["method"], r["preset"], r["category"], r[ANOMALY_SHOTS], int(r["k"])): r
                 for _, r in board[board["k"] != "all"].iterrows()}
        for key, summary in _summaries(board).items():
            method, preset, category, shots = key
            f1 = [per_k.get((*key, k)) for k in ks]
            cells = [text(run.label)] if several else []
            cells += [link(str(method), run.method_page(str(method))), text(preset), number(int(shots), 0),
                      text(category),
                      *(number(None if r is None else r["f1_max"], 3, None if r is None else r["f1_max_std"])
                        for r in f1),
                      number(summary["aufc"]), number(summary["aufc_norm"])]
            rows.append(Row(cells, {"run": run.label, "category": str(category)}))
    if not rows:
        return '<p class="muted">No ok cell in these runs: no curve to draw.</p>'
    boards = pd.concat([run.tables.board for run in runs], ignore_index=True)
    categories = _options({row.filters["category"] for row in rows})
    parts = []
    for run in runs:
        caption = f"F1-max vs k{f' — {run.label}' if several else ''}: mean over seeds, std as error bars"
        parts.append(figure(figures.get(f"{run.prefix}f1_vs_k"), caption, f"{run.label}: nothing to draw"))
    one_k = "" if len(ks) > 1 else ('<ul class="notes"><li class="info">One k in this run: AUFC needs two or more '
                                    "(python -m submission run --shots 1 2 4 8).</li></ul>")
    return (one_k + "".join(parts) +
            "<p class=\"muted\">VAND protocol: F1-max is averaged over seeds per (k, category), then over categories "
            "per k; AUFC is the trapezoidal area of that mean over the k values, nAUFC divides it by "
            "k<sub>max</sub> − k<sub>min</sub>.</p>" +
            filter_controls("vand", [("category", "category", categories, shown_categories(boards)[0])]) +
            table("vand", columns, rows, default_sort="aufc_norm" if len(ks) > 1 else f"f1_k{ks[-1]}", main=True))


# --- the method pages ---------------------------------------------------------------------------------------------

CELL_COLUMNS = (("image_auroc", "AUROC"), ("image_auroc_logical", "AUROC log."),
                ("image_auroc_structural", "AUROC str."), ("f1_max", "F1-max"), ("pixel_auroc", "pix AUROC"),
                ("auspro_0.05", "sPRO@.05"), ("fit_s", "fit s"), ("predict_s", "pred s"))


def _info(value: object) -> dict[str, Any]:
    try:
        parsed = json.loads(value) if isinstance(value, str) and value else {}
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def method_info_section(rows: pd.DataFrame) -> tuple[str, set[str]]:
    """`method_info` keys with one value in every cell as a list, and the keys that vary from cell to cell
    (shown per cell)."""
    infos = [_info(v) for v in rows.loc[rows["status"] == "ok", "method_info"]]
    if not infos:
        return '<p class="muted">No ok cell: no method_info.</p>', set()
    keys = sorted({key for info in infos for key in info})
    shared = {key: infos[0].get(key) for key in keys
              if all(json.dumps(i.get(key), sort_keys=True) == json.dumps(infos[0].get(key), sort_keys=True)
                     for i in infos)}
    varying = set(keys) - set(shared)
    items = "".join(f"<dt>{escape(key)}</dt><dd>{escape(json.dumps(value, sort_keys=True))}</dd>"
                    for key, value in shared.items())
    tail = (f'<p class="muted">Varying from cell to cell (see each cell): {escape(", ".join(sorted(varying)))}</p>'
            if varying else "")
    return f'<dl class="info">{items}</dl>{tail}', varying


def cell_rows(rows: pd.DataFrame, varying: set[str]) -> list[Row]:
    """One row per (preset, category, k, seed) cell of a method: status, metrics, times, its varying info."""
    out = []
    for _, r in rows.iterrows():
        status = str(r["status"])
        info = _info(r["method_info"])
        shown = {key: info[key] for key in sorted(info) if key in varying or status != "ok"}
        details = (f"<details><summary>{len(shown)} key{'s' * (len(shown) > 1)}</summary><pre>{escape(json.dumps(shown, indent=1))}</pre>"
                   "</details>") if shown else ""
        cells = [text(r["preset"]), text(r["category"]), number(int(r["k"]), 0), number(int(r["seed"]), 0),
                 Cell(f'<span class="status-{escape(status)}">{escape(status)}</span>', status, True)]
        cells += [number(r[key], 1 if key.endswith("_s") else 3) for key, _ in CELL_COLUMNS]
        cells.append(Cell(details, None, True))
        out.append(Row(cells, {"category": str(r["category"]), "k": str(int(r["k"])), "status": status},
                       "incomplete" if status != "ok" else ""))
    return out


def parts_rows(parts: pd.DataFrame) -> list[Row]:
    """One row per (category, k, part) of a method's score parts."""
    return [Row([text(r["category"]), number(int(r["k"]), 0), text(r["part"]), number(r["n_seeds"], 0),
                 *(number(r[m], 3, r[f"{m}_std"]) for m in PART_METRICS)],
                {"category": str(r["category"])}) for _, r in parts.iterrows()]


def paired_section(frame: pd.DataFrame, table_id: str, filters: bool = True, main: bool = False) -> str:
    """A paired-comparison table (`leaderboard.paired`'s rows) with each difference's interval drawn."""
    if frame.empty:
        return '<p class="muted">No pair of methods with matching cells.</p>'
    header, texts = paired_rows(frame)
    scale = float(pd.concat([frame["ci_low"].abs(), frame["ci_high"].abs(), frame["mean_diff"].abs()]).max())
    scale = scale if scale == scale and scale > 0 else 1.0
    values = ("a", "b", "metric", "n_cells", "mean_a", "mean_b", "mean_diff", "ci_low", "p_value", "a_better", "only_a")
    columns = [Column(key, label, key not in ("a", "b", "metric")) for key, label in zip(values, header)]
    columns.insert(8, Column("interval", "A − B, 95 % CI", False))
    rows = []
    for (_, r), shown in zip(frame.iterrows(), texts):
        cells = [text(v) if i < 3 else Cell(escape(v), None if pd.isna(r[values[i]]) else float(r[values[i]]))
                 for i, v in enumerate(shown)]
        cells.insert(8, Cell(forest(r["ci_low"], r["mean_diff"], r["ci_high"], scale), None, True))
        rows.append(Row(cells, {"a": str(r["a"]), "b": str(r["b"]), "metric": str(r["metric"])}))
    controls = ""
    if filters:
        controls = filter_controls(table_id, [
            ("a", "A", _options({row.filters["a"] for row in rows}), ""),
            ("b", "B", _options({row.filters["b"] for row in rows}), ""),
            ("metric", "metric", _options({row.filters["metric"] for row in rows}), "")])
    return (controls + table(table_id, columns, rows, default_sort="mean_diff", main=main) +
            f'<p class="muted">{escape(EXPLANATION)}</p>')


def method_page(run: PageRun, method: str, figures: Mapping[str, str | None], note_items: Sequence[Note]) -> str:
    """The body of one method's page."""
    results = run.tables.results
    rows = results[results["method"].astype(str) == method].sort_values(["preset", "category", "k", "seed"])
    folder = variant_dirname(method)
    info, varying = method_info_section(rows)
    counts = rows["status"].value_counts()
    summary = ", ".join(f"{int(n)} {status}" for status, n in counts.items())
    cell_table = table(f"cells-{folder}", [
        Column("preset", "preset", False), Column("category", "category", False), Column("k", "k"),
        Column("seed", "seed"), Column("status", "status", False), *(Column(k, label) for k, label in CELL_COLUMNS),
        Column("info", "method_info (varying keys; the error of a failed cell)", False)],
        cell_rows(rows, varying), default_sort="", main=True)
    categories = _options({str(c) for c in rows["category"]})
    ks = _options({str(int(k)) for k in rows["k"]}, True)
    parts = run.tables.parts
    parts = parts[parts["method"] == folder] if not parts.empty else parts
    parts_html = ('<p class="muted">This method writes no score parts (branches or fusion members).</p>' if parts.empty
                  else table(f"parts-{folder}", [Column("category", "category", False), Column("k", "k"),
                                                 Column("part", "part", False), Column("n_seeds", "seeds"),
                                                 *(Column(m, m.replace("_", " ")) for m in PART_METRICS)],
                             parts_rows(parts), default_sort=""))
    fusion = run.tables.fusion
    fusion = fusion[(fusion["a"] == method) | (fusion["b"] == method)] if not fusion.empty else fusion
    board_link = f'<a href="{INDEX}#category=&amp;k=&amp;sort=k&amp;dir=asc">the board</a>'
    body = [notes(note_items),
            f'<p class="lead">Run <b>{escape(run.label)}</b> ({escape(str(run.path))}); cells: {escape(summary)}. '
            f"Means per category and k are on {board_link}.</p>",
            "<h2>Cells, per category, k and seed</h2>",
            filter_controls(f"cells-{folder}", [("category", "category", categories, ""), ("k", "k", ks, ""),
                                                ("status", "status", _options({str(s) for s in rows["status"]}), "")]),
            cell_table, "<h2>method_info</h2>", info, "<h2>Score parts</h2>", parts_html]
    if not fusion.empty:
        body += ["<h2>Paired comparisons with fusion</h2>", paired_section(fusion, f"fusion-{folder}", filters=False)]
    body += ["<h2>Worst false positives and false negatives</h2>",
             figure(figures.get(f"{run.prefix}overlays-{folder}"),
                    "Per category, at the largest k and first seed: the highest-scoring good image (worst false "
                    "positive) and the lowest-scoring anomaly (worst false negative), anomaly map over the image",
                    "No anomaly maps in this run: rerun with --save-maps to see the worst false positives and false "
                    "negatives.")]
    return "\n".join(body)


# --- the comparison page ------------------------------------------------------------------------------------------

def swapped(frame: pd.DataFrame) -> pd.DataFrame:
    """A paired table of A − B read as B − A: the difference and its percentile interval negated (the interval of
    −d is minus that of d, bounds swapped), the two-sided p unchanged, the per-side columns exchanged."""
    return frame.assign(a=frame["b"], b=frame["a"], mean_a=frame["mean_b"], mean_b=frame["mean_a"],
                        only_a=frame["only_b"], only_b=frame["only_a"], a_better=frame["b_better"],
                        b_better=frame["a_better"], mean_diff=-frame["mean_diff"], ci_low=-frame["ci_high"],
                        ci_high=-frame["ci_low"])[list(PAIRED_COLUMNS)]


def method_pairs(run: PageRun) -> pd.DataFrame:
    """`leaderboard paired` for every pair of methods of a run that share a preset, both ways (A − B, B − A)."""
    ok = run.tables.results[run.tables.results["status"] == "ok"]
    keys = sorted(set(zip(ok["method"].astype(str), ok["preset"].astype(str))))
    tables = []
    for (a, preset_a), (b, preset_b) in combinations(keys, 2):
        if preset_a != preset_b:
            continue
        try:
            one_way = paired(ok, a, b, preset=preset_a)
        except ValueError:  # no matching cells
            continue
        tables += [one_way, swapped(one_way)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(PAIRED_COLUMNS))


def runs_section(first: PageRun, other: PageRun) -> str:
    """Run B (`other`) against run A (`first`): per-row differences of the aggregated metrics, then the paired
    comparison per method over the cells both ran."""
    joined = compare(first.tables.results, other.tables.results)
    columns = [Column("method", "method", False), Column("preset", "preset", False),
               Column("category", "category", False), Column("k", "k"),
               *(Column(m, f"{m} B − A", title="B − A of the mean over seeds; A → B beneath") for m in COMPARED)]
    rows = []
    for _, r in joined.iterrows():
        cells = [text(r["method"]), text(r["preset"]), text(r["category"]), number(int(r["k"]), 0)]
        for metric in COMPARED:
            diff, a, b = r[f"{metric}_diff"], r[f"{metric}_a"], r[f"{metric}_b"]
            if pd.isna(diff):
                cells.append(number(None))
                continue
            shown = f'{diff:+.3f}<span class="ci">{a:.3f} → {b:.3f}</span>'
            cells.append(Cell(shown, float(diff)))
        rows.append(Row(cells, {"category": str(r["category"]), "k": str(int(r["k"]))}))
    table_id = f"runs-{other.prefix}".rstrip("-")
    if not rows:
        differences = '<p class="muted">The two runs share no (method, preset, category, k) row.</p>'
    else:
        boards = pd.concat([first.tables.board, other.tables.board], ignore_index=True)
        differences = (filter_controls(table_id, [
            ("category", "category", _options({row.filters["category"] for row in rows}),
             shown_categories(boards)[0]),
            ("k", "k", _options({row.filters["k"] for row in rows}, True), "")]) +
            table(table_id, columns, rows, default_sort="f1_max"))
    per_method = compare_paired(first.tables.results, other.tables.results)
    return (f"<h2>{escape(other.label)} (B) vs {escape(first.label)} (A)</h2>{differences}"
            f"<h3>Paired per method, B − A, over the cells both ran</h3>"
            f"{paired_section(per_method, f'{table_id}-paired', filters=False)}")


def compare_body(runs: Sequence[PageRun], note_items: Sequence[Note]) -> str:
    """The comparison page: runs against the first one (when there are several), then pairs of methods."""
    parts = [notes(note_items)]
    for other in runs[1:]:
        parts.append(runs_section(runs[0], other))
    for index, run in enumerate(runs):
        where = f" — {escape(run.label)}" if len(runs) > 1 else ""
        parts += [f"<h2>Two methods{where}: is A − B real?</h2>",
                  "<p class=\"muted\">Pick A and B (every ordered pair of methods with a common preset is here; "
                  "A − B &gt; 0: A is better).</p>",
                  paired_section(method_pairs(run), f"pairs-{run.prefix}".rstrip("-"), main=index == 0)]
    return "\n".join(parts)


# --- writing the site ---------------------------------------------------------------------------------------------

def draw_figures(runs: Sequence[PageRun], images: Path) -> dict[str, str | None]:
    """The report's figures of every run, and each method's overlays, as PNGs in `images`; keyed
    `<prefix>f1_vs_k`, `<prefix>auroc_bars`, `<prefix>overlays-<variant folder>`, valued by their path
    relative to the site (None where there is nothing to draw)."""
    drawn: dict[str, Path | None] = {}
    for run in runs:
        board = run.tables.board
        drawn[f"{run.prefix}f1_vs_k"] = plot_f1_vs_k(board, images / f"{run.prefix}f1_vs_k.png") \
            if not board.empty else None
        drawn[f"{run.prefix}auroc_bars"] = plot_auroc_bars(board, images / f"{run.prefix}auroc_bars.png") \
            if not board.empty else None
        for method in sorted(set(run.tables.results["method"].astype(str))):
            folder = variant_dirname(method)
            drawn[f"{run.prefix}overlays-{folder}"] = plot_overlays(
                run.path, images / f"{run.prefix}overlays-{folder}.png", variants={folder}, every_category=True)
    return {key: None if path is None else f"{IMAGES}/{path.name}" for key, path in drawn.items()}


def copy_assets(out: Path) -> None:
    """The site's CSS and JavaScript (package data of `leaderboard/page_assets`) into `<out>/assets/`."""
    target = out / "assets"
    target.mkdir(parents=True, exist_ok=True)
    source = resources.files("leaderboard") / "page_assets"
    for name in ASSETS:
        (target / name).write_bytes((source / name).read_bytes())


def write_page(run_dirs: Sequence[Path], out: Path | None = None) -> Path:
    """Write the site of `run_dirs` into `out` (default: `<first run>/page`); returns its index.html."""
    if not run_dirs:
        raise ValueError("page: name at least one run folder")
    runs = read_runs([Path(d) for d in run_dirs])
    out = Path(out) if out is not None else Path(run_dirs[0]) / "page"
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out}: a file, not a folder")
    images = out / IMAGES
    if images.is_dir():
        shutil.rmtree(images)  # figures of an earlier page of other runs must not linger
    images.mkdir(parents=True)
    copy_assets(out)
    figures = draw_figures(runs, images)
    note_items = run_notes(runs)
    methods = [(run, m) for run in runs for m in sorted(set(run.tables.results["method"].astype(str)))]
    nav = [("Board", INDEX), ("VAND curve", VAND), ("Compare", COMPARE)]
    if len(methods) <= 8:
        nav += [(f"{m}" + (f" ({run.label})" if len(runs) > 1 else ""), run.method_page(m)) for run, m in methods]
    title = " + ".join(run.label for run in runs)
    method_list = "".join(f'<li><a href="{escape(run.method_page(m))}">{escape(m)}</a>'
                          f'{escape(f" ({run.label})") if len(runs) > 1 else ""}</li>' for run, m in methods)
    bars = [figure(figures.get(f"{run.prefix}auroc_bars"),
                   f"Image AUROC per category, logical and structural, at the largest k{f' — {run.label}' if len(runs) > 1 else ''}",
                   f"{run.label}: nothing to draw") for run in runs]
    index = (notes(note_items) +
             f'<p class="lead">{len(runs)} run folder{"s" * (len(runs) > 1)}: '
             f'{escape(", ".join(f"{r.label} ({r.path})" for r in runs))}.</p>' +
             "<h2>Board</h2>" + board_section(runs) +
             f'<h2>Method pages</h2><ul class="methods">{method_list}</ul>' +
             "<h2>Image AUROC per category</h2>" + "".join(bars))
    pages = {INDEX: ("Leaderboard", index),
             VAND: ("VAND view: F1-max vs k, AUFC", notes([n for n in note_items if n.level == "bad"]) +
                    vand_section(runs, figures)),
             COMPARE: ("Comparisons", compare_body(runs, note_items))}
    for run, method in methods:
        own = [n for n in note_items if n.run == run.label and method in n.methods]
        pages[run.method_page(method)] = (f"{method}" + (f" — {run.label}" if len(runs) > 1 else ""),
                                          method_page(run, method, figures, own))
    for name, (heading, body) in pages.items():
        (out / name).write_text(document(f"{heading} — {title}", body, nav, name, heading), encoding="utf-8")
    return out / INDEX
