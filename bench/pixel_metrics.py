"""Times the pixel metrics of one cell (pixel AUROC, AUPRO@0.3, AU-sPRO@0.05 all / per kind) on a real LOCO
category at full mask resolution, as `submission.cell_metrics.pixel_metrics` computes them.

Real masks, synthetic deterministic maps (each image's mask union blurred, plus noise), made at 64x64 and resized
to the masks ("upsampled": many ties) or made at mask resolution ("full resolution"). Best of `--repeats`; each
result is checked against tests/oracles/pixel_reference.py (within 1e-4, or the bench fails).
Run: `.venv/bin/python -m bench.pixel_metrics [--data DIR] [--category juice_bottle] [--device cuda] [--no-write]`.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from bench.markdown import publish
from submission.cell_metrics import load_ground_truth, maps_at_mask_resolution, pixel_metrics
from submission.datasets.readers import read_category
from tests.oracles.pixel_reference import cell_pixel_metrics

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mvtec_loco"
TOLERANCE = 1e-4


def unions(truth) -> list[np.ndarray]:
    return [np.any(np.stack(m), axis=0) if m else np.zeros(s, dtype=bool) for m, s in zip(truth.masks, truth.sizes)]


def upsampled_maps(truth, size: int = 64) -> list[np.ndarray]:
    """Low-resolution maps (mask area-resized, blurred, seeded noise) resized to the masks."""
    low = []
    for i, union in enumerate(unions(truth)):
        small = F.interpolate(torch.from_numpy(union.astype(np.float32))[None, None], size=(size, size), mode="area")[0, 0]
        noise = np.random.default_rng(i).normal(0.0, 0.35, (size, size)).astype(np.float32)
        low.append(ndimage.gaussian_filter(small.numpy(), 1.5) + noise)
    return maps_at_mask_resolution(torch.from_numpy(np.stack(low)), truth.sizes)


def full_resolution_maps(truth) -> list[np.ndarray]:
    """Mask blurred at the mask resolution plus seeded noise: almost no repeated values."""
    out = []
    for i, union in enumerate(unions(truth)):
        blurred = ndimage.gaussian_filter(union.astype(np.float32), 12.0)
        out.append(blurred + np.random.default_rng(1000 + i).normal(0.0, 0.35, union.shape).astype(np.float32))
    return out


def measure(truth, maps, repeats: int, device: str | None) -> dict:
    """Best wall and CPU seconds of `pixel_metrics` over `repeats`; its largest difference from the oracle."""
    seconds = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        new = pixel_metrics(truth, maps, device)
        seconds.append((time.perf_counter() - wall, time.process_time() - cpu))
    diff = 0.0
    for key, value in cell_pixel_metrics(truth, maps).items():
        assert (value is None) == (new[key] is None), (key, value, new[key])
        if value is not None:
            assert abs(value - new[key]) <= TOLERANCE, (key, value, new[key])
            diff = max(diff, abs(value - new[key]))
    return {"values": new, "diff": diff, "wall": min(w for w, _ in seconds), "cpu": min(c for _, c in seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--category", default="juice_bottle")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default=None, help="where the sorts run (default: numpy on the CPU)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    category = read_category(args.data, args.category, "loco")
    sizes = [Image.open(item.path).size[::-1] for item in category.test]  # (height, width)
    truth = load_ground_truth(category, sizes)
    n_pixels = sum(h * w for h, w in sizes)
    n_anomalous = int(sum(u.sum() for u in unions(truth)))
    rows = []
    for name, maps in (("upsampled from 64x64", upsampled_maps(truth)), ("full resolution", full_resolution_maps(truth))):
        rows.append((name, measure(truth, maps, args.repeats, args.device)))
        print(f"{name}: {rows[-1][1]['wall']:.2f} s wall / {rows[-1][1]['cpu']:.2f} s CPU; "
              f"{ {k: round(v, 4) for k, v in rows[-1][1]['values'].items() if v is not None} }", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "## Pixel metrics of one cell (`python -m bench.pixel_metrics`)", "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU cores, device "
        f"{args.device or 'cpu (numpy)'}, load average {load:.1f} at the end, best of {args.repeats}. Category "
        f"{args.category}: {len(sizes)} test images with their real masks at "
        f"{'/'.join(f'{w}x{h}' for h, w in sorted(set(sizes)))} ({n_pixels / 1e6:.1f} M pixels, "
        f"{n_anomalous / 1e6:.2f} M anomalous); synthetic maps (mask blurred + noise). One cell = pixel AUROC, "
        "AUPRO@0.3 and AU-sPRO@0.05 (all / logical / structural); difference from tests/oracles/pixel_reference.py.",
        "", "| maps | wall s | CPU s | max abs difference from the oracle |", "|---|---|---|---|",
        *[f"| {name} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['diff']:.1e} |" for name, r in rows],
    ]
    publish("\n".join(lines), None if args.no_write else "pixel_metrics", "pixel_metrics")


if __name__ == "__main__":
    main()
