"""Teacher-free question/answer pairs from real text: cloze questions on salient spans.

Each sentence of a chunk offers candidate answer spans: dates and years, numbers (with their
unit word), names (runs of capitalised words not at the sentence start), options and code
literals (`--flag`, `name()`, quoted or back-quoted terms). The question is the sentence with
that span blanked out, so its answer is a short span of the document, the form of the stage-1
and stage-2 targets a teacher would write. `cloze_teacher` has the `Teacher` signature of
`training.synth`, so `clara-train synth --cloze` runs through the same pipeline.
"""

from __future__ import annotations

import random
import re

BLANK = "_____"
QUESTION = "Fill in the blank: {sentence}"

_UNIT_STOP = "at|and|or|in|on|of|to|the|an|for|by|with|from|is|are|was|were|as|than|then|if|but|per"
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_SPANS = (
    ("date", re.compile(rf"\b(?:\d{{1,2}} )?(?:{_MONTHS})(?: \d{{1,2}})?,? \d{{3,4}}\b")),
    ("year", re.compile(r"\b(?:1[0-9]|20)\d\d\b")),
    # whole numbers only (not "30" of "02:30", nor "05" of a dated path), with a unit word
    # that is no stop word ("13 GB", not "13 at")
    (
        "number",
        re.compile(
            r"(?<![\w/.:-])\d+(?:[.,:]\d+)*(?![\w/:-])(?:\s?%| (?!(?:"
            + _UNIT_STOP
            + r")\b)[a-z]{2,12}\b)?"
        ),
    ),
    ("option", re.compile(r"(?<![\w-])--?[a-zA-Z][\w-]*|\b[A-Za-z_][\w.]*\(\)")),
    # the same mark on both sides, outside words (not from "it's" to a backquote)
    ("quoted", re.compile(r"(?<!\w)(?P<q>[\"'`])(?P<a>[^\"'`\n]{2,40})(?P=q)(?!\w)")),
    ("name", re.compile(r"(?<=[a-z,;] )(?:[A-Z][\w'-]+)(?: (?:of |de |von )?[A-Z][\w'-]+)*")),
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])|\n{2,}")
_CODE = re.compile(r"[=#{}]|>>>|\bdef |\bimport ")  # code lines, not prose
_STOP = {"The", "A", "An", "This", "That", "These", "It", "In", "For", "If", "When", "See", "Note"}


def sentences(text: str) -> list[str]:
    """Sentences of `text` worth asking about (one line, 6-60 words)."""
    out = []
    for s in _SENTENCE.split(text):
        s = " ".join(s.split())
        if 6 <= len(s.split()) <= 60 and not _CODE.search(s):
            out.append(s)
    return out


def spans(sentence: str) -> list[tuple[str, int, int]]:
    """Candidate answers `(kind, start, end)` in `sentence`, longest kind first, no overlaps."""
    taken: list[tuple[int, int]] = []
    out = []
    for kind, rx in _SPANS:
        for m in rx.finditer(sentence):
            lo, hi = m.span("a") if "a" in rx.groupindex else m.span()
            text = sentence[lo:hi].strip()
            if not text or text in _STOP or any(lo < b and a < hi for a, b in taken):
                continue
            if len(text.split()) > 6 or len(text) >= len(sentence) / 2:
                continue
            taken.append((lo, hi))
            out.append((kind, lo, hi))
    return out


def cloze_pairs(text: str, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Up to `n` `(question, answer)` pairs from `text`, at most one per sentence, spread over
    the span kinds (dates, numbers, options, names, quoted terms); deterministic in `seed`."""
    rng = random.Random(f"{seed}:{text[:200]}")
    options = []
    for s in sentences(text):
        found = spans(s)
        if found:
            kind, lo, hi = rng.choice(found)
            question = QUESTION.format(sentence=s[:lo] + BLANK + s[hi:])
            options.append((kind, question, s[lo:hi].strip()))
    rng.shuffle(options)
    options.sort(key=lambda o: [k for k, _ in _SPANS].index(o[0]))  # dates/numbers first
    picked, kinds = [], {}
    for kind, q, a in options:  # round-robin over kinds so one kind does not take all
        kinds.setdefault(kind, []).append((q, a))
    while len(picked) < n and any(kinds.values()):
        for kind in list(kinds):
            if kinds[kind] and len(picked) < n:
                picked.append(kinds[kind].pop(0))
    return picked


def cloze_teacher(seed: int = 0):
    """A `Teacher` (chunk, n) -> `Q: ...` / `A: ...` text, written without any model."""

    def ask(doc: str, n: int) -> str:
        return "\n".join(f"Q: {q}\nA: {a}" for q, a in cloze_pairs(doc, n, seed))

    return ask
