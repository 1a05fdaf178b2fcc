"""Chunking by base-model tokens: budgets, exact substrings, overlap, pages, multi-byte text."""

from __future__ import annotations

import random
import unicodedata
from pathlib import Path

import pytest

from clara.errors import ChunkingError
from indexing.chunking import Chunk, chunk_document, document_text, join_pages
from indexing.readers import Document, Page

WORDS = (
    "the harbour light keeper wrote about storms and tides while ships passed the rocks "
    "café naïve façade Ångström coöperate 日本語のテキスト 東京 😀 👩‍👩‍👧 🇯🇵 👍🏽 e\u0301te\u0301"
).split()


def make_doc(pages: list[str], kind: str = "text") -> Document:
    path = Path(f"doc.{ {'markdown': 'md'}.get(kind, kind) }")
    return Document(path, kind, [Page(i + 1, t) for i, t in enumerate(pages)], "", 0)  # type: ignore[arg-type]


def random_pages(n_pages: int, seed: int = 0) -> list[str]:
    """Pages of random multilingual sentences; each word carries a unique number."""
    rng, k, pages = random.Random(seed), 0, []
    for _ in range(n_pages):
        paras = []
        for _ in range(rng.randint(1, 4)):
            sentences = []
            for _ in range(rng.randint(1, 5)):
                words = []
                for _ in range(rng.randint(3, 14)):
                    words.append(f"{rng.choice(WORDS)}{k}")
                    k += 1
                sentences.append(" ".join(words) + rng.choice([".", "!", "?", "。"]))
            paras.append(" ".join(sentences))
        pages.append("\n\n".join(paras))
    return pages


class OffsetlessTokenizer:
    """Only `encode`/`decode`, like a slow tokenizer: exercises the character fallback."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._inner.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: list[int]) -> str:
        return self._inner.decode(ids)


@pytest.fixture(scope="module")
def wrapper(tiny_tokenizer_dir: Path):
    """The tiny byte-level BPE as the model loader gives it (mlx-lm TokenizerWrapper)."""
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


@pytest.fixture(scope="module", params=["wrapper", "trimmed-offsets", "no-offsets"])
def tokenizer(request: pytest.FixtureRequest, wrapper, tiny_tokenizer_dir: Path):
    if request.param == "wrapper":
        return wrapper
    if request.param == "no-offsets":
        return OffsetlessTokenizer(wrapper)
    from tokenizers import Tokenizer, processors

    raw = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))
    raw.post_processor = processors.ByteLevel(trim_offsets=True)  # spaces left out of offsets
    return raw


def ids_of(tokenizer, text: str) -> list[int]:
    enc = tokenizer.encode(text, add_special_tokens=False)
    return list(getattr(enc, "ids", enc))


def splits_grapheme(text: str, pos: int) -> bool:
    if pos <= 0 or pos >= len(text):
        return False
    c, prev = text[pos], text[pos - 1]
    return (
        unicodedata.category(c).startswith("M")
        or "\u200d" in (c, prev)
        or 0x1F3FB <= ord(c) <= 0x1F3FF
        or all(0x1F1E6 <= ord(x) <= 0x1F1FF for x in (c, prev))
        or 0xE0020 <= ord(c) <= 0xE007F  # a subdivision flag's tags
        or unicodedata.name(prev, "").endswith("VIRAMA")  # a Devanagari conjunct
    )


def check_chunks(doc: Document, chunks: list[Chunk], tokenizer, max_tokens: int) -> list[int]:
    """Every invariant a user relies on; returns each chunk's start in the joined text."""
    text, _, _ = join_pages(doc.pages)
    starts, covered = [], bytearray(len(text))
    for i, c in enumerate(chunks):
        assert c.ordinal == i and c.text and c.text == c.text.strip()
        ids = ids_of(tokenizer, c.text)
        assert c.n_tokens == len(ids) <= max_tokens
        start = text.find(c.text, starts[-1] + 1 if starts else 0)
        assert start >= 0, f"chunk {i} is not a substring after chunk {i - 1}"
        end = start + len(c.text)
        assert text.find(c.text, start + 1) == -1  # unique: the page check below is meaningful
        assert not splits_grapheme(text, start) and not splits_grapheme(text, end)
        assert "\ufffd" not in c.text
        c.text.encode("utf-8")  # no lone surrogates
        pages = [p.number for p in doc.pages if p.text and _page_span(doc, p.number, start, end)]
        assert (c.page_start, c.page_end) == (pages[0], pages[-1])
        if c.page_start == c.page_end:
            assert c.text in next(p.text for p in doc.pages if p.number == c.page_start)
        covered[start:end] = b"\x01" * (end - start)
        starts.append(start)
    missing = [ch for ch, ok in zip(text, covered) if not ok and not ch.isspace()]
    assert not missing, f"text left out of every chunk: {''.join(missing)[:80]!r}"
    return starts


