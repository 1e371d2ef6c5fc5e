"""Times SimpleNet through the method API on the procedural data at 256 px: fit per cell, test images/s.

Per (category, k, seed): fit seconds (support features, augmented views, training), then predict
seconds over the category's test images twice: with a cold feature cache (backbone + head, what a
method alone pays) and warm (head only: what SimpleNet adds when another method, e.g. PatchCore, has
already run the backbone in the same run). Prints a Markdown table; BENCHMARKS.md is written by hand.

Run: `.venv/bin/python -m bench.bench_simplenet [--preset offline] [--shots 4] [--seeds 42 0 1234] [--threads 1]`.
On a shared machine, `--threads 1` gives CPU seconds that other jobs inflate least (no spinning threads).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

import methods.simplenet  # noqa: F401  (registers "simplenet")
from methods.backbones import FeatureCache
from methods.cell import CellSetting, fit_method
from methods.registry import build_variant
from submission.datasets.images import ImageStore
from submission.datasets.procedural import ensure_dataset
from submission.datasets.readers import list_categories, read_category
from submission.runner import DEFAULT_CACHE, resolve_device
from submission.sampling import support_indices


def time_cell(spec: str, preset: str, support: torch.Tensor, test: torch.Tensor, seed: int,
              device: torch.device, batch_size: int) -> dict[str, float]:
    """Fit and predict one cell; wall and CPU seconds of each stage."""
    variant = build_variant(spec, preset)
    cache = FeatureCache(device)
    cache.extractor(variant.config.backbone)  # weight loading is not part of a cell
    timings: dict[str, float] = {}
    cpu = time.process_time()
    fitted = fit_method(variant, support, CellSetting("bench", seed, device, cache))
    method = fitted.method
    timings.update(fit_s=fitted.fit_s, fit_cpu_s=time.process_time() - cpu)
    for label in ("cold", "warm"):  # the first pass fills the feature cache
        wall = time.perf_counter()
        with torch.no_grad():
            for start in range(0, len(test), batch_size):
                method.predict(test[start:start + batch_size].to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings[f"{label}_images_per_s"] = len(test) / (time.perf_counter() - wall)
    timings.update(steps=method.info()["steps"], n_test=len(test))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="simplenet")
    parser.add_argument("--preset", default="offline", choices=("offline", "paper"))
    parser.add_argument("--shots", type=int, nargs="+", default=[4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 0, 1234])
    parser.add_argument("--categories", nargs="*", default=[])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    root = ensure_dataset(DEFAULT_CACHE / "procedural")
    store = ImageStore(256)
    load_before = os.getloadavg()[0]
    rows = []
    for name in args.categories or list_categories(root):
        category = read_category(root, name, "loco")
        test = store.stack([item.path for item in category.test])
        for k in args.shots:
            for seed in args.seeds:
                indices = support_indices(len(category.train_good), k, seed)
                support = store.stack([category.train_good[i] for i in indices])
                timings = time_cell(args.spec, args.preset, support, test, seed, device, args.batch_size)
                rows.append((name, k, seed, timings))
    print(f"`{args.spec}` preset {args.preset}, 256 px, {rows[0][3]['n_test']} test images per category; "
          f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, device {device}"
          f"{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else ''}; "
          f"load average before/after {load_before:.1f}/{os.getloadavg()[0]:.1f} (other jobs inflate wall times)")
    print()
    print("| category | k | seed | steps | fit s | fit CPU s | test images/s (backbone + head) "
          "| test images/s (head only) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, k, seed, t in rows:
        print(f"| {name} | {k} | {seed} | {t['steps']} | {t['fit_s']:.1f} | {t['fit_cpu_s']:.1f} | "
              f"{t['cold_images_per_s']:.1f} | {t['warm_images_per_s']:.1f} |")
    total = sum(t["fit_s"] + t["n_test"] / t["warm_images_per_s"] for *_, t in rows)
    print(f"\nsum over cells of fit + head-only predict: {total:.0f} s")


if __name__ == "__main__":
    main()
