"""Shared image and mask loading: every reader and the runner load pixels through here."""
from __future__ import annotations

from pathlib import Path

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


class ImageStore:
    """Loads each image once per run at the run's size and keeps it (and its original size)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._images: dict[Path, tuple[torch.Tensor, tuple[int, int]]] = {}

    def get(self, path: Path) -> tuple[torch.Tensor, tuple[int, int]]:
        """[3,size,size] tensor and original (H, W) of one image."""
        if path not in self._images:
            self._images[path] = load_image(path, self.size)
        return self._images[path]

    def stack(self, paths: list[Path] | tuple[Path, ...]) -> torch.Tensor:
        """[n,3,size,size] batch of images."""
        return torch.stack([self.get(p)[0] for p in paths])
