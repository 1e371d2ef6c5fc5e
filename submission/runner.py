"""The grid of run cells (category x k x seed x method variant): fit, predict, evaluate, write rows.

Every finished cell is one atomic row of results.csv; rerunning into the same folder skips the cells
whose row has status=ok. Aggregation lives in `leaderboard/`, not here.
"""
from __future__ import annotations

import json
import os
import platform
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import timm
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from methods.backbones import FeatureCache
from methods.base import AuxiliaryCategory, FittedMember, FusingMethod, Method, Prediction
from methods.cell import CellSetting, fit_method, in_fitting_order
from runfolder.schema import CONFIG_JSON, LOGICAL, STRUCTURAL, cell_key, relative_image_path, variant_dirname
from submission.cell_metrics import GroundTruth, image_metrics, load_ground_truth, maps_at_mask_resolution, pixel_metrics
from submission.config import RunConfig
from submission.datasets.images import ImageStore
from submission.datasets.procedural import ProceduralConfig, ensure_dataset
from submission.datasets.readers import list_categories, read_category
from submission.datasets.records import Category
from submission.errors import HarnessError
from submission.preflight import Variant, preflight
from submission.run_folder import RunFolder
from submission.sampling import support_indices

DEFAULT_CACHE = Path(os.environ.get("FEWSHOT_AD_CACHE", Path.home() / ".cache" / "fewshot_ad"))  # datasets, kept across runs


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HarnessError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise HarnessError(f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def default_run_dir() -> Path:
    """runs/<timestamp> under the working directory."""
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def load_categories(config: RunConfig, console: Console) -> list[Category]:
    """The categories of the run, read and checked before any cell starts."""
    data, fmt = config.data, config.format
    if data is None:
        split = config.procedural_split
        console.print(f"[dim]no --data: using the embedded procedural dataset, {split} split[/dim]")
        data, fmt = ensure_dataset(DEFAULT_CACHE / "procedural", ProceduralConfig(split=split)), "loco"
    names = list(config.categories) or list_categories(Path(data))
    return [read_category(Path(data), name, fmt) for name in names]


class CategoryData:
    """A category's pixels and ground truth, loaded once per run."""

    def __init__(self, category: Category, store: ImageStore) -> None:
        self.category = category
        self.store = store
        loaded = [store.get(item.path) for item in category.test]
        self.test_images = torch.stack([image for image, _ in loaded])
        self.truth: GroundTruth = load_ground_truth(category, [size for _, size in loaded])

    def support(self, indices: list[int]) -> torch.Tensor:
        return self.store.stack([self.category.train_good[i] for i in indices])


def check_auxiliary_sources(variants: list[Variant], targets: list[Category]) -> None:
    """Before any cell: a method trained off the target (RegAD) with `source=dataset` or a folder needs, for every
    target category, another category there (the embedded procedural source always has them)."""
    for variant in variants:
        source = getattr(variant.config, "source", "procedural")
        if not variant.entry.uses_auxiliary or source == "procedural":
            continue
        for target in targets:
            root = target.root.parent if source == "dataset" else Path(source)
            others = [n for n in list_categories(root)
                      if (root / n).resolve() != target.root.resolve() and n != target.name]
            if not others:
                raise HarnessError(f"{variant.spec}: source={source!r} ({root}) has no category other than "
                                   f"{target.name!r} to train on")


def auxiliary_categories(source: str, target: Category, fmt: str, store: ImageStore,
                         procedural_split: str = "test") -> list[AuxiliaryCategory]:
    """Normal train images of every category of `source` except the target, for methods trained off it.

    source: `procedural` (the embedded dataset in its realisation `procedural_split`, the run's: a dev run
    meta-trains on the dev split's other categories, a reported run on the test split's; never the target, so
    sharing the run's realisation leaks nothing; always available), `dataset` (the other categories of
    the run's dataset: the paper's leave-one-out protocol) or a path to another dataset folder
    (read in the run's format `fmt`)."""
    if source == "procedural":
        root, fmt = ensure_dataset(DEFAULT_CACHE / "procedural", ProceduralConfig(split=procedural_split)), "loco"
    elif source == "dataset":
        root, fmt = target.root.parent, target.format
    else:
        root = Path(source)
    categories = [read_category(root, name, fmt) for name in list_categories(root)]
    others = [c for c in categories if c.root.resolve() != target.root.resolve() and c.name != target.name]
    if not others:
        raise HarnessError(f"{root}: no category other than {target.name!r} to train on (source={source!r})")
    return [AuxiliaryCategory(c.name, store.stack(c.train_good)) for c in others]


class NonFiniteOutput(ValueError):
    """A method returned NaN or infinite scores or maps (its cell fails; the run goes on)."""


def check_prediction(prediction: Prediction, count: int) -> None:
    """Raise `NonFiniteOutput` unless scores are [count] and scores, maps and extras are finite."""
    if tuple(prediction.scores.shape) != (count,):
        raise NonFiniteOutput(f"scores of shape {tuple(prediction.scores.shape)}, expected ({count},)")
    parts = {"scores": prediction.scores, "maps": prediction.maps, **prediction.extras}
    for name, values in parts.items():
        if values is not None and not bool(torch.isfinite(values).all()):
            bad = int((~torch.isfinite(values)).sum())
            raise NonFiniteOutput(f"{bad} non-finite values in {name}")


def predict_all(method: Method, images: torch.Tensor, batch_size: int, device: torch.device) -> Prediction:
    """Run `method.predict` over the test images in batches; results on the CPU."""
    parts = [method.predict(images[i:i + batch_size].to(device)) for i in range(0, len(images), batch_size)]
    maps = None if parts[0].maps is None else torch.cat([p.maps.float().cpu() for p in parts])
    extras = {key: torch.cat([p.extras[key].float().cpu() for p in parts]) for key in parts[0].extras}
    return Prediction(torch.cat([p.scores.float().cpu() for p in parts]), maps, extras)


def fused_members(fusions: list[Variant], variants: list[Variant]) -> set[str]:
    """Specs of the member variants these fusing variants combine: those their `members` option names (by spec or
    method name), or every non-fusing variant when it names none."""
    needed: set[str] = set()
    for fusion in fusions:
        wanted = getattr(fusion.config, "members", ()) or ()
        needed |= {v.spec for v in variants if not v.entry.needs_fitted
                   and (not wanted or v.spec in wanted or v.entry.name in wanted)}
    return needed


def _base_row(variant: Variant, preset: str, data: CategoryData, k: int, seed: int) -> dict[str, Any]:
    kinds = data.truth.kinds
    has_kinds = any(kind is not None for kind in kinds)
    return {
        "method": variant.spec, "preset": preset, "category": data.category.name, "k": k, "seed": seed,
        "n_good": int((data.truth.labels == 0).sum()),
        "n_logical": sum(kind == LOGICAL for kind in kinds) if has_kinds else None,
        "n_structural": sum(kind == STRUCTURAL for kind in kinds) if has_kinds else None,
    }


class Runner:
    """Runs every cell of a `RunConfig` into a run folder."""

    def __init__(self, config: RunConfig, console: Console | None = None) -> None:
        self.config = config
        self.console = console or Console()
        self.preset = config.resolved_preset
        self.device = resolve_device(config.device)
        self.run_dir = Path(config.out or default_run_dir())  # created once the pre-flight has passed
        self.folder: RunFolder | None = None
        self.features = FeatureCache(self.device, config.weights, config.pretrained, config.batch_size,
                                     precision=config.precision)

    def run(self) -> Path:
        """Pre-flight, then every cell; returns the run folder."""
        variants = preflight(self.config.methods, self.preset, self.config.weights, self.config.pretrained)
        for variant in variants:
            for message in variant.missing:
                self.console.print(f"[yellow]skipped {variant.spec} ({self.preset}):[/yellow] {message}")
        runnable = [v for v in variants if v.runnable]
        if not runnable:
            raise HarnessError("no requested method can run under preset "
                               f"{self.preset!r}; see the messages above (or use --preset offline)")
        categories = load_categories(self.config, self.console)
        for category in categories:  # check k against every pool before any cell runs
            for k in self.config.shots:
                if k > len(category.train_good) or k < 1:
                    raise HarnessError(f"{category.root}: --shots {k} is not within 1..{len(category.train_good)} "
                                       "(the size of its support pool)")
        check_auxiliary_sources(runnable, categories)
        self.folder = RunFolder(self.run_dir)
        previous = self.folder.read_json(CONFIG_JSON)  # {} for a new run folder
        recorded = previous.get("procedural_split", "test")  # folders from before the split read the test one
        if previous and recorded != self.config.procedural_split:  # resuming must not mix the two realisations
            raise HarnessError(f"--out {self.run_dir}: a run on the procedural {recorded} split; "
                               f"--procedural-split {self.config.procedural_split} needs another run folder")
        self._write_config(variants, categories)
        done = self.folder.finished_cells()
        store = ImageStore(self.config.image_size)
        cells = [(c, k, s) for c in categories for k in self.config.shots for s in self.config.seeds]
        if self.config.shard is not None:  # a job scheduler runs shards on many machines, then merges them
            index, count = self.config.shard
            cells = cells[index::count]
        total = len(cells) * len(variants)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=self.console, transient=False) as progress:
            task = progress.add_task("cells", total=total)
            current: CategoryData | None = None
            for category, k, seed in cells:
                if current is None or current.category is not category:
                    progress.update(task, description=f"loading {category.name}")
                    current = CategoryData(category, store)
                self._run_cell(current, k, seed, variants, done, progress, task)
        self._write_config(variants, categories)  # again, with the final backbone pass counts
        return self.folder.root

    def _run_cell(self, data: CategoryData, k: int, seed: int, variants: list[Variant], done: set,
                  progress: Progress, task: Any) -> None:
        rows = {v.spec: _base_row(v, self.preset, data, k, seed) for v in variants}
        pending = {spec for spec, row in rows.items() if cell_key(row) not in done}
        if not pending:
            progress.advance(task, len(variants))
            return
        # a pending fusion needs its members fitted in this cell, even those finished earlier
        needed = fused_members([v for v in variants if v.spec in pending and v.entry.needs_fitted], variants)
        indices = support_indices(len(data.category.train_good), k, seed)  # seeds torch as the VAND kit does
        self._record_manifest(data.category, k, seed, indices)
        support = data.support(indices)
        category = data.category
        setting = CellSetting(category.name, seed, self.device, self.features, self.folder.paths.artifacts_root,
                              lambda source: auxiliary_categories(source, category, self.config.format, data.store,
                                                                  self.config.procedural_split))
        members: dict[str, FittedMember] = {}
        predictions: dict[str, Prediction] = {}  # members' test predictions, reused by fusion
        for variant in in_fitting_order(variants):
            progress.update(task, description=f"{variant.spec} {category.name} k={k} seed={seed}")
            row, todo = rows[variant.spec], variant.spec in pending
            if not variant.runnable:
                if todo:
                    self.folder.append_result({**row, "status": "skipped",
                                               "method_info": json.dumps({"missing": variant.missing})})
            elif todo or variant.spec in needed:
                fitted = self._fit_and_score(variant, data, support, setting, members, predictions, row, score=todo)
                if fitted is not None:
                    members[variant.spec] = fitted
            progress.advance(task)

    def _fit_and_score(self, variant: Variant, data: CategoryData, support: torch.Tensor, setting: CellSetting,
                       members: dict[str, FittedMember], predictions: dict[str, Prediction], row: dict[str, Any],
                       score: bool) -> FittedMember | None:
        """Fit one variant on the support set; with `score`, predict the test set (kept in `predictions`) and
        write its row. Anything the method raises, or non-finite output, fails this cell only."""
        info: dict[str, Any] = {"preset": self.preset, "weights": variant.weights}
        if variant.entry.uses_auxiliary and getattr(variant.config, "source", None) == "procedural":
            info["auxiliary_split"] = self.config.procedural_split  # the procedural realisation it trains off
        try:
            fitted = fit_method(variant.method, support, setting, members)
            if not score:
                return fitted
            start = time.perf_counter()
            with torch.no_grad():
                if isinstance(fitted.method, FusingMethod):
                    prediction = self._combine(fitted.method, data, predictions)
                else:
                    prediction = predict_all(fitted.method, data.test_images, self.config.batch_size, self.device)
            predict_s = time.perf_counter() - start
            check_prediction(prediction, len(data.test_images))
        except HarnessError:
            raise
        except Exception as error:  # a broken method fails its cell; the run goes on with the others
            self.console.print(f"[red]{variant.spec} failed on {setting.category} k={row['k']} seed={setting.seed}:"
                               f"[/red] {error!r}", highlight=False)
            failure = {**info, "error": repr(error), "trace": traceback.format_exc(limit=3)}
            if score:
                self.folder.append_result({**row, "status": "failed", "method_info": json.dumps(failure)})
            return None
        if not isinstance(fitted.method, FusingMethod):
            predictions[variant.spec] = prediction
        self._record_cell(variant, data, row["k"], setting.seed, prediction, row, fitted.fit_s, predict_s,
                          {**info, **fitted.method.info()})
        return fitted

    def _combine(self, fusion: FusingMethod, data: CategoryData, predictions: dict[str, Prediction]) -> Prediction:
        """A fusing method's test prediction from its members' (members finished in an earlier run of this
        folder were refitted but not scored: they are predicted here, once)."""
        for spec, member in fusion.members.items():
            if spec not in predictions:
                predictions[spec] = predict_all(member, data.test_images, self.config.batch_size, self.device)
        return fusion.combine(predictions)

    def _record_cell(self, variant: Variant, data: CategoryData, k: int, seed: int, prediction: Prediction,
                     row: dict[str, Any], fit_s: float, predict_s: float, info: dict[str, Any]) -> None:
        scores = prediction.scores.numpy()  # finite: checked by `check_prediction`
        metrics = image_metrics(data.truth, scores)
        maps = None
        if prediction.maps is not None and (data.truth.masks is not None or self.config.save_maps):
            maps = maps_at_mask_resolution(prediction.maps, data.truth.sizes)
            metrics.update(pixel_metrics(data.truth, maps, device=self.device))
        variant_dir = variant_dirname(variant.spec)
        items = data.truth.items
        dataset_root = data.category.root.parent
        self.folder.write_scores(variant_dir, k, seed, data.category.name, [i.name for i in items],
                                 [i.defect for i in items], data.truth.labels.tolist(), scores,
                                 {key: value.numpy() for key, value in prediction.extras.items()},
                                 [relative_image_path(i.path, dataset_root) for i in items])
        if self.config.save_maps and maps is not None:
            for item, anomaly_map in zip(items, maps):
                self.folder.write_map(variant_dir, k, seed, data.category.name, item.name, anomaly_map)
        self.folder.append_result({**row, **metrics, "status": "ok", "fit_s": fit_s, "predict_s": predict_s,
                                   "method_info": json.dumps(info, sort_keys=True, default=str)})

    def _record_manifest(self, category: Category, k: int, seed: int, indices: list[int]) -> None:
        self.folder.record_support(category.name, k, seed, [category.train_good[i].name for i in indices])

    def _write_config(self, variants: list[Variant], categories: list[Category]) -> None:
        config = asdict(self.config)
        self.folder.write_json(CONFIG_JSON, {
            "arguments": config,
            "preset": self.preset,
            "data": str(categories[0].root.parent) if categories else None,
            # the embedded dataset's realisation read (the data without --data; RegAD source=procedural)
            "procedural_split": self.config.procedural_split,
            "categories": [c.name for c in categories],
            "methods": {v.spec: {"config": asdict(v.config), "weights": v.weights, "missing": v.missing} for v in variants},
            "device": str(self.device),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__},
            "backbone_passes": dict(self.features.passes),
        })


def run(config: RunConfig, console: Console | None = None) -> Path:
    """Run the whole grid of a config; returns the run folder."""
    return Runner(config, console).run()
