"""What a benchmark report says of the runs it merges: `bench/bench_heldout.py --report DIR`
appended only its own command (the merging step), so about 25 held-out sections did not say
how their figures were made (an evaluation audit)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_merged_report_names_each_run_as_it_was_made(tmp_path, monkeypatch) -> None:
    sys.path.insert(0, str(ROOT))
    import clara  # noqa: F401  (the BLAS path before mlx loads)
    from bench import _common, bench_heldout

    monkeypatch.setattr(sys, "argv", ["bench_heldout.py", "--checkpoint", "default", "--tag", "a"])
    made = _common.run_record()
    assert made["command"].endswith("bench_heldout.py --checkpoint default --tag a")
    assert made["date"].endswith("UTC") and made["machine"] and made["commit"]
    result = {"tag": "a", "checkpoint": "default", "questions": 200, "collection": 1000,
              "retrieval": {"bm25": {"recall@1": 0.9, "recall@3": 0.95, "recall@5": 0.97}},
              "run": made}  # fmt: skip
    (tmp_path / "a.retrieval").write_text(json.dumps(result))
    old = {**result, "tag": "old"}
    del old["run"]
    (tmp_path / "old.retrieval").write_text(json.dumps(old))
    appended = []
    monkeypatch.setattr(bench_heldout, "append_report", lambda title, body: appended.append(body))
    bench_heldout.report(tmp_path)
    (body,) = appended
    assert f"- a: `{made['command']}` at {made['commit']}, {made['date']}" in body
    assert "- old: made before runs recorded how" in body
