"""Word (.docx), OpenDocument (.odt), EPUB, PowerPoint (.pptx) and Excel (.xlsx) files: read
with their headings, lists, tables and titles, indexed and found by `clara-index add` /
`search`; damaged, encrypted or oversized ones refused in one line. The Word, OpenDocument and
EPUB files are built here as Word, LibreOffice and e-book tools write them (a zip of XML
parts); the slides and the workbook in tests/data were written by python-pptx and openpyxl
(tests/data/make_office_files.py)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from clara.errors import CorruptDocumentError, EncryptedDocumentError, UnsupportedDocumentError
from indexing import office, office_text
from indexing.readers import read_document

W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def zipped(parts: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return buf.getvalue()


def para(text: str, style: str | None = None, listed: bool = False) -> str:
    props = ""
    if style or listed:
        props = "<w:pPr>" + (f'<w:pStyle w:val="{style}"/>' if style else "")
        props += '<w:numPr><w:ilvl w:val="0"/><w:numId w:val="1"/></w:numPr>' if listed else ""
        props += "</w:pPr>"
    return f'<w:p>{props}<w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>'


def docx(body: str, title: str = "The Harbour Report") -> bytes:
    styles = (
        f"<w:styles {W}>"
        '<w:style w:type="paragraph" w:styleId="berschrift1"><w:name w:val="heading 1"/></w:style>'
        '<w:style w:type="paragraph" w:styleId="MyHeading"><w:basedOn w:val="berschrift1"/>'
        "</w:style>"
        '<w:style w:type="paragraph" w:styleId="Quote"><w:name w:val="Quote"/></w:style>'
        "</w:styles>"
    )
    core = (
        '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/'
        'core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:title>{title}</dc:title></cp:coreProperties>"
    )
    return zipped({
        "[Content_Types].xml": "<Types/>",
        "word/document.xml": f"<w:document {W}><w:body>{body}</w:body></w:document>",
        "word/styles.xml": styles,
        "docProps/core.xml": core,
    })  # fmt: skip


REPORT = (
    para("Storm damage", "berschrift1")
    + para("The harbour wall was rebuilt in 1887 after the great storm.")
    + "<w:p><w:r><w:t>Cost:</w:t><w:tab/><w:t>4,000 pounds</w:t><w:br/><w:t>paid by the town"
    "</w:t></w:r><w:del><w:r><w:delText>DELETED WORDS</w:delText></w:r></w:del>"
    '<w:r><w:fldChar w:fldCharType="begin"/><w:instrText>PAGE</w:instrText></w:r></w:p>'
    + para("stones from the quarry", listed=True)
    + '<w:p><w:r><mc:AlternateContent xmlns:mc="http://schemas.openxmlformats.org/markup-'
    'compatibility/2006"><mc:Choice Requires="wps"><w:txbxContent>'
    + para("In a box.")
    + "</w:txbxContent></mc:Choice><mc:Fallback><w:txbxContent>"
    + para("In a box.")
    + "</w:txbxContent></mc:Fallback></mc:AlternateContent></w:r></w:p>"
    + para("Who paid", "MyHeading")
    + "<w:tbl><w:tr><w:tc>"
    + para("Year")
    + "</w:tc><w:tc>"
    + para("Payer")
    + "</w:tc></w:tr>"
    "<w:tr><w:tc>" + para("1887") + "</w:tc><w:tc>" + para("the town") + "</w:tc></w:tr></w:tbl>"
)


def test_a_docx_reads_as_its_paragraphs_headings_lists_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "report.docx"
    path.write_bytes(docx(REPORT))
    doc = read_document(path)
    assert doc.kind == "docx" and doc.title == "The Harbour Report"
    assert doc.headings == ["Storm damage", "Who paid"]  # a localised id, a style based on it
    assert doc.pages[0].text == (
        "Storm damage\n\n"
        "The harbour wall was rebuilt in 1887 after the great storm.\n\n"
        "Cost:\t4,000 pounds\npaid by the town\n\n"
        "- stones from the quarry\n\n"
        "In a box.\n\n"  # once, though Word writes a shape's text twice
        "Who paid\n\n"
        "Year | Payer\n1887 | the town"
    )  # no deleted text, no field code


def test_an_odt_and_an_epub_read_alike(tmp_path: Path) -> None:
    ns = (
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0"'
    )
    content = (
        f"<office:document-content {ns}><office:body><office:text>"
        '<text:h text:outline-level="1">Storm damage</text:h>'
        '<text:p>The wall<text:s text:c="2"/>was rebuilt in <text:span>1887</text:span>.'
        "<text:note><text:note-body><text:p>A FOOTNOTE</text:p></text:note-body></text:note>"
        "</text:p>"
        "<text:list><text:list-item><text:p>stones</text:p></text:list-item></text:list>"
        "<table:table><table:table-row><table:table-cell><text:p>1887</text:p></table:table-cell>"
        "<table:table-cell><text:p>the town</text:p></table:table-cell></table:table-row>"
        "</table:table></office:text></office:body></office:document-content>"
    )
    meta = (
        '<office:document-meta xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/"><office:meta><dc:title>Harbour</dc:title>'
        "</office:meta></office:document-meta>"
    )
    odt = tmp_path / "report.odt"
    odt.write_bytes(zipped({"mimetype": "application/vnd.oasis.opendocument.text",
                            "content.xml": content, "meta.xml": meta}))  # fmt: skip
    doc = read_document(odt)
    assert doc.kind == "odt" and doc.title == "Harbour" and doc.headings == ["Storm damage"]
    assert doc.pages[0].text == (
        "Storm damage\n\nThe wall  was rebuilt in 1887.\n\n- stones\n\n1887 | the town"
    )

    container = (
        '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
        '<rootfile full-path="OEBPS/book.opf" media-type="application/oebps-package+xml"/>'
        "</rootfiles></container>"
    )
    opf = (
        '<package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Harbour Tales</dc:title>'
        "</metadata><manifest>"
        '<item id="c2" href="text/two.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="c1" href="text/one.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="css" href="style.css" media-type="text/css"/>'
        '</manifest><spine><itemref idref="c1"/><itemref idref="css"/><itemref idref="c2"/>'
        "</spine></package>"
    )

    def chapter(title: str, text: str) -> str:
        return (f'<!DOCTYPE html><html xmlns="http://www.w3.org/1999/xhtml"><body><h1>{title}'
                f"</h1><p>{text}</p><script>hidden()</script></body></html>")  # fmt: skip

    epub = tmp_path / "tales.epub"
    epub.write_bytes(zipped({
        "mimetype": "application/epub+zip", "META-INF/container.xml": container,
        "OEBPS/book.opf": opf, "OEBPS/style.css": "p {}",
        "OEBPS/text/one.xhtml": chapter("The Storm", "The wall fell in 1886."),
        "OEBPS/text/two.xhtml": chapter("The Rebuilding", "It was rebuilt in 1887."),
    }))  # fmt: skip
    doc = read_document(epub)
    assert doc.kind == "epub" and doc.title == "Harbour Tales"
    assert doc.headings == ["The Storm", "The Rebuilding"]  # in reading (spine) order
    assert doc.pages[0].text == (
        "The Storm\n\nThe wall fell in 1886.\n\nThe Rebuilding\n\nIt was rebuilt in 1887."
    )


def test_damaged_encrypted_and_oversized_office_files_are_one_line_errors(
    tmp_path: Path, monkeypatch
) -> None:
    def refused(name: str, data: bytes, error: type, match: str) -> None:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(error, match=match) as info:
            read_document(path)
        assert "\n" not in str(info.value) and str(info.value).startswith(f"{path}: ")

    refused("cut.docx", docx(REPORT)[:200], CorruptDocumentError, r"not a \.docx file")
    refused(
        "no-body.docx", zipped({"x.xml": "<x/>"}), CorruptDocumentError, "document.xml is missing"
    )
    # Word stores a password-protected .docx as an OLE file holding an "EncryptedPackage"
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500) + "EncryptedPackage".encode("utf-16-le")
    refused("locked.docx", ole, EncryptedDocumentError, "password-protected")
    refused("locked.xlsx", ole, EncryptedDocumentError, "password-protected")  # (read now)
    refused("locked.xls", ole, UnsupportedDocumentError, r"unsupported file type \(spreadsheet")
    refused("locked", ole, EncryptedDocumentError, "password-protected")  # (no extension:
    # an upload saved without it was an "unsupported legacy Office document")
    laughs = (f'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">]>'
              f"<w:document {W}><w:body>{para('&a;')}</w:body></w:document>")  # fmt: skip
    refused("laughs.docx", zipped({"word/document.xml": laughs}), CorruptDocumentError,
            "declares XML entities")  # fmt: skip
    # a zip bomb: counted by the bytes inflated, whatever sizes the archive claims
    monkeypatch.setattr(office_text, "MAX_UNPACKED", 1 << 16)
    big = docx(para("water " * 20_000))
    assert len(big) < 1 << 16
    refused("bomb.docx", big, CorruptDocumentError, "larger than 0 MiB once unpacked")


def test_clara_index_adds_a_folder_of_them_and_finds_their_text(
    capsys, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """A folder with a .docx is indexed whole (a folder's .docx files were skipped as an
    unsupported type, and one named alone refused), and a search finds its table's row."""
    import json

    from indexing import cli

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "report.docx").write_bytes(docx(REPORT))
    (folder / "notes.md").write_text("# Notes\n\nThe museum opened in 1902.\n")
    index = tmp_path / "index"
    model = ["--model", str(tiny_llama_dir), "--index", str(index)]
    assert cli.main(["add", str(folder), *model]) == 0
    capsys.readouterr()
    assert cli.main(["search", "1887 | the town", *model, "--json", "--mode", "lexical"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]
    assert top["file"] == "report.docx" and "1887 | the town" in top["text"]


def test_what_an_audit_of_real_tools_files_found(tmp_path: Path) -> None:
    """An audit of files as Word, LibreOffice and e-book tools write them."""
    from clara.errors import EncryptedDocumentError
    from indexing.context import find_headings

    def read(name: str, data: bytes):
        path = tmp_path / name
        path.write_bytes(data)
        return read_document(path)

    # a numbered heading was a "- " item, and a soft hyphen in a heading: its line did not
    # match, and every section after it was lost
    body = (
        '<w:p><w:pPr><w:pStyle w:val="berschrift1"/><w:numPr><w:ilvl w:val="0"/>'
        '<w:numId w:val="1"/></w:numPr></w:pPr><w:r><w:t>Background</w:t></w:r></w:p>'
        + para("Text one.")
        + para("Re\u00adsults", "berschrift1")
        + para("Text two.")
    )
    doc = read("numbered.docx", docx(body))
    found = find_headings(doc.pages[0].text, doc.kind, doc.headings)
    assert [h for _, h in found] == ["Background", "Results"]
    # Word Online's document2.xml, Strict Open XML's namespace, and a name without .docx
    strict = zipped({"word/document2.xml": f"<w:document {W}><w:body>{para('Strict text.')}"
                     "</w:body></w:document>".replace(
                         "schemas.openxmlformats.org/wordprocessingml/2006/main",
                         "purl.oclc.org/ooxml/wordprocessingml/main")})  # fmt: skip
    assert read("strict", strict).pages[0].text == "Strict text."
    # text a tracked move took away and hidden runs are not read (moved text was twice)
    moved = ("<w:p><w:moveFrom><w:r><w:t>MOVED AWAY</w:t></w:r></w:moveFrom><w:r><w:rPr>"
             "<w:vanish/></w:rPr><w:t>HIDDEN</w:t></w:r><w:r><w:t>Kept</w:t><w:ptab/>"
             "<w:t>right</w:t></w:r></w:p>")  # fmt: skip
    assert read("moved.docx", docx(moved)).pages[0].text == "Kept\tright"
    # a nested table once, in its cell
    inner = "<w:tbl><w:tr><w:tc>" + para("inner") + "</w:tc></w:tr></w:tbl>"
    table = "<w:tbl><w:tr><w:tc>" + para("outer") + inner + "</w:tc></w:tr></w:tbl>"
    assert read("nested.docx", docx(table)).pages[0].text == "outer inner"
    # ODT: a huge text:s is a few spaces (c=100000000 made 400 MB of a 1 KB file), a bad one
    # one space; a password-protected file says so (it was "not well-formed XML")
    ns = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"')  # fmt: skip
    spaced = (f"<office:document-content {ns}><office:body><office:text><text:p>a"
              '<text:s text:c="100000000"/>b<text:s text:c="x"/>c</text:p></office:text>'
              "</office:body></office:document-content>")  # fmt: skip
    text = read("spaced.odt", zipped({"content.xml": spaced})).pages[0].text
    assert text == "a" + " " * office_text.MAX_SPACES + "b c"
    manifest = "<manifest:manifest><manifest:encryption-data/></manifest:manifest>"
    with pytest.raises(EncryptedDocumentError, match="password-protected"):
        read("locked.odt", zipped({"content.xml": "\x00\x01", "META-INF/manifest.xml": manifest}))
    # EPUB: DRM is refused (it was indexed as binary junk); percent-encoded hrefs with a
    # fragment and a Latin-1 chapter are read
    container = ('<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
                 '<rootfile full-path="book.opf"/></rootfiles></container>')  # fmt: skip
    opf = ('<package xmlns="http://www.idpf.org/2007/opf"><manifest>'
           '<item id="c" href="chapter%201.xhtml#top" media-type="application/xhtml+xml"/>'
           '</manifest><spine><itemref idref="c"/></spine></package>')  # fmt: skip
    latin = (
        '<?xml version="1.0" encoding="iso-8859-1"?><html><body><p>Gr\xfc\xdfe</p></body></html>'
    )
    parts = {"mimetype": "application/epub+zip", "META-INF/container.xml": container,
             "book.opf": opf, "chapter 1.xhtml": latin.encode("latin-1")}  # fmt: skip
    assert read("book.epub", zipped(parts)).pages[0].text == "Grüße"
    drm = ('<encryption xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
           '<enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>'
           "</enc:EncryptedData></encryption>")  # fmt: skip
    with pytest.raises(EncryptedDocumentError, match="DRM-protected"):
        read("drm.epub", zipped({**parts, "META-INF/encryption.xml": drm}))
    # a compressed XML bomb: refused by its tags before it is parsed (96 s and 4 GB)
    bomb = docx("<w:p/>" * (office_text.MAX_TAGS + 1))
    with pytest.raises(CorruptDocumentError, match="more than 4000000 XML tags"):
        read("bomb.docx", bomb)


def test_text_boxes_content_controls_and_frames_keep_their_shape(tmp_path: Path) -> None:
    """A second office-files round: a text box's paragraphs were glued to the line they are
    anchored in; a content control's list items and tables lost their shape (its table was
    one run of words); a docx without styles.xml lost its headings; an ODT frame was glued to
    its paragraph, or dropped when anchored to the page; a numbered paragraph was dropped."""

    def read(name: str, data: bytes):
        path = tmp_path / name
        path.write_bytes(data)
        return read_document(path)

    box = ("<w:p><w:r><w:t>The wall stands.</w:t></w:r><w:r><w:pict><v:shape xmlns:v="
           '"urn:schemas-microsoft-com:vml"><v:textbox><w:txbxContent>' + para("Box one.")
           + para("Box two.") + "</w:txbxContent></v:textbox></v:shape></w:pict></w:r></w:p>")  # fmt: skip
    control = ("<w:sdt><w:sdtPr/><w:sdtContent>" + para("Gates", listed=True)
               + "<w:tbl><w:tr><w:tc>" + para("1887") + "</w:tc><w:tc>" + para("the town")
               + "</w:tc></w:tr><w:sdt><w:sdtContent><w:tr><w:tc>" + para("1921")
               + "</w:tc></w:tr></w:sdtContent></w:sdt></w:tbl>"
               + "<w:customXml>" + para("Custom.") + "</w:customXml>"
               + "</w:sdtContent></w:sdt>")  # fmt: skip
    in_cell = ("<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Cell</w:t></w:r><w:r><mc:AlternateContent "
               'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">'
               "<mc:Choice><w:txbxContent>" + para("boxed") + "</w:txbxContent></mc:Choice>"
               "<mc:Fallback><w:txbxContent>" + para("boxed") + "</w:txbxContent></mc:Fallback>"
               "</mc:AlternateContent></w:r></w:p></w:tc></w:tr></w:tbl>")  # fmt: skip
    doc = read("boxes.docx", docx(box + control + in_cell))
    assert doc.pages[0].text == (
        "The wall stands.\n\nBox one.\n\nBox two.\n\n- Gates\n\n1887 | the town\n1921\n\n"
        "Custom.\n\nCell boxed"
    )  # (a cell's text box once: it was there twice, its Fallback copy too)
    # an equation's text is read (it was dropped: "E = mc2" was "E")
    math = ('<w:p><w:r><w:t xml:space="preserve">Energy: </w:t></w:r><m:oMath xmlns:m="http://'
            'schemas.openxmlformats.org/officeDocument/2006/math"><m:r><m:t>E=m</m:t></m:r>'
            "<m:sSup><m:e><m:r><m:t>c</m:t></m:r></m:e><m:sup><m:r><m:t>2</m:t></m:r></m:sup>"
            "</m:sSup></m:oMath></w:p>")  # fmt: skip
    assert read("math.docx", docx(math)).pages[0].text == "Energy: E=mc^2"
    bare = zipped({"word/document.xml": f"<w:document {W}><w:body>"
                   + para("Findings", "Heading1") + para("All well.") + "</w:body></w:document>"})  # fmt: skip
    assert read("bare.docx", bare).headings == ["Findings"]

    ns = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
          'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
          'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"')  # fmt: skip
    content = (
        f"<office:document-content {ns}><office:body><office:text>"
        '<draw:frame text:anchor-type="page"><draw:text-box><text:p>On the page.</text:p>'
        "</draw:text-box></draw:frame>"
        '<draw:g><draw:frame text:anchor-type="page"><draw:text-box><text:p>In a group.'
        "</text:p></draw:text-box></draw:frame></draw:g>"
        '<text:p>The wall stands.<draw:frame text:anchor-type="as-char"><draw:text-box>'
        "<text:p>In a frame.</text:p></draw:text-box></draw:frame></text:p>"
        "<text:numbered-paragraph><text:p>Numbered alone.</text:p></text:numbered-paragraph>"
        "<table:table><table:table-row><table:table-cell><text:h>Year</text:h><text:p>1887"
        "<text:note><text:note-body><text:p>A FOOTNOTE</text:p></text:note-body></text:note>"
        "</text:p></table:table-cell></table:table-row></table:table>"
        "</office:text></office:body></office:document-content>"
    )
    text = read("frames.odt", zipped({"content.xml": content})).pages[0].text
    assert text == (
        "On the page.\n\nIn a group.\n\nThe wall stands.\n\nIn a frame.\n\n- Numbered alone."
        "\n\nYear 1887"
    )  # (a cell's heading was dropped, its footnote read)


