"""The lexical side of a collection: which terms SQLite FTS5 indexes, and safe MATCH queries.

FTS5's own tokenizers split `--set-upstream-to`, `gc.aggressiveDepth` and `v1.8.0` into pieces
(or, told to keep `.` and `-`, glue a sentence's last word to its full stop). So terms are made
here, in Python, the same way for chunks and for queries: every run of letters, digits and
`. - _ /` becomes its lower-cased whole (`set-upstream-to`, `gc.aggressivedepth`, `2.13`,
`src/clara/model.py`) plus its parts (`set`, `upstream`, `gc`, `aggressive`, `depth`, ...),
with leading/trailing punctuation dropped. Chinese, Japanese and Korean, written without
spaces between words, become overlapping character pairs (`日本語` -> `日本`, `本語`), the usual
way to index them without a dictionary. The FTS5 table keeps exactly those space-separated
terms (its tokenizer treats `. - _ /` as word characters) and stems them (porter), in two
columns: the title (document name + context line, weighted TITLE_WEIGHT) and the text.

Before that, text is folded the same way on both sides: Unicode NFKC (decomposed macOS text
and composed text match, as do full-width `２０２４` and `2024`, half-width kana, ligatures),
case-folded (`Straße` and `strasse`), with the optional vowel marks of Arabic and Hebrew
removed; other combining marks (Devanagari's vowel signs) stay inside their word.

A query's terms are OR-ed, each one quoted, minus common English words; quotes, `-`, `*`, `:`
or parentheses in the question are plain characters to it and never FTS5 syntax. A long
question keeps its rarest terms (a Chinese question's key words are often its last). A common
word that names a keyword is kept: quoted or in backticks (`` `with` ``), or as a phrase with
the noun after it ("the with statement" searches `"with statement"`, "the in operator"
`"in operator"`).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import unicodedata

#: The FTS5 tokenizer of `chunks_fts`; a change here needs `LEXICAL_VERSION` bumped.
#: (Combining marks are word characters: FTS5's default cut "हिन्दी" into three letters.)
TOKENIZER = "porter unicode61 remove_diacritics 2 categories 'L* N* Co M*' tokenchars '-._/'"
#: Stored in the collection's state; a collection with another version rebuilds its table.
LEXICAL_VERSION = 5  # 4: CJK character pairs; 5: NFKC, case folding, marks inside words
#: BM25 weight of the title column (document name + context line) against the text's 1: a
#: question naming its document ranks that document's chunks first. Chosen on the pydoc set
#: of bench/bench_retrieval.py (lexical R@1 80.0 -> 84.3 with 3; 85.7 with 5 or more).
TITLE_WEIGHT = 3.0
#: A question searches with at most this many terms, its rarest (of its first
#: MAX_QUESTION_TERMS, which bounds the work of counting them).
MAX_QUERY_TERMS = 48
MAX_QUESTION_TERMS = 512
#: A query scores every chunk holding any of its terms; frequent terms (low IDF, long posting
#: lists) are dropped, rarest first kept, once their chunks add up past this many (at least
#: MIN_TERMS stay). Collections under ~10k chunks never reach it.
POSTINGS_BUDGET = 20_000
MIN_TERMS = 2


def _marks() -> str:
    """A character class of the combining marks (Mn, Mc, Me) of the Basic Multilingual Plane,
    as ranges: `\\w` leaves them out, which split "château" (decomposed) and "हिन्दी"."""
    ranges: list[list[int]] = []
    for c in range(0x300, 0x10000):
        if unicodedata.category(chr(c))[0] == "M":
            if ranges and ranges[-1][1] == c - 1:
                ranges[-1][1] = c
            else:
                ranges.append([c, c])
    return "".join(f"\\u{a:04x}-\\u{b:04x}" if a != b else f"\\u{a:04x}" for a, b in ranges)


_RUN = re.compile(rf"[\w./{_marks()}-]+")
#: Arabic harakat and tatweel, Hebrew niqqud and cantillation: optional in writing, so a
#: voweled word and its plain spelling are one term.
_OPTIONAL_MARKS: dict[int, int | str | None] = dict.fromkeys(
    [*range(0x591, 0x5BE), 0x5BF, 0x5C1, 0x5C2, 0x5C4, 0x5C5, 0x5C7, *range(0x610, 0x61B)]
    + [*range(0x64B, 0x660), 0x640, 0x670, *range(0x6D6, 0x6DD), *range(0x6DF, 0x6E5)]
    + [0x6E7, 0x6E8, *range(0x6EA, 0x6EE)]
)
#: Arabic letters written in more than one way (as Arabic search engines fold them): alef
#: with hamza or madda as alef, taa marbuta as haa, alef maqsura as yaa, Persian kaf and yeh
#: as Arabic ones.
_OPTIONAL_MARKS.update(
    {0x623: "\u0627", 0x625: "\u0627", 0x622: "\u0627", 0x671: "\u0627", 0x629: "\u0647"}
    | {0x649: "\u064a", 0x6CC: "\u064a", 0x6A9: "\u0643"}
)
_SEP = re.compile(r"[./_-]+")
_CAMEL = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_CAMEL_CHANGE = re.compile(r"[a-z][A-Z]")
_EDGE = "./_-"
#: Han (with extensions A to H and compatibility ideographs), kana, Hangul syllables and
#: jamo (NFKC makes compatibility jamo, "ㅋㅋ", conjoining ones), 々 and 〇; and the scripts
#: of South-East Asia, which do not space their words either.
_CJK = re.compile(
    r"[\u3005\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\u3130-\u318f"
    r"\uac00-\ud7af\u1100-\u11ff\U00020000-\U0003134f"
    r"\u0e00-\u0eff\u1780-\u17ff\u1000-\u109f]+"  # Thai, Lao, Khmer, Myanmar: no spaces either
)

# Question words and glue that match nearly every chunk: they only slow the query down.
STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be been being before below
    between both but by can could did do does doing done down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just me
    more most my no nor not now of off on once only or other our ours out over own same she
    should so some such than that the their theirs them then there these they this those
    through to too under until up very was we were what when where which while who whom why
    will with would you your yours""".split()
)
#: A common word just before one of these names a keyword ("the if statement", "the is
#: operator", "the else clause"): the two are searched as a phrase. ("loop" and "keyword" are
#: left out: "a for or while loop" and "with keyword arguments" are everywhere in Python's
#: documentation, and searching them took the wrong pages first.)
SYNTAX_NOUNS = frozenset("statement statements clause clauses operator operators".split())
#: A word in backticks or quotes: what the question asks about, common word or not.
_QUOTED = re.compile(r"""[`'"\u2018\u201c]([^\W\d_]+)[`'"\u2019\u201d]""")


