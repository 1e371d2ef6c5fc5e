import numpy as np
import pytest
from scipy.stats import wilcoxon

from metrics import f1_max, image_auroc
from metrics.bootstrap import (bootstrap_ci, bootstrap_replicates, paired_comparison, percentile_interval,
                               resample_counts, stratified_resample, weighted_auroc_f1)


def _noisy_cell(n_good=20, n_bad=15, seed=3):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n_good, int), np.ones(n_bad, int)]
    scores = np.r_[rng.normal(0, 1, n_good), rng.normal(1, 1, n_bad)].round(1)  # rounded: ties on purpose
    return labels, scores


def test_perfectly_separated_cell_has_interval_one_one():
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9, 1.0])
    ci = bootstrap_ci(labels, scores, n_resamples=500, seed=0)
    assert ci["image_auroc"] == (1.0, 1.0) and ci["f1_max"] == (1.0, 1.0)


def test_fixed_seed_reproduces_the_intervals():
    labels, scores = _noisy_cell()
    assert bootstrap_ci(labels, scores, seed=7) == bootstrap_ci(labels, scores, seed=7)
    assert bootstrap_ci(labels, scores, seed=7) != bootstrap_ci(labels, scores, seed=8)


def test_stratified_resample_keeps_the_class_counts():
    labels = np.array([1, 0, 0, 1, 0, 1, 1, 0, 0])
    idx = stratified_resample(labels, n_resamples=200, seed=1)
    assert idx.shape == (200, labels.size)
    assert (labels[idx] == labels).all()  # every draw comes from its column's class
    counts = resample_counts(idx, labels.size)
    assert (counts[:, labels == 1].sum(axis=1) == 4).all() and (counts[:, labels == 0].sum(axis=1) == 5).all()
    assert len({tuple(row) for row in idx}) > 1  # with replacement, not a permutation of one draw


def test_replicates_equal_the_metrics_on_the_resampled_arrays():
    labels, scores = _noisy_cell()
    idx = stratified_resample(labels, n_resamples=30, seed=5)
    auroc, f1 = weighted_auroc_f1(labels, scores, resample_counts(idx, labels.size))
    for b in range(30):
        assert auroc[b] == pytest.approx(image_auroc(labels[idx[b]], scores[idx[b]]), abs=1e-12)
        assert f1[b] == pytest.approx(f1_max(labels[idx[b]], scores[idx[b]]), abs=1e-12)
    point_auroc, point_f1 = weighted_auroc_f1(labels, scores, np.ones((1, labels.size)))
    assert point_auroc[0] == pytest.approx(image_auroc(labels, scores)) and point_f1[0] == pytest.approx(f1_max(labels, scores))


def test_interval_contains_the_point_estimate():
    labels, scores = _noisy_cell()
    ci = bootstrap_ci(labels, scores)
    for name, point in (("image_auroc", image_auroc(labels, scores)), ("f1_max", f1_max(labels, scores))):
        low, high = ci[name]
        assert low < point < high and high - low < 0.6


def test_one_class_cell_has_no_interval():
    replicates = bootstrap_replicates(np.zeros(5), np.arange(5.0), n_resamples=10)
    assert np.isnan(replicates["image_auroc"]).all()
    assert np.isnan(percentile_interval(replicates["f1_max"])).all()


def test_percentile_interval_by_hand():
    assert percentile_interval(np.arange(101.0), level=0.9) == pytest.approx((5.0, 95.0))


def test_wilcoxon_matches_scipy_on_a_hand_made_table():
    a = np.array([0.81, 0.75, 0.90, 0.66, 0.72, 0.88, 0.79, 0.70])
    b = np.array([0.78, 0.77, 0.85, 0.60, 0.73, 0.80, 0.79, 0.64])
    result = paired_comparison(a, b)
    d = a - b
    assert result.n == 8 and result.mean_diff == pytest.approx(d.mean())
    assert result.p_value == pytest.approx(wilcoxon(d).pvalue)
    assert (result.n_positive, result.n_negative) == (5, 2)
    assert result.ci_low <= result.mean_diff <= result.ci_high


def test_all_differences_positive_gives_a_small_p():
    a = np.linspace(0.7, 0.9, 8)
    b = a - np.linspace(0.01, 0.08, 8)  # 8 distinct positive differences
    result = paired_comparison(a, b)
    assert result.p_value == pytest.approx(2 / 2 ** 8)  # exact two-sided null: only all-positive or all-negative
    assert result.ci_low > 0


def test_identical_methods_give_p_one_and_a_zero_interval():
    a = np.array([0.5, 0.6, 0.7])
    result = paired_comparison(a, a)
    assert result.p_value == 1.0 and (result.mean_diff, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0)
    assert np.isnan(paired_comparison([], []).p_value)
