"""The per-method timing bench: a tiny run through the public API, its seconds read back from results.csv."""
from bench.method_times import main


def test_times_each_method_of_a_tiny_run(tiny_loco, tmp_path, capsys):
    code = main(["--data", str(tiny_loco), "--categories", "pill_tray", "cable_pair", "--shots", "1", "2",
                 "--seeds", "42", "--methods", "patchcore", "clip_logic", "--image-size", "64", "--device", "cpu",
                 "--random-weights", "--out", str(tmp_path / "run")])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| method | cells ok |")
    rows = {cells[1].strip(): cells[2:] for cells in (line.split("|") for line in lines[1:])}
    assert set(rows) == {"patchcore", "clip_logic"}
    for cells in rows.values():
        assert cells[0].strip() == "4" and cells[1].strip() == "0"  # 2 categories x 2 k x 1 seed, all ok
        assert all(cell.strip() not in ("", "–") for cell in cells[2:6])
