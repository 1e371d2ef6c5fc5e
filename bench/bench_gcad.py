"""Times GCAD's fit (and predict) per cell on the CPU at the default size: the procedural dataset at 256 px,
k = 4, seeds 42 0 1234, preset `offline`, through the method API with one shared feature cache (as the
runner does). Prints a Markdown table; it does not write BENCHMARKS.md (paste the table there).

Run: `.venv/bin/python -m bench.bench_gcad [--variants gcad gcad:regressor=seed] [--threads 2]`.
Wall times are inflated when other jobs share the CPU: the table also gives the process CPU time and the
load average, so an inflated run can be recognised.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

import methods.gcad  # noqa: F401  (registers "gcad")
from methods.backbones import FeatureCache
from methods.cell import CellSetting, fit_method
from methods.registry import build_variant
from submission.datasets.images import ImageStore
from submission.datasets.procedural import ensure_dataset
from submission.datasets.readers import list_categories, read_category
from submission.runner import DEFAULT_CACHE
from submission.sampling import support_indices


def time_cell(spec: str, support: torch.Tensor, tests: torch.Tensor, category: str, seed: int,
              features: FeatureCache) -> dict[str, float]:
    """Fit one cell and predict its test images; wall and process CPU seconds."""
    cpu = time.process_time()
    fitted = fit_method(build_variant(spec, "offline"), support, CellSetting(category, seed, torch.device("cpu"), features))
    method, fit_s, fit_cpu_s = fitted.method, fitted.fit_s, time.process_time() - cpu
    wall = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(tests), 16):
            method.predict(tests[start:start + 16])
    return {"fit_s": fit_s, "fit_cpu_s": fit_cpu_s, "predict_s": time.perf_counter() - wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="*", default=["gcad"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[42, 0, 1234])
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = ensure_dataset(DEFAULT_CACHE / "procedural")
    store = ImageStore(256)
    load_before = os.getloadavg()[0]
    rows = []
    for spec in args.variants:
        features = FeatureCache(torch.device("cpu"))
        for name in list_categories(root):
            category = read_category(root, name, "loco")
            tests = store.stack([item.path for item in category.test])
            for seed in args.seeds:
                indices = support_indices(len(category.train_good), args.shots, seed)
                support = store.stack([category.train_good[i] for i in indices])
                rows.append((spec, name, seed, time_cell(spec, support, tests, name, seed, features)))
    print(f"GCAD fit/predict per cell, k={args.shots}, 256 px, preset offline, {platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s), "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print("| variant | category | seed | fit s | fit CPU s | predict s (all test images) |")
    print("|---|---|---|---|---|---|")
    for spec, category, seed, t in rows:
        print(f"| `{spec}` | {category} | {seed} | {t['fit_s']:.1f} | {t['fit_cpu_s']:.1f} | {t['predict_s']:.1f} |")
    for spec in args.variants:
        cells = [t for s, _, _, t in rows if s == spec]
        print(f"| `{spec}` | **total, {len(cells)} cells** | | {sum(t['fit_s'] for t in cells):.1f} | "
              f"{sum(t['fit_cpu_s'] for t in cells):.1f} | {sum(t['predict_s'] for t in cells):.1f} |")


if __name__ == "__main__":
    main()
