"""Numbers as Office shows them, for the readers of workbooks and charts: what a number
format shows (a date, a time, both, a percentage), a day count as an ISO date, and a float
without its noise (0.30000000000000004 is shown 0.3)."""

from __future__ import annotations

import datetime as dt
import re

_QUOTED = re.compile(r'"[^"]*"|\\.|\[[^\]]*\]')  # literal text and colours in a format code


def format_kind(code: str) -> str | None:
    """What a number format code shows: "date", "time", "datetime", "percent", or None for
    a plain number (or text)."""
    code = _QUOTED.sub("", code.lower()).split(";")[0]
    code = re.sub(r"(?<=s)\.0+", "", code)  # (fractions of a second: hh:mm:ss.000)
    day, clock = bool(re.search(r"[dy]|m{3,}", code)), bool(re.search(r"[hs]", code))
    kind = "datetime" if day and clock else "date" if day else "time" if clock else None
    if "%" in code:
        kind = "percent"
    elif "0" in code or "#" in code:
        kind = None  # (a number format)
    return kind


def number_text(number: float) -> str:
    """A number as a spreadsheet shows it at most: 15 significant digits (0.1 + 0.2 is
    stored 0.30000000000000004 and shown 0.3), a whole number without its ".0"."""
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return format(number, ".15g")


def shown_when(serial: float, shown: str, date1904: bool) -> str | None:
    """A date or time cell's day count as an ISO date, time or both (`shown`); None out of
    range. The 1900 system counts a 29 February 1900 that never was: days before it are one
    more than their count."""
    if date1904:
        epoch = dt.datetime(1904, 1, 1)
    else:
        epoch = dt.datetime(1899, 12, 31 if serial < 60 else 30)
    try:  # (rounded to the second: float noise; the last second of 9999 is out of range)
        when = epoch + dt.timedelta(days=serial) + dt.timedelta(milliseconds=0.5)
    except (OverflowError, ValueError):
        return None
    when = when.replace(microsecond=0)
    if shown == "time":
        return when.time().isoformat()
    if shown == "date" or when.time() == dt.time():
        return when.date().isoformat()
    return when.isoformat(" ")
