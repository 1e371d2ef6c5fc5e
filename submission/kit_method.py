"""`--methods vand:DIR`: a VAND 2025 kit submission directory (`src/eval/submission/` of cvpr-vand/challenge: a
`model.py` with `Model(nn.Module)`) run unchanged as a harness method, through the same door as any plugin (this
module is the harness's own entry point in `fewshot_ad_harness.methods`).

As the kit's evaluator drives it (cvpr-vand/challenge `src/eval/evaluate.py`): `Model()` with no arguments,
`eval()`, `weights_url(category)` (when it has one), `to(device)`; then per cell, after `torch.manual_seed(seed)` (the
harness seeds every cell so), `setup({"few_shot_samples": [k,3,H,W] in [0,1] on the device, "dataset_category":
name})`, `eval()` again, and test batches under `torch.no_grad()`, read from `output.pred_score` (and
`output.anomaly_map` when the model returns maps: pixel metrics then apply). The kit feeds 256 px images; a run
at another `--image-size` is resized to `input_size` (bilinear, antialiased) first, and maps come back at the
run's size. Kit models import anomalib (`from anomalib.data import ImageBatch`): when it is missing, building the
variant says what to install, in one line. A `weights_url(category)` is looked up where the kit's evaluator
keeps its downloads (the system temporary folder, under the URL's last path part) and loaded as it does
(`load_state_dict(torch.load(file, map_location=device))`); runs are offline, so a file that is not there skips the
category's rows with the URL and the command that puts it there.
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from methods.base import FitContext, Prediction, Requirements
from methods.options import PositiveInt
from methods.plugins import import_file, source_digest
from methods.registry import register
from methods.weight_files import WeightsMissing

ANOMALIB_HINT = "pip install 'fewshot-ad-harness[anomalib]' (or pip install -e '.[anomalib]')"


@dataclass(frozen=True)
class KitConfig:
    dir: str = ""  # the kit submission directory holding model.py (`vand:DIR`)
    input_size: PositiveInt = 256  # what the kit's evaluator feeds every model


def load_kit_module(folder: Path) -> Any:
    """The kit directory's `model.py`, imported once per process under a name of its own (its folder first on
    the import path, for its own imports); a missing anomalib is one line saying what to install."""
    folder = folder.resolve()
    if not (folder / "model.py").is_file():
        raise ValueError(f"vand:{folder}: no model.py there (a VAND kit submission directory holds model.py)")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    try:
        module = import_file(folder / "model.py", "vand_kit")
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] == "anomalib":
            raise ValueError(f"vand:{folder}: model.py imports anomalib, which is not installed: {ANOMALIB_HINT}") \
                from None
        raise
    if not hasattr(module, "Model"):
        raise ValueError(f"vand:{folder}: model.py defines no Model class")
    return module


def downloaded_weights(url: str, folder: Path, category: str) -> Path:
    """Where the kit's evaluator keeps the download of `url` (temporary folder / the URL's last part), or
    `WeightsMissing` with the URL and the command that puts the file there (runs never download)."""
    path = Path(tempfile.gettempdir()) / url.split("/")[-1]
    if not path.is_file():
        raise WeightsMissing(f"vand:{folder}: weights_url({category!r}) is {url}, not downloaded to {path}; "
                             f"runs are offline: curl -L -o {path} {url}")
    return path


class KitModel:
    """A kit submission's `Model` behind the harness's method protocol."""

    name = "vand"

    def __init__(self, config: KitConfig) -> None:
        if not config.dir:
            raise ValueError("vand needs the kit submission directory: --methods vand:DIR")
        self.config = config
        self.folder = Path(config.dir).resolve()
        self.module = load_kit_module(self.folder)
        self.model: Any = None
        self.device = torch.device("cpu")

    def fit(self, support: torch.Tensor, *, category: str, context: FitContext) -> None:
        self.device = context.device
        model = self.module.Model()
        model.eval()
        url = model.weights_url(category) if hasattr(model, "weights_url") else None
        if url is not None:
            model.load_state_dict(torch.load(downloaded_weights(url, self.folder, category),
                                             map_location=context.device))
        self.model = model.to(context.device)
        self.model.setup({"few_shot_samples": self._input(support), "dataset_category": category})
        self.model.eval()

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        images = images.to(self.device)
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return images

    def predict(self, images: torch.Tensor) -> Prediction:
        with torch.no_grad():
            output = self.model(self._input(images))
        scores = output.pred_score.detach().float().reshape(-1).to(images.device)
        maps = getattr(output, "anomaly_map", None)
        if maps is not None:
            maps = maps.detach().float().reshape(len(images), *maps.shape[-2:])
            if maps.shape[-2:] != images.shape[-2:]:
                maps = F.interpolate(maps[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            maps = maps.to(images.device)
        return Prediction(scores=scores, maps=maps)

    def info(self) -> dict[str, Any]:
        return {"dir": self.config.dir, "input_size": self.config.input_size, "resolved_dir": str(self.folder),
                "model_py_digest": source_digest(self.folder)}


register(
    "vand",
    config=KitConfig,
    presets={"paper": KitConfig(), "offline": KitConfig()},
    summary="a VAND kit submission directory run unchanged (--methods vand:DIR)",
    requires=lambda config: Requirements(),
    positional="dir",
    in_default_run=False,
)(KitModel)
