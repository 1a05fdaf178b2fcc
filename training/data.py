"""Training and evaluation data: the reference CLaRa jsonl formats, read and validated.

Stage 1 (`pretrain`), one document per record:
    {"data_type": "qa", "question": [...], "answers": [...], "docs": [doc]}
    {"data_type": "paraphrase", "docs": [doc]}
Stages 2-3 (`instruct`, `joint`) and evaluation:
    {"question": str, "docs": [str, ...], "answer" | "answers" | "golden_answers": ...,
     "pos_index": [int, ...]}
Every problem is reported as `file:line: what is wrong`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from clara.errors import DataError

ANSWER_KEYS = ("answer", "answers", "golden_answers")


@dataclass
class PretrainRecord:
    """A stage-1 record: one document and either QA pairs about it or a paraphrase target."""

    kind: str  # "qa" | "paraphrase"
    doc: str
    questions: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)


@dataclass
class QARecord:
    """A stage-2/3 (and evaluation) record: a question, its candidate documents, gold answers."""

    question: str
    docs: list[str]
    answers: list[str]
    pos_index: list[int] = field(default_factory=list)

    @property
    def answer(self) -> str:
        """The training target: the first gold answer."""
        return self.answers[0]


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """Yield (`file:line`, object) for every non-blank line; bad JSON raises `DataError`."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.jsonl"))
        hint = f" ({', '.join(inside)} in it)" if inside else ""
        raise DataError(
            f"{path} is a folder{hint}: give the data file, e.g. {path}/stage1.jsonl for "
            "pretrain, stage2.jsonl for instruct, joint and clara-eval"
        )
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line.rstrip("\r\n"))  # (else a cut line errs at "column 1")
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(obj, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield where, obj


def _strings(where: str, obj: dict, key: str, *, allow_str: bool = True) -> list[str]:
    value = obj.get(key)
    if isinstance(value, str) and allow_str:
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: {key!r} must be a list of strings, got {_show(value)}")
    return value


def _show(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else "nothing"
    return text if len(text) <= 60 else text[:57] + "..."


def _docs(where: str, obj: dict) -> list[str]:
    if "docs" not in obj:
        raise DataError(f"{where}: missing 'docs' (a list of document strings)")
    docs = _strings(where, obj, "docs", allow_str=False)
    if not docs:
        raise DataError(f"{where}: 'docs' is empty")
    for i, d in enumerate(docs):
        if not d.strip():
            raise DataError(f"{where}: docs[{i}] is an empty string")
    return docs


def parse_pretrain(where: str, obj: dict) -> PretrainRecord:
    """Validate one stage-1 object."""
    kind = obj.get("data_type")
    if kind not in ("qa", "paraphrase"):
        hint = ""
        if kind is None and "question" in obj and "pos_index" in obj:  # synth's stage-2 records
            hint = (" (this looks like stage-2 data, for instruct, joint and clara-eval; "
                    "pretrain reads stage-1 records: synth's stage1.jsonl)")  # fmt: skip
        raise DataError(
            f'{where}: \'data_type\' must be "qa" or "paraphrase", got {_show(kind)}{hint}'
        )
    docs = _docs(where, obj)
    if len(docs) != 1:
        raise DataError(
            f"{where}: stage-1 records carry exactly one document in 'docs', got {len(docs)}"
        )
    if kind == "paraphrase":
        return PretrainRecord("paraphrase", docs[0])
    for key in ("question", "answers"):
        if key not in obj:
            raise DataError(f'{where}: a "qa" record needs {key!r}')
    questions = _strings(where, obj, "question")
    answers = _strings(where, obj, "answers")
    if not questions:
        raise DataError(f"{where}: 'question' is empty")
    if len(questions) != len(answers):
        raise DataError(
            f"{where}: {len(questions)} questions but {len(answers)} answers (they pair up)"
        )
    return PretrainRecord("qa", docs[0], questions, answers)


def parse_qa(where: str, obj: dict, *, need_docs: bool = True) -> QARecord:
    """Validate one stage-2/3 object (also used for evaluation data)."""
    question = obj.get("question")
    if not isinstance(question, str) or not question.strip():
        hint = ""
        if "data_type" in obj:  # synth's stage-1 records carry it
            hint = (" (this looks like stage-1 data, for `clara-train pretrain`; instruct, joint "
                    "and clara-eval read stage-2 records: synth's stage2.jsonl)")  # fmt: skip
        raise DataError(
            f"{where}: 'question' must be a non-empty string, got {_show(question)}{hint}"
        )
    key = next((k for k in ANSWER_KEYS if k in obj), None)
    if key is None:
        raise DataError(f"{where}: no answer: give 'answer', 'answers' or 'golden_answers'")
    answers = [a for a in _strings(where, obj, key) if a.strip()]
    if not answers:
        raise DataError(f"{where}: {key!r} holds no non-empty answer")
    docs = _docs(where, obj) if need_docs or "docs" in obj else []
    pos = obj.get("pos_index", [])
    if isinstance(pos, int) and not isinstance(pos, bool):
        pos = [pos]
    if not isinstance(pos, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in pos
    ):
        raise DataError(f"{where}: 'pos_index' must be a list of integers, got {_show(pos)}")
    bad = [i for i in pos if not 0 <= i < len(docs)]
    if bad:
        raise DataError(
            f"{where}: pos_index {bad[0]} is out of range for {len(docs)} docs (0-based indices)"
        )
    return QARecord(question, docs, answers, list(pos))


def read_pretrain(path: str | os.PathLike) -> list[PretrainRecord]:
    """All stage-1 records of a jsonl file (at least one)."""
    records = [parse_pretrain(w, o) for w, o in iter_jsonl(path)]
    if not records:
        raise DataError(f"{path}: no records")
    return records


def read_qa(path: str | os.PathLike, *, need_docs: bool = True) -> list[QARecord]:
    """All stage-2/3 records of a jsonl file (at least one)."""
    records = [parse_qa(w, o, need_docs=need_docs) for w, o in iter_jsonl(path)]
    if not records:
        raise DataError(f"{path}: no records")
    return records


def pretrain_to_json(r: PretrainRecord) -> dict:
    if r.kind == "paraphrase":
        return {"data_type": "paraphrase", "docs": [r.doc]}
    return {"data_type": "qa", "question": r.questions, "answers": r.answers, "docs": [r.doc]}


def qa_to_json(r: QARecord) -> dict:
    return {
        "question": r.question,
        "docs": r.docs,
        "golden_answers": r.answers,
        "pos_index": r.pos_index,
    }


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write dicts one per line (UTF-8); returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n
