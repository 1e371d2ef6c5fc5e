import numpy as np
import pytest
import torch

from bench.fusion_scale import candidates, oracle_subsets
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
    geo = np.stack([(scores[m] - spreads[m]["held_out"].mean())
                    / np.sqrt(spreads[m]["held_out"].std() * spreads[m]["views"].std()) for m in scores])
    assert fused["geometric mean of held-out and views std; log-sum"] == pytest.approx(
        sum(np.sign(z_m) * np.log(1 + abs(z_m)) for z_m in geo))
    assert fused["geometric mean of held-out and views std; median"] == pytest.approx((geo[0] + geo[1]) / 2)
    assert "pseudo-anomaly std; log-sum" not in fused
    auroc = {m: np.mean([[p > h for h in spreads[m]["held_out"]] for p in spreads[m]["pseudo"]]) for m in scores}
    weight = {m: 2 * (auroc[m] - 0.5) / sum(auroc[n] - 0.5 for n in scores) for m in scores}  # both above 1/2 here
    assert min(auroc.values()) > 0.5
    assert fused["geometric mean of held-out and views std; sum weighted by pseudo-anomaly AUROC"] == pytest.approx(
        weight["a"] * geo[0] + weight["b"] * geo[1])
    steady = {m: min(1.0, spreads[m]["views"].std() / spreads[m]["held_out"].std()) for m in scores}  # views spread less
    assert fused["geometric mean of held-out and views std; sum weighted by min(1, views std / held-out std)"] == \
        pytest.approx(2 * (steady["a"] * geo[0] + steady["b"] * geo[1]) / (steady["a"] + steady["b"]))


def test_oracle_subsets_divide_each_member_by_its_std_on_the_normal_images():
    z = {"a": np.array([1.0, 3.0, 10.0]), "b": np.array([0.0, 4.0, 2.0]), "c": np.array([5.0, 5.0, 6.0])}
    normal = np.array([True, True, False])
    fused = oracle_subsets(z, normal)
    assert sorted(fused) == sorted(f"oracle (diagnosis): {s}; sum" for s in ("a + b", "a + c", "b + c", "a + b + c"))
    # stds on the normal images: a 1, b 2, c constant (1: shifted only)
    assert fused["oracle (diagnosis): a + b; sum"] == pytest.approx([1.0, 5.0, 11.0])
    assert fused["oracle (diagnosis): a + b + c; sum"] == pytest.approx([6.0, 10.0, 17.0])
