"""Reading and validating the reference CLaRa jsonl formats."""

from __future__ import annotations

import json

import pytest

from training.data import (
    DataError,
    pretrain_to_json,
    qa_to_json,
    read_pretrain,
    read_qa,
    write_jsonl,
)


def _write(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_reads_reference_stage1_records(tmp_path):
    path = _write(
        tmp_path,
        [
            {
                "data_type": "qa",
                "question": ["Who?", "When?"],
                "answers": ["A", "1900"],
                "docs": ["A did it in 1900."],
            },
            "",
            {"data_type": "paraphrase", "docs": ["Some text."]},
        ],
    )
    qa, para = read_pretrain(path)
    assert (qa.kind, qa.doc, qa.questions, qa.answers) == (
        "qa",
        "A did it in 1900.",
        ["Who?", "When?"],
        ["A", "1900"],
    )
    assert (para.kind, para.doc) == ("paraphrase", "Some text.")
    out = tmp_path / "again.jsonl"
    write_jsonl(out, [pretrain_to_json(qa), pretrain_to_json(para)])
    assert read_pretrain(out) == [qa, para]


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("answer", "Paris", ["Paris"]),
        ("answers", ["Paris", "paris"], ["Paris", "paris"]),
        ("golden_answers", ["Paris"], ["Paris"]),
    ],
)
def test_reads_every_answer_key(tmp_path, key, value, expected):
    path = _write(
        tmp_path, [{"question": "Capital?", "docs": ["d0", "d1"], key: value, "pos_index": [1]}]
    )
    (rec,) = read_qa(path)
    assert rec.answers == expected and rec.answer == expected[0]
    assert rec.docs == ["d0", "d1"] and rec.pos_index == [1]
    out = tmp_path / "again.jsonl"
    write_jsonl(out, [qa_to_json(rec)])
    assert read_qa(out) == [rec]


@pytest.mark.parametrize(
    "row,message",
    [
        ("{not json", r"data.jsonl:2: invalid JSON"),
        ('{"docs": ["abc"]', r":2: invalid JSON \(Expecting ',' delimiter at column 17\)"),  # cut
        ({"data_type": "summary", "docs": ["d"]}, r":2: 'data_type' must be"),
        ({"data_type": "paraphrase", "docs": ["a", "b"]}, r":2: .*exactly one document"),
        (
            {"data_type": "qa", "question": ["q1", "q2"], "answers": ["a"], "docs": ["d"]},
            r":2: 2 questions but 1 answers",
        ),
        ({"data_type": "qa", "answers": ["a"], "docs": ["d"]}, r":2: .*needs 'question'"),
        ({"data_type": "paraphrase", "docs": []}, r":2: 'docs' is empty"),
        ({"data_type": "paraphrase"}, r":2: missing 'docs'"),
    ],
)
def test_stage1_errors_name_file_and_line(tmp_path, row, message):
    good = {"data_type": "paraphrase", "docs": ["fine"]}
    path = _write(tmp_path, [good, row])
    with pytest.raises(DataError, match=message):
        read_pretrain(path)


@pytest.mark.parametrize(
    "row,message",
    [
        ({"docs": ["d"], "answer": "a"}, r":1: 'question' must be a non-empty string"),
        ({"question": "q", "docs": ["d"]}, r":1: no answer"),
        ({"question": "q", "docs": ["d"], "answer": ""}, r":1: 'answer' holds no non-empty"),
        (
            {"question": "q", "docs": ["d"], "answer": "a", "pos_index": [3]},
            r":1: pos_index 3 is out of range for 1 docs",
        ),
        (
            {"question": "q", "docs": ["d"], "answer": "a", "pos_index": "0"},
            r":1: 'pos_index' must be a list of integers",
        ),
        ({"question": "q", "docs": "d", "answer": "a"}, r":1: 'docs' must be a list of strings"),
        ([1, 2], r":1: expected a JSON object"),
    ],
)
def test_qa_errors_name_file_and_line(tmp_path, row, message):
    path = _write(tmp_path, [row])
    with pytest.raises(DataError, match=message):
        read_qa(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="no such data file"):
        read_qa(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no records"):
        read_pretrain(_write(tmp_path, [""]))


def test_the_wrong_file_or_stage_says_which_to_give(tmp_path):
    """synth writes a folder of stage1.jsonl and stage2.jsonl: `--data data/` and pretrain
    given stage-2 records each say which file to give."""
    write_jsonl(tmp_path / "data" / "stage1.jsonl", [{"data_type": "paraphrase", "docs": ["d"]}])
    with pytest.raises(DataError, match=r"data is a folder \(stage1.jsonl in it\): give the da"):
        read_pretrain(tmp_path / "data")
    stage2 = _write(tmp_path, [{"question": "q", "docs": ["d"], "answer": "a", "pos_index": [0]}])
    with pytest.raises(DataError, match="this looks like stage-2 data, for instruct, joint"):
        read_pretrain(stage2)


def test_eval_data_may_come_without_docs(tmp_path):
    path = _write(tmp_path, [{"question": "q", "answer": "a"}])
    assert read_qa(path, need_docs=False)[0].docs == []
    with pytest.raises(DataError, match="missing 'docs'"):
        read_qa(path)
