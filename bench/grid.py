"""The VAND-shaped grid, timed: 5 procedural categories at MVTec LOCO's test-set sizes x k = 1, 2, 4, 8 x seeds
42, 0, 1234 x every registered method, under `--preset offline` and/or `paper` (random weights: timing only).

Data (GRID_CATEGORIES, 256 px, 24 train images) is generated once, in parallel, into `--data-root`. Each preset's
run is one child process (`bench.child_run`) with a time limit. Recorded: wall, fit and predict seconds per
method, peak RSS and GPU memory, and the check that each dataset image passed each backbone once
(`backbone_check`: FAIL and exit 1 otherwise). `--quick`: 2 categories x k = 1, 4 x seed 42, full grid
extrapolated. `--tiny` (64 px, counts / 10, short schedules) checks the plumbing on a CPU and writes nothing
unless `--section` is given. Run: `python -m bench.grid --quick --preset offline paper --device cuda`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from bench.child_run import describe_device, device_line, run_child
from bench.markdown import publish
from bench.paper_preset import (fmt, method_specs, mib, n_test, per_method, registered_methods,
                                parse_bench_args, results_frame)
from runfolder.reading import read_json
from runfolder.schema import RunPaths, parse_cell_name

# (name, procedural kind, generator seed, LOCO category whose counts it takes, good, logical, structural)
GRID_CATEGORIES = (
    ("pill_tray", "pill_tray", 0, "breakfast_box", 102, 83, 90),
    ("cable_pair", "cable_pair", 0, "juice_bottle", 94, 142, 94),
    ("part_slots", "part_slots", 0, "pushpins", 138, 91, 81),
    ("pill_tray_b", "pill_tray", 1, "screw_bag", 122, 137, 82),
    ("cable_pair_b", "cable_pair", 1, "splicing_connectors", 119, 108, 85),
)
FULL_SHOTS, FULL_SEEDS = (1, 2, 4, 8), (42, 0, 1234)
QUICK_CATEGORIES, QUICK_SHOTS, QUICK_SEEDS = 2, (1, 4), (42,)
N_TRAIN, N_VALIDATION = 24, 2
DEFAULT_ROOT = Path(os.environ.get("FEWSHOT_AD_CACHE", Path.home() / ".cache" / "fewshot_ad")) / "bench_grid"
SPLIT_DIRS = {"train": "train/good", "validation": "validation/good", "good": "test/good",
              "logical_anomalies": "test/logical_anomalies", "structural_anomalies": "test/structural_anomalies"}


def _render_one(job: tuple[str, int, int, str, int, str]) -> None:
    """Render one image (and its masks) into the category folder, laid out as `procedural.generate` does."""
    import numpy as np
    from PIL import Image

    from submission.datasets.procedural import ProceduralConfig, defects_config, render_sample

    kind, seed, size, split, index, folder = job
    root = Path(folder)
    sample = render_sample(kind, split, index, ProceduralConfig(image_size=size, seed=seed, categories=(kind,)))
    Image.fromarray(sample.image).save(root / SPLIT_DIRS[split] / f"{index:03d}.png", compress_level=1)
    values = {e["defect_name"]: np.uint8(e["pixel_value"]) for e in defects_config(kind, size)}
    for k, (name, mask) in enumerate(sample.masks):
        gt = root / "ground_truth" / split / f"{index:03d}"
        gt.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * values[name]).save(gt / f"{k:03d}.png", compress_level=1)


def grid_categories(scale: float) -> list[tuple]:
    """The grid categories with their test counts multiplied by `scale` (at least 2 each)."""
    return [(n, kind, seed, loco, *(max(2, round(c * scale)) for c in counts))
            for n, kind, seed, loco, *counts in GRID_CATEGORIES]


def ensure_grid_data(root: Path, categories: list[tuple], size: int, workers: int) -> Path:
    """Generate the categories once (over `workers` processes) into root/<size>px-<digest>; returns that folder."""
    import hashlib
    import shutil

    from submission.datasets.procedural import defects_config

    tag = "-".join(f"{c[0]}{c[4]}_{c[5]}_{c[6]}" for c in categories) + f"-train{N_TRAIN}-val{N_VALIDATION}"
    folder = root / f"{size}px-{hashlib.sha256(tag.encode()).hexdigest()[:8]}"
    todo = [c for c in categories if not (folder / c[0] / ".complete").is_file()]
    if not todo:
        return folder
    start = time.perf_counter()
    jobs = []
    for name, kind, seed, _loco, good, logical, structural in todo:
        target = folder / name
        shutil.rmtree(target, ignore_errors=True)
        for split, n in zip(SPLIT_DIRS, (N_TRAIN, N_VALIDATION, good, logical, structural)):
            (target / SPLIT_DIRS[split]).mkdir(parents=True, exist_ok=True)
            jobs += [(kind, seed, size, split, i, str(target)) for i in range(n)]
        (target / "defects_config.json").write_text(json.dumps(defects_config(kind, size), indent=2) + "\n")
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(_render_one, jobs, chunksize=8))
    for name, kind, seed, *_ in todo:
        (folder / name / ".complete").write_text(json.dumps({"kind": kind, "seed": seed}) + "\n")
    print(f"[grid] generated {len(jobs)} images of {len(todo)} categories in {time.perf_counter() - start:.0f} s "
          f"with {workers} processes -> {folder}", flush=True)
    return folder


def dataset_images(folder: Path) -> tuple[int, int]:
    """(test images, distinct support images drawn) of a finished run: the dataset images its backbones may see."""
    config = read_json(RunPaths(folder).config, required=False)
    data_root = Path(config.get("data") or ".")
    test = sum(len(list((data_root / name / "test" / split).glob("*.png"))) for name in config.get("categories", [])
               for split in ("good", "logical_anomalies", "structural_anomalies"))
    manifest = read_json(RunPaths(folder).manifest, required=False)
    support = {(cat, image) for cat, cells in manifest.items() for cell, names in cells.items()
               if parse_cell_name(cell) is not None for image in names}  # not a cell's labelled anomalies
    return test, len(support)


def backbone_check(folder: Path, summary: dict[str, Any] | None) -> dict[str, Any]:
    """The bench's assertion on a run's `feature_passes`: each backbone passed each dataset image it saw (all, or
    only the support ones for a fit-only backbone) exactly once. Views made inside fits are counted apart."""
    test, support = dataset_images(folder)
    unique, summary = test + support, summary or {}
    passes, distinct = summary.get("dataset_passes", {}), summary.get("distinct_images", {})
    seen = {b: ("all" if distinct.get(b) == unique else "support" if distinct.get(b) == support else "other")
            for b in sorted(passes)}
    expected = {b: unique if seen[b] == "all" else support if seen[b] == "support" else unique for b in seen}
    repeats = {b: passes[b] - distinct.get(b, 0) for b in seen}
    total, limit = sum(passes.values()), sum(expected.values())
    ok = bool(passes) and all(repeats[b] == 0 and seen[b] != "other" for b in seen) and total == limit
    return {"unique_images": unique, "test_images": test, "support_images": support, "backbones": sorted(passes),
            "passes": total, "limit": limit, "ratio": round(total / limit, 3) if limit else None,
            "per_backbone": {b: f"{passes[b]} passes of {distinct.get(b, 0)} distinct images ({seen[b]})" for b in seen},
            "repeats": repeats, "view_passes": summary.get("view_passes", {}),
            "cache": {key: summary.get(key) for key in ("cache_max_bytes", "cache_peak_bytes", "cache_evictions")},
            "check": "PASS" if ok else "FAIL"}


def check_line(check: dict[str, Any]) -> str:
    """One sentence: the pass check, the view passes, the cache's bound and evictions."""
    cache = check["cache"]
    return (f"dataset-image backbone passes {check['passes']} vs the limit {check['limit']} ({check['test_images']} "
            f"test + {check['support_images']} distinct support images, x the backbones that saw them: "
            f"{'; '.join(f'{b}: {v}' for b, v in check['per_backbone'].items())}) — check **{check['check']}**; "
            f"repeated passes {check['repeats']}. View passes (made inside fits, outside the limit): "
            f"{check['view_passes'] or 'none'}. Content cache: bound {mib(cache['cache_max_bytes'])} MiB, peak "
            f"{mib(cache['cache_peak_bytes'])} MiB, {cache['cache_evictions']} evictions")


