"""The text of PowerPoint slides (.pptx) and Excel workbooks (.xlsx), read with the standard
library, as `indexing.office_text` reads Word files (the same bounded unpacking and XML checks).

Slides: one page per slide shown, in the presentation's order, numbered as the deck numbers
them (hidden slides are left out, and counted), so that a source cites its slide as its page. A slide's title is its heading; then the text of
its other shapes in the order they are drawn (groups inside out), bullet levels as "- " lines,
tables as rows of cells joined by " | ", then its speaker notes after "Notes:".

Workbooks: each visible sheet under its name as a heading, one line per row. When a sheet's
first row is all text (its column headers) every later row names them ("Region: North |
Sales: 1200"), so that a chunk of rows far from the top still says what each value is.
Numbers are written as they are stored, dates (by their cell's number format) as ISO dates;
formulas by their last computed value. Left out: hidden sheets, charts, comments, images.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
from collections.abc import Iterator
from xml.etree import ElementTree as ET

from indexing.office_text import OfficeError, OfficeText, _Archive, _core_title, _line

_P = "{http://schemas.openxmlformats.org/presentationml/2006/main}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_S = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_NOTES = "/notesSlide"  # (the end of a notes relationship's type)
#: placeholders that hold no content of the slide's own (numbers, dates, footers)
_CHROME = {"sldNum", "dt", "ftr", "hdr", "sldImg"}
#: cells of one row written at most (a row of 16384 columns is a spreadsheet's largest)
MAX_COLUMNS = 200


def _rels(archive: _Archive, part: str) -> dict[str, tuple[str, str]]:
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


# ---- PowerPoint (.pptx) ----------------------------------------------------------------------
def pptx_text(archive: _Archive) -> OfficeText:
    main = "ppt/presentation.xml"
    rels = _rels(archive, main)
    order = archive.xml(main).find(f"{_P}sldIdLst")
    pages: list[tuple[int, str]] = []  # (its place in the deck, hidden slides counted)
    headings: list[str] = []
    for number, slide_id in enumerate(order if order is not None else [], 1):
        found = rels.get(slide_id.get(f"{_R}id") or "")
        if found is None or not archive.has(found[1]):
            continue
        slide = archive.xml(found[1])
        if slide.get("show") in ("0", "false"):  # a hidden slide
            continue
        title, lines = _slide_lines(slide)
        for kind, notes in _rels(archive, found[1]).values():
            if kind.endswith(_NOTES) and archive.has(notes):
                said = _slide_lines(archive.xml(notes), notes=True)[1]
                if said:
                    lines += ["", "Notes: " + said[0], *said[1:]]
        if title:
            headings.append(title)
            lines.insert(0, title)
        pages.append((number, "\n".join(lines).strip()))
    if not pages:
        raise OfficeError("no slides to read (none, or all hidden)", "nothing to index")
    title = _core_title(archive, "docProps/core.xml")
    text = "\n\n".join(t for _, t in pages if t)
    return OfficeText(text, headings, (title or "").strip() or None, pages)


def _slide_lines(slide: ET.Element, notes: bool = False) -> tuple[str, list[str]]:
    """A slide's title and its other lines, in drawing order (a notes page: the text of its
    body placeholder, the notes themselves)."""
    tree = slide.find(f"{_P}cSld/{_P}spTree")
    title, lines = "", []
    for shape in _shapes(tree) if tree is not None else []:
        kind = _placeholder(shape)
        if kind in _CHROME or (notes and kind != "body"):
            continue
        if shape.tag == f"{_P}graphicFrame":
            lines += [row for table in shape.iter(f"{_A}tbl") for row in _table_rows(table)]
            continue
        body = shape.find(f"{_P}txBody")
        if body is None:
            continue
        paragraphs = [(_paragraph(p), _level(p)) for p in body.iter(f"{_A}p")]
        paragraphs = [(text, level) for text, level in paragraphs if text]
        if kind in ("title", "ctrTitle") and not title:
            title = _line(" ".join(text for text, _ in paragraphs))
            continue
        bulleted = kind in ("body", "obj", None) and len(paragraphs) > 1
        lines += [("  " * level + "- " + text) if bulleted else text for text, level in paragraphs]
    return title, lines


def _shapes(tree: ET.Element) -> Iterator[ET.Element]:
    """The shapes of a shape tree in drawing order, a group's shapes in its place."""
    for child in tree:
        if child.tag == f"{_P}grpSp":
            yield from _shapes(child)
        elif child.tag in (f"{_P}sp", f"{_P}graphicFrame"):
            yield child


def _placeholder(shape: ET.Element) -> str | None:
    """The placeholder type of a shape ("title", "body", ...; "obj" for an untyped one), or
    None for a shape of its own (a text box)."""
    for nv in (f"{_P}nvSpPr", f"{_P}nvGraphicFramePr"):
        ph = shape.find(f"{nv}/{_P}nvPr/{_P}ph")
        if ph is not None:
            return ph.get("type") or "obj"
    return None


def _paragraph(p: ET.Element) -> str:
    parts = []
    for node in p:
        if node.tag in (f"{_A}r", f"{_A}fld"):
            parts.append("".join(t.text or "" for t in node.iter(f"{_A}t")))
        elif node.tag == f"{_A}br":
            parts.append(" ")
    return _line("".join(parts))


def _level(p: ET.Element) -> int:
    props = p.find(f"{_A}pPr")
    try:
        return min(int(props.get("lvl") or 0), 8) if props is not None else 0
    except ValueError:
        return 0


def _table_rows(table: ET.Element) -> list[str]:
    rows = []
    for tr in table.iter(f"{_A}tr"):
        cells = [_line(" ".join(_paragraph(p) for p in tc.iter(f"{_A}p"))) for tc in tr]
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


