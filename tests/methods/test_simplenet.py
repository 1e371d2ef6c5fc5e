"""SimpleNet: shapes and ranges of every stage, the truncated L1 loss, short training on procedural images,
determinism."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

import methods.simplenet  # noqa: F401  (registers "simplenet")
from methods.features import FeatureCache
from methods.augment import augment
from methods.cell import CellSetting, fit_method
from methods.registry import build_variant
from methods.simplenet import (Discriminator, SimpleNetConfig, augment_config, embedding_kernels,
                               neighbourhood_embedding, pooling_matrix, truncated_l1_loss)
from submission.datasets.procedural import ProceduralConfig, render_sample

# short schedules for unit tests: the offline preset's features, fewer steps
FAST = {"meta_epochs": 10, "augment_views": 1}


def _fit(support: torch.Tensor, category: str, seed: int = 0, preset: str = "offline", pretrained: bool = True,
         **changes):
    """SimpleNet with the FAST schedule and `changes` (registry options), fitted the way a cell fits it."""
    options = ",".join(f"{key}={value}" for key, value in {**FAST, **changes}.items())
    setting = CellSetting(category, seed, torch.device("cpu"), FeatureCache(torch.device("cpu"), pretrained=pretrained))
    return fit_method(build_variant(f"simplenet:{options}", preset), support, setting).method


def _official_embedding(maps, patch_size, pretrain_dim, target_dim):
    """The official chain, literally: unfold, resize the deeper level's vectors, pool, concatenate, pool."""
    b, _, height, width = maps[0].shape
    pooled = []
    for level in maps:
        h, w = level.shape[-2:]
        vectors = F.unfold(level, patch_size, padding=patch_size // 2).view(b, -1, h, w)
        vectors = F.interpolate(vectors, size=(height, width), mode="bilinear", align_corners=False)
        rows = vectors.permute(0, 2, 3, 1).reshape(-1, 1, vectors.shape[1])
        pooled.append(F.adaptive_avg_pool1d(rows, pretrain_dim))
    stacked = torch.cat(pooled, dim=2)
    return F.adaptive_avg_pool1d(stacked, target_dim).view(b, height, width, target_dim)


@pytest.mark.parametrize("length,size", [(360, 256), (1008, 256), (512, 256), (100, 128), (4608, 1536)])
def test_pooling_matrix_is_adaptive_average_pooling(length, size):
    x = torch.randn(3, length)
    expected = F.adaptive_avg_pool1d(x.unsqueeze(1), size).squeeze(1)
    assert torch.allclose(x @ pooling_matrix(length, size), expected, atol=1e-5)


def test_embedding_equals_the_official_chain_and_has_the_shallow_grid():
    generator = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 40, 8, 8, generator=generator), torch.randn(2, 112, 4, 4, generator=generator)]
    kernels = embedding_kernels([40, 112], 3, pretrain_dim=64, target_dim=32)
    assert [tuple(k.shape) for k in kernels] == [(32, 40, 3, 3), (32, 112, 3, 3)]
    features = neighbourhood_embedding(maps, kernels)
    assert features.shape == (2, 8, 8, 32)
    assert torch.allclose(features, _official_embedding(maps, 3, 64, 32), atol=1e-5)
    # averages of inputs in [0, 1] stay in [0, 1]
    positive = neighbourhood_embedding([m.sigmoid() for m in maps], kernels)
    assert positive.min() >= 0 and positive.max() <= 1


