"""Throughput of `--executor ray` with 1 and 2 workers against the local executor (1 torch thread, and one per
core) on a small grid of the embedded procedural dataset; best of interleaved repeats. The Ray runs and the
1-thread local run must give the same results.csv. One local Ray serves every run; each run's actor start-up counts.
Run: `.venv/bin/python -m bench.ray_workers [--workers 1 2] [--methods patchcore] [--image-size 128] [--no-write]`.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console

from bench.child_run import cpu_name
from bench.markdown import publish
from runfolder.schema import METRIC_COLUMNS, TIMING_COLUMNS, RunPaths
from submission.config import ExecutorConfig, RunConfig
from submission.runner import run

CATEGORIES, SHOTS, SEEDS = ("pill_tray", "cable_pair", "part_slots"), (1, 4), (42, 0)


def results(run_dir: Path) -> pd.DataFrame:
    """results.csv without timings, sorted by cell."""
    table = pd.read_csv(RunPaths(run_dir).results, dtype=str, keep_default_na=False).drop(columns=list(TIMING_COLUMNS))
    return table.sort_values(["method", "category", "k", "seed"]).reset_index(drop=True)


def difference(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """`identical`, or the largest absolute difference between two results tables and its column."""
    if a.equals(b):
        return "identical"
    assert a[["method", "category", "k", "seed", "status"]].equals(b[["method", "category", "k", "seed", "status"]])
    gaps = {column: (pd.to_numeric(a[column]) - pd.to_numeric(b[column])).abs().max()
            for column in METRIC_COLUMNS if (a[column] != "").all()}
    column = max(gaps, key=gaps.get)
    return f"max abs difference {gaps[column]:.1e} ({column})"


def busy(run_dir: Path) -> float:
    """Seconds inside the cells (fit_s + predict_s over the rows, added over the workers)."""
    table = pd.read_csv(RunPaths(run_dir).results)
    return float(table["fit_s"].sum() + table["predict_s"].sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--methods", nargs="+", default=["patchcore"])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setup, interleaved; the best is kept")
    parser.add_argument("--work", type=Path, help="where the run folders go (default: a temporary folder)")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    import ray

    work = args.work or Path(tempfile.mkdtemp(prefix="ray_workers_"))
    grid = dict(categories=CATEGORIES, shots=SHOTS, seeds=SEEDS, methods=tuple(args.methods), preset="offline",
                image_size=args.image_size, device="cpu")
    cells = len(CATEGORIES) * len(SHOTS) * len(SEEDS)
    cores = os.cpu_count() or 1
    load_start = os.getloadavg()[0]
    warm = RunConfig(**{**grid, "categories": grid["categories"][:1], "seeds": (1,)}, out=work / "warm")
    run(warm, Console(quiet=True))  # the dataset on disk, the harness imported in this process
    setups = [("local", f"1 process, {t} torch thread{'s' if t > 1 else ''}", t, None) for t in sorted({1, cores})]
    setups += [(f"ray, {n} worker{'s' if n > 1 else ''}", f"{n} actor{'s' if n > 1 else ''} x 1 core", 1,
                ExecutorConfig("ray", workers=n)) for n in args.workers]
    best: dict[int, tuple[float, Path]] = {}  # setup -> (best wall seconds, its run folder)
    threads = torch.get_num_threads()
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="WARNING")
    try:
        for repeat in range(args.repeats):  # interleaved, best of: the load of other jobs moves every number
            for index, (name, _, torch_threads, executor) in enumerate(setups):
                out = work / f"setup{index}_r{repeat}"
                torch.set_num_threads(torch_threads)  # the local runs' threads (actors set their own)
                start = time.perf_counter()
                run(RunConfig(**grid, out=out, **({} if executor is None else {"executor": executor})), Console(quiet=True))
                seconds = time.perf_counter() - start
                if index not in best or seconds < best[index][0]:
                    best[index] = (seconds, out)
    finally:
        ray.shutdown()
        torch.set_num_threads(threads)
    load_end = os.getloadavg()[0]
    on_ray = [index for index, setup in enumerate(setups) if setup[3] is not None]
    first_ray = results(best[on_ray[0]][1])
    for index in on_ray[1:]:  # the number of workers never changes a result
        pd.testing.assert_frame_equal(results(best[index][1]), first_ray, obj=setups[index][1])
    pd.testing.assert_frame_equal(results(best[0][1]), first_ray, obj="local, 1 thread")  # 1 thread each: the same
    local_vs_ray = difference(results(best[on_ray[0] - 1][1]), first_ray)  # local with every core's thread
    base = best[on_ray[0]][0]
    lines = [
        "## Ray workers vs throughput (`python -m bench.ray_workers`)", "",
        f"`.venv/bin/python -m bench.ray_workers {' '.join(argv if argv is not None else sys.argv[1:])}` — measured "
        f"{time.strftime('%Y-%m-%d')} on {cpu_name()} ({cores} CPU cores, no GPU), torch {torch.__version__}, ray "
        f"{ray.__version__}, Python {platform.python_version()}; load average {load_start:.1f} -> {load_end:.1f}.",
        "",
        f"Grid: embedded procedural dataset, {cells} cells ({', '.join(CATEGORIES)} x k {','.join(map(str, SHOTS))} "
        f"x seeds {','.join(map(str, SEEDS))}), methods {', '.join(args.methods)}, preset "
        f"offline, {args.image_size} px, CPU. Wall seconds of the whole run, best of {args.repeats} interleaved runs "
        "(one local Ray started once, not counted; each run's actors counted). `in cells s`: fit_s + predict_s over "
        "the rows. Every Ray run and the 1-thread local run gave the same results.csv (checked); local with "
        f"{cores} torch threads vs Ray: {local_vs_ray}.",
        "", "| executor | workers | wall s | cells/min | in cells s | vs 1 Ray worker |", "|---|---|---|---|---|---|",
    ]
    for index, (name, workers, _, executor) in enumerate(setups):
        seconds, out = best[index]
        ratio = f"x{base / seconds:.2f}" if executor is not None else "–"
        lines.append(f"| {name} | {workers} | {seconds:.1f} | {60 * cells / seconds:.1f} | {busy(out):.1f} | {ratio} |")
    busy_base = busy(best[on_ray[0]][1])
    lines += ["", "Time inside the cells, added over the workers, relative to 1 Ray worker: "
              + ", ".join(f"{setups[i][1]} x{busy(best[i][1]) / busy_base:.2f}" for i in on_ray[1:])
              + " (x1.00 when every worker has a core of its own; more means the workers waited for the CPU)."]
    publish("\n".join(lines), None if args.no_write else "ray_workers", "ray_workers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