def fold(text: str) -> str:
    """`text` as terms are made from it: NFKC, without Arabic and Hebrew optional marks."""
    return unicodedata.normalize("NFKC", text).translate(_OPTIONAL_MARKS)


def terms(text: str) -> list[str]:
    """Every term of `text`, in order, compounds and their parts (case-folded, may repeat)."""
    return _terms(fold(text))


def _terms(text: str) -> list[str]:
    out: list[str] = []
    for m in _RUN.finditer(text):
        run = m.group().strip(_EDGE)
        if not run:
            continue
        if _CJK.search(run):
            out.extend(_cjk_terms(run))
            continue
        parts = [p for p in _SEP.split(run) if p]
        lower = run.casefold()
        out.append(lower)
        pieces = []
        for part in parts:
            pieces.append(part.casefold())
            if _CAMEL_CHANGE.search(part):  # aggressiveDepth -> aggressive, depth
                pieces.extend(c.casefold() for c in _CAMEL.findall(part))
        out.extend(p for p in pieces if p != lower)
    return out


def _cjk_terms(run: str) -> list[str]:
    """A run with CJK characters: each CJK stretch as its character pairs (a lone character
    as itself), the rest as usual."""
    out: list[str] = []
    at = 0
    for m in _CJK.finditer(run):
        out.extend(_terms(run[at : m.start()]))
        cjk = m.group()
        out.extend([cjk] if len(cjk) == 1 else [cjk[i : i + 2] for i in range(len(cjk) - 1)])
        at = m.end()
    out.extend(_terms(run[at:]))
    return out


