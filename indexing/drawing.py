"""Text of DrawingML and Office Math, shared by the readers of Word files, slides and
workbooks (`indexing.office_text`, `indexing.slides_sheets`): a part's relationships and the
parts they link, DrawingML paragraphs and tables, charts (their title and a line of values
per series), SmartArt (its nodes' text) and equations written in one line (`m=p/r`)."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Protocol
from xml.etree import ElementTree as ET

from clara.text import one_line

_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_C = "{http://schemas.openxmlformats.org/drawingml/2006/chart}"
_DGM = "{http://schemas.openxmlformats.org/drawingml/2006/diagram}"
_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
_A14 = "{http://schemas.microsoft.com/office/drawing/2010/main}"
_M = "{http://schemas.openxmlformats.org/officeDocument/2006/math}"


class Parts(Protocol):
    """A package's parts by name (`indexing.office_text.Archive`)."""

    def has(self, name: str) -> bool: ...

    def xml(self, name: str) -> ET.Element: ...


#: a chart's series read at most, and values of each: a chart of thousands of points is
#: data, which its workbook holds; its title and first values say what it shows
MAX_SERIES, MAX_POINTS = 32, 64


def part_links(archive: Parts, part: str) -> dict[str, tuple[str, str]]:
    """A part's relationships: id -> (type, the target's archive name)."""
    folder, name = posixpath.split(part)
    rels = posixpath.join(folder, "_rels", name + ".rels")
    if not archive.has(rels):
        return {}
    out = {}
    for rel in archive.xml(rels).iter(f"{_REL}Relationship"):
        target = rel.get("Target") or ""
        if rel.get("TargetMode") == "External":
            continue
        path = target.lstrip("/") if target.startswith("/") else posixpath.join(folder, target)
        out[rel.get("Id") or ""] = (rel.get("Type") or "", posixpath.normpath(path))
    return out


def linked(archive: Parts, part: str) -> Callable[[str | None], ET.Element | None]:
    """The parts `part` links to, by relationship id (None: no such part)."""
    links = part_links(archive, part)

    def find(rel_id: str | None) -> ET.Element | None:
        found = links.get(rel_id or "")
        return archive.xml(found[1]) if found and archive.has(found[1]) else None

    return find


def graphic_lines(
    data: ET.Element | None, find: Callable[[str | None], ET.Element | None]
) -> list[str]:
    """A graphic frame's lines: a table's rows, a chart's title and values, a SmartArt
    diagram's text (a bullet each); nothing for a picture, a video or what clara cannot
    read. `find`: the parts linked to the one it is in (`linked`)."""
    if data is None:
        return []
    table = data.find(f"{_A}tbl")
    if table is not None:
        return table_rows(table)
    chart = data.find(f"{_C}chart")
    if chart is not None:
        part = find(chart.get(f"{_R}id"))
        return chart_lines(part) if part is not None else []
    diagram = data.find(f"{_DGM}relIds")
    if diagram is not None:
        part = find(diagram.get(f"{_R}dm"))
        return diagram_lines(part) if part is not None else []
    return []


def chart_lines(space: ET.Element) -> list[str]:
    """A chart's title ("Chart: Units by region"), then a line per series: its name and its
    values by category ("Units: North 1200, South 950"), at most MAX_SERIES of MAX_POINTS."""
    chart = space.find(f"{_C}chart")
    if chart is None:
        return []
    title, named = chart.find(f"{_C}title"), ""
    if title is not None:  # (its own text, or a cell's it names)
        named = one_line(" ".join(paragraph_text(p) for p in title.iter(f"{_A}p")))
        named = named or one_line(" ".join(_points(title.find(f"{_C}tx")).values()))
    lines = []
    plot = chart.find(f"{_C}plotArea")
    series = [
        ser for kind in (plot if plot is not None else []) for ser in kind.findall(f"{_C}ser")
    ]
    for ser in series[:MAX_SERIES]:
        name = one_line(" ".join(_points(ser.find(f"{_C}tx")).values()))
        cats = _points(ser.find(f"{_C}cat")) or _points(ser.find(f"{_C}xVal"))
        vals = _points(ser.find(f"{_C}val")) or _points(ser.find(f"{_C}yVal"))
        points = [f"{cats.get(i, '')} {v}".strip() for i, v in sorted(vals.items())]
        more = ", ..." if len(points) > MAX_POINTS else ""
        points = points[:MAX_POINTS]
        if points or name:
            lines.append(f"{name}: {', '.join(points)}{more}" if name else ", ".join(points) + more)
    if len(series) > MAX_SERIES:
        lines.append(f"(and {len(series) - MAX_SERIES} more series)")
    return ([f"Chart: {named}"] if named else ["Chart:"] if lines else []) + lines


