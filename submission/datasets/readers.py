"""Readers for the three on-disk layouts (MVTec LOCO, MVTec AD, plain folders), each yielding a `Category`.

Readers only list files and check the layout; pixels are loaded later, once, by `ImageStore`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from runfolder.schema import LOCO_KINDS
from submission.datasets.images import list_images
from submission.datasets.records import Category, DefectSpec, TestItem
from submission.errors import HarnessError

FORMATS = ("loco", "mvtec", "folder")
FOLDER_SPLIT_SEED = 0  # seeds the half of folder-format good/ images that forms the support pool


def _images_in(folder: Path, *, required: bool) -> list[Path]:
    if not folder.is_dir():
        if required:
            raise HarnessError(f"{folder}: folder is missing")
        return []
    images = list_images(folder)
    if required and not images:
        raise HarnessError(f"{folder}: folder holds no images")
    return images


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def read_defects_config(path: Path) -> tuple[DefectSpec, ...]:
    """LOCO's defects_config.json as `DefectSpec`s; empty when the file is absent."""
    if not path.is_file():
        return ()
    try:
        entries = json.loads(path.read_text())
        return tuple(
            DefectSpec(e["defect_name"], int(e["pixel_value"]), float(e["saturation_threshold"]),
                       bool(e["relative_saturation"]))
            for e in entries
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise HarnessError(f"{path}: not a valid defects_config.json ({error!r})") from None


def read_loco(root: Path) -> Category:
    """A category in MVTec LOCO layout; missing validation or anomaly splits are allowed."""
    train = _images_in(root / "train" / "good", required=True)
    validation = _images_in(root / "validation" / "good", required=False)
    items: list[TestItem] = []
    for image in _images_in(root / "test" / "good", required=False):
        items.append(TestItem(f"good/{image.stem}", image, "good", 0))
    for folder, kind in LOCO_KINDS.items():
        for image in _images_in(root / "test" / folder, required=False):
            mask_dir = root / "ground_truth" / folder / image.stem
            masks = tuple(list_images(mask_dir)) if mask_dir.is_dir() else ()
            items.append(TestItem(f"{folder}/{image.stem}", image, folder, 1, kind, masks))
    if not items:
        raise HarnessError(f"{root / 'test'}: no test images (expected good/, logical_anomalies/ or structural_anomalies/)")
    return Category(root.name, root, "loco", tuple(train), tuple(validation), tuple(items),
                    read_defects_config(root / "defects_config.json"))


def read_mvtec(root: Path) -> Category:
    """A category in MVTec AD layout (masks `ground_truth/<defect>/<stem>_mask.png`)."""
    train = _images_in(root / "train" / "good", required=True)
    items: list[TestItem] = []
    for folder in _subfolders(root / "test"):
        for image in _images_in(folder, required=False):
            if folder.name == "good":
                items.append(TestItem(f"good/{image.stem}", image, "good", 0))
                continue
            mask = root / "ground_truth" / folder.name / f"{image.stem}_mask.png"
            items.append(TestItem(f"{folder.name}/{image.stem}", image, folder.name, 1, None,
                                  (mask,) if mask.is_file() else ()))
    if not items:
        raise HarnessError(f"{root / 'test'}: no test images")
    return Category(root.name, root, "mvtec", tuple(train), (), tuple(items))


def read_folder(root: Path) -> Category:
    """`<root>/good/*` and `<root>/<defect>/*`; a seeded half of good/ is the support pool."""
    good = _images_in(root / "good", required=True)
    if len(good) < 2:
        raise HarnessError(f"{root / 'good'}: needs at least 2 images (half are support, half test)")
    generator = torch.Generator().manual_seed(FOLDER_SPLIT_SEED)
    order = torch.randperm(len(good), generator=generator).tolist()
    pool = sorted(good[i] for i in order[: len(good) // 2])
    items = [TestItem(f"good/{p.stem}", p, "good", 0) for p in sorted(set(good) - set(pool))]
    for folder in _subfolders(root):
        if folder.name in ("good", "masks"):
            continue
        for image in _images_in(folder, required=False):
            mask = root / "masks" / folder.name / f"{image.stem}.png"
            items.append(TestItem(f"{folder.name}/{image.stem}", image, folder.name, 1, None,
                                  (mask,) if mask.is_file() else ()))
    return Category(root.name, root, "folder", tuple(pool), (), tuple(items))


READERS = {"loco": read_loco, "mvtec": read_mvtec, "folder": read_folder}


def list_categories(data_root: Path) -> list[str]:
    """Category folder names under a dataset root."""
    if not data_root.is_dir():
        raise HarnessError(f"{data_root}: dataset folder is missing")
    names = [p.name for p in _subfolders(data_root) if not p.name.startswith(".")]
    if not names:
        raise HarnessError(f"{data_root}: no category folders")
    return names


def read_category(data_root: Path, name: str, fmt: str) -> Category:
    """Read one category of a dataset root in the given format."""
    if fmt not in READERS:
        raise HarnessError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    root = data_root / name
    if not root.is_dir():
        available = ", ".join(list_categories(data_root))
        raise HarnessError(f"unknown category {name!r}: {root} is missing (available: {available})")
    return READERS[fmt](root)


def other_categories(root: Path, target: Category) -> list[str]:
    """The categories under `root` other than `target` (by folder and by name): what a method trained off the
    target may use."""
    return [name for name in list_categories(root)
            if (Path(root) / name).resolve() != target.root.resolve() and name != target.name]


def content_digest(category: Category) -> str:
    """A digest of the category folder's files (relative paths and sizes): changes when an image, a mask or a
    config file is added, removed or replaced by one of another size; cheap enough to take at every run."""
    digest = hashlib.sha256()
    root = Path(category.root)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]
