"""`python -m leaderboard merge OUT RUN...`: one run folder from shards (`--shard i/n`) of the same grid."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from leaderboard.columns import CELL_KEY, RESULT_COLUMNS


def merge(out: Path, runs: list[Path]) -> Path:
    """Concatenate results (the last ok row wins per cell), union manifests, copy scores, maps and artifacts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames, manifest = [], {}
    for run in map(Path, runs):
        if not (run / "results.csv").is_file():
            raise FileNotFoundError(f"{run}: no results.csv in this run folder")
        frames.append(pd.read_csv(run / "results.csv", dtype=str, keep_default_na=False))
        for category, cells in json.loads((run / "manifest.json").read_text()).items():
            manifest.setdefault(category, {}).update(cells)
        for folder in ("scores", "maps", "artifacts"):
            if (run / folder).is_dir():
                shutil.copytree(run / folder, out / folder, dirs_exist_ok=True)
    results = pd.concat(frames, ignore_index=True)
    results["_ok"] = results["status"] == "ok"
    results = results.sort_values("_ok", kind="stable").drop_duplicates(list(CELL_KEY), keep="last")
    results.drop(columns="_ok").reindex(columns=RESULT_COLUMNS).to_csv(out / "results.csv", index=False)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    config = json.loads((Path(runs[0]) / "config.json").read_text())
    config["merged_from"] = [str(r) for r in runs]
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return out
