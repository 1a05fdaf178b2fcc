"""HTML pages as readable text: what a browser shows, laid out the way clara reads Markdown.

Scripts, styles, navigation menus, elements a browser does not show (`hidden`, an inline
`display: none` or `visibility: hidden`) and other markup that is not page text are dropped;
headings become their own lines (and the document's section headings), list items start with
"- ", table cells are joined with " | ", `<pre>` blocks keep their layout, and character
references are decoded. Only the standard library's `html.parser` is used.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser

try:
    from clara.errors import ClaraError
except ImportError:  # run as `_parse_apart`'s child, which has the standard library only

    class ClaraError(Exception):  # type: ignore[no-redef]  # (its errors go back as JSON)
        pass


#: Elements whose content is not page text.
SKIPPED = frozenset(
    {"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "canvas",
     "nav", "head", "select", "button"}
)  # fmt: skip
#: What a <head> holds: any other tag (or text) ends a head whose </head> never comes, as
#: HTML5 says (the optional end tag left out, a page's whole text was skipped as its head).
IN_HEAD = frozenset(
    {"title", "meta", "link", "base", "script", "style", "noscript", "template", "basefont",
     "bgsound"}
)  # fmt: skip
#: Elements that start and end a block of text (a line, or a paragraph).
BLOCKS = frozenset(
    {"p", "div", "section", "article", "main", "header", "footer", "aside", "blockquote",
     "figure", "figcaption", "form", "fieldset", "address", "details", "summary", "dl", "dt",
     "dd", "ul", "ol", "li", "table", "thead", "tbody", "tfoot", "tr", "caption", "hr", "br",
     "pre", "h1", "h2", "h3", "h4", "h5", "h6", "body", "html", "center", "menu", "dir",
     "dialog", "search", "hgroup", "listing", "xmp"}
)  # fmt: skip
HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
#: Void elements: they never have an end tag, so they never open a skipped region.
VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
     "source", "track", "wbr"}
)  # fmt: skip


#: Elements always closed by their end tag, skipped to it when they are a site menu or not
#: shown (`_not_shown`; those whose end tag may be left out, a <p>: `_Unclosed`)
_CLOSED = frozenset(
    {"div", "ul", "ol", "section", "aside", "header", "footer", "span", "table", "article",
     "main", "form", "figure", "blockquote", "details", "fieldset", "a", "label"}
)  # fmt: skip
#: Of those, the ones skipped when hidden: blocks (an inline <span hidden> left unclosed, as
#: pages do, took the visible rest of the page with it: a re-audit)
_HIDEABLE = _CLOSED - {"span", "a", "label"}
#: An inline style's declarations: `name: value` between semicolons
_DECLARATION = re.compile(r"\s*([\w-]+)\s*:\s*([^;]*)")


def _style(style: str) -> dict[str, str]:
    """An inline style's properties, the last of each winning (as in a browser), values in
    lower case without `!important`."""
    found: dict[str, str] = {}
    for part in style.split(";"):
        m = _DECLARATION.match(part)
        if m:
            value = m.group(2).strip().lower()
            found[m.group(1).lower()] = value.removesuffix("!important").strip()
    return found


#: Block-level elements (HTML's "special" ones): their start or end tag may end a hidden
#: element whose end tag may be left out (`_Unclosed`)
_SPECIAL = frozenset(
    {"address", "applet", "article", "aside", "blockquote", "body", "caption", "center",
     "colgroup", "dd", "details", "dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption",
     "figure", "footer", "form", "frameset", "header", "hgroup", "html", "li", "listing",
     "main", "marquee", "menu", "ol", "p", "plaintext", "pre", "search", "section", "summary",
     "table", "tbody", "td", "textarea", "tfoot", "th", "thead", "tr", "ul", "xmp"}
    | HEADINGS | (SKIPPED - {"svg", "math", "canvas"})
)  # fmt: skip
_TABLE_PARTS = frozenset({"td", "th", "tr", "tbody", "thead", "tfoot", "caption"})
#: Elements whose end tag may be left out, skipped when hidden to where a browser ends them
#: (`_Unclosed`): their own end tag, one of these start tags, or the end tag of a block
#: around them. What is unsure ends them: hidden text read is better than shown text lost.
_ENDED_BY_START = {
    "p": (_SPECIAL - (SKIPPED - {"nav"}) - {"html", "body", "textarea", "marquee", "applet"})
    | {"hr"},  # (a rule ends a paragraph too: a re-audit)
    "li": {"li"} | _TABLE_PARTS,
    "dt": {"dt", "dd"} | _TABLE_PARTS,
    "dd": {"dt", "dd"} | _TABLE_PARTS,
    "td": {"td", "th", "tr", "tbody", "thead", "tfoot"},
    "th": {"td", "th", "tr", "tbody", "thead", "tfoot"},
    "tr": {"tr", "tbody", "thead", "tfoot"},
    "tbody": {"tbody", "thead", "tfoot"},
    "thead": {"tbody", "thead", "tfoot"},
    "tfoot": {"tbody", "thead", "tfoot"},
    **dict.fromkeys(HEADINGS, HEADINGS | _TABLE_PARTS),
}
#: Blocks open inside one that keep those start tags from ending it (a list in a hidden
#: <li>, a table in a hidden cell); a <p> holds no block
_BLOCKED_BY = {
    "p": frozenset(),
    **dict.fromkeys(("li", "dt", "dd"), _SPECIAL - {"address", "div", "p"}),
    **dict.fromkeys(("td", "th", "tr", "tbody", "thead", "tfoot"), frozenset({"table"})),
    **dict.fromkeys(HEADINGS, _SPECIAL - {"p"}),
}
#: Their own end tags (a heading ends at any heading's, a cell at a cell's), and the end tags
#: of other blocks that do not end them (a stray </p> in an item makes an empty paragraph)
_OWN_END = {
    **{tag: {tag} for tag in _ENDED_BY_START},
    **dict.fromkeys(HEADINGS, HEADINGS),
    "td": {"td", "th"}, "th": {"td", "th"}, "dt": {"dt", "dd"}, "dd": {"dt", "dd"},
}  # fmt: skip
_NOT_ENDED_BY = {
    "p": frozenset(),
    **dict.fromkeys(("li", "dt", "dd"), frozenset({"p", "li", "dt", "dd"})),
    **dict.fromkeys(
        ("td", "th", "tr", "tbody", "thead", "tfoot"), frozenset({"p", "li", "dt", "dd"})
    ),
    **dict.fromkeys(HEADINGS, frozenset({"p"})),
}


@dataclass
class _Unclosed:
    """A hidden element whose end tag may be left out (`_ENDED_BY_START`), being skipped.
    `inner` holds the blocks opened inside it, so that their end tags do not end it, and
    `blocking` those of them that keep its ending start tags from ending it (`_BLOCKED_BY`).
    (`counts` counts them by tag: each tag costs the same however many are open.)"""

    tag: str
    inner: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    blocking: int = 0

    def ends_at_start(self, tag: str, opens: bool = True) -> bool:
        """Whether start tag `tag` ends it (then `tag` is read as usual); else it is skipped
        (and, `opens`, a block in it: not a self-closed XHTML one)."""
        if tag in _ENDED_BY_START[self.tag] and not self.blocking:
            return True
        if opens and tag in _SPECIAL and tag not in VOID:
            self.inner.append(tag)
            self.counts[tag] += 1
            self.blocking += tag in _BLOCKED_BY[self.tag]
        return False

    def ends_at_end(self, tag: str) -> tuple[bool, bool]:
        """(whether end tag `tag` ends it, whether `tag` is then read as usual: not its own)"""
        if self.counts[tag]:  # (and those left open inside it)
            while True:
                inner = self.inner.pop()
                self.counts[inner] -= 1
                self.blocking -= inner in _BLOCKED_BY[self.tag]
                if inner == tag:
                    return False, False
        if tag in _OWN_END[self.tag]:
            return True, False
        if tag in _SPECIAL and tag not in _NOT_ENDED_BY[self.tag]:
            return True, True  # (a block around it ended)
        return False, False


def _first_values(attrs: list[tuple[str, str | None]]) -> dict[str, str]:
    """A tag's attributes, each with its first value (as a browser takes them)."""
    first: dict[str, str] = {}
    for name, value in attrs:
        first.setdefault(name, value or "")
    return first