def index_text(text: str) -> str:
    """What the FTS5 table stores for a chunk: its terms, space-separated."""
    return " ".join(terms(text))


def fts_row(doc_name: str, context: str, text: str) -> tuple[str, str]:
    """(title, body) columns of a chunk's full-text row: the document's name (without its
    extension) and context line, then the chunk's own text."""
    stem = doc_name.rsplit(".", 1)[0] if "." in doc_name[1:] else doc_name
    return index_text(f"{stem} {context}"), index_text(text)


def query_terms(text: str) -> list[str]:
    """A question's distinct searchable terms, in order: no common English words, unless
    quoted, and phrases ("with statement", space-separated) of a common word and a
    SYNTAX_NOUNS noun after it; `prune` keeps the rarest MAX_QUERY_TERMS of them."""
    folded = fold(text)
    quoted = {m.group(1).casefold() for m in _QUOTED.finditer(folded)}
    seen: dict[str, None] = {}
    all_terms = _terms(folded)
    for i, t in enumerate(all_terms):
        if t not in STOPWORDS or t in quoted:
            seen.setdefault(t, None)
        elif i + 1 < len(all_terms) and all_terms[i + 1] in SYNTAX_NOUNS:
            seen.setdefault(f"{t} {all_terms[i + 1]}", None)
    return list(seen)[:MAX_QUESTION_TERMS]


def words_of(term: str) -> list[str]:
    """The words of a query term: one, or a phrase's (`query_terms`)."""
    return term.split(" ")


def match_query(text: str | list[str]) -> str | None:
    """An FTS5 MATCH expression OR-ing the question's terms (or these terms; a phrase's words
    must be adjacent); None when it has no usable word."""
    words = query_terms(text) if isinstance(text, str) else text
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in words)  # terms hold no quotes: nothing to escape


class _Stemmer:
    """The table tokenizer's own output for single terms (porter stems), from an in-memory
    FTS5 table: what the vocabulary table is keyed by."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self.db.execute(f'CREATE VIRTUAL TABLE t USING fts5(x, tokenize="{TOKENIZER}")')
        self.db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
        self.lock = threading.Lock()

    def __call__(self, terms: list[str]) -> list[str | None]:
        with self.lock:
            self.db.execute("DELETE FROM t")
            self.db.executemany("INSERT INTO t (rowid, x) VALUES (?, ?)", enumerate(terms))
            found = dict((doc, term) for term, doc in self.db.execute("SELECT term, doc FROM v"))
        return [found.get(i) for i in range(len(terms))]


_stemmer: _Stemmer | None = None


def stems_of(terms: list[str]) -> list[str | None]:
    """The stored (stemmed) token of each term; None for a term the tokenizer drops."""
    global _stemmer
    _stemmer = _stemmer or _Stemmer()
    return _stemmer(terms)


def prune(terms: list[str], counts: list[int]) -> list[str]:
    """The terms to search with, in question order: those in some chunk (`counts`: chunks
    holding each), rarest first until their chunks pass POSTINGS_BUDGET (at least MIN_TERMS)
    or MAX_QUERY_TERMS are kept."""
    keep, total = set(), 0
    for i in sorted(range(len(terms)), key=lambda i: counts[i]):
        if counts[i] == 0:
            continue
        if len(keep) >= MAX_QUERY_TERMS:
            break
        if len(keep) >= MIN_TERMS and total + counts[i] > POSTINGS_BUDGET:
            break
        keep.add(i)
        total += counts[i]
    return [t for i, t in enumerate(terms) if i in keep]
