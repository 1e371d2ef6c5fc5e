"""The VAND-shaped grid, timed: 5 categories at MVTec LOCO's test-set sizes x k = 1, 2, 4, 8 x seeds 42, 0, 1234 x
every registered method (fusion included), under `--preset offline` and/or `--preset paper` (random weights:
timing only, never accuracy).

Data: the procedural generator has three category kinds (pill_tray, cable_pair, part_slots), so the five
categories are those three (generator seed 0) plus pill_tray and cable_pair again with generator seed 1
(different images, same kind), renamed `pill_tray_b` / `cable_pair_b`. Each gets the test-set counts of one
LOCO category (REFERENCE.md): breakfast_box 102/83/90 -> pill_tray, juice_bottle 94/142/94 -> cable_pair,
pushpins 138/91/81 -> part_slots, screw_bag 122/137/82 -> pill_tray_b, splicing_connectors 119/108/85 ->
cable_pair_b (good/logical/structural), 256 px, a support pool of 24 train images (LOCO has ~350; only the
sampled k matter). The dataset is generated once (in parallel) into `--data-root` and reused.

Each preset's run is one child process (`bench.child_run`) with a time limit; results.csv is written per
cell, so a run cut off at its limit is still summarised (and said to be partial). Recorded: wall time, fit
and predict seconds per method, test images per second, peak RSS and GPU memory of the child, and the
backbone passes of dataset images (support and test, by content digest) against the limit: unique images x
backbones, as a test image's features depend on neither k, seed nor method. The bench asserts it (exit status
1 and FAIL when an image passed a backbone twice, e.g. after a cache eviction; `backbone_check`); passes of
images made inside fits (augmented views, pseudo-anomalies) are reported apart, with the content cache's
bound, peak and evictions (`--cache-gib` sets the bound). `--quick` runs 2 categories x k = 1, 4 x 1 seed and
extrapolates the full grid's time from it (first cell per method and category and the later cells priced
separately, as the feature cache makes later cells cheaper; said to be extrapolated).

Run: `python -m bench.grid --quick --preset offline paper --device cuda`; `--tiny` (64 px, counts / 10,
short schedules) is a CPU check of the plumbing and writes nothing unless `--section` is given.
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
from bench.markdown import write_section
from bench.paper_preset import (SHORT_OPTIONS, TINY_OPTIONS, fmt, mib, registered_methods,
                                resolve_device_and_settings, results_frame)
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
    """Render image `index` of `split` of procedural kind `kind` (generator seed `seed`) into the category
    folder, as `procedural.generate` lays it out (same pixels: every image has its own seeded generator)."""
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


def prepare_embedded(workers: int) -> Path:
    """Generate the harness's embedded procedural dataset (the default config: the smoke test's data and RegAD's
    meta-training source) in parallel, in the folder `procedural.ensure_dataset` uses, so a fresh machine does
    not render it serially inside the first run. Same files as `generate` (each image has its own generator)."""
    import shutil

    from submission.datasets.procedural import ProceduralConfig, config_digest, defects_config

    try:
        from submission.runner import DEFAULT_CACHE
    except Exception:  # noqa: BLE001 - the runner is being refactored; same default as its own
        DEFAULT_CACHE = Path(os.environ.get("FEWSHOT_AD_CACHE", Path.home() / ".cache" / "fewshot_ad"))
    config = ProceduralConfig()
    target = Path(DEFAULT_CACHE) / "procedural" / f"procedural-{config_digest(config)}"
    if target.is_dir():
        return target
    start = time.perf_counter()
    tmp = target.parent / f".{target.name}.bench-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {"train": config.n_train, "validation": config.n_validation, "good": config.n_test_good,
              "logical_anomalies": config.n_test_logical, "structural_anomalies": config.n_test_structural}
    jobs = []
    for kind in config.categories:
        for split, n in counts.items():
            (tmp / kind / SPLIT_DIRS[split]).mkdir(parents=True, exist_ok=True)
            jobs += [(kind, config.seed, config.image_size, split, i, str(tmp / kind)) for i in range(n)]
        (tmp / kind / "defects_config.json").write_text(json.dumps(defects_config(kind, config.image_size), indent=2) + "\n")
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(_render_one, jobs, chunksize=4))
    tmp.chmod(0o755)
    try:
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"[grid] embedded procedural dataset: {len(jobs)} images in {time.perf_counter() - start:.0f} s -> {target}",
          flush=True)
    return target


def grid_categories(count: int, scale: float) -> list[tuple]:
    """The first `count` grid categories with their test counts multiplied by `scale` (at least 2 each)."""
    return [(n, kind, seed, loco, *(max(2, round(c * scale)) for c in counts))
            for n, kind, seed, loco, *counts in GRID_CATEGORIES[:count]]


def ensure_grid_data(root: Path, categories: list[tuple], size: int, workers: int) -> Path:
    """Generate (once, image by image over `workers` processes) the categories into
    root/<size>px-<digest of the counts>; returns that folder."""
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
        counts = {"train": N_TRAIN, "validation": N_VALIDATION, "good": good, "logical_anomalies": logical,
                  "structural_anomalies": structural}
        for split, n in counts.items():
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
    paths = RunPaths(folder)
    config = read_json(paths.config, required=False)
    data_root = Path(config.get("data") or ".")
    test = 0
    for name in config.get("categories", []):
        test += sum(len(list((data_root / name / "test" / split).glob("*.png")))
                    for split in ("good", "logical_anomalies", "structural_anomalies"))
    manifest = read_json(paths.manifest, required=False)
    support = {(cat, image) for cat, cells in manifest.items() for cell, names in cells.items()
               if parse_cell_name(cell) is not None for image in names}  # not a cell's labelled anomalies
    return test, len(support)


def backbone_check(folder: Path, summary: dict[str, Any] | None) -> dict[str, Any]:
    """The bench's assertion on a finished run's `feature_passes` (config.json): every dataset image (support or
    test, known by content digest) passed each backbone that saw it exactly once, so dataset-image passes equal
    unique images x backbones. A backbone sees all of them (test + distinct support), or only the support images
    when it works in fits only (GCAD's distilled teacher under `paper`). View passes (augmented support views
    and pseudo-anomalies made inside fits, never cached) are reported apart, outside the limit."""
    test, support = dataset_images(folder)
    unique = test + support
    summary = summary or {}
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
    return (f"dataset-image backbone passes {check['passes']} vs the limit {check['limit']} ({check['unique_images']} "
            f"unique images = {check['test_images']} test + {check['support_images']} distinct support, x the backbones "
            f"that saw them: {'; '.join(f'{b}: {v}' for b, v in check['per_backbone'].items())}) — check "
            f"**{check['check']}**; repeated passes {check['repeats']}. View passes (augmented support views and "
            f"pseudo-anomalies made inside fits, never cached, outside the limit): {check['view_passes'] or 'none'}. "
            f"Content cache: bound {mib(cache['cache_max_bytes'])} MiB, peak {mib(cache['cache_peak_bytes'])} MiB, "
            f"{cache['cache_evictions']} evictions")


def summarise(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per method: cells ok/failed, fit and predict seconds (sum), test images per second of predict."""
    rows = []
    for method, part in frame.groupby("method", sort=False):
        ok = part[part["status"] == "ok"]
        n_test = (ok["n_good"] + ok["n_logical"].fillna(0) + ok["n_structural"].fillna(0)).sum()
        predict = ok["predict_s"].sum()
        rows.append({"method": method, "cells_ok": len(ok), "cells_other": len(part) - len(ok),
                     "fit_s": ok["fit_s"].sum(), "predict_s": predict, "fit_per_cell": ok["fit_s"].mean(),
                     "images_per_s": n_test / predict if predict > 0 else None})
    return rows


