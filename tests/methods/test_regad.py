"""RegAD: STN identity, loss symmetry and stop-gradient, no target images in meta-training, Mahalanobis, determinism."""
import math

import pytest
import torch
import torch.nn.functional as F

import methods.regad  # noqa: F401  (registers "regad")
from methods.backbones import load_backbone
from methods.features import FeatureCache
from methods.base import AuxiliaryCategory
from methods.cell import CellSetting, fit_method
from methods.regad import augment_support, fit_gaussian, mahalanobis_map
from methods.regad_modules import STN, STN_MODES, RegADNet, affine_from_params, backbone_stages, registration_loss
from methods.registry import build_config, build_variant
from runfolder.schema import variant_dirname
from submission.datasets.images import ImageStore
from submission.datasets.readers import read_category
from submission.cell_worker import auxiliary_categories

TINY = "regad:input_size=32,train_size=32,train_epochs=1,train_batch=4"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP overhead that dominates on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _fit(support: torch.Tensor, category: str = "target", spec: str = TINY, preset: str = "offline",
         auxiliary=None, artifacts=None, seed: int = 0):
    """The variant fitted the way a cell fits it: `auxiliary` maps a `source` to categories, `artifacts` is the
    run's artifacts root (the variant keeps its models in artifacts/<variant dir>)."""
    setting = CellSetting(category, seed, torch.device("cpu"), FeatureCache(torch.device("cpu"), pretrained=False),
                          artifacts, auxiliary)
    return fit_method(build_variant(spec, preset), support, setting)


def _aux_images(value: float, n: int = 6, size: int = 32) -> torch.Tensor:
    noise = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(int(value * 100)))
    return (value + 0.05 * noise).clamp(0, 1)


def _auxiliary(source: str = "procedural"):
    return [AuxiliaryCategory("cat_a", _aux_images(0.1)), AuxiliaryCategory("cat_b", _aux_images(0.3))]


@pytest.mark.parametrize("mode", sorted(STN_MODES))
def test_stn_is_the_identity_at_initialisation(mode):
    torch.manual_seed(0)
    stn = STN(channels=8, pooled_size=4, mode=mode)
    maps = torch.randn(2, 8, 16, 16)
    warped, theta = stn(maps)
    assert torch.allclose(theta, torch.eye(2, 3).expand(2, 2, 3), atol=1e-7)
    assert torch.allclose(warped, maps, atol=1e-5)


def test_rotation_scale_follows_the_official_parameterisation():
    angle, sx, sy = 0.3, 1.2, 0.8
    theta = affine_from_params(torch.tensor([[angle, sx, sy]]), "rotation_scale")[0]
    expected = torch.tensor([[math.cos(angle) * sx, -math.sin(angle), 0.0],
                             [math.sin(angle), math.cos(angle) * sy, 0.0]])
    assert torch.allclose(theta, expected, atol=1e-6)


def test_registration_loss_is_symmetric_and_stops_gradient():
    torch.manual_seed(0)
    p1, z1, p2, z2 = (torch.randn(2, 6, 3, 3, requires_grad=True) for _ in range(4))
    loss = registration_loss(p1, z1, p2, z2)
    swapped = registration_loss(p2, z2, p1, z1)
    direct = -(F.cosine_similarity(p1, z2, dim=1).mean() + F.cosine_similarity(p2, z1, dim=1).mean()) / 2
    assert torch.allclose(loss, swapped) and torch.allclose(loss, direct)
    loss.backward()
    assert p1.grad is not None and p2.grad is not None
    assert z1.grad is None and z2.grad is None  # the encodings are targets only


@pytest.mark.parametrize("backbone", ["lite0", "resnet18"])
def test_stages_and_restored_features_reproduce_the_backbone(backbone):
    extractor = load_backbone(backbone, pretrained=False)
    images = torch.rand(2, 3, 64, 64)
    expected = extractor(images)
    assert len(backbone_stages(extractor.model)) == 3
    net = RegADNet(extractor.model, extractor.normalise.mean, extractor.normalise.std, normalize=True).eval()
    with torch.no_grad():
        restored = net.restored_features(images)  # identity STNs: warped back = plain features
    for got, want in zip(restored, expected):
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-4)


def test_mahalanobis_map_equals_a_direct_per_position_computation():
    generator = torch.Generator().manual_seed(0)
    support = torch.randn(6, 3, 2, 2, generator=generator)
    test = torch.randn(2, 3, 2, 2, generator=generator)
    mean, factor = fit_gaussian(support, eps=0.01, chunk=3)  # chunks that split the 4 positions
    got = mahalanobis_map(test, mean, factor, chunk=3)
    expected = torch.empty(2, 2, 2)
    for i in range(2):
        for j in range(2):
            samples = support[:, :, i, j]  # [n, C]
            precision = torch.linalg.inv(torch.cov(samples.T) + 0.01 * torch.eye(3))
            for b in range(2):
                delta = test[b, :, i, j] - samples.mean(0)
                expected[b, i, j] = torch.sqrt(delta @ precision @ delta)
    assert torch.allclose(got, expected, atol=1e-4)


def test_support_augmentation_has_the_official_views():
    images = torch.rand(2, 3, 16, 16)
    views = augment_support(images, build_config("regad", "offline")[1])
    assert views.shape == (2 * (1 + 8 + 8 + 1 + 1 + 3), 3, 16, 16)
    assert torch.equal(views[:2], images) and torch.equal(views[-2:], torch.rot90(images, 3, dims=(2, 3)))


