"""A short check that every method runs on a device, before spending GPU time on the benches.

Two tiny runs (one procedural category, k = 1, seed 42, small images, shortened schedules):
1. `python -m submission run --device DEVICE --preset offline ...` through the real command line (bundled Lite0);
2. `runner.run(RunConfig(preset="paper", pretrained=False, ...))`: the paper architectures, random weights
   (the command line has no random-weights switch).
Prints each cell's status, seconds and, for a failed cell, its error and trace; exit code 1 if any cell
is not ok. Run: `python -m bench.cuda_smoke --device cuda [--image-size 128] [--out DIR]`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.paper_preset import SHORT_OPTIONS, registered_methods, results_frame
from runfolder.reading import read_json
from runfolder.schema import RunPaths

SMOKE_OPTIONS = {**SHORT_OPTIONS, "simplenet": "meta_epochs=1,epochs_per_meta=1", "gcad": "steps=4,distill_steps=4",
                 "regad": "train_epochs=1"}


def show(folder: Path, label: str) -> bool:
    """Print the run's cells; True when every cell is ok."""
    paths = RunPaths(folder)
    if not paths.results.is_file():
        print(f"[smoke] {label}: no {paths.results.name} in {folder}", flush=True)
        return False
    frame = results_frame(paths)
    passes = read_json(paths.config, required=False).get("backbone_passes")
    good = True
    for _, row in frame.iterrows():
        print(f"[smoke] {label}: {row['method']:<45} {row['status']:<8} fit {row['fit_s']!s:>10.8} s "
              f"predict {row['predict_s']!s:>10.8} s", flush=True)
        if row["status"] != "ok":
            good = False
            info = json.loads(row["method_info"]) if isinstance(row["method_info"], str) else {}
            print(f"        error: {info.get('error') or info.get('missing')}\n{info.get('trace', '')}", flush=True)
    print(f"[smoke] {label}: backbone passes {passes}", flush=True)
    return good


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--category", default="pill_tray")
    parser.add_argument("--presets", nargs="+", default=["offline", "paper"], choices=("offline", "paper"))
    parser.add_argument("--methods", nargs="*", default=None, help="method names (default: every registered one)")
    parser.add_argument("--out", type=Path, default=Path("runs") / f"cuda_smoke_{time.strftime('%Y%m%d-%H%M%S')}")
    args = parser.parse_args(argv)
    names = args.methods or registered_methods()
    specs = [n + (f":{SMOKE_OPTIONS[n]}" if n in SMOKE_OPTIONS else "") for n in names]
    ok = True
    if "offline" in args.presets:
        folder = args.out / "offline"
        command = [sys.executable, "-m", "submission", "run", "--device", args.device, "--preset", "offline",
                   "--categories", args.category, "--shots", "1", "--seeds", "42", "--image-size", str(args.image_size),
                   "--out", str(folder), "--methods", *specs]
        print("[smoke] " + " ".join(command), flush=True)
        start = time.perf_counter()
        code = subprocess.call(command)
        print(f"[smoke] offline: exit {code} in {time.perf_counter() - start:.1f} s", flush=True)
        ok = show(folder, "offline") and code == 0 and ok
    if "paper" in args.presets:
        from submission.config import RunConfig
        from submission.runner import run

        folder = args.out / "paper"
        print(f"[smoke] paper (random weights) -> {folder}: {' '.join(specs)}", flush=True)
        start = time.perf_counter()
        try:
            run(RunConfig(preset="paper", pretrained=False, device=args.device, categories=(args.category,), shots=(1,),
                          seeds=(42,), image_size=args.image_size, out=folder, methods=tuple(specs)))
            print(f"[smoke] paper: finished in {time.perf_counter() - start:.1f} s", flush=True)
        except Exception as error:  # noqa: BLE001 - reported, the caller goes on
            import traceback

            traceback.print_exc()
            print(f"[smoke] paper: run raised {error!r} after {time.perf_counter() - start:.1f} s", flush=True)
            ok = False
        ok = show(folder, "paper") and ok
    if args.device != "cpu":
        import torch

        if torch.cuda.is_available():
            print(f"[smoke] GPU peak allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB (paper run, this process)")
    print(f"[smoke] {'ALL OK' if ok else 'SOME CELLS FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
