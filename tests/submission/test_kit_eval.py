"""`python -m submission evaluate`: a bundle evaluated as the VAND kit does (fresh Model per category, setup per
(seed, k), batches, 256 px) writes the kit's metrics.csv / results.json, and its F1-max per cell is the run's own.

The run is made at 256 px, the size the kit feeds, so the bundle sees the pixels the run saw (the 64 px fixture
images upsampled by the same bilinear resize) and its scores can be compared with the run's stored ones."""
import csv
import json

import pytest
from rich.console import Console

from metrics import aufc, f1_max
from submission.cli import main
from submission.config import RunConfig
from submission.kit_eval import evaluate
from submission.packaging import package
from submission.runner import run


@pytest.fixture(scope="module")
def bundle_run(tiny_loco, tmp_path_factory):
    out = tmp_path_factory.mktemp("kit") / "tiny256"
    run(RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(1, 2), seeds=(42,), methods=("patchcore",),
                  preset="offline", image_size=256, out=out), Console(quiet=True))
    return out, package(out, "patchcore", out.parent / "dist")


@pytest.fixture(scope="module")
def evaluated(bundle_run, tiny_loco, tmp_path_factory):
    out = tmp_path_factory.mktemp("kit_out")
    result = evaluate(bundle_run[1], tiny_loco, categories=["pill_tray"], shots=[1, 2], seeds=[42], out=out,
                      device="cpu", console=Console(quiet=True))
    return result, out


def test_writes_the_kits_metrics_csv_and_results_json(evaluated):
    result, out = evaluated
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["", "seed", "k_shot", "category", "image_score"]  # pandas to_csv, index first, as the kit
    assert [row[:4] for row in rows[1:]] == [["0", "42", "1", "pill_tray"], ["1", "42", "2", "pill_tray"]]
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"aufc", "normalized_aufc", "avg_image_score"}
    f1 = [float(row[4]) for row in rows[1:]]
    assert results["aufc"] == pytest.approx(aufc([1, 2], f1)[0])
    assert results["normalized_aufc"] == pytest.approx(results["aufc"])  # k_max - k_min = 1
    assert results["avg_image_score"] == pytest.approx(sum(f1) / 2)
    assert result.results() == results


def test_each_cells_f1_max_is_the_runs_own(evaluated, bundle_run, tiny_loco):
    result, _ = evaluated
    run_dir = bundle_run[0]
    paths = [str(p.relative_to(tiny_loco)) for p in result.test_paths["pill_tray"]]
    for cell in result.cells:
        with open(run_dir / "scores" / "patchcore" / f"k{cell.k}_s42" / "pill_tray.csv", newline="") as handle:
            stored = {row["path"]: row for row in csv.DictReader(handle)}
        assert sorted(stored) == sorted(paths)
        labels = [int(stored[p]["label"]) for p in paths]
        run_scores = [float(stored[p]["score"]) for p in paths]
        assert cell.scores == pytest.approx(run_scores, rel=1e-3, abs=1e-4)
        assert cell.image_score == pytest.approx(f1_max(labels, run_scores), abs=1e-9)


