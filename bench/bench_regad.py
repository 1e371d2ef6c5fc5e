"""Times RegAD through the method API on the procedural data: meta-training per target category, Gaussian
fitting per cell, test images per second (first pass and through the in-process feature cache), and the
peak memory of the Gaussian (fit + scoring) at the shapes the method produces, plus the stride-4 grid.

Run: `.venv/bin/python -m bench.bench_regad [--spec regad] [--shots 4] [--threads 1]`.
Prints a Markdown table; writes nothing (BENCHMARKS.md is the lead's combined benchmark).
CPU peak memory is the growth of a fresh process's resident high-water mark (VmHWM, reset first) around the
Gaussian work;
on CUDA it is `torch.cuda.max_memory_allocated`.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

import methods.regad  # noqa: F401  (registers "regad")
from methods.backbones import FeatureCache
from methods.cell import CellSetting, fit_method
from methods.regad import fit_gaussian, mahalanobis_map, single_thread_on_cpu
from methods.registry import build_config, build_variant
from submission.datasets.images import ImageStore
from submission.datasets.procedural import ensure_dataset
from submission.datasets.readers import list_categories, read_category
from submission.runner import DEFAULT_CACHE, auxiliary_categories
from submission.sampling import support_indices


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def bench_category(spec: str, preset: str, root: Path, name: str, shots: int, seeds: tuple[int, int],
                   device: torch.device, artifacts: Path) -> dict:
    """Two cells of one category: the first meta-trains (and saves), the second loads the saved model."""
    variant = build_variant(spec, preset)
    store = ImageStore(256)
    category = read_category(root, name, "loco")
    test = torch.stack([store.get(item.path)[0] for item in category.test])
    features = FeatureCache(device)
    row: dict = {"category": name, "test_images": len(test)}
    for cell, seed in enumerate(seeds):
        support = store.stack([category.train_good[i] for i in support_indices(len(category.train_good), shots, seed)])
        setting = CellSetting(name, seed, device, features, artifacts,
                              lambda source: auxiliary_categories(source, category, "loco", store))
        start = _clock()
        method = fit_method(variant, support, setting).method
        fit_wall, fit_cpu = _since(start)
        start = _clock()
        with torch.no_grad():
            for i in range(0, len(test), 16):
                method.predict(test[i:i + 16].to(device))
        predict_wall, predict_cpu = _since(start)
        info = method.info()
        if cell == 0:
            meta = info["meta_training"]
            row.update(meta_s=meta.get("seconds", 0.0), meta_cpu_s=meta.get("cpu_seconds", 0.0),
                       meta_steps=meta.get("steps", 0), first_fit_s=fit_wall, first_fit_cpu_s=fit_cpu,
                       cold_images_per_s=len(test) / predict_wall, cold_predict_cpu_s=predict_cpu,
                       views=info["support_views"], grid=info["gaussian_grid"], channels=info["gaussian_channels"],
                       gaussian_mb=info["gaussian_mb"])
        else:
            row.update(cell_fit_s=fit_wall, cell_fit_cpu_s=fit_cpu, cached_images_per_s=len(test) / predict_wall,
                       cached_predict_cpu_s=predict_cpu)
    return row


def _rss_kb(field: str) -> int:
    """A memory field of this process from /proc/self/status (Linux), in kB; ru_maxrss where absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> None:
    """Reset the kernel's resident high-water mark (VmHWM) to the current resident size, where allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _gaussian_peak(shape: tuple[int, int, int, int], n_test: int, chunk: int, device: str, queue) -> None:
    """In a fresh process: peak memory growth of fitting the Gaussian and scoring n_test images."""
    n, channels, h, w = shape
    support = torch.randn(n, channels, h, w, device=device)
    test = torch.randn(n_test, channels, h, w, device=device)
    _reset_peak()
    baseline = _rss_kb("VmRSS")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        baseline_cuda = torch.cuda.memory_allocated()
    start = time.perf_counter()
    with single_thread_on_cpu(torch.device(device)):
        mean, factor = fit_gaussian(support, 0.01, chunk)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(0, n_test, 16):
            mahalanobis_map(test[i:i + 16], mean, factor, chunk)
    score_s = time.perf_counter() - start
    if device == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - baseline_cuda) / 2**20
    else:
        peak_mb = (_rss_kb("VmHWM") - baseline) / 1024
    stored_mb = (mean.numel() + factor.numel()) * 4 / 2**20
    queue.put({"peak_mb": peak_mb, "stored_mb": stored_mb, "fit_s": fit_s, "score_s": score_s})


def gaussian_peak(shape: tuple[int, int, int, int], n_test: int, chunk: int, device: torch.device) -> dict:
    """`_gaussian_peak` in a spawned process, away from this process's models and images."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_gaussian_peak, args=(shape, n_test, chunk, device.type, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def print_tables(rows: list[dict], spec: str, preset: str, shots: int, device: torch.device, load: float) -> None:
    """The timing table per category, then the Gaussian's memory as run (and at the stride-4 grid)."""
    _, config = build_config(spec, preset)
    print(f"## RegAD (`{spec}`, preset {preset}, k={shots}, 256 px runs, input {config.input_size} px)\n")
    print(f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"device {device}, 1-min load average at start {load:.1f} (timings on a shared machine are inflated).\n")
    print("| category | meta-training s (CPU s, steps) | 1st cell fit s (CPU s) | later cell fit s (CPU s) "
          "| test img/s first / cached (CPU s) | support views | Gaussian grid x C | stored MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['category']} | {r['meta_s']:.1f} ({r['meta_cpu_s']:.1f}, {r['meta_steps']}) "
              f"| {r['first_fit_s']:.1f} ({r['first_fit_cpu_s']:.1f}) | {r['cell_fit_s']:.1f} ({r['cell_fit_cpu_s']:.1f}) "
              f"| {r['cold_images_per_s']:.1f} / {r['cached_images_per_s']:.1f} ({r['cold_predict_cpu_s']:.1f} / "
              f"{r['cached_predict_cpu_s']:.1f}) | {r['views']} | {r['grid'][0]}x{r['grid'][1]} x {r['channels']} "
              f"| {r['gaussian_mb']:.0f} |")
    first = rows[0]
    (h, w), views, channels = first["grid"], first["views"], first["channels"]
    shapes = {f"as run (stride {config.gaussian_stride}): {h}x{w} x {channels}": (views, channels, h, w)}
    if config.gaussian_stride == 8:  # the official stage-1 grid, for comparison
        shapes[f"stride 4: {2 * h}x{2 * w} x {channels}"] = (views, channels, 2 * h, 2 * w)
    print("\n| Gaussian (fresh process) | stored MB | peak growth MB | fit s | score s (test images) |")
    print("|---|---|---|---|---|")
    for label, shape in shapes.items():
        result = gaussian_peak(shape, first["test_images"], config.gaussian_chunk, device)
        print(f"| {label} | {result['stored_mb']:.0f} | {result['peak_mb']:.0f} | {result['fit_s']:.2f} "
              f"| {result['score_s']:.2f} ({first['test_images']}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="regad")
    parser.add_argument("--preset", default="offline")
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs=2, default=(42, 0))
    parser.add_argument("--categories", nargs="*", default=[])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    root = ensure_dataset(DEFAULT_CACHE / "procedural")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        rows = [bench_category(args.spec, args.preset, root, name, args.shots, tuple(args.seeds), device, Path(scratch))
                for name in args.categories or list_categories(root)]
    print_tables(rows, args.spec, args.preset, args.shots, device, load)


if __name__ == "__main__":
    main()
