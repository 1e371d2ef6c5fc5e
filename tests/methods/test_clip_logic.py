"""clip_logic: prompts, CLIP window/patch shapes on a tiny random open_clip model, part statistics, weights."""
import numpy as np
import pytest
import torch

import methods.clip_logic as clip_logic
from methods import clip_towers
from methods.features import FeatureCache
from methods.weight_files import WeightsInvalid, WeightsMissing
from methods.cell import CellSetting, fit_method
from methods.registry import build_config, build_variant
from submission.datasets.procedural import ProceduralConfig, render_sample

TINY = "tiny-test-clip"
TINY_CONFIG = dict(embed_dim=32, vision_cfg=dict(image_size=48, patch_size=8, width=64, layers=2, head_width=32),
                   text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
                   mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture
def tiny_clip(monkeypatch):
    """A tiny randomly initialised open_clip CLIP (48 px, 6x6 patches) known to the tower builder."""
    monkeypatch.setitem(clip_towers.EXTRA_MODEL_CONFIGS, TINY, TINY_CONFIG)
    return FeatureCache(torch.device("cpu"), pretrained=False).clip_tower(TINY, "none")


_FEATURES: dict[bool, FeatureCache] = {}


def _fit(spec: str, support: torch.Tensor, category: str, seed: int = 0, preset: str = "offline",
         pretrained: bool = True):
    """The variant fitted the way a cell fits it, on CPU; the bundled backbone is built once per test module."""
    features = _FEATURES.setdefault(pretrained, FeatureCache(torch.device("cpu"), pretrained=pretrained))
    setting = CellSetting(category, seed, torch.device("cpu"), features)
    return fit_method(build_variant(spec, preset), support, setting).method


def test_prompts_use_the_natural_name_and_every_state_template_pair():
    normal, anomalous = clip_towers.build_prompts("pill_tray")
    assert len(clip_towers.TEMPLATES) == 21
    assert len(normal) == 7 * 21 and len(anomalous) == 4 * 21
    assert all("pill tray" in p and "_" not in p for p in normal + anomalous)
    assert "a photo of the flawless pill tray." in normal
    assert "a cropped photo of the pill tray with defect." in anomalous
    assert not set(normal) & set(anomalous)


def test_tiny_tower_shapes_and_exact_text_truncation(tiny_clip):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    global_, patches, windows2, windows3 = tiny_clip.encode(images, (2, 3))
    assert global_.shape == (2, 32) and patches.shape == (2, 64, 6, 6)  # patches: ln_post tokens (width 64)
    assert windows2.shape == (2, 32, 5, 5) and windows3.shape == (2, 32, 4, 4)
    assert torch.allclose(global_.norm(dim=1), torch.ones(2), atol=1e-5)
    reference = torch.nn.functional.normalize(tiny_clip.clip.encode_image(tiny_clip.preprocess(images)), dim=-1)
    assert torch.allclose(global_, reference, atol=1e-5)  # our token path is the tower's own forward
    tokens = clip_towers._tokenizer(77)(["a photo of the pill tray.", "a blurry photo of a damaged pill tray."])
    full = torch.nn.functional.normalize(tiny_clip.clip.encode_text(tokens), dim=-1)
    assert torch.allclose(tiny_clip.encode_text(tokens), full, atol=1e-5)
    assert tiny_clip.class_embeddings("pill_tray").shape == (2, 32)


def test_a_window_embedding_sees_only_its_own_tokens(tiny_clip):
    images = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    changed = images.clone()
    changed[:, :, 40:, 40:] = 1.0  # only the bottom-right patch (row 5, column 5)
    _, _, first = tiny_clip.encode(images, (2,))
    _, _, second = tiny_clip.encode(changed, (2,))
    moved = (first - second).abs().amax(dim=1)[0] > 1e-6  # [5, 5]
    assert moved[4, 4] and moved.sum() == 1


def test_harmonic_aggregation_averages_the_covering_windows():
    scores = torch.ones(1, 3, 3)
    scores[0, 0, 0] = 0.5
    patches = clip_towers.harmonic_aggregation(scores, 2)
    assert patches.shape == (1, 4, 4)
    assert torch.isclose(patches[0, 0, 0], torch.tensor(0.5))  # only window (0,0) covers patch (0,0)
    assert torch.isclose(patches[0, 1, 1], torch.tensor(4 / 5))  # harmonic mean of 0.5, 1, 1, 1
    assert torch.allclose(patches[0, 2:, 2:], torch.ones(2, 2))


def test_part_statistics_count_planted_regions():
    centroids = torch.eye(2)  # part 0 = background, part 1 = "pills"
    features = torch.zeros(2, 2, 12, 12)
    features[:, 0] = 1
    for image, blobs in ((0, 3), (1, 4)):
        for blob in range(blobs):
            features[image, :, 1:3, 3 * blob:3 * blob + 2] = torch.tensor([0.0, 1.0]).view(2, 1, 1)
    features[1, :, 8, 8] = torch.tensor([0.0, 1.0])  # a single patch: below min_region
    stats = clip_logic.part_statistics(features, torch.rand(2, 3, 12, 12), centroids, min_region=2)
    regions = stats[:, 4:6]
    assert regions[:, 1].tolist() == [3, 4] and regions[:, 0].tolist() == [1, 1]
    assert stats[:, 6].tolist() == [4, 5]  # total regions


def test_region_counts_equal_one_labelling_per_image_and_part():
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for _ in range(20):
        b, parts, h, w = (int(v) for v in rng.integers(1, 7, size=4) * (1, 1, 3, 3))
        assign = rng.integers(0, parts, size=(b, h, w))
        expected = [[int((np.bincount(labels.ravel())[1:] >= 2).sum()) for labels, _ in
                     (ndimage.label(image == p) for p in range(parts))] for image in assign]
        assert clip_logic.region_counts(assign, parts, 2).tolist() == expected


def test_kmeans_finds_separated_clusters_and_is_seeded():
    generator = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(50, 2, generator=generator) * 0.1 + torch.tensor(centre)
                        for centre in ((0.0, 0.0), (5.0, 0.0), (0.0, 5.0))])
    first = clip_logic.kmeans(points, 3, 20, torch.Generator().manual_seed(3))
    second = clip_logic.kmeans(points, 3, 20, torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    found = sorted(tuple(round(float(v)) for v in c) for c in first)
    assert found == [(0, 0), (0, 5), (5, 0)]


def _remove_one_pill(sample, size: int) -> np.ndarray:
    """The image with its first pill painted over by the surrounding tray colour (a planted count change)."""
    image = sample.image.astype(np.float64).copy()
    pill = next(p for p in sample.parts if p.kind == "pill")
    yy, xx = np.mgrid[:size, :size] / size
    distance = np.hypot(xx - pill.x, yy - pill.y)
    image[distance < 0.095] = np.median(image[(distance > 0.10) & (distance < 0.115)], axis=0)
    return image.astype(np.uint8)


def test_component_term_detects_a_missing_pill():
    size = 256
    config = ProceduralConfig(image_size=size)
    def tensor(array):
        return torch.from_numpy(array).permute(2, 0, 1).float() / 255
    support = torch.stack([tensor(render_sample("pill_tray", "train", i, config).image) for i in range(4)])
    samples = [render_sample("pill_tray", "good", i, config) for i in range(4)]
    normal = torch.stack([tensor(s.image) for s in samples])
    planted = torch.stack([tensor(_remove_one_pill(s, size)) for s in samples])
    method = _fit("clip_logic", support, "pill_tray")
    components = method.predict(torch.cat([normal, planted])).extras["components"]
    assert (components[4:] > components[:4]).all()  # each image scores higher with a pill missing


def test_offline_run_is_deterministic_and_labelled_as_not_clip():
    generator = torch.Generator().manual_seed(0)
    support, test = torch.rand(3, 3, 64, 64, generator=generator), torch.rand(2, 3, 64, 64, generator=generator)
    results = []
    for _ in range(2):
        method = _fit("clip_logic", support, "toy", seed=5)
        results.append(method.predict(test))
    assert torch.equal(results[0].scores, results[1].scores)
    assert set(results[0].extras) == {"few_shot", "global", "components", "z_local", "z_global", "z_components"}
    info = method.info()
    assert info["text_part"] is False and "not a CLIP result" in info["tower"]
    assert info["held_out"].startswith("leave-one-out")


def test_paper_path_runs_on_a_tiny_random_clip(tiny_clip):
    generator = torch.Generator().manual_seed(0)
    support, test = torch.rand(1, 3, 64, 64, generator=generator), torch.rand(2, 3, 64, 64, generator=generator)
    method = _fit(f"clip_logic:clip_model={TINY}", support, "pill_tray", preset="paper", pretrained=False)
    prediction = method.predict(test)
    assert prediction.scores.shape == (2,) and torch.isfinite(prediction.scores).all()
    assert prediction.maps.shape == (2, 64, 64)
    assert 0 < float(prediction.extras["zero_shot"].min()) and float(prediction.extras["zero_shot"].max()) < 1
    info = method.info()
    assert info["text_part"] is True and info["random_weights"] is True and info["grid"] == [6, 6]
    assert info["held_out"].startswith("4 views")  # k = 1


def test_missing_clip_weights_give_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(clip_towers, "OPEN_CLIP_URL_CACHE", tmp_path / "clip")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsInvalid, match="--weights ViT-B-16-plus-240=.*nope.pt: no such file"):  # no fallback
        clip_towers.resolve_clip_weights("ViT-B-16-plus-240", "laion400m_e31", tmp_path / "nope.pt")
    with pytest.raises(WeightsMissing) as error:
        clip_towers.resolve_clip_weights("ViT-B-16-plus-240", "laion400m_e31")
    message = str(error.value)
    assert "ViT-B-16-plus-240" in message and not isinstance(error.value, WeightsInvalid)
    assert "--weights ViT-B-16-plus-240=PATH" in message and "--preset offline" in message
    assert "Hugging Face hub cache" in message and str(tmp_path / "clip") in message
    setting = CellSetting("pill_tray", 0, torch.device("cpu"), FeatureCache(torch.device("cpu")))
    with pytest.raises(WeightsMissing):  # before building the 200M-parameter tower
        fit_method(build_variant("clip_logic", "paper"), torch.rand(1, 3, 64, 64), setting)


