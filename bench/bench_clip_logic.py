"""Time clip_logic per test image on the CPU at the default 256 px size, for both presets.

The `paper` preset runs a randomly initialised open_clip ViT-B-16-plus-240 (no CLIP weights exist
here): its timings are those of the real tower's architecture, not of a usable model. Prints a
Markdown table; it writes no file.

    .venv/bin/python bench/bench_clip_logic.py                 # both presets
    .venv/bin/python bench/bench_clip_logic.py --skip-paper    # offline only (seconds)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import methods.clip_logic  # noqa: E402,F401  (registers clip_logic)
from methods.backbones import FeatureCache  # noqa: E402
from methods.cell import CellSetting, fit_method  # noqa: E402
from methods.registry import build_variant  # noqa: E402
from submission.datasets.procedural import ProceduralConfig, render_sample  # noqa: E402


def _images(category: str, split: str, count: int, size: int) -> torch.Tensor:
    """`count` procedural images [n,3,size,size] in [0,1]."""
    config = ProceduralConfig(image_size=size)
    arrays = [render_sample(category, split, i, config).image for i in range(count)]
    return torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays])


def time_preset(preset: str, supports: tuple[torch.Tensor, torch.Tensor], test: torch.Tensor, category: str,
                batch: int) -> dict:
    """Seconds for the first fit (tower build + text), a fit on other support images, and per test image."""
    variant = build_variant("clip_logic", preset)
    features = FeatureCache(torch.device("cpu"), pretrained=preset == "offline")  # paper: random CLIP weights
    setting = CellSetting(category, 0, torch.device("cpu"), features)
    def fit(support: torch.Tensor) -> tuple[object, float]:
        fitted = fit_method(variant, support, setting)
        return fitted.method, fitted.fit_s
    _, first_fit = fit(supports[0])  # builds the tower / backbone, encodes the prompts (cached afterwards)
    method, fit_s = fit(supports[1])  # a later cell: new support images, prompts cached
    def predict() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(test), batch):
                method.predict(test[i:i + batch])
        return (time.perf_counter() - start) / len(test)
    first = predict()  # new images: backbone / tower pass included
    again = predict()  # the same images in a later cell: their features are cached
    return {"preset": preset, "tower": method.info()["tower"], "first_fit_s": first_fit, "fit_s": fit_s,
            "per_image_s": first, "cached_per_image_s": again, "images": len(test)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--category", default="pill_tray")
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=48, help="test images timed for the offline preset")
    parser.add_argument("--paper-images", type=int, default=2, help="test images timed for the paper preset")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--skip-paper", action="store_true")
    args = parser.parse_args(argv)
    train = _images(args.category, "train", 2 * args.shots, args.size)
    supports = (train[:args.shots], train[args.shots:])
    test = _images(args.category, "good", max(args.images, args.paper_images), args.size)
    rows = [time_preset("offline", supports, test[:args.images], args.category, args.batch)]
    if not args.skip_paper:
        rows.append(time_preset("paper", supports, test[:args.paper_images], args.category, args.batch))
    load = os.getloadavg()[0]
    print(f"clip_logic on CPU ({torch.get_num_threads()} threads, load average {load:.1f} on {os.cpu_count()} cores), "
          f"{args.size} px, k = {args.shots}, category {args.category}\n")
    print("| preset | tower | first fit (s) | fit per cell (s) | predict per image (s) | "
          "same, features cached (s) | images timed |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['preset']} | {row['tower']} | {row['first_fit_s']:.2f} | {row['fit_s']:.2f} | "
              f"{row['per_image_s']:.3f} | {row['cached_per_image_s']:.3f} | {row['images']} |")
    print("\nThe paper-preset (CLIP) timings used a randomly initialised ViT-B-16-plus-240: no CLIP weights are "
          "available offline; the architecture, and so the time, is the real one. 'first fit' includes building "
          "the tower and encoding the 231 prompts, which later cells reuse; 'features cached' is a later cell's "
          "predict, whose test images were already encoded (the harness reuses test features across cells). Timings on a shared machine are "
          "inflated by other jobs (see the load average).")


if __name__ == "__main__":
    main()
