"""Text helpers the command lines, servers and errors share to show things in one line."""

from __future__ import annotations

from collections.abc import Sequence


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) made one space, ends trimmed."""
    return " ".join(str(text).split())


def snippet(text: str, limit: int) -> str:
    """`text` in one line, cut to at most `limit` characters ending in "…" when longer."""
    flat = one_line(text)
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def scaled(n: float, units: Sequence[str], step: float, sep: str = "") -> str:
    """`n` in the largest of `units` (each `step` times the one before) it reaches, with one
    decimal ("1.5 MB"), whole in the first unit ("512 B"); `sep` goes before the unit."""
    for unit in units[:-1]:
        if abs(n) < step:
            return f"{n:.0f}{sep}{unit}" if unit == units[0] else f"{n:.1f}{sep}{unit}"
        n /= step
    return f"{n:.1f}{sep}{units[-1]}"
