import numpy as np
import pytest
import torch

from bench.fusion_scale import candidates
from methods.fusion import geometric_scale
from methods.standardise import Standardiser


def test_candidates_by_hand_and_the_geometric_scale_as_fusion_computes_it():
    rng = np.random.default_rng(0)
    spreads = {m: {"held_out": rng.normal(10, 2, 4), "views": rng.normal(10, 0.5, 16), "pseudo": rng.normal(14, 2, 4)}
               for m in ("a", "b")}
    scores = {m: rng.normal(10, 3, 6) for m in ("a", "b")}
    normal = np.array([True, True, True, False, False, False])
    fused = candidates(spreads, scores, normal)
    by_hand = sum((scores[m] - spreads[m]["held_out"].mean()) / spreads[m]["held_out"].std() for m in scores)
    assert fused["held-out std; sum"] == pytest.approx(by_hand)
    z = np.stack([(scores[m] - spreads[m]["held_out"].mean()) / spreads[m]["views"].std() for m in scores])
    assert fused["views std; sum + max"] == pytest.approx(z.sum(0) + z.max(0))
    fusion_z = sum(geometric_scale(Standardiser.fit(torch.tensor(spreads[m]["held_out"])),
                                   torch.tensor(spreads[m]["views"]))(torch.tensor(scores[m])).numpy() for m in scores)
    assert fused["geometric mean of held-out and views std; sum"] == pytest.approx(fusion_z)
    gap = {m: spreads[m]["pseudo"].mean() - spreads[m]["held_out"].mean() for m in scores}
    lda = sum((scores[m] - spreads[m]["held_out"].mean()) * gap[m] / spreads[m]["views"].std() ** 2 for m in scores)
    assert fused["views std; sum weighted by gap / scale"] == pytest.approx(lda)