def test_augmented_views_keep_shape_and_range_and_differ_from_the_input():
    images = torch.rand(3, 3, 32, 32)
    config = SimpleNetConfig()
    views = augment(images, augment_config(config, flips=True), torch.Generator().manual_seed(0))
    assert views.shape == images.shape and views.min() >= 0 and views.max() <= 1
    assert not torch.allclose(views, images)
    again = augment(images, augment_config(config, flips=True), torch.Generator().manual_seed(0))
    assert torch.equal(views, again)
    still = dataclasses.replace(config, rotation_degrees=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
    assert torch.allclose(augment(images, augment_config(still, flips=False), torch.Generator()), images, atol=1e-5)


def test_discriminator_maps_features_to_one_logit():
    scores = Discriminator(16, 10)(torch.randn(12, 16))
    assert scores.shape == (12, 1) and torch.isfinite(scores).all()


def test_loss_is_zero_when_the_discriminator_separates_by_the_margin():
    true, fake = torch.full((5,), 0.6), torch.full((5,), -0.7)
    assert truncated_l1_loss(true, fake, margin=0.5) == 0
    # inside the margin the loss is the shortfall on each side
    assert torch.isclose(truncated_l1_loss(torch.full((5,), 0.3), torch.full((5,), -0.5), 0.5), torch.tensor(0.2))
    assert truncated_l1_loss(torch.zeros(3), torch.zeros(3), 0.5) == 1.0


def test_predict_shapes_and_image_score_is_the_max_patch_score_before_blur():
    support = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    method = _fit(support, "toy")
    test = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    prediction = method.predict(test)
    patch_scores = method.patch_scores(test)
    assert patch_scores.shape == (3, 8, 8)  # stride 8 grid of level 2
    assert prediction.maps.shape == (3, 64, 64) and torch.isfinite(prediction.maps).all()
    assert torch.equal(prediction.scores, patch_scores.flatten(1).max(dim=1).values)
    assert (prediction.maps.flatten(1).max(dim=1).values <= prediction.scores + 1e-5).all()  # blur never exceeds it
    info = method.info()
    assert info["steps"] == 10 * 4 and info["pool_views"] == 2 and info["patches_per_image"] == 8 * 8
    assert info["flips"] is True
    assert method.adaptor.out_features == method.config.target_dim


def test_flips_are_off_for_categories_whose_logic_they_break():
    method = _fit(torch.rand(1, 3, 32, 32), "part_slots", meta_epochs=1)
    assert method.info()["flips"] is False


def _procedural(category: str, indices: range, size: int = 96) -> torch.Tensor:
    """Normal procedural images [n,3,size,size] in [0,1] (train split)."""
    config = ProceduralConfig(image_size=size)
    arrays = [render_sample(category, "train", index, config).image for index in indices]
    return torch.stack([torch.from_numpy(array).permute(2, 0, 1).float() / 255 for array in arrays])


def _paste_defects(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A blended square of a random colour in each image (a synthetic structural defect)."""
    out = images.clone()
    size = images.shape[-1]
    side = size // 4
    for image in out:
        top, left = torch.randint(size // 5, size - size // 5 - side, (2,), generator=generator).tolist()
        colour = torch.rand(3, 1, 1, generator=generator)
        image[:, top:top + side, left:left + side] = 0.2 * image[:, top:top + side, left:left + side] + 0.8 * colour
    return out


def test_short_training_lowers_the_loss_and_separates_synthetic_defects():
    support = _procedural("part_slots", range(4))
    held_out = _procedural("part_slots", range(4, 10))  # normal images the method never saw
    method = _fit(support, "part_slots", seed=3, meta_epochs=25, augment_views=1)
    losses = torch.tensor(method.losses)
    assert len(losses) == 100 and losses[-10:].mean() < losses[:10].mean() - 0.1
    defective = _paste_defects(held_out, torch.Generator().manual_seed(3))
    scores = method.predict(torch.cat([held_out, defective])).scores
    assert roc_auc_score([0] * 6 + [1] * 6, scores.numpy()) > 0.75  # chance is 0.5


def test_same_seed_same_scores_other_seed_other_scores():
    support = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    test = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))

    def scores(seed: int) -> torch.Tensor:
        return _fit(support, "toy", seed=seed, meta_epochs=3).predict(test).scores

    first = scores(5)
    assert torch.equal(first, scores(5))
    assert not torch.equal(first, scores(6))


@pytest.mark.parametrize("preset", ["paper"])
def test_paper_preset_runs_with_random_weights(preset):
    method = _fit(torch.rand(2, 3, 64, 64), "toy", preset=preset, pretrained=False, meta_epochs=1, epochs_per_meta=1,
                  augment_views=1)
    assert method.config.backbone == "wide_resnet50_2" and method.config.target_dim == 1536
    prediction = method.predict(torch.rand(1, 3, 64, 64))
    assert prediction.maps.shape == (1, 64, 64) and torch.isfinite(prediction.scores).all()
    assert method.info()["steps"] == 1 and method.info()["grid"] == [8, 8]
