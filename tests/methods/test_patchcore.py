import torch
import torch.nn.functional as F

from methods import create_method
from methods.features import FeatureCache
from methods.base import FitContext
from methods.cache import ContentCache
from methods.common import flatten_patches, nearest_distance, nearest_distances


def _context(seed=0):
    return FitContext(torch.device("cpu"), torch.Generator().manual_seed(seed), FeatureCache(torch.device("cpu")))


def test_support_images_score_lower_than_a_damaged_copy():
    torch.manual_seed(0)
    support = torch.rand(2, 3, 64, 64) * 0.2 + 0.4
    method = create_method("patchcore", preset="offline")
    method.fit(support, category="toy", context=_context())
    damaged = support[:1].clone()
    damaged[:, :, 20:36, 20:36] = 1.0
    prediction = method.predict(torch.cat([support[:1], damaged]))
    assert prediction.maps.shape == (2, 64, 64)
    assert prediction.scores[0] < 0.05 < prediction.scores[1]  # a support image is in the memory
    # the map peaks inside the damaged square
    peak = int(prediction.maps[1].argmax())
    assert 12 <= peak // 64 <= 44 and 12 <= peak % 64 <= 44


def test_coreset_keeps_the_requested_fraction():
    method = create_method("patchcore:coreset_ratio=0.25", preset="offline")
    method.fit(torch.rand(2, 3, 64, 64), category="toy", context=_context())
    assert method.info()["memory_size"] == 2 * 8 * 8 // 4


# --- the official computation (amazon-science/patchcore-inspection), hand-checked on small cases ---

import pytest  # noqa: E402

from methods.common import aggregate_local, aggregate_official, project_neighbourhoods  # noqa: E402


def test_neighbourhood_average_counts_the_zero_padding():
    ones = torch.ones(1, 1, 3, 3)
    # one channel, 9 values pooled to 1: the 3x3 mean with the padded zeros counted
    mean = project_neighbourhoods(ones, 3, dim=1)[0, 0]
    assert torch.allclose(mean, torch.tensor([[4, 6, 4], [6, 9, 6], [4, 6, 4]]) / 9.0)


def test_neighbourhood_vector_is_ordered_channel_first():
    # channel 0 all ones, channel 1 all zeros; 18 values pooled to 2 bins of 9: one bin per channel
    level = torch.stack([torch.ones(3, 3), torch.zeros(3, 3)]).unsqueeze(0)
    out = project_neighbourhoods(level, 3, dim=2)[0]
    assert torch.allclose(out[0], torch.tensor([[4, 6, 4], [6, 9, 6], [4, 6, 4]]) / 9.0)
    assert torch.equal(out[1], torch.zeros(3, 3))


def test_adaptive_pooling_bins_overlap_as_torch_defines_them():
    # the centre's neighbourhood is 1..9; 9 values into 2 bins: [1..5] and [5..9] (the middle value in both)
    level = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    centre = project_neighbourhoods(level, 3, dim=2)[0, :, 1, 1]
    assert torch.allclose(centre, torch.tensor([3.0, 7.0]))


def test_levels_are_projected_to_one_size_and_weigh_the_same():
    # patch_size 1 isolates the projection; level A has 2 channels, level B 4 (on a 2x coarser grid, constant)
    a = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    b = torch.tensor([10.0, 10.0, 20.0, 20.0]).view(1, 4, 1, 1)
    # pretrain 2: A -> [1, 3], B -> [10, 20]; joined [1, 3, 10, 20]; target 2 -> [2, 15]: one value per level
    out = aggregate_official([a, b], patch_size=1, pretrain_dim=2, target_dim=2)
    assert out.shape == (1, 2, 2, 2)
    assert torch.allclose(out, torch.tensor([2.0, 15.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2))
    # target = 2 x pretrain keeps both levels' projected vectors whole
    out = aggregate_official([a, b], patch_size=1, pretrain_dim=2, target_dim=4)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.0, 3.0, 10.0, 20.0]))
    # each level holds half the feature whatever its channel count: the same change in either level moves the
    # feature by the same distance (concatenated raw, the 4-channel level would move it twice as far)
    base = aggregate_official([a, b], 1, 2, 2)
    shifted_a = aggregate_official([a + 1, b], 1, 2, 2)
    shifted_b = aggregate_official([a, b + 1], 1, 2, 2)
    assert torch.allclose((shifted_a - base).norm(dim=1), (shifted_b - base).norm(dim=1))
    raw = aggregate_local([a, b.expand(1, 4, 2, 2)], 1)
    assert (aggregate_local([a, b.expand(1, 4, 2, 2) + 1], 1) - raw).norm(dim=1).mean() > \
        (aggregate_local([a + 1, b.expand(1, 4, 2, 2)], 1) - raw).norm(dim=1).mean()


