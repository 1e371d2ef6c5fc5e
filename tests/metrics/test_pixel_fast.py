"""The one-sort pixel metrics (metrics.pixel) against the previous implementation (tests/oracles/pixel_reference.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from metrics import aupro, auspro, pixel_auroc, pixel_scores, prepare_truth
from metrics import pixel as fast
from tests.oracles import pixel_reference as ref

LIMITS = (0.01, 0.05, 0.1, 0.3, 1.0)
DEFECTS = {1: (7, False), 2: (0.5, True), 3: (1.0, True), 4: (60, False), 5: (0.3, False), 6: (2.5, False),
           7: (0.01, True)}
LOCO = Path(__file__).resolve().parents[3] / "shared" / "data" / "mvtec_loco" / "juice_bottle"


def _scene(seed: int, n_images: int = 5, size: tuple[int, int] = (17, 23), dtype=np.float64, decimals: int | None = 1):
    """Random maps and several masks per image: rectangles with a stray pixel, overlapping masks, empty
    masks, good images; maps = noise + masks, rounded to `decimals` (ties) or not."""
    rng = np.random.default_rng(seed)
    gt, maps = [], []
    for i in range(n_images):
        masks = []
        for _ in range(rng.integers(0 if i else 1, 4)):  # image 0 is always anomalous
            k = np.zeros(size, np.uint8)
            value = int(rng.integers(1, 8))
            if rng.random() < 0.9:
                r, c = rng.integers(0, size[0] - 3), rng.integers(0, size[1] - 3)
                h, w = rng.integers(1, 8, size=2)
                k[r:r + h, c:c + w] = value
                k[rng.integers(0, size[0]), rng.integers(0, size[1])] = value  # maybe a second component
            masks.append(k)
        gt.append(masks)
        anomalous = sum((k != 0).astype(float) for k in masks) if masks else 0
        m = rng.normal(size=size) + 1.2 * anomalous
        maps.append((np.round(m, decimals) if decimals is not None else m).astype(dtype))
    return gt, maps


def _unions(gt, maps):
    return [np.any(np.stack(m), axis=0) if m else np.zeros(a.shape, bool) for m, a in zip(gt, maps)]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("dtype,decimals", [(np.float64, 1), (np.float32, 2), (np.float32, None), (np.float64, None)])
def test_fast_equals_reference_on_random_scenes(seed, dtype, decimals):
    gt, maps = _scene(seed, dtype=dtype, decimals=decimals)
    unions = _unions(gt, maps)
    assert pixel_auroc(unions, maps) == pytest.approx(ref.pixel_auroc(unions, maps), abs=1e-12)
    for lim in LIMITS:
        expected = ref.aupro(unions, maps, lim)
        got = aupro(unions, maps, lim)
        assert (got is None) == (expected is None)
        if expected is not None:
            assert got == pytest.approx(expected, abs=1e-10)
    expected = ref.auspro(gt, maps, DEFECTS, LIMITS)
    got = auspro(gt, maps, DEFECTS, LIMITS)
    for lim in LIMITS:
        assert got[lim] == pytest.approx(expected[lim], abs=1e-10)


@pytest.mark.parametrize("seed", range(6))
def test_pixel_scores_subsets_equal_separate_calls(seed):
    gt, maps = _scene(seed + 100, n_images=7)
    subsets = {"all": range(7), "odd": [1, 3, 5], "first": [0, 1, 2, 4], "same_as_all": list(range(7)), "none": []}
    scores = pixel_scores(gt, maps, DEFECTS, pro_limits=(0.05, 0.3), spro_limits=LIMITS, subsets=subsets)
    unions = _unions(gt, maps)
    assert scores.pixel_auroc == pytest.approx(ref.pixel_auroc(unions, maps), abs=1e-12)
    for lim in (0.05, 0.3):
        assert scores.aupro[lim] == pytest.approx(ref.aupro(unions, maps, lim), abs=1e-10)
    for name, index in subsets.items():
        index = list(index)
        if not index:
            assert scores.auspro[name] == {lim: None for lim in LIMITS}
            continue
        expected = ref.auspro([gt[i] for i in index], [maps[i] for i in index], DEFECTS, LIMITS)
        for lim in LIMITS:
            if expected[lim] is None:
                assert scores.auspro[name][lim] is None
            else:
                assert scores.auspro[name][lim] == pytest.approx(expected[lim], abs=1e-10)


def test_saturation_ranks_hand_built():
    # One 3x4 region (value 6: absolute saturation 2.5 px) whose pixels score 12 distinct values above every
    # normal pixel (0): the 2 best add 1/2.5 each, the third 0.5/2.5 -> sPRO 1 from FPR 0 on. A second mask
    # (value 2: relative 0.5 -> s = 6 of its 12 px) sharing the same pixels, all tied at its own best score.
    k = np.zeros((6, 8), np.uint8)
    k[1:4, 2:6] = 6
    m = np.zeros((6, 8))
    m[1:4, 2:6] = np.arange(1, 13).reshape(3, 4)
    assert auspro([[k]], [m], DEFECTS, (0.05, 1.0)) == pytest.approx({0.05: 1.0, 1.0: 1.0}, abs=1e-12)
    # Only the 2 best above the normals (others at 0 like the normals: tied runs).
    m2 = np.where(m > 10, m, 0.0)
    expected = ref.auspro([[k, (k != 0) * 2]], [m2], DEFECTS, LIMITS)
    got = auspro([[k, (k != 0).astype(np.uint8) * 2]], [m2], DEFECTS, LIMITS)
    for lim in LIMITS:
        assert got[lim] == pytest.approx(expected[lim], abs=1e-12)


def test_constant_maps_and_single_class():
    gt, maps = _scene(3)
    const = [np.full(m.shape, 0.25) for m in maps]
    unions = _unions(gt, maps)
    assert pixel_auroc(unions, const) == pytest.approx(0.5, abs=1e-12)
    for lim in LIMITS:
        assert aupro(unions, const, lim) == pytest.approx(ref.aupro(unions, const, lim), abs=1e-12)
    scores = pixel_scores([[]] * 3, maps[:3], DEFECTS)
    assert scores.pixel_auroc is None and scores.aupro == {0.3: None} and scores.auspro == {"all": {0.05: None}}


def test_torch_ranking_equals_numpy():
    rng = np.random.default_rng(5)
    normals = [np.round(rng.normal(size=n), 1).astype(np.float32) for n in (300, 0, 41)]
    values = np.round(rng.normal(size=200), 1).astype(np.float32)
    order_np, counted_np, equal_np = fast._rank([n.copy() for n in normals], values, None)
    order_t, counted_t, equal_t = fast._rank_torch([n.copy() for n in normals], values, "cpu")
    np.testing.assert_array_equal(values[order_np], values[order_t])
    np.testing.assert_array_equal(counted_np, counted_t)
    np.testing.assert_array_equal(equal_np, equal_t)


def test_argsort_float32_packed():
    rng = np.random.default_rng(0)
    v = np.round(rng.normal(size=5000), 2).astype(np.float32)
    v[:5] = [-0.0, 0.0, np.inf, -np.inf, -1e-40]
    np.testing.assert_array_equal(v[fast._argsort(v)], np.sort(v))


def test_pixel_scores_validates():
    gt, maps = _scene(1)
    with pytest.raises(ValueError, match="subsets"):
        pixel_scores(gt, maps, DEFECTS, subsets={"x": [0, 99]})
    with pytest.raises(ValueError, match="spro_limits"):
        pixel_scores(gt, maps, DEFECTS, spro_limits=(0.0,))
    with pytest.raises(ValueError, match="gt_masks"):
        pixel_scores(gt[:2], maps, DEFECTS)


def test_prepared_masks_give_the_same_numbers_for_every_set_of_maps():
    gt, maps = _scene(7, n_images=6)
    truth = prepare_truth(gt, [m.shape for m in maps], DEFECTS)
    subsets = {"all": range(6), "odd": [1, 3, 5]}
    for shift in (0.0, 0.7):  # two methods' maps against the one prepared truth
        other = [m + shift * np.sin(np.arange(m.size).reshape(m.shape)) for m in maps]
        assert pixel_scores(truth, other, subsets=subsets) == pixel_scores(gt, other, DEFECTS, subsets=subsets)
    assert pixel_scores(prepare_truth(gt, [m.shape for m in maps]), maps).auspro == {}  # no defects: no AU-sPRO
    with pytest.raises(ValueError, match=r"gt_masks\[0\] has shape .* but maps\[0\]"):
        pixel_scores(truth, [m[:, 1:] for m in maps])
    with pytest.raises(ValueError, match="shapes has 5"):
        prepare_truth(gt, [m.shape for m in maps][:5])


# --------------------------------------------------------------- real LOCO masks at full resolution
def _loco_masks(n_anomalous: int = 5, n_good: int = 2):
    from PIL import Image

    if not LOCO.is_dir():
        pytest.skip(f"{LOCO} is not here")
    masks = []
    for folder in sorted((LOCO / "ground_truth" / "logical_anomalies").iterdir())[:: 142 // n_anomalous][:n_anomalous]:
        masks.append([np.asarray(Image.open(p).convert("L")) for p in sorted(folder.glob("*.png"))])
    shape = masks[0][0].shape
    return masks + [[] for _ in range(n_good)], shape


def _synthetic(masks, shape, seed: int, upsampled: bool):
    """Blurred union + noise per image; at 64x64 resized bilinearly to the mask resolution (many ties) or
    at the mask resolution."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = []
    for m in masks:
        union = (np.any(np.stack(m), axis=0) if m else np.zeros(shape, bool)).astype(np.float32)
        if upsampled:
            small = torch.nn.functional.interpolate(torch.from_numpy(union)[None, None], size=(64, 64), mode="area")
            small = small + torch.from_numpy(rng.normal(0, 0.4, (1, 1, 64, 64)).astype(np.float32))
            out.append(torch.nn.functional.interpolate(small, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy())
        else:
            out.append(ndimage.gaussian_filter(union, 10.0) + rng.normal(0, 0.4, shape).astype(np.float32))
    return out


@pytest.mark.parametrize("upsampled", [True, False])
def test_fast_equals_reference_on_real_loco_masks(upsampled):
    masks, shape = _loco_masks()
    defects = {255: (17600, False)}
    maps = _synthetic(masks, shape, 0, upsampled)
    unions = [np.any(np.stack(m), axis=0) if m else np.zeros(shape, bool) for m in masks]
    scores = pixel_scores(masks, maps, defects, pro_limits=(0.3,), spro_limits=(0.05, 0.3),
                          subsets={"all": range(len(masks)), "part": [0, 2, 5, 6]})
    assert scores.pixel_auroc == pytest.approx(ref.pixel_auroc(unions, maps), abs=1e-10)
    assert scores.aupro[0.3] == pytest.approx(ref.aupro(unions, maps, 0.3), abs=1e-9)
    for name, index in (("all", range(len(masks))), ("part", [0, 2, 5, 6])):
        expected = ref.auspro([masks[i] for i in index], [maps[i] for i in index], defects, (0.05, 0.3))
        for lim in (0.05, 0.3):
            assert scores.auspro[name][lim] == pytest.approx(expected[lim], abs=1e-9)


def test_cell_pixel_metrics_equal_reference_with_both_kinds():
    from submission.cell_metrics import GroundTruth, pixel_metrics

    masks, shape = _loco_masks(n_anomalous=4, n_good=2)
    # Two of the anomalies called structural, so that the per-kind subsets differ from the whole set; one
    # structural image with a second, overlapping mask of another defect type.
    masks[3] = masks[3] + [(masks[3][0] != 0).astype(np.uint8) * 254]
    kinds = ("logical", "logical", "structural", "structural", None, None)
    truth = GroundTruth((), np.array([1, 1, 1, 1, 0, 0]), kinds, (shape,) * 6, tuple(masks),
                        {255: (17600, False), 254: (0.5, True)})
    maps = _synthetic(masks, shape, 1, True)
    new, old = pixel_metrics(truth, maps), ref.cell_pixel_metrics(truth, maps)
    assert set(new) == set(old)
    for key, value in old.items():
        assert value is not None
        assert new[key] == pytest.approx(value, abs=1e-9), key


def test_maps_at_mask_resolution_batched_equals_per_image():
    from submission.cell_metrics import maps_at_mask_resolution

    maps = torch.rand(5, 16, 16, generator=torch.Generator().manual_seed(0))
    sizes = ((40, 30), (33, 50), (40, 30), (33, 50), (40, 30))
    out = maps_at_mask_resolution(maps, sizes)
    for m, size, got in zip(maps, sizes, out):
        expected = torch.nn.functional.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        assert got.shape == size and got.dtype == np.float32
        np.testing.assert_array_equal(got, expected.numpy())


def test_mixed_dtypes_and_torch_inputs():
    gt, maps = _scene(9, n_images=4)
    maps = [maps[0].astype(np.float32), maps[1].astype(np.float16), (maps[2] * 10).astype(np.int64), maps[3]]
    unions = _unions(gt, maps)
    assert pixel_auroc(unions, maps) == pytest.approx(ref.pixel_auroc(unions, maps), abs=1e-12)
    assert aupro(unions, maps, 0.3) == pytest.approx(ref.aupro(unions, maps, 0.3), abs=1e-10)
    expected = ref.auspro(gt, maps, DEFECTS, LIMITS)
    got = auspro([[torch.from_numpy(k) for k in m] for m in gt], [torch.from_numpy(m) for m in maps], DEFECTS, LIMITS)
    for lim in LIMITS:
        assert got[lim] == pytest.approx(expected[lim], abs=1e-10)