def _hiding(first: dict[str, str]) -> str | None:
    """How attributes keep an element off the page: "none" (`hidden`, but not
    `hidden="until-found"`, which find-in-page opens; an inline `display: none`),
    "invisible" (`visibility: hidden`: its box stays, empty), else None."""
    style = _style(first.get("style", ""))
    if style.get("display") == "none":
        return "none"
    if "hidden" in first and first["hidden"].strip().lower() != "until-found":
        if "display" not in style:  # (an inline display overrides `hidden`'s)
            return "none"
    return "invisible" if style.get("visibility") in ("hidden", "collapse") else None


def _not_shown(tag: str, attrs: list[tuple[str, str | None]]) -> str | None:
    """How an element is skipped as <nav> is (else None): a site menu (`role="navigation"`:
    a documents audit found menus built of <div>s indexed: "none"), or one a browser does
    not show (`_hiding`): text a reader never sees, which a page may hide to steer what a
    model answers. A hidden tab panel (`role="tabpanel"`: the other tabs of a docs page's
    install instructions) is read: a reader opens it with a click."""
    if tag not in _CLOSED and tag not in _ENDED_BY_START:
        return None
    first = _first_values(attrs)
    role = first.get("role", "").strip().lower()
    if tag in _CLOSED and role in ("navigation", "tabpanel"):
        return "none" if role == "navigation" else None
    return _hiding(first) if tag in _HIDEABLE or tag in _ENDED_BY_START else None


