"""`python -m submission verify ARCHIVE`: checksums, then the bundle's entry point run in a separate
process from the unpacked folder against (1) the run's stored per-image scores for one cell and
(2) the installed harness computing the same cell in process (with the bundle's weight files) on an image that
was not in the run, so a bundle that only replays stored scores fails. A bundle that serves only some categories
(bundle.json `serves`) must refuse another one at `setup` with an error naming it."""
from __future__ import annotations

import contextlib
import csv
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from methods.features import FeatureCache
from methods.base import Method
from methods.cell import CellSetting, fit_cell
from methods.registry import build_variant
from runfolder.reading import RunFolderError, read_json, read_results_file
from runfolder.schema import RunPaths, manifest_key
from submission.datasets.images import ImageStore
from submission.datasets.readers import read_category
from submission.datasets.records import Category
from submission.errors import HarnessError
from submission.packaging import unpack_checked
from submission.bundle_plugins import load_bundle_plugins
from submission.cell_worker import auxiliary_categories
from submission.sampling import support_indices

RTOL, ATOL = 1e-3, 1e-4  # the evaluator's batch vs the run's batches changes float summation order

CHILD = '''
import sys, torch
bundle = sys.argv[1]
sys.path.insert(0, bundle)
import os
import model
if os.path.isdir(os.path.join(bundle, "methods")):  # a harness bundle (a kit folder carries no harness)
    import methods
    if not methods.__file__.startswith(bundle):
        raise SystemExit(f"entry point imported the harness from {methods.__file__}, not from the bundle")
inputs = torch.load(sys.argv[2])
seed, category = inputs["seed"], inputs["category"]
m = model.Model()  # as the VAND evaluator: no arguments, eval(), to(DEVICE), setup per (seed, k) on one instance
manifest = getattr(m, "bundle", {})  # bundle.json as a harness entry point holds it (a kit model has none)
m.eval()
m = m.to("cpu")
assert getattr(m, "weights_url", lambda category: None)(category) is None
torch.manual_seed(seed + 1)  # a decoy cell first: setup must forget it
m.setup({"few_shot_samples": inputs["support"].flip(-1), "dataset_category": category})
m(inputs["images"][:1])
torch.manual_seed(seed)
m.setup({"few_shot_samples": inputs["support"], "dataset_category": category})
output = m(inputs["images"])  # one batch, as the evaluator's DataLoader feeds it
assert output.pred_score.shape == (len(inputs["images"]),), output.pred_score.shape
torch.save(output.pred_score.cpu(), sys.argv[3])
for plugin in manifest.get("plugins", []):  # outside code comes from the bundle, never from its first place
    name = plugin.get("module") or next((n for n, mod in list(sys.modules.items()) if n.startswith("fewshot_ad_plugin_")
                                         and str(getattr(mod, "__file__", "")).endswith(plugin["path"])), None)
    where = str(getattr(sys.modules.get(name), "__file__", None))
    if not where.startswith(bundle):
        raise SystemExit(f"plugin {plugin['source']} imported from {where}, not from the bundle")
if manifest.get("serves"):  # a category it holds no meta-trained model for: a clear error at setup
    try:
        m.setup({"few_shot_samples": inputs["support"], "dataset_category": "not-a-served-category"})
    except ValueError as error:
        assert "not-a-served-category" in str(error), error
    else:
        raise SystemExit("setup accepted a category the bundle cannot serve")
'''


@dataclass(frozen=True)
class VerifyReport:
    """What verify compared: the cell, the stored and bundle scores, the in-process check."""

    cell: str
    stored: list[float]
    bundle: list[float]
    fresh_bundle: float
    fresh_installed: float
    rules: str = ""  # bundle.json's VAND rules statement


def _fit_installed(bundle_info: dict, bundle: Path, support: torch.Tensor, category: Category, seed: int,
                   store: ImageStore) -> Method:
    """The same cell fitted by the installed harness as the runner fits it: the bundle's artifacts (e.g. RegAD's
    meta-trained model) and, for methods trained off the target, the run's auxiliary categories."""
    weights = {name: bundle / path for name, path in bundle_info["weights"].items()}  # the files the bundle ships
    with _clip_configs(bundle_info):
        specs = [*bundle_info["members"], bundle_info["method"]]
        if bundle_info.get("kit"):  # a kit folder: the adapter on the bundle's own model.py
            specs = [f"vand:{bundle}"]
        variants = [build_variant(spec, bundle_info["preset"]) for spec in specs]
        setting = CellSetting(category.name, seed, torch.device("cpu"), FeatureCache(torch.device("cpu"), weights),
                              bundle / "artifacts",
                              lambda source: auxiliary_categories(source, category, category.format, store))
        return fit_cell(variants, support, setting)[specs[-1]].method


