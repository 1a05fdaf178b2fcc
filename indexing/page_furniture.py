"""A PDF's page furniture: the running headers, footers and page numbers printed on every page.

A PDF holds no mark that says which of a page's lines are its header or footer: its text
comes out with "Journal of Harbour Studies, Vol 3" and "Page 7 of 12" in among the prose, and
a sentence that crosses a page break was indexed with them in its middle (and a chunk's
context line could take a running head for a heading). They are found the way a reader finds
them, by repetition: lines near a page's top or bottom (the first and last `EDGE` lines of its
text) that recur on many pages.

- A **page number**, alone or in a line ("Page 7 of 12", "- 7 -", "vii", "Harbour Studies 117"):
  a number at the line's start or end, or after "page", that counts with the pages (the
  page's own number plus an offset the document keeps). The offset must hold on at least
  `_least_pages` pages or on three pages in a row (front matter numbered on its own), and a
  line is taken for one only if it is a bare number or its shape (its digits as "#") recurs,
  counting with the pages, on another page and on most pages it is on: a last line "in 7
  steps." on page 7 stays, and so does "Chapter 1" on the page numbered 1.
- A **running head or foot**: the same line (letter case and spacing aside) at the same edge
  on at least `_least_pages` pages, where the pages' layout is known (`page_margins`) set in
  a margin at one height. Its first copy stays, as the document's own words (a letterhead);
  the repeats go.

Where the pages' layout is known (the reader's `page_margins`: where pypdf draws each line),
only a line set in a page's margins is a candidate: apart from the text by a wide gap, or in
smaller type, and never in larger type. A report's "Test case 3" heading each page, or an
exam's "Question 3" set large over its question, recurs as running heads do but is no
furniture (a review and a re-audit found them dropped).

Short documents are left as they are: one page, and two pages whose layout is not known
(two pages of text alone cannot tell a running head from a coincidence; set in both pages'
margins at one height, it is one).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

#: How many lines at each end of a page's text may be furniture
EDGE = 3
#: The longest line taken for furniture (a header is a line, not a paragraph)
LONGEST = 100

_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")
# A number where page numbers go: at the line's start or end, or after "page"/"p."/"seite"...
_NUMBER_AT = re.compile(
    r"^\W*(\d{1,5})\b|\b(\d{1,5})\W*$|\b(?:page|p\.|pg\.?|seite|s\.|página|pagina|pagine)\s*(\d{1,5})\b"
    r"|\b(\d{1,5}) ?(?:/|of|von|de|di) ?\d{1,5}\W*$",  # ("ICM 2023 3 / 7": a slide's footline)
    re.IGNORECASE,
)
# A line that is only a page number: "7", "- 7 -", "[7]", "Page 7", "Page 7 of 12", "7/12", "vii"
_BARE = re.compile(
    r"^\W*(?:(?:page|p\.|pg\.?|seite|s\.|página|pagina|pagine)\s*)?"
    r"(?:\d{1,5}|[ivxlcdm]{1,8})(?:\s*(?:/|of|von|de|di)\s*\d{1,5})?\W*$",
    re.IGNORECASE,
)
_ROMAN = re.compile(r"^\W*([ivxlcdm]{1,8})\W*$", re.IGNORECASE)
_ROMAN_VALUES = {"i": 1, "v": 5, "x": 10, "l": 50, "c": 100, "d": 500, "m": 1000}


def strip_furniture(
    pages: Sequence[tuple[int, str]], margins: Sequence[dict[str, float] | None] | None = None
) -> list[str]:
    """Each page's text without its running heads, foots and page numbers (see the module's
    docstring); `pages`: (page number, text) in order. `margins`: each page's `page_margins`
    (None for a page whose layout is not known): only a line set in a page's margin can be
    furniture. Texts come back in the same order, their blank lines collapsed where a line
    went."""
    lines = [text.split("\n") for _, text in pages]
    edges = [_edge_lines(page_lines) for page_lines in lines]
    if margins is not None:
        edges = [
            e if m is None else [(edge, i) for edge, i in e if squash(page_lines[i]) in m]
            for e, m, page_lines in zip(edges, margins, lines)
        ]
    filled = sum(1 for _, text in pages if text.strip())
    least = _least_pages(filled)
    if least is None and filled == 2 and margins is not None and None not in margins:
        least = 2  # (two pages whose margins are known: a line in both, at one height)
    if least is None:
        return [text for _, text in pages]
    drop: list[set[int]] = [set() for _ in pages]
    _page_numbers(pages, lines, edges, least, drop)
    _running_lines(lines, edges, least, drop, margins)
    out = []
    for (_, text), page_lines, gone in zip(pages, lines, drop):
        if not gone:
            out.append(text)
            continue
        kept = "\n".join(line for i, line in enumerate(page_lines) if i not in gone)
        out.append(re.sub(r"\n{3,}", "\n\n", kept).strip())
    return out


@dataclass
class Level:
    """A line of a page as drawn: its baseline's height, characters by type size, its text."""

    y: float
    sizes: Counter = field(default_factory=Counter)
    text: str = ""

    @property
    def size(self) -> float:
        return self.sizes.most_common(1)[0][0]