@dataclass
class HtmlText:
    text: str
    headings: list[str] = field(default_factory=list)  # in order, as lines of `text`
    title: str | None = None  # <title>


SLOW = "the page takes too long to read for its size (markup made to be slow to parse?)"


class SlowHtmlError(ClaraError, ValueError):
    """The page took longer than its size allows (`parse_budget`): markup built to make the
    parser scan the rest of the page again at each of its tags."""


class MalformedHtmlError(ClaraError, ValueError):
    """Markup the standard parser refuses (it asserts: "<![ x" is no marked section)."""


def parse_budget(chars: int) -> float:
    """Seconds a page of `chars` characters may take: real pages parse at 3-5 MB a second
    here (the Rust book's 1.8 MB in 0.4 s), so 5 s plus 2 s a megabyte is far beyond them.
    Python's parser (before CPython's fix for gh-135462) looks for the end of each tag that
    never ends from its "<" to the end of the text, so markup built of them ("<a " repeated:
    43 s for 60 KB) would take hours."""
    return 5.0 + 2.0 * chars / 2**20


#: Pages longer than this are read in a child process. Each rescan of such markup is one
#: regex call that holds the GIL (0.14 s a megabyte here), so a big page built that way
#: stalled every other thread of the server (its chats) for seconds at a time, all through
#: its budget; a child stalls only itself, and is stopped at the budget. (Starting one costs
#: about 0.1 s, next to the seconds a megabyte of text takes to compress.)
APART_CHARS = 2**20
#: Seconds granted a child beyond the page's budget: its start, and the page sent and back
CHILD_S = 10.0


def html_to_text(source: str) -> HtmlText:
    """The readable text of an HTML page (see the module docstring); `SlowHtmlError` past
    its `parse_budget`, `MalformedHtmlError` for markup Python's parser refuses."""
    budget = parse_budget(len(source))
    if len(source) > APART_CHARS:
        return _parse_apart(source, budget)
    return _parse(source, time.monotonic() + budget)


def _parse(source: str, deadline: float) -> HtmlText:
    parser = _Parser(deadline)
    try:
        parser.feed(source)
        parser.close()
    except AssertionError as exc:  # the standard parser's own check ("<![ x": unknown status)
        raise MalformedHtmlError(f"markup Python's HTML parser cannot read ({exc})") from None
    return parser.result()


