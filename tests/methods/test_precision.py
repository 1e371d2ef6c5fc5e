"""With precision `auto`, frozen networks run under autocast on CUDA (bf16 where supported, else fp16); fp32 is the default;
the switch is wired from the run's config to the feature cache and the CLIP tower (checked on CPU)."""
import pytest
import torch

from methods.features import FeatureCache
from methods.common import autocast_dtype
from submission.config import RunConfig
from submission.errors import HarnessError
from submission.runner import Runner


def test_autocast_dtype_follows_device_and_precision(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert autocast_dtype(cuda, "auto") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert autocast_dtype(cuda, "auto") is torch.float16
    assert autocast_dtype(cuda) is None  # fp32 by default
    assert autocast_dtype(torch.device("cpu")) is None
    with pytest.raises(ValueError, match="fp32"):
        autocast_dtype(cuda, "half")


def test_run_config_precision_reaches_the_feature_cache(tmp_path, monkeypatch):
    monkeypatch.setattr("submission.runner.resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert Runner(RunConfig(out=tmp_path / "a", precision="auto")).features.autocast_dtype is torch.bfloat16
    assert Runner(RunConfig(out=tmp_path / "b")).features.autocast_dtype is None  # fp32 by default
    with pytest.raises(HarnessError, match="--precision"):
        RunConfig(precision="half")


def test_the_clip_tower_gets_the_cache_precision(monkeypatch):
    from methods import clip_towers

    built = {}
    monkeypatch.setattr(clip_towers, "create_clip_model", lambda *args: built.setdefault("clip", object()))
    monkeypatch.setattr(clip_towers, "clip_preprocessing", lambda *args: ((0.5,) * 3, (0.25,) * 3))

    class FakeTower:
        def __init__(self, *args, **kwargs):
            self.autocast_dtype = None

        def to(self, device):
            return self

    monkeypatch.setattr(clip_towers, "ClipTower", FakeTower)
    features = FeatureCache(torch.device("cpu"))
    features.autocast_dtype = torch.float16  # as on a CUDA device without bf16
    assert features.clip_tower("ViT-B-16", "openai").autocast_dtype is torch.float16
