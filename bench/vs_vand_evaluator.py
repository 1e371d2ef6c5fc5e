"""A VAND kit submission folder under the kit's official evaluator and under the harness: F1-max per (k, seed).

Optional, not in CI; installs nothing and downloads nothing. The official evaluator (cvpr-vand/challenge
`src/eval/evaluate.py` and `src/eval/utils.py`, from a checkout of that repository, copied byte for byte into a
scratch package `eval/` beside the kit folder as `eval/submission/`) runs in a scratch venv with anomalib 2.x:
```
git clone https://github.com/cvpr-vand/challenge /tmp/vand-challenge
python3 -m venv /tmp/vand-venv && /tmp/vand-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 "anomalib==2.7.0" \
    scikit-learn "pandas<3" tqdm  # anomalib 2.7.0's MVTec LOCO reader fails under pandas 3
.venv/bin/python -m bench.vs_vand_evaluator --challenge /tmp/vand-challenge --vand-python /tmp/vand-venv/bin/python \
    --write
```
The evaluator loops over its five LOCO categories; where the data holds fewer (the shared copy holds juice_bottle
only), its module-level `CATEGORIES` list is set to the ones asked for before `eval()` runs: nothing else of its code
changes. It writes `metrics.csv` (F1-max per seed, k, category). The harness runs the same folder with
`--methods vand:DIR --metrics image` at 256 px (the kit's size) on the same cells. Two kit folders by default: this
repository's `bench/vand_kit` (a small nearest-neighbour model that returns maps) and the kit's own sample model
(`src/eval/submission/`, constant scores).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EVALUATOR_FILES = ("src/eval/evaluate.py", "src/eval/utils.py")
GOAL = 0.005  # the largest |harness - official| F1-max per cell allowed
CAVEAT = ("The small model is weak on juice_bottle (logical anomalies only), so most cells sit at or near chance "
          "F1-max 2p/(1+p); the cells above chance and the sample model's constant scores (every image tied) check "
          "the support sampling, the 256 px input, the batches and the F1-max computation end to end.")


def official_package(challenge: Path, kit: Path, work: Path) -> Path:
    """A scratch folder holding the package `eval` (the evaluator's files, unchanged) with `kit` as its
    `eval/submission`; returns the folder to put on the import path."""
    root = work / "official_src"
    shutil.rmtree(root, ignore_errors=True)
    (root / "eval").mkdir(parents=True)
    for name in EVALUATOR_FILES:
        shutil.copyfile(challenge / name, root / "eval" / Path(name).name)
    shutil.copytree(kit, root / "eval" / "submission", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "eval" / "submission" / "__init__.py").touch()
    return root


def run_official(python: str, challenge: Path, kit: Path, data: Path, categories: list[str], shots: list[int],
                 seeds: list[int], work: Path) -> tuple[dict[tuple[int, int, str], float], float]:
    """The official evaluator on `kit`: F1-max per (k, seed, category) from its metrics.csv, and wall seconds."""
    source = official_package(challenge, kit, work)
    out = work / "official_out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    driver = ("import sys, eval.evaluate as evaluate; evaluate.CATEGORIES[:] = sys.argv.pop(1).split(','); "
              "evaluate.eval()")
    command = [python, "-c", driver, ",".join(categories), "--dataset_path", str(data), "--seeds", *map(str, seeds),
               "--k_shots", *map(str, shots)]
    env = {**os.environ, "PYTHONPATH": str(source), "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    with open(work / "official.log", "w") as log:
        subprocess.run(command, cwd=out, env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    with open(out / "metrics.csv", newline="") as handle:
        return {(int(r["k_shot"]), int(r["seed"]), r["category"]): float(r["image_score"])
                for r in csv.DictReader(handle)}, seconds


def run_harness(kit: Path, data: Path, categories: list[str], shots: list[int], seeds: list[int],
                out: Path) -> tuple[dict[tuple[int, int, str], float], float]:
    """`python -m submission run --methods vand:KIT` on the same cells: F1-max per (k, seed, category), seconds."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "submission", "run", "--data", str(data), "--format", "loco", "--categories",
               *categories, "--shots", *map(str, shots), "--seeds", *map(str, seeds), "--methods", f"vand:{kit}",
               "--image-size", "256", "--metrics", "image", "--out", str(out)]
    start = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "w") as log:
        subprocess.run(command, cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"harness run {out}: {len(failed)} cells not ok, e.g. {failed[0]['method_info'][:300]}")
    return {(int(r["k"]), int(r["seed"]), r["category"]): float(r["f1_max"]) for r in rows}, seconds


