"""Package -> verify round trip on a tiny run; corrupted and tampered archives are rejected."""
import io
import tarfile

import pytest

from submission.config import RunConfig
from submission.errors import HarnessError
from submission.packaging import package
from submission.runner import run
from submission.verify import verify


@pytest.fixture(scope="module")
def archive(tiny_loco, tmp_path_factory):
    out = tmp_path_factory.mktemp("pkg") / "tiny"
    run(RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(2,), seeds=(42,), methods=("patchcore",),
                  preset="offline", image_size=64, out=out))
    return package(out, "patchcore", out.parent / "dist")


def test_round_trip_verifies(archive):
    report = verify(archive)
    assert report.cell == "pill_tray k=2 seed=42" and len(report.stored) == 3
    assert report.fresh_bundle == pytest.approx(report.fresh_installed, rel=1e-3, abs=1e-4)
    names = tarfile.open(archive).getnames()
    for required in ("bundle/model.py", "bundle/requirements.txt", "bundle/SHA256SUMS", "bundle/weights/lite0.pth",
                     "bundle/weights/LICENSES.md", "bundle/run/manifest.json", "bundle/methods/patchcore.py"):
        assert required in names


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


@pytest.fixture(scope="module")
def fused_run(tiny_loco, tmp_path_factory):
    out = tmp_path_factory.mktemp("pkg_fusion") / "fused"
    run(RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(2,), seeds=(42,),
                  methods=("patchcore", REGAD, "fusion"), preset="offline", image_size=64, out=out))
    return out


@pytest.mark.parametrize("method", [REGAD, "fusion"])
def test_regad_and_fusion_bundles_verify_the_way_they_ran(fused_run, method):
    """RegAD needs its meta-trained model (artifacts) and auxiliary categories; fusion needs every member."""
    archive = package(fused_run, method, fused_run.parent / "dist")
    report = verify(archive)
    assert report.cell == "pill_tray k=2 seed=42"
    assert report.bundle == pytest.approx(report.stored, rel=1e-3, abs=1e-4)
    names = tarfile.open(archive).getnames()
    if method == REGAD:
        assert any(name.startswith("bundle/artifacts/") and name.endswith(".pt") for name in names)
