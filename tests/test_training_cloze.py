"""Teacher-free cloze questions (`clara-train synth --cloze`): spans, pairs, the CLI path."""

from __future__ import annotations

import pytest

from clara.errors import ClaraError
from training.cli import main
from training.cloze import BLANK, cloze_pairs, cloze_teacher, sentences, spans
from training.data import read_pretrain, read_qa
from training.synth import parse_qa_pairs

TEXT = (
    "The Treaty of Paris was signed on 3 September 1783 by delegates of several nations. "
    "The bridge across the river is 1,200 metres long and opened in 1932. "
    "Run the tool with the --verbose option to print every step it takes. "
    "Its founder, Marie Curie, later moved the laboratory to a larger building in the city. "
    "\n\nx = 1  # code lines like this one are not asked about at all, never ever"
)


def test_spans_find_dates_numbers_options_and_names():
    found = {TEXT_KIND for s in sentences(TEXT) for TEXT_KIND, _, _ in spans(s)}
    assert {"date", "number", "option", "name"} <= found
    s = "The bridge across the river is 1,200 metres long and opened in 1932."
    got = {s[lo:hi] for _, lo, hi in spans(s)}
    assert "1932" in got and "1,200 metres" in got


def test_spans_are_whole_answers():
    """No half of a time or of a dated path, no stop word taken for a unit, no quote that
    runs from an apostrophe to a backquote."""
    found = lambda s: [s[a:b] for _, a, b in spans(s)]  # noqa: E731
    assert found("Nightly backups start at 02:30 UTC and finish before the office opens.") == [
        "02:30"
    ]
    assert "13" in found("The cache holds 13 at most and the rest goes to the disk.")
    assert found("Logs go to /var/log/app/12-05.log on the server every day.") == []
    assert found("It's what the tool then imports it (see `make install` for it).") == [
        "make install"
    ]


def test_cloze_pairs_blank_an_answer_span_of_the_sentence():
    pairs = cloze_pairs(TEXT, 4, seed=1)
    assert len(pairs) == 4
    for q, a in pairs:
        assert q.count(BLANK) == 1 and a
        assert q.replace(BLANK, a).removeprefix("Fill in the blank: ") in " ".join(TEXT.split())
    assert all("x = 1" not in q for q, _ in pairs)  # code is not prose
    assert cloze_pairs(TEXT, 4, seed=1) == pairs  # deterministic
    assert parse_qa_pairs(cloze_teacher(1)(TEXT, 4)) == pairs  # the Teacher format
    assert cloze_pairs("no sentences here", 3) == []


def test_synth_cli_cloze_needs_no_teacher(tiny_llama_dir, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text(TEXT + "\n")
    (folder / "b.txt").write_text("The museum opened in 1901 and holds 4,000 paintings today.\n")
    out = tmp_path / "data"
    args = ["synth", str(folder), "--out", str(out), "--model", str(tiny_llama_dir)]
    assert main([*args, "--dtype", "stored", "--cloze", "--candidates", "2", "-q"]) == 0
    s1 = read_pretrain(out / "stage1.jsonl")
    s2 = read_qa(out / "stage2.jsonl")
    assert {r.kind for r in s1} == {"paraphrase", "qa"}
    assert s2 and all(BLANK in r.question and len(r.docs) == 2 for r in s2)
    with pytest.raises(ClaraError, match="--cloze"):
        from training.cli import build_parser
        from training.synth import cmd_synth

        cmd_synth(build_parser().parse_args([*args, "--cloze", "--no-qa"]))
