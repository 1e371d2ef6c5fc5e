"""Times the README's main job (`python -m submission run --shots 4`, every method) from a cold dataset cache and
writes the `default_run` section of BENCHMARKS.md. Run: `make bench` (or `python -m bench.default_run [--methods ...]`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from bench.markdown import write_section
from runfolder.schema import RunPaths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="*", default=[])
    parser.add_argument("--section", default="default_run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "run"
        env = {**os.environ, "FEWSHOT_AD_CACHE": str(Path(scratch) / "cache"), "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "-m", "submission", "run", "--shots", "4", "--out", str(out)]
        if args.methods:
            command += ["--methods", *args.methods]
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        results = pd.read_csv(RunPaths(out).results)
        config = json.loads(RunPaths(out).config.read_text())
    ok = results[results.status == "ok"]
    n_test = ok.n_good + ok.n_logical.fillna(0) + ok.n_structural.fillna(0)
    ok = ok.assign(images_per_s=n_test / ok.predict_s)
    per_method = ok.groupby("method").agg(cells=("seed", "size"), fit_s=("fit_s", "sum"), predict_s=("predict_s", "sum"),
                                          images_per_s=("images_per_s", "mean"),
                                          auroc_logical=("image_auroc_logical", "mean"),
                                          auroc_structural=("image_auroc_structural", "mean"), f1_max=("f1_max", "mean"))
    skipped = sorted(set(results.method) - set(ok.method))
    lines = [
        f"## Default run (`python -m submission run --shots 4`{' --methods ' + ' '.join(args.methods) if args.methods else ''})",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, device {config['device']}, cold dataset cache (generation included, install excluded).",
        "",
        f"- wall time: **{wall:.0f} s**; peak resident memory: {peak_mib:.0f} MiB",
        f"- backbone passes: {config['backbone_passes']}",
        *( [f"- methods without an ok cell: {', '.join(skipped)}"] if skipped else []),
        "",
        "| method | cells | fit s (sum) | predict s (sum) | test images/s | AUROC logical | AUROC structural | F1-max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, row in per_method.iterrows():
        lines.append(f"| {method} | {int(row.cells)} | {row.fit_s:.1f} | {row.predict_s:.1f} | {row.images_per_s:.1f} | "
                     f"{row.auroc_logical:.3f} | {row.auroc_structural:.3f} | {row.f1_max:.3f} |")
    write_section(args.section, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
