"""The harness's PatchCore side by side with anomalib 2.x's PatchCore: same category, cells and Lite0 weights.

Optional, not in CI; installs nothing. anomalib lives in a scratch venv that shares this venv's torch and timm:
```
python3 -m venv /tmp/anomalib-venv && /tmp/anomalib-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 \
    "anomalib==2.7.0" "pandas<3"  # anomalib 2.7.0's dataset readers fail under pandas 3
.venv/bin/python -m bench.vs_anomalib --anomalib-python /tmp/anomalib-venv/bin/python --write
```
Per cell (k x seeds on one category) anomalib's `Patchcore` (blocks.2 + blocks.4, coreset ratio 1, 1 neighbour,
256 px, the harness's Lite0 as timm's `tf_efficientnet_lite0` in a private offline hub cache) trains on the support
images the harness's VAND sampling picks; the harness runs `patchcore` (`--metrics all`, `--metrics image`) and
`patchcore:aggregation=concat` (anomalib's patch features) and `anomalib:Patchcore` with the same memory (anomalib's
own module fitted in harness cells, through the plugin door). Each side is one process, timed, one after another.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

LAYERS = ("blocks.2", "blocks.4")  # timm's tf_efficientnet_lite0 stages at stride 8 and 16 = harness levels 2, 3
HARNESS_LEVELS = (2, 3)
CONCAT = "patchcore:aggregation=concat"  # the harness variant that computes anomalib's patch features
IMAGE_SIZE = 256
DOOR = "anomalib:Patchcore:coreset_sampling_ratio=1.0,num_neighbors=1"  # anomalib's module inside a harness cell
HARNESS_SIDES = ("harness_all", "harness_image", "harness_concat", "harness_door")
REVISION = "0" * 40  # the private hub cache's only snapshot


def write_hub_cache(hub: Path) -> Path:
    """The harness's Lite0 as timm's `tf_efficientnet_lite0` in a hub cache under `hub`; returns the file."""
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


def harness_features(image: Path) -> list:
    """The harness's Lite0 maps (levels 2, 3) of one image, as its runs compute them."""
    from methods.backbones import load_backbone
    from submission.datasets.images import load_image

    extractor = load_backbone("lite0")
    pixels, _ = load_image(image, IMAGE_SIZE)
    return extractor(pixels[None], HARNESS_LEVELS)


def timed(command: list[str], env: dict[str, str] | None, log: Path) -> float:
    """Wall seconds of one child process (an error if it fails); its output goes to `log`."""
    start = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(command, check=True, env=env, stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


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
    """Max abs differences between anomalib's Lite0 features of one image and the harness's (saved tensors), and
    between anomalib's preprocessing and the harness's (bilinear antialiased resize, Lite0's [-1, 1])."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import read_image

    module = _patchcore()
    pixels = read_image(str(image)).float().div(255)[None]
    ours = (F.interpolate(pixels, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False,
                          antialias=True).clamp(0, 1) - 0.5) / 0.5
    with torch.no_grad():
        features = module.model.eval().feature_extractor(ours)
        theirs_input = module.pre_processor.transform(pixels)
    reference_maps = torch.load(reference)
    return {**{layer: float((features[layer] - ref).abs().max()) for layer, ref in zip(LAYERS, reference_maps)},
            "feature_scale": float(max(ref.abs().max() for ref in reference_maps)),
            "preprocessing": float((theirs_input - ours).abs().max())}


def anomalib_grid(plan: dict, work: Path, workers: int) -> list[dict]:
    """anomalib's PatchCore on each cell: image AUROC of its raw scores and seconds, into `work`/anomalib.json."""
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


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _harness_command(args: argparse.Namespace, out: Path, metrics: str, method: str = "patchcore") -> list[str]:
    return [sys.executable, "-m", "submission", "run", "--data", str(args.data), "--format", "loco",
            "--categories", args.category, "--shots", *map(str, args.shots), "--seeds", *map(str, args.seeds),
            "--methods", method, "--preset", "offline", "--out", str(out), "--metrics", metrics]


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
             # anomalib's own Patchcore module fitted and scored in harness cells (`anomalib:` through the door)
             "harness_door": (_harness_command(args, work / "harness_door", "image", DOOR), None)}
    for name, (command, step_env) in steps.items():
        shutil.rmtree(work / name, ignore_errors=True)  # a fresh run folder (the harness would resume)
        before = _load()
        result["seconds"][name] = timed(command, step_env, work / f"{name}.log")
        result["load"][name] = f"{before} -> {_load()}"
        print(f"{name}: {result['seconds'][name]:.1f} s (load {result['load'][name]})", flush=True)
    result["anomalib"] = json.loads((work / "anomalib" / "anomalib.json").read_text())
    for name in HARNESS_SIDES:
        with open(work / name / "results.csv", newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r["status"] == "ok"]
        result[name] = {f"{r['k']},{r['seed']}": float(r["image_auroc"]) for r in rows}
        result[f"{name}_phases"] = {"fit": sum(float(r["fit_s"]) for r in rows),
                                    "predict": sum(float(r["predict_s"]) for r in rows)}
    result.update(date=time.strftime("%Y-%m-%d"), category=args.category, machine=f"{platform.machine()}, "
                  f"{os.cpu_count()} CPU cores", versions=json.loads((work / "versions.json").read_text()))
    (work / "result.json").write_text(json.dumps(result, indent=1))
    return result


