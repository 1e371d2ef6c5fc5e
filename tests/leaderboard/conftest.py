"""Fixtures shared by the leaderboard tests."""
import pytest

from submission.config import RunConfig
from submission.runner import run


@pytest.fixture(scope="session")
def tiny_run(tiny_loco, tmp_path_factory):
    """A real run folder made once: patchcore on two categories, k = 1, 2, seeds 42, 0, with saved maps."""
    out = tmp_path_factory.mktemp("report") / "run"
    return run(RunConfig(data=tiny_loco, categories=("pill_tray", "part_slots"), shots=(1, 2), seeds=(42, 0),
                         methods=("patchcore",), preset="offline", image_size=64, out=out, save_maps=True))
