"""The text of word-processor documents and e-books, read with the standard library: Word's
.docx (Office Open XML), OpenDocument's .odt and EPUB books (XHTML chapters, in reading order);
and what every office reader shares (`Archive`: a zip read within bounds, its XML checked;
`OfficeText`, `OfficeError`). `indexing.office` says which kind a file is and reads it.

Each is a zip of XML files. What is read: paragraphs in order, headings (a Word paragraph
whose style is a heading or has an outline level, an OpenDocument `text:h`, a chapter's
<h1-6>), list items as "- " lines, table rows as cells joined by " | " (as HTML tables are),
text boxes and frames as paragraphs after the one they are anchored in, Word's inserted
symbols (`w:sym`) as their characters, and the title from the document's metadata. Left out:
deleted and moved-away tracked changes, hidden runs, field codes, footnotes, comments, headers and footers. A
password-protected file or a book with DRM is refused as such.

Unpacking is bounded (`MAX_UNPACKED` in all, read by the bytes actually inflated, not the
sizes the archive claims), an XML part of more than `MAX_TAGS` tags is refused before it is
parsed, and XML that declares entities is refused: a zip bomb, an XML bomb or a "billion
laughs" file is an error, not an exhausted machine.
"""

from __future__ import annotations

import codecs
import posixpath
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote
from xml.etree import ElementTree as ET

from clara.errors import ClaraError
from clara.text import one_line
from indexing.drawing import Linked, graphic_lines, math_text
from indexing.html_text import html_to_text

#: bytes unpacked from one document, all members together
MAX_UNPACKED = 64 << 20
#: XML tags in one part: a parsed tree costs about 16 times its bytes (a 373 KB .docx of
#: 250 MiB of empty paragraphs took 96 s and 4 GB; a real 5 MB of text has ~0.5 M tags)
MAX_TAGS = 4_000_000
#: the most spaces one `text:s` makes (c="100000000" made 400 MB from a 1 KB file)
MAX_SPACES = 100

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
ODF_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
ODF_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
ODF_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_DC = "{http://purl.org/dc/elements/1.1/}"
#: Strict Open XML's namespaces, read as their transitional twins (Word's, Excel's and
#: PowerPoint's "Strict" files were "empty")
_STRICT = [
    (b"http://purl.oclc.org/ooxml/" + strict, b"http://schemas.openxmlformats.org/" + plain)
    for strict, plain in [
        (b"wordprocessingml/main", b"wordprocessingml/2006/main"),
        (b"spreadsheetml/main", b"spreadsheetml/2006/main"),
        (b"presentationml/main", b"presentationml/2006/main"),
        (b"drawingml/main", b"drawingml/2006/main"),
        (b"drawingml/chart", b"drawingml/2006/chart"),
        (b"drawingml/diagram", b"drawingml/2006/diagram"),
        (b"officeDocument/math", b"officeDocument/2006/math"),
        (b"officeDocument/relationships", b"officeDocument/2006/relationships"),
    ]
]
_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_TEXT_BOX = f"{_W}txbxContent"
_GRAPHIC_DATA = "{http://schemas.openxmlformats.org/drawingml/2006/main}graphicData"
#: what a graphic's data holds that clara reads: a chart, a SmartArt diagram
_GRAPHICS = {"{http://schemas.openxmlformats.org/drawingml/2006/chart}chart",
             "{http://schemas.openxmlformats.org/drawingml/2006/diagram}relIds"}  # fmt: skip
_M = "{http://schemas.openxmlformats.org/officeDocument/2006/math}"
#: block-level elements that hold paragraphs and tables (what is moved away is `moveFrom`)
_DOCX_WRAPPERS = {f"{_W}{t}" for t in ("sdt", "sdtContent", "customXml", "ins", "moveTo")}
ODF_DRAW = "{urn:oasis:names:tc:opendocument:xmlns:drawing:1.0}"
_OPF = "{http://www.idpf.org/2007/opf}"
_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"
_HEADING_STYLE = re.compile(r"(heading|berschrift|titre|titolo|encabezado|kop)\s*\d|title$", re.I)