def test_meta_training_never_receives_a_target_image(monkeypatch, tmp_path):
    seen = []
    original = RegADNet.forward

    def recording(self, images):
        if self.training:  # meta-training; the Gaussian's support pass runs in eval mode
            seen.append(images.detach().clone())
        return original(self, images)

    monkeypatch.setattr(RegADNet, "forward", recording)
    calls = []
    target_support = torch.full((2, 3, 32, 32), 0.9)  # distinguishable from both auxiliary categories
    method = _fit(target_support, auxiliary=lambda source: calls.append(1) or _auxiliary(source),
                  artifacts=tmp_path).method
    assert calls == [1] and seen
    assert max(float(batch.max()) for batch in seen) < 0.5  # only the 0.1 / 0.3 auxiliary images trained
    assert method.info()["meta_training"]["categories"] == ["cat_a", "cat_b"]

    def refuse():
        raise AssertionError("a cached model must not ask for auxiliary images again")

    seen.clear()
    _fit(target_support, auxiliary=lambda source: refuse(), artifacts=tmp_path)
    assert not seen  # loaded from the artifacts: no training at all


def test_auxiliary_holding_the_target_category_is_refused():
    aux = lambda source: [AuxiliaryCategory("target", _aux_images(0.1))]  # noqa: E731
    with pytest.raises(ValueError, match="target"):
        _fit(torch.rand(1, 3, 32, 32), "target", auxiliary=aux)


def test_runner_auxiliary_categories_exclude_the_target(tiny_loco):
    store = ImageStore(64)
    target = read_category(tiny_loco, "pill_tray", "loco")
    target_pixels = store.stack(target.train_good)
    for source in ("dataset", str(tiny_loco)):
        others = auxiliary_categories(source, target, "loco", store)
        assert sorted(c.name for c in others) == ["cable_pair", "part_slots"]
        for category in others:
            assert category.images.shape == (6, 3, 64, 64)
            assert not any(torch.equal(image, pixels) for image in category.images for pixels in target_pixels)


def test_same_seed_gives_identical_scores_whether_trained_or_loaded(tmp_path):
    support = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    test = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    scores = []
    for folder in (tmp_path / "a", tmp_path / "a", tmp_path / "b"):  # train, load, train again
        method = _fit(support, auxiliary=_auxiliary, artifacts=folder, seed=42).method
        prediction = method.predict(test)
        assert prediction.maps.shape == (3, 32, 32) and torch.isfinite(prediction.maps).all()
        scores.append(prediction.scores)
    assert torch.equal(scores[0], scores[1]) and torch.equal(scores[0], scores[2])
    assert len(list((tmp_path / "a" / variant_dirname(TINY)).glob("target__procedural__*.pt"))) == 1


def test_a_damaged_copy_scores_higher_than_a_support_image():
    generator = torch.Generator().manual_seed(0)
    support = (0.4 + 0.2 * torch.rand(2, 3, 64, 64, generator=generator))
    damaged = support[:1].clone()
    damaged[:, :, 24:40, 24:40] = 1.0
    method = _fit(support, "toy", "regad:input_size=64,train_epochs=0").method  # no meta-training: no auxiliary needed
    prediction = method.predict(torch.cat([support[:1], damaged]))
    assert prediction.scores[0] < prediction.scores[1]
    assert method.info()["meta_training"]["steps"] == 0 and method.info()["support_views"] == 44


def test_paper_preset_runs_on_random_resnet18_weights(tmp_path):
    config = build_variant(TINY, "paper").config
    assert config.backbone == "resnet18" and not config.normalize and config.gaussian_stride == 4
    method = _fit(torch.rand(1, 3, 48, 48), preset="paper", auxiliary=_auxiliary, artifacts=tmp_path).method
    prediction = method.predict(torch.rand(2, 3, 48, 48))
    assert prediction.maps.shape == (2, 48, 48) and torch.isfinite(prediction.scores).all()
    info = method.info()
    assert info["gaussian_channels"] == 64 + 128 + 256 and info["gaussian_grid"] == [8, 8]
    assert info["support_views"] == 22 and info["meta_training"]["steps"] == 4  # 2 categories x [4, 2] queries


def test_leave_one_out_source_is_flagged_in_info():
    assert "VAND 3.0" in build_variant("regad:source=dataset").create().info()["protocol_note"]
    assert "protocol_note" not in build_variant(TINY).create().info()


@pytest.mark.parametrize("update", [True, False])
def test_backbone_batchnorm_statistics_update_only_when_asked(update):
    fitted = _fit(torch.rand(1, 3, 32, 32), spec=f"{TINY},train_bn_stats={update}", auxiliary=_auxiliary)
    method = fitted.method
    original = backbone_stages(fitted.context.features.extractor("lite0").model)
    means = lambda stages: [b for n, b in stages.named_buffers() if n.endswith("running_mean")]  # noqa: E731
    unchanged = all(torch.equal(a, b) for a, b in zip(means(method.net.stages), means(original)))
    assert unchanged != update
    assert not torch.equal(means(method.net.stns)[0], torch.zeros(64))  # the new STN BatchNorms always train
