"""The paper preset shipped: a CNN method, clip_logic with its CLIP tower and a fusion of both are packaged with
their weight files and verified (the bundle's child process builds the tower from the file in weights/).

No paper weights exist here, so the run gets real digests from test-only weight files written in tmp_path
(random networks saved as files, passed as --weights): never packaged as results, and the bundles say they do not
follow the VAND rules because those files are not published weights. The CNN is ResNet-18 (`patchcore:backbone=
resnet18`; the paper's WideResNet-50-2 file is 270 MB) and the CLIP tower is the tiny open_clip config of the
clip_logic tests (the real ViT-B-16-plus-240 file is 830 MB): the bundle carries that config (clip_configs),
since open_clip does not know it by name, and its child process registers it before building the tower."""
import json
import os
import tarfile

import pytest
import timm
import torch

from methods import clip_towers
from submission.config import RunConfig
from submission.errors import HarnessError
from submission.packaging import package
from submission.runner import run
from submission.verify import verify
from tests.methods.test_clip_logic import TINY, TINY_CONFIG

CNN = "patchcore:backbone=resnet18"
CLIP = f"clip_logic:clip_model={TINY}"


@pytest.fixture(scope="module")
def tiny_clip_known():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(clip_towers.EXTRA_MODEL_CONFIGS, TINY, TINY_CONFIG)
        yield


@pytest.fixture(scope="module")
def test_weights(tmp_path_factory, tiny_clip_known):
    """Test-only weight files: a random ResNet-18 and a random tiny CLIP, saved as state dicts."""
    folder = tmp_path_factory.mktemp("test_weights")
    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), folder / "resnet18.pth")
    torch.save(clip_towers.create_clip_model(TINY, "none", None, pretrained=False).state_dict(), folder / "tiny.pt")
    return {"resnet18": folder / "resnet18.pth", TINY: folder / "tiny.pt"}


@pytest.fixture(scope="module")
def paper_run(tiny_loco, tmp_path_factory, test_weights):
    out = tmp_path_factory.mktemp("pkg_paper") / "paper"
    run(RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(2,), seeds=(42,), methods=(CNN, CLIP, "fusion"),
                  preset="paper", weights=test_weights, image_size=64, out=out))
    return out


def bundle_info(archive):
    with tarfile.open(archive) as tar:
        return json.loads(tar.extractfile("bundle/bundle.json").read()), tar.getnames()


@pytest.mark.parametrize("method", [CNN, CLIP, "fusion"])
def test_paper_bundles_ship_their_weights_and_verify(paper_run, method, test_weights):
    archive = package(paper_run, method, paper_run.parent / "dist")
    report = verify(archive)
    assert report.cell == "pill_tray k=2 seed=42"
    assert report.bundle == pytest.approx(report.stored, rel=1e-3, abs=1e-4)
    info, names = bundle_info(archive)
    config = json.loads((paper_run / "config.json").read_text())
    assert info["preset"] == "paper"
    wanted = {CNN: ["resnet18"], CLIP: [TINY], "fusion": ["resnet18", TINY]}[method]
    assert sorted(info["weights"]) == sorted(wanted)
    for name in wanted:
        assert f"bundle/{info['weights'][name]}" in names
        recorded = {d for spec in config["methods"].values() for n, d in spec["weights"].items() if n == name}
        assert {info["weight_digests"][name]} == recorded and "random" not in recorded
    assert (info["clip_configs"] == {TINY: json.loads(json.dumps(TINY_CONFIG))}) == (TINY in wanted)
    with tarfile.open(archive) as tar:
        licences = tar.extractfile("bundle/weights/LICENSES.md").read().decode()
    assert all(f"({name}, SHA-256 " in licences for name in wanted)
    rules = info["vand_rules"]  # test-only files are not published weights
    assert rules["follows"] is False and len(rules["reasons"]) == len(wanted)
    assert all("VAND requires public weights" in reason for reason in rules["reasons"])
    assert report.rules.startswith("does NOT follow the VAND few-shot rules")


def test_the_bundle_builds_the_clip_tower_from_its_own_file(paper_run, tmp_path):
    """The entry point's tower holds the tensors of the shipped file (weights keyed by open_clip model name)."""
    from submission.packaging import unpack_checked
    from submission.vand_model import VandModel

    archive = package(paper_run, CLIP, tmp_path / "dist")
    bundle = unpack_checked(archive, tmp_path / "unpacked")

    class Model(VandModel):
        bundle_dir = bundle

    model = Model()
    torch.manual_seed(42)
    model.setup({"few_shot_samples": torch.rand(2, 3, 64, 64), "dataset_category": "pill_tray"})
    tower = model.features.clip_tower(TINY, "laion400m_e31")
    shipped = torch.load(bundle / "weights" / f"{TINY}.pt", weights_only=True)
    assert torch.equal(tower.clip.visual.proj.cpu(), shipped["visual.proj"])


def test_a_weight_file_changed_since_the_run_is_refused(tiny_loco, tmp_path, tiny_clip_known):
    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), weights)
    out = tmp_path / "run"
    run(RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(1,), seeds=(42,), methods=(CNN,),
                  preset="paper", weights={"resnet18": weights}, image_size=64, out=out))
    state = torch.load(weights, weights_only=True)
    torch.save({name: value + 1 if value.is_floating_point() else value for name, value in state.items()}, weights)
    with pytest.raises(HarnessError, match="is not the 'resnet18' weight file the run used"):
        package(out, CNN, tmp_path / "dist")


def test_random_clip_weights_cannot_be_packaged(tiny_loco, tmp_path, tiny_clip_known):
    """A random CLIP tower records no digest at all; the run's pretrained=False still stops packaging."""
    out = tmp_path / "random"
    run(RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(1,), seeds=(42,), methods=(CLIP,),
                  preset="paper", image_size=64, out=out, pretrained=False))
    with pytest.raises(HarnessError, match="random weights"):
        package(out, CLIP, tmp_path / "dist")


@pytest.mark.skipif(os.environ.get("SLOW_PACKAGING") != "1", reason="set SLOW_PACKAGING=1: an 800 MB tower file")
def test_the_real_clip_tower_ships_and_verifies(tiny_loco, tmp_path):
    """The paper's ViT-B-16-plus-240 (random weights saved as a test-only file): open_clip builds it by name in the
    bundle's child process from weights/ViT-B-16-plus-240.pt; no config ships."""
    weights = tmp_path / "vit.pt"
    torch.save(clip_towers.create_clip_model("ViT-B-16-plus-240", "laion400m_e31", None, False).state_dict(), weights)
    out = tmp_path / "run"
    run(RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(1,), seeds=(42,), methods=("clip_logic",),
                  preset="paper", weights={"ViT-B-16-plus-240": weights}, image_size=64, out=out))
    archive = package(out, "clip_logic", tmp_path / "dist")
    weights.unlink()  # the bundle needs nothing outside itself
    report = verify(archive)
    assert report.bundle == pytest.approx(report.stored, rel=1e-3, abs=1e-4)
    info, names = bundle_info(archive)
    assert info["weights"] == {"ViT-B-16-plus-240": "weights/ViT-B-16-plus-240.pt"} and info["clip_configs"] == {}
    assert "bundle/weights/ViT-B-16-plus-240.pt" in names