def _page_span(doc: Document, number: int, start: int, end: int) -> bool:
    text, page_starts, numbers = join_pages(doc.pages)
    k = numbers.index(number)
    lo = page_starts[k]
    hi = lo + len(next(p.text for p in doc.pages if p.number == number))
    return start < hi and lo < end


@pytest.mark.parametrize("max_tokens, overlap", [(64, 0), (64, 16), (40, 8), (128, 32)])
def test_chunks_fit_budget_cover_text_and_track_pages(tokenizer, max_tokens, overlap) -> None:
    doc = make_doc(random_pages(8))
    chunks = chunk_document(doc, tokenizer, max_tokens=max_tokens, overlap=overlap)
    assert len(chunks) > 3
    check_chunks(doc, chunks, tokenizer, max_tokens)
    assert any(c.page_end > c.page_start for c in chunks)  # some chunks span a page break
    assert chunk_document(doc, tokenizer, max_tokens, overlap) == chunks  # deterministic


@pytest.mark.parametrize("overlap", [0, 12])
def test_overlap_is_honoured(tokenizer, overlap: int) -> None:
    doc = make_doc(random_pages(3, seed=1))
    chunks = chunk_document(doc, tokenizer, max_tokens=48, overlap=overlap)
    starts = check_chunks(doc, chunks, tokenizer, 48)
    text, _, _ = join_pages(doc.pages)
    for (a, prev), (b, nxt) in zip(zip(starts, chunks), zip(starts[1:], chunks[1:])):
        shared = text[b : a + len(prev.text)]
        if overlap == 0:
            assert b >= a + len(prev.text)
        else:
            assert shared.strip(), "consecutive chunks should share text"
            assert nxt.text.startswith(shared.strip())
            # the shared text is at most `overlap` tokens (+1: re-tokenising at the edge)
            assert len(ids_of(tokenizer, shared.strip())) <= overlap + 1


def test_chunks_end_at_sentence_ends_when_one_is_near(tokenizer) -> None:
    sentences = [f"Sentence {i} is short and plain." for i in range(60)]
    doc = make_doc([" ".join(sentences)])
    chunks = chunk_document(doc, tokenizer, max_tokens=80, overlap=0)
    check_chunks(doc, chunks, tokenizer, 80)
    assert len(chunks) > 3
    assert all(c.text.endswith(".") for c in chunks)  # each sentence < 20% of the budget


