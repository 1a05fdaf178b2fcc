"""Writes deck.pptx and sales.xlsx (tests/test_office_docs.py reads them) into the folder it
is given, with python-pptx 1.0.2 and openpyxl 3.1.5: files as real writers make them, for
clara's readers. Not a dependency of clara or of its tests; to write them again:

    python -m venv /tmp/ooxml && /tmp/ooxml/bin/pip install python-pptx==1.0.2 openpyxl==3.1.5
    /tmp/ooxml/bin/python tests/data/make_office_files.py tests/data
"""

import datetime as dt
import sys

import openpyxl
from pptx import Presentation
from pptx.util import Inches

out = sys.argv[1]
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
p.text = "The north led with 1200 units"
p.level = 1
p = body.add_paragraph()
p.text = "Returns fell to two percent"
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
