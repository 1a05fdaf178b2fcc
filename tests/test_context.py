"""Contextual chunks: titles (PDF metadata, first heading, first line, file name), section
headings (Markdown, underlined reST/text, numbered PDF), and the context line of each chunk."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fpdf import FPDF

from indexing.chunking import chunk_document
from indexing.context import (
    chunk_contexts,
    context_line,
    document_title,
    find_headings,
    fit_context,
    recover_contexts,
)
from indexing.readers import read_document

FILLER = " ".join(f"word{i} is here." for i in range(60))


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir: Path):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


def test_markdown_chunks_name_their_document_and_section(tmp_path: Path, tok):
    md = tmp_path / "guide.md"
    md.write_text(
        f"# Git Guide\n\nIntro {FILLER}\n\n## Branches\n\n{FILLER}\n\n"
        f"```\n# not a heading, a comment\n```\n\n## Remote [tracking](http://x)\n\n{FILLER}\n"
    )
    doc = read_document(md)
    assert doc.headings == ["Git Guide", "Branches", "Remote tracking"]
    chunks = chunk_document(doc, tok, max_tokens=64, overlap=0)
    contexts = [c.context for c in chunks]
    assert contexts[0] == ""  # its text opens with the title: nothing to add
    assert "Git Guide / Branches" in contexts and contexts[-1] == "Git Guide / Remote tracking"
    assert "# not a heading" not in " ".join(contexts)
    assert all(c.text in doc.pages[0].text for c in chunks)  # snippets stay the text itself


def test_rest_underlined_headings_and_first_line_title(tmp_path: Path, tok):
    txt = tmp_path / "notes.txt"
    txt.write_text(
        f"Release notes for Foo\n\nInstall\n=======\n\n{FILLER}\n\nUsage\n-----\n{FILLER}"
    )
    chunks = chunk_document(read_document(txt), tok, max_tokens=64, overlap=0)
    assert chunks[0].context == ""  # opens with both
    assert chunks[1].context == "Release notes for Foo / Install"
    assert chunks[-1].context == "Release notes for Foo / Usage"


def test_pdf_metadata_title_and_numbered_headings(tmp_path: Path, tok):
    pdf = FPDF()
    pdf.set_title("Warranty Handbook")
    pdf.set_font("helvetica", size=11)
    for heading in ("1 Introduction", "2.1 Claims and returns"):
        pdf.add_page()
        pdf.cell(0, 7, heading)
        pdf.ln()
        pdf.multi_cell(0, 7, FILLER)
    path = tmp_path / "h.pdf"
    path.write_bytes(bytes(pdf.output()))
    doc = read_document(path)
    assert doc.title == "Warranty Handbook"
    chunks = chunk_document(doc, tok, max_tokens=64, overlap=0)
    assert chunks[0].context == "Warranty Handbook"  # the heading opens the chunk
    assert chunks[1].context == "Warranty Handbook / 1 Introduction"
    assert chunks[-1].context == "Warranty Handbook / 2.1 Claims and returns"


@pytest.mark.parametrize("meta", [None, "Untitled"])
def test_a_pdf_without_a_title_is_titled_by_its_largest_words(tmp_path: Path, tok, meta):
    """A PDF audit: a thesis without a metadata title was titled by its cover's first line,
    "University of Northbridge", in every chunk's context line. The words set largest on
    its first page are its title (a title cut over two lines joined)."""
    pdf = FPDF()
    if meta:
        pdf.set_title(meta)
    pdf.add_page()
    pdf.set_font("helvetica", size=11)
    pdf.cell(0, 7, "University of Northbridge")
    pdf.ln(20)
    pdf.set_font("helvetica", size=24)
    for line in ("Adaptive Scheduling of", "Hospital Night Shifts"):
        pdf.cell(0, 12, line)
        pdf.ln()
    pdf.set_font("helvetica", size=11)
    pdf.multi_cell(0, 7, "Doctoral thesis by K. Weiss. " + FILLER)
    path = tmp_path / "thesis.pdf"
    path.write_bytes(bytes(pdf.output()))
    doc = read_document(path)
    assert doc.title == "Adaptive Scheduling of Hospital Night Shifts"
    chunks = chunk_document(doc, tok, max_tokens=64, overlap=0)
    assert chunks[-1].context == "Adaptive Scheduling of Hospital Night Shifts"
    # a watermark across the page, in the largest type of all, is no title (a review)
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=11)
    pdf.cell(0, 8, "Harbour board minutes, 14 March")
    pdf.ln()
    pdf.multi_cell(0, 6, FILLER)
    with pdf.rotation(45, x=100, y=150):
        pdf.set_font("helvetica", size=80)
        pdf.text(40, 180, "DRAFT")
    path.write_bytes(bytes(pdf.output()))
    assert read_document(path).title in (None, meta)


def test_a_pdf_of_slides_is_chunked_a_slide_at_a_time(tmp_path: Path, tok) -> None:
    """A PDF audit: slides exported to PDF were chunked three slides at a time (a fact on one
    slide cited "pages 3-5"), with the footline on every slide in the text, and a slide of a
    title and a chart was said to be a scan needing OCR. A landscape deck is read as a
    presentation's slides are: one chunk a slide, each titled by its first line."""
    from PIL import Image

    slides = [("Motivation", "Widgets are calibrated once a year"), ("Data", None)]
    slides += [("Main result", "Median field drift: 2.1 % per year"), ("Thanks", "Questions?")]
    pdf = FPDF(orientation="L", format=(90.0, 160.0))  # (mm: 16:9)
    pdf.set_creator("Microsoft® PowerPoint® for Microsoft 365")
    pdf.set_auto_page_break(False)
    for n, (title, point) in enumerate(slides, 1):
        pdf.add_page()
        pdf.set_font("helvetica", size=16)
        pdf.cell(0, 10, title)
        pdf.ln()
        pdf.set_font("helvetica", size=11)
        if point:
            pdf.cell(0, 8, point)
        else:  # a chart
            png = io.BytesIO()
            Image.new("RGB", (60, 40), (30, 90, 200)).save(png, format="PNG")
            pdf.image(png, x=20, y=25, w=100)
        pdf.set_y(-12)
        pdf.set_font("helvetica", size=7)
        pdf.cell(0, 5, f"A. Keeper - Torque drift - ICM 2023   {n} / {len(slides)}")
    path = tmp_path / "talk.pdf"
    path.write_bytes(bytes(pdf.output()))
    doc = read_document(path)
    assert doc.slides and doc.warnings == []
    chunks = chunk_document(doc, tok, max_tokens=256, overlap=0)
    assert [(c.page_start, c.page_end, c.text) for c in chunks] == [
        (1, 1, "Motivation\nWidgets are calibrated once a year"), (2, 2, "Data"),
        (3, 3, "Main result\nMedian field drift: 2.1 % per year"), (4, 4, "Thanks\nQuestions?"),
    ]  # fmt: skip
    for shape in ("P", "L"):  # a report, upright or landscape A4 (a review): no slides
        report = FPDF(orientation=shape)
        for _ in range(3):
            report.add_page()
            report.set_font("helvetica", size=11)
            report.cell(0, 8, "A page of a report.")
        path.write_bytes(bytes(report.output()))
        assert not read_document(path).slides


