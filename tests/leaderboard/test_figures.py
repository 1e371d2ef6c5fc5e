"""Overlays find the test image through the score CSV's `path`, whatever its extension (MVTec: .jpg)."""
import json

import numpy as np
import pandas as pd
from PIL import Image

from leaderboard import figures
from runfolder.schema import RunPaths


def _run_with_maps(tmp_path, with_path_column=True):
    data = tmp_path / "data"
    images = {"good/000": 0, "crack/000": 1}
    for item in images:
        target = data / "bottle" / "test" / f"{item}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(target)
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    paths.config.write_text(json.dumps({"data": str(data)}))
    scores = pd.DataFrame({"image": list(images), "kind": ["good", "crack"], "label": list(images.values()),
                           "score": [0.7, 0.2]})
    if with_path_column:
        scores["path"] = [f"bottle/test/{item}.jpg" for item in images]
    paths.scores("patchcore", 1, 0, "bottle").parent.mkdir(parents=True)
    scores.to_csv(paths.scores("patchcore", 1, 0, "bottle"), index=False)
    for item in images:
        target = paths.map("patchcore", 1, 0, "bottle", item)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(0).random((16, 16), dtype=np.float32), mode="F").save(target)
    return paths, data


def _opened_images(monkeypatch):
    opened = []
    real_open = Image.open

    def spy(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(figures.Image, "open", spy)
    return opened


def test_overlay_uses_the_jpg_named_by_the_score_csv(tmp_path, monkeypatch):
    paths, data = _run_with_maps(tmp_path)
    opened = _opened_images(monkeypatch)
    assert figures.plot_overlays(paths.root, paths.plot("overlays.png")).is_file()
    assert {str(data / "bottle" / "test" / "good" / "000.jpg"), str(data / "bottle" / "test" / "crack" / "000.jpg")} <= set(opened)


def test_overlay_of_an_older_score_csv_finds_the_jpg_too(tmp_path, monkeypatch):
    paths, data = _run_with_maps(tmp_path, with_path_column=False)
    opened = _opened_images(monkeypatch)
    assert figures.plot_overlays(paths.root, paths.plot("overlays.png")).is_file()
    assert str(data / "bottle" / "test" / "crack" / "000.jpg") in opened
