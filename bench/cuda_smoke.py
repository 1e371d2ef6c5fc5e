"""A short check that every method runs on a device, before spending GPU time on the benches.

Two tiny runs (procedural pill_tray, k = 1, seed 42, shortened schedules): `python -m submission run --preset
offline` through the real command line, and `runner.run(RunConfig(preset="paper", pretrained=False))` (the paper
architectures with random weights; the CLI has no switch for them). Prints each cell's status and seconds, a
failed cell's error and trace; exit code 1 if any cell is not ok.
Run: `python -m bench.cuda_smoke --device cuda [--image-size 128] [--out DIR]`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench.paper_preset import CATEGORY, TINY_OPTIONS, registered_methods, results_frame
from runfolder.reading import read_json
from runfolder.schema import RunPaths
from submission.config import RunConfig
from submission.runner import run

SMOKE_OPTIONS = {**TINY_OPTIONS, "regad": "train_epochs=1"}  # RegAD at its own input size


def show(folder: Path, label: str) -> bool:
    """Print the run's cells; True when every cell is ok."""
    paths = RunPaths(folder)
    if not paths.results.is_file():
        print(f"[smoke] {label}: no {paths.results.name} in {folder}", flush=True)
        return False
    good = True
    for _, row in results_frame(paths).iterrows():
        print(f"[smoke] {label}: {row['method']:<45} {row['status']:<8} fit {row['fit_s']!s:>10.8} s "
              f"predict {row['predict_s']!s:>10.8} s", flush=True)
        if row["status"] != "ok":
            good = False
            info = json.loads(row["method_info"]) if isinstance(row["method_info"], str) else {}
            print(f"        error: {info.get('error') or info.get('missing')}\n{info.get('trace', '')}", flush=True)
    print(f"[smoke] {label}: backbone passes {read_json(paths.config, required=False).get('backbone_passes')}", flush=True)
    return good


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--methods", nargs="*", default=None, help="method names (default: every registered one)")
    parser.add_argument("--out", type=Path, default=Path("runs") / f"cuda_smoke_{time.strftime('%Y%m%d-%H%M%S')}")
    args = parser.parse_args(argv)
    specs = [n + (f":{SMOKE_OPTIONS[n]}" if n in SMOKE_OPTIONS else "") for n in args.methods or registered_methods()]
    command = [sys.executable, "-m", "submission", "run", "--device", args.device, "--preset", "offline",
               "--categories", CATEGORY, "--shots", "1", "--seeds", "42", "--image-size", str(args.image_size),
               "--out", str(args.out / "offline"), "--methods", *specs]
    print("[smoke] " + " ".join(command), flush=True)
    start = time.perf_counter()
    code = subprocess.call(command)
    print(f"[smoke] offline: exit {code} in {time.perf_counter() - start:.1f} s", flush=True)
    ok = show(args.out / "offline", "offline") and code == 0
    print(f"[smoke] paper (random weights) -> {args.out / 'paper'}: {' '.join(specs)}", flush=True)
    start = time.perf_counter()
    try:
        run(RunConfig(preset="paper", pretrained=False, device=args.device, categories=(CATEGORY,), shots=(1,),
                      seeds=(42,), image_size=args.image_size, out=args.out / "paper", methods=tuple(specs)))
        print(f"[smoke] paper: finished in {time.perf_counter() - start:.1f} s", flush=True)
    except Exception as error:  # noqa: BLE001 - reported, the caller goes on
        traceback.print_exc()
        print(f"[smoke] paper: run raised {error!r} after {time.perf_counter() - start:.1f} s", flush=True)
        ok = False
    ok = show(args.out / "paper", "paper") and ok
    torch = sys.modules.get("torch")
    if args.device != "cpu" and torch is not None and torch.cuda.is_available():
        print(f"[smoke] GPU peak allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB (paper run, this process)")
    print(f"[smoke] {'ALL OK' if ok else 'SOME CELLS FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