class OfficeError(ClaraError, ValueError):
    """A document that cannot be read: `reason`, and what to do (`hint`)."""

    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.reason, self.hint = reason, hint


@dataclass
class OfficeText:
    text: str
    headings: list[str] = field(default_factory=list)  # in order, as lines of `text`
    title: str | None = None
    pages: list[tuple[int, str]] | None = None  # a presentation's slides: (number, text)
    warnings: list[str] = field(default_factory=list)  # what was left out, for its reader


class Archive:
    """A zip's members, read within MAX_UNPACKED bytes in all."""

    def __init__(self, z: zipfile.ZipFile) -> None:
        self.z, self.left = z, MAX_UNPACKED

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.z.close()

    def has(self, name: str) -> bool:
        return name in self.z.NameToInfo

    def size(self, name: str) -> int:
        """A member's size once unpacked, as the zip declares it (`read` checks it)."""
        info = self.z.NameToInfo.get(name)
        return info.file_size if info is not None else 0

    def read(self, name: str) -> bytes:
        try:
            with self.z.open(name) as member:
                data = member.read(self.left + 1)
        except KeyError:
            raise OfficeError(f"{name} is missing", "re-export the file") from None
        except NotImplementedError as exc:  # (Deflate64, PPMd: before RuntimeError, its base)
            raise OfficeError(f"compressed in a way not read here ({exc})",
                              "re-save it with ordinary zip compression") from None  # fmt: skip
        except RuntimeError:  # an encrypted member
            raise OfficeError(
                "password-protected", "save a copy without a password and index that"
            ) from None
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:  # (bad CRC, cut)
            raise OfficeError(f"damaged ({exc})", "re-download or re-export the file") from None
        if len(data) > self.left:
            raise OfficeError(
                f"larger than {MAX_UNPACKED >> 20} MiB once unpacked",
                "export the part you want to index as text or PDF",
            )
        self.left -= len(data)
        return data

    def xml(self, name: str) -> ET.Element:
        data = self.read(name)
        if b"<!ENTITY" in data:  # (none of these formats declares entities)
            raise OfficeError(f"{name} declares XML entities", "re-export the file")
        if data.count(b"<") > MAX_TAGS:
            raise OfficeError(f"{name} holds more than {MAX_TAGS} XML tags",
                              "export the part you want to index as text or PDF")  # fmt: skip
        for strict, plain in _STRICT:  # (Strict OOXML: read alike)
            if strict in data:
                data = data.replace(strict, plain)
        try:
            return ET.fromstring(data)
        except ET.ParseError as exc:
            raise OfficeError(
                f"{name} is not well-formed XML ({exc})", "re-export the file"
            ) from None


def _joined(blocks: list[str], headings: list[str], title: str | None) -> OfficeText:
    text = "\n\n".join(b for b in blocks if b.strip())
    return OfficeText(text, [h for h in headings if h], (title or "").strip() or None)


# ---- Word (.docx) ----------------------------------------------------------------------------
def docx_text(archive: Archive) -> OfficeText:
    main = "word/document.xml"
    if not archive.has(main) and archive.has("word/document2.xml"):
        main = "word/document2.xml"
    body = archive.xml(main).find(f"{_W}body")  # (Word Online writes document2.xml)
    if body is None:
        raise OfficeError(f"{main} has no body", "re-export the file")
    blocks: list[str] = []
    headings: list[str] = []
    graphics = Linked(archive)
    read = _DocxBlocks(_docx_heading_styles(archive), graphics.of(main), blocks, headings)
    read(body)
    doc = _joined(blocks, headings, core_title(archive, "docProps/core.xml"))
    doc.warnings += graphics.warnings()
    return doc