@contextlib.contextmanager
def _clip_configs(bundle_info: dict):
    """The bundle's CLIP model configs (models open_clip does not know by name) known while the installed harness
    fits the cell, then forgotten again."""
    from methods.clip_towers import EXTRA_MODEL_CONFIGS

    added = [name for name in bundle_info.get("clip_configs", {}) if name not in EXTRA_MODEL_CONFIGS]
    EXTRA_MODEL_CONFIGS.update({name: bundle_info["clip_configs"][name] for name in added})
    try:
        yield
    finally:
        for name in added:
            EXTRA_MODEL_CONFIGS.pop(name, None)


def _check_weight_digests(archive: Path, bundle: Path, info: dict) -> None:
    """Each shipped weight file is the one the run recorded (its SHA256SUMS line, already checked, against the
    digest in bundle.json)."""
    sums = {name: digest for digest, _, name in
            (line.partition("  ") for line in (bundle / "SHA256SUMS").read_text().splitlines())}
    for name, digest in info.get("weight_digests", {}).items():
        if sums.get(info["weights"][name]) != digest:
            raise HarnessError(f"{archive}: {info['weights'][name]} is not the {name!r} weight file the run used")


def verify(archive: Path, n_images: int = 20) -> VerifyReport:  # > vand_model.CHUNK: the chunked path runs
    """Check a bundle archive; raises HarnessError naming the first problem."""
    with tempfile.TemporaryDirectory() as scratch:
        bundle = unpack_checked(Path(archive), Path(scratch))
        info = json.loads((bundle / "bundle.json").read_text())
        _check_weight_digests(Path(archive), bundle, info)
        load_bundle_plugins(bundle, info)  # the installed side of the comparison needs the outside method too
        run = RunPaths(bundle / "run")
        try:
            config, manifest = read_json(run.config), read_json(run.manifest)
            results = read_results_file(run.results).rows
        except RunFolderError as error:
            raise HarnessError(f"{archive}: {error}") from None
        row = next((r for r in results if r["method"] == info["method"] and r["status"] == "ok"), None)
        if row is None:
            raise HarnessError(f"{archive}: its results.csv has no ok row of {info['method']!r}")
        category_name, k, seed = row["category"], int(row["k"]), int(row["seed"])
        data_root = Path(config["data"])
        category = read_category(data_root, category_name, config["arguments"]["format"])
        store = ImageStore(info["image_size"])
        indices = support_indices(len(category.train_good), k, seed)
        if [category.train_good[i].name for i in indices] != manifest[category_name][manifest_key(k, seed)]:
            raise HarnessError(f"{data_root / category_name}: support set differs from the bundle's manifest")
        support = store.stack([category.train_good[i] for i in indices])
        with open(run.scores(info["dirs"][info["method"]], k, seed, category_name), newline="") as handle:
            stored_rows = list(csv.DictReader(handle))[:n_images]
        by_name = {item.name: item.path for item in category.test}  # for score CSVs written before `path`
        images = store.stack([data_root / r["path"] if r.get("path") else by_name[r["image"]] for r in stored_rows])
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
            raise HarnessError(f"{archive}: bundle scores {bundle_scores[:-1].tolist()} differ from the run's "
                               f"{stored.tolist()}")
        fresh = float(_fit_installed(info, bundle, support, category, seed, store).predict(unseen).scores[0])
    if abs(fresh - float(bundle_scores[-1])) > ATOL + RTOL * abs(fresh):
        raise HarnessError(f"{archive}: on an unseen image the bundle gives {float(bundle_scores[-1])}, "
                           f"the installed harness {fresh}")
    return VerifyReport(f"{category_name} k={k} seed={seed}", stored.tolist(), bundle_scores[:-1].tolist(),
                        float(bundle_scores[-1]), fresh, info.get("vand_rules", {}).get("statement", ""))
