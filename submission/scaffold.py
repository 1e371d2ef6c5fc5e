"""`python -m submission new-method NAME --dir DIR`: a small installable package holding one method (nearest
support-patch distance on a registered backbone, both presets), its entry point, and a test that runs the
contract check. After `pip install -e DIR` the method is listed, runs, passes `check-method`, packages and
verifies like a built-in."""
from __future__ import annotations

import keyword
import re
from pathlib import Path

from submission.errors import HarnessError

PYPROJECT = '''[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "{name}: a few-shot anomaly detection method for the fewshot-ad harness"
requires-python = ">=3.11"
dependencies = ["fewshot-ad-harness"]

[project.entry-points."fewshot_ad_harness.methods"]
{name} = "{module}"

[tool.setuptools]
py-modules = ["{module}"]
'''

MODULE = '''"""{name}: each test patch's distance to its nearest support patch on a frozen backbone (a starting point).

Presets: `paper` uses WideResNet-50-2 (find its weights with `python -m submission weights`), `offline` the
bundled EfficientNet-Lite0. Departures from any paper: none yet; name each one here with its reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from methods.backbones import BackboneName
from methods.base import FitContext, Prediction, Requirements, WeightFile
from methods.options import PositiveInt
from methods.registry import register


@dataclass(frozen=True)
class {cls}Config:
    backbone: BackboneName = "wide_resnet50_2"
    level: PositiveInt = 2  # ResNet-numbered feature level (stride 2 ** (level + 1))


class {cls}:
    name = "{name}"

    def __init__(self, config: {cls}Config) -> None:
        self.config = config
        self.memory: torch.Tensor | None = None

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        (features,) = self.context.features.get(self.config.backbone, images, (self.config.level,))
        return features

    def fit(self, support: torch.Tensor, *, category: str, context: FitContext) -> None:
        """support: [k,3,H,W] in [0,1]; randomness, if any, from context.generator only."""
        self.context = context
        features = self._features(support)
        self.memory = features.flatten(2).transpose(1, 2).reshape(-1, features.shape[1])

    def predict(self, images: torch.Tensor) -> Prediction:
        """Scores [b] and maps [b,H,W]; each image's score depends only on the support set and itself."""
        features = self._features(images)
        b, c, h, w = features.shape
        patches = features.flatten(2).transpose(1, 2).reshape(-1, c)
        distances = torch.cdist(patches, self.memory).min(dim=1).values.view(b, 1, h, w)
        maps = F.interpolate(distances, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return Prediction(scores=distances.flatten(1).max(dim=1).values, maps=maps)

    def info(self) -> dict[str, Any]:
        return {{"backbone": self.config.backbone, "level": self.config.level,
                "memory_size": 0 if self.memory is None else len(self.memory)}}


register(
    "{name}",
    config={cls}Config,
    presets={{"paper": {cls}Config(), "offline": {cls}Config(backbone="lite0")}},
    summary="nearest support-patch distance (scaffold: replace with your method)",
    requires=lambda config: Requirements((WeightFile(config.backbone),)),
)({cls})
'''

TEST = '''"""The harness's method contract, as `python -m submission check-method {name}` runs it."""
from submission.contract import check_method


def test_{name}_keeps_the_method_contract():
    failed = [(c.name, c.detail) for c in check_method("{name}") if not c.passed]
    assert failed == []
'''

README = '''# {name}

A method for the fewshot-ad harness.

```bash
pip install -e .                                   # registers `{name}` through its entry point
python -m submission methods                       # lists it
python -m submission check-method {name}           # the contract: shapes, determinism, batch independence, bundle
python -m submission run --methods {name} patchcore fusion:members={name}+patchcore --shots 1 2 4 8
python -m pytest tests
```
'''


def new_method(name: str, folder: Path) -> list[Path]:
    """Write the package of a new method called `name` into `folder` (which must not exist or be empty)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise HarnessError(f"new-method {name!r}: a method name is lower case letters, digits and _, "
                           "starting with a letter")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise HarnessError(f"--dir {folder}: exists and is not empty")
    module = f"{name}_method"
    cls = "".join(part.capitalize() for part in name.split("_"))
    fields = dict(name=name, module=module, cls=cls, dist=f"{name.replace('_', '-')}-method")
    files = {folder / "pyproject.toml": PYPROJECT, folder / f"{module}.py": MODULE,
             folder / "tests" / f"test_{name}.py": TEST, folder / "README.md": README}
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**fields))
    return list(files)