def extrapolate(frame: pd.DataFrame, wall_s: float, full: list[tuple]) -> dict[str, Any]:
    """Full-grid seconds from a partial run: first and later cells priced apart, predict scaled by test images."""
    ok = frame[frame["status"] == "ok"].copy()
    if ok.empty:
        return {}
    ok["n_test"] = n_test(ok)
    ok["first"] = ~ok.duplicated(["method", "category"])
    full_tests = [sum(c[4:7]) for c in full]
    per_category = len(FULL_SHOTS) * len(FULL_SEEDS)
    total = 0.0
    for _method, part in ok.groupby("method"):
        first, later = part[part["first"]], part[~part["first"]]
        later = later if len(later) else first
        f_fit, f_pred = first["fit_s"].mean(), (first["predict_s"] / first["n_test"]).mean()
        l_fit, l_pred = later["fit_s"].mean(), (later["predict_s"] / later["n_test"]).mean()
        for n in full_tests:
            total += f_fit + f_pred * n + (per_category - 1) * (l_fit + l_pred * n)
    in_cells = (ok["fit_s"] + ok["predict_s"]).sum()
    outside, measured_work = max(0.0, wall_s - in_cells), ok["n_test"].sum()
    full_work = ok["method"].nunique() * per_category * sum(full_tests)
    total += outside * full_work / measured_work if measured_work else 0.0
    return {"estimate_s": total, "outside_cells_s": outside, "in_cells_s": in_cells}