def test_clip_weights_are_found_in_the_open_clip_download_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(clip_towers, "OPEN_CLIP_URL_CACHE", tmp_path)
    target = tmp_path / "vit_b_16_plus_240-laion400m_e31-8fb26589.pt"
    target.write_bytes(b"weights")
    assert clip_towers.resolve_clip_weights("ViT-B-16-plus-240", "laion400m_e31") == target
    explicit = tmp_path / "mine.pt"
    explicit.write_bytes(b"weights")
    assert clip_towers.resolve_clip_weights("ViT-B-16-plus-240", "laion400m_e31", explicit) == explicit


def test_clip_logic_declares_its_tower_and_a_missing_one_is_named(tmp_path, monkeypatch):
    from methods.base import WeightFile
    from methods.declared_weights import resolve_weight_file
    from methods.weight_files import WeightsMissing

    monkeypatch.setattr(clip_towers, "OPEN_CLIP_URL_CACHE", tmp_path)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    entry, paper = build_config("clip_logic", "paper")
    _, offline = build_config("clip_logic", "offline")
    assert entry.requirements(offline).weights == (WeightFile("lite0"),)  # no CLIP tower offline
    (tower,) = entry.requirements(paper).weights
    assert tower == WeightFile("ViT-B-16-plus-240", "laion400m_e31") and tower.is_clip
    with pytest.raises(WeightsMissing, match="--weights ViT-B-16-plus-240=PATH"):
        resolve_weight_file(tower)
    (tmp_path / "vit_b_16_plus_240-laion400m_e31-8fb26589.pt").write_bytes(b"weights")
    assert resolve_weight_file(tower) == tmp_path / "vit_b_16_plus_240-laion400m_e31-8fb26589.pt"


def test_explicit_weights_file_loads_into_the_tower(tmp_path, monkeypatch):
    monkeypatch.setitem(clip_towers.EXTRA_MODEL_CONFIGS, TINY, TINY_CONFIG)
    random_tower = clip_towers.create_clip_model(TINY, "none", None, pretrained=False)
    state = {name: value + 1.0 if value.is_floating_point() else value
             for name, value in random_tower.state_dict().items()}
    torch.save(state, tmp_path / "tiny.pt")
    loaded = clip_towers.create_clip_model(TINY, "none", tmp_path / "tiny.pt", pretrained=True)
    assert torch.equal(loaded.visual.proj, state["visual.proj"])
