"""Shared fixtures: a tiny procedural LOCO-like dataset, generated once per test session."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never contact a hub

from pathlib import Path

import pytest

from submission.datasets.procedural import ProceduralConfig, generate

TINY = ProceduralConfig(image_size=64, n_train=6, n_validation=2, n_test_good=4, n_test_logical=3, n_test_structural=3)


@pytest.fixture(scope="session")
def tiny_loco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 px procedural dataset in LOCO layout (3 categories, 6 train images, 10 test images each)."""
    return generate(tmp_path_factory.mktemp("procedural"), TINY)
