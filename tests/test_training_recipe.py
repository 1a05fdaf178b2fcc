"""The default recipe's data: the example data's fixed split is kept, hard negatives are real."""

from __future__ import annotations

import json
import random

import pytest

from training.default_recipe import split_example, with_negatives


def _example(path, n=15):
    rows = []
    for i in range(n):
        doc = f"Document {i} is about town{i} and river{i}; its mayor is person{i}."
        rows.append({"data_type": "qa", "question": [f"Who is the mayor of town{i}?",
                     f"Which river flows in town{i}?"], "answers": [f"person{i}", f"river{i}"],
                     "docs": [doc]})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_split_holds_out_every_fifth_line(tmp_path):
    rows = _example(tmp_path / "ex.jsonl")
    train, held, docs = split_example(tmp_path / "ex.jsonl")
    assert [r["docs"][0] for r in held] == [rows[i]["docs"][0] for i in (0, 5, 10)]
    assert len(train) == 12 and len(docs) == 15
    assert not {r["docs"][0] for r in train} & {r["docs"][0] for r in held}
    with pytest.raises(SystemExit, match="--data"):
        split_example(tmp_path / "missing.jsonl")


def test_with_negatives_keeps_the_gold_document_among_similar_ones(tmp_path):
    _example(tmp_path / "ex.jsonl")
    train, _, _ = split_example(tmp_path / "ex.jsonl")
    docs = [r["docs"][0] for r in train]
    qs = [(q, a, i) for i, r in enumerate(train) for q, a in zip(r["question"], r["answers"])]
    recs = with_negatives(qs, docs, 3, random.Random(0))
    assert len(recs) == len(qs)
    for (q, a, src), r in zip(qs, recs):
        assert len(r.docs) == 3 and len(set(r.docs)) == 3
        assert r.docs[r.pos_index[0]] == docs[src] and r.answers == [a] and r.question == q