def run_preset(preset: str, args: argparse.Namespace, data: Path, categories: list[tuple],
               full: list[tuple]) -> dict[str, Any]:
    names = args.methods or registered_methods()
    specs = list(method_specs(names, "paper" if preset == "offline" and not args.tiny else args.settings).values())
    out, cells = args.work / preset, len(categories) * len(args.shots) * len(args.seeds)
    config = {"data": str(data), "format": "loco", "categories": [c[0] for c in categories], "preset": preset,
              "pretrained": False, "device": args.device, "image_size": args.image_size, "shots": list(args.shots),
              "seeds": list(args.seeds), "methods": specs, "out": str(out), "cache_gib": args.cache_gib}
    print(f"[grid] {preset}: {len(categories)} categories x k {list(args.shots)} x seeds {list(args.seeds)} = {cells} cells "
          f"x {len(specs)} methods; methods {' '.join(specs)}; limit {args.timeout:.0f} s", flush=True)
    report = run_child(config, args.work / f"{preset}.report.json", args.timeout, log=args.work / f"{preset}.log")
    wall, finished, frame = report.get("child_wall_s", 0.0), report.get("finished"), results_frame(RunPaths(out))
    passes = read_json(RunPaths(out).config, required=False).get("feature_passes") if finished else None
    result: dict[str, Any] = {
        "preset": preset, "specs": specs, "report": report, "cells": cells, "rows": per_method(frame),
        "cells_done": int(frame.groupby(["category", "k", "seed"]).ngroups) if len(frame) else 0,
        "backbone": backbone_check(out, passes) if passes is not None else None,
        "full_measured": bool(not args.quick and finished)}
    if len(frame) and not result["full_measured"]:
        result["extrapolated"] = extrapolate(frame, wall, full)
    status = "finished" if finished else f"NOT finished ({report.get('error')})"
    print(f"[grid] {preset}: {status}; wall {wall:.0f} s; {result['cells_done']}/{cells} cells; peak RSS "
          f"{mib(report.get('peak_rss_bytes'))} MiB; GPU peak {mib(report.get('cuda_max_allocated_bytes'))} MiB", flush=True)
    return result


