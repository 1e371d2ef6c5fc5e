import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from methods.backbones import BACKBONES, fetch_backbone_weights, load_backbone, resolve_weights, search_weights
from methods.features import FeatureCache
from methods.weight_files import published_digest, WeightsInvalid, WeightsMissing


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No hub cache and no torch hub checkpoints: what a fresh offline machine has."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    return tmp_path


def test_bundled_lite0_loads_and_gives_strided_levels():
    extractor = load_backbone("lite0")
    maps = extractor(torch.rand(2, 3, 64, 64))
    assert [m.shape for m in maps] == [(2, 24, 16, 16), (2, 40, 8, 8), (2, 112, 4, 4)]
    assert extractor.channels() == [24, 40, 112]


def test_missing_paper_weights_name_every_place_searched(empty_caches):
    with pytest.raises(WeightsMissing) as error:
        resolve_weights("wide_resnet50_2")
    message = str(error.value)
    assert "wide_resnet50_2" in message and "hub cache" in message and "--weights wide_resnet50_2=PATH" in message


def test_explicit_weight_file_is_used(empty_caches):
    model = load_backbone("resnet18", pretrained=False)
    path = empty_caches / "r18.pth"
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in __import__("timm").create_model("resnet18").state_dict().items()}
    torch.save(state, path)
    assert resolve_weights("resnet18", path) == path
    loaded = load_backbone("resnet18", path)
    assert torch.equal(loaded.model.conv1.weight, state["conv1.weight"])
    assert not torch.equal(model.model.conv1.weight, state["conv1.weight"])


def test_a_wrong_explicit_path_is_reported(empty_caches):
    with pytest.raises(WeightsMissing, match="no such file"):
        resolve_weights("resnet18", empty_caches / "nope.pth")


def test_feature_cache_computes_each_image_once():
    cache = FeatureCache(torch.device("cpu"))
    images = torch.rand(3, 3, 64, 64)
    first = cache.get("lite0", images, (2, 3))
    second = cache.get("lite0", images[[2, 0]], (3,))
    assert cache.passes["lite0"] == 3
    assert torch.equal(second[0][0], first[1][2]) and torch.equal(second[0][1], first[1][0])


def test_feature_cache_computes_and_keeps_only_the_levels_asked_for(monkeypatch):
    cache = FeatureCache(torch.device("cpu"), pretrained=False)
    asked = []
    extractor = cache.extractor("lite0")
    forward = extractor.forward
    monkeypatch.setattr(extractor, "forward",
                        lambda images, levels=None: asked.append(levels) or forward(images, levels))
    images = torch.rand(2, 3, 64, 64)
    maps = cache.get("lite0", images, (2, 3))
    assert asked == [(2, 3)] and [m.shape[1] for m in maps] == extractor.channels((2, 3))
    assert {key[2] for key in cache.store._entries} == {2, 3}  # level 1 is neither computed nor kept
    cache.get("lite0", images, (3,))
    assert asked == [(2, 3)] and cache.passes["lite0"] == 2  # level 3 was there: no second pass
    cache.get("lite0", images, (1,))
    assert asked == [(2, 3), (1,)] and cache.passes["lite0"] == 4


def test_search_lists_every_place_in_order_and_how_to_get_the_file(empty_caches):
    search = search_weights("resnet18")
    assert search.found is None and [place.split(" (")[0].split(" /")[0] for place in search.searched] == [
        "Hugging Face hub cache", "torch hub cache"]
    assert search.place == empty_caches / "torch" / "checkpoints" / "resnet18-f37072fd.pth"
    assert search.url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert search.how_to_get() == f"resnet18: download {search.url} to {search.place}, or pass --weights resnet18=PATH"
    assert search_weights("lite0").found is not None and search_weights("lite0").place is None


