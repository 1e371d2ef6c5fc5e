"""`python -m submission check-method SPEC`: the contract every method (built-in or plugin) must keep, checked on
tiny generated data, one row per check.

- fit and predict run; scores [b] and extras [b] of a floating dtype, maps [b,H,W] or None; every value finite;
  scores on the input's device;
- determinism: a fresh instance fitted with the same seed gives the same scores, bit for bit;
- own generator only: seeding torch's global RNG otherwise before `fit` and drawing from it before `predict`
  changes nothing (a method draws its randomness from `FitContext.generator`);
- batch independence (the VAND rule: a test image's only inputs are the support images and itself): each test
  image scored alone, and within the batch in reverse order, gets its score in the whole batch (within float
  rounding: 1e-4 relative);
- bundle: a one-cell run of the method is packaged (`package`) and the bundle checked (`verify`).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from methods.base import Prediction
from methods.cell import CellSetting, fit_cell, fit_method
from methods.features import FeatureCache
from methods.plugins import load_plugins
from methods.registry import MethodSpecError, PluginError, build_config
from submission.cell_worker import NonFiniteOutput, auxiliary_categories, check_prediction, resolve_device
from submission.config import RunConfig
from submission.datasets.images import ImageStore
from submission.datasets.procedural import ProceduralConfig, ensure_dataset
from submission.datasets.readers import read_category
from submission.errors import HarnessError
from submission.preflight import Variant, preflight
from submission.sampling import support_indices

TINY = ProceduralConfig(image_size=64, n_train=4, n_validation=0, n_test_good=3, n_test_logical=2,
                        n_test_structural=2)
CATEGORY, SIZE, K, SEED = "pill_tray", 64, 2, 7
BATCH_TOLERANCE = 1e-4  # relative: batched and single-image convolutions round differently, no more


@dataclass(frozen=True)
class Check:
    """One row of the contract's table."""

    name: str
    passed: bool
    detail: str


def _largest_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[int, float]:
    """The index of the largest relative difference between two score vectors, and that difference."""
    relative = (a.double() - b.double()).abs() / a.double().abs().clamp_min(1.0)
    index = int(relative.argmax())
    return index, float(relative[index])


class ContractRun:
    """One method variant fitted and predicted on the tiny data, as many times as the checks need."""

    def __init__(self, variants: list[Variant], spec: str, root: Path, device: torch.device) -> None:
        self.variants, self.device = variants, device
        self.variant = next(v for v in variants if v.spec == spec)
        category = read_category(root, CATEGORY, "loco")
        store = ImageStore(SIZE)
        self.names = [item.name for item in category.test]
        self.test = store.stack([item.path for item in category.test])
        self.support = store.stack([category.train_good[i] for i in support_indices(len(category.train_good), K, SEED)])
        self.features = FeatureCache(device)
        self.setting = CellSetting(CATEGORY, SEED, device, self.features, root.parent / "artifacts",
                                   lambda source: auxiliary_categories(source, category, "loco", store))

    def fitted(self, global_seed: int | None = None):
        """A fresh instance of the variant fitted (its members first, for a fusing method)."""
        members = fit_cell([v.method for v in self.variants if v is not self.variant], self.support, self.setting)
        return fit_method(self.variant.method, self.support, self.setting, members, global_seed).method

    def predict(self, method, images: torch.Tensor) -> Prediction:
        with torch.no_grad():
            return method.predict(images.to(self.device))


def _shapes(prediction: Prediction, count: int, device: torch.device) -> str | None:
    if tuple(prediction.scores.shape) != (count,) or not prediction.scores.is_floating_point():
        return f"scores {tuple(prediction.scores.shape)} {prediction.scores.dtype}, expected ({count},) float"
    if prediction.maps is not None and (prediction.maps.dim() != 3 or len(prediction.maps) != count
                                        or not prediction.maps.is_floating_point()):
        return f"maps {tuple(prediction.maps.shape)} {prediction.maps.dtype}, expected ({count}, H, W) float"
    for name, values in prediction.extras.items():
        if tuple(values.shape) != (count,):
            return f"extra {name!r} {tuple(values.shape)}, expected ({count},)"
    if prediction.scores.device.type != device.type:
        return f"scores on {prediction.scores.device}, the input on {device}"
    return None


