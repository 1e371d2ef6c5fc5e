"""BGAD: the flow's exact log-likelihood, the positional encoding, the boundaries and the semi-push-pull loss, and
that labelled anomalies separate held-out anomalies from normals better than pseudo-anomalies alone (m = 0)."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import methods.bgad  # noqa: F401  (registers "bgad")
from methods.features import FeatureCache
from methods.base import FitContext, LabelledAnomalies
from methods.bgad_modules import (ConditionalFlow, boundaries, flow_log_likelihood, gaussian_log_likelihood,
                                  learning_rate, positional_encoding_2d, semi_push_pull_loss)
from methods.registry import build_variant, get_entry
from submission.datasets.procedural import ProceduralConfig, render_sample


def _flow(channels: int = 3, condition_dim: int = 4, layers: int = 1, seed: int = 0) -> ConditionalFlow:
    return ConditionalFlow(channels, condition_dim, layers, 1.9, torch.Generator().manual_seed(seed)).double()


def test_positional_encoding_is_sines_and_cosines_of_column_then_row():
    encoding = positional_encoding_2d(8, 3, 5)  # half = 4: channels 0-3 columns, 4-7 rows; frequencies 1, 1e-2
    assert encoding.shape == (8, 3, 5)
    row, column = 2, 3
    expected = [math.sin(column), math.cos(column), math.sin(column / 100), math.cos(column / 100),
                math.sin(row), math.cos(row), math.sin(row / 100), math.cos(row / 100)]
    assert torch.allclose(encoding[:, row, column], torch.tensor(expected), atol=1e-6)
    with pytest.raises(ValueError):
        positional_encoding_2d(6, 2, 2)


def test_an_affine_flow_has_the_hand_computed_gaussian_log_likelihood():
    """With the coupling's subnetwork zeroed, a block is z = R (s * x + t): x is Gaussian with mean -t/s and
    standard deviations 1/s, whatever the rotation R and the condition."""
    flow = _flow()
    block = flow.inn[0]
    with torch.no_grad():
        block.subnet[-1].weight.zero_()
        block.subnet[-1].bias.zero_()
        block.global_scale.copy_(torch.tensor([[-2.0, 0.5, 3.0]]))
        block.global_offset.copy_(torch.tensor([[0.3, -1.0, 2.0]]))
    scale = 0.1 * 2 * torch.log1p(torch.exp(0.5 * torch.tensor([-2.0, 0.5, 3.0], dtype=torch.float64)))  # SOFTPLUS
    offset = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 4
    conditions = torch.randn(6, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = torch.distributions.Normal(-offset / scale, 1 / scale).log_prob(x).sum(dim=1)
    assert torch.allclose(gaussian_log_likelihood(*flow(x, conditions)), expected, atol=1e-10)
    assert torch.allclose(flow_log_likelihood(flow, x, conditions), expected / 3, atol=1e-10)


def test_a_trained_looking_flow_obeys_the_change_of_variables():
    """Random coupling weights: log p(x) = log N(f(x); 0, I) + log |det df/dx|, the Jacobian by autograd."""
    flow = _flow(channels=4, layers=3, seed=3)
    with torch.no_grad():
        for parameter in flow.parameters():
            if parameter.requires_grad:
                parameter.add_(0.5 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(4),
                                                 dtype=parameter.dtype))
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    conditions = torch.randn(5, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    got = gaussian_log_likelihood(*flow(x, conditions))
    for i in range(len(x)):
        jacobian = torch.autograd.functional.jacobian(lambda row: flow(row.unsqueeze(0), conditions[i:i + 1])[0][0],
                                                      x[i])
        z = flow(x[i:i + 1], conditions[i:i + 1])[0][0]
        expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum() + torch.linalg.slogdet(jacobian)[1]
        assert abs(float((got[i] - expected).detach())) < 1e-8


def test_flows_are_seeded_by_the_generator_and_leave_numpy_alone():
    state = np.random.get_state()[1].copy()
    first, second, other = _flow(seed=7), _flow(seed=7), _flow(seed=8)
    assert np.array_equal(np.random.get_state()[1], state)
    assert torch.equal(first.inn[0].w_perm, second.inn[0].w_perm)
    assert not torch.equal(first.inn[0].w_perm, other.inn[0].w_perm)
    rotation = first.inn[0].w_perm.view(3, 3)
    assert torch.allclose(rotation @ rotation.T, torch.eye(3, dtype=rotation.dtype), atol=1e-6)
    assert torch.linalg.det(rotation) > 0


def test_boundaries_are_the_beta_quantile_over_the_normalizer_and_tau_below():
    normal = torch.arange(100.0)  # shuffled order must not matter
    b_n, b_a = boundaries(normal[torch.randperm(100, generator=torch.Generator().manual_seed(0))], 0.05, 0.1, 10.0)
    assert float(b_n) == pytest.approx(0.5) and float(b_a) == pytest.approx(0.4)  # rank 5 = value 5, / 10


def test_semi_push_pull_loss_is_zero_when_every_patch_is_on_its_side():
    b_n, b_a = torch.tensor(0.5), torch.tensor(0.4)
    likelihoods = torch.tensor([6.0, 7.0, 9.0, 3.0, -20.0])  # / 10: normals 0.6, 0.7, 0.9 > b_n; anomalies < b_a
    anomalous = torch.tensor([False, False, False, True, True])
    pull, push = semi_push_pull_loss(likelihoods, anomalous, b_n, b_a, 10.0)
    assert float(pull) == 0 and float(push) == 0
    # a normal below b_n is pulled by b_n - l, an anomaly above b_a pushed by l - b_a (means over those patches)
    likelihoods = torch.tensor([2.0, 4.0, 9.0, 6.0, -20.0], requires_grad=True)
    pull, push = semi_push_pull_loss(likelihoods, anomalous, b_n, b_a, 10.0)
    assert pull.item() == pytest.approx(((0.5 - 0.2) + (0.5 - 0.4)) / 2) and push.item() == pytest.approx(0.2)
    (pull + push).backward()
    assert likelihoods.grad[0] < 0 and likelihoods.grad[3] > 0 and likelihoods.grad[2] == 0


def test_learning_rate_warms_up_from_a_tenth_then_follows_the_cosine():
    assert learning_rate(1.0, 0, 10, 2, True) == pytest.approx(0.1)
    assert learning_rate(1.0, 2, 10, 2, True) == pytest.approx(1e-3 + (1 - 1e-3) * (1 + math.cos(math.pi * 0.2)) / 2)
    assert learning_rate(1.0, 5.5, 10, 0, False) == 1.0


def test_bgad_declares_that_it_trains_and_uses_labelled_anomalies():
    entry = get_entry("bgad")
    assert entry.trains and entry.uses_anomalies and not entry.cheap_fit
    assert not get_entry("patchcore").uses_anomalies
    assert entry.presets["paper"].backbone == "efficientnet_b6" and entry.presets["paper"].levels == (1, 2, 3)


# ----------------------------------------------------------------------------------- training on procedural images
SIZE = 128


def _samples(split: str, indices: range) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedural part_slots images [n,3,S,S] in [0,1] and the union of their defect masks [n,S,S]."""
    config = ProceduralConfig(image_size=SIZE, split="dev")
    samples = [render_sample("part_slots", split, i, config) for i in indices]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() / 255 for s in samples])
    masks = torch.stack([torch.from_numpy(np.any([m for _, m in s.masks], axis=0) if s.masks else
                                          np.zeros((SIZE, SIZE), bool)).float() for s in samples])
    return images, masks