def test_published_digest_comes_from_the_provider(tmp_path):
    assert published_digest(tmp_path / "resnet18-f37072fd.pth") == "f37072fd"  # torchvision's file name
    assert published_digest(tmp_path / "vit_b_16_plus_240-laion400m_e31-8fb26589.pt") == "8fb26589"  # open_clip's
    blob = tmp_path / "blobs" / ("ab" * 32)
    blob.parent.mkdir()
    blob.write_bytes(b"x")
    (tmp_path / "model.safetensors").symlink_to(blob)
    assert published_digest(tmp_path / "model.safetensors") == "ab" * 32  # a hub LFS blob is named by its SHA-256
    assert published_digest(tmp_path / "model.pth") is None


def test_fetched_weights_are_where_resolve_weights_looks(empty_caches, monkeypatch):
    data = b"torchvision file"
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    monkeypatch.setitem(BACKBONES, "resnet18", replace(BACKBONES["resnet18"], torch_hub_file=name))
    asked = []
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda url, dst, hash_prefix=None, progress=True: asked.append((url, hash_prefix))
                        or Path(dst).write_bytes(data))
    path = fetch_backbone_weights("resnet18")
    assert asked == [(f"https://download.pytorch.org/models/{name}", name[9:17])]  # torch.hub checks the prefix too
    assert resolve_weights("resnet18") == path == empty_caches / "torch" / "checkpoints" / name


def test_a_fetched_file_with_the_wrong_digest_is_removed_and_named(empty_caches, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda url, dst, hash_prefix=None, progress=True: Path(dst).write_bytes(b"corrupt"))
    target = empty_caches / "torch" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsInvalid, match=f"{target}.*publishes f37072fd"):
        fetch_backbone_weights("resnet18")
    assert not target.exists()
    with pytest.raises(WeightsMissing):
        resolve_weights("resnet18")


def test_feature_cache_counts_dataset_images_and_views_apart_and_sees_a_second_pass():
    cache = FeatureCache(torch.device("cpu"), pretrained=False)
    images = torch.rand(3, 3, 32, 32)
    cache.get("lite0", images, (2, 3))
    cache.compute("lite0", images.flip(-1), (2, 3))  # views made inside a fit: never cached
    cache.get("lite0", images[:2], (2, 3))
    assert cache.dataset_passes == {"lite0": 3} and cache.view_passes == {"lite0": 3} and cache.passes == {"lite0": 6}
    cache.store.clear()  # as an eviction would: the same images pass again
    cache.get("lite0", images, (2, 3))
    summary = cache.pass_summary()
    assert summary["dataset_passes"] == {"lite0": 6} and summary["distinct_images"] == {"lite0": 3}


def test_a_cache_bound_below_one_image_evicts_and_counts_it():
    cache = FeatureCache(torch.device("cpu"), pretrained=False, max_bytes=0)
    images = torch.rand(2, 3, 32, 32)
    cache.get("lite0", images, (2,))
    cache.get("lite0", images, (2,))
    assert cache.dataset_passes == {"lite0": 4} and cache.store.evictions == 4 and cache.store.peak_bytes == 0


def test_lookup_only_serves_cached_images_and_counts_the_rest_as_uncached_views():
    cache = FeatureCache(torch.device("cpu"), pretrained=False)
    images = torch.rand(2, 3, 32, 32)
    first = cache.get("lite0", images, (2, 3))
    with cache.lookup_only():
        again = cache.get("lite0", torch.cat([images, images.flip(-1)]), (2, 3))  # 2 cached, 2 views
    assert torch.equal(again[0][:2], first[0]) and len(cache.store) == 4  # 2 images x 2 levels, views not kept
    assert cache.dataset_passes == {"lite0": 2} and cache.view_passes == {"lite0": 2} and cache.store.keeping


def test_building_a_backbone_leaves_the_global_rng_alone():
    """A method that loads a backbone first in a run must draw the same random numbers as one that finds it
    loaded (RegAD's initialisation once depended on which methods ran before it)."""
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    first = load_backbone("lite0", pretrained=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(99)  # another caller state: the random weights do not follow it
    second = load_backbone("lite0", pretrained=False)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