@dataclass
class _DocxBlocks:
    """Reads the paragraphs and tables of a body, a content control's content or a text box
    into `blocks`, in order: a paragraph's text boxes come after it, each paragraph of theirs
    its own block, then its charts and SmartArt (read from the parts `find` gives)."""

    heading_styles: set[str] | None
    find: Callable[[str | None, str], ET.Element | None]
    blocks: list[str]
    headings: list[str]

    def __call__(self, parent: ET.Element) -> None:
        for element in parent:
            if element.tag == f"{_W}p":
                text, is_heading, listed = _docx_paragraph(element, self.heading_styles)
                if is_heading and text.strip():  # (a numbered heading is no "- " item: its
                    text = one_line(text)  # line must be the heading, or the sections after
                    self.headings.append(text)  # it are lost)
                elif listed and text.strip():
                    text = f"- {text}"
                self.blocks.append(text)
                for box in _docx_text_boxes(element):  # (they were glued to its text)
                    self(box)
                for data in _docx_graphics(element):
                    self.blocks.append("\n".join(graphic_lines(data, self.find)))
            elif element.tag == f"{_W}tbl":
                self.blocks.append(_docx_table(element))
                for data in _docx_graphics(element):  # (in its cells: after the table)
                    self.blocks.append("\n".join(graphic_lines(data, self.find)))
            elif element.tag in _DOCX_WRAPPERS and not _not_read(element):  # a content
                self(element)  # control, custom XML, a tracked insertion: what it holds


def _docx_heading_styles(archive: Archive) -> set[str] | None:
    """Ids of the paragraph styles that are headings (by name, or an outline level), and of
    those based on one; None without a styles part (then a style id such as "Heading1" says
    it: some generators write none)."""
    if not archive.has("word/styles.xml"):
        return None
    based: dict[str, str] = {}
    out: set[str] = set()
    for style in archive.xml("word/styles.xml").iter(f"{_W}style"):
        sid = style.get(f"{_W}styleId") or ""
        name = style.find(f"{_W}name")
        name = (name.get(f"{_W}val") or "") if name is not None else ""
        if _HEADING_STYLE.match(name) or _HEADING_STYLE.match(sid):
            out.add(sid)
        elif (level := style.find(f"{_W}pPr/{_W}outlineLvl")) is not None:
            if (level.get(f"{_W}val") or "9") < "9":
                out.add(sid)
        parent = style.find(f"{_W}basedOn")
        if parent is not None:
            based[sid] = parent.get(f"{_W}val") or ""
    for sid in list(based):  # a style based on a heading style is one
        seen, current = set(), sid
        while current in based and current not in seen and current not in out:
            seen.add(current)
            current = based[current]
        if current in out:
            out.add(sid)
    return out


def _docx_paragraph(p: ET.Element, heading_styles: set[str] | None) -> tuple[str, bool, bool]:
    """(text, is a heading, is a list item) of a w:p, without its text boxes' text."""
    parts: list[str] = []
    for node in _walk_skipping(p, _skipped):  # (a shape's text, in its Choice and Fallback,
        tag = node.tag  # once; no moved-away or hidden text)
        if tag == f"{_W}t":
            parts.append(node.text or "")
        elif tag == f"{_M}oMath":  # (an equation, in reading order: it was dropped)
            parts.append(math_text(node))
        elif tag in (f"{_W}tab", f"{_W}ptab"):
            parts.append("\t")
        elif tag in (f"{_W}br", f"{_W}cr"):
            parts.append("\n")
        elif tag == f"{_W}noBreakHyphen":
            parts.append("-")
        elif tag == f"{_W}sym":
            parts.append(_docx_symbol(node))
    props = p.find(f"{_W}pPr")
    heading = listed = False
    if props is not None:
        style = props.find(f"{_W}pStyle")
        sid = style.get(f"{_W}val") if style is not None else None
        level = props.find(f"{_W}outlineLvl")
        by_style = (
            bool(sid and _HEADING_STYLE.match(sid)) if heading_styles is None
            else sid in heading_styles
        )  # fmt: skip
        heading = by_style or (level is not None and (level.get(f"{_W}val") or "9") < "9")
        number = props.find(f"{_W}numPr/{_W}numId")  # (numbering 0: taken off the paragraph)
        listed = props.find(f"{_W}numPr") is not None and (
            number is None or number.get(f"{_W}val") != "0"
        )
    return "".join(parts).strip(), heading, listed