def test_an_epubs_table_of_contents_is_left_out(tmp_path: Path) -> None:
    """An office-files audit: a book's table of contents (EPUB 3's nav document, EPUB 2's
    guide "toc") lists the chapter headings as plain lines, which took the headings' places:
    every section's context pointed at the contents page."""
    from indexing.context import find_headings

    container = ('<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
                 '<rootfile full-path="OEBPS/book.opf"/></rootfiles></container>')  # fmt: skip

    def page(body: str) -> str:
        return f'<html xmlns="http://www.w3.org/1999/xhtml"><body>{body}</body></html>'

    # plain links, as EPUB 2 books write their contents page (a <nav> is dropped as a web
    # page's navigation is)
    nav = page('<p><a href="one.xhtml">The Storm</a></p>'
               '<p><a href="two.xhtml">The Rebuilding</a></p>')  # fmt: skip
    chapters = {
        "OEBPS/one.xhtml": page("<h1>The Storm</h1><p>The wall fell in 1886.</p>"),
        "OEBPS/two.xhtml": page("<h1>The Rebuilding</h1><p>It was rebuilt in 1887.</p>"),
    }
    for version, manifest, guide in (
        ("3.0", '<item id="nav" href="nav.xhtml" properties="nav" '
                'media-type="application/xhtml+xml"/>', ""),
        ("2.0", '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml"/>',
         '<guide><reference type="toc" title="Contents" href="nav.xhtml"/></guide>'),
    ):  # fmt: skip
        opf = (f'<package xmlns="http://www.idpf.org/2007/opf" version="{version}"><manifest>'
               + manifest
               + '<item id="c1" href="one.xhtml" media-type="application/xhtml+xml"/>'
               '<item id="c2" href="two.xhtml" media-type="application/xhtml+xml"/>'
               '</manifest><spine><itemref idref="nav"/><itemref idref="c1"/>'
               f'<itemref idref="c2"/></spine>{guide}</package>')  # fmt: skip
        path = tmp_path / f"book{version}.epub"
        path.write_bytes(zipped({"mimetype": "application/epub+zip",
                                 "META-INF/container.xml": container, "OEBPS/book.opf": opf,
                                 "OEBPS/nav.xhtml": nav, **chapters}))  # fmt: skip
        doc = read_document(path)
        text = doc.pages[0].text
        assert text == (
            "The Storm\n\nThe wall fell in 1886.\n\nThe Rebuilding\n\nIt was rebuilt in 1887."
        ), version
        found = find_headings(text, doc.kind, doc.headings)
        assert [(text[pos:].split("\n")[0], h) for pos, h in found] == [
            ("The Storm", "The Storm"),
            ("The Rebuilding", "The Rebuilding"),
        ]