def _parse_apart(source: str, budget: float) -> HtmlText:
    """`_parse` in a child process: this file run as a script (standard library only), in a
    session of its own (a terminal's Ctrl-C stops the server gracefully, not the child). A
    child that cannot start or does not answer leaves the page to this process."""
    deadline = time.monotonic() + budget
    command = [sys.executable or "", "-I", "-S", __file__, repr(budget)]
    try:
        child = subprocess.run(
            command, input=source.encode("utf-8", "surrogatepass"), capture_output=True,
            timeout=budget + CHILD_S, check=False, start_new_session=True,
        )  # fmt: skip
        out = json.loads(child.stdout.decode("utf-8", "surrogatepass")) if child.stdout else {}
    except subprocess.TimeoutExpired:
        raise SlowHtmlError(SLOW) from None
    except (OSError, ValueError):  # no interpreter to run (an embedded one), a child killed
        out = {}
    if not out:
        return _parse(source, deadline)
    if "error" in out:
        error = SlowHtmlError if out["error"] == "slow" else MalformedHtmlError
        raise error(out["message"])
    return HtmlText(out["text"], out["headings"], out["title"])


def _child() -> None:
    """`_parse_apart`'s child: the page on stdin (UTF-8), its budget in seconds as the
    argument; the text, headings and title (or the error) as JSON on stdout."""
    budget = float(sys.argv[1])
    source = sys.stdin.buffer.read().decode("utf-8", "surrogatepass")
    try:
        page = _parse(source, time.monotonic() + budget)
        out = {"text": page.text, "headings": page.headings, "title": page.title}
    except SlowHtmlError as exc:
        out = {"error": "slow", "message": str(exc)}
    except MalformedHtmlError as exc:
        out = {"error": "malformed", "message": str(exc)}
    # (lone surrogates as they are: escaped, a split pair would come back joined)
    sys.stdout.buffer.write(json.dumps(out, ensure_ascii=False).encode("utf-8", "surrogatepass"))


