"""Text helpers the command lines, servers and errors share to show things in one line."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

#: Unicode's text-direction embeddings, overrides and isolates: they reorder what follows.
#: (Not the marks, RLM and LRM: Hebrew and Arabic names use them, and they disguise nothing.)
BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def hidden_char(c: str) -> bool:
    """A control character (C0, DEL, C1) or a text-direction one (`BIDI`): in a name, a
    terminal escape ("\\x1b[31m") or a disguise (a right-to-left override shows
    'invoice_\\u202efdp.txt' as 'invoice_txt.pdf')."""
    return unicodedata.category(c) == "Cc" or c in BIDI


def printable(name: str) -> str:
    """`name` for a terminal or a log line: its hidden characters as escapes ('\\x1b')."""
    if not any(hidden_char(c) for c in name):
        return name
    return "".join(c.encode("unicode_escape").decode() if hidden_char(c) else c for c in name)


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) made one space, ends trimmed."""
    return " ".join(str(text).split())


def whole_characters(text: str, end: int) -> int:
    """`end`, moved back to where a cut leaves what shows as one character whole: not inside
    an emoji sequence, a flag, an accent, a conjunct or a Hangul syllable."""
    while 0 < end < len(text) and (
        _joins(text[end])
        or text[end - 1] == "\u200d"
        or unicodedata.name(text[end - 1], "").endswith("VIRAMA")  # a conjunct: क्ष
        or _flag_half(text, end)
    ):
        end -= 1
    return end


def snippet(text: str, limit: int) -> str:
    """`text` in one line, cut to at most `limit` characters ending in "…" when longer (never
    inside what shows as one character: an accent, an emoji sequence, a flag)."""
    flat = one_line(text)
    if len(flat) <= limit:
        return flat
    return flat[: whole_characters(flat, limit - 1)].rstrip() + "…"


def _flag_half(text: str, end: int) -> bool:
    """Whether `end` falls between the two regional letters of a flag (🇰|🇷)."""
    n = 0
    while end - n > 0 and 0x1F1E6 <= ord(text[end - n - 1]) <= 0x1F1FF:
        n += 1
    return n % 2 == 1 and end < len(text) and 0x1F1E6 <= ord(text[end]) <= 0x1F1FF


def _joins(c: str) -> bool:
    """Whether `c` belongs to the character before it: a combining mark, a joiner, a
    variation selector, a skin tone, a flag's tag (roughly: see `snippet`)."""
    o = ord(c)
    return (
        unicodedata.category(c).startswith("M")
        or c in "\u200d\ufe0e\ufe0f"
        or 0x1F3FB <= o <= 0x1F3FF
        or 0xE0020 <= o <= 0xE007F
        or 0x1160 <= o <= 0x11FF  # Hangul vowel and final jamo
        or c in "\u0e33\u0eb3"  # Thai and Lao AM, a vowel sign after its consonant
    )


def scaled(n: float, units: Sequence[str], step: float, sep: str = "") -> str:
    """`n` in the largest of `units` (each `step` times the one before) it reaches, with one
    decimal ("1.5 MB"), whole in the first unit ("512 B"); `sep` goes before the unit."""
    for unit in units[:-1]:
        if abs(n) < step:
            return f"{n:.0f}{sep}{unit}" if unit == units[0] else f"{n:.1f}{sep}{unit}"
        n /= step
    return f"{n:.1f}{sep}{units[-1]}"
