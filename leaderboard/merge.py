"""`python -m leaderboard merge OUT RUN...`: one run folder from shards (`--shard i/n`) of the same grid."""
from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from runfolder.reading import RunFolderError, read_json, read_results_file
from runfolder.schema import (ANOMALY_SHOTS, ARTIFACTS_DIR, CELL_KEY, LATER_COLUMNS, MAPS_DIR, RESULT_COLUMNS,
                              SCORES_DIR, RunPaths)


def merge(out: Path, runs: list[Path]) -> Path:
    """Concatenate results (the last ok row wins per cell), union manifests, copy scores, maps and artifacts.
    Runs with different `anomaly_shots` (m labelled anomalies per cell) are not shards of one run: an error."""
    target = RunPaths(Path(out))
    if target.root.exists() and not target.root.is_dir():
        raise RunFolderError(f"{target.root}: exists and is not a folder")
    frames, manifest = [], {}
    sources = [RunPaths(Path(run)) for run in runs]
    for run in sources:
        table = read_results_file(run.results)
        if table.torn_text is not None:
            print(f"warning: {table.path}, line {table.torn_line}: the last row was cut short; left out", file=sys.stderr)
        frame = (pd.read_csv(io.StringIO(table.complete_text), dtype=str, keep_default_na=False)
                 if table.rows else pd.DataFrame(columns=list(RESULT_COLUMNS), dtype=str))
        frame = frame.reindex(columns=RESULT_COLUMNS, fill_value="")  # a file from before a later column lacks it
        frame[ANOMALY_SHOTS] = frame[ANOMALY_SHOTS].replace("", LATER_COLUMNS[ANOMALY_SHOTS])
        frames.append(frame)
        for category, cells in read_json(run.manifest, required=False).items():
            manifest.setdefault(category, {}).update(cells)
    shots = sorted({m for frame in frames for m in frame[ANOMALY_SHOTS]}, key=int)
    if len(shots) > 1:
        raise RunFolderError(f"these runs differ in --anomaly-shots ({', '.join(shots)}): their cells hold out "
                             "different test images, so they are not shards of one run")
    config = read_json(sources[0].config)
    target.root.mkdir(parents=True, exist_ok=True)
    for run in sources:
        for folder in (SCORES_DIR, MAPS_DIR, ARTIFACTS_DIR):
            if (run.root / folder).is_dir():
                shutil.copytree(run.root / folder, target.root / folder, dirs_exist_ok=True)
    results = pd.concat(frames, ignore_index=True)
    results["_ok"] = results["status"] == "ok"
    results = results.sort_values("_ok", kind="stable").drop_duplicates(list(CELL_KEY), keep="last")
    results.drop(columns="_ok").reindex(columns=RESULT_COLUMNS).to_csv(target.results, index=False)
    target.manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    config["merged_from"] = [str(r) for r in runs]
    target.config.write_text(json.dumps(config, indent=2, sort_keys=True))
    return target.root
