"""The text of slides (PowerPoint's .pptx, OpenDocument's .odp) and workbooks (Excel's .xlsx,
OpenDocument's .ods), read with the standard library, as `indexing.office_text` reads Word files
(the same bounded unpacking and XML checks).

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

from indexing.office_text import (
    _DRAW,
    _OFFICE,
    _TABLE,
    _TEXT,
    OfficeError,
    OfficeText,
    _Archive,
    _core_title,
    _line,
    _odt_inline,
    _odt_locked,
)

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
#: times one row with text is written when a file repeats it (OpenDocument's
#: number-rows-repeated: 1048576 copies of a row took a file of a few bytes)
MAX_REPEATS = 100
#: cells with text that repeats make in one workbook, all together: past it, the file is
#: refused (a few megabytes of repeated rows of repeated cells made gigabytes of text)
MAX_REPEATED_CELLS = 1_000_000
_PRES = "{urn:oasis:names:tc:opendocument:xmlns:presentation:1.0}"
_STYLE = "{urn:oasis:names:tc:opendocument:xmlns:style:1.0}"


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


# ---- OpenDocument presentations (.odp) and spreadsheets (.ods) -------------------------------
def odp_text(archive: _Archive) -> OfficeText:
    _odt_locked(archive)
    content = archive.xml("content.xml")
    body = content.find(f"{_OFFICE}body/{_OFFICE}presentation")
    if body is None:
        raise OfficeError("content.xml holds no presentation", "re-export the file")
    hidden = _styles_with(
        content, f"{_STYLE}drawing-page-properties", f"{_PRES}visibility", "hidden"
    )
    pages: list[tuple[int, str]] = []
    headings: list[str] = []
    for number, page in enumerate(body.findall(f"{_DRAW}page"), 1):
        if page.get(f"{_DRAW}style-name") in hidden:
            continue
        title, lines = "", []
        for frame in _odp_frames(page):
            kind = frame.get(f"{_PRES}class")
            if kind in ("page-number", "date-time", "footer", "header"):
                continue
            said = _odp_lines(frame)
            if kind == "title" and not title and said:
                title = _line(" ".join(text for text, _ in said))
                continue
            bulleted = kind == "outline"
            lines += [("  " * level + "- " + t) if bulleted else t for t, level in said]
        notes = page.find(f"{_PRES}notes")
        said = (
            [t for frame in _odp_frames(notes) for t, _ in _odp_lines(frame)]
            if notes is not None
            else []
        )
        if said:
            lines += ["", "Notes: " + said[0], *said[1:]]
        if title:
            headings.append(title)
            lines.insert(0, title)
        pages.append((number, "\n".join(lines).strip()))
    if not pages:
        raise OfficeError("no slides to read (none, or all hidden)", "nothing to index")
    text = "\n\n".join(t for _, t in pages if t)
    return OfficeText(text, headings, _odf_title(archive), pages)


def _odp_frames(parent: ET.Element) -> Iterator[ET.Element]:
    """The frames and shapes of a page in drawing order, a group's in its place (not the
    notes page, read apart)."""
    for child in parent:
        if child.tag == f"{_DRAW}g":
            yield from _odp_frames(child)
        elif child.tag.startswith(_DRAW) and child.tag != f"{_DRAW}page-thumbnail":
            yield child


def _odp_lines(frame: ET.Element) -> list[tuple[str, int]]:
    """A frame's or shape's paragraphs (text, list level) and table rows, in order."""
    out: list[tuple[str, int]] = []

    def walk(node: ET.Element, level: int) -> None:
        for child in node:
            if child.tag in (f"{_TEXT}p", f"{_TEXT}h"):
                if text := _line(_odt_inline(child)):
                    out.append((text, max(level, 0)))
            elif child.tag == f"{_TEXT}list":
                walk(child, level + 1)
            elif child.tag == f"{_TABLE}table":
                for row in child.iter(f"{_TABLE}table-row"):
                    cells = [_line(" ".join(_odt_inline(p) for p in c.iter(f"{_TEXT}p")))
                             for c in row.findall(f"{_TABLE}table-cell")]  # fmt: skip
                    if any(cells):
                        out.append((" | ".join(cells), 0))
            elif child.tag not in (f"{_OFFICE}annotation", f"{_PRES}notes"):
                walk(child, level)

    walk(frame, -1)
    return out


def ods_text(archive: _Archive) -> OfficeText:
    _odt_locked(archive)
    content = archive.xml("content.xml")
    body = content.find(f"{_OFFICE}body/{_OFFICE}spreadsheet")
    if body is None:
        raise OfficeError("content.xml holds no spreadsheet", "re-export the file")
    hidden = _styles_with(content, f"{_STYLE}table-properties", f"{_TABLE}display", "false")
    blocks: list[str] = []
    headings: list[str] = []
    budget = [MAX_REPEATED_CELLS]
    for table in body.findall(f"{_TABLE}table"):
        if table.get(f"{_TABLE}style-name") in hidden:
            continue
        rows = _ods_rows(table, budget)
        if not rows:
            continue
        name = _line(table.get(f"{_TABLE}name") or "")
        headings.append(name)
        blocks.append("\n".join([name, *_named(rows)]))
    if not blocks:
        raise OfficeError("no cells to read (empty, or every sheet hidden)", "nothing to index")
    return OfficeText("\n\n".join(blocks), headings, _odf_title(archive))


def _ods_rows(table: ET.Element, budget: list[int]) -> list[list[str]]:
    """A sheet's rows of cell texts: repeated rows and cells as many times as they repeat
    when they hold text (at most MAX_REPEATS rows, MAX_COLUMNS cells), empty ones not at all.
    `budget`: the repeated cells with text the workbook may still make (MAX_REPEATED_CELLS)."""
    out: list[list[str]] = []
    for row in table.iter(f"{_TABLE}table-row"):
        cells: list[str] = []
        for cell in row:
            if cell.tag not in (f"{_TABLE}table-cell", f"{_TABLE}covered-table-cell"):
                continue
            text = _ods_cell(cell)
            times = min(
                _count(cell.get(f"{_TABLE}number-columns-repeated")), MAX_COLUMNS - len(cells)
            )
            cells += [text] * times  # (an empty cell keeps the place of the next one)
            if text:
                _spend(budget, times - 1)
            if len(cells) >= MAX_COLUMNS:
                break
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            times = min(_count(row.get(f"{_TABLE}number-rows-repeated")), MAX_REPEATS)
            _spend(budget, (times - 1) * sum(1 for c in cells if c))
            out += [cells] * times
    return out


def _spend(budget: list[int], cells: int) -> None:
    budget[0] -= cells
    if budget[0] < 0:
        raise OfficeError(
            f"repeats its cells more than {MAX_REPEATED_CELLS} times",
            "export the part you want to index as text or CSV",
        )


def _count(value: str | None) -> int:
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1


def _ods_cell(cell: ET.Element) -> str:
    kind = cell.get(f"{_OFFICE}value-type")
    if kind in ("float", "percentage", "currency"):
        return cell.get(f"{_OFFICE}value") or ""
    if kind == "date":
        return (cell.get(f"{_OFFICE}date-value") or "").replace("T00:00:00", "").replace("T", " ")
    if kind == "boolean":
        return (cell.get(f"{_OFFICE}boolean-value") or "").upper()
    return _line(" ".join(_odt_inline(p) for p in cell.findall(f"{_TEXT}p")))


def _styles_with(content: ET.Element, props: str, attribute: str, value: str) -> set[str]:
    """The names of the automatic styles whose `props` element has `attribute` = `value` (a
    hidden slide's page style, a hidden sheet's table style)."""
    styles = content.find(f"{_OFFICE}automatic-styles")
    return {
        style.get(f"{_STYLE}name") or ""
        for style in (styles if styles is not None else [])
        if (found := style.find(props)) is not None and found.get(attribute) == value
    }


def _odf_title(archive: _Archive) -> str | None:
    title = _core_title(archive, "meta.xml")
    return (title or "").strip() or None
