"""Split a document into chunks of at most `max_tokens` base-model tokens.

Chunks are exact substrings of the document's text (pages joined by `PAGE_SEPARATOR`), cut
only where no character or grapheme is split, preferably at a paragraph or sentence end in
the last ~20% of the budget. Consecutive chunks share about `overlap` tokens. Every chunk
re-tokenises to at most `max_tokens` tokens: `n_tokens` is that count.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from clara.errors import ChunkingError
from clara.text import splits_character
from indexing.context import chunk_contexts, document_title, find_headings
from indexing.meta import Contextual
from indexing.readers import Document, Page, code_blocks

PAGE_SEPARATOR = "\n\n"
#: kinds whose pages are slides: no chunk spans two (a fact on slide 7 is cited "slide 7",
#: not "slides 5-8", and its memory holds that slide only)
SLIDE_KINDS = frozenset({"pptx", "odp"})
#: kinds whose lines are table rows: a chunk starts at a row's start, with its column names
ROW_KINDS = frozenset({"xlsx", "ods"})
#: kinds whose prose runs on from one page to the next (`join_pages`)
FLOWING_KINDS = frozenset({"pdf"})
PREFER_BOUNDARY_WITHIN = 0.2  # look for a sentence/paragraph end in the last 20% of a chunk
PREFER_ROW_END_WITHIN = 0.5  # and for a table row's end in the last half

_SENTENCE_END = ".!?;:…؟۔।॥"  # (Arabic and Urdu, Devanagari too)
_CJK_SENTENCE_END = "。！？；"
_CLOSERS = "\"')]}»”’」』）"


@dataclass(frozen=True)
class Chunk(Contextual):
    text: str
    page_start: int
    page_end: int
    n_tokens: int  # len(tokenizer.encode(text, add_special_tokens=False))
    ordinal: int  # position in the document, from 0
    context: str = ""  # "title / section heading" (indexing.context), read before the text


def chunk_document(
    doc: Document,
    tokenizer: Any,
    max_tokens: int = 256,
    overlap: int = 32,
    name: str | None = None,
) -> list[Chunk]:
    """Chunk `doc` by the tokens of `tokenizer` (mlx-lm TokenizerWrapper or HF tokenizer).
    Each chunk's `context` names the document (`name`: shown file name, for the title's last
    resort) and its section."""
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ChunkingError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < max_tokens:
        raise ChunkingError(
            f"overlap must be between 0 and max_tokens - 1 ({max_tokens - 1}), got {overlap!r}"
        )
    text, starts, numbers = document_text(doc)
    if not text.strip():
        return []

    def count(s: str) -> int:
        return len(tokenizer.encode(s, add_special_tokens=False))

    def spans_of(part: str, at: int) -> list[tuple[int, int, int]]:
        offsets = _token_offsets(tokenizer, part)
        splitter = (
            _TokenSplitter(part, offsets, count)
            if offsets is not None
            else _CharSplitter(part, count)
        )
        splitter.fences = code_blocks(part) if doc.kind == "markdown" else ()
        splitter.rows = doc.kind in ROW_KINDS
        splitter.flowing = doc.kind in FLOWING_KINDS and not doc.slides
        return [(at + cs, at + ce, n) for cs, ce, n in splitter.spans(max_tokens, overlap)]

    if doc.kind in SLIDE_KINDS or doc.slides:  # each slide apart: cited by its own slide
        ends = [s - len(PAGE_SEPARATOR) for s in starts[1:]] + [len(text)]
        spans = [span for a, b in zip(starts, ends) for span in spans_of(text[a:b], a)]
    elif doc.kind in ROW_KINDS and len(sheets := _sheet_starts(text, doc.headings)) > 1:
        # each sheet apart: a chunk's rows are one sheet's (a chunk ending one sheet and
        # starting the next read the second's rows under the first's name, in `section` too)
        ends = [s - len(PAGE_SEPARATOR) for s in sheets[1:]] + [len(text)]
        spans = [span for a, b in zip(sheets, ends) for span in spans_of(text[a:b], a)]
    else:
        spans = spans_of(text, 0)

    headings = find_headings(
        text, doc.kind, doc.headings, doc.heading_lines if len(doc.pages) == 1 else None
    )
    title = document_title(text, headings, doc.title, name or doc.path.name)
    contexts = chunk_contexts(title, headings, [(cs, ce) for cs, ce, _ in spans], text)
    chunks = []
    for (cs, ce, n), context in zip(spans, contexts):
        first = numbers[bisect.bisect_right(starts, cs) - 1]
        last = numbers[bisect.bisect_right(starts, ce - 1) - 1]
        chunks.append(Chunk(text[cs:ce], first, last, n, len(chunks), context))
    return chunks


def _sheet_starts(text: str, names: list[str]) -> list[int]:
    """Where each sheet of a workbook's text starts: its block is its name on a line, then its
    rows, after a blank line (`indexing.slides_sheets`; `names`: the sheets with rows, in
    order). [0] when a name is not found where it should be: the workbook as one."""
    if not names or not text.startswith(names[0] + "\n"):
        return [0]
    starts, at = [0], 0
    for name in names[1:]:
        found = text.find(f"{PAGE_SEPARATOR}{name}\n", at)
        if found < 0:
            return [0]
        at = found + len(PAGE_SEPARATOR)
        starts.append(at)
    return starts


def join_pages(pages: Sequence[Page], flowing: bool = False) -> tuple[str, list[int], list[int]]:
    """Pages with text joined by PAGE_SEPARATOR -> (text, start offset of each, page numbers).
    `flowing` (a PDF's pages, whose prose runs on over the break): a page that ends mid-
    sentence and a next one that starts with a small letter are joined by a line break, as
    a wrapped line is, not by a paragraph's blank line, where chunks were cut first."""
    parts, starts, numbers, pos = [], [], [], 0
    for page in pages:
        if not page.text.strip():
            continue
        if parts:
            sep = _page_break(parts[-1], page.text) if flowing else PAGE_SEPARATOR
            parts.append(sep)
            pos += len(sep)
        parts.append(page.text)
        starts.append(pos)
        numbers.append(page.number)
        pos += len(page.text)
    return "".join(parts), starts, numbers


def document_text(doc: Document) -> tuple[str, list[int], list[int]]:
    """`join_pages` of a document's pages as its kind reads (a PDF's flow on)."""
    return join_pages(doc.pages, flowing=doc.kind in FLOWING_KINDS and not doc.slides)


def _page_break(before: str, after: str) -> str:
    last = before.rstrip()[-1:]
    if last and last not in _SENTENCE_END + _CJK_SENTENCE_END + _CLOSERS and after[:1].islower():
        return "\n"
    return PAGE_SEPARATOR


def _token_offsets(tokenizer: Any, text: str) -> list[tuple[int, int]] | None:
    """Character offsets of every token of `text`, from the HF fast (Rust) tokenizer if any."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    backend = tokenizer
    for _ in range(3):  # TokenizerWrapper -> PreTrainedTokenizerFast -> tokenizers.Tokenizer
        if isinstance(backend, Tokenizer):
            break
        inner = getattr(backend, "backend_tokenizer", None)
        backend = inner if isinstance(inner, Tokenizer) else getattr(backend, "_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        return None
    if backend.truncation or backend.padding:  # never cut or pad a whole document
        backend = Tokenizer.from_str(backend.to_str())
        backend.no_truncation()
        backend.no_padding()
    offsets = backend.encode(text, add_special_tokens=False).offsets
    if any(b[0] < a[0] for a, b in zip(offsets, offsets[1:])):
        return None  # not monotonic: cannot map token positions to text positions
    return offsets


def _rank(text: str, pos: int, flowing: bool = False, code: bool = False) -> int:
    """How good a cut before text[pos] is: 4 paragraph, 3 sentence or line end, 1 word, 0
    none. In `flowing` text (a PDF's, wrapped at every line) a line's end ranks 2, below a
    sentence's (unless a list item or heading starts the next line): the latest wrap won over
    a sentence end a few words earlier, so chunks ended mid-sentence. Elsewhere a line's end
    is as good as a sentence's, and better than a ". " inside a table row or a line of `code`
    (a review found rows and statements cut there). (A Markdown code block that fits in a
    chunk is cut before, not inside: `whole_code`; one too big for a chunk is cut at its
    blank lines, else its line ends.)"""
    if pos <= 0 or pos >= len(text):
        return 4
    i = j = pos  # the whitespace run around pos (looking at most 64 characters each way)
    while i > max(0, pos - 64) and text[i - 1].isspace():
        i -= 1
    while j < min(len(text), pos + 64) and text[j].isspace():
        j += 1
    gap, left = text[i:j], text[max(0, i - 2) : i]
    if gap.count("\n") >= 2:
        return 4
    last = left[-1:]
    if "\n" in gap and not flowing:
        return 3
    if last and (
        last in _CJK_SENTENCE_END
        or (gap and (last in _SENTENCE_END or (last in _CLOSERS and left[0] in _SENTENCE_END)))
    ):
        if flowing or "\n" in gap:
            return 3
        line = text.rfind("\n", 0, i) + 1  # (a table row or code: its line's end is better)
        return 2 if code or text.startswith(("|", "    ", "\t"), line) else 3
    if "\n" in gap:
        return 3 if not flowing or _ITEM_OR_HEADING.match(text, j) else 2
    return 1 if gap else 0


#: A line that starts a list item or a heading ("- ", "* ", "• ", "1. ", "2) ", "#")
_ITEM_OR_HEADING = re.compile(r"[-*•·▪–]\s|\d{1,3}[.)]\s|#")


def _line_start(text: str, pos: int) -> bool:
    """Whether a cut before text[pos] is between lines: the whitespace around it holds a line
    break (a tokenizer may put the break in the next line's first token)."""
    i = j = pos
    while i > max(0, pos - 64) and text[i - 1].isspace():
        i -= 1
    while j < min(len(text), pos + 64) and text[j].isspace():
        j += 1
    return pos <= 0 or pos >= len(text) or "\n" in text[i:j]


def _start(
    text: str, starts: list[int], pos: Callable[[int], int], rows: bool, default: int
) -> int:
    """The next chunk's start among `starts` (the overlap's candidates, earliest first): the
    first at a line's start for table rows (a row cut in two lost its first columns' names;
    `default`, the end of the chunk before, when none is), else the first at a word's start
    (chunks do not begin mid-word), else the first."""
    if rows:  # (no row starts in the overlap: none, rather than the tail of a row)
        return next((i for i in starts if _line_start(text, pos(i))), default)
    for i in starts:
        if _rank(text, pos(i)) >= 1:
            return i
    return starts[0] if starts else default


def _trim(text: str, cs: int, ce: int) -> tuple[int, int]:
    while cs < ce and text[cs].isspace():
        cs += 1
    while ce > cs and text[ce - 1].isspace():
        ce -= 1
    return cs, ce


class _Splitter:
    """Shared loop: pick an end, verify by re-tokenising, step back by `overlap`."""

    text: str
    count: Callable[[str], int]
    fences: Sequence[tuple[int, int]] = ()  # Markdown code blocks: (start, end) offsets
    overlap: int = 0
    rows: bool = False  # lines are table rows: the overlap starts at a line's start if it can
    flowing: bool = False  # prose wrapped at every line (a PDF's): `_rank`

    def spans(self, max_tokens: int, overlap: int) -> list[tuple[int, int, int]]:
        self.overlap = overlap
        out: list[tuple[int, int, int]] = []
        a = self.first()
        while a is not None:
            budget = max_tokens
            while True:
                b = self.end_for(a, budget, max_tokens)
                cs, ce = _trim(self.text, self.pos(a), self.end_pos(a, b))
                n = self.count(self.text[cs:ce]) if ce > cs else 0
                if n <= max_tokens:
                    break
                budget -= n - max_tokens  # re-tokenising the cut text gave more tokens
                if budget < 1:
                    raise ChunkingError(
                        f"cannot fit the text at character {cs} in {max_tokens} tokens"
                    )
            if ce > cs:
                out.append((cs, ce, n))
            a = self.next_start(a, b, overlap)
        return out

    @property
    def within(self) -> float:
        """The end of the budget a chunk's end is looked for in, best cut first."""
        return PREFER_ROW_END_WITHIN if self.rows else PREFER_BOUNDARY_WITHIN

    def rank(self, pos: int) -> int:
        """`_rank` of a cut before text[pos]; for table rows a line's end ranks as a
        paragraph's (a row's "Region: North" is a sentence end too)."""
        k = bisect.bisect_right(self.fences, (pos, len(self.text) + 1)) - 1
        code = k >= 0 and self.fences[k][0] < pos < self.fences[k][1]
        r = _rank(self.text, pos, self.flowing, code)
        return 4 if self.rows and r in (2, 3) and _line_start(self.text, pos) else r

    def whole_code(self, a: int, b: int, max_tokens: int) -> int:
        """`b`, the end chosen for the chunk starting at `a`, or, when it falls inside a code
        block that the next chunk can hold whole, the start of that block: a cut at one of
        its blank lines split functions apart, too late to be looked back from. Not when the
        chunk would keep little before it (its overlap would bring it back here again)."""
        p = self.pos(b)
        k = bisect.bisect_right(self.fences, (p, len(self.text) + 1)) - 1
        if k < 0 or not self.fences[k][0] < p < self.fences[k][1]:
            return b
        start, end = self.fences[k]
        f = self.index_at(start)
        if f is None or f <= a or f >= b:
            return b
        if self.count(self.text[self.pos(a) : start]) <= max(self.overlap, max_tokens // 4):
            return b
        if self.count(self.text[start:end]) > max_tokens - self.overlap:
            return b  # (it is cut whatever: where the tokens run out)
        return f


class _TokenSplitter(_Splitter):
    """Cuts at token boundaries, using character offsets from the fast tokenizer."""

    def __init__(self, text: str, offsets: list[tuple[int, int]], count) -> None:
        self.text, self.offsets, self.count = text, offsets, count
        n = len(offsets)
        ends = [e for _, e in offsets]
        running = 0
        self.max_end = []  # max end offset of tokens [0, i]: cuts must not fall inside one
        for e in ends:
            running = max(running, e)
            self.max_end.append(running)
        # clean[i]: a chunk may start or end before token i (no character is split there).
        self.clean = [True] + [self.max_end[i - 1] <= offsets[i][0] for i in range(1, n)] + [True]
        self.starts = [s for s, _ in offsets]
        self.n = n

    def pos(self, i: int) -> int:
        return self.offsets[i][0] if i < self.n else len(self.text)

    def end_pos(self, a: int, b: int) -> int:
        return self.max_end[b - 1] if b > a else self.pos(a)

    def first(self) -> int | None:
        return 0 if self.n else None

    def index_at(self, char: int) -> int | None:
        """The token starting at character `char`, if a chunk may start there."""
        i = bisect.bisect_left(self.starts, char)
        return i if i < self.n and self.starts[i] == char and self._ok(i, True) else None

    def _ok(self, i: int, strict: bool) -> bool:
        return self.clean[i] and not (strict and splits_character(self.text, self.pos(i)))

    def end_for(self, a: int, budget: int, max_tokens: int) -> int:
        limit = min(a + budget, self.n)
        if limit == self.n:
            return limit
        lo = max(a + 1, a + budget - int(max_tokens * self.within))
        best, best_rank = None, -1
        for i in range(limit, lo - 1, -1):
            if self._ok(i, True) and (r := self.rank(self.pos(i))) > best_rank:
                best, best_rank = i, r
        if best is not None:
            return self.whole_code(a, best, max_tokens)
        for strict in (True, False):  # no clean cut near the limit: take the latest one
            for i in range(lo - 1, a, -1):
                if self._ok(i, strict):
                    return i
        raise ChunkingError(f"cannot cut the text at token {a} within {max_tokens} tokens")

    def next_start(self, a: int, b: int, overlap: int) -> int | None:
        if b >= self.n:
            return None
        lo = max(a + 1, b - overlap)
        end = self.max_end[b - 1]
        starts = [
            i for i in range(lo, b) if self._ok(i, True) and self.text[self.pos(i) : end].strip()
        ]
        return _start(self.text, starts, self.pos, self.rows, b)


class _CharSplitter(_Splitter):
    """Fallback for tokenizers without offsets: binary search on character positions."""

    def __init__(self, text: str, count) -> None:
        self.text, self.count = text, count
        self.n = len(text)

    def pos(self, i: int) -> int:
        return i

    def end_pos(self, a: int, b: int) -> int:
        return b

    def first(self) -> int | None:
        a, _ = _trim(self.text, 0, self.n)
        return a if a < self.n else None

    def index_at(self, char: int) -> int | None:
        return char

    def _fits(self, a: int, b: int, budget: int) -> bool:
        cs, ce = _trim(self.text, a, b)
        return self.count(self.text[cs:ce]) <= budget

    def end_for(self, a: int, budget: int, max_tokens: int) -> int:
        lo, hi = a + 1, min(self.n, a + 4 * budget)  # lo fits (or is a + 1), hi may not
        while self._fits(a, hi, budget):  # gallop: never tokenise the whole rest
            if hi == self.n:
                return hi
            lo, hi = hi, min(self.n, a + 2 * (hi - a))
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self._fits(a, mid, budget) else (lo, mid)
        window = max(1, int((lo - a) * self.within))
        best, best_rank = None, 0
        for i in range(lo, lo - window, -1):
            rank = self.rank(i)
            if i > a and not splits_character(self.text, i) and rank > best_rank:
                best, best_rank = i, rank
        if best is not None:
            return self.whole_code(a, best, max_tokens)
        for i in range(lo, a, -1):
            if not splits_character(self.text, i):
                return i
        return lo

    def next_start(self, a: int, b: int, overlap: int) -> int | None:
        rest, _ = _trim(self.text, b, self.n)
        if rest >= self.n:
            return None
        if overlap == 0:
            return rest
        lo, hi = a + 1, b  # smallest start whose tail up to b fits in `overlap` tokens
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self._fits(mid, b, overlap) else (mid + 1, hi)
        text = self.text
        starts = [
            i for i in range(lo, b) if not text[i].isspace() and not splits_character(text, i)
        ]
        return _start(text, starts, lambda i: i, self.rows, rest)
