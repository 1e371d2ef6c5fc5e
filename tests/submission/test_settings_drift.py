"""The resume's settings check: finished rows whose recorded config fields differ from the config asked now."""
import json
import shutil
from dataclasses import asdict, dataclass, field

import pandas as pd

from methods.options import UNRECORDED
from runfolder.schema import RunPaths
from submission.cli import main
from submission.settings_drift import drift_line, settings_drift


@dataclass(frozen=True)
class ToyConfig:
    levels: tuple[int, ...] = (2, 3)
    sigma: float = 4.0
    added_later: bool = True


def _row(info, method="toy", preset="offline", status="ok"):
    return {"method": method, "preset": preset, "status": status, "method_info": json.dumps(info)}


def test_drift_is_a_recorded_field_that_differs_from_the_asked_config():
    same = _row({"levels": [2, 3], "sigma": 4.0, "memory_size": 7})  # tuples are recorded as lists; facts ignored
    assert settings_drift([same], "toy", "offline", ToyConfig()) == {}
    old = _row({"levels": [2, 3], "sigma": 2.0})  # no `added_later`: a field added since is not compared
    drift = settings_drift([same, old], "toy", "offline", ToyConfig())
    assert drift == {"sigma": (["2.0", "4.0"], "4.0")}
    others = [_row({"sigma": 2.0}, method="toy:sigma=2"), _row({"sigma": 2.0}, preset="paper"),
              _row({"sigma": 2.0}, status="failed")]
    assert settings_drift([same, *others], "toy", "offline", ToyConfig()) == {}
    line = drift_line("runs/x", "toy", "offline", drift)
    assert "\n" not in line and "sigma 2.0 / 4.0 recorded, 4.0 now" in line and "another --out" in line


@dataclass(frozen=True)
class ToyWithFloor:
    sigma: float = 4.0
    floor: float = field(default=0.15, metadata={UNRECORDED: 0.0})  # rows made before the field had no floor


def test_a_field_added_since_compares_old_rows_through_its_unrecorded_value():
    old = _row({"sigma": 4.0})  # made before `floor` existed: it ran as floor = 0
    assert settings_drift([old], "toy", "offline", ToyWithFloor()) == {"floor": (["0.0"], "0.15")}
    assert settings_drift([old], "toy", "offline", ToyWithFloor(floor=0.0)) == {}  # asking for the old behaviour
    new = _row({"sigma": 4.0, "floor": 0.15})
    assert settings_drift([new], "toy", "offline", ToyWithFloor()) == {}


def test_fusion_rows_made_before_the_distance_floor_drift_from_todays_default():
    from methods.fusion import FusionConfig
    recorded = {k: v for k, v in asdict(FusionConfig()).items() if k != "distance_floor"}
    drift = settings_drift([_row(json.loads(json.dumps(recorded)), method="fusion")], "fusion", "offline",
                           FusionConfig())
    assert drift == {"distance_floor": (["0.0"], "0.15")}


def test_a_resume_over_cells_made_with_other_settings_exits_2_before_any_cell(tiny_loco, tmp_path, capsys):
    out = tmp_path / "run"
    arguments = ["run", "--data", str(tiny_loco), "--categories", "cable_pair", "--shots", "1", "--seeds", "1",
                 "--methods", "patchcore", "--preset", "offline", "--image-size", "64", "--metrics", "image"]
    assert main([*arguments, "--out", str(out)]) == 0
    assert main([*arguments, "--out", str(out)]) == 0  # the same settings: resumes (nothing to do)
    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    results = pd.read_csv(RunPaths(edited).results, dtype=str, keep_default_na=False)
    info = json.loads(results.loc[0, "method_info"])
    assert info["config"]["blur_sigma"] == 4.0  # the worker records the variant's config for this check
    info["config"]["blur_sigma"] = 2.0  # as an older default would have it
    results.loc[0, "method_info"] = json.dumps(info)
    results.to_csv(RunPaths(edited).results, index=False)
    capsys.readouterr()
    assert main([*arguments, "--shots", "1", "2", "--out", str(edited)]) == 2
    output = capsys.readouterr().out
    assert "patchcore (offline) has finished cells made with other settings (blur_sigma 2.0 recorded, 4.0 now" in \
        output.replace("\n", " ")
    assert len(pd.read_csv(RunPaths(edited).results)) == 1  # no cell ran


def test_a_resume_with_other_run_settings_exits_2_and_leaves_config_json(tiny_loco, tmp_path, capsys):
    out = tmp_path / "run"
    arguments = ["run", "--data", str(tiny_loco), "--categories", "cable_pair", "--shots", "1", "--seeds", "1",
                 "--methods", "patchcore", "--preset", "offline", "--metrics", "image", "--out", str(out)]
    assert main([*arguments, "--image-size", "64"]) == 0
    recorded = RunPaths(out).config.read_text()
    results = RunPaths(out).results.read_text()
    capsys.readouterr()
    for extra, message in ((["--image-size", "128"], "--image-size: 64 recorded, 128 now"),
                           (["--image-size", "64", "--threads", "7"], "--threads: "),
                           (["--image-size", "64", "--metrics", "all"], "--metrics: image recorded, all now")):
        arguments_now = [a for a in arguments if a not in ("--metrics", "image")] if "--metrics" in extra else arguments
        assert main([*arguments_now, *extra]) == 2
        line = " ".join(capsys.readouterr().out.split())
        assert message in line and "another --out" in line
        assert RunPaths(out).config.read_text() == recorded and RunPaths(out).results.read_text() == results
    (tiny_loco / "cable_pair" / "train" / "good" / "extra.png").write_bytes(b"not the same data")
    try:
        assert main([*arguments, "--image-size", "64"]) == 2
        assert "the files of --data changed since (category cable_pair)" in " ".join(capsys.readouterr().out.split())
    finally:
        (tiny_loco / "cable_pair" / "train" / "good" / "extra.png").unlink()
