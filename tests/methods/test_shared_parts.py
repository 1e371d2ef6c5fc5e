"""The shared method parts: content cache, image digest, standardiser, augmentation, warp, seeded initialisation."""
import math

import numpy as np
import pytest
import torch

from methods.augment import AugmentConfig, PseudoAnomalyConfig, augment, augmented_views, pseudo_anomalies
from methods.cache import ContentCache, DigestMemo, image_digest
from methods.common import Normalise, rotation_matrices, seeded_from, warp
from methods.standardise import Standardiser


def _tensor(n_floats: int, value: float = 0.0) -> torch.Tensor:
    return torch.full((n_floats,), value, dtype=torch.float32)  # 4 bytes a value


def test_cache_keeps_at_most_its_bytes_and_evicts_the_least_recently_used():
    cache = ContentCache(max_bytes=3 * 400)
    for key in "abc":
        cache.put(key, _tensor(100))
    assert cache.bytes == 1200 and len(cache) == 3
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("d", (_tensor(50), _tensor(50)))  # a tuple counts all its tensors
    assert "b" not in cache and all(key in cache for key in "acd") and cache.bytes == 1200
    cache.put("a", _tensor(200))  # replacing a key counts its new size only
    assert cache.bytes <= 1200 and "a" in cache and "c" not in cache


def test_cache_never_keeps_a_value_larger_than_its_bound_but_returns_it():
    cache = ContentCache(max_bytes=200)
    cache.put("big", _tensor(100))
    assert len(cache) == 0 and cache.bytes == 0
    values = cache.get_many(["x", "y"], lambda missing: [_tensor(20, i) for i in missing])
    assert [float(v[0]) for v in values] == [0.0, 1.0] and cache.bytes == 160  # kept
    values = cache.get_many(["x", "z", "w"], lambda missing: [_tensor(20, 10 + i) for i in missing])
    assert [float(v[0]) for v in values] == [0.0, 11.0, 12.0]  # z evicts y, then w evicts x: all returned
    assert list(cache._entries) == ["z", "w"] and cache.bytes == 160
    with pytest.raises(ValueError, match="max_bytes"):
        ContentCache(-1)


def test_digest_memo_hashes_each_kept_image_once_and_forgets_on_a_write():
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    memo = DigestMemo()
    expected = [image_digest(image) for image in images]
    assert memo.digests(images[2:5]) == expected[2:5] and memo.hashed == 3
    assert memo.digests(images[1:4]) == expected[1:4] and memo.hashed == 4  # rows 2, 3 remembered: only row 1
    assert memo.digests(images) == expected and memo.hashed == 6  # rows 0 and 5
    assert memo.digests(images.clone()) == expected and memo.hashed == 12  # other storage: hashed again
    images[3, 0, 0, 0] += 1.0  # a write: the memo must not serve the old digest
    assert memo.digests(images[3:4]) == [image_digest(images[3])] != [expected[3]]
    strided = images[::2]  # same storage, other rows
    assert memo.digests(strided) == [image_digest(image) for image in strided]
    with torch.inference_mode():
        inference = torch.rand(2, 3, 8, 8)
    assert memo.digests(inference) == [image_digest(image) for image in inference]


def test_image_digest_depends_on_the_pixels_only():
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert image_digest(image) == image_digest(image.clone()) == image_digest(image.double())
    assert image_digest(image) == image_digest(image.permute(0, 2, 1).contiguous().permute(0, 2, 1))
    changed = image.clone()
    changed[1, 4, 4] += 1e-3
    assert image_digest(changed) != image_digest(image) and len(image_digest(image)) == 16