def test_local_aggregation_averages_inside_the_map_and_concatenates_raw():
    """GCAD's and clip_logic's local features: border neighbourhoods average only real pixels, levels resized and
    concatenated raw."""
    maps = [torch.rand(2, 3, 8, 8), torch.rand(2, 5, 4, 4)]
    deeper = F.interpolate(F.avg_pool2d(maps[1], 3, 1, 1, count_include_pad=False), size=(8, 8), mode="bilinear",
                           align_corners=False)
    expected = torch.cat([F.avg_pool2d(maps[0], 3, 1, 1, count_include_pad=False), deeper], dim=1)
    assert torch.equal(aggregate_local(maps, 3), expected)


class _PixelFeatures:
    """A stand-in feature cache whose only level is the image itself (3 channels at the input grid)."""

    def __init__(self):
        self.store = ContentCache(1 << 30)
        self.calls = 0  # images asked for

    def get(self, backbone, images, levels, digests=None):
        self.calls += len(images)
        return [images]


def _pixel_patchcore(spec):
    method = create_method(f"patchcore:{spec}patch_size=1,levels=2,pretrain_dim=3,target_dim=3", preset="offline")
    method.fit(torch.zeros(1, 3, 40, 40), category="toy",
               context=FitContext(torch.device("cpu"), torch.Generator().manual_seed(0), _PixelFeatures()))
    return method


def test_image_score_is_the_max_of_the_raw_patch_scores():
    test = torch.zeros(1, 3, 40, 40)  # larger than the blur's reflect padding (radius 16)
    test[0, :2, 15, 21] = torch.tensor([3.0, 4.0])  # one patch at distance 5 from the all-zero memory
    prediction = _pixel_patchcore("").predict(test)
    assert prediction.scores.item() == pytest.approx(5.0)
    assert prediction.maps.max() < 1.0  # the blurred map spreads the peak: it is for localisation only


def test_preset_dimensions():
    default = create_method("patchcore", preset="offline").config
    assert (default.pretrain_dim, default.target_dim) == (112, 112)
    paper = create_method("patchcore", preset="paper").config
    assert (paper.pretrain_dim, paper.target_dim) == (1024, 1024)


def test_nearest_distances_match_cdist_and_come_sorted():
    torch.manual_seed(0)
    queries, memory = torch.randn(300, 16) * 5, torch.randn(50, 16) * 5
    reference = torch.cdist(queries.double(), memory.double()).sort(dim=1).values
    for n in (1, 3):
        nearest = nearest_distances(queries, memory, n, chunk=64)
        assert torch.allclose(nearest.double(), reference[:, :n], rtol=1e-5, atol=1e-4)
    assert nearest_distances(queries, memory[:2], 5).shape == (300, 2)  # at most the memory's size


@pytest.mark.parametrize("neighbours", [1, 3])
def test_distances_per_support_image_equal_the_whole_memory_and_nested_supports_reuse_them(neighbours):
    torch.manual_seed(1)
    support, test = torch.rand(4, 3, 24, 24), torch.rand(5, 3, 24, 24)
    features = _PixelFeatures()
    spec = f"patchcore:patch_size=1,levels=2,pretrain_dim=3,target_dim=3,num_neighbors={neighbours}"
    cells = {}
    for k in (2, 4):  # nested, as the VAND sampling draws them
        method = create_method(spec, preset="offline")
        method.fit(support[:k], category="toy", context=FitContext(torch.device("cpu"), torch.Generator(), features))
        entries = len(features.store._entries)
        cells[k] = method.predict(test).scores
        assert len(features.store._entries) - entries == 10  # new pairs only: 5 test images x 2 new supports
        whole = nearest_distance(flatten_patches(test), method.memory, k=neighbours).view(5, -1).max(dim=1).values
        assert torch.allclose(cells[k], whole, rtol=1e-5, atol=1e-5)
    calls = features.calls
    method.predict(test)  # every pair cached: the test images' features are not even asked for
    assert features.calls == calls