def test_title_fallbacks_and_context_line():
    assert document_title("", [], None, "dir/report-2024.txt") == "report-2024"
    assert (
        document_title("\n  First line here \nmore", [], "Untitled", "x.txt") == "First line here"
    )
    assert document_title("Heading\n===", [(0, "Heading")], None, "x.txt") == "Heading"
    assert document_title("long " * 30 + "\nHead\n----", [(151, "Head")], None, "x") == "Head"
    assert context_line("T", None) == "T" and context_line("T", "t") == "T"
    assert context_line("T", "Sec") == "T / Sec"
    assert len(document_title("word " * 100, [], None, "x")) <= 80


def test_numbered_lines_that_are_sentences_are_not_headings():
    text = "1. Install the package.\n2 Results\nplain\n3.4 Setup: steps,\n12"
    assert find_headings(text, "pdf") == [(24, "2 Results")]
    other = "1. 서론\n본문.\n2. Überblick\nText.\n3. the next step\nMore.\n4. résumé"
    # (scripts without case count)
    assert [h for _, h in find_headings(other, "pdf")] == ["1. 서론", "2. Überblick"]
    assert find_headings(text, "text") == []  # numbered headings are a PDF thing


def test_pdf_headings_are_told_from_lines_that_only_look_like_them():
    """A PDF audit: a wrapped line of German prose ("2 Tagen erhöhte Ammoniumwerte"), list
    items, a date and a contents list were taken for numbered headings (a chunk's context
    read "… / 5 Conclusion 1"), while "Chapter 4" over "Results", "Abstract" and
    "References" were never found (a Results chapter was labelled "3.3 Scheduler")."""
    text = "\n".join([
        "Minutes of the Board", "14 March 2024", "Contents", "1 Introduction 1",
        "2 Finances 3", "2.2 Adaptive scheduling … 5", "Abstract", "We met and agreed.",
        "1 Betrieb der Anlage", "Im Berichtsjahr zeigten sich nach den starken Regenfällen an",
        "2 Tagen erhöhte Ammoniumwerte, die nach 6 Stunden", "wieder sanken.",
        "2 Finances", "The board decided:", "1. Growth Rates were highest in the control group",
        "2. Membership fees stay unchanged for 2025", "Chapter 4", "Results", "The rosters.",
        "Chapter 5: Outlook", "More.", "Chapter 6", "Conclusions", "Done.", "3.1 Phase 2", "Text.", "References", "[1] A. Author.",
    ])  # fmt: skip
    assert [h for _, h in find_headings(text, "pdf")] == [
        "Contents", "Abstract", "1 Betrieb der Anlage", "2 Finances", "Chapter 4: Results",
        "Chapter 5: Outlook", "Chapter 6: Conclusions", "3.1 Phase 2", "References",
    ]  # fmt: skip


