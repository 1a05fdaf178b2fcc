"""Text of DrawingML and Office Math, shared by the readers of Word files, slides and
workbooks (`indexing.office_text`, `indexing.slides_sheets`): a part's relationships and the
parts they link, DrawingML paragraphs and tables, charts (their title and a line of values
per series), SmartArt (its nodes' text) and equations written in one line (`m=p/r`)."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Protocol
from xml.etree import ElementTree as ET

from clara.errors import ClaraError
from clara.text import one_line
from indexing.office_numbers import format_kind, number_text, shown_when

_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_C = "{http://schemas.openxmlformats.org/drawingml/2006/chart}"
_DGM = "{http://schemas.openxmlformats.org/drawingml/2006/diagram}"
_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
_A14 = "{http://schemas.microsoft.com/office/drawing/2010/main}"
_M = "{http://schemas.openxmlformats.org/officeDocument/2006/math}"
_DEL = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}del"


class Parts(Protocol):
    """A package's parts by name (`indexing.office_text.Archive`)."""

    def has(self, name: str) -> bool: ...

    def size(self, name: str) -> int: ...

    def xml(self, name: str) -> ET.Element: ...


#: a chart's series read at most, and values of each: a chart of thousands of points is
#: data, which its workbook holds; its title and first values say what it shows
MAX_SERIES, MAX_POINTS = 32, 64
#: characters of a chart's label or value kept
MAX_LABEL = 200
#: bytes (unpacked) of one chart or diagram part read at most, and of all of a file's: a
#: larger one is left out with a warning (a 520,000-point scatter chart, once read, made a
#: deck that read before refused whole: "more than 4000000 XML tags")
MAX_GRAPHIC_PART, MAX_GRAPHIC_PARTS = 4 << 20, 16 << 20


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


class Linked:
    """The charts and diagrams `part`s of a package link to, by relationship id, each read at
    most once; one that cannot be read (damaged, too large, past MAX_GRAPHIC_PARTS) is left
    out, and `left_out` counts it: it never costs the file the rest of its text."""

    def __init__(self, archive: Parts) -> None:
        self.archive, self.links = archive, {}
        self.read: dict[str, ET.Element | None] = {}
        self.left, self.left_out = MAX_GRAPHIC_PARTS, 0

    def of(self, part: str) -> Callable[[str | None, str], ET.Element | None]:
        """`find(rel_id, kind)` for `part`: the part it links to, if of that kind ("chart",
        "diagramData"), read; None otherwise."""
        links = self.rels(part)

        def find(rel_id: str | None, kind: str) -> ET.Element | None:
            found = links.get(rel_id or "")
            if found is None or not found[0].endswith("/" + kind):
                return None
            return self._read(found[1])

        return find

    def rels(self, part: str) -> dict[str, tuple[str, str]]:
        """`part_links(part)`, read once (a slide's: for its charts and its notes)."""
        if part not in self.links:
            self.links[part] = part_links(self.archive, part)
        return self.links[part]

    def _read(self, name: str) -> ET.Element | None:
        if name in self.read:
            return self.read[name]  # (a chart shown on ten slides: read once)
        self.read[name] = None
        if not self.archive.has(name):
            return None
        size = self.archive.size(name)
        if size > MAX_GRAPHIC_PART or size > self.left:
            self.left_out += 1
            return None
        self.left -= size
        try:
            self.read[name] = self.archive.xml(name)
        except ClaraError:  # damaged, not XML, declaring entities, too many tags
            self.left_out += 1
        return self.read[name]

    def warnings(self) -> list[str]:
        n = self.left_out
        if not n:
            return []
        what = "chart or diagram" if n == 1 else "charts or diagrams"
        return [f"{n} {what} left out (damaged, or larger than clara reads of one)"]


def graphic_lines(
    data: ET.Element | None, find: Callable[[str | None, str], ET.Element | None]
) -> list[str]:
    """A graphic frame's lines: a table's rows, a chart's title and values, a SmartArt
    diagram's text (a bullet each); nothing for a picture, a video or what clara cannot
    read. `find`: the parts linked to the one it is in (`Linked.of`)."""
    if data is None:
        return []
    table = data.find(f"{_A}tbl")
    if table is not None:
        return table_rows(table)
    chart = data.find(f"{_C}chart")
    if chart is not None:
        part = find(chart.get(f"{_R}id"), "chart")
        return chart_lines(part) if part is not None else []
    diagram = data.find(f"{_DGM}relIds")
    if diagram is not None:
        part = find(diagram.get(f"{_R}dm"), "diagramData")
        return diagram_lines(part) if part is not None else []
    return []


