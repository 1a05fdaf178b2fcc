"""clara.text: the one-line helpers every command and server shows things with."""

from __future__ import annotations

import unicodedata

import pytest

from clara.text import printable, snippet


@pytest.mark.parametrize(
    "tail",
    [
        "👨\u200d👩\u200d👧\u200d👦",  # a family: four emoji joined
        "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # Scotland's flag
        "👍🏽",  # a skin tone
        unicodedata.normalize("NFD", "가나다"),  # Hangul as jamo
        "e\u0301\u0301",  # accents
        "🇰🇷🇯🇵",  # two flags: two regional letters each
        "क्षत्रिय",  # Devanagari conjuncts (a virama joins two consonants)
        "น้ำ",  # Thai: a tone mark, then SARA AM
    ],
)
def test_a_snippet_is_never_cut_inside_what_shows_as_one_character(tail: str) -> None:
    """A cut by code point left '👨\\u200d…' or a lone jamo."""
    for at in range(len(tail) + 1):
        text = "x" * (239 - at) + tail + " more"
        cut = snippet(text, 240)
        assert cut.endswith("…") and len(cut) <= 240
        kept = cut[:-1].lstrip("x")
        assert tail.startswith(kept), (at, kept)
        assert not kept or kept == tail or not unicodedata.category(tail[len(kept)]).startswith(("M", "Cf")) and tail[len(kept) - 1] != "\u200d"  # fmt: skip
        if tail.startswith("🇰"):
            assert len(kept) % 2 == 0, kept  # whole flags only
        if tail.startswith("น"):
            assert kept in ("", tail), kept
        if tail.startswith("क"):
            assert not kept.endswith("\u094d"), kept  # never after a virama


def test_printable_shows_hidden_characters_as_escapes() -> None:
    assert printable("notes.txt") == "notes.txt"
    assert printable("esc\x1b[31mRED.txt") == "esc\\x1b[31mRED.txt"
    assert printable("invoice_\u202efdp.txt") == "invoice_\\u202efdp.txt"
    assert printable("한국어 메모.txt") == "한국어 메모.txt"
    # line and paragraph separators split a log line for tools that split on them (a
    # security audit: an upload's name faked a second deletion line); uploads lose them
    assert printable("q3.pdf\u2028x\u2029y") == "q3.pdf\\u2028x\\u2029y"
    from indexing.service.uploads import safe_name

    assert safe_name("q3.pdf) deleted (key bob)\u2028x.txt") == "q3.pdf) deleted (key bob)_x.txt"