@pytest.fixture(scope="module")
def features():
    return FeatureCache(torch.device("cpu"))


def _fit(support, features, anomalies=None, seed=0, options="meta_epochs=8"):
    method = build_variant(f"bgad:{options}", "offline").create()
    context = FitContext(torch.device("cpu"), torch.Generator().manual_seed(seed), features, anomalies=anomalies)
    torch.manual_seed(seed)
    method.fit(support, category="part_slots", context=context)
    return method


def test_labelled_anomalies_are_separated_from_normals_better_than_with_pseudo_anomalies_alone(features):
    """Pixel AUROC of the labelled anomalies' defect pixels against normal images' pixels, after training with
    them (m = 4) and without (m = 0, pseudo-anomalies only); same seed, same schedule."""
    support, _ = _samples("train", range(4))
    labelled, labelled_masks = _samples("structural_anomalies", range(4))
    good, _ = _samples("good", range(6))

    def separation(method) -> float:
        maps = method.predict(torch.cat([good, labelled])).maps
        truth = torch.cat([torch.zeros(len(good), SIZE, SIZE), labelled_masks])
        return roc_auc_score(truth.flatten().numpy(), maps.flatten().numpy())

    without = _fit(support, features)
    with_labels = _fit(support, features, LabelledAnomalies(labelled, labelled_masks))
    assert without.info()["labelled_anomalies"] == 0 and with_labels.info()["labelled_anomalies"] == 4
    assert with_labels.info()["anomalous_patches"][0] > without.info()["anomalous_patches"][0]
    assert separation(with_labels) > separation(without) + 0.01  # measured 0.932 vs 0.907
    again = _fit(support, features, LabelledAnomalies(labelled, labelled_masks))
    assert torch.equal(again.predict(good[:2]).scores, with_labels.predict(good[:2]).scores)  # deterministic


def test_without_any_anomaly_the_flows_train_by_maximum_likelihood_alone(features):
    support, _ = _samples("train", range(2))
    method = _fit(support, features, options="meta_epochs=3,pseudo_per_image=0")
    info = method.info()
    assert info["pseudo_anomalies"] == 0 and info["anomalous_patches"] == [0, 0] and info["steps"] > 0
    prediction = method.predict(support[:1])
    assert prediction.maps.shape == (1, SIZE, SIZE) and torch.isfinite(prediction.scores).all()