def test_word_on_off_properties_placeholders_and_removed_numbering(tmp_path: Path) -> None:
    """A library audit: a run with `<w:vanish w:val="0"/>` (Word turning off a style's hidden
    text) was dropped as hidden; an empty content control's placeholder ("Click or tap here
    to enter text.") was indexed; a paragraph whose numbering was taken off (numId 0) read
    as a list item."""
    shown = '<w:p><w:r><w:rPr><w:vanish w:val="0"/></w:rPr><w:t>Shown A.</w:t></w:r></w:p>'
    shown += '<w:p><w:r><w:rPr><w:vanish w:val="false"/></w:rPr><w:t>Shown B.</w:t></w:r></w:p>'
    hidden = "<w:p><w:r><w:rPr><w:vanish/></w:rPr><w:t>Hidden.</w:t></w:r></w:p>"
    placeholder = (
        "<w:sdt><w:sdtPr><w:showingPlcHdr/></w:sdtPr><w:sdtContent>"
        + para("Click or tap here to enter text.")
        + "</w:sdtContent></w:sdt><w:p><w:r><w:t>Name: </w:t></w:r><w:sdt><w:sdtPr>"
        "<w:showingPlcHdr/></w:sdtPr><w:sdtContent><w:r><w:t>Enter a name.</w:t></w:r>"
        "</w:sdtContent></w:sdt></w:p>"
    )
    filled = "<w:sdt><w:sdtPr/><w:sdtContent>" + para("Filled in.") + "</w:sdtContent></w:sdt>"
    unnumbered = (
        '<w:p><w:pPr><w:numPr><w:ilvl w:val="0"/><w:numId w:val="0"/></w:numPr></w:pPr>'
        "<w:r><w:t>Plain again.</w:t></w:r></w:p>"
    )
    path = tmp_path / "flags.docx"
    path.write_bytes(docx(shown + hidden + placeholder + filled + unnumbered))
    text = read_document(path).pages[0].text
    assert text.split("\n\n") == ["Shown A.", "Shown B.", "Name:", "Filled in.", "Plain again."]