#: Adobe's Symbol font encoding, for the characters Word's Insert Symbol puts in a `w:sym`
#: of font "Symbol" (Greek letters, arithmetic, arrows, sets, logic): code -> Unicode
_SYMBOL_FONT = dict(
    zip(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        "ΑΒΧΔΕΦΓΗΙϑΚΛΜΝΟΠΘΡΣΤΥςΩΞΨΖαβχδεφγηιϕκλμνοπθρστυϖωξψζ",
        strict=True,
    )
) | {
    0x22: "∀", 0x24: "∃", 0x27: "∋", 0x2A: "∗", 0x2D: "−", 0x40: "≅", 0x5C: "∴", 0x5E: "⊥",
    0x7E: "∼", 0xA1: "ϒ", 0xA2: "′", 0xA3: "≤", 0xA4: "⁄", 0xA5: "∞", 0xA6: "ƒ", 0xA7: "♣",
    0xA8: "♦", 0xA9: "♥", 0xC0: "ℵ", 0xC1: "ℑ", 0xC2: "ℜ", 0xC3: "℘", 0xD2: "®", 0xD3: "©",
    0xD4: "™", 0xE2: "®", 0xE3: "©", 0xE4: "™",
    0xAA: "♠", 0xAB: "↔", 0xAC: "←", 0xAD: "↑", 0xAE: "→", 0xAF: "↓", 0xB0: "°", 0xB1: "±",
    0xB2: "″", 0xB3: "≥", 0xB4: "×", 0xB5: "∝", 0xB6: "∂", 0xB7: "•", 0xB8: "÷", 0xB9: "≠",
    0xBA: "≡", 0xBB: "≈", 0xBC: "…", 0xC4: "⊗", 0xC5: "⊕", 0xC6: "∅", 0xC7: "∩", 0xC8: "∪",
    0xC9: "⊃", 0xCA: "⊇", 0xCB: "⊄", 0xCC: "⊂", 0xCD: "⊆", 0xCE: "∈", 0xCF: "∉", 0xD0: "∠",
    0xD1: "∇", 0xD5: "∏", 0xD6: "√", 0xD7: "⋅", 0xD8: "¬", 0xD9: "∧", 0xDA: "∨", 0xDB: "⇔",
    0xDC: "⇐", 0xDD: "⇑", 0xDE: "⇒", 0xDF: "⇓", 0xE0: "◊", 0xE1: "〈", 0xE5: "∑", 0xF1: "〉",
    0xF2: "∫",
}  # fmt: skip


def _docx_symbol(sym: ET.Element) -> str:
    """The character of a `w:sym` (Insert Symbol's, a hex code in a font): a Unicode code is
    itself; a Symbol font's code (Word adds 0xF000) is its Unicode character; a dingbat
    font's private code (Wingdings' check marks and arrows) has no meaning as text, and a
    bad code is nothing."""
    try:
        code = int(sym.get(f"{_W}char") or "", 16)
    except ValueError:
        return ""
    private = 0xF000 <= code <= 0xF0FF
    symbol = (sym.get(f"{_W}font") or "").strip().lower() == "symbol"
    if symbol and (private or code < 0x100):  # (a Unicode code past them is itself)
        code -= 0xF000 if private else 0  # (its digits and punctuation are ASCII's)
        return _SYMBOL_FONT.get(code, chr(code) if 0x20 <= code < 0x7F else "")
    if private or not 0x20 <= code <= 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return ""
    return chr(code)


def _walk_skipping(
    element: ET.Element, skipped: Callable[[ET.Element], bool]
) -> Iterator[ET.Element]:
    """`element.iter()`, without the subtrees of elements `skipped` says, nor an equation's
    (`math_text` reads it whole)."""
    yield element
    if element.tag == f"{_M}oMath":
        return
    for child in element:
        if not skipped(child):
            yield from _walk_skipping(child, skipped)


