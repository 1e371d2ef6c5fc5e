"""The runner reads the procedural dev split only when asked, records the split it read, and never mixes the two."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from runfolder.schema import RunPaths
from submission import cell_worker, runner
from submission.cli import build_parser
from submission.config import RunConfig
from submission.datasets.images import ImageStore
from submission.datasets import procedural
from submission.datasets.procedural import ProceduralConfig, ensure_dataset, folder_name
from submission.datasets.readers import read_category
from submission.errors import HarnessError

SMALL = ProceduralConfig(image_size=64, n_train=2, n_validation=0, n_test_good=2, n_test_logical=2,
                         n_test_structural=2)


@pytest.fixture()
def embedded(tmp_path: Path, monkeypatch) -> list[str]:
    """The runner's embedded dataset made SMALL (the split is the runner's); returns the splits it asked for."""
    asked: list[str] = []

    def small(cache_dir: Path, config: ProceduralConfig = ProceduralConfig()) -> Path:
        asked.append(config.split)
        return ensure_dataset(tmp_path / "cache", replace(SMALL, split=config.split))

    monkeypatch.setattr(procedural, "ensure_dataset", small)
    return asked


def _config(out: Path, **options) -> RunConfig:
    return RunConfig(categories=("pill_tray",), shots=(1,), seeds=(0,), methods=("patchcore",), preset="offline",
                     image_size=64, out=out, **options)


def test_the_default_run_reads_the_test_split(embedded, tmp_path: Path) -> None:
    run_dir = runner.run(_config(tmp_path / "run"), Console(quiet=True))
    recorded = json.loads(RunPaths(run_dir).config.read_text())
    assert embedded == ["test"]
    assert recorded["procedural_split"] == "test" and recorded["arguments"]["procedural_split"] == "test"
    assert Path(recorded["data"]).name == folder_name(SMALL)


def test_the_dev_split_only_when_asked_and_never_mixed(embedded, tmp_path: Path) -> None:
    run_dir = runner.run(_config(tmp_path / "dev", procedural_split="dev"), Console(quiet=True))
    recorded = json.loads(RunPaths(run_dir).config.read_text())
    assert embedded == ["dev"]
    assert recorded["procedural_split"] == "dev"
    assert Path(recorded["data"]).name == folder_name(replace(SMALL, split="dev"))
    assert folder_name(replace(SMALL, split="dev")).startswith("procedural-dev-")
    with pytest.raises(HarnessError, match=r"--procedural-split: dev recorded, test now"):
        runner.run(_config(tmp_path / "dev"), Console(quiet=True))


def test_auxiliary_procedural_categories_follow_the_run_split(embedded) -> None:
    """RegAD source=procedural meta-trains on the other categories of the run's realisation."""
    store = ImageStore(64)
    target_root = procedural.ensure_dataset(Path("unused"), ProceduralConfig(split="dev"))
    target = read_category(target_root, "pill_tray", "loco")
    others = cell_worker.auxiliary_categories("procedural", target, "loco", store, "dev")
    assert embedded[-1] == "dev" and {a.name for a in others} == {"cable_pair", "part_slots"}
    cell_worker.auxiliary_categories("procedural", target, "loco", store)
    assert embedded[-1] == "test"  # the default, as `verify` and the benches use it


def test_procedural_split_option() -> None:
    parser = build_parser()
    assert parser.parse_args(["run"]).procedural_split == "test"
    assert parser.parse_args(["run", "--procedural-split", "dev"]).procedural_split == "dev"
    assert parser.parse_args(["synth", "--out", "x"]).split == "test"
    with pytest.raises(HarnessError):
        parser.parse_args(["run", "--procedural-split", "validation"])
    with pytest.raises(HarnessError, match="--procedural-split"):
        RunConfig(procedural_split="validation")
