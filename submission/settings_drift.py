"""A resume's check that a run folder's finished cells were made with the settings the run asks for now.

A resume skips every finished cell of a variant spec. When the code behind a spec changed since (a default moved,
as fusion's `loo_views_max_k` and `view_degrees` did), the skipped cells keep the old settings and the folder's
leaderboard would average two generations under one name. Every method's `method_info` records its config fields
(`info()` spreads `asdict(config)`), so the finished rows say what they were made with: a field whose recorded
value differs from the config the run builds now is drift, and the run stops before any cell starts. A field a row
does not record (added to the config since) is compared through the value its dataclass metadata names for rows made
before it existed (`field(default=..., metadata={UNRECORDED: value})`: the value that reproduces the old behaviour,
as `distance_floor=0` does fusion's before the floor); without one it is not compared: its old behaviour is unknown.
"""
from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from methods.options import UNRECORDED


def _plain(value: Any) -> str:
    """A value as JSON text (tuples as lists, keys sorted), so recorded and built values compare alike."""
    return json.dumps(value, default=str, sort_keys=True)


def settings_drift(rows: Iterable[Mapping[str, str]], spec: str, preset: str, config: Any
                   ) -> dict[str, tuple[list[str], str]]:
    """Config fields whose value recorded by the finished (status=ok) rows of `spec` under `preset` differs from
    `config`'s: field -> (the recorded values, the value asked now), as JSON text."""
    asked = {name: _plain(value) for name, value in asdict(config).items()}
    before = {f.name: _plain(f.metadata[UNRECORDED]) for f in fields(config) if UNRECORDED in f.metadata}
    recorded: dict[str, set[str]] = {}
    for row in rows:
        if row["method"] != spec or row["preset"] != preset or row["status"] != "ok":
            continue
        info = json.loads(row["method_info"] or "{}")
        info = info.get("config", info) if isinstance(info.get("config"), dict) else info  # rows before `config`
        for name in asked.keys() & info.keys():
            recorded.setdefault(name, set()).add(_plain(info[name]))
        for name in before.keys() - info.keys():  # a field added since, whose old behaviour its metadata names
            recorded.setdefault(name, set()).add(before[name])
    return {name: (sorted(values), asked[name]) for name, values in sorted(recorded.items())
            if values != {asked[name]}}


def drift_line(run_dir: Path, spec: str, preset: str, drift: Mapping[str, tuple[list[str], str]]) -> str:
    """The one-line error for a resume whose finished cells of `spec` were made with other settings."""
    fields = "; ".join(f"{name} {' / '.join(values)} recorded, {asked} now" for name, (values, asked) in drift.items())
    return (f"--out {run_dir}: {spec} ({preset}) has finished cells made with other settings ({fields}), which a "
            "resume would keep beside new ones; use another --out, or remove those rows from results.csv")


# Run-level settings that change a cell's numbers, by the option that sets them. A resume must ask for the values
# its folder recorded; the others (categories, shots, seeds, methods, executor, cache, decode threads) may change.
RUN_SETTINGS = {"data": "--data", "data_content": "the content of --data", "format": "--format",
                "preset": "--preset", "image_size": "--image-size", "metrics": "--metrics", "precision": "--precision",
                "procedural_split": "--procedural-split", "anomaly_shots": "--anomaly-shots", "threads": "--threads",
                "device": "--device", "batch_size": "--batch-size", "pretrained": "pretrained",
                "plugins": "--plugin"}


def recorded_run_settings(previous: Mapping[str, Any]) -> dict[str, Any]:
    """The run-level settings a config.json recorded (`settings`), or what an older one's arguments say of them
    (m = 0, every metric and the test split where it says nothing: those options came later)."""
    if "settings" in previous:
        return dict(previous["settings"])
    if not previous:
        return {}
    arguments = previous.get("arguments", {})
    recorded = {name: arguments[name] for name in ("format", "image_size", "precision", "batch_size", "pretrained")
                if name in arguments}
    recorded.update(preset=previous.get("preset"), device=previous.get("device"),
                    procedural_split=previous.get("procedural_split", "test"),
                    anomaly_shots=arguments.get("anomaly_shots", 0), metrics=arguments.get("metrics", "all"))
    return {name: value for name, value in recorded.items() if value is not None}


def run_settings_drift(recorded: Mapping[str, Any], asked: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(setting, recorded, asked) for every run-level setting both name with different values; for the data's
    content (a digest per category), the categories both hold."""
    drift = []
    for name in RUN_SETTINGS:
        if name not in recorded or name not in asked:
            continue
        before, now = recorded[name], asked[name]
        if name == "plugins":  # a plugin both runs name (by its file or folder) must be unchanged
            changed = sorted(origin for origin in before.keys() & now.keys() if before[origin] != now[origin])
            if changed:
                drift.append((name, f"{changed[0]} as it was", "changed"))
        elif name == "data_content":
            changed = sorted(c for c in before.keys() & now.keys() if before[c] != now[c])
            if changed:
                drift.append((name, f"category {changed[0]}", None))
        elif _plain(before) != _plain(now):
            drift.append((name, before, now))
    return drift


def run_drift_line(run_dir: Path, drift: list[tuple[str, Any, Any]]) -> str:
    """The one-line error for a resume that asks for other run-level settings than its folder recorded."""
    parts = "; ".join(f"{RUN_SETTINGS[name]}: {before} recorded, {now} now" if name != "data_content"
                      else f"the files of --data changed since ({before})" for name, before, now in drift)
    return (f"--out {run_dir}: made with other run settings ({parts}); resume with the recorded ones, or use "
            "another --out")
