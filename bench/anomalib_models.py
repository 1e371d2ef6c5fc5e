"""anomalib's models under the k-shot protocol beside the harness's PatchCore: one BENCHMARKS.md table per data set.

Runs (or reads, with --render-only) two grids, k = 1, 2, 4, 8 x seeds 42 0 1234, preset offline, image metrics,
one thread each, and renders each run folder's leaderboard.csv (mean ± std over seeds, the 95 % bootstrap interval
over test images, fit and predict seconds per cell):
```
.venv/bin/python -m bench.anomalib_models --work /tmp/t23 --write
```
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
METHODS = ("anomalib:Patchcore", "anomalib:Padim", "patchcore",
           "anomalib:Patchcore:coreset_sampling_ratio=1.0,num_neighbors=1", "patchcore:aggregation=concat")
GRID = ["--shots", "1", "2", "4", "8", "--seeds", "42", "0", "1234", "--preset", "offline", "--metrics", "image",
        "--threads", "1"]
DATA = {"proc": ("procedural reported split (pill_tray, cable_pair, part_slots; mean over categories)", []),
        "juice": ("juice_bottle (logical anomalies only)",
                  ["--data", str(REPO.parent / "shared" / "data" / "mvtec_loco"), "--format", "loco",
                   "--categories", "juice_bottle", "--image-size", "256"])}


def command(name: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "submission", "run", *DATA[name][1], *GRID, "--methods", *METHODS, "--out", str(out)]


def table(run: Path) -> list[str]:
    """Markdown rows: one per method and k, over the overall category (or the only one)."""
    board = pd.read_csv(run / "leaderboard.csv")
    category = "overall" if "overall" in set(board["category"]) else board["category"].iloc[0]
    board = board[(board["category"] == category) & (board["k"].astype(str) != "all")]
    rows = ["| method | k | image AUROC | 95 % CI | F1-max | 95 % CI | fit s | predict s |", "|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        for _, r in board[board["method"] == method].sort_values("k").iterrows():
            std = lambda c: f" ± {r[c]:.3f}" if pd.notna(r[c]) else ""  # noqa: E731
            rows.append(f"| `{method}` | {r['k']} | {r['image_auroc']:.3f}{std('image_auroc_std')} | "
                        f"[{r['image_auroc_ci_low']:.3f}, {r['image_auroc_ci_high']:.3f}] | {r['f1_max']:.3f}"
                        f"{std('f1_max_std')} | [{r['f1_max_ci_low']:.3f}, {r['f1_max_ci_high']:.3f}] | "
                        f"{r['fit_s']:.2f} | {r['predict_s']:.2f} |")
    results = pd.read_csv(run / "results.csv").drop_duplicates(["method", "category", "k", "seed"], keep="last")
    failed = results[results["status"] != "ok"]
    if len(failed):
        rows.append("")
        rows.append("Not ok: " + "; ".join(f"{m} k = {k}: {n} cells {s}" for (m, k, s), n in
                                         failed.groupby(["method", "k", "status"]).size().items()) + ".")
    cells = results[results["status"] == "ok"].set_index(["category", "k", "seed", "method"])["image_auroc"].unstack()
    door, ours = METHODS[3], METHODS[4]
    both = cells[[door, ours]].dropna()
    rows += ["", f"Per cell, `{door}` vs `{ours}`: {len(both)} cells, largest |image AUROC difference| "
                 f"{(both[door] - both[ours]).abs().max():.1e}."]
    return rows


def render(work: Path, seconds: dict[str, float]) -> str:
    lines = ["## anomalib's models under the k-shot protocol (`bench/anomalib_models.py`)", "",
             "```", ".venv/bin/python -m bench.anomalib_models --work /tmp/t23 --write", "```", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU cores, device cpu, "
             "`--threads 1`, the two grids side by side with other jobs on the machine (seconds are upper bounds). "
             "anomalib 2.7.0's modules fitted on the support images in harness cells (`anomalib:<Model>`, offline "
             "preset: the bundled Lite0). `anomalib:Patchcore` is anomalib's default memory (10 % coreset, 9 "
             "neighbours); `anomalib:Patchcore:coreset_sampling_ratio=1.0,num_neighbors=1` keeps every patch and one "
             "neighbour, as the harness's `patchcore:aggregation=concat` (anomalib's patch features) does, and the "
             "two agree per cell (the side-by-side section with anomalib's own engine). Our other methods on the same "
             "splits: the sections \"Real partial LOCO category (juice_bottle)\" and \"Procedural dataset (reported "
             "split)\". Mean ± std over seeds; the interval is the 95 % bootstrap interval over test images.", ""]
    for name, (label, _) in DATA.items():
        run = work / name
        if not (run / "leaderboard.csv").is_file():
            continue
        wall = f" (wall {seconds[name]:.0f} s)" if name in seconds else ""
        lines += [f"### {label}{wall}", "", *table(run), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/t23"))
    parser.add_argument("--render-only", action="store_true", help="read the run folders already in --work")
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = parser.parse_args()
    seconds: dict[str, float] = {}
    if not args.render_only:
        for name in DATA:
            start = time.perf_counter()
            subprocess.run(command(name, args.work / name), cwd=REPO, check=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
            seconds[name] = time.perf_counter() - start
    text = render(args.work, seconds)
    print(text)
    if args.write:
        from bench.markdown import write_section

        write_section("anomalib_models", text)


if __name__ == "__main__":
    main()