def test_words_inserted_symbols_are_their_characters(tmp_path: Path) -> None:
    """Insert Symbol's characters (`w:sym`) were dropped: "α = 0.05" read " = 0.05". A
    Symbol font's code (Word adds 0xF000) is its Unicode character, digits included; a
    Unicode code is itself; a dingbat font's private code and a bad code are nothing."""

    def sym(font: str, char: str) -> str:
        return f'<w:r><w:sym w:font="{font}" w:char="{char}"/></w:r>'

    body = (
        "<w:p>" + sym("Symbol", "F061") + '<w:r><w:t xml:space="preserve"> </w:t></w:r>'
        + sym("Symbol", "F0A3") + sym("Symbol", "F020") + sym("symbol", "F030")
        + "<w:r><w:t>.05, </w:t></w:r>" + sym("Symbol", "44") + "<w:r><w:t>T</w:t></w:r>"
        + sym("Symbol", "F0AE") + sym("Cambria Math", "2211") + sym("Wingdings", "F0FC")
        + sym("Symbol", "zz") + sym("Arial", "D800") + sym("Symbol", "F0FF")
        + sym("Symbol", "F0D3") + sym("Symbol", "2200") + sym("Wingdings", "F041") + "</w:p>"
    )  # fmt: skip
    path = tmp_path / "symbols.docx"
    path.write_bytes(docx(body))
    assert read_document(path).pages[0].text == "α ≤ 0.05, ΔT→∑©∀"


def test_office_text_as_a_library_call() -> None:
    """`office_text(data, "docx")` (no dot) was a KeyError; its errors were ValueErrors only,
    not clara's."""
    from clara.errors import ClaraError, InvalidArgumentError

    data = docx(para("Hello."))
    assert office.office_text(data, "docx").text == office.office_text(
        data, ".DOCX"
    ).text == "Hello."  # fmt: skip
    with pytest.raises(InvalidArgumentError, match="'odg' is not an office file type"):
        office.office_text(data, "odg")
    with pytest.raises(ClaraError, match="not a .docx file"):
        office.office_text(b"plain bytes", ".docx")