def check_method(spec: str, preset: str = "offline", members: tuple[str, ...] = ("patchcore",),
                 device: str = "cpu", bundle: bool = True, plugins: tuple[str, ...] = (), work: Path | None = None,
                 on_check: Callable[[Check], None] = lambda check: None) -> list[Check]:
    """Run the contract on `spec` (a fusing method with `members` fitted before it; `plugins` imported first);
    every check's row."""
    try:
        load_plugins(plugins)
    except PluginError as error:
        raise HarnessError(str(error)) from None
    with tempfile.TemporaryDirectory(prefix="check-method-") as scratch:
        work = Path(work or scratch)
        root = ensure_dataset(work / "data", TINY)
        try:
            fuses = build_config(spec, preset)[0].needs_fitted
        except MethodSpecError as error:
            raise HarnessError(str(error)) from None
        specs = (*[m for m in members if m != spec], spec) if fuses else (spec,)
        variants = preflight(specs, preset, {})
        if not all(v.runnable for v in variants):
            raise HarnessError(f"check-method {spec}: cannot run under preset {preset!r}: "
                               + "; ".join(m for v in variants for m in v.missing))
        run = ContractRun(variants, spec, root, resolve_device(device))
        checks: list[Check] = []

        def add(name: str, problem: str | None, ok_detail: str) -> bool:
            checks.append(Check(name, problem is None, problem or ok_detail))
            on_check(checks[-1])
            return problem is None

        try:
            method = run.fitted()
            prediction = run.predict(method, run.test)
        except Exception as error:  # the method's own error: the first row says it, the others cannot run
            add("fit and predict", f"{type(error).__name__}: {' '.join(str(error).split())[:200]}", "")
            return checks
        count = len(run.test)
        add("fit and predict", None, f"k={K}, {count} test images of {SIZE} px on {run.device}")
        if not add("shapes, dtypes, device", _shapes(prediction, count, run.device),
                   f"scores ({count},)" + ("" if prediction.maps is None else f", maps {tuple(prediction.maps.shape)}")
                   + (f", extras {', '.join(prediction.extras)}" if prediction.extras else "")):
            return checks
        try:
            check_prediction(prediction, count)
            add("finite", None, "scores, maps and extras")
        except NonFiniteOutput as error:
            add("finite", str(error), "")
        scores = prediction.scores.cpu()

        def determinism() -> str | None:
            again = run.predict(run.fitted(), run.test).scores.cpu()
            index, difference = _largest_difference(scores, again)
            return None if torch.equal(scores, again) else \
                f"a second fit with seed {SEED} differs by {difference:.3g} on {run.names[index]}"

        def own_generator() -> str | None:
            perturbed = run.fitted(global_seed=SEED + 1000)
            torch.rand(1000)  # the global RNG moves on between fit and predict
            other = run.predict(perturbed, run.test).scores.cpu()
            index, difference = _largest_difference(scores, other)
            return None if torch.equal(scores, other) else \
                f"another global torch seed changes {run.names[index]}'s score by {difference:.3g}: draw from " \
                "FitContext.generator"

        def batch_independence() -> str | None:
            alone = torch.cat([run.predict(method, run.test[i:i + 1]).scores.cpu().reshape(-1) for i in range(count)])
            reverse = run.predict(method, run.test.flip(0)).scores.cpu().flip(0)
            worst = max((_largest_difference(scores, alone), _largest_difference(scores, reverse)),
                        key=lambda w: w[1])
            return None if worst[1] <= BATCH_TOLERANCE else \
                f"{run.names[worst[0]]}: its score moves by {worst[1]:.3g} (relative) with its batch-mates: a test " \
                "image's score may depend only on the support images and itself"

        for name, check, passed in (("same seed, same scores", determinism, "bit-identical"),
                                    ("own generator only", own_generator, "global RNG perturbed: same scores"),
                                    ("batch independence", batch_independence,
                                     f"each image alone and reordered within {BATCH_TOLERANCE:g}")):
            try:
                problem = check()
            except Exception as error:  # e.g. a method that cannot score a batch of one image
                problem = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
            add(name, problem, passed)
        if bundle:
            add("package + verify", _bundle_problem(specs, spec, preset, plugins, root, work, device),
                "bundle verified (it carries the method's own code)")
        return checks


def _bundle_problem(specs: tuple[str, ...], spec: str, preset: str, plugins: tuple[str, ...], root: Path, work: Path,
                    device: str) -> str | None:
    """Package a one-cell run of the method and verify the bundle; the problem, or None."""
    from submission.packaging import package_bundle
    from submission.runner import run
    from submission.verify import verify

    try:
        run_dir = run(RunConfig(data=root, categories=(CATEGORY,), shots=(K,), seeds=(SEED,), methods=specs,
                                preset=preset, image_size=SIZE, device=device, out=work / "run", metrics="image",
                                plugins=plugins),
                      Console(quiet=True))
        archive, _ = package_bundle(run_dir, spec, work / "dist")
        verify(archive)
    except Exception as error:  # the harness's one-line errors and whatever the bundle raised
        return " ".join(str(error).split())[:300] or type(error).__name__
    return None


def show(checks: list[Check], spec: str, console: Console) -> int:
    """Print the contract's table; 0 when every check passed, else 1."""
    table = Table(title=f"check-method {spec}", title_justify="left")
    for column in ("check", "result", "detail"):
        table.add_column(column)
    for check in checks:
        table.add_row(check.name, "[green]pass[/green]" if check.passed else "[red]FAIL[/red]", escape(check.detail))
    console.print(table)
    return 0 if checks and all(c.passed for c in checks) else 1
