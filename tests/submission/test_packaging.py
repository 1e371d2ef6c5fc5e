"""Package -> verify round trip on tiny offline runs of every registered method; corrupted and tampered archives
are rejected; bundle.json says what a bundle serves and whether it follows the VAND few-shot rules."""
import io
import json
import tarfile

import pytest
import torch

from runfolder.schema import variant_dirname
from submission.config import RunConfig
from submission.errors import HarnessError
from submission.cli import main
from submission.packaging import package, unpack_checked
from submission.runner import run
from submission.vand_model import CategoryNotServed, VandModel
from submission.verify import verify


def bundle_info(archive):
    with tarfile.open(archive) as tar:
        return json.loads(tar.extractfile("bundle/bundle.json").read())


@pytest.fixture(scope="module")
def archive(tiny_loco, tmp_path_factory):
    out = tmp_path_factory.mktemp("pkg") / "tiny"
    run(RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(2,), seeds=(42,), methods=("patchcore",),
                  preset="offline", image_size=64, out=out))
    return package(out, "patchcore", out.parent / "dist")


def test_round_trip_verifies(archive):
    report = verify(archive)
    assert report.cell == "pill_tray k=2 seed=42" and len(report.stored) == 10  # every test image of the tiny category
    assert report.fresh_bundle == pytest.approx(report.fresh_installed, rel=1e-3, abs=1e-4)
    names = tarfile.open(archive).getnames()
    for required in ("bundle/model.py", "bundle/requirements.txt", "bundle/SHA256SUMS", "bundle/weights/lite0.pth",
                     "bundle/weights/LICENSES.md", "bundle/run/manifest.json", "bundle/methods/patchcore.py"):
        assert required in names
    info = bundle_info(archive)
    assert info["serves"] == {} and info["categories"] is None  # fits any category from its samples
    assert info["vand_rules"]["follows"] is True and info["vand_rules"]["reasons"] == []
    assert report.rules.startswith("follows the VAND few-shot rules")


def _rewrite(archive, target, change):
    """Copy the archive with one member's bytes changed (or dropped when change returns None)."""
    with tarfile.open(archive) as source:
        members = [(m, source.extractfile(m).read() if m.isfile() else None) for m in source.getmembers()]
    out = archive.parent / f"tampered_{target.replace('/', '_')}.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for member, data in members:
            if member.name == target:
                data = change(data)
                if data is None:
                    continue
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return out


def test_a_tampered_file_is_named(archive):
    tampered = _rewrite(archive, "bundle/methods/patchcore.py", lambda data: data + b"\n# changed\n")
    with pytest.raises(HarnessError, match="methods/patchcore.py does not match its SHA-256"):
        verify(tampered)


def test_a_missing_file_is_named(archive):
    tampered = _rewrite(archive, "bundle/weights/lite0.pth", lambda data: None)
    with pytest.raises(HarnessError, match="weights/lite0.pth is listed in SHA256SUMS but missing"):
        verify(tampered)


def test_a_corrupted_archive_is_rejected(archive, tmp_path):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(HarnessError, match="not a readable bundle archive"):
        verify(broken)


def test_unknown_method_is_an_error(archive):
    with pytest.raises(HarnessError, match="not in this run"):
        package(archive.parent.parent / "tiny", "simplenet", archive.parent)


REGAD = "regad:source=dataset,train_epochs=1,train_batch=4,train_size=32"
SIMPLENET = "simplenet:meta_epochs=1,epochs_per_meta=1,augment_views=1"
GCAD = "gcad:steps=2,distill_steps=2,train_views=4,stat_views=2"


@pytest.fixture(scope="module")
def fused_run(tiny_loco, tmp_path_factory):
    out = tmp_path_factory.mktemp("pkg_fusion") / "fused"
    run(RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(2,), seeds=(42,),
                  methods=("patchcore", REGAD, "clip_logic", "fusion"), preset="offline", image_size=64, out=out))
    return out