def test_a_sentence_end_beats_a_later_line_wrap(tokenizer) -> None:
    """A PDF audit: PDF text breaks its prose at every line, and the latest line break won
    over a sentence end a few words before it: chunks ended mid-sentence ("The final
    calibration constant was found to" | "be exactly 7.25 newton metres"). A line's end
    still beats a cut between two words of one line (a list item stays whole)."""
    import textwrap

    rng = random.Random(3)
    words = "the keeper wrote that storms and tides moved the old harbour light".split()
    sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 5))) for _ in range(80)]
    prose = textwrap.fill(". ".join(s.capitalize() for s in sentences) + ".", width=40)
    doc = make_doc([prose], "pdf")
    chunks = chunk_document(doc, tokenizer, max_tokens=160, overlap=0)
    check_chunks(doc, chunks, tokenizer, 160)
    assert len(chunks) > 5 and all(c.text.endswith(".") for c in chunks)
    items = "\n".join(f"- the tide {i} no stop" for i in range(90))
    chunks = chunk_document(make_doc([items], "pdf"), tokenizer, max_tokens=80, overlap=0)
    assert len(chunks) > 5 and all(c.text.endswith("no stop") for c in chunks)
    # (not in a table or code, where ". " and "; " stand inside lines: a review)
    rows = "\n".join(f"| widget {i} | Checked. Fine; ok | {i} |" for i in range(150))
    for kind in ("markdown", "text"):
        chunks = chunk_document(make_doc([rows], kind), tokenizer, max_tokens=200, overlap=0)
        assert len(chunks) > 5 and all(c.text.endswith(" |") for c in chunks)


def test_a_pdf_page_ending_mid_sentence_runs_on_into_the_next(wrapper) -> None:
    """A PDF audit: pages were joined by a paragraph's blank line, the best place to cut, so
    a chunk ended at a page break mid-sentence, before a sentence end in reach. A PDF page
    that ends mid-sentence and a next one starting with a small letter join as lines do;
    other page breaks, and every page break of a text file, stay paragraph breaks."""
    first = "A page of words on the harbour and its light and the keeper of its light"
    pages = [f"{first}. So", "water meters."]
    pages += ["Its last sentence ends here.", "Next page starts a paragraph."]
    pdf = Document(Path("d.pdf"), "pdf", [Page(i + 1, t) for i, t in enumerate(pages)], "", 0)
    text, starts, numbers = document_text(pdf)
    assert text == pages[0] + "\n" + "\n\n".join(pages[1:])
    assert [text[s : s + 5] for s in starts] == [p[:5] for p in pages] and numbers == [1, 2, 3, 4]
    assert document_text(make_doc(pages))[0] == "\n\n".join(pages)  # (a text file's form feeds)
    n = len(ids_of(wrapper, pages[0] + "\nwater"))  # the budget ends just after "water"
    chunk = chunk_document(pdf, wrapper, max_tokens=n, overlap=0)[0]
    assert chunk.text == f"{first}." and (chunk.page_start, chunk.page_end) == (1, 1)


def test_paragraph_end_beats_a_later_sentence_end(wrapper) -> None:
    para = "Ok. Short line one. Short line two. Short line three."
    doc = make_doc(["\n\n".join([para] * 20)])
    n_para = len(ids_of(wrapper, para))  # the budget ends just after the next "Ok."
    chunks = chunk_document(doc, wrapper, max_tokens=n_para + 6, overlap=0)
    assert len(chunks) > 5 and all(c.text == para for c in chunks)


def test_text_without_spaces_is_still_cut_between_characters(tokenizer) -> None:
    """(Scotland's flag is 🏴 and five tag characters; क्ष is one conjunct: each was cut.)"""
    scotland = "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    doc = make_doc([f"東京の日本語テキスト👩‍👩‍👧🇯🇵é{scotland}क्षत्रिय" * 40])
    chunks = chunk_document(doc, tokenizer, max_tokens=32, overlap=4)
    check_chunks_loose(doc, chunks, tokenizer, 32)


def check_chunks_loose(doc: Document, chunks: list[Chunk], tokenizer, max_tokens: int) -> None:
    """Like check_chunks, for repetitive text where a chunk's position is not unique."""
    text, _, _ = join_pages(doc.pages)
    pos = 0
    for c in chunks:
        assert c.n_tokens == len(ids_of(tokenizer, c.text)) <= max_tokens and c.text
        start = text.find(c.text, pos)
        assert start >= 0
        assert not splits_grapheme(text, start) and not splits_grapheme(text, start + len(c.text))
        pos = start + 1
    assert text.endswith(chunks[-1].text)


