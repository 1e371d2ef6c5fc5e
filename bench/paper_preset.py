"""The paper preset at its real input size, one method per process: what an entrant plans a GPU budget with.

Every registered method runs under `preset=paper` with random backbone weights (`pretrained=False`: the
real architectures — WideResNet-50-2, ResNet-18, the CLIP ViT-B-16-plus-240 tower — never real results) on
one procedural category (the embedded dataset: 16 good + 16 logical + 16 structural test images), k = 4,
one seed, at 256 px (each method resizes to its own input inside: RegAD 224, CLIP 240). Each method runs
in its own child process (`bench.child_run`), so its peak resident memory and, on CUDA, its
`torch.cuda.max_memory_allocated` are its own. Fusion needs its members fitted in the same cell, so its
child runs every other method too and its peaks include theirs (its fit/predict seconds are its own row's).

Step counts: `--settings paper` keeps the papers' schedules (SimpleNet 40x4 epochs, GCAD 2000 + 1000
distillation steps, RegAD 50 meta-training epochs); `--settings short` (the default on CPU) shortens them
through method options — never a hidden path — and the bench prints the options it used. `--option
SPEC` replaces a method's options (e.g. `--option regad:train_epochs=2`).

Run: `python -m bench.paper_preset --device cuda` (writes section `paper_preset_cuda` of BENCHMARKS.md);
`python -m bench.paper_preset --device cpu --tiny` (64 px, k = 1, writes nothing unless `--section` is given).
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
from bench.markdown import write_section
from runfolder.reading import read_json, read_results_file
from runfolder.schema import RESULT_COLUMNS, RunPaths

SHORT_OPTIONS = {  # option keys from the config dataclasses in methods/*.py
    "simplenet": "meta_epochs=2,epochs_per_meta=1",  # paper: 40 x 4
    "gcad": "steps=40,distill_steps=20",  # paper: 2000 + 1000
    "regad": "train_epochs=1",  # paper: 50
}
TINY_OPTIONS = {**SHORT_OPTIONS, "simplenet": "meta_epochs=1,epochs_per_meta=1", "gcad": "steps=4,distill_steps=4",
                "regad": "train_epochs=1,input_size=none"}  # --tiny: a plumbing check, RegAD at the run's size
PAPER_SCHEDULE = "SimpleNet 40x4 epochs, GCAD 2000 steps + 1000 distillation steps, RegAD 50 meta-training epochs"


def registered_methods() -> list[str]:
    """Names of the registered methods, in registration order."""
    from methods import list_methods

    return [entry.name for entry in list_methods()]


def resolve_device_and_settings(args: argparse.Namespace) -> None:
    """In place: `--device auto` becomes the device a run would take; `--settings` defaults to tiny with `--tiny`,
    else paper on CUDA and short on the CPU."""
    if args.device == "auto":
        from submission.runner import resolve_device

        args.device = resolve_device("auto").type
    args.settings = args.settings or ("tiny" if args.tiny else "paper" if args.device == "cuda" else "short")


def method_specs(names: list[str], settings: str, overrides: list[str]) -> dict[str, str]:
    """The spec each method runs as: its name, plus the shortening options under `short`, plus overrides."""
    table = TINY_OPTIONS if settings == "tiny" else SHORT_OPTIONS
    specs = {name: name + (f":{table[name]}" if settings in ("short", "tiny") and name in table else "")
             for name in names}
    for spec in overrides:
        name = spec.partition(":")[0]
        if name not in specs:
            raise SystemExit(f"--option {spec}: {name!r} is not one of {', '.join(specs)}")
        specs[name] = spec
    return specs


def mib(value: Any) -> float | None:
    return None if value is None else round(float(value) / 2**20)


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def results_frame(paths: RunPaths) -> pd.DataFrame:
    """A run folder's results.csv (its complete rows) as pandas reads it; no rows when the run wrote none."""
    if not paths.results.is_file():
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    table = read_results_file(paths.results)
    if not table.rows:
        return pd.DataFrame(columns=list(table.header))
    return pd.read_csv(io.StringIO(table.complete_text))


