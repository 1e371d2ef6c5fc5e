"""One contract over every registered method: fit on tiny images, predict, check shapes, finiteness, determinism."""
import pytest
import torch

from methods import list_methods
from methods.backbones import FeatureCache
from methods.base import FitContext
from methods.registry import build_config

METHODS = [entry.name for entry in list_methods() if not entry.uses_auxiliary and not entry.needs_fitted]


def _fit_predict(name: str, support: torch.Tensor, test: torch.Tensor, tmp_path):
    entry, config = build_config(name, "offline")
    method = entry.factory(config)
    torch.manual_seed(7)
    context = FitContext(torch.device("cpu"), torch.Generator().manual_seed(7),
                         FeatureCache(torch.device("cpu"), pretrained=False), artifacts=tmp_path)
    method.fit(support, category="toy", context=context)
    return method.predict(test), method.info()


@pytest.mark.parametrize("name", METHODS)
def test_method_contract(name, tmp_path):
    generator = torch.Generator().manual_seed(0)
    support = torch.rand(2, 3, 64, 64, generator=generator)
    test = torch.rand(3, 3, 64, 64, generator=generator)
    first, info = _fit_predict(name, support, test, tmp_path)
    assert first.scores.shape == (3,) and torch.isfinite(first.scores).all()
    if first.maps is not None:
        assert first.maps.shape == (3, 64, 64) and torch.isfinite(first.maps).all()
    for value in first.extras.values():
        assert value.shape == (3,)
    assert isinstance(info, dict)
    second, _ = _fit_predict(name, support, test, tmp_path)
    assert torch.equal(first.scores, second.scores)
