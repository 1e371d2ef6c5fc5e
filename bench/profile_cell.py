"""Where a cell's time goes, per method: exclusive seconds in backbone passes, image hashing, augmentation,
nearest-neighbour search, image decoding, metrics, the rest of fit and predict (training, statistics), and the
harness around them.

One child process per method (nothing cached from another method); one cell (k = 4, seed 42) or a grid of cells
(`--shots`, `--seeds`: what a run repeats per cell shows there, what it does once per category is spread over the
cells); 256 px, a procedural category at one LOCO category's test-set size (bench.grid's `cable_pair`:
juice_bottle's 94 good, 142 logical, 94 structural), every metric. The child wraps the functions below with timers
that subtract nested timers, so each second is counted once, in the innermost part it was spent in:
```
python -m bench.profile_cell --preset offline --write
python -m bench.profile_cell --preset offline --shots 1 2 4 8 --seeds 42 0 1234 --tag after --write
python -m bench.profile_cell --preset paper --random-weights --methods patchcore regad:train_epochs=1
```
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
# (module, attribute path) -> part; a function is wrapped wherever a loaded module holds it
PARTS = {
    ("methods.cache", "image_digest"): "hashing",
    ("submission.datasets.images", "load_images"): "decode",
    ("submission.datasets.images", "load_image"): "decode",
    ("submission.cell_metrics", "load_ground_truth"): "decode",
    ("methods.backbones", "FeatureExtractor.forward"): "backbone",
    ("methods.clip_towers", "ClipTower.encode"): "backbone",
    ("methods.clip_towers", "ClipTower.encode_text"): "backbone",
    ("methods.augment", "augmented_views"): "augmentation",
    ("methods.augment", "pseudo_anomalies"): "augmentation",
    ("methods.common", "nearest_distances"): "nn search",
    ("methods.common", "nearest_distance"): "nn search",
    ("submission.cell_metrics", "pixel_metrics"): "pixel metrics",
    ("submission.cell_metrics", "maps_at_mask_resolution"): "pixel metrics",
    ("submission.cell_metrics", "image_metrics"): "image metrics",
    ("methods.cell", "fit_method"): "fit (rest: training, statistics)",
    ("submission.cell_worker", "predict_all"): "predict (rest: scoring, maps)",
}
FUSION_MEMBERS = "clip_logic+patchcore+regad"  # fusion's default members: its child fits and scores them too
# the child's specs are joined by "+" (a spec's options are joined by ",")
ORDER = ("decode", "hashing", "backbone", "augmentation", "nn search", "fit (rest: training, statistics)",
         "predict (rest: scoring, maps)", "image metrics", "pixel metrics", "harness (rest)")


class Timers:
    """Exclusive seconds per part: a nested timer's time is taken out of its caller's."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.stack: list[list[float]] = []  # per open timer: [start, seconds of its nested timers]

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        self.stack.append([time.perf_counter(), 0.0])
        try:
            yield
        finally:
            start, nested = self.stack.pop()
            total = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + total - nested
            if self.stack:
                self.stack[-1][1] += total

    def wrap(self, function: Callable, name: str) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(name):
                return function(*args, **kwargs)
        timed.__wrapped__ = function  # type: ignore[attr-defined]
        return timed


def install(timers: Timers) -> None:
    """Wrap every function of PARTS in its module, its class, and wherever a loaded module imported it by name."""
    import importlib

    for (module_name, path), part in PARTS.items():
        owner: Any = importlib.import_module(module_name)
        *classes, attribute = path.split(".")
        for name in classes:
            owner = getattr(owner, name)
        original = getattr(owner, attribute)
        wrapped = timers.wrap(original, part)
        setattr(owner, attribute, wrapped)
        if classes:
            continue
        for module in list(sys.modules.values()):
            for key, value in list(getattr(module, "__dict__", {}).items()):
                if value is original:
                    setattr(module, key, wrapped)


def child(method: str, preset: str, random_weights: bool, data: Path, category: str, out: Path,
          shots: tuple[int, ...], seeds: tuple[int, ...]) -> None:
    """Inside the child: the cells (shots x seeds) of `method`, timed by part; writes out/profile.json."""
    import torch
    from rich.console import Console

    import methods.registry  # noqa: F401  (the method modules, imported before wrapping)
    from methods.registry import load_builtins
    from submission.config import RunConfig
    from submission.runner import run

    load_builtins()
    for module in ("methods.clip_logic", "methods.patchcore", "methods.regad", "methods.simplenet", "methods.gcad",
                   "methods.bgad", "methods.fusion", "submission.cell_worker", "submission.runner"):
        __import__(module)
    timers = Timers()
    install(timers)
    config = RunConfig(data=data, format="loco", categories=(category,), shots=shots, seeds=seeds,
                       methods=tuple(method.split("+")),
                       preset=preset, image_size=256, out=out / "run", pretrained=not random_weights,
                       threads=torch.get_num_threads())
    start = time.perf_counter()
    run(config, Console(quiet=True))
    wall = time.perf_counter() - start
    parts = dict(timers.seconds)
    parts["harness (rest)"] = wall - sum(parts.values())
    *members, last = method.split("+")
    label = f"{last} (+ {', '.join(members)})" if members else last
    cells = len(shots) * len(seeds)
    (out / "profile.json").write_text(json.dumps({"method": label, "wall": wall, "parts": parts, "cells": cells,
                                                  "threads": torch.get_num_threads()}))


