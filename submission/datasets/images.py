"""Shared image and mask loading: every reader and the runner load pixels through here."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from submission.errors import HarnessError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by file name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _open(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()  # forces a full decode: truncated files fail here
            return image.convert(mode)
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise HarnessError(f"{path}: unreadable or truncated image ({error})") from None


def load_image(path: Path, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """RGB image as float [3,size,size] in [0,1], and its original (H, W) on disk."""
    image = _open(path, "RGB")
    original = (image.height, image.width)
    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    tensor = array.float().div_(255.0).unsqueeze(0)
    if original != (size, size):
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return tensor[0].clamp_(0.0, 1.0), original


def load_mask(path: Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Grey mask as uint8 [H,W] at its resolution on disk; checks its size against its image."""
    mask = np.asarray(_open(path, "L"), dtype=np.uint8)
    if expected_hw is not None and mask.shape != tuple(expected_hw):
        raise HarnessError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
            f"{expected_hw[1]}x{expected_hw[0]} (W x H)"
        )
    return mask


def default_workers() -> int:
    """Threads decoding images by default: min(8, CPU count)."""
    return min(8, os.cpu_count() or 1)


def load_images(paths: Sequence[Path], size: int,
                workers: int | None = None) -> list[tuple[torch.Tensor, tuple[int, int]]]:
    """`load_image` of each path, in the order given, decoded and resized by `workers` threads (PIL and torch
    release the GIL); the same tensors as loading them one by one. The first unreadable file raises."""
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(paths) <= 1:
        return [load_image(path, size) for path in paths]
    with ThreadPoolExecutor(max_workers=min(workers, len(paths)), thread_name_prefix="decode") as pool:
        return list(pool.map(lambda path: load_image(path, size), paths))


class ImageStore:
    """Loads each image once per run at the run's size and keeps it (and its original size); batches of new
    images are decoded by `workers` threads (default `default_workers()`; 1 = serial)."""

    def __init__(self, size: int, workers: int | None = None) -> None:
        self.size = size
        self.workers = default_workers() if workers is None else max(1, workers)
        self._images: dict[Path, tuple[torch.Tensor, tuple[int, int]]] = {}

    def get(self, path: Path) -> tuple[torch.Tensor, tuple[int, int]]:
        """[3,size,size] tensor and original (H, W) of one image."""
        if path not in self._images:
            self._images[path] = load_image(path, self.size)
        return self._images[path]

    def get_many(self, paths: Sequence[Path]) -> list[tuple[torch.Tensor, tuple[int, int]]]:
        """`get` of each path, in order; the images not yet loaded are decoded in parallel."""
        missing = list(dict.fromkeys(p for p in paths if p not in self._images))
        for path, loaded in zip(missing, load_images(missing, self.size, self.workers)):
            self._images[path] = loaded
        return [self._images[p] for p in paths]

    def stack(self, paths: list[Path] | tuple[Path, ...]) -> torch.Tensor:
        """[n,3,size,size] batch of images."""
        return torch.stack([image for image, _ in self.get_many(paths)])
