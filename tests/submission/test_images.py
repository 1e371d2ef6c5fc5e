"""Parallel image decoding gives the serial result, in order; the runner's category prefetch loads the same data."""
import numpy as np
import pytest
import torch
from PIL import Image

from submission.datasets.images import ImageStore, load_image, load_images
from submission.datasets.readers import read_category
from submission.errors import HarnessError
from submission.cell_worker import CategoryData, CategoryLoader


@pytest.fixture()
def pictures(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (height, width) in enumerate([(80, 160), (50, 50), (96, 64), (33, 70), (64, 64)]):
        paths.append(tmp_path / f"{i}.{'jpg' if i == 3 else 'png'}")
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def test_parallel_decoding_gives_the_serial_tensors_in_order(pictures):
    serial = [load_image(path, 48) for path in pictures]
    parallel = load_images(pictures, 48, workers=3)
    assert [size for _, size in parallel] == [size for _, size in serial] == [(80, 160), (50, 50), (96, 64), (33, 70), (64, 64)]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(serial, parallel))
    store = ImageStore(48, workers=2)
    assert torch.equal(store.stack(pictures[::-1]), torch.stack([image for image, _ in serial[::-1]]))


def test_an_unreadable_file_raises_from_the_pool(pictures):
    pictures[2].write_bytes(b"not a png")
    with pytest.raises(HarnessError, match="unreadable"):
        load_images(pictures, 32, workers=2)


def test_prefetched_categories_hold_the_same_data(tiny_loco):
    categories = [read_category(tiny_loco, name, "loco") for name in ("pill_tray", "part_slots")]
    with CategoryLoader(categories, ImageStore(64, workers=2), prefetch=True) as loader:
        loaded = [loader.take(category) for category in categories]
    for category, data in zip(categories, loaded):
        plain = CategoryData(category, ImageStore(64, workers=1))
        assert data.category is category and torch.equal(data.test_images, plain.test_images)
        assert data.truth.sizes == plain.truth.sizes