def test_empty_pages_are_skipped_and_numbers_kept(wrapper) -> None:
    doc = make_doc(["", "Only page two has words.", "  \n", "And page four."])
    chunks = chunk_document(doc, wrapper, max_tokens=64, overlap=8)
    assert [(c.text, c.page_start, c.page_end) for c in chunks] == [
        ("Only page two has words.\n\nAnd page four.", 2, 4)
    ]
    assert chunk_document(make_doc(["", " \n"]), wrapper) == []


def test_truncating_tokenizer_still_sees_the_whole_document(tiny_tokenizer_dir: Path) -> None:
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))
    raw.enable_truncation(max_length=16)
    doc = make_doc(random_pages(2, seed=3))
    chunks = chunk_document(doc, raw, max_tokens=48, overlap=8)
    assert doc.pages[-1].text.endswith(chunks[-1].text)


@pytest.mark.parametrize("max_tokens, overlap", [(0, 0), (16, 16), (16, -1), (16, 20), (8.5, 0)])
def test_invalid_options(wrapper, max_tokens, overlap) -> None:
    with pytest.raises(ChunkingError, match="max_tokens|overlap"):
        chunk_document(make_doc(["text"]), wrapper, max_tokens=max_tokens, overlap=overlap)


@pytest.mark.slow
def test_default_model_tokenizer_multibyte() -> None:
    """The real SmolLM2 tokenizer: Japanese, emoji and accents never split, budgets exact."""
    try:
        from clara.gguf import prepare_default_model

        model_dir = prepare_default_model()
    except Exception as e:  # not prepared here (no embedded GGUF, conversion unavailable)
        pytest.skip(f"default model not available: {e}")
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    doc = make_doc(random_pages(10, seed=7))
    for max_tokens, overlap in [(256, 32), (48, 8)]:
        chunks = chunk_document(doc, tokenizer, max_tokens=max_tokens, overlap=overlap)
        check_chunks(doc, chunks, tokenizer, max_tokens)
        for c in chunks:
            assert tokenizer.decode(ids_of(tokenizer, c.text)) == c.text
    fallback = chunk_document(doc, OffsetlessTokenizer(tokenizer), max_tokens=48, overlap=8)
    check_chunks(doc, fallback, tokenizer, 48)


def test_a_code_block_that_fits_is_not_cut_at_its_blank_lines(tokenizer, tmp_path) -> None:
    """A docs repository's audit: a Python block that fit in a chunk was cut at the blank line
    between its functions (a chunk ended mid-block, the next began without its fence), and
    the reader collapsed the code's own blank lines."""
    from indexing.readers import read_document

    code = "\n".join(
        f"def step_{i}(widgets):\n    return [w * {i} for w in widgets]\n\n" for i in range(6)
    )
    prose = " ".join(f"Sentence {i} of the guide says what the tool does." for i in range(12))
    page = tmp_path / "install.md"
    page.write_text(f"# Install\n\n{prose}\n\n```python\n{code}```\n\nAfter the block.\n")
    doc = read_document(page)
    assert f"```python\n{code}```" in doc.pages[0].text  # (blank lines kept as they were)
    n = len(tokenizer.encode(f"```python\n{code}```", add_special_tokens=False))
    chunks = chunk_document(doc, tokenizer, max_tokens=n + 8, overlap=0)
    holding = [c for c in chunks if "step_" in c.text]
    assert len(holding) == 1 and f"```python\n{code}```" in holding[0].text, [
        c.text for c in chunks
    ]


