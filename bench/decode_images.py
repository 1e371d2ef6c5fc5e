"""Decoding and resizing one category's images (train, validation and test, as the runner loads them), serial
against `--workers` threads, with a check that both give the same tensors.

Run: `python -m bench.decode_images /work/shared/data/mvtec_loco/juice_bottle --workers 2 --size 256`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from submission.datasets.images import load_images
from submission.datasets.readers import read_category


def category_images(folder: Path, fmt: str) -> list[Path]:
    """Every image of a category the runner may load: support pool, validation and test images."""
    category = read_category(folder.parent, folder.name, fmt)
    return [*category.train_good, *category.validation_good, *(item.path for item in category.test)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("category", type=Path)
    parser.add_argument("--format", default="loco")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--repeats", type=int, default=2, help="timings per setting; the fastest is reported")
    args = parser.parse_args(argv)
    paths = category_images(args.category, args.format)
    reference = None
    for workers in (1, *args.workers):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            loaded = load_images(paths, args.size, workers)
            times.append(time.perf_counter() - start)
        same = "reference" if reference is None else str(all(torch.equal(a, b) for (a, _), (b, _) in zip(reference, loaded)))
        reference = reference or loaded
        print(f"workers={workers}: {len(paths)} images ({loaded[0][1][1]}x{loaded[0][1][0]} px -> {args.size}) "
              f"in {min(times):.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}), "
              f"{len(paths) / min(times):.1f} images/s; same tensors as serial: {same}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
