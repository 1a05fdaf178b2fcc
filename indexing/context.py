"""Contextual chunks: the `title / section heading` line read in front of each chunk's text.

A chunk from the middle of a document rarely names the document; its context line does. The
title is the PDF's metadata title when it has one, else the document's first heading, else its
first line, else the file name. The section heading is the last heading before the chunk (or
inside its first third): Markdown `#` headings (the reader records them before it strips the
markers), underlined reST/text headings, and numbered headings in PDFs (`3.2 Results`).
The full-text index and the compressor both see `context + "\\n" + text`; snippets shown to
users stay the chunk's own text.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clara.text import whole_characters

MAX_CHARS = 80  # of the title and of the heading
#: Tokens a default chunk leaves free for its context line (the compressor reads at most
#: doc_max_tokens of `context + text`).
CONTEXT_TOKENS = 32

_UNDERLINE = re.compile(r"^\s*([=\-~^*#+\"'`])\1{2,}\s*$")
# (the title may start with any capital or a letter of a script without case: "1. 서론")
_NUMBERED = re.compile(r"^\s*(\d{1,2}(\.\d{1,2}){0,3}\.?|[IVX]{1,4}\.|[A-H]\.)\s+([^\W\d_][^\n]*)$")
_JUNK_TITLE = re.compile(r"^(untitled|document\d*|microsoft word - .*|slide \d+)$", re.I)


def _clip(s: str, n: int = MAX_CHARS) -> str:
    s = " ".join(s.split())
    if len(s) <= n:
        return s
    cut = s[: whole_characters(s, n - 1)]
    return (cut.rsplit(" ", 1)[0] if " " in cut[n // 2 :] else cut).rstrip(" ,;:-") + "…"


def _lines(text: str) -> list[tuple[int, str]]:
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, line))
        pos += len(line) + 1
    return out


def _numbered(line: str) -> str | None:
    m = _NUMBERED.match(line)
    if (
        not m
        or len(line.strip()) > MAX_CHARS
        or line.rstrip()[-1] in ".,;:"
        or m.group(3)[0].islower()
        or _SENTENCE_INSIDE.search(m.group(3))  # "E. Golay. Marcel Jules …": prose
    ):
        return None
    return line.strip() if len(m.group(3).split()) <= 12 else None


def find_headings(
    text: str,
    kind: str = "text",
    markdown: Sequence[str] = (),
    lines: Sequence[int] | None = None,
) -> list[tuple[int, str]]:
    """(offset, heading) of every section heading in `text`, in order.

    `lines`: the lines the headings are on, where the reader knows them (Markdown's): taken
    as they are. Else, as follows.

    `markdown`: the heading texts a reader saw (Markdown's, HTML's, a Word file's; in order),
    matched to whole lines. A line that is one of them beside another of them (a table of
    contents written as plain link lines) is taken for the heading only when no later line
    is: a contents list took every heading, and all the sections after it were labelled
    with its last line. Underlined titles ("Title" over "=====") are looked for in plain text
    and PDFs only: the readers of Markdown, HTML and office documents give their own headings
    (in Markdown, the line above a closing ``` fence was taken for one)."""
    if lines is not None:
        starts = _lines(text)
        return [(starts[i][0], starts[i][1].strip()) for i in lines if starts[i][1].strip()]
    lines = _lines(text)
    wanted = [" ".join(h.split()) for h in markdown if h.strip()]
    norm = [" ".join(line.split()) for _, line in lines]
    widths = sorted(len(x) for x in norm if x)
    full = max(30.0, 0.85 * widths[int(0.9 * (len(widths) - 1))]) if widths else 30.0
    named = set(wanted)
    out: list[tuple[int, str]] = []
    for i, (pos, line) in enumerate(lines):
        stripped = line.strip()
        if not stripped or _UNDERLINE.match(line):
            continue
        nxt = lines[i + 1][1] if i + 1 < len(lines) else ""
        if wanted and norm[i] == wanted[0]:
            if _contents_line(norm, i, named):  # the heading is further on
                continue
            out.append((pos, stripped))
            wanted.pop(0)
        elif (
            kind in ("text", "pdf")
            and _UNDERLINE.match(nxt)
            and len(nxt.strip()) >= 0.6 * len(stripped)
            and not nxt.strip().startswith("```")  # (a closing code fence)
        ):
            if len(stripped) <= 2 * MAX_CHARS:
                out.append((pos, stripped))
        elif kind == "pdf" and (h := _pdf_heading(norm, i, full)):
            out.append((pos, h))
    return out


def _pdf_heading(norm: list[str], i: int, full: float) -> str | None:
    """Line `i` of a PDF's text (`norm`: its lines, spaces collapsed) as a section heading:
    numbered ("3.2 Results", "IV. Costs") unless its neighbours show it is none (a PDF audit
    found wrapped prose, list items, dates and contents entries taken for headings: a
    chunk's context said "… / 5 Conclusion 1"); "Chapter 4" with its title on the next line
    ("Chapter 4: Results"); or a section every paper has, alone on its line ("Abstract",
    "References": unnumbered, they were never found)."""
    line = norm[i]
    before, after = _previous_line(norm, i), _next_line(norm, i)
    if _NAMED_SECTION.match(line):
        chapter = _CHAPTER.match(before)
        return None if chapter and not chapter.group(1) else line.rstrip(":")  # (its title)
    if m := _CHAPTER.match(line):  # "Chapter 4", "Chapter 4: Results", "Appendix B"
        if m.group(1):
            return line if _title_like(m.group(1)) and not _wrapped(norm, i, full) else None
        if after and _title_like(after) and not _ends_sentence(after):
            return f"{line}: {after}"
        return line
    h = _numbered(line)
    if h is None or _MONTH.match(_NUMBERED.match(line).group(3)):  # "14 March 2024"
        return None
    if _wrapped(norm, i, full):  # a wrapped line of prose: "… am Ablauf meldete an\n2 Tagen"
        return None
    if _PAGE_AT_END.search(line) and (
        "…" in line or any(_PAGE_AT_END.search(x) and _NUMBERED.match(x) for x in (before, after))
    ):
        return None  # a contents list's entry: "1 Introduction 1", "2.2 Design … 5"
    if any(_siblings(line, x) for x in (before, after) if x):
        return None  # list items: "1. Growth was highest …", "2. Fees stay …"
    return h


def _title_like(title: str) -> bool:
    """Whether words after "Chapter 3" are a title: a capital first, at most 12 words, no
    sentence's end ("Chapter 3 we present the method." is prose)."""
    return (
        not title[0].islower() and len(title.split()) <= 12 and title[-1] not in ".,;:"
        and len(title) <= MAX_CHARS
    )  # fmt: skip


def _wrapped(norm: list[str], i: int, full: float) -> bool:
    """Whether the line before line `i` is prose running on into it: a full line ending
    without a sentence's end, full as the lines of its paragraph before it are (two columns'
    lines are half a page's), or as the text's long lines are (`full`) when it has none, and
    line `i` at least half as long. Not a label ("Keywords: …"), a caption ("Figure 3: …")
    or a heading of its own ("3.1 Effects of temperature on seal wear"); a paragraph's last
    line is seldom full."""
    at = next((j for j in range(i - 1, max(-1, i - 4), -1) if norm[j]), None)
    if at is None:
        return False
    before = norm[at]
    if len(before) < 25 or _ends_sentence(before):
        return False
    above = [x for x in norm[max(0, at - 3) : at] if x]
    widths = sorted(len(x) for x in above)
    width = widths[len(widths) // 2] if widths else full
    if len(before) < 0.85 * width or len(norm[i]) < 0.5 * width:
        return False  # (a heading is short: "9 Starbucks" after a line cut off mid-sentence)
    return not (_LABEL.match(before) or _numbered(before) or _CHAPTER.match(before))


_SENTENCE_INSIDE = re.compile(r"[^\W\d_]{4,}\. [A-Z]")
_LABEL = re.compile(r"^(?:[^\W\d_][\w-]*(?: [\w-]+){0,2}:|(?:figure|fig\.|table|tab\.) ?\d)", re.I)


def _previous_line(norm: list[str], i: int) -> str:
    return next((x for x in reversed(norm[max(0, i - 3) : i]) if x), "")


def _next_line(norm: list[str], i: int) -> str:
    return next((x for x in norm[i + 1 : i + 4] if x), "")


def _ends_sentence(line: str) -> bool:
    return line[-1:] in ".!?:;。！？；" or (line[-1:] in "\"')]»”’" and line[-2:-1] in ".!?")


def _siblings(line: str, other: str) -> bool:
    """Whether two numbered lines are neighbours of one list: "2." and "3.", "b)" and "c)"."""
    a, b = _NUMBERED.match(line), _NUMBERED.match(other)
    if a is None or b is None or a.group(1).endswith(".") != b.group(1).endswith("."):
        return False
    x, y = a.group(1).rstrip(".").split("."), b.group(1).rstrip(".").split(".")
    if len(x) != len(y) or x[:-1] != y[:-1]:
        return False
    p, q = x[-1], y[-1]
    if p.isdigit() and q.isdigit():
        return abs(int(p) - int(q)) == 1
    return len(p) == len(q) == 1 and abs(ord(p) - ord(q)) == 1


_NAMED_SECTION = re.compile(
    r"^(abstract|summary|executive summary|introduction|conclusions?|acknowledge?ments|"
    r"references|bibliography|appendices|(?:table of )?contents|"
    r"preface|foreword|glossary|zusammenfassung|einleitung|literatur(?:verzeichnis)?|"
    r"inhaltsverzeichnis|anhang|fazit|bibliographie|résumé|introducción|conclusiones|"
    r"referencias):?$",
    re.IGNORECASE,
)
_CHAPTER = re.compile(  # (capitalised: "part 2 of the lease" is prose)
    r"^(?:Chapter|CHAPTER|Chapitre|CHAPITRE|Kapitel|KAPITEL|Capítulo|CAPÍTULO|Capitolo|"
    r"CAPITOLO|Part|PART|Teil|TEIL|Appendix|APPENDIX|Anhang|ANHANG) "
    r"(?:\d{1,3}|[IVXLC]{1,6}|[A-H])(?:[.:]? ([^\W\d_].*))?$"
)
_MONTH = re.compile(  # month names whole, or their short forms: "7 Maintenance" is a heading
    r"(?:jan(?:uary|uar)?|feb(?:ruary|ruar)?|mar(?:ch)?|märz|apr(?:il)?|may|mai|june?|juni|"
    r"july?|juli|aug(?:ust)?|sep(?:t|tember)?|oct(?:ober)?|okt(?:ober)?|nov(?:ember)?|"
    r"dec(?:ember)?|dez(?:ember)?|janvier|février|mars|avril|juin|juillet|août|septembre|"
    r"octobre|novembre|décembre|enero|febrero|marzo|abril|mayo|junio|julio|agosto|"
    r"septiembre|octubre|noviembre|diciembre)\.?(?: \d{2,4})?$",
    re.IGNORECASE,
)
_PAGE_AT_END = re.compile(r"(?:…|\s)\s*\d{1,4}$")


def _contents_line(norm: list[str], i: int, named: set[str]) -> bool:
    """Whether line `i` is an entry of a contents list: a run of two or more lines, each one
    a heading's text, whose texts all come again after it, in order (two headings on
    adjacent lines, "Parameters" over "Example", are none: a later "Example" made the first
    one an entry, and every heading after it was lost)."""
    lo = hi = i
    while lo > 0 and norm[lo - 1] in named and norm[lo - 1]:
        lo -= 1
    while hi + 1 < len(norm) and norm[hi + 1] in named and norm[hi + 1]:
        hi += 1
    if hi == lo:
        return False
    rest = iter(norm[hi + 1 :])
    return all(entry in rest for entry in norm[lo : hi + 1])  # (in order: `in` consumes)


def usable_title(title: str) -> bool:
    """Whether a document's metadata title names it ("Untitled", "Microsoft Word - x.docx",
    "Slide 1" do not)."""
    return bool(title.strip()) and not _JUNK_TITLE.match(title.strip())


def document_title(text: str, headings: Sequence[tuple[int, str]], meta_title: str | None,
                   name: str) -> str:  # fmt: skip
    """Metadata title, else the first line (the first heading when the document opens with
    a paragraph), else the file name."""
    if meta_title and usable_title(meta_title):
        return _clip(meta_title)
    first = next((ln for ln in text.split("\n") if ln.strip() and not _UNDERLINE.match(ln)), "")
    if headings and (len(first.strip()) > MAX_CHARS or first.strip() == headings[0][1]):
        return _clip(headings[0][1])  # the document opens with it, or with a paragraph
    if first.strip():
        return _clip(first)
    return _clip(Path(name).stem or name)


def context_line(title: str, heading: str | None) -> str:
    """`title / heading`, or the title alone (no heading, or the heading is the title)."""
    heading = _clip(heading) if heading else ""
    if not heading or heading.casefold() == title.casefold():
        return title
    return f"{title} / {heading}"


def chunk_contexts(
    title: str, headings: Sequence[tuple[int, str]], spans: Sequence[tuple[int, int]], text: str
) -> list[str]:
    """The context line of each chunk span (start, end) of `text` (where the headings are).
    What the chunk's own first lines already say (the title, the heading) is left out."""
    offsets = [p for p, _ in headings]
    out = []
    for start, end in spans:
        i = bisect.bisect_right(offsets, start + (end - start) // 3) - 1
        head = " ".join(text[start : min(end, start + 2 * MAX_CHARS)].split()[:40])
        parts = [title, headings[i][1] if i >= 0 else ""]
        kept = [p for p in parts if p and _clip(p).rstrip("…") not in head]
        out.append(context_line(kept[0], kept[1] if len(kept) > 1 else None) if kept else "")
    return out


def fit_context(tokenizer: Any, context: str, room: int) -> str:
    """`context` cut to at most `room` tokens (the compressor's budget left by the chunk)."""
    if room <= 0 or not context:
        return ""
    ids = tokenizer.encode(context, add_special_tokens=False)
    if len(ids) <= room:
        return context
    # (a cut inside a character's bytes, "대한민국 지방자치단체의 �", drops that character)
    return tokenizer.decode(ids[:room]).rstrip("\ufffd").rstrip() + "…" if room > 1 else ""


def recover_contexts(
    texts: Sequence[str], name: str, source: tuple[str, str, Sequence[str], str | None] | None
) -> list[str]:
    """Context lines for stored chunk texts (`rebuild --recompress` of an older index).

    `source` = (document text, kind, markdown headings, metadata title) when the original file
    is still there unchanged: chunks are exact substrings of it. Without it, headings are
    looked for in the chunks themselves and the title is the first chunk's first line.
    """
    if source is not None:
        text, kind, markdown, meta_title = source
        headings = find_headings(text, kind, markdown)
        title = document_title(text, headings, meta_title, name)
        spans, pos = [], 0
        for t in texts:
            at = text.find(t, max(0, pos - len(t)))
            at = text.find(t) if at < 0 else at
            spans.append((at, at + len(t)) if at >= 0 else None)
            pos = max(pos, at + len(t))
        found = iter(chunk_contexts(title, headings, [s for s in spans if s], text))
        # A chunk the file's text no longer holds (read by an older clara, whose reader left
        # a running head in it): its own headings, under the document's title (a review: it
        # was placed at the text's start, and its context came out empty).
        return [
            next(found)
            if span
            else chunk_contexts(title, find_headings(t, kind), [(0, len(t))], t)[0]
            for t, span in zip(texts, spans)
        ]
    joined = "\n".join(texts)
    headings = find_headings(joined)
    title = document_title(joined, headings, None, name)
    spans, pos = [], 0
    for t in texts:
        spans.append((pos, pos + len(t)))
        pos += len(t) + 1
    return chunk_contexts(title, headings, spans, joined)