def bench_method(name: str, specs: dict[str, str], args: argparse.Namespace, work: Path,
                 timeout: float) -> dict[str, Any]:
    """Run one method (fusion: with its members) in a child process; its row of the table."""
    spec = specs[name]
    needs_members = name == "fusion"
    members = specs if args.fusion_members == "same" else method_specs(
        list(specs), "tiny" if args.settings == "tiny" else "short", [])
    run_specs = [s for n, s in members.items() if n != "fusion"] + [spec] if needs_members else [spec]
    out = work / name
    config = {"preset": "paper", "pretrained": False, "device": args.device, "image_size": args.image_size,
              "shots": [args.k], "seeds": [args.seed], "categories": [args.category], "methods": run_specs,
              "out": str(out), "batch_size": args.batch_size}
    print(f"[paper_preset] {name}: {' '.join(run_specs)}", flush=True)
    report = run_child(config, work / f"{name}.report.json", timeout, log=work / f"{name}.log")
    row: dict[str, Any] = {"method": name, "spec": spec, "status": "ok" if report.get("finished") else "error",
                           "child_s": report.get("child_wall_s"), "peak_rss_mib": mib(report.get("peak_rss_bytes")),
                           "gpu_alloc_mib": mib(report.get("cuda_max_allocated_bytes")),
                           "gpu_reserved_mib": mib(report.get("cuda_max_reserved_bytes")),
                           "device_info": report.get("device_info"), "error": report.get("error")}
    paths = RunPaths(out)
    frame = results_frame(paths)
    mine = frame[frame["method"] == spec]
    if len(mine):
        cell = mine.iloc[-1]
        row.update(cell_status=cell["status"], fit_s=float(cell["fit_s"]) if cell["status"] == "ok" else None,
                   predict_s=float(cell["predict_s"]) if cell["status"] == "ok" else None,
                   n_test=int(cell["n_good"] + (cell["n_logical"] or 0) + (cell["n_structural"] or 0)))
        if cell["status"] != "ok":
            row["status"] = cell["status"]
            info = json.loads(cell["method_info"]) if isinstance(cell["method_info"], str) else {}
            row["error"] = info.get("error") or info.get("missing") or row["error"]
    if paths.config.is_file():
        row["backbone_passes"] = read_json(paths.config).get("backbone_passes")
    if row.get("predict_s") and row.get("n_test"):
        row["images_per_s"] = row["n_test"] / row["predict_s"]
    line = (f"[paper_preset] {name}: {row['status']} fit {fmt(row.get('fit_s'))} s, predict {fmt(row.get('predict_s'))} s, "
            f"peak RSS {row['peak_rss_mib']} MiB, GPU {row['gpu_alloc_mib']} MiB, passes {row.get('backbone_passes')}, "
            f"child {fmt(row['child_s'])} s")
    print(line + (f"\n    error: {row['error']}" if row.get("error") else ""), flush=True)
    return row


