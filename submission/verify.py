"""`python -m submission verify ARCHIVE`: checksums, then the bundle's entry point run in a separate
process from the unpacked folder against (1) the run's stored per-image scores for one cell and
(2) the installed harness computing the same cell in process on an image that was not in the run,
so a bundle that only replays stored scores fails."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from methods.backbones import FeatureCache
from methods.base import FitContext, Method
from methods.registry import build_config
from submission.datasets.images import ImageStore
from submission.datasets.readers import read_category
from submission.errors import HarnessError
from submission.packaging import unpack_checked
from submission.sampling import support_indices

RTOL, ATOL = 1e-3, 1e-4  # batch size 1 (evaluator) vs the run's batches changes float summation order

CHILD = '''
import sys, torch
bundle = sys.argv[1]
sys.path.insert(0, bundle)
import methods, model
if not methods.__file__.startswith(bundle):
    raise SystemExit(f"entry point imported the harness from {methods.__file__}, not from the bundle")
inputs = torch.load(sys.argv[2])
torch.manual_seed(inputs["seed"])
m = model.Model(device="cpu")
assert m.weights_url(inputs["category"]) is None
m.setup({"few_shot_samples": inputs["support"], "dataset_category": inputs["category"]})
scores = torch.cat([m(image[None]).pred_score.cpu() for image in inputs["images"]])
torch.save(scores, sys.argv[3])
'''


@dataclass(frozen=True)
class VerifyReport:
    """What verify compared: the cell, the stored and bundle scores, the in-process check."""

    cell: str
    stored: list[float]
    bundle: list[float]
    fresh_bundle: float
    fresh_installed: float


def _fit_installed(bundle_info: dict, support: torch.Tensor, category: str, seed: int) -> Method:
    """The same cell fitted by the installed harness, as the runner does it."""
    features = FeatureCache(torch.device("cpu"))
    fitted: dict[str, Method] = {}
    contexts: dict[str, FitContext] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for spec in [*bundle_info["members"], bundle_info["method"]]:
            entry, config = build_config(spec, bundle_info["preset"])
            method = entry.factory(config)
            torch.manual_seed(seed)
            context = FitContext(torch.device("cpu"), torch.Generator().manual_seed(seed), features, None,
                                 Path(scratch) / bundle_info["dirs"][spec], dict(fitted), dict(contexts))
            method.fit(support, category=category, context=context)
            fitted[spec], contexts[spec] = method, context
    return fitted[bundle_info["method"]]


def verify(archive: Path, n_images: int = 3) -> VerifyReport:
    """Check a bundle archive; raises HarnessError naming the first problem."""
    with tempfile.TemporaryDirectory() as scratch:
        bundle = unpack_checked(Path(archive), Path(scratch))
        info = json.loads((bundle / "bundle.json").read_text())
        config = json.loads((bundle / "run" / "config.json").read_text())
        manifest = json.loads((bundle / "run" / "manifest.json").read_text())
        with open(bundle / "run" / "results.csv", newline="") as handle:
            row = next(r for r in csv.DictReader(handle) if r["method"] == info["method"] and r["status"] == "ok")
        category_name, k, seed = row["category"], int(row["k"]), int(row["seed"])
        data_root = Path(config["data"])
        category = read_category(data_root, category_name, config["arguments"]["format"])
        store = ImageStore(info["image_size"])
        indices = support_indices(len(category.train_good), k, seed)
        if [category.train_good[i].name for i in indices] != manifest[category_name][f"k{k}_s{seed}"]:
            raise HarnessError(f"{data_root / category_name}: support set differs from the bundle's manifest")
        support = store.stack([category.train_good[i] for i in indices])
        scores_csv = bundle / "run" / "scores" / info["dirs"][info["method"]] / f"k{k}_s{seed}" / f"{category_name}.csv"
        with open(scores_csv, newline="") as handle:
            stored_rows = list(csv.DictReader(handle))[:n_images]
        by_name = {item.name: item.path for item in category.test}
        images = store.stack([by_name[r["image"]] for r in stored_rows])
        unseen = images[:1].flip(-1) * 0.97  # an image that was not in the run
        inputs, outputs = Path(scratch) / "inputs.pt", Path(scratch) / "outputs.pt"
        torch.save({"support": support, "images": torch.cat([images, unseen]), "seed": seed, "category": category_name},
                   inputs)
        child = subprocess.run([sys.executable, "-c", CHILD, str(bundle), str(inputs), str(outputs)],
                               cwd=bundle, capture_output=True, text=True)
        if child.returncode != 0:
            raise HarnessError(f"{archive}: the bundle's entry point failed: {child.stderr.strip().splitlines()[-1:]}")
        bundle_scores = torch.load(outputs)
    stored = torch.tensor([float(r["score"]) for r in stored_rows])
    if not torch.allclose(bundle_scores[:-1].double(), stored.double(), rtol=RTOL, atol=ATOL):
        raise HarnessError(f"{archive}: bundle scores {bundle_scores[:-1].tolist()} differ from the run's {stored.tolist()}")
    fresh = float(_fit_installed(info, support, category_name, seed).predict(unseen).scores[0])
    if abs(fresh - float(bundle_scores[-1])) > ATOL + RTOL * abs(fresh):
        raise HarnessError(f"{archive}: on an unseen image the bundle gives {float(bundle_scores[-1])}, "
                           f"the installed harness {fresh}")
    return VerifyReport(f"{category_name} k={k} seed={seed}", stored.tolist(), bundle_scores[:-1].tolist(),
                        float(bundle_scores[-1]), fresh)
