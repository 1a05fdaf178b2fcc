"""Writes deck.pptx, charts.pptx, sales.xlsx, deck.odp and sales.ods (tests/test_office_docs.py
reads them)
into the folder it is given, with python-pptx 1.0.2, openpyxl 3.1.5 and odfpy 1.4.1: files as
real writers make them, for clara's readers, the same slides and sheets in both formats. Not a
dependency of clara or of its tests; to write them again:

    python -m venv /tmp/office && /tmp/office/bin/pip install python-pptx==1.0.2 \\
        openpyxl==3.1.5 odfpy==1.4.1
    /tmp/office/bin/python tests/data/make_office_files.py tests/data
"""

import datetime as dt
import sys

import openpyxl
from odf.dc import Title
from odf.draw import Frame, Page, TextBox
from odf.namespaces import PRESENTATIONNS
from odf.opendocument import OpenDocumentPresentation, OpenDocumentSpreadsheet
from odf.presentation import Notes
from odf.style import (
    DrawingPageProperties,
    MasterPage,
    PageLayout,
    PageLayoutProperties,
    Style,
    TableProperties,
)
from odf.table import Table, TableCell, TableRow
from odf.text import List, ListItem, P
from pptx import Presentation
from pptx.util import Inches


def pptx(out: str) -> None:
    prs = Presentation()
    prs.core_properties.title = "Quarterly review"
    s = prs.slides.add_slide(prs.slide_layouts[0])
    s.shapes.title.text = "Quarterly review"
    s.placeholders[1].text = "Northwind Traders, spring 2026"
    s = prs.slides.add_slide(prs.slide_layouts[1])
    s.shapes.title.text = "Highlights"
    body = s.placeholders[1].text_frame
    body.text = "Revenue grew in every region"
    p = body.add_paragraph()
    p.text, p.level = "The north led with 1200 units", 1
    body.add_paragraph().text = "Returns fell to two percent"
    s.notes_slide.notes_text_frame.text = "Mention the new warehouse in Oslo."
    s = prs.slides.add_slide(prs.slide_layouts[1])
    s.shapes.title.text = "Old plan"
    s.placeholders[1].text = "The hidden slide's plan was dropped"
    s._element.set("show", "0")
    s = prs.slides.add_slide(prs.slide_layouts[5])
    s.shapes.title.text = "Sales by region"
    table = s.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(2)).table
    for r, row in enumerate([("Region", "Units"), ("North", "1200"), ("South", "950")]):
        for c, v in enumerate(row):
            table.cell(r, c).text = v
    group = s.shapes.add_group_shape()
    box = group.shapes.add_textbox(Inches(1), Inches(5), Inches(4), Inches(1))
    box.text_frame.text = "Source: the sales ledger"
    prs.save(f"{out}/deck.pptx")


def charts(out: str) -> None:
    """A deck of charts: a titled column chart of two series, an untitled pie chart."""
    from pptx.chart.data import CategoryChartData
    from pptx.enum.chart import XL_CHART_TYPE

    prs = Presentation()
    s = prs.slides.add_slide(prs.slide_layouts[5])
    s.shapes.title.text = "Results"
    data = CategoryChartData()
    data.categories = ["North", "South"]
    data.add_series("Units", (1200, 950))
    data.add_series("Returns", (24, 31.5))
    frame = s.shapes.add_chart(
        XL_CHART_TYPE.COLUMN_CLUSTERED, Inches(1), Inches(2), Inches(6), Inches(4), data
    )
    frame.chart.has_title = True
    frame.chart.chart_title.text_frame.text = "Units shipped by region"
    s = prs.slides.add_slide(prs.slide_layouts[6])
    data = CategoryChartData()
    data.categories = ["Rail", "Road", "Sea"]
    data.add_series("Freight share", (0.5, 0.3, 0.2))
    s.shapes.add_chart(XL_CHART_TYPE.PIE, Inches(1), Inches(1), Inches(6), Inches(4), data)
    prs.save(f"{out}/charts.pptx")


def xlsx(out: str) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Sales"
    ws.append(["Region", "Units", "Shipped", "Paid"])
    ws.append(["North", 1200, dt.date(2026, 3, 14), True])
    ws.append(["South", 950, dt.date(2026, 3, 20), False])
    ws.append(["East", None, None, None])
    notes = wb.create_sheet("Targets")
    notes.append([2026, 5000])
    notes.append(["The target for 2027 is six thousand units."])
    secret = wb.create_sheet("Payroll")
    secret.append(["Alice", 90000])
    secret.sheet_state = "hidden"
    wb.properties.title = "Sales 2026"
    wb.save(f"{out}/sales.xlsx")


