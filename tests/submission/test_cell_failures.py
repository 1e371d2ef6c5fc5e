"""A method that raises, or returns non-finite scores or maps, fails only its own cells; the run goes on."""
import csv
import json
from dataclasses import dataclass

import pytest

from methods import registry
from methods.base import Prediction
from submission.config import RunConfig
from submission.runner import run


@dataclass(frozen=True)
class BrokenConfig:
    failure: str = "nan_scores"  # nan_scores | inf_maps | raises


class Broken:
    """A training-free dummy whose output is broken in the configured way."""

    name = "broken"

    def __init__(self, config: BrokenConfig) -> None:
        self.config = config

    def fit(self, support, *, category, context):
        pass

    def predict(self, images):
        if self.config.failure == "raises":
            raise RuntimeError("boom inside predict")
        scores = images.mean(dim=(1, 2, 3))
        maps = images.mean(dim=1)
        if self.config.failure == "nan_scores":
            scores = scores.clone()
            scores[0] = float("nan")
        else:
            maps = maps.clone()
            maps[0, 0, 0] = float("inf")
        return Prediction(scores=scores, maps=maps)

    def info(self):
        return {}


@pytest.fixture
def broken_registered():
    registry.register("broken", config=BrokenConfig, presets={"paper": BrokenConfig(), "offline": BrokenConfig()},
                      summary="a test dummy with broken output")(Broken)
    yield
    registry._REGISTRY.pop("broken")


def test_broken_output_fails_only_its_cells(broken_registered, tiny_loco, tmp_path):
    out = tmp_path / "run"
    specs = ("patchcore", "broken", "broken:failure=inf_maps", "broken:failure=raises", "fusion")
    run(RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(1, 2), seeds=(42,), methods=specs,
                  preset="offline", image_size=64, out=out))
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    status = {(r["method"], r["k"]): r["status"] for r in rows}
    assert len(rows) == len(specs) * 2
    for k in ("1", "2"):
        assert status[("patchcore", k)] == "ok" and status[("fusion", k)] == "ok"
        for spec in specs[1:4]:
            assert status[(spec, k)] == "failed"
    reasons = {r["method"]: json.loads(r["method_info"])["error"] for r in rows if r["status"] == "failed"}
    assert "non-finite values in scores" in reasons["broken"]
    assert "non-finite values in maps" in reasons["broken:failure=inf_maps"]
    assert "boom inside predict" in reasons["broken:failure=raises"]
    fused = [json.loads(r["method_info"])["fused"] for r in rows if r["method"] == "fusion"]
    assert fused == [["patchcore"], ["patchcore"]]  # failed members are not fused