def table(rows: list[dict[str, Any]], on_gpu: bool) -> str:
    head = ["method", "options", "status", "fit s", "predict s", "test images/s", "peak RSS MiB"]
    head += ["GPU peak alloc MiB", "GPU peak reserved MiB"] if on_gpu else []
    head += ["backbone passes", "child process s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        options = r["spec"].partition(":")[2] or "paper defaults"
        cells = [r["method"], f"`{options}`", r["status"], fmt(r.get("fit_s")), fmt(r.get("predict_s")),
                 fmt(r.get("images_per_s")), fmt(r.get("peak_rss_mib"))]
        cells += [fmt(r.get("gpu_alloc_mib")), fmt(r.get("gpu_reserved_mib"))] if on_gpu else []
        passes = r.get("backbone_passes")
        cells += [", ".join(f"{k} {v}" for k, v in passes.items()) if passes else "–", fmt(r.get("child_s"))]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"- {r['method']}: {str(r['error'])[:300]}" for r in rows if r.get("error") and r["status"] != "ok"]
    return "\n".join(lines + ([""] + errors if errors else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--methods", nargs="*", default=None, help="method names (default: every registered one)")
    parser.add_argument("--settings", choices=("paper", "short", "tiny"), default=None,
                        help="paper schedules or shortened ones (default: paper on cuda, short on cpu)")
    parser.add_argument("--option", action="append", default=[], metavar="SPEC",
                        help="a method's full spec, replacing its options (repeatable)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--category", default="pill_tray")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tiny", action="store_true", help="64 px, k = 1, short schedules: a CPU check of the plumbing")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per method's child process")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all methods together")
    parser.add_argument("--reserve", type=float, default=15.0, help="with --budget: seconds kept for each later method")
    parser.add_argument("--fusion-members", choices=("same", "short"), default=None,
                        help="schedules of fusion's members in its process (default: short; their rows are not "
                             "reported, and fusion's own fit does not retrain trained members)")
    parser.add_argument("--work", type=Path, default=None, help="where the run folders go (default runs/bench_paper_preset_<device>_<time>)")
    parser.add_argument("--section", default=None, help="BENCHMARKS.md section (default paper_preset_<device>; none with --tiny)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    resolve_device_and_settings(args)
    if args.tiny:
        args.image_size, args.k = 64, 1
    args.fusion_members = args.fusion_members or "short"
    names = args.methods or registered_methods()
    if args.budget:  # the longest paper schedule last, so a tight budget cuts only it
        names = sorted(names, key=lambda n: n == "gcad")
    specs = method_specs(names, args.settings, args.option)
    work = args.work or Path("runs") / f"bench_paper_preset_{args.device}_{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    print(f"[paper_preset] device {args.device}, settings {args.settings}, {args.image_size} px, k={args.k}, "
          f"seed {args.seed}, category {args.category}, work {work}", flush=True)
    print("[paper_preset] method options used: " + "; ".join(f"{n}: {s.partition(':')[2] or '(paper defaults)'}"
                                                           for n, s in specs.items()), flush=True)
    start = time.perf_counter()
    rows = []
    for i, name in enumerate(names):
        timeout = args.timeout
        if args.budget:  # leave each later method at least `reserve` seconds of the total budget
            left = args.budget - (time.perf_counter() - start) - args.reserve * (len(names) - i - 1)
            timeout = max(5.0, min(timeout, left))
        rows.append(bench_method(name, specs, args, work, timeout))
    total = time.perf_counter() - start
    info = next((r["device_info"] for r in rows if r.get("device_info")), None) or describe_device(args.device)
    command = " ".join(argv if argv is not None else sys.argv[1:])
    (work / "paper_preset.json").write_text(json.dumps({"rows": rows, "device": info, "args": vars(args), "command": command,
                                                        "total_s": total, "date": time.strftime("%Y-%m-%d"),
                                                        "not_run": [n for n in registered_methods() if n not in names]},
                                                       indent=1, default=str))
    text = section_text(work / "paper_preset.json")
    (work / "paper_preset.md").write_text(text + "\n")
    print(text, flush=True)
    section = args.section or (None if args.tiny else f"paper_preset_{args.device}")
    if section and not args.no_write:
        write_section(section, text)
        print(f"[paper_preset] wrote section {section} of BENCHMARKS.md", flush=True)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def section_text(saved: Path, extra: list[Path] = ()) -> str:
    """The BENCHMARKS.md section from a bench's paper_preset.json (plus the rows of `extra` benches' files, for
    methods run separately with the same settings; their commands are listed too)."""
    data = json.loads(saved.read_text())
    rows, info, args, total = data["rows"], data["device"], argparse.Namespace(**data["args"]), data["total_s"]
    for path in extra:
        more = json.loads(path.read_text())
        rows = rows + more["rows"]
        total += more["total_s"]
        data["command"] += f"` and `python -m bench.paper_preset {more['command']}"
        data["not_run"] = [n for n in data.get("not_run", []) if n not in {r["method"] for r in more["rows"]}]
    order = {name: i for i, name in enumerate(registered_methods())}
    rows = sorted(rows, key=lambda r: order.get(r["method"], len(order)))
    on_gpu = bool(info.get("gpu"))
    if args.settings == "paper" and not args.option:
        schedule = "the papers' own schedules (" + PAPER_SCHEDULE + ")"
    else:
        schedule = ("shortened schedules" + (" (`--tiny`: a plumbing check, not a planning figure)" if args.tiny else "")
                    + ", through the method options in the table (paper: " + PAPER_SCHEDULE + ")")
    n_test = next((r["n_test"] for r in rows if r.get("n_test")), "?")
    return (
        f"## Paper preset, random weights, one method per process ({'GPU' if on_gpu else 'CPU'}"
        f"{', tiny' if args.tiny else ''})\n\n"
        f"`python -m bench.paper_preset {data['command']}` — measured {data['date']} on {device_line(info)}.\n\n"
        f"Preset `paper` with `pretrained=False` (the real architectures, random weights: timing and memory "
        f"only, never results), procedural category `{args.category}` ({n_test} test images), "
        f"{args.image_size} px, k = {args.k}, seed {args.seed}, batch size {args.batch_size}; {schedule}. "
        "Each method ran in its own child process: peak RSS is that process's VmHWM (dataset loading and the "
        "harness included), GPU peaks are `torch.cuda.max_memory_allocated`/`max_memory_reserved`. Fusion's "
        "process also fits every other method (its members"
        + (", with the shortened schedules" if args.fusion_members == "short" else "")
        + "), so its peaks include theirs; its fit/predict seconds are its own row's (predict: combining the "
        "members' predictions). fit s and predict s are the cell's `fit_s`/`predict_s` (the only cell of its "
        "process: backbone construction, test features and, for RegAD, meta-training included). "
        f"Total {total:.0f} s."
        + (f" Not run here: {', '.join(data['not_run'])} (left out with `--methods`)." if data.get("not_run") else "")
        + "\n\n" + table(rows, on_gpu))


def render(argv: list[str]) -> int:
    """`python -m bench.paper_preset render WORK SECTION [WORK2 ...] [--note TEXT]`: (re)write a section from finished benches'
    folders (WORK2...: methods run separately with the same settings)."""
    note = argv[argv.index("--note") + 1] if "--note" in argv else ""
    argv = [a for i, a in enumerate(argv) if a != "--note" and (i == 0 or argv[i - 1] != "--note")]
    work, section = Path(argv[0]), argv[1]
    text = section_text(work / "paper_preset.json", [Path(w) / "paper_preset.json" for w in argv[2:]])
    if note:
        head, _, table_part = text.partition("\n\n| method")
        text = f"{head} {note}\n\n| method{table_part}"
    write_section(section, text)
    print(f"[paper_preset] wrote section {section} of BENCHMARKS.md from {work}")
    return 0


if __name__ == "__main__":
    sys.exit(render(sys.argv[2:]) if sys.argv[1:2] == ["render"] else main())
