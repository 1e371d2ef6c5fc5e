"""`python -m submission run --page`: after the report, the leaderboard page (`python -m leaderboard page RUN`, which
writes RUN/page and prints where; tests/leaderboard/test_page.py) is written; off by default, and not after a report
that failed."""
import pytest

import submission.cli
import submission.runner
from submission.cli import build_parser, main


def test_page_is_off_by_default():
    assert build_parser().parse_args(["run"]).page is False


@pytest.mark.parametrize("page, report_code, expected", [
    (False, 0, ["show"]), (True, 0, ["show", "page"]), (True, 1, ["show"])])
def test_run_writes_the_page_after_the_report(tiny_loco, tmp_path, monkeypatch, page, report_code, expected):
    out, children = tmp_path / "run", []
    monkeypatch.setattr(submission.runner, "run", lambda config, console=None: config.out)
    monkeypatch.setattr(submission.cli, "show_leaderboard",
                        lambda run_dir, console, command="show": children.append((run_dir, command)) or
                        (report_code if command == "show" else 0))
    code = main(["run", "--data", str(tiny_loco), "--methods", "patchcore", "--preset", "offline", "--out", str(out),
                 *(["--page"] if page else [])])
    assert code == report_code and children == [(out, command) for command in expected]
