"""The paper preset at its real input size, one method per process: what an entrant plans a GPU budget with.

Every registered method runs under `preset=paper` with random backbone weights (`pretrained=False`: timing and
memory, never results) on procedural `pill_tray`, k = 4, seed 42, 256 px, each in its own child process
(`bench.child_run`), so its peaks are its own; fusion's child also fits its members. Schedules: the papers' on
CUDA, shortened (SHORT_OPTIONS) on the CPU.

Run: `python -m bench.paper_preset --device cuda` (writes section `paper_preset_cuda` of BENCHMARKS.md);
`--tiny` (64 px, k = 1, TINY_OPTIONS) is a CPU check of the plumbing and writes nothing unless `--section` is given.
Also holds the helpers the other benches share (method specs, reading results.csv, formatting).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench.child_run import describe_device, device_line, run_child
from bench.markdown import publish
from runfolder.reading import read_json, read_results_file
from runfolder.schema import RESULT_COLUMNS, RunPaths

SHORT_OPTIONS = {  # option keys from the config dataclasses in methods/*.py
    "simplenet": "meta_epochs=2,epochs_per_meta=1",  # paper: 40 x 4
    "gcad": "steps=40,distill_steps=20",  # paper: 2000 + 1000
    "regad": "train_epochs=1",  # paper: 50
}
TINY_OPTIONS = {"simplenet": "meta_epochs=1,epochs_per_meta=1", "gcad": "steps=4,distill_steps=4",
                "regad": "train_epochs=1,input_size=none"}  # RegAD at the run's size
PAPER_SCHEDULE = "SimpleNet 40x4 epochs, GCAD 2000 steps + 1000 distillation steps, RegAD 50 meta-training epochs"
CATEGORY, SEED = "pill_tray", 42


def registered_methods() -> list[str]:
    from methods import list_methods

    return [entry.name for entry in list_methods()]


def parse_bench_args(parser: argparse.ArgumentParser, argv: list[str] | None, name: str, timeout: float,
                     tiny: str) -> argparse.Namespace:
    """The options shared with grid, parsed; settings: tiny with `--tiny`, else paper on CUDA, short on the CPU."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--methods", nargs="*", default=None, help="method names (default: every registered one)")
    parser.add_argument("--tiny", action="store_true", help=tiny + ": a CPU check of the plumbing")
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds per child process")
    parser.add_argument("--work", type=Path, default=None, help=f"run folders (default runs/bench_{name}_...)")
    parser.add_argument("--section", default=None, help=f"BENCHMARKS.md section (default {name}_<device>...)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.settings = "tiny" if args.tiny else "paper" if args.device == "cuda" else "short"
    args.work = args.work or Path("runs") / f"bench_{name}_{args.device}_{time.strftime('%Y%m%d-%H%M%S')}"
    args.command = " ".join(argv if argv is not None else sys.argv[1:])
    default = None if args.tiny else f"{name}_{args.device}" + ("_quick" if getattr(args, "quick", False) else "")
    args.section = None if args.no_write else args.section or default
    return args


def method_specs(names: list[str], settings: str) -> dict[str, str]:
    """Each method's spec: its name plus the shortening options of `settings` (none under paper)."""
    table = {"tiny": TINY_OPTIONS, "short": SHORT_OPTIONS}.get(settings, {})
    return {name: name + (f":{table[name]}" if name in table else "") for name in names}


def mib(value: Any) -> float | None:
    return None if value is None else round(float(value) / 2**20)


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def n_test(frame: pd.DataFrame) -> pd.Series:
    """Test images of each results row."""
    return frame["n_good"] + frame["n_logical"].fillna(0) + frame["n_structural"].fillna(0)


def results_frame(paths: RunPaths) -> pd.DataFrame:
    """A run folder's results.csv (its complete rows); no rows when the run wrote none."""
    if not paths.results.is_file():
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    table = read_results_file(paths.results)
    if not table.rows:
        return pd.DataFrame(columns=list(table.header))
    return pd.read_csv(io.StringIO(table.complete_text))


def per_method(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per method: cells ok / other, fit and predict seconds (first cell of a category apart), test images/s."""
    rows = []
    for method, part in frame.groupby("method", sort=False):
        ok = part[part["status"] == "ok"]
        first = ~ok.duplicated(["category"])
        predict = ok["predict_s"].sum()
        rows.append({"method": method, "cells_ok": len(ok), "cells_other": len(part) - len(ok),
                     "fit_s": ok["fit_s"].sum(), "fit_per_cell": ok["fit_s"].mean(), "predict_s": predict,
                     "first_fit_s": ok["fit_s"][first].mean(), "later_fit_s": ok["fit_s"][~first].mean(),
                     "predict_per_cell": ok["predict_s"].mean(),
                     "images_per_s": n_test(ok).sum() / predict if predict > 0 else None})
    return rows


def bench_method(name: str, specs: dict[str, str], args: argparse.Namespace, work: Path,
                 timeout: float) -> dict[str, Any]:
    """Run one method (fusion: with its members, shortened) in a child process; its row of the table."""
    spec = specs[name]
    members = method_specs(list(specs), "tiny" if args.tiny else "short")
    run_specs = [s for n, s in members.items() if n != "fusion"] + [spec] if name == "fusion" else [spec]
    out = work / name
    config = {"preset": "paper", "pretrained": False, "device": args.device, "image_size": args.image_size,
              "shots": [args.k], "seeds": [SEED], "categories": [CATEGORY], "methods": run_specs, "out": str(out)}
    print(f"[paper_preset] {name}: {' '.join(run_specs)}", flush=True)
    report = run_child(config, work / f"{name}.report.json", timeout, log=work / f"{name}.log")
    row: dict[str, Any] = {"method": name, "spec": spec, "status": "ok" if report.get("finished") else "error",
                           "child_s": report.get("child_wall_s"), "peak_rss_mib": mib(report.get("peak_rss_bytes")),
                           "gpu_alloc_mib": mib(report.get("cuda_max_allocated_bytes")),
                           "gpu_reserved_mib": mib(report.get("cuda_max_reserved_bytes")),
                           "device_info": report.get("device_info"), "error": report.get("error"),
                           "backbone_passes": read_json(RunPaths(out).config, required=False).get("backbone_passes")}
    frame = results_frame(RunPaths(out))
    mine = frame[frame["method"] == spec]
    if len(mine):
        cell, ok = mine.iloc[-1], mine.iloc[-1]["status"] == "ok"
        row.update(cell_status=cell["status"], fit_s=float(cell["fit_s"]) if ok else None,
                   predict_s=float(cell["predict_s"]) if ok else None, n_test=int(n_test(mine).iloc[-1]))
        if not ok:
            info = json.loads(cell["method_info"]) if isinstance(cell["method_info"], str) else {}
            row.update(status=cell["status"], error=info.get("error") or info.get("missing") or row["error"])
    if row.get("predict_s") and row.get("n_test"):
        row["images_per_s"] = row["n_test"] / row["predict_s"]
    print(f"[paper_preset] {name}: {row['status']} fit {fmt(row.get('fit_s'))} s, predict {fmt(row.get('predict_s'))} s, "
          f"peak RSS {row['peak_rss_mib']} MiB, GPU {row['gpu_alloc_mib']} MiB, passes {row.get('backbone_passes')}, "
          f"child {fmt(row['child_s'])} s" + (f"\n    error: {row['error']}" if row.get("error") else ""), flush=True)
    return row


def table(rows: list[dict[str, Any]], on_gpu: bool) -> str:
    gpu = ["GPU peak alloc MiB", "GPU peak reserved MiB"] if on_gpu else []
    head = ["method", "options", "status", "fit s", "predict s", "test images/s", "peak RSS MiB", *gpu,
            "backbone passes", "child process s"]
    keys = ["fit_s", "predict_s", "images_per_s", "peak_rss_mib", *(["gpu_alloc_mib", "gpu_reserved_mib"] if on_gpu else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        passes = r.get("backbone_passes")
        cells = [r["method"], f"`{r['spec'].partition(':')[2] or 'paper defaults'}`", r["status"],
                 *(fmt(r.get(key)) for key in keys), ", ".join(f"{k} {v}" for k, v in passes.items()) if passes else "–",
                 fmt(r.get("child_s"))]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"- {r['method']}: {str(r['error'])[:300]}" for r in rows if r.get("error") and r["status"] != "ok"]
    return "\n".join(lines + ([""] + errors if errors else []))


def section_text(data: dict[str, Any], args: argparse.Namespace) -> str:
    """The BENCHMARKS.md section from what `main` measured (also saved as paper_preset.json)."""
    order = {name: i for i, name in enumerate(registered_methods())}
    rows = sorted(data["rows"], key=lambda r: order.get(r["method"], len(order)))
    info = data["device"]
    on_gpu = bool(info.get("gpu"))
    schedule = (f"the papers' own schedules ({PAPER_SCHEDULE})" if args.settings == "paper" else
                "shortened schedules" + (" (`--tiny`: a plumbing check, not a planning figure)" if args.tiny else "")
                + f", through the method options in the table (paper: {PAPER_SCHEDULE})")
    n = next((r["n_test"] for r in rows if r.get("n_test")), "?")
    return (
        f"## Paper preset, random weights, one method per process ({'GPU' if on_gpu else 'CPU'}"
        f"{', tiny' if args.tiny else ''})\n\n"
        f"`python -m bench.paper_preset {data['command']}` — measured {data['date']} on {device_line(info)}.\n\n"
        f"Preset `paper` with `pretrained=False` (real architectures, random weights: timing and memory only), "
        f"procedural category `{CATEGORY}` ({n} test images), {args.image_size} px, k = {args.k}, seed {SEED}; "
        f"{schedule}. One child process per method: peak RSS is its VmHWM, GPU peaks its "
        "`torch.cuda.max_memory_allocated`/`max_memory_reserved`. Fusion's process also fits its members (shortened "
        "schedules), so its peaks include theirs. fit s / predict s: the process's only cell (backbone set-up, test "
        f"features and RegAD's meta-training included). Total {data['total_s']:.0f} s."
        + (f" Not run here: {', '.join(data['not_run'])}." if data["not_run"] else "")
        + "\n\n" + table(rows, on_gpu))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=None, help="seconds for all methods together")
    args = parse_bench_args(parser, argv, "paper_preset", 900.0, "64 px, k = 1, tiny schedules")
    args.image_size, args.k = (64, 1) if args.tiny else (256, 4)
    names = args.methods or registered_methods()
    if args.budget:  # the longest paper schedule last, so a tight budget cuts only it
        names = sorted(names, key=lambda n: n == "gcad")
    specs = method_specs(names, args.settings)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    print(f"[paper_preset] device {args.device}, settings {args.settings}, {args.image_size} px, k={args.k}, "
          f"work {work}; specs: {' '.join(specs.values())}", flush=True)
    start = time.perf_counter()
    rows = []
    for i, name in enumerate(names):
        timeout = args.timeout
        if args.budget:  # leave each later method at least 15 s of the total budget
            timeout = max(5.0, min(timeout, args.budget - (time.perf_counter() - start) - 15.0 * (len(names) - i - 1)))
        rows.append(bench_method(name, specs, args, work, timeout))
    info = next((r["device_info"] for r in rows if r.get("device_info")), None) or describe_device(args.device)
    data = {"rows": rows, "device": info, "args": vars(args), "command": args.command, "date": time.strftime("%Y-%m-%d"),
            "total_s": time.perf_counter() - start, "not_run": [n for n in registered_methods() if n not in names]}
    (work / "paper_preset.json").write_text(json.dumps(data, indent=1, default=str))
    text = section_text(data, args)
    (work / "paper_preset.md").write_text(text + "\n")
    publish(text, args.section, "paper_preset")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
