"""Fusion design on the procedural dev split: member sets and held-out variants compared by re-fusing the
per-member z-scores that fusion's score CSVs carry (`z_<member>`), without refitting anything.

A fusion variant's fused score is the weighted sum of its members' z-scores, and each member's z-scores depend
only on that member's held-out statistics, so any subset of the members can be re-fused from one run. (The
random views a member's statistics are drawn from depend on which members came before it in the cell, so a
subset re-fused here is the same design with other draws, not bit-identical to a run with that subset.)
Weights are those the variant used (`weights_used` in its method_info), renormalised over the subset.

Run on a dev run folder only (settings are chosen there, never on a reported split):
`.venv/bin/python -m bench.fusion_design runs/dev_fusion --section fusion_design`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.markdown import add_section_arguments, write_tables
from methods.registry import get_entry, parse_spec
from leaderboard.score_parts import part_metrics
from metrics import f1_max
from runfolder.schema import RunPaths, variant_dirname


def cheap_fit(member: str) -> bool:
    """Whether a member spec's method refits cheaply (held out by leave-one-out)."""
    return get_entry(parse_spec(member)[0]).cheap_fit


def _metrics(frame: pd.DataFrame, score: np.ndarray) -> dict[str, float]:
    """AUROC logical / structural (normals plus one kind, as the score parts), their mean, F1-max, and the score's
    std over the normal test images."""
    parts = part_metrics(frame.assign(refused=score), "refused")
    logical, structural = parts["auroc_logical"], parts["auroc_structural"]
    mean = None if logical is None or structural is None else (logical + structural) / 2  # one kind only: no mean
    return {"logical": logical, "structural": structural, "mean": mean,
            "f1_max": f1_max(frame["label"], score), "normal_z_std": parts["normal_std"]}


def refused(run_dir: Path) -> pd.DataFrame:
    """One row per (fusion variant, member set, cell) with the re-fused AUROCs and F1-max, and one per member
    alone (its z-score), with each member's std over the normal test images."""
    paths, rows = RunPaths(run_dir), []
    results = pd.read_csv(paths.results)
    results = results[results["status"] == "ok"]
    fused_rows = {(variant_dirname(r.method), r.category, int(r.k), int(r.seed)): json.loads(r.method_info)
                  for r in results.itertuples() if parse_spec(r.method)[0] == "fusion"}
    for cell, path in paths.score_files():
        info = fused_rows.get((cell.variant, cell.category, cell.k, cell.seed))
        if info is None:
            continue
        frame = pd.read_csv(path, dtype={"image": str, "kind": str, "path": str})
        weights = info.get("weights_used") or {m: 1.0 for m in info["fused"]}
        sets = {"every member": list(info["fused"]), "cheap-fit members": [m for m in info["fused"] if cheap_fit(m)]}
        key = {"variant": cell.variant, "k": cell.k, "seed": cell.seed, "category": cell.category}
        for label, members in sets.items():
            if not members:
                continue
            score = sum(weights[m] * frame[f"z_{m}"].to_numpy() for m in members)
            rows.append({**key, "members": label, **_metrics(frame, score)})
        for member in info["fused"]:
            normal = frame.loc[frame["label"] == 0, f"z_{member}"]
            rows.append({**key, "members": f"{member} alone", **_metrics(frame, frame[f"z_{member}"].to_numpy()),
                         "normal_z_mean": float(normal.mean())})
    return pd.DataFrame(rows)


def table(frame: pd.DataFrame) -> list[str]:
    """Markdown rows: mean over seeds and categories of each (variant, member set) per k."""
    metrics = ["logical", "structural", "mean", "f1_max"]
    summary = frame.groupby(["variant", "members", "k"])[metrics].mean().reset_index()
    cells = frame.groupby(["variant", "members", "k"]).size().rename("cells").reset_index()
    summary = summary.merge(cells)
    lines = ["| fusion variant | fused | k | AUROC logical | AUROC structural | AUROC mean | F1-max | cells |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        if r.members.endswith(" alone") and r.variant != summary["variant"].iloc[0]:
            continue  # members alone: once (from the first variant's z-scores)
        lines.append(f"| {r.variant} | {r.members} | {r.k} | {r.logical:.3f} | {r.structural:.3f} | {r.mean:.3f} | "
                     f"{r.f1_max:.3f} | {r.cells} |")
    return lines


def spread_table(frame: pd.DataFrame) -> list[str]:
    """Markdown rows: each member's z-score mean and std over the normal test images, per k (first variant)."""
    alone = frame[frame["members"].str.endswith(" alone") & (frame["variant"] == frame["variant"].iloc[0])]
    summary = alone.groupby(["members", "k"])[["normal_z_mean", "normal_z_std"]].mean().reset_index()
    lines = ["| member | k | z mean on normal test images | z std on normal test images |", "|---|---|---|---|"]
    lines += [f"| {r.members.removesuffix(' alone')} | {r.k} | {r.normal_z_mean:.2f} | {r.normal_z_std:.2f} |"
              for r in summary.itertuples()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    add_section_arguments(parser, title="Fusion design on the dev split")
    args = parser.parse_args()
    frame = refused(args.run_dir)
    write_tables(args, [*table(frame), "",
                        f"Each member's z-scores on the normal test images (variant `{frame['variant'].iloc[0]}`):",
                        "", *spread_table(frame)])


if __name__ == "__main__":
    main()