def test_pdf_headings_after_labels_captions_and_headings_are_kept():
    """A review of the rules above: a heading after a keywords line, a caption or a long
    heading was taken for wrapped prose; "7 Maintenance" for a date (its first letters);
    a heading after a table row for a contents entry; prose starting "part 2 of",
    "Chapter 3 we present" or "Appendix B lists" for headings."""
    kept = [
        ("Keywords: seal wear, harbour pumps, maintenance scheduling, night shifts\n"
         "1 Introduction\nPumps.", ["1 Introduction"]),
        ("Figure 3: Distribution of seal wear by pump type and pressure\n4 Discussion\nLow.",
         ["4 Discussion"]),
        ("3.1 Effects of temperature on long-term seal wear\n3.1.1 Field data\nWe measured.",
         ["3.1 Effects of temperature on long-term seal wear", "3.1.1 Field data"]),
        ("Intro.\n7 Maintenance\nSeals.\n8 Decisions\nA.\n3 Marketing\nAds.",
         ["7 Maintenance", "8 Decisions", "3 Marketing"]),
        ("Region | 2023 | 1200\n5 Outlook 2030\nThe plan.", ["5 Outlook 2030"]),
        ("Text.\nAppendix B: Interview questions\nQ1.\nAppendix C\nRaw data\nx",
         ["Appendix B: Interview questions", "Appendix C: Raw data"]),
        ("as described in the following paragraphs of this lease\npart 2 of the lease the "
         "tenant pays rent.\nMore.", []),
        ("as is explained in the rest of this thesis, namely. In\nChapter 3 we present the "
         "method and its results.\nText.", []),
        ("shown in the questionnaire of the study in the appendix as\nAppendix B lists the "
         "interview questions used in the second round of the study and\nthe answers.", []),
    ]  # fmt: skip
    for text, headings in kept:
        assert [h for _, h in find_headings(text, "pdf")] == headings, text


def test_chunk_contexts_use_the_heading_in_force_early_in_the_chunk():
    headings = [(0, "A"), (100, "B")]
    spans = [(0, 90), (10, 110), (95, 300), (200, 260)]
    assert chunk_contexts("T", headings, spans, "x" * 300) == ["T / A", "T / A", "T / B", "T / B"]
    text = "T\nA\n" + "x" * 300
    assert chunk_contexts("T", [(2, "A")], [(0, 100), (50, 200)], text) == ["", "T / A"]


def test_fit_context_cuts_to_the_room_left(tok):
    ctx = "A fairly long document title / and a long section heading too"
    assert fit_context(tok, ctx, 1000) == ctx
    cut = fit_context(tok, ctx, 4)
    assert cut != ctx and len(tok.encode(cut.rstrip("…"), add_special_tokens=False)) <= 5
    assert fit_context(tok, ctx, 0) == ""
    korean = "대한민국 지방자치단체의 재정 건전성 평가 보고서"  # (a cut inside a syllable's bytes)
    cuts = [fit_context(tok, korean, n) for n in range(2, 30)]
    assert all("\ufffd" not in c and korean.startswith(c.rstrip("…")) for c in cuts), cuts