@pytest.mark.parametrize("case, message", [
    ("no_data", "dataset folder is missing"),
    ("unknown_category", "unknown category 'nope'"),
    ("bad_archive", "not a readable bundle archive"),
    ("too_many_shots", "train/good holds only 6 images"),
])
def test_bad_input_is_one_line_exit_2(bundle_run, tiny_loco, tmp_path, capsys, case, message):
    archive = bundle_run[1]
    arguments = {"no_data": [str(archive), "--data", str(tmp_path / "missing")],
                 "unknown_category": [str(archive), "--data", str(tiny_loco), "--categories", "nope"],
                 "bad_archive": [str(tmp_path / "broken.tar.gz"), "--data", str(tiny_loco), "--shots", "1"],
                 "too_many_shots": [str(archive), "--data", str(tiny_loco), "--shots", "8"]}[case]
    (tmp_path / "broken.tar.gz").write_bytes(archive.read_bytes()[:1000])
    code = main(["evaluate", *arguments, "--out", str(tmp_path / "out")])
    output = capsys.readouterr().out
    assert code == 2 and message in output and len(output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


FAKE_MODEL = '''
import json, os
import torch
from torch import nn


def log(**entry):
    with open(os.environ["KIT_LOG"], "a") as handle:
        handle.write(json.dumps(entry) + "\\n")


class Batch:
    def __init__(self, pred_score):
        self.pred_score = pred_score


class Model(nn.Module):
    """Logs how the evaluator drives it; a batch above 4 images is a (fake) CUDA out-of-memory."""

    def __init__(self):
        super().__init__()
        log(call="init")

    def eval(self):
        log(call="eval")
        return super().eval()

    def weights_url(self, category):
        log(call="weights_url", category=category)
        return None

    def to(self, device):
        log(call="to", device=str(device))
        return super().to(device)

    def setup(self, data):
        samples = data["few_shot_samples"]
        log(call="setup", category=data["dataset_category"], seed=torch.initial_seed(), shape=list(samples.shape),
            total=float(samples.sum()))

    def forward(self, images):
        if len(images) > 4:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB (fake)")
        log(call="forward", shape=list(images.shape))
        return Batch(images.mean(dim=(1, 2, 3)))
'''


def _fake_bundle(tmp_path):
    import hashlib
    import tarfile

    bundle = tmp_path / "fake" / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "model.py").write_text(FAKE_MODEL)
    (bundle / "SHA256SUMS").write_text(f"{hashlib.sha256((bundle / 'model.py').read_bytes()).hexdigest()}  model.py\n")
    archive = tmp_path / "fake.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle, arcname="bundle")
    return archive


def test_the_kits_call_sequence_support_sets_and_batch_halving(tiny_loco, tmp_path, monkeypatch):
    """Model() per category, eval, weights_url, to(device); per seed then k: the seeded randperm support set at
    256 px, setup, batches; a CUDA out-of-memory halves the batch and redoes the cell, and the size is kept per k."""
    from submission.datasets.images import load_image
    from submission.datasets.readers import read_category
    from submission.sampling import support_indices

    monkeypatch.setenv("KIT_LOG", str(tmp_path / "calls.jsonl"))
    result = evaluate(_fake_bundle(tmp_path), tiny_loco, categories=["pill_tray", "cable_pair"], shots=[1, 2],
                      seeds=[42, 0], out=tmp_path / "out", batch_size=8, device="cpu", console=Console(quiet=True))
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [(c.category, c.seed, c.k) for c in result.cells] == [
        (name, seed, k) for name in ("pill_tray", "cable_pair") for seed in (42, 0) for k in (1, 2)]
    starts = [i for i, c in enumerate(calls) if c["call"] == "init"]
    assert len(starts) == 2
    # first category: batch 8 fails once per k before size 4 is kept for that k, so seed 42 runs each setup twice;
    # afterwards the kept size works at once
    expected = {"pill_tray": [(42, 1), (42, 1), (42, 2), (42, 2), (0, 1), (0, 2)],
                "cable_pair": [(42, 1), (42, 2), (0, 1), (0, 2)]}
    for name, segment in zip(expected, (calls[starts[0]:starts[1]], calls[starts[1]:])):
        assert [c["call"] for c in segment[:4]] == ["init", "eval", "weights_url", "to"]
        assert segment[2]["category"] == name and segment[3]["device"] == "cpu"
        setups = [c for c in segment if c["call"] == "setup"]
        assert [(c["seed"], c["shape"][0]) for c in setups] == expected[name]
        category = read_category(tiny_loco, name, "loco")
        for setup in setups:  # the kit's support set: torch.manual_seed(seed); randperm(n)[:k], 256 px
            assert setup["category"] == name and setup["shape"][1:] == [3, 256, 256]
            indices = support_indices(len(category.train_good), setup["shape"][0], setup["seed"])
            pixels = sum(float(load_image(category.train_good[i], 256)[0].sum()) for i in indices)
            assert setup["total"] == pytest.approx(pixels, rel=1e-5)
    forwards = [c["shape"][0] for c in calls if c["call"] == "forward"]
    assert max(forwards) == 4 and sum(forwards) == 8 * 10  # 8 cells x 10 test images, each image scored once
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == result.results()
