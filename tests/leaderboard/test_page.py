"""The leaderboard page (`python -m leaderboard page`): its structure on a real tiny run, bad input, and a headless
Chromium that opens it from file://, sorts the board by a column, filters it by k and takes a screenshot."""
import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pandas as pd
import pytest

from leaderboard.__main__ import main
from leaderboard.page import swapped, write_page
from leaderboard.paired import paired
from leaderboard.show import RunTables
from runfolder.schema import RESULT_COLUMNS, RunPaths
from tests.leaderboard.test_intervals_paired import _write_run


class _Table(HTMLParser):
    """The header keys and body rows (attributes, cells' data-value) of one table of a page."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.inside, self.keys, self.rows = table_id, False, [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.inside = attrs.get("id") == self.table_id
        elif self.inside and tag == "th":
            self.keys.append(attrs.get("data-key"))
        elif self.inside and tag == "tr" and any(k.startswith("data-f-") for k in attrs):
            self.rows.append({"attrs": attrs, "values": []})
        elif self.inside and tag == "td" and self.rows:
            self.rows[-1]["values"].append(attrs.get("data-value"))

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False


def table_rows(html: str, table_id: str = "board") -> list[dict]:
    """Rows of a table as {"hidden", "filters", column key: data-value}."""
    parser = _Table(table_id)
    parser.feed(html)
    return [{"hidden": "hidden" in row["attrs"],
             "filters": {k[len("data-f-"):]: v for k, v in row["attrs"].items() if k.startswith("data-f-")},
             **dict(zip(parser.keys, row["values"]))} for row in parser.rows]


def local_links(html: str) -> list[str]:
    """Every href and src of a page."""
    return re.findall(r'(?:href|src)="([^"#]*)', html)


@pytest.fixture(scope="module")
def tiny_site(tiny_run, tmp_path_factory):
    return write_page([tiny_run], tmp_path_factory.mktemp("site"))


def test_page_of_a_real_run_has_every_part(tiny_site, tiny_run):
    site = tiny_site.parent
    pages = {p.name: p.read_text() for p in site.glob("*.html")}
    assert {"index.html", "vand.html", "compare.html", "method-patchcore.html"} <= set(pages)
    for name, html in pages.items():  # self-contained: every link and image is a file of the site, none remote
        for target in filter(None, local_links(html)):
            assert not target.startswith(("http:", "https:", "//")) and (site / target).is_file(), (name, target)
    rows = table_rows(pages["index.html"])
    assert {(r["filters"]["category"], r["filters"]["k"]) for r in rows} == {
        (c, k) for c in ("overall", "pill_tray", "part_slots") for k in ("1", "2")}
    board = RunTables.read(tiny_run).board  # the numbers are the report's
    for row in rows:
        expected = board[(board.category == row["filters"]["category"]) & (board.k == row["filters"]["k"])].iloc[0]
        assert float(row["f1_max"]) == pytest.approx(expected.f1_max)
        assert float(row["image_auroc"]) == pytest.approx(expected.image_auroc)
    assert 'data-main' in pages["index.html"] and 'src="assets/page.js"' in pages["index.html"]
    assert "img/f1_vs_k.png" in pages["vand.html"] and "nAUFC" in pages["vand.html"]
    method = pages["method-patchcore.html"]
    assert len(table_rows(method, "cells-patchcore")) == 2 * 2 * 2  # categories x k x seeds
    assert "img/overlays-patchcore.png" in method and (site / "img/overlays-patchcore.png").stat().st_size > 1000
    assert "Two methods" in pages["compare.html"] and 'id="notes"' not in pages["index.html"]  # nothing to note


def test_not_a_run_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "absent"):
        assert main(["page", str(folder), "--out", str(tmp_path / "site")]) == 2
        out = capsys.readouterr().out.strip()
        assert len(out.splitlines()) == 1 and str(folder) in out and "not a run folder" in out


def test_failed_cells_and_incomplete_grids_are_noted(tmp_path, capsys):
    run = _write_run(tmp_path / "run", skip={("patchcore", "b", 2, 1), ("fusion", "a", 1, 0)})
    paths = RunPaths(run)
    failed = pd.DataFrame([{"method": "patchcore", "preset": "offline", "category": "b", "k": 2, "seed": 1,
                            "status": "failed", "method_info": json.dumps({"error": "CUDA out of memory"})}])
    failed.reindex(columns=RESULT_COLUMNS).to_csv(paths.results, mode="a", header=False, index=False)
    assert main(["page", str(run)]) == 0  # default --out: RUN/page, and the command says where it is
    site = run / "page"
    assert capsys.readouterr().out.strip() == f"page written: {(site / 'index.html').resolve()}"
    index = (site / "index.html").read_text()
    notes = re.search(r'<ul class="notes" id="notes">(.*?)</ul>', index, re.S).group(1)
    assert "patchcore (offline): 1 failed cell — b k2_s1; first error: CUDA out of memory" in notes
    assert "fusion (offline): 1 cell missing (no row in results.csv" in notes and "incomplete grids" in notes
    incomplete = [r for r in table_rows(index) if r["filters"]["category"] in ("b", "overall") and r["filters"]["k"] == "2"
                  and r["method"] == "patchcore"]
    assert incomplete and all(float(r["missing"]) == 1 for r in incomplete)
    assert re.search(r'<tr class="incomplete"[^>]*data-f-category="b" data-f-k="2"', index)
    assert "1 missing" in index
    assert "status-failed" in (site / "method-patchcore.html").read_text()


def test_runs_on_different_data_are_noted(tmp_path):
    runs = []
    for name, data in (("a", "/data/loco"), ("b", "embedded:test")):
        run = _write_run(tmp_path / name)
        RunPaths(run).config.write_text(json.dumps({"settings": {"data": data, "format": "loco"}, "data": data}))
        runs.append(run)
    index = write_page(runs, tmp_path / "site").read_text()
    assert "a and b ran on different data (data /data/loco vs embedded:test)" in index
    compare = (tmp_path / "site" / "compare.html").read_text()
    assert "ran on different data" in compare and "b (B) vs a (A)" in compare
    assert {r["filters"]["run"] for r in table_rows(index)} == {"a", "b"}


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def chromium(*args: str) -> str:
    """Run headless Chromium once with a fresh profile; its stdout."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                              timeout=90, env={**os.environ, "HOME": profile})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (scripts/install_chromium.sh installs it)")