DATA = Path(__file__).resolve().parent / "data"


def test_slides_read_as_pages_with_titles_notes_and_tables() -> None:
    """A deck as python-pptx writes it: one page per slide shown, numbered as the deck
    numbers them (slide 3 is hidden), its title a heading, bullets by level, a table's rows,
    a grouped text box, the speaker notes; the hidden slide's text nowhere."""
    doc = read_document(DATA / "deck.pptx")
    assert (doc.kind, doc.title) == ("pptx", "Quarterly review")
    assert [p.number for p in doc.pages] == [1, 2, 4]
    assert doc.headings == ["Quarterly review", "Highlights", "Sales by region"]
    assert doc.pages[1].text == (
        "Highlights\n- Revenue grew in every region\n  - The north led with 1200 units\n"
        "- Returns fell to two percent\n\nNotes: Mention the new warehouse in Oslo."
    )
    assert doc.pages[2].text.splitlines()[1:] == [
        "Region | Units", "North | 1200", "South | 950", "Source: the sales ledger",
    ]  # fmt: skip
    assert all("hidden slide" not in p.text for p in doc.pages)
    assert office.office_kind((DATA / "deck.pptx").read_bytes()) == ".pptx"  # (an upload
    # without its extension)


def test_charts_smartart_and_equations_on_slides_are_read(tmp_path: Path) -> None:
    """An audit left out a slide's charts, SmartArt and equations, which often say what a
    slide is about. A chart (as python-pptx writes it) reads as its title and a line per
    series of values by category; SmartArt as its nodes' text (the diagram's data part, as
    PowerPoint links it), connectors left out; an equation (in mc:AlternateContent, with a
    picture of it for older readers) as its symbols, the picture's text not."""
    doc = read_document(DATA / "charts.pptx")
    assert doc.pages[0].text.splitlines() == [
        "Results", "Chart: Units shipped by region", "Units: North 1200, South 950",
        "Returns: North 24, South 31.5",
    ]  # fmt: skip
    assert doc.pages[1].text.splitlines() == [
        "Chart:",
        "Freight share: Rail 0.5, Road 0.3, Sea 0.2",
    ]
    with zipfile.ZipFile(DATA / "charts.pptx") as z:
        parts = {n: z.read(n) for n in z.namelist()}
    ns = (
        'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
        'xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main" '
        'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
        'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
        'xmlns:a14="http://schemas.microsoft.com/office/drawing/2010/main" '
        'xmlns:m="http://schemas.openxmlformats.org/officeDocument/2006/math" '
        'xmlns:dgm="http://schemas.openxmlformats.org/drawingml/2006/diagram"'
    )
    diagram = (
        '<p:graphicFrame><p:nvGraphicFramePr><p:cNvPr id="4" name="Diagram 3"/>'
        "<p:cNvGraphicFramePr/><p:nvPr/></p:nvGraphicFramePr><a:graphic>"
        '<a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/diagram">'
        '<dgm:relIds r:dm="rId9" r:lo="rId10" r:qs="rId11" r:cs="rId12"/></a:graphicData>'
        "</a:graphic></p:graphicFrame>"
    )
    equation = (
        '<mc:AlternateContent><mc:Choice Requires="a14"><p:sp><p:nvSpPr><p:cNvPr id="5" '
        'name="Eq"/><p:cNvSpPr/><p:nvPr/></p:nvSpPr><p:spPr/><p:txBody><a:bodyPr/><a:p>'
        "<a:r><a:t>Margin:</a:t></a:r><a14:m><m:oMathPara><m:oMath><m:r><m:t>m=</m:t></m:r>"
        "<m:f><m:num><m:r><m:t>p</m:t></m:r></m:num><m:den><m:r><m:t>r</m:t></m:r></m:den>"
        "</m:f></m:oMath></m:oMathPara></a14:m></a:p></p:txBody></p:sp></mc:Choice>"
        '<mc:Fallback><p:sp><p:nvSpPr><p:cNvPr id="5" name="Eq"/><p:cNvSpPr/><p:nvPr/>'
        "</p:nvSpPr><p:spPr/><p:txBody><a:bodyPr/><a:p><a:r><a:t>picture of it</a:t></a:r>"
        "</a:p></p:txBody></p:sp></mc:Fallback></mc:AlternateContent>"
    )
    parts["ppt/slides/slide2.xml"] = (
        f"<p:sld {ns}><p:cSld><p:spTree>{diagram}{equation}</p:spTree></p:cSld></p:sld>"
    )
    rels = parts["ppt/slides/_rels/slide2.xml.rels"].decode()
    parts["ppt/slides/_rels/slide2.xml.rels"] = rels.replace(
        "</Relationships>",
        '<Relationship Id="rId9" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/diagramData" Target="../diagrams/data1.xml"/></Relationships>',
    )
    point = '<dgm:pt modelId="{{{0}}}"{1}><dgm:t><a:bodyPr/><a:p><a:r><a:t>{2}</a:t></a:r></a:p></dgm:t></dgm:pt>'
    parts["ppt/diagrams/data1.xml"] = (
        f"<dgm:dataModel {ns}><dgm:ptLst>"
        + point.format(0, ' type="doc"', "")
        + point.format(1, "", "Plan the route")
        + point.format(2, ' type="parTrans"', "connector")
        + point.format(3, "", "Load the trucks")
        + point.format(4, ' type="pres"', "layout")
        + "</dgm:ptLst></dgm:dataModel>"
    )
    (path := tmp_path / "charts.pptx").write_bytes(zipped(parts))
    doc = read_document(path)
    assert doc.pages[1].text.splitlines() == [
        "- Plan the route", "- Load the trucks", "Margin: m=p/r",
    ]  # fmt: skip
    # as PowerPoint shows them: by the parent-of connections, in their source order, a
    # point under its parent (an audit of real decks: stored in the order of their making,
    # sub-points came under the wrong headings); one no connection reaches comes last
    cxn = '<dgm:cxn modelId="{{9{0}}}" srcId="{{{1}}}" destId="{{{2}}}" srcOrd="{3}"{4}/>'
    parts["ppt/diagrams/data1.xml"] = (
        parts["ppt/diagrams/data1.xml"].replace("</dgm:ptLst>", point.format(5, "", "Check the tires")
        + point.format(6, "", "Loose note") + "</dgm:ptLst><dgm:cxnLst>"
        + cxn.format(1, 0, 1, 1, "") + cxn.format(2, 0, 3, 0, "") + cxn.format(3, 3, 5, 0, "")
        + cxn.format(4, 3, 4, 0, ' type="presOf"') + "</dgm:cxnLst>")
    )  # fmt: skip
    path.write_bytes(zipped(parts))
    assert read_document(path).pages[1].text.splitlines()[:4] == [
        "- Load the trucks", "  - Check the tires", "- Plan the route", "- Loose note",
    ]  # fmt: skip
    # a chart part that cannot be read is left out, said in a warning: not the whole deck
    parts["ppt/charts/chart1.xml"] = b"<c:chartSpace broken"
    path.write_bytes(zipped(parts))
    doc = read_document(path)
    assert doc.pages[0].text == "Results" and any(
        "1 chart or diagram left out" in w for w in doc.warnings
    )