def frame(page, cls: str, texts: list, bullets: bool = False) -> None:
    """A presentation frame of class `cls` holding `texts` (with `bullets`: (item, sub-item))."""
    f = Frame(width="20cm", height="3cm", x="1cm", y="1cm")
    f.setAttrNS(PRESENTATIONNS, "class", cls)
    box = TextBox()
    f.addElement(box)
    if bullets:
        items = List()
        for text, sub in texts:
            item = ListItem()
            item.addElement(P(text=text))
            if sub:
                inner, inner_item = List(), ListItem()
                inner_item.addElement(P(text=sub))
                inner.addElement(inner_item)
                item.addElement(inner)
            items.addElement(item)
        box.addElement(items)
    else:
        for text in texts:
            box.addElement(P(text=text))
    page.addElement(f)


def odp(out: str) -> None:
    doc = OpenDocumentPresentation()
    doc.meta.addElement(Title(text="Quarterly review"))
    layout = PageLayout(name="PM1")
    layout.addElement(PageLayoutProperties(margin="0cm"))
    doc.automaticstyles.addElement(layout)
    master = MasterPage(name="Default", pagelayoutname=layout)
    doc.masterstyles.addElement(master)
    hidden = Style(name="dpHidden", family="drawing-page")
    hidden.addElement(DrawingPageProperties(visibility="hidden"))
    doc.automaticstyles.addElement(hidden)
    p1 = Page(masterpagename=master, name="p1")
    frame(p1, "title", ["Quarterly review"])
    frame(p1, "subtitle", ["Northwind Traders, spring 2026"])
    doc.presentation.addElement(p1)
    p2 = Page(masterpagename=master, name="p2")
    frame(p2, "title", ["Highlights"])
    frame(p2, "outline", [("Revenue grew in every region", "The north led with 1200 units"),
                          ("Returns fell to two percent", None)], bullets=True)  # fmt: skip
    notes = Notes()
    frame(notes, "notes", ["Mention the new warehouse in Oslo."])
    p2.addElement(notes)
    doc.presentation.addElement(p2)
    p3 = Page(masterpagename=master, name="p3", stylename=hidden)
    frame(p3, "title", ["Old plan"])
    frame(p3, "outline", ["The hidden slide's plan was dropped"])
    doc.presentation.addElement(p3)
    p4 = Page(masterpagename=master, name="p4")
    frame(p4, "title", ["Sales by region"])
    frame(p4, "page-number", ["4"])
    doc.presentation.addElement(p4)
    doc.save(f"{out}/deck.odp")


def cell(kind: str, value) -> TableCell:
    if kind == "string":
        c = TableCell(valuetype="string")
        c.addElement(P(text=value))
    elif kind == "float":
        c = TableCell(valuetype="float", value=value)
        c.addElement(P(text=str(value)))
    elif kind == "date":
        c = TableCell(valuetype="date", datevalue=value)
        c.addElement(P(text="03/14/26"))
    else:
        c = TableCell(valuetype="boolean", booleanvalue=value)
        c.addElement(P(text=value.upper()))
    return c


def ods(out: str) -> None:
    doc = OpenDocumentSpreadsheet()
    doc.meta.addElement(Title(text="Sales 2026"))
    hidden = Style(name="taHidden", family="table")
    hidden.addElement(TableProperties(display="false"))
    doc.automaticstyles.addElement(hidden)
    sales = Table(name="Sales")
    for cells in [
        [("string", "Region"), ("string", "Units"), ("string", "Shipped"), ("string", "Paid")],
        [("string", "North"), ("float", 1200), ("date", "2026-03-14"), ("boolean", "true")],
        [("string", "South"), ("float", 950.5), ("date", "2026-03-20T09:30:00"),
         ("boolean", "false")],
    ]:  # fmt: skip
        row = TableRow()
        for kind, value in cells:
            row.addElement(cell(kind, value))
        sales.addElement(row)
    empty = TableRow(numberrowsrepeated=1048570)  # (as spreadsheet apps pad a sheet)
    empty.addElement(TableCell(numbercolumnsrepeated=1024))
    sales.addElement(empty)
    doc.spreadsheet.addElement(sales)
    payroll = Table(name="Payroll", stylename=hidden)
    row = TableRow()
    row.addElement(cell("string", "Alice"))
    payroll.addElement(row)
    doc.spreadsheet.addElement(payroll)
    doc.save(f"{out}/sales.ods")


if __name__ == "__main__":
    for make in (pptx, charts, xlsx, odp, ods):
        make(sys.argv[1])
