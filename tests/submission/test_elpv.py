"""ELPV written as a real dev set in MVTec AD layout: the counts asked for, one cell type, probability 0 vs 1
only, the same files for the same seed, readable by the mvtec reader, and a clear line when the package is
missing."""
import importlib.util

import numpy as np
import pytest
from PIL import Image

from submission.cli import main
from submission.datasets.elpv import ElpvConfig, write_elpv
from submission.datasets.readers import read_category

pytestmark = pytest.mark.skipif(importlib.util.find_spec("elpv_dataset") is None, reason="elpv-dataset not installed")


@pytest.fixture(scope="module", autouse=True)
def elpv_loaded_once():
    """The package's 2,624 images read once for this module (each write would read them again: seconds each)."""
    if importlib.util.find_spec("elpv_dataset") is None:
        yield
        return
    import elpv_dataset.utils

    loaded = elpv_dataset.utils.load_dataset()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(elpv_dataset.utils, "load_dataset", lambda: loaded)
        yield


def test_elpv_is_written_in_mvtec_layout_by_a_seeded_rule(tmp_path):
    from elpv_dataset.utils import load_dataset

    small = ElpvConfig(n_train=4, n_test_good=3, n_test_defective=2, seed=5)
    folder = write_elpv(tmp_path / "a", small)
    category = read_category(tmp_path / "a", "elpv_mono", "mvtec")
    assert len(category.train_good) == 4
    assert sorted(item.defect for item in category.test) == ["defective"] * 2 + ["good"] * 3
    _, probabilities, types = load_dataset()
    for path in folder.rglob("*.png"):
        index = int(path.stem)
        assert types[index] == "mono" and probabilities[index] == (1 if path.parent.name == "defective" else 0)
    assert np.asarray(Image.open(next(folder.rglob("*.png")))).shape == (300, 300)
    again = write_elpv(tmp_path / "b", small)
    assert sorted(p.relative_to(again) for p in again.rglob("*.png")) == \
        sorted(p.relative_to(folder) for p in folder.rglob("*.png"))
    other = write_elpv(tmp_path / "c", ElpvConfig(n_train=4, n_test_good=3, n_test_defective=2, seed=6))
    assert sorted(p.name for p in other.rglob("*.png")) != sorted(p.name for p in folder.rglob("*.png"))


def test_elpv_asks_that_exceed_the_cells_are_one_line(tmp_path, capsys):
    with pytest.raises(Exception, match="asked for 5000"):
        write_elpv(tmp_path, ElpvConfig(n_train=5000))
    assert main(["synth", "--dataset", "elpv", "--out", str(tmp_path / "x"), "--elpv-type", "poly"]) == 0
    assert main(["synth", "--dataset", "elpv", "--out", str(tmp_path / "x"), "--elpv-type", "poly"]) == 2
    assert "exists already" in capsys.readouterr().out