DIFFERENCES = """What still differs (from anomalib's `Patchcore`, `PatchcoreModel`, `KCenterGreedy`, `AnomalyMapGenerator`):
- Patch features: anomalib averages each level over 3x3 (zero padding counted), resizes `blocks.4` to `blocks.2`'s
  grid and concatenates the raw 40 + 112 channels; the harness's default pools each level to 56 values (112 joined),
  so its distances and AUROC differ. `patchcore:aggregation=concat` is anomalib's computation.
- Memory: both keep every support patch (anomalib runs its k-center greedy coreset and keeps all; the harness skips
  the selection at ratio 1.0). Image score: the largest nearest-neighbour distance of a test patch on both sides.
- Pixels: anomalib decodes, resizes and passes every test image through Lite0 in every cell and writes a Lightning
  checkpoint per cell; the harness decodes each image once per run and caches each test image's Lite0 maps."""


def render(result: dict, command: str) -> str:
    """The BENCHMARKS.md section: every figure from `result` (what `compare` measured)."""
    seconds, versions, check = result["seconds"], result["versions"], result["check"]
    anomalib = {(r["k"], r["seed"]): r for r in result["anomalib"]}
    per_cell = {name: {tuple(map(int, key.split(","))): v for key, v in result[name].items()} for name in HARNESS_SIDES}
    cells = [c for c in sorted(anomalib) if all(c in per_cell[name] for name in HARNESS_SIDES)]
    mean = {name: sum(per_cell[name][c] for c in cells) / len(cells) for name in HARNESS_SIDES}
    mean["anomalib"] = sum(anomalib[c]["image_auroc"] for c in cells) / len(cells)
    equal = {name: abs(mean[name] - mean["anomalib"]) <= 0.01 for name in HARNESS_SIDES}
    worst = {name: max(abs(per_cell[name][c] - anomalib[c]["image_auroc"]) for c in cells) for name in HARNESS_SIDES}
    labels = {"harness_all": ("harness `--metrics all` (image + pixel AUROC, AUPRO, AU-sPRO)", 3),
              "harness_image": ("harness `--metrics image`", 5),
              "harness_concat": (f"harness `{CONCAT}` `--metrics image` (anomalib's patch features)", 5),
              "harness_door": (f"harness `{DOOR}` `--metrics image` (anomalib's module in harness cells)", 1)}
    rows = []
    for name, (label, goal) in labels.items():  # the goals hold at equal AUROC (means within 0.01) only
        ratio = seconds["anomalib"] / seconds[name]
        verdict = ("met" if ratio >= goal else "not met") if equal[name] else \
            f"not this side (AUROC {mean[name]:.3f} vs {mean['anomalib']:.3f})"
        rows.append(f"| {label} | {seconds[name]:.0f} | {mean[name]:.3f} | {ratio:.1f}x | {goal}x at equal AUROC: {verdict} |")
    lines = [
        "## Side by side with anomalib's PatchCore (`bench/vs_anomalib.py`)", "", "```", command, "```", "",
        f"Measured {result['date']} on {result['machine']}, device cpu, one process at a time (load average before -> "
        "after each step: " + "; ".join(f"{name} {load}" for name, load in result["load"].items()) + "). anomalib "
        f"{versions['anomalib']} (lightning {versions['lightning']}) in a scratch venv sharing this venv's torch "
        f"{versions['torch']} and timm {versions['timm']}.", "",
        f"Category `{result['category']}`, {len(cells)} cells (k = {', '.join(str(k) for k in sorted({k for k, _ in cells}))}"
        f" x seeds {', '.join(str(s) for s in sorted({s for _, s in cells}))}); anomalib trains on each cell's support "
        "images (the harness's VAND sampling) with the harness's Lite0 read offline from a private hub cache. One test "
        f"image, anomalib's features vs the harness's: max abs difference {check['blocks.2']:.1e} (`blocks.2`), "
        f"{check['blocks.4']:.1e} (`blocks.4`), values up to {check['feature_scale']:.1f}; resize + normalisation: "
        f"{check['preprocessing']:.1e}.", "",
        "| side | wall s per grid | image AUROC, mean of the cells | anomalib s / side s | goal |",
        "|---|---|---|---|---|",
        f"| anomalib `Patchcore` (fit + predict, Engine) | {seconds['anomalib']:.0f} | {mean['anomalib']:.3f} | 1.0 | |",
        *rows, "",
        "Harness seconds inside its cells (sum over the grid, from results.csv): "
        + "; ".join(f"{name.replace('harness_', '')}: fit {result[name + '_phases']['fit']:.1f}, predict "
                    f"{result[name + '_phases']['predict']:.1f}" for name in HARNESS_SIDES)
        + ". The rest is start-up, decoding, metrics and the report child process.", "",
        "Image AUROC per cell. Equal AUROC (means within 0.01) with the harness's default patch features: "
        f"{'yes' if equal['harness_all'] else 'no'}; largest per-cell |harness - anomalib|: "
        f"{worst['harness_all']:.3f}, {worst['harness_concat']:.1e} with `{CONCAT}`, which computes anomalib's "
        f"(means within 0.01: {'yes' if equal['harness_concat'] else 'no'}); {worst['harness_door']:.1e} with "
        f"`{DOOR}` (anomalib's own module in harness cells); largest |door - concat|: "
        f"{max(abs(per_cell['harness_door'][c] - per_cell['harness_concat'][c]) for c in cells):.1e}.", "",
        f"| k | seed | anomalib | harness | harness `{CONCAT}` | harness `{DOOR}` | anomalib s (cell) | "
        "anomalib memory (patches) |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {k} | {s} | {anomalib[k, s]['image_auroc']:.3f} | {per_cell['harness_all'][k, s]:.3f} | "
          f"{per_cell['harness_concat'][k, s]:.3f} | {per_cell['harness_door'][k, s]:.3f} | "
          f"{anomalib[k, s]['seconds']:.0f} | {anomalib[k, s]['memory']} |"
          for k, s in cells],
        "", DIFFERENCES,
    ]
    if len(cells) < result["cells"]:
        lines += ["", "**Incomplete:** not every cell finished on every side."]
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
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), args.worker[1], args.worker[2])
        return
    if not args.anomalib_python:
        parser.error("--anomalib-python is required (anomalib is not installed by this bench)")
    result = compare(args)
    print(json.dumps({key: result[key] for key in ("check", "seconds", "load")}))
    if args.write:
        from bench.markdown import write_section

        write_section("vs_anomalib", render(result, ".venv/bin/python -m bench.vs_anomalib --anomalib-python "
                                            f"/tmp/anomalib-venv/bin/python --work {args.work} --write"))


if __name__ == "__main__":
    main()
