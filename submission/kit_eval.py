"""`python -m submission evaluate ARCHIVE --data LOCO_ROOT`: a bundle evaluated the way the VAND 3.0 kit
evaluates a submission, writing the kit's `metrics.csv` and `results.json`.

What the official evaluator (cvpr-vand/challenge, src/eval/evaluate.py, main 2025) does, and what this does:
- Per category a fresh `Model()` (no arguments), `eval()`, `weights_url(...)`, `to(DEVICE)`; then for every seed and
  every k on that instance: `torch.manual_seed(seed)`, `randperm(len(train))[:k]` over the category's train/good
  images (sorted by name), `setup({"few_shot_samples": [k,3,256,256] on DEVICE, "dataset_category": name})`, and
  the test set (good = 0, logical and structural anomalies = 1) from a `DataLoader` (shuffle off) under
  `torch.no_grad()`, scored from `output.pred_score`. Loop order category > seed > k, as the kit's.
- Batches: `--batch-size` (128) first; on CUDA out-of-memory the cell is redone with half the batch and the size that
  worked is kept for that k, as the kit's `auto_batch_size` does (one revision of the kit starts it at 1; pass
  `--batch-size 1` to mimic that one). Loader workers: 0 here (the kit uses 4; the pixels are the same).
- Pixels: the kit's loading, written here without anomalib: PIL RGB -> float [0,1] -> `torchvision.transforms.v2.
  Resize((256, 256))`, always 256 px whatever size the bundle's run used (the kit feeds 256 px to every entry).
  The harness's own `load_image` gives the same pixels (tests/submission/test_vand_loading.py).
- `weights_url`: the kit passes the literal string "category" (its `get_model("category")`); this passes the real
  category name. A bundle that asks to download weights is an error here: evaluation runs offline (a Docker image
  with `--network none`), so weights must ship inside the bundle, as the harness's bundles do.
- Metrics: F1-max per (seed, k, category) with `metrics.f1_max` (anomalib's `_F1Max` adds 1e-10 to its
  denominators: differences of that order); mean over seeds per (k, category), over categories per k; AUFC with
  `metrics.aufc` (sklearn `auc` over the actual k, and normalised by k_max - k_min, which equals the kit's auc over
  rescaled k); `avg_image_score` = mean of the per-k F1. `metrics.csv` is written as the kit's pandas `to_csv`
  writes it (a leading unnamed index column, then seed, k_shot, category, image_score). With one k value the kit's
  `auc` raises; here `aufc` and `normalized_aufc` are null.

The entry point runs in a child process from the unpacked bundle folder (its own harness copy first on sys.path,
checked) and only receives image paths; this process reads the dataset layout, draws nothing and computes the
metrics. Anything the bundle prints goes to stderr; the child reports on its stdout as JSON lines.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from metrics import aufc, f1_max
from submission.datasets.readers import list_categories, read_category
from submission.errors import HarnessError
from submission.packaging import unpack_checked

KIT_CATEGORIES = ("breakfast_box", "juice_bottle", "pushpins", "screw_bag", "splicing_connectors")
KIT_SHOTS = (1, 2, 4, 8)
KIT_SEEDS = (42, 0, 1234)
KIT_IMAGE_SIZE = 256
KIT_BATCH_SIZE = 128
METRICS_CSV, RESULTS_JSON = "metrics.csv", "results.json"

CHILD = r'''
import json, os, sys
events = os.fdopen(os.dup(1), "w", buffering=1)  # the parent reads JSON lines here
os.dup2(2, 1)                                     # whatever the bundle prints goes to stderr
bundle, plan_path = sys.argv[1], sys.argv[2]
sys.path.insert(0, bundle)
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF
import model as entry
for name in ("submission", "methods"):
    module = sys.modules.get(name)
    if module is not None and not str(module.__file__).startswith(bundle):
        raise SystemExit(f"the entry point imported {name} from {module.__file__}, not from the bundle")
plan = json.loads(open(plan_path).read())
device = torch.device(plan["device"])
resize = v2.Resize((plan["image_size"], plan["image_size"]))

def load(path):  # the kit's pixels: RGB -> float [0,1] -> v2.Resize((256, 256))
    with Image.open(path) as image:
        return resize(TF.to_dtype(TF.to_image(image.convert("RGB")), torch.float32, scale=True))

class Images(Dataset):
    def __init__(self, paths):
        self.paths = paths
    def __len__(self):
        return len(self.paths)
    def __getitem__(self, index):
        return load(self.paths[index])

def emit(**event):
    events.write(json.dumps(event) + "\n")

def cell(model, category, seed, k, batch_size):
    torch.manual_seed(seed)
    indices = torch.randperm(len(category["train"]))[:k].tolist()
    support = torch.stack([load(category["train"][i]) for i in indices]).to(device)
    model.setup({"few_shot_samples": support, "dataset_category": category["name"]})
    model.eval()
    scores = []
    with torch.no_grad():
        for images in DataLoader(Images(category["test"]), batch_size=batch_size, shuffle=False,
                                 num_workers=plan["workers"]):
            score = model(images.to(device)).pred_score.detach().float().reshape(-1).cpu()
            if len(score) != len(images):
                raise SystemExit(f"pred_score has {len(score)} values for a batch of {len(images)} images")
            scores += score.tolist()
            emit(event="batch", n=len(images))
    return scores

batch_sizes = {}  # k -> the batch size that worked, as the kit keeps it
for category in plan["categories"]:
    model = entry.Model()
    model.eval()
    url = model.weights_url(category["name"])
    if url is not None:
        raise SystemExit(f"weights_url({category['name']!r}) asks to download {url}; this evaluation runs offline: "
                         "ship the weights inside the bundle")
    model = model.to(device)
    for seed in plan["seeds"]:
        for k in plan["shots"]:
            size = batch_sizes.get(k, plan["batch_size"])
            while True:
                emit(event="start", category=category["name"], seed=seed, k=k, batch_size=size)
                try:
                    scores = cell(model, category, seed, k, size)
                    break
                except RuntimeError as error:  # the kit's auto_batch_size: halve on CUDA out-of-memory
                    if k in batch_sizes or size == 1 or "out of memory" not in str(error).lower():
                        raise
                    torch.cuda.empty_cache()
                    size //= 2
            batch_sizes[k] = size
            emit(event="cell", category=category["name"], seed=seed, k=k, scores=scores)
'''


@dataclass(frozen=True)
class KitCell:
    """One (seed, k, category) of the kit's metrics.csv, with the per-image scores behind it."""

    seed: int
    k: int
    category: str
    image_score: float  # F1-max
    scores: tuple[float, ...]  # in the order of KitResult.test_paths[category]