def _skipped(node: ET.Element) -> bool:
    """A Word element whose text is not the paragraph's: a shape's Fallback copy, text a
    tracked move took away (it is read where it went), a hidden run, a text box (read after
    the paragraph: `_docx_text_boxes`)."""
    return _not_read(node) or node.tag == _TEXT_BOX


def _not_read(node: ET.Element) -> bool:
    """A shape's Fallback copy, text a tracked move took away, a hidden run, or an empty
    content control's placeholder ("Click or tap here to enter text.")."""
    if node.tag in (_FALLBACK, f"{_W}moveFrom", f"{_W}del"):  # (a deleted equation's text
        return True  # is no w:delText: it was read)
    if node.tag == f"{_W}r":
        return _on(node.find(f"{_W}rPr/{_W}vanish"))
    return node.tag == f"{_W}sdt" and _on(node.find(f"{_W}sdtPr/{_W}showingPlcHdr"))


def _on(flag: ET.Element | None) -> bool:
    """Whether a Word on/off property is on: present, and not val "0", "false" or "off" (which
    Word writes to turn off what a style turned on: such text was dropped as hidden)."""
    return flag is not None and (flag.get(f"{_W}val") or "true").lower() not in (
        "0", "false", "off"
    )  # fmt: skip


def _docx_text_boxes(p: ET.Element) -> list[ET.Element]:
    """The text boxes anchored in a paragraph (each once: not a shape's Fallback copy)."""
    found: list[ET.Element] = []

    def walk(node: ET.Element) -> None:
        for child in node:
            if child.tag == _TEXT_BOX:
                found.append(child)
            elif not _not_read(child):
                walk(child)

    walk(p)
    return found


def _docx_graphics(p: ET.Element) -> list[ET.Element]:
    """The charts and SmartArt drawn in a paragraph or a table's cells (their a:graphicData,
    in groups too; each once: not a shape's Fallback copy, nor one in a text box, read with
    the box)."""
    found: list[ET.Element] = []

    def walk(node: ET.Element) -> None:
        for child in node:
            if child.tag == _GRAPHIC_DATA and any(c.tag in _GRAPHICS for c in child):
                found.append(child)
            elif child.tag != _TEXT_BOX and not _not_read(child):
                walk(child)  # (a group's graphic holds its shapes' own)

    walk(p)
    return found


def _docx_table(table: ET.Element) -> str:
    rows = []
    for row in _docx_parts(table, f"{_W}tr"):  # (a nested table, or a text box, is read in
        cells = [  # its cell, once: not a shape's Fallback copy of it)
            one_line(
                " ".join(
                    _docx_paragraph(p, set())[0]
                    for p in _walk_skipping(cell, _not_read)
                    if p.tag == f"{_W}p"
                )
            )  # fmt: skip
            for cell in _docx_parts(row, f"{_W}tc")
        ]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _docx_parts(parent: ET.Element, tag: str) -> Iterator[ET.Element]:
    """`parent`'s children of `tag` (a table's rows, a row's cells), those inside content
    controls and custom XML too (a row in a content control was dropped)."""
    for child in parent:
        if child.tag == tag:
            yield child
        elif child.tag in _DOCX_WRAPPERS and not _not_read(child):
            yield from _docx_parts(child, tag)


def core_title(archive: Archive, name: str) -> str | None:
    if not archive.has(name):
        return None
    found = archive.xml(name).find(f".//{_DC}title")
    return found.text if found is not None else None


# ---- OpenDocument (.odt) ---------------------------------------------------------------------
def odt_text(archive: Archive) -> OfficeText:
    odf_locked(archive)
    text_root = archive.xml("content.xml").find(f"{ODF_OFFICE}body/{ODF_OFFICE}text")
    if text_root is None:
        raise OfficeError("content.xml holds no text document", "re-export the file")
    blocks: list[str] = []
    headings: list[str] = []
    _odt_blocks(text_root, blocks, headings, listed=False)
    return _joined(blocks, headings, core_title(archive, "meta.xml"))


