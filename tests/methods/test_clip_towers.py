"""WinCLIP as anomalib computes it, on a tiny random open_clip model (embed dim 32, transformer width 64):
the prompt ensemble, the zero-shot harmonic aggregation and the few-shot memory's tokens, against values
computed here by hand (or with open_clip's own forward)."""
import pytest
import torch
import torch.nn.functional as F

from methods import clip_towers
from methods.features import FeatureCache
from methods.cell import CellSetting, fit_method
from methods.clip_logic import Encoded
from methods.registry import build_variant
from tests.methods.test_clip_logic import TINY, TINY_CONFIG


@pytest.fixture
def tiny_clip(monkeypatch):
    monkeypatch.setitem(clip_towers.EXTRA_MODEL_CONFIGS, TINY, TINY_CONFIG)
    return FeatureCache(torch.device("cpu"), pretrained=False).clip_tower(TINY, "none")


def test_class_embedding_is_the_normalised_mean_of_the_raw_prompt_embeddings(tiny_clip):
    normal, anomalous = clip_towers.build_prompts("pill_tray")
    tokenizer = clip_towers._tokenizer(77)
    rows, old_rows = [], []
    for prompts in (normal, anomalous):
        raw = tiny_clip.clip.encode_text(tokenizer(prompts))  # open_clip's own full-length forward, not normalised
        rows.append(F.normalize(raw.mean(dim=0), dim=0))  # anomalib: mean of the raw embeddings (cosine normalises)
        old_rows.append(F.normalize(F.normalize(raw, dim=1).mean(dim=0), dim=0))
    expected = torch.stack(rows)
    embeddings = tiny_clip.class_embeddings("pill_tray")
    assert torch.allclose(embeddings, expected, atol=1e-5)
    assert not torch.allclose(embeddings, torch.stack(old_rows), atol=1e-4)  # the test tells the two apart
    raw = tiny_clip.encode_text(tokenizer(normal[:3]), normalize=False)
    assert torch.allclose(raw, tiny_clip.clip.encode_text(tokenizer(normal[:3])), atol=1e-5)


def test_multi_scale_harmonic_by_hand():
    # 3x3 grid; scale 2: windows [[a, b], [c, d]]; scale 3: one window e; image score s.
    s, a, b, c, d, e = 0.5, 0.2, 0.4, 0.5, 1.0, 0.25
    scale2 = clip_towers.harmonic_aggregation(torch.tensor([[[a, b], [c, d]]]), 2)
    scale3 = clip_towers.harmonic_aggregation(torch.tensor([[[e]]]), 3)
    combined = clip_towers.multi_scale_harmonic(torch.tensor([s]), [scale2, scale3], (3, 3))
    assert combined.shape == (1, 3, 3)
    # patch (0,0): only window a covers it at scale 2 -> 3 / (1/s + 1/a + 1/e) = 3 / (2 + 5 + 4)
    assert combined[0, 0, 0].item() == pytest.approx(3 / 11)
    # patch (1,1): all four windows -> H2 = 4 / (5 + 2.5 + 2 + 1) = 4 / 10.5; then 3 / (2 + 10.5/4 + 4)
    assert scale2[0, 1, 1].item() == pytest.approx(4 / 10.5)
    assert combined[0, 1, 1].item() == pytest.approx(3 / (2 + 10.5 / 4 + 4))
    # patch (0,1): windows a and b -> H2 = 2 / (5 + 2.5); then 3 / (2 + 7.5/2 + 4)
    assert combined[0, 0, 1].item() == pytest.approx(3 / (2 + 7.5 / 2 + 4))
    # patch (2,2): only d -> 3 / (2 + 1 + 4)
    assert combined[0, 2, 2].item() == pytest.approx(3 / 7)
    # no window scales: the image score everywhere
    assert torch.equal(clip_towers.multi_scale_harmonic(torch.tensor([s]), [], (2, 2)), torch.full((1, 2, 2), s))


def _unit(angle: float) -> torch.Tensor:
    """A unit vector in the plane of the two class embeddings e0, e1 at `angle` from e0 (4-dim space)."""
    return torch.tensor([torch.cos(torch.tensor(angle)), torch.sin(torch.tensor(angle)), 0.0, 0.0])