class _Parser(HTMLParser):
    def __init__(self, deadline: float = math.inf) -> None:
        super().__init__(convert_charrefs=True)
        self.deadline = deadline  # (looked at each callback: the parser calls one per step)
        self.blocks: list[str] = []  # finished lines and paragraphs
        self.line: list[str] = []  # text of the block being read
        self.cells: list[str] = []  # finished cells of the table row being read
        self.in_cell = False  # inside <td>/<th>: blocks in it are only spaces
        self.headings: list[str] = []
        self.title: list[str] = []
        self.skip: list[str] = []  # open skipped elements
        self.unclosed: _Unclosed | None = None  # a hidden <p>, <li>, heading... being skipped
        self.pre = 0  # depth of <pre>
        self.in_title = False
        self.heading = False

    # -- parser callbacks ---------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_time()
        if tag == "title" and not self.skip_body and self.unclosed is None:
            self.in_title = True
            return
        if self.skip == ["head"] and tag not in IN_HEAD:
            self.skip = []  # body content: the head has ended
        if self.skip:  # a head's <script> is its own; in the body, the blocks opened inside
            # (their end tags end them, not what was skipped; one that is not, ends it)
            if self.skip[0] == "head":
                if self.skip == ["head"] and tag in SKIPPED and tag not in VOID:
                    self.skip.append(tag)
            elif tag not in VOID and (tag == self.skip[0] or tag in _SPECIAL):
                self.skip.append(tag)
            return
        skipped = tag in SKIPPED and tag not in VOID
        if self.unclosed is not None:  # (a <template> or an <svg> in it: skipped as ever)
            if not self.unclosed.ends_at_start(tag, opens=not skipped):
                if skipped:
                    self.skip.append(tag)
                return
            self.unclosed = None
        hiding = None if skipped else _not_shown(tag, attrs)
        if skipped or hiding:
            if tag in _CLOSED or skipped:
                self.skip.append(tag)
                return
            # a hidden cell still ends the one before it; one that is only invisible keeps
            # its column (an empty cell)
            if tag in ("td", "th") and hiding == "invisible":
                self._start_cell()
            else:
                self._ended_by(tag)
            self.unclosed = _Unclosed(tag)
            return
        if tag in ("td", "th"):
            self._start_cell()
        elif tag in BLOCKS and self.in_cell and tag not in ("tr", "table"):
            self.line.append(" ")
        elif tag in BLOCKS:
            self._flush()
            if tag == "li":
                self.line.append("- ")
            elif tag in HEADINGS:
                self.heading = True
            elif tag == "pre":
                self.pre += 1
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.line.append(f" {alt} ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_time()
        if tag in SKIPPED or tag == "title" or _not_shown(tag, attrs):  # <svg/>: empty, nothing
            return  # to skip (an XHTML <div role="navigation"/> or <title/> took the rest of
            # an EPUB's chapter)
        if self.skip and self.skip != ["head"]:  # (an XHTML <div/> in a skipped <div> opens
            return  # nothing: it was pushed, and the rest of the page skipped)
        if self.unclosed is not None:
            if not self.unclosed.ends_at_start(tag, opens=False):
                return
            self.unclosed = None
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        self._in_time()
        if tag == "title":
            self.in_title = False
            return
        if self.skip:
            if tag == self.skip[-1]:
                self.skip.pop()
                return
            if tag in self.skip:  # unclosed elements inside: close them too
                del self.skip[len(self.skip) - 1 - self.skip[::-1].index(tag) :]
                return
            if self.skip[0] == "head" or tag not in _SPECIAL or tag == "p":
                return  # (a stray </p> makes an empty paragraph: nothing ends)
            # a block around the skipped one ended, and it with it (a hidden <ul> left
            # unclosed in a <div> took the rest of the page: a re-audit): read on
            self.skip = []
        if self.unclosed is not None:
            ended, read = self.unclosed.ends_at_end(tag)
            if ended:
                self.unclosed = None
            if not read:
                return
        if tag in ("td", "th"):
            self._end_cell()
        elif tag == "tr":
            self._end_row()
        elif tag in BLOCKS and self.in_cell and tag != "table":
            self.line.append(" ")
        elif tag in BLOCKS:
            if tag == "table":
                self._end_row()
            self._flush()
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        self._in_time()
        if self.in_title:
            self.title.append(data)
            return
        if self.skip == ["head"] and data.strip():
            self.skip = []  # text outside <title> ends the head too
        if not self.skip and self.unclosed is None:
            self.line.append(data)

    # (the parser calls one of these at each step: the deadline is looked at each step)
    def handle_comment(self, data: str) -> None:
        self._in_time()

    def handle_decl(self, decl: str) -> None:
        self._in_time()

    def unknown_decl(self, data: str) -> None:
        self._in_time()

    def handle_pi(self, data: str) -> None:
        self._in_time()

    def _in_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise SlowHtmlError(SLOW)

    # -- blocks -------------------------------------------------------------------------------
    @property
    def skip_body(self) -> bool:
        return bool(self.skip) and self.skip != ["head"]

    def _text(self) -> str:
        raw = "".join(self.line)
        self.line = []
        if self.pre:
            return raw.strip("\n")
        return " ".join(raw.split())

    def _ended_by(self, tag: str) -> None:
        """What the start of a hidden `tag` ends of the text before it: a cell, a row, or
        the line (a block in a cell: a space)."""
        if tag in ("td", "th"):
            self._end_cell()
        elif tag in ("tr", "tbody", "thead", "tfoot"):
            self._end_row()
        elif self.in_cell:
            self.line.append(" ")
        else:
            self._flush()

    def _start_cell(self) -> None:
        if self.in_cell:  # the previous cell was not closed
            self._end_cell()
        elif stray := self._text():  # text between cells (usually only whitespace)
            self.cells.append(stray)
        self.in_cell = True

    def _end_cell(self) -> None:
        if self.in_cell:
            self.cells.append(self._text())
            self.in_cell = False

    def _end_row(self) -> None:
        self._end_cell()
        if stray := self._text():
            self.cells.append(stray)
        if any(self.cells):
            self.blocks.append(" | ".join(self.cells))
        self.cells = []

    def _flush(self) -> None:
        if self.cells or self.in_cell:
            self._end_row()
            return
        text = self._text()
        if text and text != "-":
            self.blocks.append(text)
            if self.heading:
                self.headings.append(text)
        self.heading = False

    def result(self) -> HtmlText:
        self._flush()
        title = " ".join("".join(self.title).split()) or None
        return HtmlText("\n\n".join(self.blocks), self.headings, title)


if __name__ == "__main__":
    _child()
