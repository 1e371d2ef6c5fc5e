"""The one way a cell is computed, wherever it runs (this process, a Ray actor, a Slurm array job): a `CellWorker`
loads a category's images and ground truth, fits every variant the cell needs (members before fusion), predicts
the test set, checks the prediction and scores it. It writes nothing: each cell yields a `CellResult` for the
driver (`submission.runner`), the run folder's only writer.
"""
from __future__ import annotations

import copy
import json
import time
import traceback
from dataclasses import asdict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.markup import escape

from methods.base import AuxiliaryCategory, FittedMember, FusingMethod, LabelledAnomalies, Method, Prediction
from methods.cell import CellSetting, fit_method, in_fitting_order
from methods.features import FeatureCache
from methods.weight_files import WeightsMissing
from runfolder.schema import relative_image_path, variant_dirname
from submission.anomaly_shots import hold_out, kept_indices, labelled_anomalies, truth_subset
from submission.cell_metrics import GroundTruth, image_metrics, load_ground_truth, maps_at_mask_resolution, pixel_metrics
from submission.cell_records import CellJob, CellResult, CellTask, VariantOutcome, base_row
from submission.config import RunConfig
from submission.datasets.images import ImageStore
from submission.datasets.procedural import embedded_dataset
from submission.datasets.readers import other_categories, read_category
from submission.datasets.records import Category
from submission.errors import HarnessError
from submission.preflight import Variant, members_of
from submission.run_folder import ScoreFrame
from submission.sampling import support_indices


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HarnessError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise HarnessError(f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def feature_cache(config: RunConfig, device: torch.device) -> FeatureCache:
    """A worker's feature cache: the run's weights, batch size, precision and cache bound."""
    cache = {} if config.cache_gib is None else {"max_bytes": int(config.cache_gib * 2**30)}
    return FeatureCache(device, config.weights, config.pretrained, config.batch_size, precision=config.precision,
                        **cache)


class CategoryData:
    """A category's pixels and ground truth, loaded once per run."""

    def __init__(self, category: Category, store: ImageStore) -> None:
        self.category = category
        self.store = store
        loaded = store.get_many([item.path for item in category.test])  # decoded in parallel
        self.test_images = torch.stack([image for image, _ in loaded])
        self.truth: GroundTruth = load_ground_truth(category, [size for _, size in loaded])
        self._on_device: torch.Tensor | None = None

    def test_images_on(self, device: torch.device) -> torch.Tensor:
        """The test images on `device`, copied there once (not once per batch of every method and cell)."""
        if self._on_device is None or self._on_device.device != device:
            self._on_device = self.test_images.to(device)
        return self._on_device

    def support(self, indices: list[int]) -> torch.Tensor:
        return self.store.stack([self.category.train_good[i] for i in indices])

    def hold_out(self, m: int, seed: int) -> tuple["CategoryData", LabelledAnomalies | None, tuple[str, ...]]:
        """The cell's view of this data with its m labelled anomalies removed (`anomaly_shots.hold_out`), those
        anomalies with their masks (None for m = 0), and their ids; this data itself for m = 0."""
        held = hold_out(self.category, m, seed)
        if not held.indices:
            return self, None, ()
        anomalies = labelled_anomalies(self.test_images, self.truth, held.indices)
        view, keep = copy.copy(self), kept_indices(len(self.category.test), held.indices)
        view.category, view.test_images, view._on_device = held.category, self.test_images[keep], None
        view.truth = truth_subset(self.truth, keep)
        return view, anomalies, held.names


class CategoryLoader:
    """`CategoryData` of the categories in the order the cells visit them. With `prefetch`, the next category's
    test images and masks load in a background thread while the current one's cells run (an unreadable file
    still raises when its category is reached). Use as a context manager: leaving waits for that thread."""

    def __init__(self, order: list[Category], store: ImageStore, prefetch: bool) -> None:
        self._order, self._store = order, store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") if prefetch else None
        self._next: tuple[int, Future] | None = None

    def take(self, category: Category) -> CategoryData:
        """The loaded data of `category` (one of `order`); starts loading the one after it."""
        index = next(i for i, c in enumerate(self._order) if c is category)
        ready = self._next[1] if self._next and self._next[0] == index else None
        self._next = None
        if self._pool is not None and index + 1 < len(self._order):
            self._next = (index + 1, self._pool.submit(CategoryData, self._order[index + 1], self._store))
        return ready.result() if ready is not None else CategoryData(category, self._store)

    def __enter__(self) -> "CategoryLoader":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the background load, if any (waits for one in flight)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def auxiliary_categories(source: str, target: Category, fmt: str, store: ImageStore,
                         procedural_split: str = "test") -> list[AuxiliaryCategory]:
    """Normal train images of every category of `source` except the target, for methods trained off it.

    source: `procedural` (the embedded dataset in its realisation `procedural_split`, the run's: a dev run
    meta-trains on the dev split's other categories, a reported run on the test split's; never the target, so
    sharing the run's realisation leaks nothing; always available), `dataset` (the other categories of
    the run's dataset: the paper's leave-one-out protocol) or a path to another dataset folder
    (read in the run's format `fmt`)."""
    if source == "procedural":
        root, fmt = embedded_dataset(procedural_split), "loco"
    elif source == "dataset":
        root, fmt = target.root.parent, target.format
    else:
        root = Path(source)
    others = [read_category(root, name, fmt) for name in other_categories(root, target)]  # never the target
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


class CellWorker:
    """Runs cells of a `CellJob` wherever it lives (this process, a Ray actor, a Slurm array job): the one way a
    cell is fitted, predicted and scored. It writes nothing: each cell yields a `CellResult` for the driver.

    It keeps what outlives a cell: its feature cache, the images it loaded and the category it is on (with
    `prefetch`, the next category of `order` loads in the background while the current one computes)."""

    def __init__(self, job: CellJob, features: FeatureCache | None = None, name: str = "local",
                 order: Sequence[str] | None = None, prefetch: bool = False,
                 on_step: Callable[[str], None] | None = None) -> None:
        self.job, self.config, self.preset = job, job.config, job.preset
        self.device = features.device if features is not None else resolve_device(job.config.device)
        self.features = features if features is not None else feature_cache(job.config, self.device)
        self.name = name
        self.on_step = on_step or (lambda text: None)
        self.store = ImageStore(self.config.image_size, self.config.decode_workers)
        names = list(order) if order is not None else [c.name for c in job.categories]
        self.loader = CategoryLoader([job.category(n) for n in names], self.store, prefetch)
        self.current: CategoryData | None = None

    def close(self) -> None:
        """Wait for a background load, if any."""
        self.loader.close()

    def _data(self, name: str) -> CategoryData:
        category = self.job.category(name)
        if self.current is None or self.current.category is not category:
            self.on_step(f"loading {name}")
            self.current = self.loader.take(category)
        return self.current

    def run_cell(self, task: CellTask) -> CellResult:
        """Fit every variant the cell needs (members before fusion; a pending fusion refits its finished members)
        and score the pending ones. A method's error or non-finite output fails its row only; a `HarnessError`
        propagates."""
        torch.set_num_threads(self.config.threads)  # one recorded setting under every executor: same numbers
        m = self.config.anomaly_shots  # --anomaly-shots: drawn, then removed from the test set of every method
        data, anomalies, drawn = self._data(task.category).hold_out(m, task.seed)
        category, k, seed = data.category, task.k, task.seed
        variants = list(self.job.variants)
        pending = set(task.pending)
        # a pending fusion needs its members fitted in this cell, even those finished earlier
        needed = {member.spec for v in variants if v.spec in pending and v.entry.needs_fitted
                  for member in members_of(v, variants)}
        indices = support_indices(len(category.train_good), k, seed)  # seeds torch as the VAND kit does
        support = data.support(indices)
        setting = CellSetting(category.name, seed, self.device, self.features, self.job.artifacts,
                              lambda source: auxiliary_categories(source, category, self.config.format, data.store,
                                                                  self.config.procedural_split),
                              anomalies=anomalies)
        members: dict[str, FittedMember] = {}
        predictions: dict[str, Prediction] = {}  # members' test predictions, reused by fusion
        outcomes: list[VariantOutcome] = []
        messages: list[str] = []
        cell_row = base_row("", self.preset, category, k, seed, m)  # the cell's key and counts; the method per variant
        for variant in in_fitting_order(variants):
            self.on_step(f"{variant.spec} {task.label}")
            row, todo = {**cell_row, "method": variant.spec}, variant.spec in pending
            if not variant.runnable:
                if todo:
                    outcomes.append(VariantOutcome({**row, "status": "skipped",
                                                    "method_info": json.dumps({"missing": variant.missing})}))
            elif todo or variant.spec in needed:
                fitted = self._fit_and_score(variant, data, support, setting, members, predictions, row, todo,
                                             outcomes, messages)
                if fitted is not None:
                    members[variant.spec] = fitted
        return CellResult(task, tuple(category.train_good[i].name for i in indices), tuple(outcomes),
                          tuple(messages), self.name, self._counters(), drawn)

    def _counters(self) -> dict[str, Any]:
        """This worker's feature-cache counters so far (config.json sums them over workers)."""
        return {"device": str(self.device), "backbone_passes": dict(self.features.passes),
                **self.features.pass_summary()}

    def _fit_and_score(self, variant: Variant, data: CategoryData, support: torch.Tensor, setting: CellSetting,
                       members: dict[str, FittedMember], predictions: dict[str, Prediction], row: dict[str, Any],
                       score: bool, outcomes: list[VariantOutcome], messages: list[str]) -> FittedMember | None:
        """Fit one variant on the support set; with `score`, predict the test set (kept in `predictions`) and
        add its outcome. Anything the method raises, or non-finite output, fails this cell only."""
        info: dict[str, Any] = {"preset": self.preset, "weights": variant.weights,
                                "config": asdict(variant.config)}  # what a resume compares (settings_drift)
        if variant.entry.source != "builtin":
            info["source"] = variant.entry.source  # the plugin or package the method came from
        if variant.entry.uses_auxiliary and variant.requirements.auxiliary_source == "procedural":
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
                    prediction = predict_all(fitted.method, data.test_images_on(self.device), self.config.batch_size,
                                             self.device)
            predict_s = time.perf_counter() - start
            check_prediction(prediction, len(data.test_images))
        except HarnessError:
            raise
        except WeightsMissing as error:  # known only once fitting (a kit model's weights_url): skipped, not failed
            messages.append(f"[yellow]skipped {escape(variant.spec)} on {escape(setting.category)}:[/yellow] "
                            f"{escape(str(error))}")
            if score:
                outcomes.append(VariantOutcome({**row, "status": "skipped",
                                                "method_info": json.dumps({**info, "missing": [str(error)]})}))
            return None
        except Exception as error:  # a broken method fails its cell; the run goes on with the others
            messages.append(f"[red]{escape(variant.spec)} failed on {escape(setting.category)} k={row['k']} "
                            f"seed={setting.seed}:[/red] {escape(repr(error))}")
            failure = {**info, "error": repr(error), "trace": traceback.format_exc(limit=3)}
            if score:
                outcomes.append(VariantOutcome({**row, "status": "failed", "method_info": json.dumps(failure)}))
            return None
        if not isinstance(fitted.method, FusingMethod):
            predictions[variant.spec] = prediction
        outcomes.append(self._outcome(variant, data, prediction, row, fitted.fit_s, predict_s,
                                      {**info, **fitted.method.info()}))
        return fitted

    def _combine(self, fusion: FusingMethod, data: CategoryData, predictions: dict[str, Prediction]) -> Prediction:
        """A fusing method's test prediction from its members' (members finished in an earlier run of this
        folder were refitted but not scored: they are predicted here, once)."""
        for spec, member in fusion.members.items():
            if spec not in predictions:
                images = data.test_images_on(self.device)
                predictions[spec] = predict_all(member, images, self.config.batch_size, self.device)
        return fusion.combine(predictions)

    def _outcome(self, variant: Variant, data: CategoryData, prediction: Prediction, row: dict[str, Any],
                 fit_s: float, predict_s: float, info: dict[str, Any]) -> VariantOutcome:
        """A scored variant's row (metrics, timings, info), score frame and, with --save-maps, maps."""
        scores = prediction.scores.numpy()  # finite: checked by `check_prediction`
        metrics = image_metrics(data.truth, scores)
        maps = None
        pixel = self.config.metrics == "all"  # --metrics image: the pixel columns stay empty, no map is resized
        if prediction.maps is not None and ((pixel and data.truth.masks is not None) or self.config.save_maps):
            maps = maps_at_mask_resolution(prediction.maps, data.truth.sizes)
            if pixel:
                metrics.update(pixel_metrics(data.truth, maps, device=self.device))
        items = data.truth.items
        dataset_root = data.category.root.parent
        frame = ScoreFrame(variant_dirname(variant.spec), [i.name for i in items], [i.defect for i in items],
                           data.truth.labels.tolist(), scores,
                           {key: value.numpy() for key, value in prediction.extras.items()},
                           [relative_image_path(i.path, dataset_root) for i in items])
        saved = tuple(zip([i.name for i in items], maps)) if self.config.save_maps and maps is not None else ()
        return VariantOutcome({**row, **metrics, "status": "ok", "fit_s": fit_s, "predict_s": predict_s,
                               "method_info": json.dumps(info, sort_keys=True, default=str)}, frame, saved)