def run_status(run: Path) -> str:
    """How the profiled run's rows ended, e.g. "12 ok" or "11 ok, 1 failed" (a failed cell is not a profile)."""
    import csv
    from collections import Counter

    with open(run / "results.csv", newline="") as handle:
        counts = Counter(row["status"] for row in csv.DictReader(handle))
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: kv[0] != "ok"))


def render(rows: list[dict[str, Any]], args: argparse.Namespace, test_images: int) -> str:
    weights = "random weights (timing only)" if args.random_weights else "the preset's weights"
    cells = len(args.shots) * len(args.seeds)
    grid = (f"one cell (k = {args.shots[0]}, seed {args.seeds[0]}" if cells == 1 else
            f"{cells} cells (k = {', '.join(map(str, args.shots))} x seeds {' '.join(map(str, args.seeds))}; "
            "seconds per cell: the run's total / cells")
    flags = "".join([" --random-weights" if args.random_weights else "",
                     f" --shots {' '.join(map(str, args.shots))} --seeds {' '.join(map(str, args.seeds))}"
                     if cells > 1 else "", f" --tag {args.tag}" if args.tag else "",
                     " --methods " + " ".join(f"'{m}'" if "," in m else m for m in args.methods)
                     if args.methods else ""])
    lines = [f"## Where a cell's time goes (`bench/profile_cell.py`, preset {args.preset}, CPU"
             f"{', ' + args.tag if args.tag else ''})", "",
             "```", f"python -m bench.profile_cell --preset {args.preset}{flags} --write", "```", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU cores, device cpu, "
             f"torch threads {rows[0].get('threads', '?') if rows else '?'}, {weights}: one child process per "
             f"method, {grid}, 256 px, {test_images} test images: juice_bottle's counts), every metric. Exclusive "
             "seconds (each second counted once, in the innermost part); fusion's process also fits and scores its "
             "members. decode = reading and resizing images and masks; hashing = content digests of images for "
             "the run's caches; harness (rest) = start-up, the run folder, the sampler, Python around the parts.",
             "", f"| method | rows | wall s{' per cell' if cells > 1 else ''} | " + " | ".join(ORDER) + " |",
             "|---|---|---|" + "---|" * len(ORDER)]
    for row in rows:
        per_cell = {p: row["parts"].get(p, 0.0) / row["cells"] for p in ORDER}
        wall = row["wall"] / row["cells"]
        shares = [f"{per_cell[p]:.2f} ({100 * per_cell[p] / wall:.0f} %)" for p in ORDER]
        lines.append(f"| {row['method']} | {row.get('status', '?')} | {wall:.2f} | " + " | ".join(shares) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=4, metavar=("METHOD", "DATA", "CATEGORY", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--preset", choices=("offline", "paper"), default="offline")
    parser.add_argument("--random-weights", action="store_true", help="random backbone weights (paper preset here)")
    parser.add_argument("--methods", nargs="+", help="default: every built-in method")
    parser.add_argument("--shots", type=int, nargs="+", default=[4], help="k of the profiled cells")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="seeds of the profiled cells")
    parser.add_argument("--work", type=Path, default=Path("/tmp/profile_cell"))
    parser.add_argument("--tag", default="", help="suffix of the BENCHMARKS.md section (e.g. before / after)")
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    parser.add_argument("--reuse", action="store_true", help="render the profiles already in --work (no run)")
    args = parser.parse_args()
    if args.child:
        method, data, category, out = args.child
        child(method, args.preset, args.random_weights, Path(data), category, Path(out), tuple(args.shots),
              tuple(args.seeds))
        return
    from bench.grid import ensure_grid_data, grid_categories
    from methods.registry import BUILTIN_MODULES

    categories = [c for c in grid_categories(1.0) if c[0] == "cable_pair"]
    data = ensure_grid_data(args.work / "data", categories, 256, workers=2)
    test_images = sum(categories[0][4:7])
    rows = []
    for method in args.methods or [m.split(".")[-1] for m in BUILTIN_MODULES]:
        out = args.work / f"{args.preset}_{method}"
        if args.reuse:
            rows.append({**json.loads((out / "profile.json").read_text()), "status": run_status(out / "run")})
            continue
        subprocess.run(["rm", "-rf", str(out)], check=True)
        out.mkdir(parents=True)
        specs = f"{FUSION_MEMBERS}+{method}" if method == "fusion" else method  # fusion needs its members
        command = [sys.executable, "-m", "bench.profile_cell", "--preset", args.preset,
                   *(["--random-weights"] if args.random_weights else []),
                   "--shots", *map(str, args.shots), "--seeds", *map(str, args.seeds), "--child", specs, str(data),
                   "cable_pair", str(out)]
        subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        rows.append({**json.loads((out / "profile.json").read_text()), "status": run_status(out / "run")})
        print(json.dumps(rows[-1]), flush=True)
    text = render(rows, args, test_images)
    print(text)
    if args.write:
        from bench.markdown import write_section

        write_section(f"profile_cell_{args.preset}{'_' + args.tag if args.tag else ''}", text)


if __name__ == "__main__":
    main()
