"""Bad input, as a careless user gives it: one error line, exit 2, no traceback, and nothing run or written."""
import re

import pytest
import torch

from methods.backbones import resolve_weights
from methods.weight_files import WeightsInvalid
from submission.cli import main
from submission.config import RunConfig
from submission.errors import HarnessError
from submission.runner import run


@pytest.fixture
def bad_weights(tmp_path):
    """A file of random bytes and a readable state dict with the wrong tensors."""
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, wrong)
    return {"garbage": garbage, "wrong": wrong}


@pytest.mark.parametrize("arguments, message", [
    (["--methods", "gcad:local_encoder=gird"], "local_encoder='gird' is not valid; expected one of grid, distilled"),
    (["--methods", "patchcore:num_neighbors=abc"], "num_neighbors='abc' is not valid; expected an integer >= 1"),
    (["--methods", "regad:gaussian_stride=5"], "gaussian_stride='5' is not valid; expected one of 4, 8, 16"),
    (["--methods", "simplenet:hflip_p=1.5"], "hflip_p='1.5' is not valid; expected a number in [0, 1]"),
    (["--methods", "gcad:grid_stride=3"], "'gcad:grid_stride=3' (offline preset): cannot be built"),
    (["--methods", "nosuch"], "unknown method 'nosuch'; registered:"),
    (["--methods", "fusion:members=nosuch"], "member 'nosuch' is not among the members in this run"),
    (["--methods", "patchcore", "fusion:members=patchcore,weights=1+2"], "weights has 2 values for 1 members"),
    (["--methods", "patchcore", "patchcore"], "--methods: patchcore given more than once"),
    (["--methods", "patchcore", "patchcore:num_neighbors=1"], "are the same variant"),
    (["--methods", "patchcore:num_neighbors=2,num_neighbors=3"], "key 'num_neighbors' is given twice"),
    (["--shots", "0"], "--shots 0: must be an integer >= 1"),
    (["--shots", "abc"], "argument --shots: invalid int value: 'abc'"),
    (["--seeds", "1", "1"], "--seeds: 1 given more than once"),
    (["--batch-size", "-1"], "--batch-size -1: must be an integer >= 1"),
    (["--image-size", "16"], "--image-size 16: must be an integer >= 32"),
    (["--shard", "3/2"], "expected i/n with 0 <= i < n"),
    (["--format", "png"], "argument --format: invalid choice: 'png'"),
    (["--categories", "nosuch"], "unknown category 'nosuch'"),
    (["--weights", "resnet99=x.pth"], "unknown backbone 'resnet99'"),
    (["--weights", "lite0=/no/such/file.pth"], "--weights lite0=/no/such/file.pth: no such file"),
    (["--weights", "lite0"], "'lite0': expected NAME=PATH"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tiny_loco, tmp_path, capsys, arguments, message):
    out = tmp_path / "run"
    code = main(["run", "--data", str(tiny_loco), "--preset", "offline", "--image-size", "64", "--shots", "1",
                 "--seeds", "0", "--methods", "patchcore", "--out", str(out), *arguments])
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize("kind, message", [
    ("garbage", "not a readable weights file for 'lite0'"),
    ("wrong", "does not fit tf_efficientnet_lite0 ('lite0')"),
])
def test_corrupt_weights_stop_the_run_before_any_cell(tiny_loco, tmp_path, capsys, bad_weights, kind, message):
    out = tmp_path / "run"
    code = main(["run", "--data", str(tiny_loco), "--preset", "offline", "--image-size", "64", "--shots", "1",
                 "--seeds", "0", "--methods", "patchcore", "--out", str(out), "--weights", f"lite0={bad_weights[kind]}"])
    output = capsys.readouterr().out.strip()
    assert code == 2 and output.count("\n") == 0 and str(bad_weights[kind]) in output and message in output
    assert not out.exists()
    with pytest.raises(HarnessError, match=re.escape(message)):
        run(RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(1,), seeds=(0,), methods=("patchcore",),
                      preset="offline", image_size=64, out=out, weights={"lite0": bad_weights[kind]}))
    assert not out.exists()


def test_an_explicit_weights_path_never_falls_back(tmp_path):
    with pytest.raises(WeightsInvalid, match="--weights lite0=.*nope.pth: no such file"):
        resolve_weights("lite0", tmp_path / "nope.pth")  # the bundled file exists, and is not used


@pytest.mark.parametrize("options, message", [
    ({"methods": ("gcad:local_encoder=gird",)}, "expected one of grid, distilled"),
    ({"methods": ("regad:gaussian_stride=5",)}, "expected one of 4, 8, 16"),
    ({"methods": "patchcore"}, "--methods 'patchcore': expected a tuple of values, not a str"),
    ({"shots": (0,)}, "--shots 0: must be an integer >= 1"),
    ({"shots": ()}, "--shots: give at least one value"),
    ({"seeds": (1.5,)}, "--seeds 1.5: must be an integer"),
    ({"batch_size": 0}, "--batch-size 0: must be an integer >= 1"),
    ({"image_size": 16}, "--image-size 16: must be an integer >= 32"),
    ({"format": "png"}, "--format 'png': choose one of loco, mvtec, folder"),
    ({"device": "gpu"}, "--device 'gpu': choose one of auto, cpu, cuda"),
    ({"preset": "fast"}, "--preset 'fast': choose one of paper, offline"),
    ({"shard": (2, 2)}, "--shard (2, 2): expected (i, n) with 0 <= i < n"),
    ({"weights": {"lite0": "/no/such/file.pth"}}, "--weights lite0=/no/such/file.pth: no such file"),
    ({"weights": {"resnet99": "x.pth"}}, "unknown backbone 'resnet99'"),
    ({"categories": ("nosuch",)}, "unknown category 'nosuch'"),
])
def test_run_from_python_checks_the_same_options(tiny_loco, tmp_path, options, message):
    out = tmp_path / "run"
    settings = {"data": tiny_loco, "shots": (1,), "seeds": (0,), "methods": ("patchcore",), "preset": "offline",
                "image_size": 64, "out": out, **options}
    with pytest.raises(HarnessError, match=re.escape(message)):
        run(RunConfig(**settings))
    assert not out.exists()


def test_out_naming_a_file_is_an_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(HarnessError, match="--out .*file/run: .*file exists and is not a folder"):
        RunConfig(out=tmp_path / "file" / "run")
    with pytest.raises(HarnessError, match="exists and is not a folder"):
        RunConfig(out=tmp_path / "file")


def test_a_corrupt_explicit_clip_file_stops_the_preflight(tmp_path, monkeypatch, bad_weights):
    from methods import clip_towers
    from submission.preflight import preflight
    from tests.methods.test_clip_logic import TINY, TINY_CONFIG

    monkeypatch.setitem(clip_towers.EXTRA_MODEL_CONFIGS, TINY, TINY_CONFIG)
    spec = f"clip_logic:clip_model={TINY}"
    with pytest.raises(HarnessError, match=re.escape(f"--weights {TINY}={bad_weights['garbage']}: not usable")):
        preflight((spec,), "paper", {TINY: bad_weights["garbage"]})
    good = tmp_path / "tiny.pt"
    torch.save(clip_towers.create_clip_model(TINY, "none", None, pretrained=False).state_dict(), good)
    [variant] = preflight((spec,), "paper", {TINY: good})
    assert variant.runnable and len(variant.weights[TINY]) == 64


@pytest.mark.parametrize("arguments", [["--help"], ["run", "--help"], ["run", "--shots", "0"],
                                       ["run", "--image-size", "8"]])
def test_help_and_a_bad_harness_option_import_no_method(arguments):
    import subprocess
    import sys

    probe = ("import sys\nfrom submission.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
             "from methods.registry import BUILTIN_MODULES\n"
             "print(sorted(m for m in BUILTIN_MODULES if m in sys.modules))" % (arguments,))
    child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert child.stdout.strip().splitlines()[-1] == "[]"