def _points(ref: ET.Element | None) -> dict[int, str]:
    """The values a chart's reference (c:tx, c:cat, c:val, ...) caches, by point index: text,
    numbers as stored, a literal's; of categories of several levels, the first level's."""
    if ref is None:
        return {}
    if ref.find(f"{_C}v") is not None:
        return {0: one_line(ref.findtext(f"{_C}v") or "")}  # (a series named in place)
    for cache in ref.iter():
        if cache.tag == f"{_C}multiLvlStrCache":
            cache = cache.find(f"{_C}lvl")
        elif cache.tag not in (f"{_C}strCache", f"{_C}numCache", f"{_C}strLit", f"{_C}numLit"):
            continue
        found = {}
        for pt in cache.findall(f"{_C}pt") if cache is not None else []:
            try:
                found[int(pt.get("idx") or 0)] = one_line(pt.findtext(f"{_C}v") or "")
            except ValueError:
                continue
        return found
    return {}


def diagram_lines(data: ET.Element) -> list[str]:
    """A SmartArt diagram's text: its nodes' text, a bullet each, in the order the data part
    keeps them (connectors and layout points hold none of the user's)."""
    points = data.find(f"{_DGM}ptLst")
    lines = []
    for pt in points.findall(f"{_DGM}pt") if points is not None else []:
        if pt.get("type") not in (None, "node", "asst"):
            continue
        text = one_line(" ".join(paragraph_text(p) for p in pt.findall(f"{_DGM}t/{_A}p")))
        if text:
            lines.append(f"- {text}")
    return lines


def paragraph_text(p: ET.Element) -> str:
    parts = []
    for node in p:
        if node.tag in (f"{_A}r", f"{_A}fld"):
            parts.append("".join(t.text or "" for t in node.findall(f"{_A}t")))
        elif node.tag == f"{_A}br":
            parts.append(" ")
        elif node.tag == f"{_A14}m":  # an equation
            parts.append(f" {math_text(node)} ")
        elif node.tag == f"{_MC}AlternateContent":  # (an equation in a text run)
            choice = next(iter(node), None)
            parts.append(" ".join(_paragraph_in(c) for c in (choice if choice is not None else [])))
    return one_line("".join(parts))


def _paragraph_in(node: ET.Element) -> str:
    """The text of a run-level node written as an alternate content's choice."""
    wrapper = ET.Element(f"{_A}p")
    wrapper.append(node)
    return paragraph_text(wrapper)


def table_rows(table: ET.Element) -> list[str]:
    """A table's rows, cells joined by " | " (its own rows and cells only: a file of tables
    nested in cells, read at every depth, took minutes)."""
    rows = []
    for tr in table.findall(f"{_A}tr"):
        cells = [
            one_line(" ".join(paragraph_text(p) for p in tc.findall(f"{_A}txBody/{_A}p")))
            for tc in tr.findall(f"{_A}tc")
        ]
        while cells and not cells[-1]:  # (merged cells)
            cells.pop()
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


#: Office Math structures written in one line: (children read, how they are joined)
_MATH = {
    "f": (("num", "den"), "{}/{}"),
    "sSup": (("e", "sup"), "{}^{}"),
    "sSub": (("e", "sub"), "{}_{}"),
    "sSubSup": (("e", "sub", "sup"), "{}_{}^{}"),
    "rad": (("deg", "e"), "root{}({})"),
}


def math_text(node: ET.Element) -> str:
    """An Office Math equation in one line, as typed in a linear format: `m=p/r`, `x^2`,
    `a_i`, `root(x)`; a part of more than one symbol in parentheses."""
    name = node.tag.removeprefix(_M)
    if node.tag == f"{_M}t":
        return node.text or ""
    if name in _MATH:
        names, form = _MATH[name]
        found = [node.find(f"{_M}{n}") for n in names]
        texts = [math_text(f) if f is not None else "" for f in found]
        if name == "rad":
            texts[0] = f"[{texts[0]}]" if texts[0] else ""
        else:
            texts = [t if len(t) <= 1 else f"({t})" for t in texts]
        return form.format(*texts)
    return "".join(math_text(child) for child in node if not child.tag.endswith("Pr"))
