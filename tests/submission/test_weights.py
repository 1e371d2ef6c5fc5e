"""`python -m submission weights [fetch]` with no network: caches live in tmp_path, downloads are mocked (as
open_clip's tests/test_download_pretrained.py mocks its own)."""
import hashlib
import os
from dataclasses import replace
from pathlib import Path

import open_clip.pretrained
import pytest
import torch

from methods import list_methods
from methods import clip_towers
from methods.backbones import BACKBONES, resolve_weights
from methods.weight_files import LICENCES
from methods.clip_towers import resolve_clip_weights
from methods.registry import build_config
from submission import weights as weights_command
from submission.cli import main
from submission.preflight import preflight
from submission.weights import weights_report

CLIP = ("ViT-B-16-plus-240", "laion400m_e31")
CLIP_REPO = "timm/vit_base_patch16_plus_clip_240.laion400m_e31"


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty Hugging Face, torch hub and open_clip caches under tmp_path: a fresh machine."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    monkeypatch.setattr(clip_towers, "OPEN_CLIP_URL_CACHE", tmp_path / "clip")
    return tmp_path


@pytest.fixture
def online(monkeypatch):
    """Downloads allowed (the conftest sets HF_HUB_OFFLINE=1) and every host reachable; each download is mocked."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(weights_command, "_reachable", lambda host, timeout=3.0: True)


def _needed(preset):
    """What the registry says each preset needs: backbone names and CLIP model names."""
    names = set()
    for entry in list_methods():
        _, config = build_config(entry.name, preset)
        names |= {need.name for need in entry.requirements(config).weights}
    return names


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _torchvision_name(monkeypatch, name: str, data: bytes) -> str:
    """Give a backbone a torchvision file name whose SHA-256 prefix is that of `data` (as torchvision's names
    carry the prefix of the real file)."""
    file_name = f"{name}-{_sha(data)[:8]}.pth"
    monkeypatch.setitem(BACKBONES, name, replace(BACKBONES[name], torch_hub_file=file_name))
    return file_name


def _fake_torch_download(data: bytes, calls: list):
    def download_url_to_file(url, dst, hash_prefix=None, progress=True):  # torch.hub's signature; checks nothing
        calls.append(url)
        Path(dst).write_bytes(data)
    return download_url_to_file


def _fake_hf_download(data: bytes, etag: str, calls: list):
    """hf_hub_download as it lays out the cache: blobs/<etag>, snapshots/<revision>/<file> -> blob, refs/main."""
    def hf_hub_download(repo_id, filename, revision=None, cache_dir=None, **kwargs):
        calls.append((repo_id, filename))
        from huggingface_hub import constants

        repo = Path(cache_dir or constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        (repo / "blobs" / etag).write_bytes(data)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text("0" * 40)
        snapshot = repo / "snapshots" / ("0" * 40) / filename
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.symlink_to(os.path.relpath(repo / "blobs" / etag, snapshot.parent))
        return str(snapshot)
    return hf_hub_download


def test_report_lists_every_needed_weight_for_both_presets(caches, capsys):
    assert _needed("paper") == {"wide_resnet50_2", "resnet18", "efficientnet_b6", "ViT-B-16-plus-240"}
    assert _needed("offline") == {"lite0"}
    placed = caches / "torch" / "checkpoints" / BACKBONES["resnet18"].torch_hub_file
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"resnet18 weights")

    rows = {row.name: row for row in weights_report(preset="paper")}
    assert set(rows) == _needed("paper")
    assert rows["resnet18"].found == placed and rows["resnet18"].needed_by == ("gcad", "regad", "anomalib:Padim")
    assert rows["wide_resnet50_2"].found is None and rows["ViT-B-16-plus-240"].found is None
    assert rows["efficientnet_b6"].found is None and rows["efficientnet_b6"].needed_by == ("bgad",)
    assert any(str(caches / "torch") in place for place in rows["wide_resnet50_2"].search.searched)
    assert any(str(caches / "clip") in place for place in rows["ViT-B-16-plus-240"].search.searched)
    offline = weights_report(preset="offline")
    assert [row.name for row in offline] == ["lite0"] and offline[0].found is not None

    assert main(["weights", "--preset", "paper"]) == 0  # a report: missing files are not an error
    out = capsys.readouterr().out
    assert _sha(b"resnet18 weights") in out and out.count("MISSING") == 3 and "BSD-3-Clause" in out and "MIT" in out
    assert "3 of 4 weight files missing" in out and "python -m submission weights fetch --preset paper" in out
    assert f"https://download.pytorch.org/models/{BACKBONES['wide_resnet50_2'].torch_hub_file}" in out
    assert main(["weights", "--preset", "offline"]) == 0
    out = capsys.readouterr().out
    assert "lite0" in out and "Apache-2.0" in out and "MISSING" not in out
    assert hashlib.sha256(Path(offline[0].found).read_bytes()).hexdigest() in out


def test_an_explicit_file_is_reported_and_an_unknown_name_is_an_error(caches, capsys):
    explicit = caches / "r18.pth"
    explicit.write_bytes(b"mine")
    assert main(["weights", "--methods", "gcad", "--weights", f"resnet18={explicit}"]) == 0
    out = capsys.readouterr().out
    assert _sha(b"mine") in out and "(--weights)" in out and "1 of 1 weight files found" in out
    assert main(["weights", "--methods", "gcad", "--weights", f"lite0={explicit}"]) == 2
    assert "--weights lite0: not a weight file the selected methods need" in capsys.readouterr().out
    assert main(["weights", "--methods", "gcad", "--weights", f"resnet18={caches / 'nope.pth'}"]) == 2
    assert "no such file" in capsys.readouterr().out


def test_fetch_writes_into_the_caches_the_search_reads(caches, online, monkeypatch, capsys):
    tv_bytes, clip_bytes = b"resnet18 from torchvision", b"clip tower from the hub"
    file_name = _torchvision_name(monkeypatch, "resnet18", tv_bytes)
    torch_calls, hf_calls = [], []
    monkeypatch.setattr(torch.hub, "download_url_to_file", _fake_torch_download(tv_bytes, torch_calls))
    fake_hub = _fake_hf_download(clip_bytes, _sha(clip_bytes), hf_calls)
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", fake_hub)

    assert main(["weights", "fetch", "--methods", "gcad", "clip_logic"]) == 0
    out = capsys.readouterr().out
    assert torch_calls == [f"https://download.pytorch.org/models/{file_name}"]
    assert hf_calls == [(CLIP_REPO, "open_clip_model.safetensors")]  # open_clip's own choice: safetensors first
    assert resolve_weights("resnet18") == caches / "torch" / "checkpoints" / file_name
    assert resolve_clip_weights(*CLIP).read_bytes() == clip_bytes
    assert _sha(tv_bytes) in out and _sha(clip_bytes) in out and "MISSING" not in out  # the report after fetching

    assert main(["weights", "fetch", "--methods", "gcad"]) == 0  # nothing missing: nothing downloaded
    assert len(torch_calls) == 1 and "nothing to fetch" in capsys.readouterr().out


def test_a_download_that_does_not_match_its_published_digest_is_rejected(caches, online, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", _fake_torch_download(b"truncated", calls))
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download",
                        _fake_hf_download(b"corrupt", _sha(b"the real tower"), calls))
    assert main(["weights", "fetch", "--methods", "gcad", "clip_logic"]) == 2
    out = capsys.readouterr().out
    target = caches / "torch" / "checkpoints" / BACKBONES["resnet18"].torch_hub_file
    assert str(target) in out and "removed it" in out and not target.exists()  # named, and not left in the cache
    assert f"models--{CLIP_REPO.replace('/', '--')}" in out and _sha(b"the real tower") in out
    assert [row.found for row in weights_report(("gcad", "clip_logic"))] == [None, None]


def test_offline_fetch_fails_at_once_with_one_line_per_missing_file(caches, monkeypatch, capsys):
    def no_download(*args, **kwargs):
        raise AssertionError("offline: nothing may be downloaded")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", no_download)
    monkeypatch.setattr(weights_command, "_reachable", no_download)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert main(["weights", "fetch", "--preset", "paper"]) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 4 and all(line.startswith("error: offline (HF_HUB_OFFLINE is set)") for line in lines)
    for name in ("wide_resnet50_2", "resnet18"):
        line = next(line for line in lines if f": {name}:" in line)
        file_name = BACKBONES[name].torch_hub_file
        assert f"--weights {name}=PATH" in line and f"https://download.pytorch.org/models/{file_name}" in line
        assert str(caches / "torch" / "checkpoints" / file_name) in line
    b6_line = next(line for line in lines if ": efficientnet_b6:" in line)  # timm's release, not torchvision's
    assert BACKBONES["efficientnet_b6"].download_url in b6_line and "--weights efficientnet_b6=PATH" in b6_line
    clip_line = next(line for line in lines if "ViT-B-16-plus-240" in line)
    assert str(caches / "clip") in clip_line and "--weights ViT-B-16-plus-240=PATH" in clip_line

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # no network without the variable
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(weights_command, "_reachable", lambda host, timeout=3.0: False)
    assert main(["weights", "fetch", "--methods", "patchcore"]) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and "no network" in lines[0] and "--weights wide_resnet50_2=PATH" in lines[0]


def test_the_preflight_names_the_fetch_command_for_a_missing_paper_weight(caches):
    variants = {v.spec: v for v in preflight(("patchcore", "clip_logic", "gcad:steps=2"), "paper", {})}
    for spec in ("patchcore", "clip_logic"):
        assert variants[spec].missing[0].endswith("python -m submission weights fetch --preset paper")
    assert variants["gcad:steps=2"].missing[0].endswith(
        "python -m submission weights fetch --preset paper --methods gcad:steps=2")


def test_every_weight_has_a_licence():
    assert set(LICENCES) >= _needed("paper") | _needed("offline")


def test_the_report_flags_a_cached_file_that_is_not_the_published_one(caches, capsys):
    placed = caches / "torch" / "checkpoints" / BACKBONES["resnet18"].torch_hub_file  # resnet18-f37072fd.pth
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"something else")
    assert main(["weights", "--methods", "gcad"]) == 0
    out = capsys.readouterr().out
    assert "not the" in out and "f37072fd" in out and _sha(b"something else") in out
