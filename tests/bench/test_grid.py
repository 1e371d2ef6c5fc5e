"""The grid bench's backbone pass check: PASS on a real (tiny) run, FAIL when images pass a backbone twice."""
from runfolder.reading import read_json
from runfolder.schema import RunPaths
from bench.grid import backbone_check, check_line
from submission.config import RunConfig
from submission.runner import run

METHODS = ("patchcore", "simplenet:meta_epochs=1,epochs_per_meta=1,augment_views=2",  # simplenet: view passes
           "fusion")  # fusion: its members score views and pseudo-anomalies, through `get`, inside its fit


def _run(tiny_loco, out, **extra):
    config = RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(1, 2), seeds=(42, 0), methods=METHODS,
                       preset="offline", image_size=64, device="cpu", pretrained=False, out=out, **extra)
    folder = run(config)
    return backbone_check(folder, read_json(RunPaths(folder).config)["feature_passes"])


def test_each_dataset_image_passes_once_and_views_are_counted_apart(tiny_loco, tmp_path):
    check = _run(tiny_loco, tmp_path / "run")
    support = check["support_images"]
    assert check["check"] == "PASS" and check["backbones"] == ["lite0"]
    assert check["test_images"] == 10 and 2 <= support <= 6  # k 1 and 2 over two seeds: at most 6 distinct
    assert check["passes"] == check["limit"] == 10 + support and check["repeats"] == {"lite0": 0}
    assert check["view_passes"]["lite0"] > 0 and check["cache"]["cache_evictions"] == 0
    assert "PASS" in check_line(check)


def test_a_cache_that_keeps_nothing_fails_the_check(tiny_loco, tmp_path):
    check = _run(tiny_loco, tmp_path / "run", cache_gib=0)  # every cell passes the test images again
    assert check["check"] == "FAIL" and check["cache"]["cache_evictions"] > 0
    assert check["passes"] > check["limit"] and check["repeats"]["lite0"] == check["passes"] - check["limit"]