def test_a_browser_sorts_and_filters_the_board_from_file_url(tmp_path):
    run = _write_run(tmp_path / "run", methods=("patchcore", "fusion", "perfect"))
    index = write_page([run], tmp_path / "site")
    url = index.resolve().as_uri() + "#sort=image_auroc&dir=asc&category=&k=1"
    dom = chromium("--virtual-time-budget=3000", "--dump-dom", url)
    assert 'data-ready="1"' in dom  # the script ran
    rows = table_rows(dom)
    shown = [r for r in rows if not r["hidden"]]
    assert len(rows) == 3 * 3 * 2 and len(shown) == 3 * 3  # 3 methods x (a, b, overall) x k in (1, 2); k = 1 kept
    assert {r["filters"]["k"] for r in shown} == {"1"}
    aurocs = [float(r["image_auroc"]) for r in shown]
    assert aurocs == sorted(aurocs) and aurocs[-1] == 1.0 and aurocs != sorted(aurocs, reverse=True)
    assert [r["method"] for r in shown][-3:] == ["perfect"] * 3
    shot = tmp_path / "board.png"
    chromium("--virtual-time-budget=3000", f"--screenshot={shot}", "--window-size=1400,900", url)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_pairs_read_both_ways_equal_paired_each_way(tmp_path):
    run = _write_run(tmp_path / "run")
    results = RunTables.read(run).results
    ab = paired(results, "fusion", "patchcore")
    pd.testing.assert_frame_equal(swapped(paired(results, "patchcore", "fusion")), ab, check_exact=False, atol=1e-12)