def test_recover_contexts_from_the_file_or_from_the_chunks():
    text = "Guide\n=====\nintro text\n\nSetup\n-----\nsetup text here"
    texts = ["Guide\n=====\nintro text", "Setup\n-----\nsetup text here"]
    assert recover_contexts(texts, "g.txt", (text, "text", [], None)) == ["", "Guide"]
    assert recover_contexts(texts, "g.txt", None) == ["", "Guide"]
    # a chunk an older reader stored with a running head in it, not in the file's text now
    text = "Harbour Report\nSome words on the harbour.\n1 Intro\nalpha beta.\n2 Methods\ngamma."
    texts = ["Some words on the harbour.\n1 Intro\nalpha beta.", "2 Methods\nHEAD 3\ngamma."]
    assert recover_contexts(texts, "r.pdf", (text, "pdf", [], None)) == [
        "Harbour Report", "Harbour Report"
    ]  # fmt: skip


def test_a_contents_list_and_a_code_fence_are_no_headings(tmp_path) -> None:
    """A docs repository's audit: a contents list written as plain link lines took every
    heading of the page (each section after it was labelled "Scaling", its last line), and
    the line above a closing ``` fence was taken for an underlined title ("}")."""
    from indexing.readers import read_document

    page = tmp_path / "operations.md"
    page.write_text(
        "# Operations handbook\n\n## Contents\n\n[Backups](#backups)\n[Monitoring](#monitoring)\n"
        "[Scaling](#scaling)\n\n## Backups\n\nA restore manifest is kept.\n\n```json\n{\n"
        '  "a": 1\n}\n```\n\nMore on backups.\n\n## Monitoring\nThe metrics endpoint is /m.\n\n'
        "## Scaling\n\nEach shard holds 4096 widgets.\n"
    )
    doc = read_document(page)
    text = doc.pages[0].text
    found = find_headings(text, doc.kind, doc.headings)
    assert [h for _, h in found] == ["Operations handbook", "Contents", "Backups", "Monitoring",
                                     "Scaling"]  # fmt: skip
    lines = {h: text[:p].count("\n") for p, h in found}
    assert text.split("\n")[lines["Scaling"] + 2] == "Each shard holds 4096 widgets."
    assert text.split("\n")[lines["Backups"] + 2] == "A restore manifest is kept."
    # plain text keeps its underlined titles, reST's ~~~ included; a fence is none
    plain = "Intro\n=====\n\nbody\n\nPart two\n~~~~~~~~\n\nmore\n}\n```\n"
    assert [h for _, h in find_headings(plain, "text")] == ["Intro", "Part two"]


def test_headings_on_adjacent_lines_are_headings(tmp_path) -> None:
    """A review: "## Parameters" over "### Example", with a second "### Example" further on,
    was taken for a contents list, and every heading after it was lost."""
    from indexing.readers import read_document

    page = tmp_path / "api.md"
    page.write_text(
        "# API\n\n## Parameters\n### Example\ntext one\n\n## Returns\n### Example\ntext two\n\n"
        "## Raises\ntext three\n"
    )
    doc = read_document(page)
    found = find_headings(doc.pages[0].text, doc.kind, doc.headings)
    assert [h for _, h in found] == ["API", "Parameters", "Example", "Returns", "Example", "Raises"]


def test_markdown_headings_are_where_the_reader_saw_them(tmp_path) -> None:
    """A second docs-repository audit: a contents list whose entries are apart (blank lines
    between) still took the headings; and a page of per-function sections repeating
    "Parameters" over "Example" lost every heading after the first function. The Markdown
    reader marks the heading lines themselves."""
    from indexing.readers import read_document

    page = tmp_path / "ops.md"
    page.write_text(
        "# Ops\n\n## Contents\n\n[Backups](#backups)\n\n[Scaling](#scaling)\n\n"
        "## Backups\n\nKeep them.\n\n## Scaling\n\nEach shard holds 4096.\n\n"
        "## foo\n### Parameters\n### Example\nfoo text\n\n## bar\n### Parameters\n### Example\n"
        "bar text\n\nSetext title\n============\n\nlast words\n"
    )
    doc = read_document(page)
    text = doc.pages[0].text
    found = find_headings(text, doc.kind, doc.headings, doc.heading_lines)
    assert [h for _, h in found] == ["Ops", "Contents", "Backups", "Scaling", "foo",
                                     "Parameters", "Example", "bar", "Parameters", "Example",
                                     "Setext title"]  # fmt: skip
    after = {h: text[p:].split("\n")[2] for p, h in found if h in ("Backups", "Scaling")}
    assert after == {"Backups": "Keep them.", "Scaling": "Each shard holds 4096."}
    assert "\ue0f1" not in text
