import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from submission.cell_metrics import load_ground_truth
from submission.datasets.images import ImageStore, load_image
from submission.datasets.readers import read_category
from submission.errors import HarnessError


def _png(path: Path, size=(20, 10), value=128, mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.full(channels, value, dtype=np.uint8), mode=mode).save(path)
    return path


def test_loco_reader_lists_splits_kinds_and_masks(tiny_loco):
    category = read_category(tiny_loco, "pill_tray", "loco")
    assert len(category.train_good) == 6 and len(category.validation_good) == 2
    assert [p.name for p in category.train_good] == sorted(p.name for p in category.train_good)
    kinds = [item.kind for item in category.test]
    assert kinds.count(None) == 4 and kinds.count("logical") == 3 and kinds.count("structural") == 3
    assert all(item.mask_paths for item in category.test if item.label == 1)
    assert category.defects and all(d.pixel_value > 0 for d in category.defects)


def test_loco_reader_copes_with_missing_splits(tmp_path):
    root = tmp_path / "data" / "bottle"
    _png(root / "train" / "good" / "000.png")
    _png(root / "test" / "logical_anomalies" / "000.png")
    _png(root / "ground_truth" / "logical_anomalies" / "000" / "000.png", value=255, mode="L")
    category = read_category(tmp_path / "data", "bottle", "loco")
    assert category.validation_good == () and len(category.test) == 1


def test_images_are_resized_floats_in_unit_range(tiny_loco):
    path = read_category(tiny_loco, "pill_tray", "loco").train_good[0]
    image, original = load_image(path, 32)
    assert image.shape == (3, 32, 32) and original == (64, 64)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0


def test_missing_train_folder_names_the_path(tmp_path):
    (tmp_path / "data" / "bottle" / "test" / "good").mkdir(parents=True)
    with pytest.raises(HarnessError, match=r"train/good: folder is missing"):
        read_category(tmp_path / "data", "bottle", "loco")


def test_empty_train_folder_is_an_error(tmp_path):
    (tmp_path / "data" / "bottle" / "train" / "good").mkdir(parents=True)
    with pytest.raises(HarnessError, match="holds no images"):
        read_category(tmp_path / "data", "bottle", "loco")


def test_unknown_category_lists_the_available_ones(tiny_loco):
    with pytest.raises(HarnessError, match="unknown category 'bottle'.*pill_tray"):
        read_category(tiny_loco, "bottle", "loco")


def test_truncated_image_names_the_file(tmp_path):
    path = _png(tmp_path / "000.png", size=(64, 64))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(HarnessError, match=r"000.png: unreadable or truncated"):
        ImageStore(32).get(path)


def test_mask_of_the_wrong_size_names_the_mask(tmp_path, tiny_loco):
    data = tmp_path / "copy"
    shutil.copytree(tiny_loco / "pill_tray", data / "pill_tray")
    mask = sorted((data / "pill_tray" / "ground_truth" / "logical_anomalies").glob("*/000.png"))[0]
    _png(mask, size=(10, 10), value=255, mode="L")
    category = read_category(data, "pill_tray", "loco")
    sizes = [ImageStore(32).get(item.path)[1] for item in category.test]
    with pytest.raises(HarnessError, match="mask is 10x10 but its image is 64x64"):
        load_ground_truth(category, sizes)


def test_mvtec_reader(tmp_path):
    root = tmp_path / "bottle"
    for i in range(3):
        _png(root / "train" / "good" / f"{i:03d}.png")
    _png(root / "test" / "good" / "000.png")
    _png(root / "test" / "crack" / "000.png")
    _png(root / "ground_truth" / "crack" / "000_mask.png", value=255, mode="L")
    category = read_category(tmp_path, "bottle", "mvtec")
    crack = [item for item in category.test if item.defect == "crack"][0]
    assert crack.label == 1 and crack.kind is None and crack.mask_paths[0].name == "000_mask.png"


def test_folder_reader_splits_good_images_reproducibly(tmp_path):
    root = tmp_path / "widget"
    for i in range(6):
        _png(root / "good" / f"{i}.png")
    _png(root / "dent" / "a.png")
    _png(root / "masks" / "dent" / "a.png", value=255, mode="L")
    first = read_category(tmp_path, "widget", "folder")
    second = read_category(tmp_path, "widget", "folder")
    assert first.train_good == second.train_good and len(first.train_good) == 3
    test_good = {item.path for item in first.test if item.label == 0}
    assert test_good.isdisjoint(first.train_good) and len(test_good) == 3
    assert [item.mask_paths[0].name for item in first.test if item.label == 1] == ["a.png"]