@dataclass(frozen=True)
class KitResult:
    """What results.json holds, the cells of metrics.csv, and where both were written."""

    cells: tuple[KitCell, ...]
    per_k: dict[int, float]  # mean over categories of the mean over seeds
    aufc: float | None
    normalized_aufc: float | None
    avg_image_score: float
    test_paths: dict[str, tuple[Path, ...]]
    out: Path

    def results(self) -> dict[str, float | None]:
        return {"aufc": self.aufc, "normalized_aufc": self.normalized_aufc, "avg_image_score": self.avg_image_score}


def _check_options(shots: Sequence[int], seeds: Sequence[int], batch_size: int, device: str) -> str:
    if not shots:
        raise HarnessError("--shots: give at least one k")
    if any(k < 1 for k in shots) or len(set(shots)) != len(shots):
        raise HarnessError(f"--shots {' '.join(map(str, shots))}: each k must be at least 1 and given once")
    if not seeds or len(set(seeds)) != len(seeds):
        raise HarnessError("--seeds: give at least one seed, each once")
    if batch_size < 1:
        raise HarnessError(f"--batch-size {batch_size}: must be at least 1")
    from submission.cell_worker import resolve_device  # the run's rule: auto = CUDA when present, cuda without one = error

    return resolve_device(device).type


def _plan_categories(data: Path, categories: Sequence[str], shots: Sequence[int]) -> list[dict]:
    """The kit's categories (or the ones asked for) read in LOCO layout, checked before the bundle starts."""
    present = list_categories(data)  # a missing data folder is an error here
    names = list(categories) or (list(KIT_CATEGORIES) if set(KIT_CATEGORIES) <= set(present) else present)
    plan = []
    for name in names:
        category = read_category(data, name, "loco")
        labels = [item.label for item in category.test]
        if not labels or all(labels) or not any(labels):
            raise HarnessError(f"{category.root}/test: F1-max needs good and anomalous test images "
                               f"({labels.count(0)} good, {len(labels) - labels.count(0)} anomalous)")
        if max(shots) > len(category.train_good):
            raise HarnessError(f"--shots {max(shots)}: {category.root}/train/good holds only "
                               f"{len(category.train_good)} images")
        plan.append({"name": name, "train": [str(p) for p in category.train_good],
                     "test": [str(item.path) for item in category.test], "labels": labels})
    return plan