def chart_lines(space: ET.Element) -> list[str]:
    """A chart's title ("Chart: Units by region"), then a line per series: its name and its
    values by category ("Units: North 1200, South 950"), at most MAX_SERIES of MAX_POINTS."""
    chart = space.find(f"{_C}chart")
    if chart is None:
        return []
    named = _title(chart.find(f"{_C}title"))
    lines = []
    plot = chart.find(f"{_C}plotArea")
    axes = [
        t for ax in (plot if plot is not None else []) if ax.tag.endswith("Ax")
        if (t := _title(ax.find(f"{_C}title")))
    ]  # fmt: skip
    if axes:  # (their units: "USD billions")
        named = f"{named} (axes: {'; '.join(axes)})" if named else f"(axes: {'; '.join(axes)})"
    date1904 = _prop_c(space, "date1904") in ("1", "true")  # (its day counts' first day)
    series = [
        ser for kind in (plot if plot is not None else []) for ser in kind.findall(f"{_C}ser")
    ]
    for ser in series[:MAX_SERIES]:
        name = one_line(" ".join(_points(ser.find(f"{_C}tx")).values()))
        cats = _points(ser.find(f"{_C}cat"), date1904) or _points(ser.find(f"{_C}xVal"), date1904)
        vals = _points(ser.find(f"{_C}val"), date1904) or _points(ser.find(f"{_C}yVal"), date1904)
        points = [f"{cats.get(i, '')} {v}".strip() for i, v in sorted(vals.items())]
        more = ", ..." if len(points) > MAX_POINTS else ""
        points = points[:MAX_POINTS]
        if points or name:
            lines.append(f"{name}: {', '.join(points)}{more}" if name else ", ".join(points) + more)
    if len(series) > MAX_SERIES:
        lines.append(f"(and {len(series) - MAX_SERIES} more series)")
    return ([f"Chart: {named}"] if named else ["Chart:"] if lines else []) + lines


def _title(title: ET.Element | None) -> str:
    """A chart's or an axis's title: its own text, or a cell's it names."""
    if title is None:
        return ""
    named = one_line(" ".join(paragraph_text(p) for p in title.iter(f"{_A}p")))
    return named or one_line(" ".join(_points(title.find(f"{_C}tx")).values()))


def _prop_c(node: ET.Element, name: str) -> str | None:
    found = node.find(f"{_C}{name}")
    return None if found is None else found.get("val", "1")


def _points(ref: ET.Element | None, date1904: bool = False) -> dict[int, str]:
    """The values a chart's reference (c:tx, c:cat, c:val, ...) caches, by point index: text,
    numbers as the chart shows them (by their format code: dates, percentages; no float
    noise), a literal's; of categories of several levels, the first level's."""
    if ref is None:
        return {}
    if ref.find(f"{_C}v") is not None:
        return {0: one_line(ref.findtext(f"{_C}v") or "")[:MAX_LABEL]}  # (named in place)
    for cache in ref.iter():
        if cache.tag == f"{_C}multiLvlStrCache":
            cache = cache.find(f"{_C}lvl")
        elif cache.tag not in (f"{_C}strCache", f"{_C}numCache", f"{_C}strLit", f"{_C}numLit"):
            continue
        numbers = cache is not None and cache.tag in (f"{_C}numCache", f"{_C}numLit")
        code = (cache.findtext(f"{_C}formatCode") or "") if cache is not None else ""
        found = {}
        for pt in cache.findall(f"{_C}pt") if cache is not None else []:
            try:
                at = int(pt.get("idx") or 0)
            except ValueError:
                continue
            value = one_line(pt.findtext(f"{_C}v") or "")[:MAX_LABEL]
            found[at] = _shown(value, pt.get("formatCode") or code, date1904) if numbers else value
        return found
    return {}


def _shown(value: str, code: str, date1904: bool) -> str:
    """A chart's number as its format code shows it (`office_numbers`)."""
    try:
        number = float(value)
    except ValueError:
        return value
    kind = format_kind(code)
    if kind == "percent":
        return number_text(number * 100) + "%"
    if kind is not None:
        return shown_when(number, kind, date1904) or number_text(number)
    return number_text(number)


def diagram_lines(data: ET.Element) -> list[str]:
    """A SmartArt diagram's text: its nodes' text, a bullet each, in the order and at the
    level the diagram shows them (its parent-of connections from the document point, by
    their source order; the order the data part keeps them in is that of their making, and
    put sub-points under the wrong headings); connectors and layout points hold none of the
    user's. Nodes no connection reaches come last."""
    points = data.find(f"{_DGM}ptLst")
    nodes = {}
    root = None
    for pt in points.findall(f"{_DGM}pt") if points is not None else []:
        kind = pt.get("type")
        if kind == "doc" and root is None:
            root = pt.get("modelId")
        elif kind in (None, "node", "asst"):
            nodes[pt.get("modelId")] = pt
    children: dict[str | None, list[tuple[int, int, str | None]]] = {}
    links = data.find(f"{_DGM}cxnLst")
    for n, cxn in enumerate(links.findall(f"{_DGM}cxn") if links is not None else []):
        if cxn.get("type") not in (None, "parOf"):
            continue
        try:
            order = int(cxn.get("srcOrd") or 0)
        except ValueError:
            order = 0
        children.setdefault(cxn.get("srcId"), []).append((order, n, cxn.get("destId")))
    lines: list[str] = []
    seen: set[str | None] = {root}
    todo = [(0, child) for _, _, child in sorted(children.get(root, []), reverse=True)]
    while todo:  # (depth first, without recursion: a diagram may nest deep)
        depth, at = todo.pop()
        if at in seen:
            continue
        seen.add(at)
        pt = nodes.get(at)
        if pt is not None and (text := _node_text(pt)):
            lines.append("  " * depth + "- " + text)
        below = depth + 1 if pt is not None else depth
        todo += [(below, c) for _, _, c in sorted(children.get(at, []), reverse=True)]
    for model_id, pt in nodes.items():
        if model_id not in seen and (text := _node_text(pt)):
            lines.append(f"- {text}")
    return lines


