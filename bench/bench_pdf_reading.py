"""What clara reads out of PDFs laid out as reports are, against the text they were made from.

The held-out documents of the example data (../shared/data, lines i % 5 == 0) are set as
multi-page PDF reports with fpdf2, 25 documents a report, each a numbered section: one
layout in one column and one in two, both with a running head on every page and a footer
"Page N of M". Each report is read and chunked as `clara-index add` does (`read_document`,
`chunk_document` with the default model's tokenizer, 224 tokens, 32 of overlap), by this
checkout and, with `--against REV`, by another commit (a git worktree run in a child
process), side by side in one run. Per layout and code:

- furniture: chunks holding the running head or a "Page N of M" line;
- mid-sentence: chunks (not the last of a report) that end without a sentence's end;
- answers whole: held-out questions whose short answer (at most 6 words, found as written in
  its document) is found as written in some chunk of its report (spacing aside);
- sections right: chunks whose context line names the section in force a third into the
  chunk (where clara takes it from), or that open with its heading.

    python bench/bench_pdf_reading.py --against e898521
    python bench/bench_pdf_reading.py --no-append --reports 2    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEAD = "Harbour Review of Collected Documents · Vol 3"
PAGE = re.compile(r"Page \d+ of \d+")
PER_REPORT = 25


def heldout() -> list[dict]:
    """The held-out records: document, questions, answers."""
    from bench.retrieval_sets import apple_path

    out = []
    with open(apple_path(), encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n % 5 == 0:
                rec = json.loads(line)
                out.append(
                    {"doc": rec["docs"][0], "qa": list(zip(rec["question"], rec["answers"]))}
                )
    return out


def section_title(doc: str, k: int) -> str:
    """'k Subject' from the document's opening "This a document about Subject." line."""
    m = re.match(r"\s*This a document about (.{1,60}?)\.\s", doc)
    return f"{k} {m.group(1).strip() if m else 'Document'}"


def body_of(doc: str) -> str:
    return re.sub(r"^\s*This a document about .{1,60}?\.\s*", "", doc).replace("\n", " ").strip()


def make_reports(records: list[dict], folder: Path, n_reports: int) -> list[dict]:
    """Write the PDFs; returns per report its file, layout and sections (title, body, QA)."""
    from fpdf import FPDF

    class Report(FPDF):
        def header(self) -> None:
            self.set_font("helvetica", size=8)
            self.cell(0, 5, HEAD.replace("·", "-"))
            self.ln(9)

        def footer(self) -> None:
            self.set_y(-14)
            self.set_font("helvetica", size=8)
            self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align="C")

    made = []
    for r in range(n_reports):
        part = records[r * PER_REPORT : (r + 1) * PER_REPORT]
        if not part:
            break
        sections = [
            {"title": section_title(rec["doc"], k), "body": body_of(rec["doc"]), "qa": rec["qa"]}
            for k, rec in enumerate(part, 1)
        ]
        for layout in ("one column", "two columns"):
            pdf = Report()
            pdf.set_title(f"Collected documents {r + 1}")
            pdf.add_page()
            pdf.set_font("helvetica", size=10)
            if layout == "one column":
                for s in sections:
                    pdf.set_font("helvetica", "B", 12)
                    pdf.multi_cell(0, 7, latin(s["title"]), new_x="LMARGIN", new_y="NEXT")
                    pdf.set_font("helvetica", size=10)
                    pdf.multi_cell(0, 5, latin(s["body"]), new_x="LMARGIN", new_y="NEXT")
                    pdf.ln(2)
            else:
                with pdf.text_columns(ncols=2, gutter=6) as cols:
                    for s in sections:
                        cols.write(latin(s["title"]) + "\n" + latin(s["body"]) + "\n\n")
            path = folder / f"report-{r + 1}-{layout.replace(' ', '-')}.pdf"
            pdf.output(str(path))
            made.append({"path": str(path), "layout": layout, "sections": sections})
    return made


def latin(s: str) -> str:
    """fpdf2's core fonts hold Latin-1: other characters as close as it gets."""
    s = (
        s.replace("\u2019", "'")
        .replace("\u2018", "'")
        .replace("\u201c", '"')
        .replace("\u201d", '"')
    )
    s = s.replace("\u2013", "-").replace("\u2014", "-")
    return s.encode("latin-1", "replace").decode("latin-1")


