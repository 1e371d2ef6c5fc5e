"""GCAD: shapes, the restricted receptive field of R_loc, E_glo's bottleneck, training, normalisation, determinism."""
import pytest
import torch

import methods.gcad  # noqa: F401  (registers "gcad")
from methods.features import FeatureCache
from methods.cell import CellSetting, fit_method
from methods.gcad_modules import GlobalEncoder, LocalRegressor, local_receptive_field
from methods.registry import build_config, build_variant, create_method
from submission.datasets.images import list_images, load_image

TINY = "steps=20,train_views=8,stat_views=4"  # 64 px, a few steps: seconds per fit


def _fit(spec: str, support: torch.Tensor, seed: int = 0, preset: str = "offline", pretrained: bool = True):
    """The variant fitted the way a cell fits it (seeded, on a fresh CPU feature cache)."""
    setting = CellSetting("pill_tray", seed, torch.device("cpu"), FeatureCache(torch.device("cpu"), pretrained=pretrained))
    return fit_method(build_variant(spec, preset), support, setting).method


@pytest.fixture(scope="module")
def images(tiny_loco):
    """Six normal 64 px pill_tray images: four for support, two as test images."""
    paths = list_images(tiny_loco / "pill_tray" / "train" / "good")
    return torch.stack([load_image(path, 64)[0] for path in paths])


def test_shapes_of_prediction_and_branch_maps(images):
    method = _fit(f"gcad:{TINY}", images[:4])
    prediction = method.predict(images[4:])
    assert prediction.scores.shape == (2,) and prediction.maps.shape == (2, 64, 64)
    assert set(prediction.extras) == {"local", "global"}
    assert all(value.shape == (2,) for value in prediction.extras.values())
    with torch.no_grad():
        a_loc, a_glo = method._branch_maps(images[4:])
    assert a_loc.shape == (2, 8, 8)  # E_loc grid: stride 8
    assert a_glo.shape == (2, 4, 4)  # global grid: stride 16
    # image score = max of the combined map
    assert torch.allclose(prediction.scores, prediction.maps.flatten(1).max(dim=1).values)


def test_local_regressor_output_ignores_pixels_outside_its_receptive_field():
    torch.manual_seed(0)
    regressor = LocalRegressor(out_channels=16, width=16, n_down=3).eval()
    assert local_receptive_field(3) == 31
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    regressor(image)[0, :, 4, 4].sum().backward()  # an interior cell of the 8x8 grid
    rows, cols = image.grad[0].abs().sum(0).nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 <= 31 and cols.max() - cols.min() + 1 <= 31
    changed = image.detach().clone()
    changed[:, :, 40:, 40:] = 1 - changed[:, :, 40:, 40:]  # far from cell (0, 0), whose field ends near pixel 19
    with torch.no_grad():
        before, after = regressor(image.detach()), regressor(changed)
    assert torch.allclose(before[0, :, 0, 0], after[0, :, 0, 0], atol=1e-6)
    assert not torch.allclose(before[0, :, 7, 7], after[0, :, 7, 7], atol=1e-4)  # a cell near the change moves


def test_fitted_local_regressor_is_the_restricted_one(images):
    method = _fit(f"gcad:{TINY}", images[:4])
    assert isinstance(method.networks["r_loc"], LocalRegressor)
    assert method.info()["r_loc_receptive_field_px"] == 30  # 15 px on the half-size copy


def test_global_encoder_goes_through_a_32_dimensional_bottleneck(images):
    torch.manual_seed(0)
    encoder = GlobalEncoder(d_glo=10, bottleneck=32, width=16)
    x = images[:3]
    code = encoder.encode(x)
    assert code.shape == (3, 32)
    assert torch.equal(encoder(x, (4, 4)), encoder.decode(code, (4, 4)))  # the code is the only path
    assert encoder(x, (4, 4)).shape == (3, 10, 4, 4)
    method = _fit(f"gcad:{TINY}", images[:4])
    assert method.networks["e_glo"].to_code.out_features == 32


def test_training_loss_decreases_on_tiny_data(images):
    info = _fit("gcad:steps=60,train_views=8,stat_views=4", images[:4]).info()
    assert info["loss_last"] < 0.8 * info["loss_first"]


def test_normalisation_comes_from_the_support_set_before_any_prediction(images):
    method = _fit(f"gcad:{TINY}", images[:4])
    stats = method.stats.clone()
    assert not torch.equal(stats, torch.tensor([0.0, 1.0, 0.0, 1.0]))  # estimated in fit, before any predict
    alone = method.predict(images[4:5])
    noise = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    together = method.predict(torch.cat([images[4:5], noise]))
    assert torch.equal(method.stats, stats)  # predicting test batches never changes mu, sigma
    assert torch.allclose(alone.scores[0], together.scores[0], atol=1e-5)  # a score ignores its batch-mates
    assert "support" in method.info()["normalisation"]


def test_same_seed_same_scores_other_seed_other_scores(images):
    first = _fit(f"gcad:{TINY}", images[:4], seed=3).predict(images[4:])
    second = _fit(f"gcad:{TINY}", images[:4], seed=3).predict(images[4:])
    other = _fit(f"gcad:{TINY}", images[:4], seed=4).predict(images[4:])
    assert torch.equal(first.scores, second.scores)
    assert all(torch.equal(first.extras[key], second.extras[key]) for key in first.extras)
    assert not torch.equal(first.scores, other.scores)


def test_distilled_descriptor_is_trained_on_support_views_then_frozen(images):
    method = _fit(f"gcad:local_encoder=distilled,distill_steps=10,{TINY}", images[:4])
    info = method.info()
    assert info["distill_steps_run"] == 10 and "support" in info["distill_images"]
    assert not any(p.requires_grad for p in method.networks["descriptor"].parameters())
    assert torch.isfinite(method.predict(images[4:]).scores).all()


def test_paper_preset_runs_with_random_teacher_weights(images):
    _, config = build_config("gcad", "paper")
    assert config.backbones == ("resnet18",) and config.lr == 1e-4 and config.d_loc == 128
    _, grid = build_config("gcad:local_encoder=grid", "paper")
    assert grid.backbones == ("wide_resnet50_2",)
    method = _fit("gcad:steps=2,distill_steps=2,train_views=4,stat_views=2", images[:2], preset="paper",
                  pretrained=False)
    assert method.predict(images[4:]).maps.shape == (2, 64, 64)


def test_unknown_option_values_are_rejected_with_the_choices():
    with pytest.raises(ValueError, match="grid, distilled"):
        create_method("gcad:local_encoder=dense")