def odf_locked(archive: Archive) -> None:
    """An OpenDocument file saved with a password is an OfficeError saying so."""
    if archive.has("META-INF/manifest.xml") and (
        b"encryption-data" in archive.read("META-INF/manifest.xml")
    ):  # (LibreOffice's password: content.xml is ciphertext, read as damaged XML)
        raise OfficeError("password-protected", "save a copy without a password and index that")


def _odt_blocks(parent: ET.Element, blocks: list[str], headings: list[str], listed: bool) -> None:
    for element in parent:
        tag = element.tag
        if tag in (f"{ODF_TEXT}p", f"{ODF_TEXT}h"):
            text = odf_inline(element).strip()
            if tag == f"{ODF_TEXT}h" and text:
                text = one_line(text)
                headings.append(text)
            elif listed and text:
                text = f"- {text}"
            blocks.append(text)
            for box in _odt_text_boxes(element):  # its frames' text, after it (it was glued)
                _odt_blocks(box, blocks, headings, listed=False)
        elif tag in (f"{ODF_DRAW}frame", f"{ODF_DRAW}a", f"{ODF_DRAW}g"):  # a frame anchored to the
            # page, alone, linked or in a group (it was dropped)
            for box in _odt_text_boxes(element):
                _odt_blocks(box, blocks, headings, listed=False)
        elif tag == f"{ODF_TEXT}numbered-paragraph":  # a list item standing alone (was dropped)
            _odt_blocks(element, blocks, headings, listed=True)
        elif tag == f"{ODF_TEXT}list":
            for item in element:
                _odt_blocks(item, blocks, headings, listed=True)
        elif tag == f"{ODF_TABLE}table":
            rows = []
            nested = _nested_rows(element)  # (a nested table is read in its cell, once)
            for row in element.iter(f"{ODF_TABLE}table-row"):  # (rows, in their groups)
                if id(row) in nested:
                    continue
                cells = [one_line(" ".join(odf_inline(p) for p in _odt_cell_paragraphs(cell)))
                         for cell in row.findall(f"{ODF_TABLE}table-cell")]  # fmt: skip
                if any(cells):
                    rows.append(" | ".join(cells))
            blocks.append("\n".join(rows))
        elif tag in (f"{ODF_TEXT}section", f"{ODF_TEXT}list-item", f"{ODF_TEXT}list-header"):
            _odt_blocks(element, blocks, headings, listed)


def _nested_rows(table: ET.Element) -> set[int]:
    """ids of the rows of the tables nested in `table`'s cells."""
    return {
        id(row)
        for cell in table.iter(f"{ODF_TABLE}table-cell")
        for inner in cell.iter(f"{ODF_TABLE}table")
        for row in inner.iter(f"{ODF_TABLE}table-row")
    }


def _odt_cell_paragraphs(cell: ET.Element) -> Iterator[ET.Element]:
    """A table cell's paragraphs and headings (a heading was dropped), not those of its
    footnotes or comments (they were read)."""
    for node in _walk_skipping(
        cell, lambda n: n.tag in (f"{ODF_TEXT}note", f"{ODF_OFFICE}annotation")
    ):
        if node.tag in (f"{ODF_TEXT}p", f"{ODF_TEXT}h"):
            yield node


def _odt_text_boxes(element: ET.Element) -> list[ET.Element]:
    """The text boxes of the frames in `element`, outermost only (a box's own frames are
    read with it), and not inside a footnote or comment."""
    found: list[ET.Element] = []

    def walk(node: ET.Element) -> None:
        for child in node:
            if child.tag == f"{ODF_DRAW}text-box":
                found.append(child)
            elif child.tag not in (f"{ODF_TEXT}note", f"{ODF_OFFICE}annotation"):
                walk(child)

    walk(element)
    return found