def test_standardiser_matches_numpy_with_ddof_0():
    values = torch.randn(7, 3, 5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 2
    array = values.numpy()
    overall = Standardiser.fit(values)
    assert np.isclose(float(overall.mean), array.mean()) and np.isclose(float(overall.scale), array.std())
    channels = Standardiser.fit(values, dim=(0, 2, 3))
    expected = (array - array.mean(axis=(0, 2, 3), keepdims=True)) / array.std(axis=(0, 2, 3), keepdims=True)
    assert np.allclose(channels(values).numpy(), expected)
    assert channels.facts()["std"] == pytest.approx(list(array.std(axis=(0, 2, 3))))


def test_standardiser_floors_and_constant_values():
    values = torch.tensor([[10.0, 3.0], [10.1, 3.0], [9.9, 3.0]])
    stats = Standardiser.fit(values, dim=0, relative_floor=0.5)
    assert torch.allclose(stats.scale, torch.tensor([[5.0, 1.5]]))  # 0.5 * |mean| beats the small std
    constant = Standardiser.fit(torch.full((4,), 2.0))
    assert float(constant.scale) == 1.0 and torch.equal(constant(torch.tensor([2.0, 3.0])), torch.tensor([0.0, 1.0]))
    assert constant(torch.ones(2, dtype=torch.float32)).dtype == torch.float32


def test_augmentation_identity_range_determinism_and_one_stream_for_every_config():
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    identity = augment(images, AugmentConfig(), torch.Generator().manual_seed(1))
    assert torch.allclose(identity, images, atol=1e-5)
    config = AugmentConfig(hflip_p=0.5, vflip_p=0.5, max_degrees=10, brightness=0.3, contrast=0.3, saturation=0.3)
    first = augment(images, config, torch.Generator().manual_seed(1))
    assert first.min() >= 0 and first.max() <= 1 and not torch.allclose(first, images, atol=1e-3)
    assert torch.equal(first, augment(images, config, torch.Generator().manual_seed(1)))
    # every config draws the same values: the generator's state afterwards does not depend on it
    a, b = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    augment(images, AugmentConfig(), a), augment(images, config, b)
    assert torch.equal(a.get_state(), b.get_state())
    views = augmented_views(images[:2], 5, AugmentConfig(), torch.Generator())
    assert torch.allclose(views, images[[0, 1, 0, 1, 0]], atol=1e-5)  # view i is of image i mod k


def test_warp_identity_and_half_turn():
    maps = torch.rand(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(warp(maps, rotation_matrices(torch.zeros(2))), maps, atol=1e-6)
    half_turn = warp(maps, rotation_matrices(torch.full((2,), math.pi)))
    assert torch.allclose(half_turn, maps.flip(-1).flip(-2), atol=1e-5)


def test_seeded_from_draws_the_seed_from_the_generator_and_leaves_the_global_rng_alone():
    def build(seed: int) -> torch.Tensor:
        with seeded_from(torch.Generator().manual_seed(seed)):
            return torch.nn.Linear(4, 4).weight.detach().clone()

    state = torch.random.get_rng_state()
    assert torch.equal(build(0), build(0)) and not torch.equal(build(0), build(1))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_normalise_uses_its_statistics():
    normalise = Normalise((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert torch.allclose(normalise(torch.ones(1, 3, 2, 2)), torch.full((1, 3, 2, 2), 2.0))


@pytest.mark.parametrize("spec", ["patchcore:coreset_ratio=0.5", "simplenet:meta_epochs=1,augment_views=1",
                                  "gcad:steps=2,train_views=4,stat_views=2", "clip_logic",
                                  "regad:train_epochs=0,input_size=32"])
def test_a_fit_depends_on_the_cell_generator_only_not_on_the_global_rng(spec):
    from methods.features import FeatureCache
    from methods.base import FitContext
    from methods.registry import create_method

    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    features = FeatureCache(torch.device("cpu"), pretrained=False)
    scores = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        method = create_method(spec, "offline")
        method.fit(images[:2], category="toy",
                   context=FitContext(torch.device("cpu"), torch.Generator().manual_seed(5), features))
        scores.append(method.predict(images[2:]).scores)
    assert torch.equal(scores[0], scores[1])


def test_pseudo_anomalies_change_exactly_their_mask_with_a_region_of_the_image():
    images = torch.rand(6, 3, 40, 60)
    config = PseudoAnomalyConfig(jitter=AugmentConfig())  # no jitter: the pasted region is a copy from the image
    out, masks = pseudo_anomalies(images, config, torch.Generator().manual_seed(3))
    changed = (out != images).any(dim=1)
    assert masks.shape == (6, 40, 60) and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert not changed[masks == 0].any()  # nothing outside the mask moves; inside: a region of the same image
    areas = masks.mean(dim=(1, 2))
    assert ((areas > 0.01) & (areas < 0.1)).all()
    pasted = out[0][:, masks[0] > 0]
    assert {round(v, 4) for v in pasted.flatten().tolist()} <= {round(v, 4) for v in images[0].flatten().tolist()}
    again, _ = pseudo_anomalies(images, config, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)  # the generator alone decides


@pytest.mark.parametrize("shape", [(32, 32, 256, 256, 4.0), (7, 11, 40, 64, 4.0), (9, 9, 36, 36, 0.0),
                                   (28, 28, 224, 224, 2.0)])
def test_upsample_and_blur_is_bilinear_upsampling_then_the_blur(shape):
    import torch.nn.functional as F

    from methods.common import gaussian_blur, upsample_and_blur
    h, w, height, width, sigma = shape
    torch.manual_seed(0)
    scores = torch.rand(3, h, w) * 10
    upsampled = F.interpolate(scores.unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False)
    reference = gaussian_blur(upsampled.squeeze(1), sigma)
    assert torch.allclose(upsample_and_blur(scores, (height, width), sigma), reference, atol=1e-5)


def test_gaussian_blur_keeps_a_constant_map_and_the_mass_of_a_peak():
    from methods.common import gaussian_blur
    constant = torch.full((1, 40, 40), 3.0)
    assert torch.allclose(gaussian_blur(constant, 4.0), constant, atol=1e-5)
    peak = torch.zeros(1, 41, 41)
    peak[0, 20, 20] = 1.0
    blurred = gaussian_blur(peak, 2.0)
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-5) and float(blurred[0, 20, 20]) == blurred.max()
