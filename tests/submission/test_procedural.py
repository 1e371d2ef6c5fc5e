"""Tests of the procedural LOCO-like dataset (`submission.datasets.procedural`)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from submission.cli import main
from submission.datasets import procedural
from submission.datasets.procedural import (
    CATEGORIES,
    SPLITS,
    ProceduralConfig,
    config_digest,
    ensure_dataset,
    folder_name,
    generate,
    render_sample,
)
from submission.datasets.readers import list_categories, read_category

TINY = ProceduralConfig(image_size=64, n_train=3, n_validation=2, n_test_good=2,
                        n_test_logical=3, n_test_structural=3)
SPLIT_DIRS = {"train/good": "n_train", "validation/good": "n_validation",
              "test/good": "n_test_good", "test/logical_anomalies": "n_test_logical",
              "test/structural_anomalies": "n_test_structural"}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("tiny"), TINY)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_counts_and_image_format(tiny_root: Path) -> None:
    assert sorted(p.name for p in tiny_root.iterdir()) == sorted(TINY.categories)
    assert len(TINY.categories) >= 3
    for category in TINY.categories:
        for folder, attr in SPLIT_DIRS.items():
            files = sorted((tiny_root / category / folder).glob("*.png"))
            assert [f.name for f in files] == [f"{i:03d}.png" for i in range(getattr(TINY, attr))]
            for f in files:
                with Image.open(f) as im:
                    assert im.mode == "RGB" and im.size == (64, 64)


def test_masks_match_defects_config(tiny_root: Path) -> None:
    for category in TINY.categories:
        table = json.loads((tiny_root / category / "defects_config.json").read_text())
        keys = {"defect_name", "pixel_value", "saturation_threshold", "relative_saturation"}
        assert all(set(e) == keys for e in table)
        values = [e["pixel_value"] for e in table]
        assert len(set(values)) == len(values)
        assert len({e["defect_name"] for e in table}) == len(table)
        for e in table:  # LOCO: relative thresholds are 1.0, absolute ones a pixel count
            assert e["saturation_threshold"] == 1.0 if e["relative_saturation"] else (
                isinstance(e["saturation_threshold"], int) and e["saturation_threshold"] > 0)
        gt = tiny_root / category / "ground_truth"
        assert not (gt / "good").exists()
        for split in ("logical_anomalies", "structural_anomalies"):
            images = sorted((tiny_root / category / "test" / split).glob("*.png"))
            assert images
            assert sorted(p.name for p in (gt / split).iterdir()) == [p.stem for p in images]
            for image in images:
                masks = sorted((gt / split / image.stem).glob("*.png"))
                assert [m.name for m in masks] == [f"{k:03d}.png" for k in range(len(masks))]
                assert masks, image
                for m in masks:
                    with Image.open(m) as im:
                        assert im.mode == "L" and im.size == (64, 64)
                        arr = np.asarray(im)
                    assert arr.any()
                    assert set(np.unique(arr[arr > 0]).tolist()) <= set(values)
                    assert len(np.unique(arr[arr > 0])) == 1  # one defect type per instance


def test_every_logical_type_is_used(tiny_root: Path) -> None:
    for category in TINY.categories:
        table = json.loads((tiny_root / category / "defects_config.json").read_text())
        by_value = {e["pixel_value"]: e["defect_name"] for e in table}
        seen = set()
        for m in (tiny_root / category / "ground_truth" / "logical_anomalies").rglob("*.png"):
            seen |= {by_value[v] for v in np.unique(np.asarray(Image.open(m))) if v}
        assert seen == {d.name for d in CATEGORIES[category].logical}


def test_deterministic(tiny_root: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", TINY)
    assert _files(again) == _files(tiny_root)
    other = generate(tmp_path / "other", replace(TINY, seed=1, categories=("pill_tray",)))
    name = "pill_tray/train/good/000.png"
    assert (other / name).read_bytes() != (tiny_root / name).read_bytes()


def test_images_do_not_depend_on_counts(tiny_root: Path, tmp_path: Path) -> None:
    fewer = generate(tmp_path / "fewer", replace(TINY, n_train=1, n_test_logical=1))
    for name, data in _files(fewer).items():
        assert data == (tiny_root / name).read_bytes()


def test_structural_masks_cover_expected_area_at_default_size() -> None:
    config = ProceduralConfig()
    for category in config.categories:
        for i in range(4):
            sample = render_sample(category, "structural_anomalies", i, config)
            assert sample.image.shape == (256, 256, 3) and 1 <= len(sample.masks) <= 2
            for name, mask in sample.masks:
                assert name in {"scratch", "hole", "contamination"}
                assert 0.002 <= mask.mean() <= 0.03, (category, i, name, mask.mean())


def test_structural_defects_are_low_contrast() -> None:
    """Defects shift intensities by tens of grey levels with soft edges, never saturated blobs."""
    parts = CATEGORIES["part_slots"].scene(np.random.default_rng(0))
    for name in ("scratch", "hole", "contamination"):
        for i in range(4):
            canvas = np.full((256, 256, 3), 90.0)
            mask = procedural._structural(canvas, parts, np.random.default_rng(i), name)
            shift = np.abs(canvas - 90.0).max(axis=-1)
            assert 0.002 <= mask.mean() <= 0.03
            assert 8 <= shift[mask].mean() and shift.max() <= 65, (name, i, shift.max())
            assert (shift[~mask] > 0).any()  # soft edge: some change just outside the mask


def test_logical_anomalies_reuse_normal_parts() -> None:
    """Scene level: every (kind, shape, colour) of a logical anomaly occurs in normal scenes."""
    for name, spec in CATEGORIES.items():
        normal: set[tuple[str, str, str]] = set()
        for i in range(200):
            normal |= {(p.kind, p.shape, p.colour) for p in spec.scene(np.random.default_rng(i))}
        for i in range(60):
            parts = spec.scene(np.random.default_rng(10_000 + i))
            defect = spec.logical[i % len(spec.logical)]
            regions = defect.apply(parts, np.random.default_rng(i))
            assert regions and all(regions)
            assert {(p.kind, p.shape, p.colour) for p in parts} <= normal, (name, defect.name)


def _colour_bins(image: np.ndarray, min_pixels: int) -> set[int]:
    q = image.astype(np.int64) // 32  # 8 levels per channel -> 512 bins
    counts = np.bincount((q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]).ravel(), minlength=512)
    return set(np.flatnonzero(counts >= min_pixels).tolist())


def test_logical_anomalies_have_no_new_colours() -> None:
    """Pixel level: quantised colours of logical anomalies all occur in normal images.

    Every colour bin holding at least 8 pixels of a logical anomaly image is present in the
    union of the bins of 40 normal images; a part painted in an off-palette colour fails this.
    """
    config = replace(TINY, image_size=96)
    for category in config.categories:
        normal: set[int] = set()
        for i in range(40):
            normal |= _colour_bins(render_sample(category, "train", i, config).image, 1)
        for i in range(6):
            image = render_sample(category, "logical_anomalies", i, config).image
            assert _colour_bins(image, 8) <= normal, (category, i)
        # the criterion has teeth: a magenta part is caught
        spec = CATEGORIES[category]
        parts = spec.scene(np.random.default_rng(0))
        parts[-1] = replace(parts[-1], colour="magenta")
        odd = _render_parts(spec, parts, config.image_size)
        assert not _colour_bins(odd, 8) <= normal


def _render_parts(spec, parts, size: int) -> np.ndarray:
    canvas = np.full((size, size, 3), spec.background, dtype=np.float64)
    rng = np.random.default_rng(0)
    palette = dict(procedural.PALETTE, magenta=(220, 40, 220))
    old, procedural.PALETTE = procedural.PALETTE, palette
    try:
        for p in parts:
            procedural._draw(canvas, p, rng)
    finally:
        procedural.PALETTE = old
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def test_ensure_dataset_caches(tmp_path: Path, monkeypatch) -> None:
    config = replace(TINY, categories=("cable_pair",), n_train=1, n_validation=1, n_test_good=1,
                     n_test_logical=1, n_test_structural=1)
    first = ensure_dataset(tmp_path, config)
    assert first.parent == tmp_path and procedural.config_digest(config) in first.name
    probe = first / "cable_pair" / "train" / "good" / "000.png"
    mtime = probe.stat().st_mtime_ns
    monkeypatch.setattr(procedural, "generate", lambda *a, **k: pytest.fail("regenerated"))
    second = ensure_dataset(tmp_path, config)
    assert second == first and probe.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp folder left behind


def test_ensure_dataset_ignores_half_written_temp(tmp_path: Path) -> None:
    config = replace(TINY, categories=("part_slots",), n_train=1, n_validation=0, n_test_good=0,
                     n_test_logical=0, n_test_structural=0)
    digest = procedural.config_digest(config)
    stale = tmp_path / f".procedural-{digest}.tmp-crashed"
    (stale / "part_slots").mkdir(parents=True)
    root = ensure_dataset(tmp_path, config)
    assert (root / "part_slots" / "train" / "good" / "000.png").is_file()
    assert procedural.config_digest(replace(config, seed=1)) != digest


def test_unknown_category_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, replace(TINY, categories=("nope",)))


# ------------------------------------------------------------------ the test and dev realisations
def _pixel_digest(config: ProceduralConfig) -> str:
    """SHA-256 of the pixels and masks of images 0 and 1 of every part of every category."""
    digest = hashlib.sha256()
    for category in config.categories:
        for part in SPLITS:
            for i in range(2):
                sample = render_sample(category, part, i, config)
                digest.update(sample.image.tobytes())
                for name, mask in sample.masks:
                    digest.update(name.encode())
                    digest.update(mask.tobytes())
    return digest.hexdigest()


def test_reported_test_split_is_unchanged() -> None:
    """The realisation `make run` and BENCHMARKS.md report keeps its digest, cache folder and pixels
    (values computed with the generator before the dev split existed)."""
    assert ProceduralConfig().split == "test"
    assert config_digest(ProceduralConfig()) == "99f7affa69"
    assert folder_name(ProceduralConfig()) == "procedural-99f7affa69"
    assert config_digest(TINY) == "3442003220"
    assert _pixel_digest(ProceduralConfig(image_size=64)) == (
        "288d23580791a903514e261f3e844f449776a6688e7d8b1aa3ede9e29736904b")


def test_dev_split_has_its_own_cache_folder() -> None:
    dev = ProceduralConfig(split="dev")
    assert folder_name(dev) == f"procedural-dev-{config_digest(dev)}"
    assert config_digest(dev) != config_digest(ProceduralConfig())
    with pytest.raises(ValueError):
        ProceduralConfig(split="validation")


def _image_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every image file (not masks, not defects_config.json) by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*.png") if "ground_truth" not in p.parts}


def test_dev_and_test_realisations_are_disjoint(tiny_root: Path, tmp_path: Path) -> None:
    """No image of the dev realisation equals an image of the test one, for the same seed or another."""
    dev = _image_hashes(generate(tmp_path / "dev", replace(TINY, split="dev")))
    test = _image_hashes(tiny_root)
    assert dev.keys() == test.keys()  # same layout and counts
    assert not set(dev.values()) & set(test.values())
    other_seed = _image_hashes(generate(tmp_path / "seed1", replace(TINY, seed=1, categories=("pill_tray",))))
    assert not set(dev.values()) & set(other_seed.values())
    for category in TINY.categories:  # pixels differ too, not only the encoded files
        a = render_sample(category, "train", 0, TINY).image
        b = render_sample(category, "train", 0, replace(TINY, split="dev")).image
        assert not np.array_equal(a, b)


def test_synth_writes_the_dev_split_readers_accept(tmp_path: Path) -> None:
    size = 48
    assert main(["synth", "--split", "dev", "--out", str(tmp_path / "dev"), "--image-size", str(size)]) == 0
    assert main(["synth", "--out", str(tmp_path / "test"), "--image-size", str(size)]) == 0  # test by default
    config = ProceduralConfig(image_size=size)
    assert list_categories(tmp_path / "dev") == sorted(config.categories)
    for name in config.categories:
        dev, test = (read_category(tmp_path / split, name, "loco") for split in ("dev", "test"))
        assert len(dev.train_good) == len(test.train_good) == config.n_train
        assert len(dev.test) == len(test.test) == config.n_test_good + config.n_test_logical + config.n_test_structural
        assert dev.defects == test.defects
    name = "pill_tray/train/good/000.png"
    for split in ("test", "dev"):
        expected = render_sample("pill_tray", "train", 0, replace(config, split=split)).image
        assert np.array_equal(np.asarray(Image.open(tmp_path / split / name)), expected)
