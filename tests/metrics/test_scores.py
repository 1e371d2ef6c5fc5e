"""Tests for the pure metric functions (metrics package)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import f1_score, roc_auc_score

from metrics import aufc, aupro, auspro, f1_max, image_auroc, pixel_auroc

SEEDS = [0, 1, 2, 3, 4]


# ----------------------------------------------------------------- references
def _ref_area(points: list[tuple[float, float]], limit: float) -> float:
    """Segment-by-segment trapezoid area of a curve given as points (FPR ascending)."""
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 >= limit:
            break
        if x1 <= limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += (limit - x0) * (y0 + y_lim) / 2
            break
    return area / limit


def _ref_curve(regions, normal_scores, thresholds):
    """regions: list of (scores, saturation). Loop over thresholds (slow, obvious)."""
    points = [(0.0, 0.0)]
    for t in thresholds:  # descending
        fpr = float(np.mean(normal_scores >= t))
        ov = np.mean([min(1.0, np.sum(rs >= t) / sat) for rs, sat in regions])
        points.append((fpr, float(ov)))
    return points


def _ref_aupro(masks, maps, limit):
    normal, regions = [], []
    for k, m in zip(masks, maps):
        lab, n = ndimage.label(k != 0, structure=np.ones((3, 3)))
        normal.append(m[lab == 0])
        regions += [(m[lab == r], float(np.sum(lab == r))) for r in range(1, n + 1)]
    normal = np.concatenate(normal)
    thresholds = np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]
    return _ref_area(_ref_curve(regions, normal, thresholds), limit)


def _ref_auspro(gt_masks, maps, defects, limit):
    normal, regions = [], []
    for mask_list, m in zip(gt_masks, maps):
        ok = np.ones(m.shape, bool)
        for k in mask_list:
            nz = k != 0
            thr, rel = defects[int(k[nz][0])]
            area = nz.sum()
            regions.append((m[nz], min(thr * area if rel else thr, area)))
            ok &= ~nz
        normal.append(m[ok])
    normal = np.concatenate(normal)
    thresholds = np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]
    return _ref_area(_ref_curve(regions, normal, thresholds), limit)


def _random_masks_maps(rng, n_img=3, size=8, ties=True):
    masks, maps = [], []
    for _ in range(n_img):
        k = np.zeros((size, size), np.uint8)
        for _ in range(rng.integers(0, 3)):
            r, c = rng.integers(0, size - 2, size=2)
            h, w = rng.integers(1, 4, size=2)
            k[r:r + h, c:c + w] = 1
        m = rng.normal(size=(size, size)) + 1.5 * k
        maps.append(np.round(m, 1) if ties else m)
        masks.append(k)
    if not any(k.any() for k in masks):
        masks[0][2:4, 2:4] = 1
    return masks, maps


# ------------------------------------------------------------- image metrics
@pytest.mark.parametrize("seed", SEEDS)
def test_image_auroc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 50)
    s = np.round(rng.normal(size=50) + y, 1)
    assert image_auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_f1_max_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    s = np.round(rng.normal(size=40) + 0.7 * y, 1)
    ref = max(f1_score(y, (s >= t).astype(int), zero_division=0) for t in np.unique(s))
    assert f1_max(y, s) == pytest.approx(ref, abs=1e-12)


def test_image_metrics_one_class_is_none():
    assert image_auroc([0, 0, 0], [0.1, 0.2, 0.3]) is None
    assert image_auroc([1, 1], [0.1, 0.2]) is None
    assert f1_max([0, 0, 0], [0.1, 0.2, 0.3]) is None
    assert f1_max([1, 1], [0.1, 0.2]) is None


def test_image_metrics_accept_torch_and_validate():
    torch = pytest.importorskip("torch")
    y, s = torch.tensor([0, 1, 0, 1]), torch.tensor([0.1, 0.9, 0.2, 0.8])
    assert image_auroc(y, s) == 1.0
    assert f1_max(y, s) == 1.0
    with pytest.raises(ValueError, match="labels"):
        image_auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="empty"):
        f1_max([], [])


# ------------------------------------------------------------- pixel metrics
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_pixel_auroc_matches_sklearn(seed):
    masks, maps = _random_masks_maps(np.random.default_rng(seed))
    ref = roc_auc_score(np.concatenate([k.ravel() for k in masks]),
                        np.concatenate([m.ravel() for m in maps]))
    assert pixel_auroc(masks, maps) == pytest.approx(ref, abs=1e-12)


def test_pixel_metrics_none_and_errors():
    masks, maps = [np.zeros((4, 4))], [np.random.default_rng(0).random((4, 4))]
    assert pixel_auroc(masks, maps) is None
    assert aupro(masks, maps) is None
    all_anom = [np.ones((4, 4))]
    assert aupro(all_anom, maps) is None  # no normal pixels
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(5, 5\)"):
        pixel_auroc([np.ones((4, 4))], [np.zeros((5, 5))])
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(5, 5\)"):
        aupro([np.ones((4, 4))], [np.zeros((5, 5))])
    with pytest.raises(ValueError, match="masks"):
        pixel_auroc([np.ones((4, 4))] * 2, [np.zeros((4, 4))])
    with pytest.raises(ValueError, match="maps"):
        aupro([], [])
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro([np.ones((4, 4))], [np.zeros((4, 4))], fpr_limit=0.0)


# --------------------------------------------------------------------- AUPRO
def test_aupro_perfect_and_constant_maps():
    k = np.zeros((10, 10), np.uint8)
    k[2:5, 2:5] = 1
    k[7:9, 6:9] = 1
    assert aupro([k], [k.astype(float)], 0.3) == pytest.approx(1.0, abs=1e-12)
    assert aupro([k], [k.astype(float)], 1.0) == pytest.approx(1.0, abs=1e-12)
    # All pixels tied: the curve jumps from (0, 0) straight to (1, 1), so the
    # area up to 0.3 is the triangle 0.3 * 0.3 / 2, normalised by 0.3 -> 0.15.
    const = np.full((10, 10), 0.7)
    assert aupro([k], [const], 0.3) == pytest.approx(0.15, abs=1e-15)
    assert aupro([k], [const], 1.0) == pytest.approx(0.5, abs=1e-15)


def test_aupro_two_regions_hand_computed():
    # Region A (4 px) scores 1.0, region B (4 px) scores 0.2; of the 92 normal
    # pixels 46 score 0.5 and 46 score 0.0.  Thresholds (descending):
    #   t=1.0: PRO=(1+0)/2=0.5, FPR=0   t=0.5: PRO=0.5, FPR=0.5
    #   t=0.2: PRO=1.0, FPR=0.5         t=0.0: PRO=1.0, FPR=1.0
    # Curve (0,0)-(0,.5)-(.5,.5)-(.5,1)-(1,1):
    #   AUPRO@0.3 = 0.5 * 0.3 / 0.3 = 0.5;  AUPRO@1 = 0.5*0.5 + 0.5*1 = 0.75.
    k = np.zeros((10, 10), np.uint8)
    k[0:2, 0:2] = 1
    k[7:9, 7:9] = 1
    m = np.zeros((10, 10))
    normal_idx = np.flatnonzero(k.ravel() == 0)
    m.ravel()[normal_idx[:46]] = 0.5
    m[0:2, 0:2] = 1.0
    m[7:9, 7:9] = 0.2
    assert aupro([k], [m], 0.3) == pytest.approx(0.5, abs=1e-12)
    assert aupro([k], [m], 1.0) == pytest.approx(0.75, abs=1e-12)


def test_aupro_uses_8_connectivity():
    # (0,0) and (1,1) touch diagonally -> one 2-px region; (5,5) is a second region.
    # Only (0,0) scores above the normals (0.5): PRO at FPR 0 is (1/2 + 0)/2 = 0.25,
    # then it stays 0.25 until FPR 1.  With 4-connectivity it would be 1/3.
    k = np.zeros((8, 8), np.uint8)
    k[0, 0] = k[1, 1] = k[5, 5] = 1
    m = np.full((8, 8), 0.5)
    m[0, 0], m[1, 1], m[5, 5] = 1.0, 0.0, 0.0
    assert aupro([k], [m], 0.3) == pytest.approx(0.25, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_aupro_matches_brute_force(seed, limit):
    masks, maps = _random_masks_maps(np.random.default_rng(seed), ties=seed % 2 == 0)
    assert aupro(masks, maps, limit) == pytest.approx(_ref_aupro(masks, maps, limit), abs=1e-10)


def test_aupro_accepts_torch():
    torch = pytest.importorskip("torch")
    masks, maps = _random_masks_maps(np.random.default_rng(7))
    ref = aupro(masks, maps)
    assert aupro([torch.from_numpy(k) for k in masks], [torch.from_numpy(m) for m in maps]) == ref


# -------------------------------------------------------------------- AU-sPRO
def test_auspro_absolute_saturation_hand_computed():
    # 100-px region, saturation 50 px; exactly 50 of its pixels outscore every
    # normal pixel -> sPRO = 1 already at FPR 0 -> AU-sPRO = 1 at every limit.
    k = np.zeros((20, 20), np.uint8)
    k[0:5, :] = 3
    m = np.full((20, 20), 0.5)
    m[0:5, :] = 0.0
    m[0:2, 0:20] = 1.0
    m[2, 0:10] = 1.0
    res = auspro([[k]], [m], {3: (50, False)})
    assert set(res) == {0.01, 0.05, 0.1, 0.3, 1.0}
    for v in res.values():
        assert v == pytest.approx(1.0, abs=1e-12)
    # Relative saturation 1.0 (s = area) is plain PRO here: 50/100 at FPR 0, 0.5
    # until FPR 1 -> 0.5 for limits < 1; with limit 1: 0.5 (vertical jump at 1).
    res = auspro([[k]], [m], {3: (1.0, True)}, fpr_limits=(0.3, 1.0))
    assert res[0.3] == pytest.approx(0.5, abs=1e-12)
    assert res[1.0] == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_auspro_relative_one_equals_pro_for_single_region(seed):
    rng = np.random.default_rng(seed)
    k = np.zeros((12, 12), np.uint8)
    k[3:7, 2:9] = 2
    m = np.round(rng.normal(size=(12, 12)) + k / 2, 1)
    limits = (0.01, 0.1, 0.3, 1.0)
    res = auspro([[k]], [m], {2: (1.0, True)}, fpr_limits=limits)
    for lim in limits:
        assert res[lim] == pytest.approx(aupro([k], [m], lim), abs=1e-12)
    # Absolute saturation larger than the area is capped at the area -> PRO too.
    res = auspro([[k]], [m], {2: (1000, False)}, fpr_limits=limits)
    for lim in limits:
        assert res[lim] == pytest.approx(aupro([k], [m], lim), abs=1e-12)


def test_auspro_several_masks_and_good_image():
    # Image 0: mask A (value 1, rows 0-1 = 20 px, absolute s=10), mask B (value 2,
    # rows 8-9 = 20 px, relative 0.5 -> s=10).  A: 10 px at 0.9, rest 0.0; B: all 0.1.
    # 60 normal px: 30 at 0.5, 30 at 0.0.  Image 1 (good): 100 px at 0.0.
    # N = 160 normal pixels.  Thresholds: 0.9 -> (FPR 0, mean sPRO 0.5);
    # 0.5 -> (30/160, 0.5); 0.1 -> (30/160, 1.0); 0.0 -> (1, 1).
    # AU-sPRO@0.3 = (0.5 * 30/160 + 1.0 * (0.3 - 30/160)) / 0.3;  @0.1 = 0.5.
    a = np.zeros((10, 10), np.uint8)
    a[0:2] = 1
    b = np.zeros((10, 10), np.uint8)
    b[8:10] = 2
    m = np.zeros((10, 10))
    m[0, :] = 0.9
    m[2:5, :] = 0.5
    m[8:10, :] = 0.1
    defects = {1: (10, False), 2: (0.5, True)}
    res = auspro([[a, b], []], [m, np.zeros((10, 10))], defects, fpr_limits=(0.1, 0.3))
    f = 30 / 160
    assert res[0.1] == pytest.approx(0.5, abs=1e-12)
    assert res[0.3] == pytest.approx((0.5 * f + (0.3 - f)) / 0.3, abs=1e-12)


def test_auspro_overlapping_masks_count_for_both():
    # Two masks share the same 4 pixels, which score 1 over normals at 0:
    # both regions saturate at FPR 0 -> 1.0; none of the shared pixels is normal.
    a = np.zeros((6, 6), np.uint8)
    a[1:3, 1:3] = 1
    b = a * 2
    m = a.astype(float)
    res = auspro([[a, b]], [m], {1: (1.0, True), 2: (2, False)}, fpr_limits=(0.3,))
    assert res[0.3] == pytest.approx(1.0, abs=1e-12)


def test_auspro_none_and_errors():
    m = np.zeros((5, 5))
    assert auspro([[], []], [m, m], {1: (1.0, True)}) == {
        lim: None for lim in (0.01, 0.05, 0.1, 0.3, 1.0)}
    k = np.zeros((5, 5), np.uint8)
    k[1, 1] = 7
    with pytest.raises(ValueError, match="7"):
        auspro([[k]], [m], {1: (1.0, True)})
    with pytest.raises(ValueError, match=r"\(5, 5\).*\(4, 4\)"):
        auspro([[k]], [np.zeros((4, 4))], {7: (1.0, True)})
    with pytest.raises(ValueError, match="gt_masks"):
        auspro([[k], []], [m], {7: (1.0, True)})


@pytest.mark.parametrize("seed", SEEDS)
def test_auspro_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    defects = {1: (5, False), 2: (0.5, True), 3: (1.0, True), 4: (40, False)}
    gt, maps = [], []
    for i in range(3):
        masks = []
        for _ in range(rng.integers(0 if i else 1, 4)):  # image 0 always anomalous
            k = np.zeros((9, 9), np.uint8)
            r, c = rng.integers(0, 6, size=2)
            h, w = rng.integers(1, 5, size=2)
            k[r:r + h, c:c + w] = rng.integers(1, 5)
            k[rng.integers(0, 9), rng.integers(0, 9)] = k.max()  # maybe a second component
            masks.append(k)
        gt.append(masks)
        anomalous = sum((k != 0).astype(float) for k in masks) if masks else 0
        maps.append(np.round(rng.normal(size=(9, 9)) + anomalous, 1 if seed % 2 else 3))
    limits = (0.01, 0.05, 0.1, 0.3, 1.0)
    res = auspro(gt, maps, defects, limits)
    for lim in limits:
        assert res[lim] == pytest.approx(_ref_auspro(gt, maps, defects, lim), abs=1e-10)


# ---------------------------------------------------------------------- AUFC
def test_aufc_hand_computed():
    # 0.5*(0.8+0.85)*1 + 0.5*(0.85+0.9)*2 + 0.5*(0.9+0.95)*4
    #   = 0.825 + 1.75 + 3.7 = 6.275;  normalised 6.275 / (8 - 1) = 0.896428...
    area, norm = aufc([1, 2, 4, 8], [0.8, 0.85, 0.9, 0.95])
    assert area == pytest.approx(6.275, abs=1e-12)
    assert norm == pytest.approx(6.275 / 7, abs=1e-12)
    # order of the pairs does not matter
    area2, norm2 = aufc([8, 1, 4, 2], [0.95, 0.8, 0.9, 0.85])
    assert (area2, norm2) == pytest.approx((area, norm), abs=1e-12)


def test_aufc_none_and_errors():
    assert aufc([4], [0.9]) == (None, None)
    assert aufc([4, 4], [0.9, 0.8]) == (None, None)
    with pytest.raises(ValueError, match="mean_f1"):
        aufc([1, 2], [0.5])
    with pytest.raises(ValueError, match="k_values"):
        aufc([], [])
