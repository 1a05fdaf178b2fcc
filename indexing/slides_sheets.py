"""The text of slides (PowerPoint's .pptx, OpenDocument's .odp) and workbooks (Excel's .xlsx,
OpenDocument's .ods), read with the standard library, as `indexing.office_text` reads Word files
(the same bounded unpacking and XML checks).

Slides: one page per slide shown, in the presentation's order, numbered as the deck numbers
them (hidden slides are left out, and counted), so that a source cites its slide as its page. A slide's title is its heading; then the text of
its other shapes in the order they are drawn (groups inside out), bullet levels as "- " lines,
tables as rows of cells joined by " | ", charts as their title and a line of values per series,
SmartArt as its nodes' text, equations in one line (`math_text`), then its speaker notes after
"Notes:".

Workbooks: each visible sheet under its name as a heading, one line per row. When a sheet's
first row is all text (its column headers) every later row names them ("Region: North |
Sales: 1200"), so that a chunk of rows far from the top still says what each value is.
Numbers are written as they are stored, dates (by their cell's number format) as ISO dates;
formulas by their last computed value. Left out: hidden sheets, charts, comments, images.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from xml.etree import ElementTree as ET

from clara.text import one_line
from indexing.drawing import Linked, graphic_lines, paragraph_text, part_links
from indexing.office_numbers import format_kind, number_text, shown_when
from indexing.office_text import (
    ODF_DRAW,
    ODF_OFFICE,
    ODF_TABLE,
    ODF_TEXT,
    Archive,
    OfficeError,
    OfficeText,
    core_title,
    odf_inline,
    odf_locked,
)

_P = "{http://schemas.openxmlformats.org/presentationml/2006/main}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_S = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
_NOTES = "/notesSlide"  # (the end of a notes relationship's type)
#: placeholders that hold no content of the slide's own (numbers, dates, footers)
_CHROME = {"sldNum", "dt", "ftr", "hdr", "sldImg"}
#: cells with text of one row read at most (a row of 16384 columns is a spreadsheet's largest):
#: those past it are left out, and a warning says so
MAX_COLUMNS = 200
#: times one row with text is written when a file repeats it (OpenDocument's
#: number-rows-repeated: 1048576 copies of a row took a file of a few bytes)
MAX_REPEATS = 100
#: cells with text that repeats make in one workbook, all together: past it, the file is
#: refused (a few megabytes of repeated rows of repeated cells made gigabytes of text)
MAX_REPEATED_CELLS = 1_000_000
#: characters of one cell (Excel's own limit), and of a workbook's text all together: a
#: 36 KB file of cells that all name one 30 MB shared string took 6 GB before it failed
MAX_CELL_CHARS = 32_767
MAX_BOOK_CHARS = 64 << 20
_PRES = "{urn:oasis:names:tc:opendocument:xmlns:presentation:1.0}"
_STYLE = "{urn:oasis:names:tc:opendocument:xmlns:style:1.0}"


# ---- PowerPoint (.pptx) ----------------------------------------------------------------------
def pptx_text(archive: Archive) -> OfficeText:
    main = "ppt/presentation.xml"
    rels = part_links(archive, main)
    order = archive.xml(main).find(f"{_P}sldIdLst")
    pages: list[tuple[int, str]] = []  # (its place in the deck, hidden slides counted)
    headings: list[str] = []
    graphics = Linked(archive)
    for number, slide_id in enumerate(order if order is not None else [], 1):
        found = rels.get(slide_id.get(f"{_R}id") or "")
        if found is None or not archive.has(found[1]):
            continue
        slide = archive.xml(found[1])
        if slide.get("show") in ("0", "false"):  # a hidden slide
            continue
        title, lines = _slide_lines(slide, graphics.of(found[1]))
        said = [
            line
            for kind, notes in graphics.rels(found[1]).values()
            if kind.endswith(_NOTES) and archive.has(notes)
            for line in _slide_lines(archive.xml(notes), graphics.of(notes), notes=True)[1]
        ]
        pages.append((number, _slide(title, lines, said, headings)))
    title = core_title(archive, "docProps/core.xml")
    deck = _deck(pages, headings, (title or "").strip() or None)
    deck.warnings += graphics.warnings()
    return deck


def _slide(title: str, lines: list[str], notes: list[str], headings: list[str]) -> str:
    """A slide's page: its title (added to the deck's `headings`), its lines, then its
    speaker notes."""
    if notes:
        lines = [*lines, "", "Notes: " + notes[0], *notes[1:]]
    if title:
        headings.append(title)
        lines = [title, *lines]
    return "\n".join(lines).strip()


def _deck(pages: list[tuple[int, str]], headings: list[str], title: str | None) -> OfficeText:
    """A deck's text: its slides' pages (number, text) and their titles."""
    if not pages:
        raise OfficeError("no slides to read (none, or all hidden)", "nothing to index")
    text = "\n\n".join(t for _, t in pages if t)
    return OfficeText(text, headings, title, pages)


def _slide_lines(
    slide: ET.Element, find: Callable[[str | None, str], ET.Element | None], notes: bool = False
) -> tuple[str, list[str]]:
    """A slide's title and its other lines, in drawing order (a notes page: the text of its
    body placeholder, the notes themselves); its charts and SmartArt read from the parts
    they are in (`find`: `Linked.of`)."""
    tree = slide.find(f"{_P}cSld/{_P}spTree")
    title, lines = "", []
    for shape in _shapes(tree) if tree is not None else []:
        kind = _placeholder(shape)
        if kind in _CHROME or (notes and kind != "body"):
            continue
        if shape.tag == f"{_P}graphicFrame":
            lines += graphic_lines(shape.find(f"{_A}graphic/{_A}graphicData"), find)
            continue
        body = shape.find(f"{_P}txBody")
        if body is None:
            continue
        paragraphs = [(paragraph_text(p), _level(p)) for p in body.findall(f"{_A}p")]
        paragraphs = [(text, level) for text, level in paragraphs if text]
        if kind in ("title", "ctrTitle") and not title:
            title = one_line(" ".join(text for text, _ in paragraphs))
            continue
        bulleted = kind in ("body", "obj") and not notes and len(paragraphs) > 1
        lines += [("  " * level + "- " + text) if bulleted else text for text, level in paragraphs]
    return title, lines


def _shapes(tree: ET.Element) -> Iterator[ET.Element]:
    """The shapes of a shape tree in drawing order, a group's shapes in its place; of a
    shape PowerPoint writes twice (mc:AlternateContent: an equation, and a picture of it
    for older readers), the first choice that holds shapes."""
    for child in tree:
        if child.tag == f"{_P}grpSp":
            yield from _shapes(child)
        elif child.tag in (f"{_P}sp", f"{_P}graphicFrame"):
            yield child
        elif child.tag == f"{_MC}AlternateContent":
            for choice in child:
                shapes = list(_shapes(choice))
                if shapes:
                    yield from shapes
                    break


def _placeholder(shape: ET.Element) -> str | None:
    """The placeholder type of a shape ("title", "body", ...; "obj" for an untyped one), or
    None for a shape of its own (a text box)."""
    for nv in (f"{_P}nvSpPr", f"{_P}nvGraphicFramePr"):
        ph = shape.find(f"{nv}/{_P}nvPr/{_P}ph")
        if ph is not None:
            return ph.get("type") or "obj"
    return None


def _level(p: ET.Element) -> int:
    props = p.find(f"{_A}pPr")
    try:
        return min(int(props.get("lvl") or 0), 8) if props is not None else 0
    except ValueError:
        return 0


# ---- Excel (.xlsx) ---------------------------------------------------------------------------
#: built-in number formats (ECMA-376 18.8.30) that show a date, a time, both, a percentage
_BUILTIN_FORMATS = {
    **dict.fromkeys((14, 15, 16, 17), "date"),
    **dict.fromkeys((18, 19, 20, 21, 45, 46, 47), "time"),
    22: "datetime",
    **dict.fromkeys((9, 10), "percent"),
}
_ESCAPED = re.compile(r"_x([0-9A-Fa-f]{4})_")  # a character Excel escapes in text (_x000D_)


class _Book:
    """What a workbook's cells are read with: its shared strings, the kind each cell style
    shows (`_BUILTIN_FORMATS`' kinds), its date system, and what is left of MAX_BOOK_CHARS."""

    def __init__(self, archive: Archive, book: ET.Element, rels: dict) -> None:
        self.left = MAX_BOOK_CHARS
        self.strings = _shared_strings(archive, rels)
        self.formats = _cell_formats(archive, rels)
        props = book.find(f"{_S}workbookPr")
        self.date1904 = props is not None and props.get("date1904") in ("1", "true")
        self.unsaved = 0  # formulas saved without their result (they read as empty)

    def spend(self, text: str) -> str:
        self.charge(len(text))
        return text

    def charge(self, chars: int) -> None:
        self.left -= chars
        if self.left < 0:
            raise OfficeError(
                f"holds more than {MAX_BOOK_CHARS >> 20} MiB of text once its cells are read",
                "export the part you want to index as text or CSV",
            )


def xlsx_text(archive: Archive) -> OfficeText:
    main = "xl/workbook.xml"
    book = archive.xml(main)
    rels = part_links(archive, main)
    cells = _Book(archive, book, rels)
    blocks: list[str] = []
    headings: list[str] = []
    warnings: list[str] = []
    sheets = book.find(f"{_S}sheets")
    for sheet in sheets if sheets is not None else []:
        name = one_line(sheet.get("name") or "")
        found = rels.get(sheet.get(f"{_R}id") or "")
        if sheet.get("state") in ("hidden", "veryHidden"):
            continue
        if found is None or not archive.has(found[1]):
            if found is not None and not found[0].endswith("/worksheet"):
                continue  # (a chart sheet, a dialog sheet: no cells)
            raise OfficeError(f"the sheet '{name}' is missing from the file", "re-export it")
        rows, wide = _rows(archive.xml(found[1]), cells)
        if wide:
            warnings.append(f"sheet '{name}': cells past the first {MAX_COLUMNS} of a row left out")
        if rows:
            headings.append(name)
            blocks.append("\n".join([name, *_named(rows, cells.charge)]))
    if cells.unsaved:
        warnings.append(
            f"{cells.unsaved} formula cell{'s' if cells.unsaved > 1 else ''} saved without "
            "a result, read as empty (written by a program that does not compute formulas, "
            "such as openpyxl: open and save the file in Excel or LibreOffice, then add it "
            "with --reread)"
        )
    if not blocks:
        raise OfficeError("no cells to read (empty, or every sheet hidden)", "nothing to index")
    title = core_title(archive, "docProps/core.xml")
    return OfficeText("\n\n".join(blocks), headings, (title or "").strip() or None, None, warnings)


def _shared_strings(archive: Archive, rels: dict[str, tuple[str, str]]) -> list[str]:
    part = next((p for t, p in rels.values() if t.endswith("/sharedStrings")), None)
    if part is None or not archive.has(part):
        return []
    return [_string(si) for si in archive.xml(part).findall(f"{_S}si")]


def _string(node: ET.Element) -> str:
    """A shared or inline string's text: its own text and its runs' (not the phonetic guides
    of Japanese text, `rPh`), Excel's escapes undone, at most MAX_CELL_CHARS."""
    runs = [node.find(f"{_S}t")] + [r.find(f"{_S}t") for r in node.findall(f"{_S}r")]
    text = "".join(t.text or "" for t in runs if t is not None)[: MAX_CELL_CHARS * 2]
    return one_line(_ESCAPED.sub(lambda m: chr(int(m[1], 16)), text))[:MAX_CELL_CHARS]


def _cell_formats(archive: Archive, rels: dict[str, tuple[str, str]]) -> dict[int, str]:
    """The kind each cell style (index of cellXfs) shows, for those that show a date, a time,
    both or a percentage."""
    part = next((p for t, p in rels.values() if t.endswith("/styles")), None)
    if part is None or not archive.has(part):
        return {}
    styles = archive.xml(part)
    kinds = dict(_BUILTIN_FORMATS)
    formats = styles.find(f"{_S}numFmts")
    for fmt in formats if formats is not None else []:
        if (kind := format_kind(fmt.get("formatCode") or "")) is not None:
            kinds[_int(fmt.get("numFmtId"), -1)] = kind
    xfs = styles.find(f"{_S}cellXfs")
    return {
        i: kinds[number]
        for i, xf in enumerate(xfs if xfs is not None else [])
        if (number := _int(xf.get("numFmtId"), 0)) in kinds
    }


def _int(value: str | None, default: int) -> int:
    try:
        return int(value or default)
    except ValueError:
        return default


def _rows(sheet: ET.Element, book: _Book) -> tuple[list[dict[int, str]], bool]:
    """The sheet's rows (empty ones left out), each its cells with text by column; and
    whether a row had more than MAX_COLUMNS of them (those past it are left out). Its own rows
    and cells only: rows nested in rows, read at every depth, took minutes."""
    out: list[dict[int, str]] = []
    wide = False
    data = sheet.find(f"{_S}sheetData")
    for row in data.findall(f"{_S}row") if data is not None else []:
        cells: dict[int, str] = {}
        column = -1
        for c in row.findall(f"{_S}c"):
            column = _column(c.get("r")) if c.get("r") else column + 1
            text = _cell(c, book)
            if not text:
                continue
            if len(cells) >= MAX_COLUMNS:
                wide = True
                break
            cells[column] = book.spend(text)
        if cells:
            out.append(cells)
    return out, wide


def _column(ref: str | None) -> int:
    """'C7' -> 2."""
    n = 0
    for ch in ref or "":
        if not ch.isalpha():
            break
        n = n * 26 + ord(ch.upper()) - 64
    return n - 1


def _cell(c: ET.Element, book: _Book) -> str:
    kind = c.get("t") or "n"
    if kind == "inlineStr":
        inline = c.find(f"{_S}is")
        return _string(inline) if inline is not None else ""
    value = c.find(f"{_S}v")
    raw = (value.text or "").strip() if value is not None else ""
    if not raw:
        if c.find(f"{_S}f") is not None:  # a formula saved without its result: nothing to
            book.unsaved += 1  # read (counted: a warning says so)
        return ""
    if kind == "s":
        try:
            return book.strings[int(raw)]
        except (ValueError, IndexError):
            return ""
    if kind == "b":
        return "TRUE" if raw == "1" else "FALSE"
    if kind == "d":  # (an ISO 8601 date cell)
        return raw.removesuffix("T00:00:00").replace("T", " ")[:MAX_CELL_CHARS]
    if kind != "n":
        return one_line(raw)[:MAX_CELL_CHARS]  # a formula's text result, an error (#N/A)
    try:
        number = float(raw)
    except ValueError:
        return one_line(raw)[:MAX_CELL_CHARS]
    shown = book.formats.get(_int(c.get("s"), 0))
    if shown == "percent":
        return number_text(number * 100) + "%"
    if shown is not None:
        return shown_when(number, shown, book.date1904) or number_text(number)
    return number_text(number)


def _named(rows: list[dict[int, str]], charge: Callable[[int], None]) -> list[str]:
    """Each row as a line, its cells joined by " | ". Under a header row (the first with two
    cells or more, all text, over a column whose cells below hold numbers, dates or TRUE/
    FALSE), each value after its column's header (its first MAX_LABEL characters); rows above
    it (a title) as they are. `charge(n)`: n more characters written (the workbook's bound:
    a long header written before each of many values was gigabytes)."""
    at = next((i for i, r in enumerate(rows) if len(r) >= 2), None)
    header = {c: _label(v) for c, v in rows[at].items()} if at is not None else {}
    typed = (
        header
        and not any(_typed(v) for v in header.values())
        and any(_typed(v) for r in rows[at + 1 :] for c, v in r.items() if c in header)
    )  # (a list of names under names, "Alice | Bob", is no header: "Alice: Carol")
    first = min(min(row) for row in rows)  # (the sheet's first column with text)
    lines = []
    for i, row in enumerate(rows):
        cells = sorted(row.items())
        if typed and i > at:
            lines.append(" | ".join(f"{header[c]}: {v}" if c in header else v for c, v in cells))
        elif cells[-1][0] - first < 2 * len(cells) + 8:  # its empty cells keep their places
            lines.append(" | ".join(row.get(c, "") for c in range(first, cells[-1][0] + 1)))
        else:  # (cells far apart: a line of empty places)
            lines.append(" | ".join(v for _, v in cells))
        charge(len(lines[-1]) - sum(len(v) for v in row.values()))  # (the values: counted)
    return lines


#: characters of a column's header written before each of its values
MAX_LABEL = 64


def _label(header: str) -> str:
    return header if len(header) <= MAX_LABEL else header[: MAX_LABEL - 1].rstrip() + "…"


_TYPED = re.compile(r"-?[\d.,]+%?|\d{4}-\d\d-\d\d( \d\d:\d\d:\d\d)?|\d\d:\d\d:\d\d|TRUE|FALSE")


def _typed(text: str) -> bool:
    """Whether a cell's text is a number, a percentage, a date, a time or a boolean."""
    return bool(_TYPED.fullmatch(text))


# ---- OpenDocument presentations (.odp) and spreadsheets (.ods) -------------------------------
def _odf_body(archive: Archive, kind: str) -> tuple[ET.Element, ET.Element]:
    """An OpenDocument file's content and its body of `kind` ("presentation", ...)."""
    odf_locked(archive)
    content = archive.xml("content.xml")
    body = content.find(f"{ODF_OFFICE}body/{ODF_OFFICE}{kind}")
    if body is None:
        raise OfficeError(f"content.xml holds no {kind}", "re-export the file")
    return content, body


def odp_text(archive: Archive) -> OfficeText:
    content, body = _odf_body(archive, "presentation")
    hidden = _styles_with(
        content, f"{_STYLE}drawing-page-properties", f"{_PRES}visibility", "hidden"
    )
    pages: list[tuple[int, str]] = []
    headings: list[str] = []
    for number, page in enumerate(body.findall(f"{ODF_DRAW}page"), 1):
        if page.get(f"{ODF_DRAW}style-name") in hidden:
            continue
        title, lines = "", []
        for frame in _odp_frames(page):
            kind = frame.get(f"{_PRES}class")
            if kind in ("page-number", "date-time", "footer", "header"):
                continue
            said = _odp_lines(frame)
            if kind == "title" and not title and said:
                title = one_line(" ".join(text for text, _ in said))
                continue
            bulleted = kind == "outline"
            lines += [("  " * level + "- " + t) if bulleted else t for t, level in said]
        notes = page.find(f"{_PRES}notes")
        frames = _odp_frames(notes) if notes is not None else []
        said = [t for frame in frames for t, _ in _odp_lines(frame)]
        pages.append((number, _slide(title, lines, said, headings)))
    return _deck(pages, headings, _odf_title(archive))


def _odp_frames(parent: ET.Element) -> Iterator[ET.Element]:
    """The frames and shapes of a page in drawing order, a group's in its place (not the
    notes page, read apart)."""
    for child in parent:
        if child.tag == f"{ODF_DRAW}g":
            yield from _odp_frames(child)
        elif child.tag.startswith(ODF_DRAW) and child.tag != f"{ODF_DRAW}page-thumbnail":
            yield child


def _odp_lines(frame: ET.Element) -> list[tuple[str, int]]:
    """A frame's or shape's paragraphs (text, list level) and table rows, in order."""
    out: list[tuple[str, int]] = []

    def walk(node: ET.Element, level: int) -> None:
        for child in node:
            if child.tag in (f"{ODF_TEXT}p", f"{ODF_TEXT}h"):
                if text := one_line(odf_inline(child)):
                    out.append((text, max(level, 0)))
            elif child.tag == f"{ODF_TEXT}list":
                walk(child, level + 1)
            elif child.tag == f"{ODF_TABLE}table":
                for row in _table_own_rows(child):
                    cells = [one_line(" ".join(odf_inline(p) for p in c.findall(f"{ODF_TEXT}p")))
                             for c in row.findall(f"{ODF_TABLE}table-cell")]  # fmt: skip
                    if any(cells):
                        out.append((" | ".join(cells), 0))
            elif child.tag not in (f"{ODF_OFFICE}annotation", f"{_PRES}notes"):
                walk(child, level)

    walk(frame, -1)
    return out


def ods_text(archive: Archive) -> OfficeText:
    content, body = _odf_body(archive, "spreadsheet")
    hidden = _styles_with(content, f"{_STYLE}table-properties", f"{ODF_TABLE}display", "false")
    blocks: list[str] = []
    headings: list[str] = []
    warnings: list[str] = []
    budget = [MAX_REPEATED_CELLS, MAX_BOOK_CHARS]
    for table in body.findall(f"{ODF_TABLE}table"):
        if table.get(f"{ODF_TABLE}style-name") in hidden:
            continue
        name = one_line(table.get(f"{ODF_TABLE}name") or "")
        rows, wide = _ods_rows(table, budget)
        if wide:
            warnings.append(f"sheet '{name}': cells past the first {MAX_COLUMNS} of a row left out")
        if rows:
            headings.append(name)
            blocks.append("\n".join([name, *_named(rows, lambda n: _spend(budget, 0, n))]))
    if not blocks:
        raise OfficeError("no cells to read (empty, or every sheet hidden)", "nothing to index")
    return OfficeText("\n\n".join(blocks), headings, _odf_title(archive), None, warnings)


def _ods_rows(table: ET.Element, budget: list[int]) -> tuple[list[dict[int, str]], bool]:
    """A sheet's rows, each its cells with text by column: repeated rows and cells as many
    times as they repeat when they hold text (at most MAX_REPEATS rows, MAX_COLUMNS cells),
    empty ones not at all; and whether a row had more than MAX_COLUMNS cells with text.
    `budget`: [the repeated cells with text, the characters] the workbook may still make."""
    out: list[dict[int, str]] = []
    wide = False
    for row in _table_own_rows(table):
        cells: dict[int, str] = {}
        column = 0
        own = [
            c for c in row if c.tag in (f"{ODF_TABLE}table-cell", f"{ODF_TABLE}covered-table-cell")
        ]
        for at, cell in enumerate(own):
            repeat = _count(cell.get(f"{ODF_TABLE}number-columns-repeated"))
            text = _ods_cell(cell)
            if text:
                times = min(repeat, MAX_COLUMNS - len(cells))
                wide = wide or times < repeat
                _spend(budget, times - 1, len(text) * times)
                cells.update((column + i, text) for i in range(times))
            column += repeat  # (an empty cell keeps the place of the next one)
            if len(cells) >= MAX_COLUMNS:
                wide = wide or any(_ods_cell(c) for c in own[at + 1 :])
                break
        if cells:
            times = min(_count(row.get(f"{ODF_TABLE}number-rows-repeated")), MAX_REPEATS)
            _spend(budget, (times - 1) * len(cells), (times - 1) * sum(map(len, cells.values())))
            out += [cells] * times
    return out, wide


def _table_own_rows(table: ET.Element) -> Iterator[ET.Element]:
    """A table's own rows, those of its row groups too (not those of tables in its cells: a
    file of tables nested in cells, read at every depth, took minutes)."""
    for child in table:
        if child.tag == f"{ODF_TABLE}table-row":
            yield child
        elif child.tag in (f"{ODF_TABLE}table-row-group", f"{ODF_TABLE}table-header-rows",
                           f"{ODF_TABLE}table-rows"):  # fmt: skip
            yield from _table_own_rows(child)


def _spend(budget: list[int], cells: int, chars: int) -> None:
    budget[0] -= cells
    budget[1] -= chars
    if budget[0] < 0:
        raise OfficeError(
            f"repeats its cells more than {MAX_REPEATED_CELLS} times",
            "export the part you want to index as text or CSV",
        )
    if budget[1] < 0:
        raise OfficeError(
            f"holds more than {MAX_BOOK_CHARS >> 20} MiB of text once its cells are read",
            "export the part you want to index as text or CSV",
        )


def _count(value: str | None) -> int:
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1


def _ods_cell(cell: ET.Element) -> str:
    kind = cell.get(f"{ODF_OFFICE}value-type")
    if kind in ("float", "percentage", "currency"):
        try:
            number = float(cell.get(f"{ODF_OFFICE}value") or "")
        except ValueError:
            return ""
        return number_text(number * 100) + "%" if kind == "percentage" else number_text(number)
    if kind == "date":
        when = (cell.get(f"{ODF_OFFICE}date-value") or "")[:64]  # (an ISO date: no longer)
        return when.removesuffix("T00:00:00").replace("T", " ")
    if kind == "boolean":
        return (cell.get(f"{ODF_OFFICE}boolean-value") or "")[:5].upper()
    return one_line(" ".join(odf_inline(p) for p in cell.findall(f"{ODF_TEXT}p")))[:MAX_CELL_CHARS]


def _styles_with(content: ET.Element, props: str, attribute: str, value: str) -> set[str]:
    """The names of the automatic styles whose `props` element has `attribute` = `value` (a
    hidden slide's page style, a hidden sheet's table style)."""
    styles = content.find(f"{ODF_OFFICE}automatic-styles")
    return {
        style.get(f"{_STYLE}name") or ""
        for style in (styles if styles is not None else [])
        if (found := style.find(props)) is not None and found.get(attribute) == value
    }


def _odf_title(archive: Archive) -> str | None:
    title = core_title(archive, "meta.xml")
    return (title or "").strip() or None
