"""Progress when stderr is not a terminal (cron, nohup, a service's log): plain lines."""

from __future__ import annotations

import clara  # noqa: F401  (before mlx, as everywhere)
from clara_cli import common


def test_a_log_gets_plain_progress_lines(capsys, monkeypatch):
    monkeypatch.setattr(common, "LOG_EVERY_S", 0.0)  # every update prints
    seen = list(common.progress(range(4), total=4, desc="compress docs", unit="chunk"))
    assert seen == [0, 1, 2, 3]
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert lines[0].startswith("compress docs: 1/4 (25%) in 0s, ")
    assert lines[3].startswith("compress docs: 4/4 (100%) in 0s, ")
    assert len(lines) == 4  # (the end says nothing the last line did not)
    assert " chunk/s" in lines[0]


def test_a_bar_by_hand_carries_its_postfix_and_writes_lines(capsys, monkeypatch):
    monkeypatch.setattr(common, "LOG_EVERY_S", 0.0)
    with common.progress_bar(10, desc="indexing", unit="file") as bar:
        bar.set_postfix_str("120 chunks, 5.2 chunks/s")
        bar.update(3)
        bar.write("added      a.txt")
    err = capsys.readouterr().err.splitlines()
    # the postfix is said when its time comes, without a file done: one big file being
    # indexed was hours without a line (a docs repository's audit)
    assert err[0].startswith("indexing: 0/10 (0%) in 0s") and err[0].endswith(
        "; 120 chunks, 5.2 chunks/s"
    )
    assert err[1].startswith("indexing: 3/10 (30%) in 0s") and err[1].endswith(
        "; 120 chunks, 5.2 chunks/s"
    )
    assert err[2] == "added      a.txt"


def test_a_run_ends_with_where_it_got(capsys, monkeypatch):
    bar = common.progress_bar(10, desc="indexing", unit="file")
    monkeypatch.setattr(bar, "every", 0.0)
    bar.update(3)
    bar.every = 3600.0  # no more lines until the end
    bar.update(4)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" in ")[0] for line in lines] == [
        "indexing: 3/10 (30%)",
        "indexing: 7/10 (70%)",
    ]


def test_a_short_run_or_quiet_prints_nothing(capsys):
    assert list(common.progress(range(3), 3, "quick")) == [0, 1, 2]  # under LOG_EVERY_S
    with common.progress_bar(2, "indexing", quiet=True) as bar:
        bar.update(2)
    assert capsys.readouterr().err == ""
