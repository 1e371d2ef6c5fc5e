"""A resume's check that a run folder's finished cells were made with the settings the run asks for now.

A resume skips every finished cell of a variant spec. When the code behind a spec changed since (a default moved,
as fusion's `loo_views_max_k` and `view_degrees` did), the skipped cells keep the old settings and the folder's
leaderboard would average two generations under one name. Every method's `method_info` records its config fields
(`info()` spreads `asdict(config)`), so the finished rows say what they were made with: a field whose recorded
value differs from the config the run builds now is drift, and the run stops before any cell starts. A field a row
does not record (added to the config since) is not compared: its old behaviour is unknown, not different.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Mapping


def _plain(value: Any) -> str:
    """A value as JSON text (tuples as lists, keys sorted), so recorded and built values compare alike."""
    return json.dumps(value, default=str, sort_keys=True)


def settings_drift(rows: Iterable[Mapping[str, str]], spec: str, preset: str, config: Any
                   ) -> dict[str, tuple[list[str], str]]:
    """Config fields whose value recorded by the finished (status=ok) rows of `spec` under `preset` differs from
    `config`'s: field -> (the recorded values, the value asked now), as JSON text."""
    asked = {name: _plain(value) for name, value in asdict(config).items()}
    recorded: dict[str, set[str]] = {}
    for row in rows:
        if row["method"] != spec or row["preset"] != preset or row["status"] != "ok":
            continue
        info = json.loads(row["method_info"] or "{}")
        for name in asked.keys() & info.keys():
            recorded.setdefault(name, set()).add(_plain(info[name]))
    return {name: (sorted(values), asked[name]) for name, values in sorted(recorded.items())
            if values != {asked[name]}}


def drift_line(run_dir: Path, spec: str, preset: str, drift: Mapping[str, tuple[list[str], str]]) -> str:
    """The one-line error for a resume whose finished cells of `spec` were made with other settings."""
    fields = "; ".join(f"{name} {' / '.join(values)} recorded, {asked} now" for name, (values, asked) in drift.items())
    return (f"--out {run_dir}: {spec} ({preset}) has finished cells made with other settings ({fields}), which a "
            "resume would keep beside new ones; use another --out, or remove those rows from results.csv")