def _node_text(pt: ET.Element) -> str:
    return one_line(" ".join(paragraph_text(p) for p in pt.findall(f"{_DGM}t/{_A}p")))


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
    "sPre": (("sub", "sup", "e"), "_{}^{}{}"),
    "rad": (("deg", "e"), "root{}({})"),
    "limLow": (("e", "lim"), "{}_{}"),
    "limUpp": (("e", "lim"), "{}^{}"),
}
#: invisible operators (function application, times, separator, plus): no text of their own
_INVISIBLE = dict.fromkeys(range(0x2061, 0x2065))


def math_text(node: ET.Element) -> str:
    """An Office Math equation in one line, as typed in a linear format: `m=p/r`, `x^2`,
    `a_i`, `root(x)`, `∑_(i=1)^n x_i`, `(a, b)`, `sin(x)`, `[1, 2; 3, 4]`; a part of more
    than one symbol in parentheses; rows of an equation array apart, by "; "."""
    name = node.tag.removeprefix(_M)
    if node.tag == f"{_M}t":
        return (node.text or "").translate(_INVISIBLE)
    if name in _MATH:
        names, form = _MATH[name]
        texts = [_math_part(node, n) for n in names]
        if name == "rad":
            texts[0] = f"[{texts[0]}]" if texts[0] else ""
        elif name == "f" and _prop(node, "fPr", "type") == "noBar":
            return f"{texts[0]} over {texts[1]}"  # (a binomial's rows, stacked in brackets)
        elif name in ("limLow", "limUpp"):  # lim_(n→∞)
            texts[1] = _grouped(texts[1])
        else:
            texts = [_grouped(t) for t in texts]
        return form.format(*texts)
    if name == "nary":  # ∑, ∫, ∏ ...: its limits, then what it applies to
        sign = _prop(node, "naryPr", "chr") or "∫"
        sub, sup = _math_part(node, "sub"), _math_part(node, "sup")
        limits = (f"_{_grouped(sub)}" if sub else "") + (f"^{_grouped(sup)}" if sup else "")
        return f"{sign}{limits} {_math_part(node, 'e')}"
    if name == "d":  # a delimiter: (a, b), |x|, [0, 1)
        begin, end = _prop(node, "dPr", "begChr"), _prop(node, "dPr", "endChr")
        sep = _prop(node, "dPr", "sepChr")
        inside = [math_text(e) for e in node.findall(f"{_M}e")]
        joined = f"{sep} ".join(inside) if sep else ", ".join(inside)
        return f"{'(' if begin is None else begin}{joined}{')' if end is None else end}"
    if name == "func":  # sin(x): its name, then its argument (in parentheses if not already)
        arg = _math_part(node, "e")
        return _math_part(node, "fName") + (arg if arg[:1] in "([{|" else f"({arg})")
    if name == "eqArr":
        return "; ".join(math_text(e) for e in node.findall(f"{_M}e"))
    if name == "m":  # a matrix: rows apart by "; ", cells by ", "
        rows = [
            ", ".join(math_text(e) for e in mr.findall(f"{_M}e")) for mr in node.findall(f"{_M}mr")
        ]
        return "[" + "; ".join(rows) + "]"
    return "".join(
        math_text(child) for child in node if not child.tag.endswith("Pr") and child.tag != _DEL
    )  # (properties hold no text; a tracked deletion's is gone)


def _math_part(node: ET.Element, name: str) -> str:
    found = node.find(f"{_M}{name}")
    return math_text(found) if found is not None else ""


def _grouped(text: str) -> str:
    """A part of an equation as one term: in parentheses when it is more than one symbol
    and not bracketed already."""
    return text if len(text) <= 1 or (text[:1] in "([{" and text[-1:] in ")]}") else f"({text})"


def _prop(node: ET.Element, props: str, name: str) -> str | None:
    """The value of a property of an equation's structure (m:dPr/m:begChr/@m:val); None
    when not given ("" when given empty: no delimiter)."""
    found = node.find(f"{_M}{props}/{_M}{name}")
    return None if found is None else found.get(f"{_M}val", "")