def test_a_code_block_too_big_for_a_chunk_is_cut_at_its_line_ends(tokenizer, tmp_path) -> None:
    """An upgrade audit: a block too big for one chunk was cut at any word ("v12 = w +" here,
    "u + s" there) once a line end inside a block ranked no higher than a word."""
    from indexing.readers import read_document

    code = "\n".join(f"v{i} = w + u + s" for i in range(90))
    page = tmp_path / "big.md"
    page.write_text(f"# Big\n\nThe loop below.\n\n```python\n{code}\n```\n")
    chunks = chunk_document(read_document(page), tokenizer, max_tokens=64, overlap=0)
    assert len(chunks) > 3
    assert all(c.text.endswith(" s") for c in chunks[1:-1]), [c.text[-12:] for c in chunks]


def test_no_chunk_spans_two_slides(tokenizer) -> None:
    """A deck's slides are chunked apart (packed together before, a bullet on slide 2 was
    cited "slides 1-4", and its memory held four slides); a slide too long for one chunk is
    cut as any text, its chunks overlapping."""
    slides = [
        f"Slide {n} title\n\n" + " ".join(f"point{n}x{i}." for i in range(k))
        for n, k in ((1, 3), (2, 4), (4, 60))
    ]
    doc = Document(
        Path("deck.pptx"),
        "pptx",
        [Page(1, slides[0]), Page(2, slides[1]), Page(4, slides[2])],
        "",
        0,
    )
    chunks = chunk_document(doc, tokenizer, max_tokens=64, overlap=8)
    assert all(c.page_start == c.page_end for c in chunks)
    assert [c.text for c in chunks[:2]] == slides[:2]
    assert {c.page_start for c in chunks} == {1, 2, 4} and len(chunks) > 3
    text = "\n\n".join(slides)
    assert all(text.find(c.text) >= 0 for c in chunks)
    packed = chunk_document(Document(doc.path, "text", doc.pages, "", 0), tokenizer, 64, 8)
    assert packed[0].page_end == 2  # (any other kind packs pages together, as before)


def test_a_sheets_chunks_start_and_end_at_row_boundaries(tokenizer) -> None:
    """A spreadsheet's rows ("Region: North | Units: 12", a sentence end after each column's
    name) are lines: chunks start at a row's start, overlap included, and end at a row's end,
    so each row in a chunk keeps its first columns' names."""
    rows = [f"Region: R{i} | Units: {i * 7} | Note: shipped on day {i}" for i in range(80)]
    doc = Document(Path("sales.xlsx"), "xlsx", [Page(1, "Sheet: S\n" + "\n".join(rows))], "", 0)
    chunks = chunk_document(doc, tokenizer, max_tokens=48, overlap=16)
    assert len(chunks) > 5
    for c in chunks[1:]:
        assert c.text.startswith("Region: R"), c.text[:40]
        assert c.text.split("\n")[-1] in rows, c.text[-60:]
    prose = chunk_document(Document(doc.path, "text", doc.pages, "", 0), tokenizer, 48, 16)
    assert any(not c.text.startswith("Region: R") for c in prose[1:])  # (text: word starts)


def test_a_workbooks_chunks_keep_to_one_sheet(tokenizer) -> None:
    """A chunk that ended one sheet and began the next held two sheets' rows (its memory
    mixed them, and its source named one sheet): each sheet is chunked apart."""
    north = "\n".join(f"Region: N{i} | Units: {i}" for i in range(6))
    south = "\n".join(f"Town: S{i} | Stock: {i * 3}" for i in range(6))
    text = f"North\n{north}\n\nSouth\n{south}"
    doc = Document(Path("sales.xlsx"), "xlsx", [Page(1, text)], "", 0, headings=["North", "South"])
    chunks = chunk_document(doc, tokenizer, max_tokens=256, overlap=16)
    assert [c.text for c in chunks] == [f"North\n{north}", f"South\n{south}"]
    # a name not where the reader puts it (no sheet block): the workbook as one, as before
    odd = Document(doc.path, "xlsx", doc.pages, "", 0, headings=["North", "West"])
    assert [c.text for c in chunk_document(odd, tokenizer, 256, 16)] == [text]