def section_text(results: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any],
                 categories: list[tuple], gen_s: float) -> str:
    on_gpu = bool(info.get("gpu"))
    counts = ", ".join(f"{c[0]} ({c[3]}: {c[4]}/{c[5]}/{c[6]})" for c in categories)
    lines = [
        f"## The VAND-shaped grid, timed ({'GPU' if on_gpu else 'CPU'}{', quick subset' if args.quick else ''})", "",
        f"`python -m bench.grid {args.command}` — measured {time.strftime('%Y-%m-%d')} on {device_line(info)}.", "",
        f"Procedural categories at MVTec LOCO's test-set sizes (good/logical/structural): {counts} (`_b`: generator "
        f"seed 1); {args.image_size} px; support pool {N_TRAIN} train images; k = {', '.join(map(str, args.shots))}; "
        f"seeds {', '.join(map(str, args.seeds))}; "
        + ("methods " + ", ".join(args.methods) if args.methods else "every registered method") + "; "
        + ("`--tiny`: 64 px, test counts x 0.1, shortened schedules, a plumbing check; " if args.tiny else "")
        + f"random weights (`pretrained=False`): timing only. Dataset generation ({gen_s:.0f} s when not cached) "
        "is not in the run times. Peak RSS / GPU memory: the run's child process.", "",
    ]
    for r in results:
        rep = r["report"]
        options = [s for s in r["specs"] if ":" in s]
        lines += [f"### preset `{r['preset']}`" + (f" (options: {', '.join(f'`{o}`' for o in options)})" if options
                                                   else " (the preset's own schedules)"), ""]
        status = "finished" if rep.get("finished") else f"**not finished**: {rep.get('error')}"
        gpu = (f"; GPU peak allocated {mib(rep.get('cuda_max_allocated_bytes'))} MiB, reserved "
               f"{mib(rep.get('cuda_max_reserved_bytes'))} MiB" if on_gpu else "")
        lines.append(f"- wall time: **{rep.get('child_wall_s', 0):.0f} s** ({status}; {r['cells_done']}/{r['cells']} "
                     f"cells of this run); peak RSS {mib(rep.get('peak_rss_bytes'))} MiB{gpu}")
        lines.append(f"- {check_line(r['backbone'])}" if r["backbone"] else
                     "- backbone passes: unknown (the run did not finish) — check **FAIL**")
        if r.get("extrapolated"):
            lines.append(f"- full grid (5 categories x k 1, 2, 4, 8 x 3 seeds = 60 cells x {len(r['specs'])} methods"
                         + (", at the tiny counts" if args.tiny else "") + "): "
                         f"**~{r['extrapolated']['estimate_s']:.0f} s, extrapolated** from this subset, not measured")
        elif r.get("full_measured"):
            lines.append("- this is the full grid, measured")
        lines += ["", "| method | cells ok | other | fit s (sum) | fit s per cell | predict s (sum) | test images/s |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {row['method']} | {row['cells_ok']} | {row['cells_other']} | {fmt(row['fit_s'])} | "
                  f"{fmt(row['fit_per_cell'])} | {fmt(row['predict_s'])} | {fmt(row['images_per_s'])} |"
                  for row in r["rows"]] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["offline", "paper"], choices=("offline", "paper"))
    parser.add_argument("--quick", action="store_true", help="2 categories x k 1, 4 x seed 42; full grid extrapolated")
    parser.add_argument("--cache-gib", type=float, default=None, help="the runs' content cache bound (default 4 GiB)")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes generating the data")
    parser.add_argument("--prepare-only", action="store_true", help="only generate the grid's data")
    args = parse_bench_args(parser, argv, "grid", 3600.0, "64 px, test counts / 10, short schedules")
    args.image_size = 64 if args.tiny else 256
    args.shots, args.seeds = (QUICK_SHOTS, QUICK_SEEDS) if args.quick else (FULL_SHOTS, FULL_SEEDS)
    full = grid_categories(0.1 if args.tiny else 1.0)
    categories = full[:QUICK_CATEGORIES] if args.quick else full
    if args.prepare_only:
        ensure_grid_data(args.data_root, categories, args.image_size, args.workers)
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"[grid] device {args.device}; presets {args.preset}; paper settings {args.settings}; {args.image_size} px; "
          f"categories {[c[0] for c in categories]}; work {args.work}", flush=True)
    start = time.perf_counter()
    data = ensure_grid_data(args.data_root, categories, args.image_size, args.workers)
    gen_s = time.perf_counter() - start
    results = [run_preset(p, args, data, categories, full) for p in args.preset]
    info = next((r["report"].get("device_info") for r in results if r["report"].get("device_info")), None) \
        or describe_device(args.device)
    text = section_text(results, args, info, categories, gen_s)
    (args.work / "grid.md").write_text(text + "\n")
    (args.work / "grid.json").write_text(json.dumps({"results": results, "device": info}, indent=1, default=str))
    publish(text, args.section, "grid")
    failed = [r["preset"] for r in results if not (r["backbone"] and r["backbone"]["check"] == "PASS")]
    if failed:  # an unfinished run, or dataset images passing a backbone more than once
        print(f"[grid] backbone pass check FAILED for preset(s) {', '.join(failed)}", file=sys.stderr, flush=True)
    return 0 if all(r["report"].get("finished") for r in results) and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