def test_a_word_files_charts_are_read_after_their_paragraph(tmp_path: Path) -> None:
    """A chart drawn in a Word paragraph (its part as python-pptx writes it, linked from the
    document as Word links it) reads as on a slide, in a block after the paragraph; a
    picture adds nothing."""
    with zipfile.ZipFile(DATA / "charts.pptx") as z:
        chart = z.read("ppt/charts/chart1.xml")
    graphic = (
        '<w:r><w:drawing><wp:inline xmlns:wp="http://schemas.openxmlformats.org/'
        'drawingml/2006/wordprocessingDrawing"><a:graphic xmlns:a="http://schemas.'
        'openxmlformats.org/drawingml/2006/main"><a:graphicData uri="http://schemas.'
        'openxmlformats.org/drawingml/2006/{0}">{1}</a:graphicData></a:graphic></wp:inline>'
        "</w:drawing></w:r>"
    )
    chart_ref = (
        '<c:chart xmlns:c="http://schemas.openxmlformats.org/drawingml/2006/chart" xmlns:r="'
        'http://schemas.openxmlformats.org/officeDocument/2006/relationships" r:id="rId7"/>'
    )
    body = (
        para("Shipments rose this spring.")
        + f"<w:p>{graphic.format('chart', chart_ref)}</w:p>"
        + f"<w:p>{graphic.format('picture', '')}</w:p>"
        + para("The end.")
    )
    parts = {}
    with zipfile.ZipFile(io.BytesIO(docx(body))) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    parts["word/charts/chart7.xml"] = chart
    parts["word/_rels/document.xml.rels"] = (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId7" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/chart" Target="charts/chart7.xml"/></Relationships>'
    )
    (path := tmp_path / "report.docx").write_bytes(zipped(parts))
    assert read_document(path).pages[0].text.split("\n\n") == [
        "Shipments rose this spring.",
        "Chart: Units shipped by region\nUnits: North 1200, South 950\n"
        "Returns: North 24, South 31.5",
        "The end.",
    ]


def test_a_workbook_reads_each_visible_sheet_its_rows_naming_their_columns() -> None:
    """A workbook as openpyxl writes it: each visible sheet under its name; under a header
    row every value after its column's name (a chunk of rows far from the top still says
    what each number is), dates as dates (they are stored as day counts), booleans as
    TRUE/FALSE; a sheet whose first row is numbers has no header; a hidden sheet is left out."""
    doc = read_document(DATA / "sales.xlsx")
    assert (doc.kind, doc.title, doc.headings) == ("xlsx", "Sales 2026", ["Sales", "Targets"])
    assert doc.pages[0].text == (
        "Sales\nRegion | Units | Shipped | Paid\n"
        "Region: North | Units: 1200 | Shipped: 2026-03-14 | Paid: TRUE\n"
        "Region: South | Units: 950 | Shipped: 2026-03-20 | Paid: FALSE\n"
        "Region: East\n\n"
        "Targets\n2026 | 5000\nThe target for 2027 is six thousand units."
    )
    assert "Alice" not in doc.pages[0].text  # (the hidden sheet)
    assert office.office_kind((DATA / "sales.xlsx").read_bytes()) == ".xlsx"


def test_a_spreadsheet_that_repeats_its_cells_past_reason_is_refused(tmp_path: Path) -> None:
    """OpenDocument repeats a row or a cell by a count: 600 rows of 170 bytes, each repeated
    100 times, of a cell repeated 200 times, would be 12 million cells of text."""
    ns = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
          'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"')  # fmt: skip
    row = ('<table:table-row table:number-rows-repeated="100"><table:table-cell '
           'table:number-columns-repeated="200" office:value-type="string"><text:p>x</text:p>'
           "</table:table-cell></table:table-row>")  # fmt: skip
    content = (f"<office:document-content {ns}><office:body><office:spreadsheet>"
               f'<table:table table:name="S">{row * 600}</table:table>'
               "</office:spreadsheet></office:body></office:document-content>")  # fmt: skip
    mime = "application/vnd.oasis.opendocument.spreadsheet"
    path = tmp_path / "repeats.ods"
    path.write_bytes(zipped({"mimetype": mime, "content.xml": content}))
    with pytest.raises(CorruptDocumentError, match="repeats its cells more than 1000000 times"):
        read_document(path)


def test_opendocument_slides_and_sheets_read_as_their_office_twins() -> None:
    """The same deck and workbook as LibreOffice's formats (written by odfpy): the same
    pages, headings and lines; a spreadsheet's million padding rows of empty cells cost
    nothing; a date with a time keeps it."""
    deck, twin = read_document(DATA / "deck.odp"), read_document(DATA / "deck.pptx")
    assert (deck.kind, deck.title, deck.headings) == ("odp", twin.title, twin.headings)
    assert [p.number for p in deck.pages] == [1, 2, 4]
    assert deck.pages[1].text == twin.pages[1].text  # (bullets by level, then the notes)
    assert deck.pages[2].text == "Sales by region"  # (its page number frame left out)
    book = read_document(DATA / "sales.ods")
    assert (book.kind, book.title, book.headings) == ("ods", "Sales 2026", ["Sales"])
    assert book.pages[0].text == (
        "Sales\nRegion | Units | Shipped | Paid\n"
        "Region: North | Units: 1200 | Shipped: 2026-03-14 | Paid: TRUE\n"
        "Region: South | Units: 950.5 | Shipped: 2026-03-20 09:30:00 | Paid: FALSE"
    )
    for name, kind in [("deck.odp", ".odp"), ("sales.ods", ".ods")]:
        assert office.office_kind((DATA / name).read_bytes()) == kind