def page_levels(runs: Sequence[tuple[float, float, str]]) -> list[Level]:
    """A page's lines as drawn, top first, from its text's pieces (baseline height, type size,
    text) as pypdf's visitor gives them; pieces on one baseline make one line (two columns'
    lines at one height too)."""
    levels: list[Level] = []
    for y, size, text in runs:
        if not text.strip():
            continue
        level = next((lv for lv in levels if abs(lv.y - y) <= max(1.0, 0.3 * size)), None)
        if level is None:
            level = Level(y)
            levels.append(level)
        level.sizes[round(size, 1)] += len(text.strip())
        level.text += text
    return sorted(levels, key=lambda lv: -lv.y)


def body_size(pages: Sequence[Sequence[Level]]) -> float:
    """The type size most of a document's text is set in (each page's first and last lines
    aside, where its furniture is)."""
    sizes: Counter[float] = Counter()
    for levels in pages:
        for lv in levels[1:-1] or levels:
            sizes.update(lv.sizes)
    return sizes.most_common(1)[0][0] if sizes else 0.0


def page_margins(levels: Sequence[Level], body: float) -> dict[str, float]:
    """The lines a page sets in its margins, `squash`ed, with their heights on the page
    (`levels`: `page_levels`; `body`: `body_size`); none set larger than the text. A line is in the top (or bottom) margin when a gap of at least 1.8 times the
    page's usual line spacing parts it from the text below (above) it (a running head, a page
    number), or when it is among the page's two top (bottom) lines and set smaller than the
    document's text. A review found the text alone could not tell a report's "Test case 3"
    heading each page, or its "Result: PASS" closing each, from a running head: they recur as
    heads do, but sit in the text's own lines."""
    if not levels:
        return {}
    margin = {id(lv) for lv in levels[:2] + levels[-2:] if lv.size < 0.95 * body}
    gaps = [a.y - b.y for a, b in zip(levels, levels[1:])]
    if gaps:
        inner = sorted(gaps[1:-1])  # the usual spacing, of the lines between (on a slide of
        spacing = inner[len(inner) // 2] if len(inner) >= 3 else min(gaps)  # 3: the least)
        top, bottom = range(min(3, len(gaps))), range(len(gaps) - 1, max(-1, len(gaps) - 4), -1)
        for ends in (top, bottom):
            widest = max(ends, key=lambda k: gaps[k])  # what lies beyond it is margin
            if gaps[widest] >= 1.8 * spacing:
                outer = levels[: widest + 1] if ends is top else levels[widest + 1 :]
                margin.update(id(lv) for lv in outer)
    return {
        squash(lv.text): lv.y
        for lv in levels
        if id(lv) in margin and lv.size <= 1.05 * body  # (a record's "Question 3" set large
    }  # over its text, on every page, is a heading: a re-audit)


def squash(line: str) -> str:
    """A line's letters and digits alone, lower case, accents and ligatures off: the same for
    the text as drawn and as cleaned ("M¨uller" and "Müller")."""
    decomposed = unicodedata.normalize("NFKD", line.lower())
    return "".join(c for c in decomposed if c.isalnum())


def _least_pages(n_pages: int) -> int | None:
    """On how many pages a line must recur to be furniture: 3, and 40% of the pages with
    text (a running head alternating between odd and even pages is on half of them; a slide
    deck's title "Results" on 3 of 10 slides is not furniture). None: too few pages."""
    if n_pages < 3:
        return None
    return max(3, math.ceil(0.4 * n_pages))


def _edge_lines(page_lines: list[str]) -> list[tuple[str, int]]:
    """(edge, index) of the page's first and last `EDGE` non-blank lines, edge "top" or
    "bottom"; a line at both (a short page) is counted once, at the top."""
    filled = [i for i, line in enumerate(page_lines) if line.strip()]
    top = filled[:EDGE]
    bottom = [i for i in filled[-EDGE:] if i not in top]
    return [("top", i) for i in top] + [("bottom", i) for i in bottom]


def _shape(line: str) -> str:
    return _DIGITS.sub("#", _SPACES.sub(" ", line.strip().lower()))


def _numbers(line: str) -> list[int]:
    """The numbers standing where a page number would in `line` (a lone roman numeral too)."""
    roman = _ROMAN.match(line)
    if roman:
        value = _roman_value(roman.group(1))
        return [value] if value else []
    return [int(n) for m in _NUMBER_AT.finditer(line) for n in m.groups() if n]


def _roman_value(s: str) -> int | None:
    values = [_ROMAN_VALUES[c] for c in s.lower()]
    total = sum(-v if v < w else v for v, w in zip(values, values[1:] + [0]))
    return total if total > 0 and _to_roman(total) == s.lower() else None  # "iiii": not one


def _to_roman(n: int) -> str:
    out = ""
    for value, letters in (
        (1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"), (90, "xc"),
        (50, "l"), (40, "xl"), (10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i"),
    ):  # fmt: skip
        while n >= value:
            out, n = out + letters, n - value
    return out


def _page_numbers(
    pages: Sequence[tuple[int, str]],
    lines: list[list[str]],
    edges: list[list[tuple[str, int]]],
    least: int,
    drop: list[set[int]],
) -> None:
    """Mark the edge lines that print their page's number (see the module's docstring)."""
    candidates = []  # (page index, line index, shape, offsets the line's numbers give)
    for p, ((number, _), page_edges) in enumerate(zip(pages, edges)):
        for _, i in page_edges:
            line = lines[p][i].strip()
            if len(line) > LONGEST:
                continue
            offsets = {n - number for n in _numbers(line)}
            if offsets:
                candidates.append((p, i, _shape(line), offsets))
    support: dict[int, set[int]] = defaultdict(set)
    for p, _, _, offsets in candidates:
        for offset in offsets:
            support[offset].add(p)
    offsets_held = {offset for offset, on in support.items() if len(on) >= least or _runs_three(on)}
    if not offsets_held:
        return
    shape_pages: dict[str, set[int]] = defaultdict(set)  # where each shape is
    shape_counts: dict[str, set[int]] = defaultdict(set)  # ... counting with the pages
    for p, _, shape, offsets in candidates:
        shape_pages[shape].add(p)
        if offsets & offsets_held:
            shape_counts[shape].add(p)
    for p, i, shape, offsets in candidates:
        if offsets & offsets_held and (
            _BARE.match(lines[p][i]) or _counts(shape, shape_pages, shape_counts)
        ):
            drop[p].add(i)


def _counts(shape: str, pages: dict[str, set[int]], counting: dict[str, set[int]]) -> bool:
    """Whether a line of this shape numbers its pages: on two pages or more, and on three in
    four of the pages it is on ("Chapter 1" on page 6 and "Chapter 2" on page 7 of a book
    whose page 6 is its first: two of four chapter headings count with the pages, by chance)."""
    return len(counting[shape]) >= 2 and len(counting[shape]) >= 0.75 * len(pages[shape])


def _runs_three(pages: set[int]) -> bool:
    """Whether `pages` holds three in a row: numbers counting with three pages running are a
    numbering of their own (a book's front matter in roman numerals before its arabic ones)."""
    return any(p + 1 in pages and p + 2 in pages for p in pages)


def _running_lines(
    lines: list[list[str]],
    edges: list[list[tuple[str, int]]],
    least: int,
    drop: list[set[int]],
    margins: Sequence[dict[str, float] | None] | None,
) -> None:
    """Mark the repeats of a line that recurs at the same edge of `least` pages or more (its
    first copy stays, the document's own words: a letterhead, a table's column names heading
    each page). Where the pages' layout is known, only at one height on the page (a running
    foot stays put; a report's "Result: PASS" after steps of any length moves)."""
    seen: dict[tuple[str, str, float], list[tuple[int, int]]] = defaultdict(list)
    for p, page_edges in enumerate(edges):
        for edge, i in page_edges:
            if i in drop[p]:
                continue
            line = _SPACES.sub(" ", lines[p][i].strip().lower())
            known = margins[p] if margins is not None else None
            height = round(known.get(squash(lines[p][i]), 0.0) / 3) if known else 0.0
            if len(line) <= LONGEST:
                seen[(edge, line, height)].append((p, i))
    for places in seen.values():
        if len(Counter(p for p, _ in places)) >= least:
            for p, i in places[1:]:
                drop[p].add(i)