def test_zero_shot_and_local_terms_by_hand(tiny_clip):
    support = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    setting = CellSetting("toy", 0, torch.device("cpu"), FeatureCache(torch.device("cpu"), pretrained=False))
    method = fit_method(build_variant(f"clip_logic:clip_model={TINY},window_scales=2", "paper"),
                        support, setting).method
    method._text = torch.eye(4)[:2]  # normal = e0, anomalous = e1
    temperature = method.config.temperature
    def p_anomalous(angle: float) -> float:  # softmax over (cos angle, sin angle) / T, anomalous entry, by hand
        cos, sin = torch.cos(torch.tensor(angle)).item(), torch.sin(torch.tensor(angle)).item()
        return 1 / (1 + torch.exp(torch.tensor((cos - sin) / temperature)).item())
    angles = [[0.70, 0.80], [0.75, 0.85]]  # 2x2 windows of scale 2 on a 3x3 grid
    windows = torch.stack([torch.stack([_unit(t) for t in row]) for row in angles]).permute(2, 0, 1)[None]
    query = Encoded(_unit(0.78)[None], torch.zeros(1, 8, 3, 3), [windows], torch.zeros(1, 3, 3, 3),
                    torch.zeros(1, 11, 3, 3))
    image, zero_map = method._zero_shot(query)
    s = p_anomalous(0.78)
    w = [[p_anomalous(t) for t in row] for row in angles]
    assert image.item() == pytest.approx(s, rel=1e-5)
    corner = 2 / (1 / s + 1 / w[0][0])  # patch (0,0): one window
    centre_windows = 4 / sum(1 / v for row in w for v in row)  # patch (1,1): all four windows
    assert zero_map[0, 0, 0].item() == pytest.approx(corner, rel=1e-5)
    assert zero_map[0, 1, 1].item() == pytest.approx(2 / (1 / s + 1 / centre_windows), rel=1e-5)


def test_few_shot_memory_holds_the_unprojected_ln_post_tokens(tiny_clip):
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    _, patches, windows = tiny_clip.encode(images, (2,))
    width, embed = TINY_CONFIG["vision_cfg"]["width"], TINY_CONFIG["embed_dim"]
    assert width != embed
    assert patches.shape[1] == width and windows.shape[1] == embed
    visual = tiny_clip.clip.visual
    visual.output_tokens = True
    try:
        _, tokens = visual(tiny_clip.preprocess(images))  # open_clip's own output tokens (anomalib's patch memory)
    finally:
        visual.output_tokens = False
    expected = F.normalize(tokens, dim=-1).transpose(1, 2).unflatten(2, tiny_clip.grid)
    assert torch.allclose(patches, expected, atol=1e-5)

    setting = CellSetting("toy", 0, torch.device("cpu"), FeatureCache(torch.device("cpu"), pretrained=False))
    method = fit_method(build_variant(f"clip_logic:clip_model={TINY}", "paper"), images, setting).method
    assert method._support.patches.shape[1] == width  # the few-shot patch memory
    assert all(w.shape[1] == embed for w in method._support.windows)  # the window memory: projected


def test_few_shot_map_is_the_mean_of_patch_and_harmonic_window_maps(tiny_clip):
    generator = torch.Generator().manual_seed(4)
    support, test = torch.rand(2, 3, 48, 48, generator=generator), torch.rand(1, 3, 48, 48, generator=generator)
    setting = CellSetting("toy", 0, torch.device("cpu"), FeatureCache(torch.device("cpu"), pretrained=False))
    method = fit_method(build_variant(f"clip_logic:clip_model={TINY}", "paper"), support, setting).method
    query = method._encode(test)
    memory = method._support
    def distance(q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # (1 - max cos)/2, by brute force
        rows, bank = q.flatten(2).transpose(1, 2), m.flatten(2).transpose(1, 2).reshape(-1, q.shape[1])
        return (1 - (rows @ bank.T).max(dim=-1).values) / 2
    maps = [distance(query.patches, memory.patches).view(1, 6, 6)]
    for scale, q, m in zip((2, 3), query.windows, memory.windows):
        maps.append(clip_towers.harmonic_aggregation(distance(q, m).view(1, 7 - scale, 7 - scale), scale))
    expected = sum(maps) / 3
    assert torch.allclose(method._few_shot_map(query, memory), expected, atol=1e-6)
    terms, local_map, parts = method._terms(query, memory, method._support_stats)
    zero_image, zero_map = method._zero_shot(query)
    assert torch.allclose(terms[:, 0], (zero_image + expected.amax(dim=(1, 2))) / 2, atol=1e-6)  # WinCLIP+ score
    assert torch.allclose(local_map, (zero_map + expected) / 2, atol=1e-6)