def _run_child(bundle: Path, plan: dict, plan_path: Path, archive: Path, console: Console) -> dict:
    """Run the entry point in a child process; returns {(category, seed, k): scores}."""
    plan_path.write_text(json.dumps(plan))
    total = sum(len(c["test"]) for c in plan["categories"]) * len(plan["seeds"]) * len(plan["shots"])
    scores: dict[tuple[str, int, int], list[float]] = {}
    done_in_cell = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with tempfile.TemporaryFile("w+") as stderr, Progress(*columns, console=console) as progress:
        task = progress.add_task("starting the entry point", total=total)
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(bundle), str(plan_path)], cwd=bundle,
                                 stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert child.stdout is not None
        for line in child.stdout:
            event = json.loads(line)
            if event["event"] == "start":
                progress.advance(task, -done_in_cell)  # a cell redone with a smaller batch counts once
                done_in_cell = 0
                progress.update(task, description=f"{event['category']} seed {event['seed']} k={event['k']} "
                                                  f"(batch {event['batch_size']})")
            elif event["event"] == "batch":
                done_in_cell += event["n"]
                progress.advance(task, event["n"])
            else:
                scores[(event["category"], event["seed"], event["k"])] = event["scores"]
                done_in_cell = 0
        child.wait()
        if child.returncode != 0:
            stderr.seek(0)
            lines = [line.strip() for line in stderr.read().splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit {child.returncode}"
            raise HarnessError(f"{archive}: the bundle's entry point failed: {reason}")
    return scores


def evaluate(archive: Path, data: Path, *, categories: Sequence[str] = (), shots: Sequence[int] = KIT_SHOTS,
             seeds: Sequence[int] = KIT_SEEDS, out: Path = Path("."), batch_size: int = KIT_BATCH_SIZE,
             device: str = "auto", console: Console | None = None, workers: int = 0) -> KitResult:
    """Evaluate a bundle archive (or a VAND kit submission folder holding model.py) on a LOCO-layout root as the
    VAND kit does; writes metrics.csv and results.json into `out`. Raises HarnessError naming the first problem (data, options, archive, entry point)."""
    console = console or Console()
    archive, data, out = Path(archive), Path(data).resolve(), Path(out)
    resolved_device = _check_options(shots, seeds, batch_size, device)
    plan_categories = _plan_categories(data, categories, shots)
    with tempfile.TemporaryDirectory() as scratch:
        bundle = archive.resolve() if archive.is_dir() else unpack_checked(archive, Path(scratch))  # or a kit folder
        if not (bundle / "model.py").is_file():
            raise HarnessError(f"{archive}: bundle/model.py (the entry point) is missing")
        info_path = bundle / "bundle.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        if info.get("image_size", KIT_IMAGE_SIZE) != KIT_IMAGE_SIZE:
            console.print(f"note: the bundle's run used {info['image_size']} px images; the kit feeds "
                          f"{KIT_IMAGE_SIZE} px, and so does this evaluation", highlight=False)
        plan = {"categories": plan_categories, "seeds": list(seeds), "shots": list(shots), "batch_size": batch_size,
                "device": resolved_device, "image_size": KIT_IMAGE_SIZE, "workers": workers}
        console.print(f"evaluating {archive} on {data}: {', '.join(c['name'] for c in plan_categories)}; "
                      f"k {' '.join(map(str, shots))}; seeds {' '.join(map(str, seeds))}; {resolved_device}",
                      highlight=False)
        scores = _run_child(bundle, plan, Path(scratch) / "plan.json", archive, console)
    cells = []
    for category in plan_categories:  # the kit's order: category > seed > k
        for seed in seeds:
            for k in shots:
                values = scores.get((category["name"], seed, k))
                where = f"{category['name']} seed {seed} k={k}"
                if values is None or len(values) != len(category["labels"]):
                    raise HarnessError(f"{archive}: the entry point returned no or too few scores for {where}")
                if not all(math.isfinite(v) for v in values):
                    raise HarnessError(f"{archive}: the entry point returned a non-finite score for {where}")
                cells.append(KitCell(seed, k, category["name"], float(f1_max(category["labels"], values)),
                                     tuple(values)))
    by_k_category: dict[tuple[int, str], list[float]] = defaultdict(list)
    for cell in cells:
        by_k_category[(cell.k, cell.category)].append(cell.image_score)
    per_k_lists: dict[int, list[float]] = defaultdict(list)
    for (k, _), values in by_k_category.items():
        per_k_lists[k].append(fmean(values))
    per_k = {k: fmean(per_k_lists[k]) for k in sorted(per_k_lists)}
    area, normalised = aufc(list(per_k), list(per_k.values()))
    result = KitResult(tuple(cells), per_k, area, normalised, fmean(per_k.values()),
                       {c["name"]: tuple(Path(p) for p in c["test"]) for c in plan_categories}, out)
    _write(result)
    return result


def _write(result: KitResult) -> None:
    import pandas as pd

    result.out.mkdir(parents=True, exist_ok=True)
    rows = [{"seed": c.seed, "k_shot": c.k, "category": c.category, "image_score": c.image_score}
            for c in result.cells]
    pd.DataFrame(rows, columns=["seed", "k_shot", "category", "image_score"]).to_csv(result.out / METRICS_CSV)
    (result.out / RESULTS_JSON).write_text(json.dumps(result.results(), indent=2) + "\n")


def show(result: KitResult, console: Console) -> None:
    """The per-k mean F1-max and the final numbers, as a table."""
    table = Table(title="VAND kit evaluation (image F1-max)")
    table.add_column("k", justify="right")
    table.add_column("mean F1-max", justify="right")
    for k, value in result.per_k.items():
        table.add_row(str(k), f"{value:.4f}")
    console.print(table)

    def number(value: float | None) -> str:
        return "n/a (one k)" if value is None else f"{value:.4f}"

    console.print(f"AUFC {number(result.aufc)}; normalised AUFC {number(result.normalized_aufc)}; "
                  f"average image F1-max {result.avg_image_score:.4f}; written: {result.out / METRICS_CSV}, "
                  f"{result.out / RESULTS_JSON}", highlight=False)
