"""ELPV as a real dev set, in MVTec AD layout: electroluminescence images of solar cells from PyPI `elpv-dataset`
(Buerhop-Lutz et al., 2018; Deitsch et al., 2019; CC BY-NC-SA 4.0), 300 x 300 greyscale, each cell with a defect
probability in {0, 1/3, 2/3, 1} and a type (mono- or polycrystalline).

The category is one cell type; its normal images are the cells of probability 0 and its anomalies those of
probability 1 (the uncertain 1/3 and 2/3 are left out). A seeded permutation (numpy `default_rng(seed)`) picks
`n_train` normals for train/good, the next `n_test_good` for test/good, and `n_test_defective` anomalies for
test/defective; file names keep the image's index in the package. There are no masks: pixel metrics stay empty.
Settings may be chosen on it (it is never a reported split).
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from submission.errors import HarnessError

CELL_TYPES = ("mono", "poly")


@dataclass(frozen=True)
class ElpvConfig:
    cell_type: str = "mono"
    n_train: int = 60
    n_test_good: int = 150
    n_test_defective: int = 150
    seed: int = 0


def write_elpv(out: Path, config: ElpvConfig = ElpvConfig()) -> Path:
    """Write the ELPV category `elpv_<cell type>` under `out` (MVTec AD layout); returns the category folder."""
    if config.cell_type not in CELL_TYPES:
        raise HarnessError(f"ELPV cell type {config.cell_type!r}: choose one of {', '.join(CELL_TYPES)}")
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError:
        raise HarnessError("synth --dataset elpv: the elpv-dataset package is not installed "
                           "(pip install 'fewshot-ad-harness[elpv]', or pip install -e '.[elpv]')") from None
    images, probabilities, types = load_dataset()
    rng = np.random.default_rng(config.seed)
    normal = rng.permutation(np.flatnonzero((types == config.cell_type) & (probabilities == 0)))
    defective = rng.permutation(np.flatnonzero((types == config.cell_type) & (probabilities == 1)))
    if config.n_train + config.n_test_good > len(normal) or config.n_test_defective > len(defective):
        raise HarnessError(f"ELPV {config.cell_type}: {len(normal)} normal and {len(defective)} defective cells; "
                           f"asked for {config.n_train} + {config.n_test_good} normal, {config.n_test_defective} "
                           "defective")
    splits = {"train/good": normal[:config.n_train],
              "test/good": normal[config.n_train:config.n_train + config.n_test_good],
              "test/defective": defective[:config.n_test_defective]}
    target = Path(out) / f"elpv_{config.cell_type}"
    if target.exists():
        raise HarnessError(f"--out {out}: {target} exists already")
    Path(out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as scratch:  # written whole, then moved into place
        staged = Path(scratch) / target.name
        for split, indices in splits.items():
            (staged / split).mkdir(parents=True)
            for index in indices:
                Image.fromarray(images[index]).save(staged / split / f"{index:04d}.png")
        (staged / "README.txt").write_text(
            "ELPV (PyPI elpv-dataset; Buerhop-Lutz et al. 2018, Deitsch et al. 2019), CC BY-NC-SA 4.0.\n"
            f"Written by python -m submission synth --dataset elpv with {asdict(config)}.\n")
        shutil.move(str(staged), target)
    return target
