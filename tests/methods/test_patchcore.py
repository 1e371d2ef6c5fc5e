import torch

from methods import create_method
from methods.backbones import FeatureCache
from methods.base import FitContext


def _context(seed=0):
    return FitContext(torch.device("cpu"), torch.Generator().manual_seed(seed), FeatureCache(torch.device("cpu")))


def test_support_images_score_lower_than_a_damaged_copy():
    torch.manual_seed(0)
    support = torch.rand(2, 3, 64, 64) * 0.2 + 0.4
    method = create_method("patchcore", preset="offline")
    method.fit(support, category="toy", context=_context())
    damaged = support[:1].clone()
    damaged[:, :, 20:36, 20:36] = 1.0
    prediction = method.predict(torch.cat([support[:1], damaged]))
    assert prediction.maps.shape == (2, 64, 64)
    assert prediction.scores[0] < 0.05 < prediction.scores[1]  # a support image is in the memory
    # the map peaks inside the damaged square
    peak = int(prediction.maps[1].argmax())
    assert 12 <= peak // 64 <= 44 and 12 <= peak % 64 <= 44


def test_coreset_keeps_the_requested_fraction():
    method = create_method("patchcore:coreset_ratio=0.25", preset="offline")
    method.fit(torch.rand(2, 3, 64, 64), category="toy", context=_context())
    assert method.info()["memory_size"] == 2 * 8 * 8 // 4
