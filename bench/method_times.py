"""Fit and predict seconds per method, timed through the real harness: one `submission.runner.run` in this
process, then each method's `fit_s` / `predict_s` read back from results.csv. Methods share the run's content
cache (the first to use a backbone pays its test features): give one method to time it alone.

Run: `.venv/bin/python -m bench.method_times --methods simplenet gcad regad clip_logic [--section method_times]`;
without `--section` the section is only printed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from bench.child_run import describe_device, device_line
from bench.markdown import publish
from bench.paper_preset import fmt, per_method, results_frame
from runfolder.reading import read_json
from runfolder.schema import RunPaths
from submission.config import RunConfig
from submission.runner import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="*", default=[], help="method specs (default: every registered method)")
    parser.add_argument("--data", type=Path, default=None, help="LOCO-layout data (default: procedural)")
    parser.add_argument("--categories", nargs="*", default=[])
    parser.add_argument("--shots", type=int, nargs="+", default=[4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 0, 1234])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--preset", default="offline", choices=("offline", "paper"))
    parser.add_argument("--random-weights", action="store_true", help="pretrained=False: timing only, no results")
    parser.add_argument("--out", type=Path, default=None, help="the run folder (default: a temporary one)")
    parser.add_argument("--section", default=None, help="BENCHMARKS.md section to write (default: print only)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        config = RunConfig(data=args.data, categories=tuple(args.categories), shots=tuple(args.shots),
                           seeds=tuple(args.seeds), methods=tuple(args.methods), preset=args.preset,
                           image_size=args.image_size, device=args.device, pretrained=not args.random_weights,
                           metrics="image", out=args.out or Path(scratch) / "run")
        load, start = os.getloadavg()[0], time.perf_counter()
        folder = run(config, Console(stderr=True))
        wall = time.perf_counter() - start
        rows, saved = per_method(results_frame(RunPaths(folder))), read_json(RunPaths(folder).config)
    lines = [
        "## Fit and predict seconds per method (`python -m bench.method_times`)", "",
        f"`python -m bench.method_times {' '.join(argv if argv is not None else sys.argv[1:])}` — measured "
        f"{time.strftime('%Y-%m-%d')} on {device_line(describe_device(saved['device']))}, torch threads "
        f"{torch.get_num_threads()}, load average {load:.1f} -> {os.getloadavg()[0]:.1f}. Preset `{saved['preset']}`, "
        f"{'dataset ' + str(args.data) if args.data else 'the embedded procedural dataset'} "
        f"({', '.join(saved['categories'])}), k = {', '.join(map(str, args.shots))}, seeds "
        f"{', '.join(map(str, args.seeds))}, {args.image_size} px{', random weights' if args.random_weights else ''}; "
        f"the whole run {wall:.0f} s. Seconds are the cells' `fit_s` / `predict_s` from results.csv.", "",
        "| method | cells ok | other | fit s, first cell of a category | fit s, later cells | predict s per cell "
        "| test images/s |", "|---|---|---|---|---|---|---|",
        *[f"| {r['method']} | {r['cells_ok']} | {r['cells_other']} | {fmt(r['first_fit_s'], 2)} | "
          f"{fmt(r['later_fit_s'], 2)} | {fmt(r['predict_per_cell'], 2)} | {fmt(r['images_per_s'])} |" for r in rows]]
    publish("\n".join(lines), args.section, "method_times")
    return 0 if all(r["cells_other"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