# ---- Excel (.xlsx) ---------------------------------------------------------------------------
#: built-in number formats that show a date or a time (ECMA-376 18.8.30)
_DATE_FORMATS = {14, 15, 16, 17, 18, 19, 20, 21, 22, 45, 46, 47}
_QUOTED = re.compile(r'"[^"]*"|\\.|\[[^\]]*\]')  # literal text and colours in a format code


def xlsx_text(archive: _Archive) -> OfficeText:
    main = "xl/workbook.xml"
    book = archive.xml(main)
    rels = _rels(archive, main)
    strings = _shared_strings(archive, rels)
    dates = _date_styles(archive, rels)
    props = book.find(f"{_S}workbookPr")
    epoch = dt.datetime(1904, 1, 1) if props is not None and props.get("date1904") in ("1", "true") else dt.datetime(1899, 12, 30)  # fmt: skip
    blocks: list[str] = []
    headings: list[str] = []
    sheets = book.find(f"{_S}sheets")
    for sheet in sheets if sheets is not None else []:
        found = rels.get(sheet.get(f"{_R}id") or "")
        if sheet.get("state") in ("hidden", "veryHidden") or found is None:
            continue
        if not archive.has(found[1]):
            continue
        rows = _rows(archive.xml(found[1]), strings, dates, epoch)
        if not rows:
            continue
        name = _line(sheet.get("name") or "")
        headings.append(name)
        blocks.append("\n".join([name, *_named(rows)]))
    if not blocks:
        raise OfficeError("no cells to read (empty, or every sheet hidden)", "nothing to index")
    title = _core_title(archive, "docProps/core.xml")
    return OfficeText("\n\n".join(blocks), headings, (title or "").strip() or None)


def _shared_strings(archive: _Archive, rels: dict[str, tuple[str, str]]) -> list[str]:
    part = next((p for t, p in rels.values() if t.endswith("/sharedStrings")), None)
    if part is None or not archive.has(part):
        return []
    out = []
    for si in archive.xml(part).iter(f"{_S}si"):
        # its text runs (not the phonetic guides of Japanese text, `rPh`)
        runs = [si.find(f"{_S}t")] + [r.find(f"{_S}t") for r in si.findall(f"{_S}r")]
        out.append("".join(t.text or "" for t in runs if t is not None))
    return out


def _date_styles(archive: _Archive, rels: dict[str, tuple[str, str]]) -> set[int]:
    """The cell styles (indexes of cellXfs) whose number format shows a date."""
    part = next((p for t, p in rels.values() if t.endswith("/styles")), None)
    if part is None or not archive.has(part):
        return set()
    styles = archive.xml(part)
    custom = set()
    for fmt in styles.iter(f"{_S}numFmt"):
        code = _QUOTED.sub("", (fmt.get("formatCode") or "").lower())
        if re.search(r"[dy]|m{3,}", code) and "0" not in code.split(";")[0]:
            custom.add(int(fmt.get("numFmtId") or -1))
    xfs = styles.find(f"{_S}cellXfs")
    return {
        i
        for i, xf in enumerate(xfs if xfs is not None else [])
        if (number := int(xf.get("numFmtId") or 0)) in _DATE_FORMATS or number in custom
    }


def _rows(
    sheet: ET.Element, strings: list[str], dates: set[int], epoch: dt.datetime
) -> list[list[str]]:
    """The sheet's rows of cell texts (empty rows left out, empty cells as "")."""
    out = []
    for row in sheet.iter(f"{_S}row"):
        cells: dict[int, str] = {}
        for i, c in enumerate(row.iter(f"{_S}c")):
            column = _column(c.get("r")) if c.get("r") else i
            if column >= MAX_COLUMNS:
                continue
            text = _cell(c, strings, dates, epoch)
            if text:
                cells[column] = text
        if cells:
            out.append([cells.get(i, "") for i in range(max(cells) + 1)])
    return out


def _column(ref: str | None) -> int:
    """'C7' -> 2."""
    n = 0
    for ch in ref or "":
        if not ch.isalpha():
            break
        n = n * 26 + ord(ch.upper()) - 64
    return n - 1


def _cell(c: ET.Element, strings: list[str], dates: set[int], epoch: dt.datetime) -> str:
    kind = c.get("t") or "n"
    if kind == "inlineStr":
        return _line("".join(t.text or "" for t in c.iter(f"{_S}t")))
    value = c.find(f"{_S}v")
    raw = (value.text or "") if value is not None else ""
    if not raw:
        return ""
    if kind == "s":
        try:
            return _line(strings[int(raw)])
        except (ValueError, IndexError):
            return ""
    if kind == "b":
        return "TRUE" if raw == "1" else "FALSE"
    if kind == "n" and int(c.get("s") or 0) in dates:
        try:
            when = epoch + dt.timedelta(days=float(raw))
        except (ValueError, OverflowError):
            return raw
        return when.date().isoformat() if when.time() == dt.time() else when.isoformat(" ")
    return _line(raw)  # a number as stored, a formula's text result, an error (#N/A)


def _named(rows: list[list[str]]) -> list[str]:
    """Each row as a line; under a first row of column headers, each value after its header."""
    header = rows[0]
    named = len(rows) > 1 and all(h and not _number(h) for h in header)
    if not named:
        return [" | ".join(rows_cells).strip(" |") for rows_cells in rows]
    lines = [" | ".join(header)]
    for row in rows[1:]:
        pairs = [f"{header[i]}: {v}" if i < len(header) else v for i, v in enumerate(row) if v]
        lines.append(" | ".join(pairs))
    return lines


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
