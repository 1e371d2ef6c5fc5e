"""The pre-flight skips a fusion whose named member cannot run (it would fail every cell otherwise)."""
from submission.preflight import preflight


def test_a_fusion_naming_a_member_without_weights_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # no CLIP weights anywhere
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("methods.clip_towers.OPEN_CLIP_URL_CACHE", tmp_path / "clip")
    specs = ("patchcore:backbone=lite0", "clip_logic", "fusion:members=patchcore+clip_logic", "fusion")
    variants = {v.spec: v for v in preflight(specs, "paper", {})}
    assert variants["patchcore:backbone=lite0"].runnable and not variants["clip_logic"].runnable
    named = variants["fusion:members=patchcore+clip_logic"]
    assert not named.runnable and "member(s) it fuses cannot run: clip_logic" in named.missing[0]
    assert variants["fusion"].runnable  # fuses whichever members run


def test_an_unknown_clip_tag_is_an_error_not_missing_weights():
    import pytest

    from submission.errors import HarnessError

    with pytest.raises(HarnessError, match="CLIP tag 'laion400m_e99' is not a tag of ViT-B-16-plus-240; "
                                           "expected one of laion400m_e31, laion400m_e32"):
        preflight(("clip_logic:clip_pretrained=laion400m_e99",), "paper", {})


def test_regad_with_no_other_category_to_train_on_stops_before_any_cell(tiny_loco, tmp_path):
    import shutil

    import pytest

    from submission.config import RunConfig
    from submission.errors import HarnessError
    from submission.runner import run

    shutil.copytree(tiny_loco / "pill_tray", tmp_path / "only" / "pill_tray")
    out = tmp_path / "run"
    with pytest.raises(HarnessError, match="source='dataset' .* has no category other than 'pill_tray'"):
        run(RunConfig(data=tmp_path / "only", shots=(1,), seeds=(42,), methods=("patchcore", "regad:source=dataset"),
                      preset="offline", image_size=64, out=out))
    assert not (out / "results.csv").exists()
