"""One contract over every registered method, fitted the one way a cell is fitted (`methods.cell.fit_cell`):
every method (fusion and RegAD included) at k = 1 and 2, under both presets (`paper` with random weights at a
tiny image size, trainers shortened through their options). Shapes, finite values, same-seed determinism
(offline)."""
import pytest
import torch

from methods import list_methods
from methods.features import FeatureCache
from methods.base import AuxiliaryCategory
from methods.cell import CellSetting, fit_cell
from methods.registry import build_variant

# Shorter training through the methods' own options (the same options a user has), never a test-only path.
SHORT = {
    "simplenet": "meta_epochs=1,epochs_per_meta=1,augment_views=1",
    "gcad": "steps=2,distill_steps=2,train_views=4,stat_views=2",
    "regad": "input_size=32,train_size=32,train_epochs=1,train_batch=4",
    "bgad": "meta_epochs=2,sub_epochs=1",
}
SIZE = 64


def _methods():
    """The methods a default run runs (`vand` needs a kit directory: tests/submission/test_kit_method.py)."""
    return [e for e in list_methods() if e.in_default_run]


def _specs(preset: str) -> list[str]:
    specs = [f"{e.name}:{SHORT[e.name]}" if e.name in SHORT else e.name for e in _methods()]
    if preset == "paper":  # fusion's leave-one-out refits of the random 208M-parameter CLIP tower cost minutes here
        members = "+".join(e.name for e in _methods() if not e.needs_fitted and e.name != "clip_logic")
        specs = [f"fusion:members={members}" if spec == "fusion" else spec for spec in specs]
    return specs


def _auxiliary(source: str) -> list[AuxiliaryCategory]:
    generator = torch.Generator().manual_seed(3)
    return [AuxiliaryCategory(f"other{i}", torch.rand(4, 3, SIZE, SIZE, generator=generator)) for i in range(2)]


def _fit_and_predict(preset: str, k: int, tmp_path, features: FeatureCache):
    generator = torch.Generator().manual_seed(0)
    support = torch.rand(k, 3, SIZE, SIZE, generator=generator)
    test = torch.rand(3, 3, SIZE, SIZE, generator=generator)
    setting = CellSetting("toy", 7, torch.device("cpu"), features, tmp_path / "artifacts", _auxiliary)
    fitted = fit_cell([build_variant(spec, preset) for spec in _specs(preset)], support, setting)
    with torch.no_grad():
        return {spec: (member.method.predict(test), member.method.info()) for spec, member in fitted.items()}


@pytest.fixture(scope="module")
def features():
    return {"offline": FeatureCache(torch.device("cpu")), "paper": FeatureCache(torch.device("cpu"), pretrained=False)}


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("preset", ["offline", "paper"])
def test_every_method_fits_a_cell_and_predicts(preset, k, tmp_path, features):
    first = _fit_and_predict(preset, k, tmp_path, features[preset])
    assert {spec.partition(":")[0] for spec in first} == {e.name for e in _methods()}
    for spec, (prediction, info) in first.items():
        assert prediction.scores.shape == (3,) and torch.isfinite(prediction.scores).all(), spec
        if prediction.maps is not None:
            assert prediction.maps.shape == (3, SIZE, SIZE) and torch.isfinite(prediction.maps).all(), spec
        for value in prediction.extras.values():
            assert value.shape == (3,), spec
        assert isinstance(info, dict)
    if preset == "offline":  # same seed: the same numbers (paper: once is enough for the plumbing)
        second = _fit_and_predict(preset, k, tmp_path, features[preset])
        for spec, (prediction, _) in first.items():
            assert torch.equal(prediction.scores, second[spec][0].scores), spec


@pytest.mark.parametrize("name", ["bgad", "clip_logic", "fusion", "gcad", "patchcore", "regad", "simplenet"])
def test_every_builtin_passes_check_method(name):
    """The contract a plugin is held to (`python -m submission check-method`), held to our own methods: shapes,
    finite values, determinism, randomness from the cell's generator only, batch independence."""
    from submission.contract import check_method

    spec = f"{name}:{SHORT[name]}" if name in SHORT else name
    checks = check_method(spec, bundle=False)
    assert [c.name for c in checks if not c.passed] == [], [c.detail for c in checks if not c.passed]
    assert len(checks) == 6


def test_check_method_round_trips_a_bundle():
    from submission.contract import check_method

    checks = {c.name: c for c in check_method("patchcore")}
    assert checks["package + verify"].passed and all(c.passed for c in checks.values())