def versions(python: str) -> dict[str, str]:
    """anomalib and torch versions of the evaluator's venv."""
    script = "import anomalib, torch, json; print(json.dumps({'anomalib': anomalib.__version__, 'torch': torch.__version__}))"
    return json.loads(subprocess.run([python, "-c", script], check=True, capture_output=True, text=True).stdout)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def render(result: dict, command: str) -> str:
    """The BENCHMARKS.md section from what `main` measured."""
    lines = ["## The official VAND evaluator vs the harness on kit folders (`bench/vs_vand_evaluator.py`)", "",
             "```", command, "```", "",
             f"Measured {result['date']} on {result['machine']}, device cpu, one process at a time. The official "
             f"evaluator: cvpr-vand/challenge commit {result['challenge_commit']} (`evaluate.py` sha256 "
             f"{result['evaluator_digest']}…, copied unchanged; its `CATEGORIES` set to {', '.join(result['categories'])} "
             f"because the data holds no other LOCO category), in a scratch venv with anomalib "
             f"{result['versions']['anomalib']} and torch {result['versions']['torch']}. The harness: "
             "`--methods vand:DIR --image-size 256 --metrics image` on the same cells. F1-max per cell; goal: "
             f"|harness - official| <= {GOAL} in every cell.", "", CAVEAT, ""]
    for kit in result["kits"]:
        cells = sorted(kit["official"])
        worst = max(abs(kit["harness"][c] - kit["official"][c]) for c in cells)
        lines += [f"### `{kit['label']}`", "",
                  f"{len(cells)} cells; largest |harness - official|: {worst:.1e} "
                  f"(goal {'met' if worst <= GOAL else 'NOT met'}); wall seconds: official {kit['official_s']:.0f}, "
                  f"harness {kit['harness_s']:.0f}.", "",
                  "| category | k | seed | official F1-max | harness F1-max | difference |", "|---|---|---|---|---|---|"]
        lines += [f"| {c[2]} | {c[0]} | {c[1]} | {kit['official'][c]:.4f} | {kit['harness'][c]:.4f} | "
                  f"{kit['harness'][c] - kit['official'][c]:+.1e} |" for c in cells]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--challenge", type=Path, required=True, help="a checkout of cvpr-vand/challenge")
    parser.add_argument("--vand-python", required=True, help="python of a venv with anomalib 2.x (the evaluator's)")
    parser.add_argument("--kits", type=Path, nargs="+", help="kit folders (default: bench/vand_kit and the kit's "
                        "sample src/eval/submission)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mvtec_loco")
    parser.add_argument("--categories", nargs="+", default=["juice_bottle"])
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 0, 1234])
    parser.add_argument("--work", type=Path, default=Path("/tmp/vs_vand_evaluator"))
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = parser.parse_args()
    challenge, data, work = args.challenge.resolve(), args.data.resolve(), args.work.resolve()
    kits = [k.resolve() for k in (args.kits or [REPO / "bench" / "vand_kit", challenge / "src" / "eval" / "submission"])]
    commit = subprocess.run(["git", "-C", str(challenge), "rev-parse", "HEAD"], capture_output=True, text=True)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
              "challenge_commit": commit.stdout.strip()[:12] or "unknown",
              "evaluator_digest": digest(challenge / EVALUATOR_FILES[0]), "categories": args.categories,
              "versions": versions(args.vand_python), "kits": []}
    for index, kit in enumerate(kits):
        kit_work = work / f"kit{index}"
        kit_work.mkdir(parents=True, exist_ok=True)
        official, official_s = run_official(args.vand_python, challenge, kit, data, args.categories, args.shots,
                                            args.seeds, kit_work)
        harness, harness_s = run_harness(kit, data, args.categories, args.shots, args.seeds, kit_work / "harness")
        label = str(kit.relative_to(REPO)) if kit.is_relative_to(REPO) else f"cvpr-vand/challenge {kit.relative_to(challenge)}"
        result["kits"].append({"label": label, "official": official, "harness": harness, "official_s": official_s,
                               "harness_s": harness_s})
        worst = max(abs(harness[c] - official[c]) for c in official)
        print(f"{label}: {len(official)} cells, largest |harness - official| {worst:.2e}", flush=True)
    text = render(result, ".venv/bin/python -m bench.vs_vand_evaluator --challenge /tmp/vand-challenge "
                          "--vand-python /tmp/vand-venv/bin/python --write")
    print(text)
    if args.write:
        from bench.markdown import write_section

        write_section("vs_vand_evaluator", text)


if __name__ == "__main__":
    main()