def odf_inline(element: ET.Element) -> str:
    parts = [element.text or ""]
    for child in element:
        tag = child.tag
        if tag == f"{ODF_TEXT}s":
            count = child.get(f"{ODF_TEXT}c") or "1"
            parts.append(" " * (min(int(count), MAX_SPACES) if count.isdigit() else 1))
        elif tag == f"{ODF_TEXT}tab":
            parts.append("\t")
        elif tag == f"{ODF_TEXT}line-break":
            parts.append("\n")
        elif tag not in (f"{ODF_TEXT}note", f"{ODF_OFFICE}annotation", f"{ODF_DRAW}frame"):
            parts.append(odf_inline(child))  # (not footnotes, comments, frames: after it)
        parts.append(child.tail or "")
    return "".join(parts)


# ---- EPUB ------------------------------------------------------------------------------------
def epub_text(archive: Archive) -> OfficeText:
    rootfile = archive.xml("META-INF/container.xml").find(f".//{_CONTAINER}rootfile")
    if rootfile is None or not rootfile.get("full-path"):
        raise OfficeError("META-INF/container.xml names no package", "re-export the book")
    if archive.has("META-INF/encryption.xml"):  # DRM (font obfuscation alone is read)
        algorithms = {m.get("Algorithm") for m in archive.xml("META-INF/encryption.xml").iter()
                      if m.tag.endswith("EncryptionMethod")}  # fmt: skip
        if algorithms - _FONT_OBFUSCATION:
            raise OfficeError("DRM-protected (its chapters are encrypted)",
                              "index a copy without DRM, or its text exported")  # fmt: skip
    opf_path = rootfile.get("full-path") or ""
    package = archive.xml(opf_path)
    base = posixpath.dirname(opf_path)
    items = {
        item.get("id"): item
        for item in package.iter(f"{_OPF}item")
        if item.get("id") and item.get("href")
    }
    blocks: list[str] = []
    headings: list[str] = []
    # The table of contents (EPUB 3's nav document, EPUB 2's guide "toc") is left out: its
    # lines are the chapters' headings, and took their places as the sections' context.
    guide = package.iter(f"{_OPF}reference")
    contents = {_epub_name(base, r.get("href")) for r in guide
                if (r.get("type") or "").lower() == "toc"}  # fmt: skip
    contents |= {_epub_name(base, i.get("href")) for i in items.values()
                 if "nav" in (i.get("properties") or "").split()}  # fmt: skip
    for ref in package.iter(f"{_OPF}itemref"):
        item = items.get(ref.get("idref"))
        if item is None or "html" not in (item.get("media-type") or ""):
            continue
        name = _epub_name(base, item.get("href"))
        if not archive.has(name) or name in contents:
            continue
        page = html_to_text(_xml_text(archive.read(name)))
        blocks.append(page.text)
        headings += page.headings
    title = package.find(f".//{_DC}title")
    return _joined(blocks, headings, title.text if title is not None else None)


def _epub_name(base: str, href: str | None) -> str:
    """The archive name of a package's `href` ("chapter%201.xhtml#s2" too)."""
    return posixpath.normpath(posixpath.join(base, unquote((href or "").split("#")[0])))


#: encryption.xml's methods that only obfuscate fonts (IDPF's, Adobe's): the text is plain
_FONT_OBFUSCATION = {"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"}


def _xml_text(data: bytes) -> str:
    """An XHTML chapter's text: UTF-16 or UTF-8 by its BOM, else the encoding its XML prolog
    declares (UTF-8 if none; the spec allows UTF-16, and older books declare Latin-1)."""
    for bom, codec in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                       (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    declared = re.match(rb"""<\?xml[^>]*encoding=["']([A-Za-z0-9._-]+)["']""", data[:200])
    try:
        codec = codecs.lookup(declared[1].decode()).name if declared else "utf-8"
    except LookupError:
        codec = "utf-8"
    return data.decode(codec, errors="replace")