@pytest.mark.parametrize("method", [REGAD, "clip_logic", "fusion"])
def test_regad_clip_logic_and_fusion_bundles_verify_the_way_they_ran(fused_run, method):
    """RegAD needs its meta-trained model (artifacts) and auxiliary categories; fusion needs every member."""
    archive = package(fused_run, method, fused_run.parent / "dist")
    report = verify(archive)
    assert report.cell == "pill_tray k=2 seed=42"
    assert report.bundle == pytest.approx(report.stored, rel=1e-3, abs=1e-4)
    names = tarfile.open(archive).getnames()
    info = bundle_info(archive)
    if method == "clip_logic":  # offline: no CLIP tower, the bundled Lite0 only
        assert info["weights"] == {"lite0": "weights/lite0.pth"} and info["vand_rules"]["follows"] is True
    else:  # RegAD alone or inside the fusion: its meta-trained model ships, and limits what the bundle serves
        assert info["serves"] == {REGAD: ["pill_tray"]} and info["categories"] == ["pill_tray"]
        assert any(name.startswith(f"bundle/artifacts/{variant_dirname(REGAD)}/")
                   and name.endswith(".pt") for name in names)
        rules = info["vand_rules"]
        assert rules["follows"] is False and len(rules["reasons"]) == 1
        assert "meta-trained on the other categories" in rules["reasons"][0] and REGAD in rules["reasons"][0]
        assert rules["statement"].startswith("does NOT follow the VAND few-shot rules")
    if method == "fusion":
        assert info["members"] == ["patchcore", REGAD, "clip_logic"]


def test_a_category_the_regad_bundle_cannot_serve_is_a_clear_error_at_setup(fused_run, tmp_path, capsys):
    assert main(["package", str(fused_run), "--method", REGAD, "--dist", str(tmp_path / "dist")]) == 0
    printed = capsys.readouterr().out
    assert "VAND rules: this bundle does NOT follow the VAND few-shot rules" in printed
    assert "serves only: pill_tray" in printed
    [archive] = (tmp_path / "dist").glob("*.tar.gz")
    bundle = unpack_checked(archive, tmp_path / "unpacked")
    readme = (bundle / "README.md").read_text()
    assert "does NOT follow the VAND few-shot rules" in readme and "meta-trained on the other categories" in readme
    assert f"`{REGAD}`: pill_tray" in readme

    class Model(VandModel):
        bundle_dir = bundle

    support = torch.rand(2, 3, 64, 64)
    with pytest.raises(CategoryNotServed, match="cannot serve category 'breakfast_box'.*only for pill_tray"):
        Model().setup({"few_shot_samples": support, "dataset_category": "breakfast_box"})


@pytest.fixture(scope="module")
def trained_run(tiny_loco, tmp_path_factory):
    out = tmp_path_factory.mktemp("pkg_trained") / "trained"
    run(RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(1,), seeds=(42,), methods=(SIMPLENET, GCAD),
                  preset="offline", image_size=64, out=out))
    return out


@pytest.mark.parametrize("method", [SIMPLENET, GCAD])
def test_trained_methods_bundles_verify(trained_run, method):
    """SimpleNet and GCAD train on the support set at setup: the bundle refits and scores as the run did."""
    report = verify(package(trained_run, method, trained_run.parent / "dist"))
    assert report.cell == "pill_tray k=1 seed=42"
    assert report.bundle == pytest.approx(report.stored, rel=1e-3, abs=1e-4)
    assert report.rules.startswith("follows the VAND few-shot rules")


def test_a_run_with_random_weights_cannot_be_packaged(tiny_loco, tmp_path):
    out = tmp_path / "random"
    run(RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(1,), seeds=(42,), methods=("patchcore",),
                  preset="offline", image_size=64, out=out, pretrained=False))
    with pytest.raises(HarnessError, match="random weights"):
        package(out, "patchcore", tmp_path / "dist")
    assert not (tmp_path / "dist").exists()
