"""Text helpers the command lines, servers and errors share to show things in one line."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

#: Unicode's text-direction embeddings, overrides and isolates: they reorder what follows.
#: (Not the marks, RLM and LRM: Hebrew and Arabic names use them, and they disguise nothing.)
BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def hidden_char(c: str) -> bool:
    """A control character (C0, DEL, C1), a line or paragraph separator (U+2028, U+2029:
    a log line split in two by a tool that splits on them), or a text-direction one
    (`BIDI`): in a name, a terminal escape ("\\x1b[31m") or a disguise (a right-to-left
    override shows 'invoice_\\u202efdp.txt' as 'invoice_txt.pdf')."""
    return unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in BIDI


def printable(name: str) -> str:
    """`name` for a terminal or a log line: its hidden characters as escapes ('\\x1b')."""
    if not any(hidden_char(c) for c in name):
        return name
    return "".join(c.encode("unicode_escape").decode() if hidden_char(c) else c for c in name)


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) made one space, ends trimmed."""
    return " ".join(str(text).split())


def splits_character(text: str, pos: int) -> bool:
    """Whether a cut before `text[pos]` would split what shows as one character: an accent,
    an emoji sequence or skin tone, a flag (two regional letters, or a subdivision's tags),
    a Hangul syllable written as jamo, Thai and Lao AM, a conjunct (क्ष). One rule for
    chunk boundaries, snippets, context lines and shortened names."""
    if pos <= 0 or pos >= len(text):
        return False
    c, prev = text[pos], text[pos - 1]
    o = ord(c)
    return (
        unicodedata.category(c).startswith("M")  # combining marks
        or c in "\u200c\u200d"
        or prev == "\u200d"  # zero-width (non-)joiners
        or 0xFE00 <= o <= 0xFE0F  # variation selectors
        or 0x1F3FB <= o <= 0x1F3FF  # skin tones
        or (0x1F1E6 <= o <= 0x1F1FF and 0x1F1E6 <= ord(prev) <= 0x1F1FF)  # regional letters
        or 0xE0020 <= o <= 0xE007F  # a subdivision flag's tags (Scotland's)
        or 0x1160 <= o <= 0x11FF  # Hangul vowel and final jamo (text that is not NFC)
        or c in "\u0e33\u0eb3"  # Thai and Lao AM, a vowel sign after its consonant
        or unicodedata.name(prev, "").endswith("VIRAMA")  # a conjunct
    )


def whole_characters(text: str, end: int) -> int:
    """`end`, moved back to where a cut leaves what shows as one character whole
    (`splits_character`)."""
    while splits_character(text, end):
        end -= 1
    return end


def snippet(text: str, limit: int) -> str:
    """`text` in one line, cut to at most `limit` characters ending in "…" when longer (never
    inside what shows as one character: an accent, an emoji sequence, a flag)."""
    flat = one_line(text)
    if len(flat) <= limit:
        return flat
    return flat[: whole_characters(flat, limit - 1)].rstrip() + "…"


def scaled(n: float, units: Sequence[str], step: float, sep: str = "") -> str:
    """`n` in the largest of `units` (each `step` times the one before) it reaches, with one
    decimal ("1.5 MB"), whole in the first unit ("512 B"); `sep` goes before the unit."""
    for unit in units[:-1]:
        if abs(n) < step:
            return f"{n:.0f}{sep}{unit}" if unit == units[0] else f"{n:.1f}{sep}{unit}"
        n /= step
    return f"{n:.1f}{sep}{units[-1]}"


#: file names whose pages are slides (a presentation's: `indexing.slides_sheets`)
SLIDE_SUFFIXES = (".pptx", ".pptm", ".ppsx", ".ppsm", ".potx", ".potm", ".odp", ".otp")


def pages_label(name: str, start: int | None, end: int | None) -> str:
    """Where in the file `name` a chunk is: "p. 3", "pp. 3-4", or "slide 3", "slides 3-4" for
    a presentation; "" without pages."""
    if start is None:
        return ""
    one, many = ("slide ", "slides ") if name.lower().endswith(SLIDE_SUFFIXES) else ("p. ", "pp. ")
    return f"{one}{start}" if end in (None, start) else f"{many}{start}-{end}"