def measure(reports: list[dict], tokenizer_dir: str) -> dict:
    """The figures of the code importable here (this checkout, or REV's worktree)."""
    import clara  # noqa: F401  (before mlx-importing modules)
    from transformers import AutoTokenizer

    from indexing.chunking import chunk_document
    from indexing.readers import read_document

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    out: dict[str, dict] = {}
    for rep in reports:
        doc = read_document(rep["path"])
        chunks = chunk_document(doc, tok, 224, 32)
        fig = out.setdefault(rep["layout"], {k: 0 for k in (
            "chunks", "furniture", "ends", "mid", "answers", "whole", "sections", "right")})  # fmt: skip
        squash = [" ".join(c.text.split()) for c in chunks]
        fig["chunks"] += len(chunks)
        fig["furniture"] += sum(
            1 for c in chunks if HEAD.replace("·", "-") in c.text or PAGE.search(c.text)
        )
        ends = chunks[:-1]
        fig["ends"] += len(ends)
        fig["mid"] += sum(1 for c in ends if c.text.rstrip()[-1:] not in ".!?\"')")
        titles = [latin(s["title"]) for s in rep["sections"]]
        for s in rep["sections"]:
            for _, answer in s["qa"]:
                a = " ".join(latin(answer).split()).rstrip(".")
                if not a or len(a.split()) > 6 or a not in " ".join(latin(s["body"]).split()):
                    continue
                fig["answers"] += 1
                fig["whole"] += any(a in t for t in squash)
        for c in chunks:
            at = _section_at(c.text, rep["sections"])
            if at is None:
                continue
            fig["sections"] += 1
            named = next((t for t in titles if c.context.endswith(t)), None)
            head = " ".join(c.text.split())[:160]  # (a heading the chunk opens with is left out)
            fig["right"] += named == titles[at] or (named is None and titles[at] in head)
    return out


def _section_at(text: str, sections: list[dict]) -> int | None:
    """The section in force a third into a chunk (where its context line's heading is
    taken): the one whose body holds the six words from there."""
    words = text.split()
    third = len(" ".join(words)) // 3
    at = next((k for k in range(len(words)) if len(" ".join(words[: k + 1])) >= third), 0)
    probe = " ".join(words[at : at + 6])
    bodies = [" ".join(latin(s["body"]).split()) for s in sections]
    hits = [k for k, body in enumerate(bodies) if probe and probe in body]
    return hits[0] if len(hits) == 1 else None


def measure_at(rev: str, reports: list[dict], tokenizer_dir: str, work: Path) -> dict:
    """`measure` with REV's code: a worktree of it, this script run there in a child."""
    tree = work / f"tree-{rev}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), rev],
                   check=True)  # fmt: skip
    try:
        spec = work / "reports.json"
        spec.write_text(json.dumps({"reports": reports, "tokenizer": tokenizer_dir}))
        script = tree / "bench" / "bench_pdf_reading_now.py"  # (run there: its ROOT is REV's)
        script.write_text(Path(__file__).read_text())
        env = {**os.environ, "PYTHONPATH": str(tree)}
        done = subprocess.run(
            [sys.executable, str(script), "--measure", str(spec)],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise SystemExit(f"measuring {rev} failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)])


def pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}% ({a}/{b})" if b else "-"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", metavar="REV", help="also measure this commit's reading")
    p.add_argument("--reports", type=int, default=8, help="reports of 25 documents (default 8)")
    p.add_argument("--no-append", action="store_true", help="print only")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # (the child of --against)
    args = p.parse_args()
    if args.measure:
        spec = json.loads(Path(args.measure).read_text())
        print(json.dumps(measure(spec["reports"], spec["tokenizer"])))
        return 0

    from bench._common import append_report, markdown_table, start_run
    from clara.gguf import default_model_dir

    start_run()
    tokenizer_dir = str(default_model_dir())
    with tempfile.TemporaryDirectory(prefix="clara-bench-pdf-") as tmp:
        work = Path(tmp)
        reports = make_reports(heldout(), work, args.reports)
        results = {"this checkout": measure(reports, tokenizer_dir)}
        if args.against:
            results[args.against] = measure_at(args.against, reports, tokenizer_dir, work)
    rows = []
    for layout in ("one column", "two columns"):
        for code, figs in results.items():
            f = figs[layout]
            rows.append([layout, code, f["chunks"], pct(f["furniture"], f["chunks"]),
                         pct(f["mid"], f["ends"]), pct(f["whole"], f["answers"]),
                         pct(f["right"], f["sections"])])  # fmt: skip
    table = markdown_table(
        ["layout", "code", "chunks", "with furniture", "end mid-sentence", "answers whole",
         "section right"], rows)  # fmt: skip
    n_docs = sum(len(r["sections"]) for r in reports) // 2
    title = (
        f"PDF reading: {n_docs} held-out documents set as {len(reports) // 2} reports, two layouts"
    )
    if args.no_append:
        print(table)
    else:
        append_report(title, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