def extrapolate(frame: pd.DataFrame, wall_s: float, full: list[tuple], n_cells_full: int) -> dict[str, Any]:
    """Full-grid seconds from a partial run: per method, the first cell of each category (backbone set-up,
    test features, RegAD's meta-training) and later cells (cached features) priced separately; predict time
    scaled by each full category's test images; the time outside cells (metrics, writing, loading) scaled
    by cells x test images."""
    ok = frame[frame["status"] == "ok"].copy()
    if ok.empty:
        return {}
    ok["n_test"] = ok["n_good"] + ok["n_logical"].fillna(0) + ok["n_structural"].fillna(0)
    ok["first"] = ~ok.duplicated(["method", "category"])
    full_tests = [sum(c[4:7]) for c in full]
    later_per_category = n_cells_full // len(full) - 1
    total = 0.0
    for _method, part in ok.groupby("method"):
        first, later = part[part["first"]], part[~part["first"]]
        later = later if len(later) else first
        f_fit, f_pred = first["fit_s"].mean(), (first["predict_s"] / first["n_test"]).mean()
        l_fit, l_pred = later["fit_s"].mean(), (later["predict_s"] / later["n_test"]).mean()
        for n in full_tests:
            total += f_fit + f_pred * n + later_per_category * (l_fit + l_pred * n)
    in_cells = (ok["fit_s"] + ok["predict_s"]).sum()
    outside = max(0.0, wall_s - in_cells)
    measured_work = ok["n_test"].sum()
    methods = ok["method"].nunique()
    full_work = methods * (n_cells_full // len(full)) * sum(full_tests)
    total += outside * full_work / measured_work if measured_work else 0.0
    return {"estimate_s": total, "outside_cells_s": outside, "in_cells_s": in_cells}


def run_preset(preset: str, args: argparse.Namespace, data: Path, categories: list[tuple], work: Path,
               names: list[str], full: list[tuple]) -> dict[str, Any]:
    table = TINY_OPTIONS if args.settings == "tiny" else SHORT_OPTIONS if preset == "paper" and args.settings == "short" else {}
    specs = [n + (f":{table[n]}" if n in table else "") for n in names]
    specs = [next((o for o in args.option if o.partition(":")[0] == s.partition(":")[0]), s) for s in specs]
    out = work / preset
    config = {"data": str(data), "format": "loco", "categories": [c[0] for c in categories], "preset": preset,
              "pretrained": False, "device": args.device, "image_size": args.image_size, "shots": list(args.shots),
              "seeds": list(args.seeds), "methods": specs, "out": str(out), "batch_size": args.batch_size}
    config.update({key: value for key, value in (("cache_gib", args.cache_gib), ("decode_workers", args.decode_workers))
                   if value is not None})
    cells = len(categories) * len(args.shots) * len(args.seeds)
    print(f"[grid] {preset}: {len(categories)} categories x k {list(args.shots)} x seeds {list(args.seeds)} = {cells} cells "
          f"x {len(specs)} methods; methods {' '.join(specs)}; limit {args.timeout:.0f} s", flush=True)
    report = run_child(config, work / f"{preset}.report.json", args.timeout, log=work / f"{preset}.log")
    result: dict[str, Any] = {"preset": preset, "specs": specs, "report": report, "cells": cells}
    wall = report.get("child_wall_s", 0.0)
    paths = RunPaths(out)
    frame = results_frame(paths)
    result["rows"] = summarise(frame) if len(frame) else []
    result["cells_done"] = int(frame.groupby(["category", "k", "seed"]).ngroups) if len(frame) else 0
    config_json = read_json(paths.config, required=False)
    passes = config_json.get("feature_passes") if report.get("finished") else None
    result["backbone"] = backbone_check(out, passes) if passes is not None else None
    n_full = len(full) * len(FULL_SHOTS) * len(FULL_SEEDS)
    full_run = (len(categories) == len(full) and tuple(args.shots) == FULL_SHOTS and tuple(args.seeds) == FULL_SEEDS
                and report.get("finished"))
    result["full_measured"] = bool(full_run)
    if len(frame) and not full_run:
        result["extrapolated"] = extrapolate(frame, wall, full, n_full)
    status = "finished" if report.get("finished") else f"NOT finished ({report.get('error')})"
    print(f"[grid] {preset}: {status}; wall {wall:.0f} s; {result['cells_done']}/{cells} cells; "
          f"peak RSS {mib(report.get('peak_rss_bytes'))} MiB; GPU peak {mib(report.get('cuda_max_allocated_bytes'))} MiB",
          flush=True)
    for row in result["rows"]:
        print(f"    {row['method']}: ok {row['cells_ok']} other {row['cells_other']} fit {row['fit_s']:.1f} s "
              f"predict {row['predict_s']:.1f} s images/s {fmt(row['images_per_s'])}", flush=True)
    check = result["backbone"]
    if check:
        print(f"[grid] {preset}: {check_line(check)}", flush=True)
    else:
        print(f"[grid] {preset}: backbone passes unknown (the run did not finish) -> FAIL", flush=True)
    if result.get("extrapolated"):
        print(f"[grid] {preset}: full grid ({n_full} cells) extrapolated: {result['extrapolated']['estimate_s']:.0f} s", flush=True)
    return result


def section_text(results: list[dict[str, Any]], args: argparse.Namespace, argv: list[str], info: dict[str, Any],
                 categories: list[tuple], gen_s: float) -> str:
    on_gpu = bool(info.get("gpu"))
    counts = ", ".join(f"{c[0]} ({c[3]}: {c[4]}/{c[5]}/{c[6]})" for c in categories)
    lines = [
        f"## The VAND-shaped grid, timed ({'GPU' if on_gpu else 'CPU'}{', quick subset' if args.quick else ''})", "",
        f"`python -m bench.grid {' '.join(argv)}` — measured {time.strftime('%Y-%m-%d')} on {device_line(info)}.", "",
        f"Procedural categories at MVTec LOCO's test-set sizes (good/logical/structural): {counts}; "
        f"{args.image_size} px; support pool {N_TRAIN} train images. Five categories from three procedural kinds: "
        "pill_tray and cable_pair are reused with generator seed 1 as `pill_tray_b` / `cable_pair_b`. "
        f"k = {', '.join(map(str, args.shots))}; seeds {', '.join(map(str, args.seeds))}; "
        + ("methods " + ", ".join(args.methods) if args.methods else "every registered method") + "; "
        + ("`--tiny`: 64 px, test counts x 0.1, shortened schedules — a plumbing check, not a planning figure; "
           if args.tiny else "") +
        f"random backbone weights (`pretrained=False`): timing only, never accuracy. Dataset generation "
        f"({gen_s:.0f} s when not cached) is not in the run times. Peak RSS / GPU memory: the run's child process.",
        "",
    ]
    for r in results:
        rep = r["report"]
        options = [s for s in r["specs"] if ":" in s]
        lines.append(f"### preset `{r['preset']}`" + (f" (options: {', '.join(f'`{o}`' for o in options)})" if options
                                                       else " (the preset's own schedules)"))
        lines.append("")
        status = "finished" if rep.get("finished") else f"**not finished**: {rep.get('error')}"
        lines.append(f"- wall time: **{rep.get('child_wall_s', 0):.0f} s** ({status}; {r['cells_done']}/{r['cells']} cells "
                     "of this run); peak RSS "
                     f"{mib(rep.get('peak_rss_bytes'))} MiB" + (f"; GPU peak allocated {mib(rep.get('cuda_max_allocated_bytes'))}"
                                                               f" MiB, reserved {mib(rep.get('cuda_max_reserved_bytes'))} MiB"
                                                               if on_gpu else ""))
        check = r["backbone"]
        if check:
            lines.append(f"- {check_line(check)}")
        else:
            lines.append("- backbone passes: unknown (the run did not finish) — check **FAIL**")
        if r.get("extrapolated"):
            lines.append(f"- full grid (5 categories x k 1, 2, 4, 8 x 3 seeds = 60 cells x {len(r['specs'])} methods"
                         + (", at the tiny counts" if args.tiny else "") + "): "
                         f"**~{r['extrapolated']['estimate_s']:.0f} s, extrapolated** from this subset, not measured")
        elif r.get("full_measured"):
            lines.append("- this is the full grid, measured")
        lines += ["", "| method | cells ok | other | fit s (sum) | fit s per cell | predict s (sum) | test images/s |",
                  "|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            lines.append(f"| {row['method']} | {row['cells_ok']} | {row['cells_other']} | {fmt(row['fit_s'])} | "
                         f"{fmt(row['fit_per_cell'])} | {fmt(row['predict_s'])} | {fmt(row['images_per_s'])} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["offline", "paper"], choices=("offline", "paper"))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="2 categories x k 1, 4 x seed 42; full grid extrapolated")
    parser.add_argument("--tiny", action="store_true", help="64 px, test counts / 10, short schedules (a CPU plumbing check)")
    parser.add_argument("--categories", type=int, default=None, help="how many of the 5 grid categories")
    parser.add_argument("--shots", type=int, nargs="+", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--methods", nargs="*", default=None, help="method names (default: every registered one)")
    parser.add_argument("--settings", choices=("paper", "short", "tiny"), default=None,
                        help="paper-preset schedules: the papers' or shortened (default: paper on cuda, short on cpu); "
                             "tiny (with --tiny): shortened for both presets")
    parser.add_argument("--option", action="append", default=[], metavar="SPEC", help="a method's full spec (repeatable)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the test-set counts (tiny: 0.1)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cache-gib", type=float, default=None, help="the run's content cache bound (default 4 GiB)")
    parser.add_argument("--decode-workers", type=int, default=None, help="threads decoding images (default min(8, CPUs))")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per preset's run")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes generating the data")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--section", default=None, help="BENCHMARKS.md section (default grid_<device>[_quick]; none with --tiny)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--prepare-only", action="store_true",
                        help="only generate the data (the grid's and the harness's embedded dataset), in parallel")
    args = parser.parse_args(argv)
    argv = list(argv if argv is not None else sys.argv[1:])
    resolve_device_and_settings(args)
    if args.tiny:
        args.image_size, args.scale = 64, 0.1
    n_categories = args.categories or (QUICK_CATEGORIES if args.quick else len(GRID_CATEGORIES))
    args.shots = tuple(args.shots or (QUICK_SHOTS if args.quick else FULL_SHOTS))
    args.seeds = tuple(args.seeds or (QUICK_SEEDS if args.quick else FULL_SEEDS))
    categories = grid_categories(n_categories, args.scale)
    full = grid_categories(len(GRID_CATEGORIES), args.scale)
    if args.prepare_only:
        prepare_embedded(args.workers)
        ensure_grid_data(args.data_root, categories, args.image_size, args.workers)
        return 0
    names = args.methods or registered_methods()
    work = args.work or Path("runs") / f"bench_grid_{args.device}_{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    print(f"[grid] device {args.device}; presets {args.preset}; paper settings {args.settings}; {args.image_size} px; "
          f"categories {[c[0] for c in categories]}; work {work}", flush=True)
    start = time.perf_counter()
    data = ensure_grid_data(args.data_root, categories, args.image_size, args.workers)
    gen_s = time.perf_counter() - start
    results = [run_preset(p, args, data, categories, work, names, full) for p in args.preset]
    info = next((r["report"].get("device_info") for r in results if r["report"].get("device_info")), None) \
        or describe_device(args.device)
    text = section_text(results, args, argv, info, categories, gen_s)
    (work / "grid.md").write_text(text + "\n")
    (work / "grid.json").write_text(json.dumps({"results": results, "device": info}, indent=1, default=str))
    print(text, flush=True)
    section = args.section or (None if args.tiny else f"grid_{args.device}" + ("_quick" if args.quick else ""))
    if section and not args.no_write:
        write_section(section, text)
        print(f"[grid] wrote section {section} of BENCHMARKS.md", flush=True)
    failed = [r["preset"] for r in results if not (r["backbone"] and r["backbone"]["check"] == "PASS")]
    if failed:  # the bench's assertion: an unfinished run, or dataset images passing a backbone more than once
        print(f"[grid] backbone pass check FAILED for preset(s) {', '.join(failed)}", file=sys.stderr, flush=True)
    return 0 if all(r["report"].get("finished") for r in results) and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