def test_a_slide_deck_is_indexed_and_its_slide_cited(
    capsys, tmp_path: Path, tiny_llama_dir
) -> None:
    """`clara-index add` of a .pptx and an .xlsx (refused before as "unsupported file type"):
    a search finds a slide's bullet on that slide's page, and a spreadsheet's row."""
    import json
    import shutil

    from indexing import cli

    folder = tmp_path / "docs"
    folder.mkdir()
    shutil.copy(DATA / "deck.pptx", folder)
    shutil.copy(DATA / "sales.xlsx", folder)
    model = ["--model", str(tiny_llama_dir), "--index", str(tmp_path / "index")]
    assert cli.main(["add", str(folder), *model]) == 0
    capsys.readouterr()
    found = ["search", "--json", "--mode", "lexical", *model]
    assert cli.main([*found, "warehouse in Oslo"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]
    assert top["file"] == "deck.pptx" and "Oslo" in top["text"]
    assert (top["page_start"], top["page_end"]) == (2, 2)  # (its notes: a chunk per slide)
    assert cli.main([*found, "Shipped 2026-03-20"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]
    assert top["file"] == "sales.xlsx" and "Region: South" in top["text"]
    assert cli.main(["search", "--mode", "lexical", *model, "warehouse in Oslo"]) == 0
    assert "deck.pptx  slide 2" in capsys.readouterr().out  # (a deck's pages are slides)
    assert cli.main([*found, "the sales ledger"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]  # (slide 3 hidden: the last is 4)
    assert (top["file"], top["page_start"], top["page_end"]) == ("deck.pptx", 4, 4)


S = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
SHEET_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"


def xlsx(rows: str, shared: list[str] = (), styles: str = "", strict: bool = False) -> bytes:
    """A workbook of one sheet "S" whose sheetData holds `rows` (as Excel writes the parts)."""
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    rels = [("rId1", SHEET_REL, "worksheets/sheet1.xml"),
            ("rId2", rel + "/sharedStrings", "sharedStrings.xml"),
            ("rId3", rel + "/styles", "styles.xml")]  # fmt: skip
    parts = {
        "xl/workbook.xml": f'<workbook {S} xmlns:r="{rel}"><sheets>'
        '<sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": '<Relationships xmlns="http://schemas.openxmlformats.org/'
        'package/2006/relationships">' + "".join(
            f'<Relationship Id="{i}" Type="{t}" Target="{x}"/>' for i, t, x in rels
        ) + "</Relationships>",
        "xl/worksheets/sheet1.xml": f"<worksheet {S}><sheetData>{rows}</sheetData></worksheet>",
        "xl/sharedStrings.xml": f"<sst {S}>" + "".join(f"<si><t>{x}</t></si>" for x in shared)
        + "</sst>",
        "xl/styles.xml": f"<styleSheet {S}>{styles}</styleSheet>",
    }  # fmt: skip
    if strict:  # (Excel's "Strict Open XML Spreadsheet")
        for name, text in parts.items():
            parts[name] = text.replace(
                "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
                "http://purl.oclc.org/ooxml/spreadsheetml/main",
            ).replace(
                'http://schemas.openxmlformats.org/officeDocument/2006/relationships"',
                'http://purl.oclc.org/ooxml/officeDocument/relationships"',
            )
    return zipped(parts)


def cells(*values: str) -> str:
    return "<row>" + "".join(values) + "</row>"


def test_what_an_audit_of_crafted_workbooks_found(tmp_path: Path) -> None:
    """An audit of the new readers: a 36 KB workbook whose cells all named one 30 MB shared
    string took 6 GB before it failed; rows nested in rows took minutes; a Strict file was
    "empty"; times read as 1899 dates, percentages and float noise as stored."""
    import time

    def read(name: str, data: bytes):
        path = tmp_path / name
        path.write_bytes(data)
        return read_document(path)

    big = "ab" * 20_000  # (40,000 characters: one cell holds 32,767 at most, as Excel's)
    one = read("one.xlsx", xlsx(cells('<c t="s"><v>0</v></c>'), [big]))
    assert len(one.pages[0].text) == len("S\n") + 32_767
    many = xlsx("".join(cells('<c t="s"><v>0</v></c>') for _ in range(3000)), [big])
    with pytest.raises(CorruptDocumentError, match="more than 64 MiB of text"):
        read("many.xlsx", many)
    long_header = cells('<c t="s"><v>2</v></c>', '<c t="s"><v>2</v></c>')  # (written before
    named = xlsx(long_header + cells("<c><v>1</v></c>", "<c><v>2</v></c>") * 2000, [big, "", big])
    assert read("named.xlsx", named).pages[0].text.splitlines()[2].startswith("abab")  # each
    # value, its header cut: 2000 rows of two 32,767-character labels were 131 MB)
    assert len(read("named.xlsx", named).pages[0].text) < 2_000_000
    nested = "<row>" * 3000 + '<c t="s"><v>0</v></c>' + "</row>" * 3000
    start = time.perf_counter()
    assert read("nested.xlsx", xlsx(nested + cells('<c t="s"><v>1</v></c>'), ["in", "top"]))
    assert time.perf_counter() - start < 5
    strict = read("strict.xlsx", xlsx(cells('<c t="s"><v>0</v></c>'), ["Strict"], strict=True))
    assert strict.pages[0].text == "S\nStrict"
    styles = ('<numFmts><numFmt numFmtId="164" formatCode="hh:mm"/>'
              '<numFmt numFmtId="165" formatCode="yyyy-mm-dd hh:mm:ss.000"/></numFmts>'
              '<cellXfs><xf numFmtId="0"/><xf numFmtId="164"/><xf numFmtId="165"/>'
              '<xf numFmtId="9"/><xf numFmtId="oops"/></cellXfs>')  # fmt: skip
    values = read("values.xlsx", xlsx(
        cells('<c t="s"><v>0</v></c>', '<c t="s"><v>1</v></c>', '<c t="s"><v>2</v></c>',
              '<c t="s"><v>3</v></c>', '<c t="s"><v>4</v></c>')
        + cells('<c s="1"><v>0.75</v></c>', '<c s="2"><v>45366.5</v></c>',
                '<c s="3"><v>0.125</v></c>', '<c><v>0.30000000000000004</v></c>',
                '<c s="4"><v>7</v></c>'),
        ["Start", "Stamp", "Share", "Sum", "Odd"], styles,
    ))  # fmt: skip
    assert values.pages[0].text.splitlines()[-1] == (
        "Start: 18:00:00 | Stamp: 2024-03-15 12:00:00 | Share: 12.5% | Sum: 0.3 | Odd: 7"
    )


def test_formulas_saved_without_their_result_are_named_in_a_warning(tmp_path: Path) -> None:
    """A workbook written by openpyxl keeps formulas without results: they read as empty,
    and nothing said so (a total row indexed as blanks)."""
    rows = cells("<c><v>3</v></c>", "<c><v>4</v></c>") + cells(
        "<c><f>SUM(A1:B1)</f></c>", "<c><f>A1*2</f><v>6</v></c>", "<c><f>B1</f><v></v></c>"
    )
    (path := tmp_path / "totals.xlsx").write_bytes(xlsx(rows))
    doc = read_document(path)
    assert doc.pages[0].text.splitlines()[-1] == " | 6"  # (empty cells keep their place)
    assert [w for w in doc.warnings if "formula" in w] == [
        "2 formula cells saved without a result, read as empty (written by a program that does "
        "not compute formulas, such as openpyxl: open and save the file in Excel or "
        "LibreOffice, then add it with --reread)"
    ]
    (path := tmp_path / "saved.xlsx").write_bytes(xlsx(cells("<c><f>1+1</f><v>2</v></c>")))
    assert not read_document(path).warnings


def test_what_is_called_a_slide_is_what_is_read_as_slides() -> None:
    """The names whose pages are shown as slides (clara/text.py, the web chat) are those the
    readers read as presentations: four lists of one thing, kept equal here."""
    import re

    from clara.text import SLIDE_SUFFIXES

    decks = {ext for ext, kind in office.OFFICE_KINDS.items() if kind in (".pptx", ".odp")}
    assert set(SLIDE_SUFFIXES) == decks
    app = (Path(__file__).resolve().parent.parent / "server/web/app.js").read_text()
    listed = re.search(r"const slides = \[([^\]]*)\]", app).group(1)
    assert set(re.findall(r'"([^"]+)"', listed)) == decks


def test_equations_read_in_one_line_as_typed() -> None:
    """An audit of real files: sums, integrals, brackets, functions, matrices and equation
    arrays came out run together ("i=1nx_i", "fxy", "1234"), an invisible U+2061 stayed in
    the text, and a tracked deletion's symbols were read."""
    from xml.etree import ElementTree as ET

    from indexing.drawing import math_text

    m = 'xmlns:m="http://schemas.openxmlformats.org/officeDocument/2006/math"'
    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'

    def r(text: str) -> str:
        return f"<m:r><m:t>{text}</m:t></m:r>"

    def e(*parts: str, tag: str = "e") -> str:
        return f"<m:{tag}>{''.join(parts)}</m:{tag}>"

    cases = {
        "∑_(i=1)^n x_i": '<m:nary><m:naryPr><m:chr m:val="∑"/></m:naryPr>'
        + e(r("i=1"), tag="sub") + e(r("n"), tag="sup") + e(r("x_i")) + "</m:nary>",
        "f(x, y)": r("f") + "<m:d>" + e(r("x")) + e(r("y")) + "</m:d>",
        "[0, 1)": '<m:d><m:dPr><m:begChr m:val="["/><m:endChr m:val=")"/></m:dPr>'
        + e(r("0")) + e(r("1")) + "</m:d>",
        "sin(x)": "<m:func>" + e(r("sin"), tag="fName") + e(r("x")) + "</m:func>",
        "x=1; y=2": "<m:eqArr>" + e(r("x=1")) + e(r("y=2")) + "</m:eqArr>",
        "[1, 2; 3, 4]": "<m:m>" + "".join(f"<m:mr>{e(r(a))}{e(r(b))}</m:mr>" for a, b in ("12", "34"))
        + "</m:m>",
        "(n over k)": '<m:d><m:e><m:f><m:fPr><m:type m:val="noBar"/></m:fPr>'
        + e(r("n"), tag="num") + e(r("k"), tag="den") + "</m:f></m:e></m:d>",
        "lim_(n→∞) a": "<m:limLow>" + e(r("lim")) + e(r("n→∞"), tag="lim") + "</m:limLow>" + r(" a"),
        "f(x)": r("f\u2061") + "<m:d>" + e(r("x")) + "</m:d>",
        "a=b": r("a=") + f"<w:del {w}>{r('OLD')}</w:del>" + r("b"),
    }  # fmt: skip
    for want, xml in cases.items():
        assert math_text(ET.fromstring(f"<m:oMath {m} {w}>{xml}</m:oMath>")) == want


def test_a_charts_numbers_read_as_it_shows_them() -> None:
    """An audit: a date axis read as day counts ("45292.0"), percentages as fractions ("Q1
    0.125"), Office's own charts with float noise ("4.4000000000000004"), and the axes'
    titles (their units) were left out."""
    from xml.etree import ElementTree as ET

    from indexing.drawing import chart_lines

    c = 'xmlns:c="http://schemas.openxmlformats.org/drawingml/2006/chart"'
    a = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'

    def cache(kind: str, code: str, values: list[str]) -> str:
        pts = "".join(f'<c:pt idx="{i}"><c:v>{v}</c:v></c:pt>' for i, v in enumerate(values))
        fmt = f"<c:formatCode>{code}</c:formatCode>" if code else ""
        return f"<c:{kind}Ref><c:{kind}Cache>{fmt}{pts}</c:{kind}Cache></c:{kind}Ref>"

    def title(text: str) -> str:
        return f"<c:title><c:tx><c:rich><a:p><a:r><a:t>{text}</a:t></a:r></a:p></c:rich></c:tx></c:title>"

    space = (
        f"<c:chartSpace {c} {a}><c:chart>{title('Sales')}<c:plotArea><c:lineChart><c:ser>"
        f"<c:tx>{cache('str', '', ['Share'])}</c:tx>"
        f"<c:cat>{cache('num', 'm/d/yyyy', ['45292', '45323'])}</c:cat>"
        f"<c:val>{cache('num', '0.0%', ['0.125', '0.30000000000000004'])}</c:val>"
        "</c:ser></c:lineChart>"
        f"<c:dateAx>{title('Month')}</c:dateAx><c:valAx>{title('Share of sales')}</c:valAx>"
        "</c:plotArea></c:chart></c:chartSpace>"
    )  # fmt: skip
    assert chart_lines(ET.fromstring(space)) == [
        "Chart: Sales (axes: Month; Share of sales)",
        "Share: 2024-01-01 12.5%, 2024-02-01 30%",
    ]
