"""Read documents (PDF, Word, OpenDocument text, EPUB, Markdown, HTML, plain text) into pages
of clean text.

`read_document` returns a `Document` or raises a `DocumentError` whose message is one line:
the file, what is wrong and what to do about it.
"""

from __future__ import annotations

import codecs
import fnmatch
import functools
import glob
import hashlib
import io
import logging
import math
import os
import re
import stat
import sys
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from clara.errors import (
    CorruptDocumentError,
    DocumentError,
    EncryptedDocumentError,
    InvalidArgumentError,
    MissingFileError,
    NoTextError,
    UnsupportedDocumentError,
    many,
)
from indexing.context import usable_title
from indexing.html_text import MalformedHtmlError, SlowHtmlError, html_to_text
from indexing.ignore import Ignored
from indexing.office import (
    OFFICE_EXTENSIONS,
    OFFICE_KINDS,
    OfficeError,
    office_kind,
    office_text,
)
from indexing.page_furniture import (
    Level,
    body_size,
    page_levels,
    page_margins,
    strip_furniture,
)

PDF_EXTENSIONS = frozenset({".pdf"})
MARKDOWN_EXTENSIONS = frozenset({".md", ".markdown", ".mdown", ".mkd"})
HTML_EXTENSIONS = frozenset({".html", ".htm", ".xhtml"})
TEXT_EXTENSIONS = frozenset({".txt", ".text", ".rst", ".log", ".org", ".adoc", ".asciidoc", ".tex"})
#: What a folder or glob expands to. A file named explicitly may have any extension:
#: if its bytes are text it is read as text, otherwise it is refused with a clear reason.
SUPPORTED_EXTENSIONS = (
    PDF_EXTENSIONS | MARKDOWN_EXTENSIONS | HTML_EXTENSIONS | TEXT_EXTENSIONS | OFFICE_EXTENSIONS
)

DocumentKind = Literal[
    "pdf", "text", "markdown", "html", "docx", "odt", "epub", "pptx", "xlsx", "odp", "ods"
]


@dataclass(frozen=True)
class Page:
    number: int  # 1-based position in the file (a PDF viewer shows it unless the PDF has page
    # labels such as roman numerals); 1 for a text file without form feeds
    text: str


@dataclass
class Document:
    path: Path
    kind: DocumentKind
    pages: list[Page]  # every page, in order; pages without text have text ""
    sha256: str  # of the file's bytes
    size: int  # bytes
    warnings: list[str] = field(default_factory=list)  # e.g. pages without text
    title: str | None = None  # the PDF's metadata title, when it has one
    headings: list[str] = field(default_factory=list)  # Markdown `#` / HTML <h1-6>, in order
    # Markdown: the lines of the page's text the headings are on (None: not known), so a
    # contents list repeating their words takes none of them
    heading_lines: tuple[int, ...] | None = None
    # a PDF of slides (`_read_pdf`): chunked a slide at a time, as a presentation's slides are
    slides: bool = False

    @property
    def n_chars(self) -> int:
        return sum(len(p.text) for p in self.pages)


#: What to do with an encrypted PDF read without its password (the CLI, an upload, a library
#: call: each can name it, or index a copy saved without one).
NEEDS_PASSWORD = (
    "give its password (clara-index add --password; read_document's password), or index a "
    "copy saved without one"
)


def read_document(path: str | os.PathLike, password: str | None = None) -> Document:
    """Read a PDF, Word (.docx), OpenDocument text (.odt), EPUB, PowerPoint (.pptx), Excel
    (.xlsx), Markdown, HTML or text file into pages of cleaned text (a PDF's pages, a
    presentation's slides, one page for the others). `password` opens an
    encrypted PDF; a wrong or missing one is an `EncryptedDocumentError`."""
    if isinstance(path, str) and not path.strip():
        raise InvalidArgumentError("the path to read is empty: pass a file's path")
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, "no such file", "check the path")
    if path.is_dir():
        raise MissingFileError(
            path, "is a directory", "pass the files inside it, or use iter_inputs to expand it"
        )
    if not path.is_file():
        raise MissingFileError(
            path, "not a regular file", "pass a document file (PDF, Word, Markdown, HTML, text)"
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MissingFileError(
            path, f"cannot read: {e.strerror or e}", "check permissions"
        ) from None
    if not data:
        raise NoTextError(path, "empty file", "nothing to index")

    ext = path.suffix.lower()
    sniffed = _sniff(data, ext)
    locked = "EncryptedPackage".encode("utf-16-le") in data and ext not in _UNSUPPORTED
    if sniffed == "legacy Office document" and locked:  # (a spreadsheet or slides: refused
        raise EncryptedDocumentError(  # a password-protected .docx is stored so (with its
            path, "password-protected", "save a copy without a password and index that"
        )  # extension or not: an upload without it was an "unsupported legacy document")
    office = ext if ext in OFFICE_EXTENSIONS else None  # (else by its parts: an upload
    if office is None and sniffed == "zip archive / office document":  # without its name's
        office = office_kind(data)  # extension)
    if ext in PDF_EXTENSIONS or sniffed == "pdf":
        if sniffed != "pdf":
            looks_html = data.lstrip()[:15].lower().startswith((b"<!doctype", b"<html"))
            raise CorruptDocumentError(
                path,
                "not a PDF (an HTML page?)" if looks_html else "not a PDF (no %PDF header)",
                "re-download or re-export the file",
            )
        kind: DocumentKind = "pdf"
        pages, warnings, title, slides = _read_pdf(path, data, password)
        # a deck's slides are titled by their first lines
        headings: list[str] = [_first_line(p.text) for p in pages if p.text] if slides else []
    elif office:
        ext = office
        kind = OFFICE_KINDS[ext][1:]  # type: ignore[assignment]  # docx, odt, epub, pptx, xlsx
        if sniffed == "legacy Office document":
            what = "legacy Office document"
            raise UnsupportedDocumentError(path, f"unsupported file type ({what})", _hint_for(what))
        try:
            office = office_text(data, ext)
        except (OfficeError, SlowHtmlError, MalformedHtmlError) as exc:
            hint = getattr(exc, "hint", "re-export the file")
            if isinstance(exc, OfficeError) and exc.reason.startswith(
                ("password-protected", "DRM-protected")
            ):
                raise EncryptedDocumentError(path, exc.reason, hint) from None
            raise CorruptDocumentError(path, getattr(exc, "reason", str(exc)), hint) from None
        pages, warnings = [Page(1, clean_text(office.text))], list(office.warnings)
        if office.pages is not None:  # a presentation: each slide its page
            pages = [Page(number, clean_text(t)) for number, t in office.pages]
        # (cleaned as the text is: a soft hyphen in a heading lost it and every one after)
        headings, title = [clean_text(h) for h in office.headings], office.title
    else:
        what = _UNSUPPORTED.get(ext) or ("RTF document" if sniffed == "RTF document" else None)
        if what:
            raise UnsupportedDocumentError(path, f"unsupported file type ({what})", _hint_for(what))
        try:
            declared = _html_charset(data) if ext in HTML_EXTENSIONS else None
            text, warnings = _decode_text(path, data, declared)
        except UnsupportedDocumentError:
            if sniffed is None:
                raise
            raise UnsupportedDocumentError(  # name the type the magic bytes say it is
                path, f"unsupported file type ({sniffed})", _hint_for(sniffed)
            ) from None
        title = None
        headings = []
        if ext in HTML_EXTENSIONS:
            kind = "html"
            try:
                page = html_to_text(clean_text(text))
            except (SlowHtmlError, MalformedHtmlError) as exc:
                raise CorruptDocumentError(
                    path, str(exc),
                    "if it is a real page, save it as text (e.g. a browser's Save as Text) and "
                    "index that",
                ) from None  # fmt: skip
            text, headings, title = page.text, page.headings, page.title
        elif ext in MARKDOWN_EXTENSIONS:
            kind = "markdown"
            text, title = front_matter(clean_text(text))
            headings = markdown_headings(text)
            text, heading_lines = marked_headings(clean_markdown(_mark_headings(text)))
            if len(heading_lines) != len(headings) or "\f" in text:  # (not as the reader saw
                heading_lines = None  # them: found by their words, as other kinds are)
        else:
            kind = "text"
            text = clean_text(text)
            if ext == ".rst":
                text = clean_rst(text)
        # Form feeds separate pages (as in `pdftotext` output).
        pages = [Page(i + 1, t.strip("\n")) for i, t in enumerate(text.split("\f"))]

    if not any(p.text.strip() for p in pages):
        if kind == "pdf":
            raise _no_pdf_text(path)
        raise NoTextError(path, "no text (only whitespace)", "nothing to index")
    sha = hashlib.sha256(data).hexdigest()
    return Document(
        path, kind, pages, sha, len(data), warnings, title, headings,
        heading_lines if kind == "markdown" else None, kind == "pdf" and slides,
    )  # fmt: skip


def iter_inputs(
    paths: Iterable[str | os.PathLike],
    recursive: bool = True,
    skipped: list[Path] | None = None,
    unreadable: list[DocumentError] | None = None,
    exclude: Sequence[str] = (),
    ignore_files: bool = True,
    left_out: list[tuple[Path, str]] | None = None,
) -> list[Path]:
    """Expand files, folders and glob patterns into the files to read (sorted, deduplicated).

    Folders and globs yield only `SUPPORTED_EXTENSIONS`, skipping hidden files and folders
    (the other files they hold are appended to `skipped`), or those of a type a glob names
    ('docs/**/*.py'); symlinked folders are followed once each. A file named explicitly is
    kept whatever its type (read_document then says why it can't). A folder or file inside
    them that may not be read (permissions) is a `DocumentError` appended to `unreadable`,
    the rest is still found; without that list, the first one is raised. Files and folders
    inside folders and globs that `exclude` patterns match (`excluded`), or, with
    `ignore_files`, that `.gitignore` files name or dependency folders hold
    (`indexing.ignore`), are left out, and appended to `left_out` with why ("exclude",
    "ignore"); a file named explicitly never is.
    """
    many(paths, "paths")
    found: dict[Path, None] = {}
    skipped = [] if skipped is None else skipped
    problems: list[DocumentError] = [] if unreadable is None else unreadable
    out = [] if left_out is None else left_out
    for raw in paths:
        p = Path(raw).expanduser()
        kind = _kind(p)
        walk = _Walk(recursive, skipped, problems, exclude, out)
        if kind == "file":
            found[p.resolve()] = None
        elif kind == "folder":
            found.update(dict.fromkeys(walk.files(p, Ignored(p) if ignore_files else None)))
        elif kind == "denied":
            problems.append(_denied(p))
        elif kind == "other":
            problems.append(DocumentError(p, "not a regular file (a pipe, socket or device)"))
        elif re.match(r"(?i)(https?|ftp)://", str(raw)):  # ('https:/example.com/...': no
            raise MissingFileError(  # such file, with the URL's '//' folded by Path)
                str(raw), "web addresses are not fetched", "download the page or file first "
                f"(curl -LO '{raw}', or the browser's Save As) and add what you saved",
            )  # fmt: skip
        elif GLOB_CHARS.search(str(raw)):
            # not str(p): Path drops a trailing '/', which makes 'dir/*/' mean folders only
            pattern = os.path.expanduser(raw)
            matches = sorted(glob.glob(pattern, recursive=recursive))
            if not matches:
                raise MissingFileError(raw, "no files match this pattern", "check the pattern")
            base = _glob_base(pattern)  # (.gitignore files apply from the pattern's folder)
            ignored = Ignored(base) if ignore_files else None
            asked = _asked_type(pattern)
            covered: set[Path] = set()  # folders walked or left out ('**' matches their files)
            for m in map(Path, matches):
                if not covered.isdisjoint(m.parents):
                    continue  # found, skipped or left out with its folder already
                if excluded(m.name, m.name, exclude):
                    out.append((m, "exclude"))
                    covered.add(m)
                    continue
                kind = _kind(m)
                if ignored is not None and _below(m, base) and ignored(m, kind == "folder"):
                    out.append((m, "ignore"))
                    covered.add(m)
                elif kind == "denied":
                    problems.append(_denied(m))
                elif kind is None:  # a dangling link (it failed naming the link's target)
                    skipped.append(m)
                elif kind == "folder" and _is_package(m.name):  # a pattern's match: one "file"
                    skipped.append(m)
                elif kind == "folder":
                    found.update(dict.fromkeys(walk.files(m, ignored)))
                    covered.add(m)
                elif _wanted(m) or (
                    kind == "file" and m.suffix.lower() == asked and not is_hidden(m.name)
                ):
                    found[m.resolve()] = None
                elif kind == "file" and not is_hidden(m.name):
                    skipped.append(m)
        else:
            raise MissingFileError(p, "no such file or directory", "check the path")
    if problems and unreadable is None:
        raise problems[0]
    return sorted(found)


def _kind(p: Path) -> str | None:
    """ "file", "folder", "other" (a pipe, socket or device), "denied" (its folder may not be
    searched) or None (not there, or a dangling link)."""
    try:
        mode = p.stat().st_mode
    except PermissionError:
        return "denied"
    except (OSError, ValueError):
        return None
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"


def is_folder(p: Path) -> bool:
    """`p.is_dir()`, False where it may not be looked at (Python 3.11 raises there)."""
    return _kind(p) == "folder"


def _denied(p: Path | str, what: str = "it") -> DocumentError:
    return DocumentError(
        p, f"permission denied: clara may not read {what}",
        "fix its permissions, or run as a user who may read it",
    )  # fmt: skip


GLOB_CHARS = re.compile(r"[*?[]")


#: Folders that macOS shows as one file (apps, iWork and rich-text documents, libraries): on a
#: Mac a walk skips them as a file of their type (their insides are resources, previews and
#: caches). Named on the command line, one is read like any folder; elsewhere they are folders.
PACKAGES = frozenset(
    ".app .bundle .framework .plugin .kext .appex .pages .numbers .key .rtfd .textbundle "
    ".photoslibrary .musiclibrary .tvlibrary .imovielibrary .fcpbundle .logicx .band "
    ".xcodeproj .xcworkspace .playground .sparsebundle .pkg .mpkg .docarchive".split()
)


def excluded(name: str, rel: str, patterns: Sequence[str]) -> bool:
    """Whether `--exclude` patterns leave a file or folder out: a pattern without '/' is
    matched against its name ('*.tmp.md', 'node_modules'), one with '/' against its path
    under the folder given ('drafts/*', '*/old/*'), as shell patterns whose '*' crosses '/'."""
    return any(fnmatch.fnmatchcase(rel if "/" in p else name, p) for p in patterns)


def _glob_base(pattern: str) -> Path:
    """The folder a glob pattern starts from: its path before the first wildcard."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if GLOB_CHARS.search(part)), len(parts))
    return Path(*parts[:fixed]) if fixed else Path(".")


def _below(path: Path, base: Path) -> bool:
    return os.path.normpath(path) != os.path.normpath(base) and not os.path.relpath(
        path, base
    ).startswith("..")


def _asked_type(pattern: str) -> str | None:
    """The extension a glob names for its files ('.py' of 'src/**/*.py'): files of that type
    are asked for, whatever types folders are searched for (None: none named)."""
    suffix = os.path.splitext(Path(pattern).name)[1].lower()
    return suffix if len(suffix) > 1 and not GLOB_CHARS.search(suffix) else None


@dataclass
class _Walk:
    """A folder walk's options and what it reports besides the files it finds."""

    recursive: bool
    skipped: list[Path]
    unreadable: list[DocumentError]
    exclude: Sequence[str]
    left_out: list[tuple[Path, str]]

    def files(self, root: Path, ignored: Ignored | None) -> list[Path]:
        """`_walk`, whole; a tree nested deeper than Python's walk recurses is one error."""
        try:
            return list(self._walk(root, ignored))
        except RecursionError:
            raise DocumentError(
                root, "folders nested too deep to walk (hundreds of levels)", "add its subfolders"
            ) from None

    def _walk(self, root: Path, ignored: Ignored | None) -> Iterable[Path]:
        seen = {os.path.realpath(root)}
        library = os.path.realpath(Path.home() / "Library")  # macOS: apps' data, not documents
        skipped, unreadable, exclude = self.skipped, self.unreadable, self.exclude

        def refused(exc: OSError) -> None:  # a folder os.walk could not list: said, not skipped
            if isinstance(exc, PermissionError):
                unreadable.append(_denied(exc.filename or root, "this folder"))
            elif not isinstance(exc, FileNotFoundError):  # (removed while walked: nothing to say)
                unreadable.append(
                    DocumentError(exc.filename or root, f"cannot list: {exc.strerror}")
                )

        def under(path: str) -> str:  # its path below `root`, '/'-separated
            return Path(os.path.relpath(path, root)).as_posix()

        def left(path: str, folder: bool) -> bool:  # --exclude'd, or a .gitignore's
            name = os.path.basename(path)
            if exclude and excluded(name, under(path), exclude):
                self.left_out.append((Path(path), "exclude"))
                return True
            if ignored is not None and ignored(path, folder):
                if folder or _wanted(Path(path)):  # (other types are skipped anyway)
                    self.left_out.append((Path(path), "ignore"))
                return True
            return False

        for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=refused):
            keep = []
            for d in sorted(dirnames) if self.recursive else []:
                real = os.path.realpath(os.path.join(dirpath, d))
                if is_hidden(d) or d == "lost+found" or real in seen:  # a link back up would
                    continue  # loop; lost+found: the file system's own (root's), at a mount's top
                if left(os.path.join(dirpath, d), True):
                    continue
                if _is_package(d) or (real == library and sys.platform == "darwin"):  # (macOS)
                    skipped.append(Path(dirpath) / d)
                else:
                    seen.add(real)
                    keep.append(d)
            dirnames[:] = keep
            for name in filenames:
                f = Path(dirpath) / name
                if left(str(f), False):
                    continue
                if not _wanted(f):  # by its name: hidden, or a type clara does not read
                    if not is_hidden(name):
                        skipped.append(f)
                    continue
                kind = _kind(f)
                if kind == "denied":  # (a folder that may be listed but not searched)
                    unreadable.append(_denied(f))
                elif kind != "file":  # a dangling link, a pipe
                    skipped.append(f)
                else:
                    yield f.resolve()


def _is_package(name: str) -> bool:
    return sys.platform == "darwin" and os.path.splitext(name)[1].lower() in PACKAGES


def is_hidden(name: str) -> bool:
    return name.startswith((".", "~$"))  # ~$ = Office lock files


def _wanted(p: Path) -> bool:
    return not is_hidden(p.name) and p.suffix.lower() in SUPPORTED_EXTENSIONS


# --- sniffing -------------------------------------------------------------------------

_MAGIC = {  # what a file is, by how its bytes start
    "zip archive / office document": (b"PK\x03\x04", b"PK\x05\x06"),  # docx, odt, epub too
    "legacy Office document": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",),
    "RTF document": (b"{\\rtf",),
    "image": (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*"),
    "archive": (b"\x1f\x8b", b"BZh", b"7z\xbc\xaf\x27\x1c", b"Rar!", b"\xfd7zXZ\x00"),
    "executable": (b"\x7fELF", b"MZ", b"\xcf\xfa\xed\xfe"),
    "database": (b"SQLite format 3\x00",),
}
_UNSUPPORTED = {
    **dict.fromkeys([".doc", ".rtf", ".pages"], "word-processor document"),
    **dict.fromkeys([".ppt", ".key"], "presentation"),
    **dict.fromkeys([".xls", ".numbers"], "spreadsheet"),
    **dict.fromkeys([".mobi", ".djvu"], "e-book"),
    **dict.fromkeys(
        [".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".webp", ".heic"], "image"
    ),
    **dict.fromkeys([".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".tar"], "archive"),
}


def _hint_for(what: str) -> str:
    if what == "image":
        return "run OCR first, e.g. `ocrmypdf --image-dpi 300 in.png out.pdf`"
    if what == "archive":
        return "extract it and pass the files inside"
    if what in ("executable", "database"):
        return "pass a PDF, Word, Markdown, HTML or text file"
    return "export it to PDF or text first (e.g. `libreoffice --convert-to pdf FILE`)"


def _sniff(data: bytes, ext: str) -> str | None:
    """The kind of binary file the bytes start with ('pdf', 'image', ...), or None."""
    # PDF readers accept junk before the header; a text file may just mention "%PDF-".
    head = data[:1024] if ext in PDF_EXTENSIONS or not ext else data[:5]
    if b"%PDF-" in head:
        return "pdf"
    return next((kind for kind, magics in _MAGIC.items() if data.startswith(magics)), None)


# --- text -----------------------------------------------------------------------------

_BOMS = [  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]
# What a terminal draws and a reader never sees: colour and cursor codes (CSI: a log or `ls
# --color` output saved to a file), window titles and links (OSC), and overstrike (`man`
# kept formatted: "x\bx" bold, "_\bx" underlined). Many of them made a log read as binary;
# a few left "[32mINFO[0m" in its text. (Codes are ASCII, which no byte of a UTF-8
# character is; a character struck over may be UTF-8.)
_TERMINAL = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    rb"|\x1b\][^\x07\x1b\n]{0,2048}(?:\x07|\x1b\\)"  # OSC, on its line (one left open: kept)
    rb"|(?:[\x20-\x7e]|[\xc2-\xf4][\x80-\xbf]{1,3})\x08"  # a character struck over
)
_BINARY_HINT = "pass a PDF, Word, Markdown, HTML or text file (UTF-16 text needs a BOM)"


def _decode_text(path: Path, data: bytes, declared: str | None = None) -> tuple[str, list[str]]:
    """Decode text: BOM, else UTF-8, else the encoding the file declares (an HTML page's
    `<meta charset>`), else an 8-bit encoding when the result looks like text: cp1252/latin-1 for
    Western European text, a guessed one (`_guess_8bit`) for text cp1252 would garble.

    A file that is UTF-8 but for a few bytes (a line pasted from a Latin-1 file) stays UTF-8:
    those bytes become U+FFFD, with a warning, instead of the whole file turning to mojibake.
    Terminal colour codes and overstrike (`_TERMINAL`) are dropped first, in any 8-bit or
    UTF-8 text. Returns (text, warnings)."""
    wide = any(data.startswith(b) for b, e in _BOMS if e != "utf-8")
    if not wide and (b"\x1b" in data or b"\x08" in data):
        data = _TERMINAL.sub(b"", data)
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding), []
            except UnicodeDecodeError as e:
                raise CorruptDocumentError(
                    path, f"invalid {encoding} text at byte {e.start + len(bom)}", "re-save it"
                ) from None
    if _ISO2022.search(data[:65536]):  # 7-bit, so it would pass for ASCII: its escapes tell
        try:
            return data.decode("iso2022_jp_ext"), []
        except UnicodeDecodeError:
            pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        first_bad = e.start
    else:
        if _looks_like_text(text):
            return text, []
        raise UnsupportedDocumentError(
            path, "binary file (not text in a known encoding)", _BINARY_HINT
        )
    if declared:  # not UTF-8 (valid UTF-8 wins over a page's stale declaration)
        try:
            text = data.decode(declared)
        except UnicodeDecodeError:  # a few bad bytes keep the declaration; many drop it
            text = data.decode(declared, "replace")
            bad = text.count("\ufffd")
            if bad <= max(2, len(text) // 1000) and _looks_like_text(text):
                return text, [f"{bad} characters are not {declared} and were read as U+FFFD"]
        except LookupError:
            pass  # the declaration is wrong: read it as any other file
        else:
            if _looks_like_text(text):
                return text, []
    lenient = data.decode("utf-8", "replace")
    genuine = data.count("\ufffd".encode())  # U+FFFD the file itself holds
    bad = lenient.count("\ufffd") - genuine
    multibyte = sum(1 for c in lenient if ord(c) > 0x7F) - bad - genuine
    if multibyte > bad and _looks_like_text(lenient):  # UTF-8 but for these bytes
        return lenient, [
            f"{bad} {'byte is' if bad == 1 else 'bytes are'} not UTF-8 (the first at byte "
            f"{first_bad}) and {'was' if bad == 1 else 'were'} read as U+FFFD; re-save the file "
            "as UTF-8 to keep those characters"
        ]
    guessed = "not UTF-8: read as {} (a guess); re-save the file as UTF-8 to be sure"
    western = _looks_western(data[:65536])  # (CJK that cp1252 would pass for Latin: not)
    guess = None if western else _guess_east_asian(data)
    if guess is not None:
        return guess[1], [guessed.format(guess[0])]
    if (mac := _mac_roman(data)) is not None:
        return mac, [guessed.format("mac_roman")]
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:  # bytes cp1252 leaves undefined: Czech "ť" in cp1250, ...
        text = None
    if text is not None and _looks_like_text(text) and not _garbled_western(text):
        return text, []
    guess = _guess_8bit(data)
    if guess is None and western:
        if text is not None and _looks_like_text(text):  # Latin letters in words ("Één")
            return text, []  # however many: cp1252 after all
        guess = _guess_east_asian(data)  # (CJK that looked Latin, and is no cp1252)
    if guess is not None:
        return guess[1], [guessed.format(guess[0])]
    if text is None:
        text = data.decode("latin-1")
    if not _looks_like_text(text):
        raise UnsupportedDocumentError(
            path, "binary file (not text in a known encoding)", _BINARY_HINT
        )
    raise UnsupportedDocumentError(
        path,
        "text in an 8-bit encoding other than Western European (cp1252) that could not be told",
        "re-save the file as UTF-8",
    )


_CHARSET = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)"""
    rb"""|<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""",
    re.I,
)
#: Labels that the WHATWG Encoding Standard (what browsers follow) reads as a wider encoding
#: than Python's codec of that name: a page labelled euc-kr is cp949 to a browser, one
#: labelled iso-8859-1 is windows-1252.
_WHATWG = {
    **dict.fromkeys(["euc-kr", "ks_c_5601-1987", "ks_c_5601-1989", "korean", "csksc56011987",
                     "iso-ir-149", "ksc5601", "ksc_5601", "windows-949"], "cp949"),
    **dict.fromkeys(["gb2312", "gbk", "x-gbk", "chinese", "csgb2312", "csiso58gb231280",
                     "gb_2312", "gb_2312-80", "iso-ir-58", "gb18030"], "gb18030"),
    **dict.fromkeys(["shift_jis", "shift-jis", "sjis", "x-sjis", "ms_kanji", "ms932",
                     "windows-31j", "csshiftjis"], "cp932"),
    **dict.fromkeys(["big5", "big5-hkscs", "cn-big5", "csbig5", "x-x-big5"], "big5hkscs"),
    **dict.fromkeys(["iso-8859-1", "iso8859-1", "latin1", "l1", "ascii", "us-ascii",
                     "iso_8859-1", "cp819", "ibm819", "windows-1252", "x-cp1252"], "cp1252"),
    **dict.fromkeys(["iso-8859-9", "latin5", "windows-1254"], "cp1254"),
    **dict.fromkeys(["tis-620", "iso-8859-11", "windows-874", "dos-874"], "cp874"),
}  # fmt: skip


def _html_charset(data: bytes) -> str | None:
    """The encoding an HTML page declares in its first 4 KB (`<meta charset="...">`, the
    http-equiv Content-Type, or an XHTML file's `<?xml encoding=...?>`), as a browser reads
    that label, by its Python name; None if none or unknown."""
    m = _CHARSET.search(data[:4096])
    if not m:
        return None
    try:
        label = (m.group(1) or m.group(2)).decode("ascii").lower()
        return codecs.lookup(_WHATWG.get(label, label)).name
    except (LookupError, UnicodeDecodeError):
        return None


def _garbled_western(text: str) -> bool:
    """Whether text read as cp1252 is another 8-bit encoding's mojibake: Cyrillic, Greek,
    Hebrew or Arabic bytes read that way are words of accented Latin letters alone ("Êîøêè
    ñïÿò"), where French or German have an accent here and there among ASCII letters; Polish
    or Czech bytes put signs inside words ("Za¿ó³æ")."""
    sample = text[:65536]
    letters = [c for c in sample if c.isalpha()]
    high = sum(1 for c in letters if "\u00c0" <= c <= "\u00ff")
    if len(letters) >= 3 and high > 0.4 * len(letters):
        return True
    # Central European (cp1250) read as cp1252 puts signs inside words: "Za¿ó³æ", "³ódŸ"
    inside = sum(
        1 for a, c, b in zip(sample, sample[1:], sample[2:])
        if a.isalpha() and b.isalpha() and ("\u00a1" <= c <= "\u00bf" or c in "ŒœŸ")
        and c not in "·ªº"  # Catalan "col·lecció", ordinals: Western text has them in words
    )  # fmt: skip
    return inside >= 2


#: 8-bit encodings `_guess_8bit` chooses among (cp1252's neighbours for other alphabets)
_EIGHT_BIT = ["cp1251", "koi8_r", "cp1253", "cp1250", "cp1254", "cp1255", "cp1256", "cp1257"]


def _guess_8bit(data: bytes) -> tuple[str, str] | None:
    """(encoding, text) by charset-normalizer among `_EIGHT_BIT`, or None when it finds none
    whose text reads as a language (mess ratio under 0.2)."""
    from charset_normalizer import from_bytes

    best = from_bytes(data, cp_isolation=_EIGHT_BIT).best()
    if best is None or best.chaos >= 0.2:
        return None
    text = str(best)
    if not _looks_like_text(text) or _garbled_western(text):
        return None
    return best.encoding, text


#: Chinese, Japanese and Korean encodings of two bytes per character `_guess_east_asian`
#: chooses among (each the widest of its family: cp949 reads EUC-KR, cp932 Shift-JIS,
#: gb18030 GBK and GB2312).
_EAST_ASIAN = ["cp949", "cp932", "euc_jp", "gb18030", "big5hkscs"]
_HIGH_RUNS = re.compile(rb"[\x80-\xff]+")
_ISO2022 = re.compile(rb"\x1b\$[@B]|\x1b\$\(D|\x1b\([BJI]")  # ISO-2022-JP's escapes
_CJK_LETTER = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff66-\uff9f\U00020000-\U0003134f]"
)


def _guess_east_asian(data: bytes) -> tuple[str, str] | None:
    """(encoding, text) for text in a Chinese, Japanese or Korean legacy encoding, else None.

    Read as cp1252, such files pass for accented Latin ("Author: ±èÃ¶¼ö" for 김철수), so
    they are told first: the bytes valid in one of `_EAST_ASIAN`, its non-ASCII characters
    CJK ones, and a sign that the file is no Western European text that happens to fit
    (German "Grüße aus München" is valid GB18030, "Ça marche." Big5): its non-ASCII bytes
    all in pairs, or cp1252's reading of them mostly symbols where Western text has letters
    ("—é–Ø" for 鈴木): the caller asks `_looks_western` first. charset-normalizer picks among
    the encodings that fit. A few names in English text may fit Korean and Chinese alike: the
    pick is a guess, and the caller says so."""
    fits = []
    for name in _EAST_ASIAN:
        try:
            text = data.decode(name)
        except UnicodeDecodeError:
            continue
        chars = [c for c in text[:32768] if ord(c) > 0x7F and not c.isspace()]
        if chars and sum(1 for c in chars if _CJK_LETTER.match(c)) >= 0.8 * len(chars):
            fits.append(name)
    if not fits:
        return None
    name = fits[0]
    if len(fits) > 1:
        from charset_normalizer import from_bytes

        best = from_bytes(data, cp_isolation=fits).best()
        name = best.encoding if best is not None and best.encoding in fits else name
    text = data.decode(name)
    return (name, text) if _looks_like_text(text) else None


def _looks_western(data: bytes) -> bool:
    """Whether bytes that may be CJK read as Western European text in cp1252: its non-ASCII
    characters mostly letters, and in words: beside an ASCII letter ("Größe", "Configuração",
    "Één") or not all in pairs ("Ça"). Chinese, Japanese and Korean in a legacy encoding come
    out as runs of symbols and letters between spaces ("Author: ±èÃ¶¼ö")."""
    runs = list(_HIGH_RUNS.finditer(data))
    high = [c for c in data.decode("cp1252", "replace") if ord(c) > 0x7F]
    if not runs or sum(c.isalpha() for c in high) < 0.6 * len(high):
        return False
    if any(len(m.group()) % 2 for m in runs):
        return True

    def letter(i: int) -> bool:
        return 0 <= i < len(data) and (65 <= data[i] <= 90 or 97 <= data[i] <= 122)

    inside = sum(letter(m.start() - 1) or letter(m.end()) for m in runs)
    return inside >= 0.5 * len(runs)


# Letters of Western European words: what text in an 8-bit Western encoding has beside
# its ASCII letters ("Größe", "élève").
_WESTERN_LETTERS = frozenset("àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝŒ")


def _mac_roman(data: bytes) -> str | None:
    """The text, when the bytes are Mac OS Roman (classic Mac text files): the characters
    next to ASCII letters are Western letters read that way, cp1252 reads them as neither
    letters nor its quotes, dashes and marks, and cp1252 cannot be right: a byte it leaves
    undefined, or a symbol inside a word ("Größe" is "Grš§e" there, "crème" has no cp1252
    reading). A documents audit found such files read as cp1252 without a warning, or
    refused as binary; a review, that "Microsoft™" and "Košice" must stay cp1252."""
    sample = data[:65536]
    if not any(b > 0x7F for b in sample):
        return None
    mac, win = sample.decode("mac_roman"), sample.decode("cp1252", "replace")

    def letter(c: str) -> bool:
        return c.isascii() and c.isalpha()

    # (one character a byte in both readings: their positions agree)
    spots = [
        i
        for i, c in enumerate(mac)
        if ord(c) > 0x7F
        and ((i > 0 and letter(mac[i - 1])) or (i + 1 < len(mac) and letter(mac[i + 1])))
    ]
    if len(spots) < 3:
        return None
    as_mac = sum(mac[i] in _WESTERN_LETTERS for i in spots)
    as_win = sum(win[i] in _WESTERN_LETTERS or win[i] in _CP1252_MARKS for i in spots)
    if as_mac < 0.9 * len(spots) or as_win > 0.5 * len(spots):
        return None
    undefined = any(b in (0x81, 0x8D, 0x8F, 0x90, 0x9D) for b in sample)
    inside = any(
        0 < i < len(win) - 1 and win[i - 1].isalpha() and win[i + 1].isalpha()
        and unicodedata.category(win[i])[0] in "PS"
        for i in spots
    )  # fmt: skip
    return data.decode("mac_roman") if undefined or inside else None


#: What cp1252 has beside letters in its own text: quotes, dashes, trademark and note marks
_CP1252_MARKS = frozenset("“”‘’–—…•™†‡€ƒ")


def _looks_like_text(text: str) -> bool:
    sample = text[:65536]
    controls = sum(1 for c in sample if _is_control(c) and c not in "\t\n\r\f\v")
    return controls <= 2 + len(sample) // 50  # a stray NUL or escape is fine; binaries have ~10%


def _is_control(c: str) -> bool:
    o = ord(c)
    return o < 0x20 or 0x7F <= o < 0xA0


# Controls and invisible characters that are noise for a model: C0/C1 controls (except tab,
# newline, form feed), zero-width space, BOM, soft hyphen. ZWJ/ZWNJ are kept (emoji, scripts).
_NOISE = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\u00ad\u200b\ufeff]")
_LIGATURES = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl"}
)


def clean_text(text: str) -> str:
    """Normalise newlines and Unicode (NFC: text from macOS file names and some editors is
    decomposed, "한" as three jamo) and drop control characters; keeps layout and
    indentation."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", _NOISE.sub("", text))


def clean_pdf_text(text: str, tex: bool = False) -> str:
    """Conservative cleanup of extracted PDF text.

    Joins words hyphenated across lines ("exam-\\nple" -> "example", only before a lowercase
    letter), expands Latin ligatures, collapses runs of spaces, trims lines and keeps at most
    one blank line between paragraphs. `tex`: a TeX engine wrote it (`_made_by_tex`), so an
    accent drawn before its letter is put on it.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    if _BROKEN_WORD.search(text):
        words = _Words(text)
        text = _BROKEN_WORD.sub(lambda m: _dehyphen(m, words), text)
    text = _NOISE.sub("", text).translate(_LIGATURES)
    text = re.sub(r"[^\S\n]+", " ", text)  # tabs, NBSP, odd spaces -> one space
    text = _LEADERS.sub(" … ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    if tex:  # (elsewhere a lone ´ is an apostrophe or a minute sign: "It´s", "31´N")
        text = _SPACING_ACCENT.sub(_accented, text)
    text = unicodedata.normalize("NFC", text)  # PDFs often decompose accents
    text = _COMPAT_FORMS.sub(lambda m: unicodedata.normalize("NFKC", m.group(0)), text)
    return _join_cjk_wraps(text.translate(_RADICALS)).strip()


# A contents page's dot leaders ("Results . . . . . . 12"): a token a dot, they filled chunks
_LEADERS = re.compile(r"(?: ?[.·…]){4,} ?")
# An accent drawn as a glyph of its own before its letter, as pdfTeX's default fonts draw
# them ("M¨uller", "Fran¸cois", "( ´Ecole"): put on the letter where the two make one
# (`_accented`); the grave only inside a word ("Lef`evre"), a space only before a capital
_ACCENT_MARKS = {
    "¨": "\u0308", "´": "\u0301", "`": "\u0300", "ˆ": "\u0302", "˜": "\u0303", "¸": "\u0327",
    "˚": "\u030a", "ˇ": "\u030c", "˘": "\u0306", "˝": "\u030b", "¯": "\u0304", "˙": "\u0307",
}  # fmt: skip
_SPACING_ACCENT = re.compile(
    r"([¨´ˆ˜¸˚ˇ˘˝¯˙])(?:([^\W\d_])| ([^\W\d_a-z]))|(?<=[^\W\d_])(`)([^\W\d_])"
)
# Compatibility forms some PDF fonts map their glyphs to: Kangxi radicals for the Chinese and
# Japanese characters they look like ("四⼗⼋": U+2F17, U+2F0B), Arabic presentation forms
# (a word's letters as drawn, more tokens than its letters), Hebrew's; read as NFKC reads them
_COMPAT_FORMS = re.compile("[\u2f00-\u2fdf\ufb00-\ufdff\ufe70-\ufefe]+")
# The CJK radicals NFKC leaves as they are (U+2E80-2EF3: "台⻛" for 台风), each with the
# ideograph it is drawn as (the one Noto CJK's fonts draw with the same glyph)
_RADICALS = str.maketrans(
    dict(
        zip(
            *[
                iter(
                    "⺂乛⺃乚⺅亻⺇𠘨⺉刂⺋㔾⺍𭕄⺎兀⺏尣⺐尢⺒巳⺓幺⺔彑⺕彐⺖忄⺘扌⺙攵⺛旡⺞歺⺠民⺡氵⺣灬⺤爫⺦丬⺨犭⺩𤣩⺫罒⺭礻⺮𥫗⺯糹"
                    "⺰纟⺱罓⺲罒⺳㓁⺹耂⺺肀⺽𦥑⺾艹⺿艹⻀艹⻂衤⻃覀⻄西⻅见⻆角⻇𧢲⻈讠⻉贝⻊𧾷⻋车⻌辶⻍辶⻎辶⻐钅⻑長⻒镸⻓长⻔门⻕𨸏⻖阝"
                    "⻘青⻙韦⻚页⻛风⻜飞⻝食⻞𩙿⻟飠⻠饣⻡𩠐⻢马⻣骨⻤鬼⻥鱼⻦鸟⻧卤⻨麦⻩黄⻪黾⻫斉⻬齐⻭歯⻮齿⻯竜⻰龙⻱龜⻲亀"
                )
            ]
            * 2
        )
    )
)


def _accented(m: re.Match) -> str:
    accent = m.group(1) or m.group(4)
    letter = m.group(2) or m.group(3) or m.group(5)
    before = m.string[m.start() - 1 : m.start()]
    if accent == "˜" and before in "/:~":  # a URL's "~user" (TeX prints \~{} so), not ñ
        return m.group(0)
    if accent == "´" and before.isalnum():  # an apostrophe or a minute sign, not an accent:
        if letter.isupper() or _CONTRACTION.match(m.string, m.end() - 1):  # O´Neill, It´s
            return m.group(0)
    composed = unicodedata.normalize("NFC", letter + _ACCENT_MARKS[accent])
    return composed if len(composed) == 1 else m.group(0)  # (no such letter: as it was)


_CONTRACTION = re.compile(r"(?:s|m|d|t|re|ll|ve)\b")


_HAN_KANA = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")


def _join_cjk_wraps(text: str) -> str:
    """Chinese and Japanese lines wrap anywhere, inside words too ("两万公\n里"): a line
    break between two of their characters is layout when the line before it is full (as
    long as most of the page's Chinese or Japanese lines); a heading, a list item or a table
    cell ends short, and keeps its line. (Not Korean: it spaces its words and wraps there.)"""
    lines = text.split("\n")
    widths = sorted(len(line) for line in lines if _HAN_KANA.search(line))
    if len(widths) < 2:
        return text
    full = max(12, 0.85 * widths[int(0.9 * (len(widths) - 1))])
    out = [lines[0]]
    for before, line in zip(lines, lines[1:]):
        wrapped = before and line and _HAN_KANA.match(line[0]) and _HAN_KANA.match(before[-1])
        if wrapped and len(before) >= full:
            out[-1] += line
        else:
            out.append(line)
    return "\n".join(out)


# A letter, a hyphen (or soft hyphen) ending a line, a letter: a word broken by layout, or
# a compound that keeps its hyphen (`_dehyphen`)
_BROKEN_WORD = re.compile(r"(?<=[^\W\d_])\u00ad?[-\u2010\u00ad][ \t]*\n[ \t]*(?=[^\W\d_])")
_WORD = re.compile(r"[^\W\d_]+")
_HYPHENATED = re.compile(r"(?<![^\W\d_-])[^\W\d_]+(?:-[^\W\d_]+)+")
_WORD_BEFORE = re.compile(r"[^\W\d_]+$")
# Words that lead compounds keeping their hyphen ("self-contained", "well-known") when what
# follows is a word of its own: 5+ letters ("well-\nness" is "wellness" split by layout) or
# a word the text uses alone. Others ("semi", "cross", "half") keep it only when the text
# writes the compound whole elsewhere.
_COMPOUND_FIRST = frozenset({"self", "well"})


class _Words:
    """A page's words and hyphenated pairs ("state-of-the-art": state-of, of-the, the-art)."""

    def __init__(self, text: str):
        self.words = Counter(w.lower() for w in _WORD.findall(text))  # (split halves too)
        self.pairs = set()
        for m in _HYPHENATED.finditer(text):
            parts = m.group(0).lower().split("-")
            self.pairs.update(f"{a}-{b}" for a, b in zip(parts, parts[1:]))


def _dehyphen(m: re.Match, seen: _Words) -> str:
    """A letter + hyphen + line break + letter: keep the hyphen before a capital ("Jean-
    \nPaul"); join a word split by layout ("exam-\nple", and any whose joined form the page
    uses: "semi-\nconductor" beside "semiconductor"); keep the hyphen of a compound the page
    writes whole elsewhere, or one `_COMPOUND_FIRST` leads. A soft hyphen is layout always."""
    if not m.string[m.end()].islower():
        return m.group(0)
    if "\u00ad" in m.group(0):
        return ""
    before = _WORD_BEFORE.search(m.string, max(0, m.start() - 64), m.start())
    after = _WORD.match(m.string, m.end())
    if before is None or after is None:
        return ""
    first, second = before.group(0).lower(), after.group(0).lower()
    if seen.words[first + second]:
        return ""
    if f"{first}-{second}" in seen.pairs:
        return "-"
    if first in _COMPOUND_FIRST and (len(second) >= 5 or seen.words[second] > 1):
        return "-"
    return ""


_SPLIT_AT_END = re.compile(r"[^\W\d_]\u00ad?[-\u2010\u00ad]$")


def _join_split_words(texts: list[str]) -> list[str]:
    """A word hyphenated across a page break ("calibra-" ending one page, "tion" starting the
    next) joined as one within a page is (`_dehyphen`), and kept on the page it starts on:
    the next page gives up its first word."""
    texts = list(texts)
    filled = [i for i, text in enumerate(texts) if text]
    for a, b in zip(filled, filled[1:]):
        before, after = texts[a], texts[b]
        head = _WORD.match(after)
        if head is None or not after[0].islower() or not _SPLIT_AT_END.search(before):
            continue
        joined = f"{before}\n{after}"
        m = _BROKEN_WORD.search(joined, len(before) - 2)
        if m is None or m.end() != len(before) + 1:
            continue
        end = len(head.group(0))
        while end < len(after) and not after[end].isspace():  # its punctuation too
            end += 1
        texts[a] = before[: m.start()] + _dehyphen(m, _Words(joined)) + after[:end]
        texts[b] = after[end:].lstrip()
    return texts


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def clean_markdown(text: str) -> str:
    """Markdown as readable text: drops HTML comments, image and link URLs, link definitions
    and heading markers; code blocks are kept verbatim."""
    text = clean_text(text)
    out: list[str] = []
    prose: list[str] = []
    fence = ""

    def cleaned() -> None:  # the prose so far, its blank lines collapsed (not the code's)
        if prose:  # (one blank line at most, the newlines joining it to code included)
            text = re.sub(r"\n{3,}", "\n\n", _clean_md_prose("\n".join(prose)))
            text = re.sub(r"\n+\Z", "\n", re.sub(r"\A\n+", "\n", text))
            out.append(text if text.strip() else "")
        prose.clear()

    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence:
            out.append(line)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = ""
        elif m:
            cleaned()
            out.append(line)
            fence = m.group(1)
        else:
            prose.append(line)
    cleaned()
    return "\n".join(out).strip()


#: reStructuredText markup that is no prose: a directive's line (".. note::"), a target
#: (".. _label:"), a substitution's definition, and a comment (".. any text")
_RST_EXPLICIT = re.compile(r"^(\s*)\.\.(?:\s|$)")
_RST_DIRECTIVE = re.compile(r"^\s*\.\.\s+([\w:.+-]+)::(.*)$")
_RST_OPTION = re.compile(r"^\s+:[\w-]+:(?:\s.*)?$")
_RST_ROLE = re.compile(r":[\w:+.-]+:`([^`<]*?)\s*(?:<[^>`]*>)?`")
#: directives whose whole block is markup (a table of contents, index entries, a module's
#: declaration), not text to read
_RST_DROPPED = {"toctree", "index", "contents", "raw", "include", "automodule", "autoclass",
                "autofunction", "highlight", "sectnum", "meta", "image", "figure"}  # fmt: skip
#: directives whose argument is no prose (a code block's language, a file's name): the others'
#: are read (".. class:: Frobber(level=3)", a note's first words)
_RST_ARGUMENT_NOISE = {"code-block", "code", "sourcecode", "literalinclude", "only", "ifconfig",
                       "tabularcolumns", "csv-table", "list-table", "highlight"}  # fmt: skip


def clean_rst(text: str) -> str:
    """reStructuredText as readable text: comments (Sphinx's "master file" line became every
    chunk's title), targets, table-of-contents and index blocks, directive lines and their
    options are dropped, roles are their text (":class:`Frobber`" reads "Frobber"); a
    directive's content (a note's text, a code block) is kept, and headings stay as they are
    (their underlines are found as in plain text)."""
    out: list[str] = []
    skip_below: int | None = None  # in a dropped block: lines indented past this are in it
    options = False  # after a directive's line: its ":option:" lines
    for line in text.split("\n"):
        indent = len(line) - len(line.lstrip())
        if skip_below is not None:
            if not line.strip() or indent > skip_below:
                continue
            skip_below = None
        if options and _RST_OPTION.match(line):
            continue
        options = False
        m = _RST_EXPLICIT.match(line)
        if m:
            directive = _RST_DIRECTIVE.match(line)
            if directive and directive.group(1).lower() not in _RST_DROPPED:
                options = True  # its content, indented below, is read
                name = directive.group(1).lower().rpartition(":")[2]  # ("py:class": "class")
                if directive.group(2).strip() and name not in _RST_ARGUMENT_NOISE:
                    out.append(" " * indent + _RST_ROLE.sub(r"\1", directive.group(2).strip()))
                continue
            skip_below = len(m.group(1))  # a comment, a target, a dropped block: all of it
            continue
        out.append(_RST_ROLE.sub(r"\1", line))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n")


def code_blocks(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the fenced code blocks of Markdown text (`clean_markdown`'s
    output keeps them as they were), from the opening fence to the end of the closing one
    (or of the text, for one left open)."""
    out, fence, start, pos = [], "", 0, 0
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                out.append((start, pos + len(line)))
                fence = ""
        elif m:
            fence, start = m.group(1), pos
        pos += len(line) + 1
    if fence:
        out.append((start, len(text)))
    return out


_FRONT_MATTER = re.compile(
    r"\A(?:---[ \t]*\n(.*?\n)(?:---|\.\.\.)|\+\+\+[ \t]*\n(.*?\n)\+\+\+)[ \t]*(?:\n|\Z)", re.S
)  # YAML between --- lines, or TOML between +++ lines (Hugo)
_YAML_LINE = re.compile(r"^(?:[\w.-]+[ \t]*:(?:[ \t]|$)|[ \t]|-[ \t]|#)")  # key:, nested, item
_TOML_LINE = re.compile(r"^(?:[\w.\"-]+[ \t]*=|\[|[ \t]|#|[\]\"'\d-])")  # key =, [table], ...
_TITLE_LINE = re.compile(r"^title[ \t]*[:=][ \t]*(.+?)[ \t]*$", re.M | re.I)


def front_matter(text: str) -> tuple[str, str | None]:
    """Markdown without its front matter (Jekyll, Hugo, Obsidian: YAML between `---` lines,
    or Hugo's TOML between `+++` lines, at the very top), and the title it gives, if any.
    The block is metadata, not prose to read."""
    m = _FRONT_MATTER.match(text)
    if not m or len(m.group(0)) > 16384:
        return text, None
    block, line_form = (m.group(1), _YAML_LINE) if m.group(1) else (m.group(2), _TOML_LINE)
    lines = [line for line in block.split("\n") if line.strip()]
    if not lines or not all(line_form.match(line) for line in lines):
        return text, None  # prose between two rules, not metadata
    title = _TITLE_LINE.search(block)
    value = title.group(1).strip().strip("\"'").strip() if title else ""
    return text[m.end() :], value or None


#: put at the start of a Markdown heading's text before cleaning, and taken out after: where
#: the headings are in the cleaned text (a private-use character, never in real text here)
_HEADING_MARK = "\ue0f1"


def _mark_headings(text: str) -> str:
    """Markdown with `_HEADING_MARK` at the start of each heading's text (the headings
    `markdown_headings` finds, in the same order)."""
    out = text.replace(_HEADING_MARK, "").split("\n")
    for i, start, _ in _headings_in(list(out)):
        out[i] = out[i][:start] + _HEADING_MARK + out[i][start:]
    return "\n".join(out)


def marked_headings(text: str) -> tuple[str, tuple[int, ...]]:
    """Cleaned Markdown with the marks `_mark_headings` put in taken out, and the lines
    that had one."""
    lines = text.split("\n")
    marked = tuple(i for i, line in enumerate(lines) if _HEADING_MARK in line)
    return text.replace(_HEADING_MARK, ""), marked


def markdown_headings(text: str) -> list[str]:
    """The headings of Markdown text outside code blocks (`#` ones, and one-line titles
    underlined by `===` or `---`), as clean_markdown shows them (markers and link URLs
    dropped)."""
    return [heading for _, _, heading in _headings_in(text.split("\n"))]


def _headings_in(lines: list[str]) -> Iterator[tuple[int, int, str]]:
    """(line, where its text starts, the heading as clean_markdown shows it) of each heading
    of Markdown `lines` outside code blocks."""
    fence = ""
    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = ""
        elif m:
            fence = m.group(1)
        elif h := _ATX.match(line):
            if heading := _clean_md_prose(h.group(1)).strip():
                yield i, h.start(1), heading
        elif _SETEXT.match(line) and i and _setext_title(lines, i - 1):
            if heading := _clean_md_prose(lines[i - 1]).strip():
                title = lines[i - 1]
                yield i - 1, len(title) - len(title.lstrip()), heading


_SETEXT = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")


def _setext_title(lines: list[str], i: int) -> bool:
    """Whether line `i` is a one-line paragraph that the next line underlines (a setext
    heading: "Title" over "====="); not a list item, a table row or a rule."""
    line = lines[i]
    if not line.strip() or (i and lines[i - 1].strip()) or line.startswith((" " * 4, "\t")):
        return False
    return not (re.match(r"^ {0,3}(?:[-*+>|#]|\d+[.)]\s)", line) or _SETEXT.match(line))


_ATX = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")


# A link's text holds no "[" and its URL no "(" but in one pair ("Paris_(France)"), within a
# line: each match then stops at the next bracket, so text of "![" or "[a](" repeated is read
# in linear time (with "[^\]]*" each of them scanned to the end: a 30 KB file took 10 s)
_LINK_TEXT = r"\[([^\[\]]*)\]"
_URL = r"\((?:[^()\n]|\([^()\n]*\))*\)"


def _clean_md_prose(text: str) -> str:
    text = re.sub(r"<!--.*?(-->|\Z)", "", text, flags=re.S)
    text = re.sub(r"!" + _LINK_TEXT + _URL, r"\1", text)  # image -> alt text
    text = re.sub(r"!?\[([^\[\]]+)\]" + _URL, r"\1", text)  # [text](url) -> text
    text = re.sub(r"!?\[([^\[\]]+)\]\[[^\[\]\n]*\]", r"\1", text)  # [text][ref] -> text
    # [ref]: url (its url on the line or the next; a footnote, [^1]: text, is text)
    text = re.sub(r"(?m)^ {0,3}\[(?!\^)[^\[\]\n]+\]:[ \t]*\n?[ \t]*\S+.*$\n?", "", text)
    text = re.sub(r"(?m)^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", r"\1", text)
    # a setext heading's underline, a rule; bold and italic markers; inline HTML tags (named
    # ones only: "List<String>" is text); an autolink's brackets (a documents audit found
    # "**", "<b>" and "==========" in the indexed text)
    text = re.sub(r"(?m)^ {0,3}(?:=+|-{3,}|\*{3,}|_{3,})[ \t]*$", "", text)
    return "\n".join(_inline_markup(line) for line in text.split("\n"))


def _inline_markup(line: str) -> str:
    """A prose line without its bold and italic markers, inline HTML tags and autolink
    brackets; its code spans, and a line indented as code, as written (a review: "`<br/>`"
    and "`__init__`" lost their code)."""
    if line.startswith(("    ", "\t")) or not _MARKUP_CHAR.search(line):
        return line
    parts = _CODE_SPAN.split(line) if "`" in line else [line]
    for i in range(0, len(parts), 2):  # (odd parts: the code spans)
        for pattern in _MARKERS:
            parts[i] = pattern.sub(r"\1", parts[i])
        parts[i] = _INLINE_HTML.sub("", parts[i])
    return "".join(parts)


# Bold, italic (a marker inside a word, "snake_case", "a*b", is text) and an autolink's
# brackets, each kept as its group 1; spans bounded, so unclosed markers read in linear time
_MARKERS = [
    re.compile(r"\*\*(?=\S)((?:[^*\n]|\*(?!\*)){1,150}?)(?<=\S)\*\*"),
    re.compile(r"__(?=\S)((?:[^_\n]|_(?!_)){1,150}?)(?<=\S)__"),
    re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]{1,150}?)(?<=[^\s*])\*(?![\w*])"),
    re.compile(r"(?<![\w_])_(?=[^\s_])([^_\n]{1,150}?)(?<=[^\s_])_(?![\w_])"),
    re.compile(r"<((?:https?|mailto):[^<>\s]{1,2000})>"),
]


_CODE_SPAN = re.compile(r"(``[^\n]*?``|`[^`\n]*`)")
_MARKUP_CHAR = re.compile(r"[*_<]")
# Named inline HTML tags with attributes as CommonMark reads them ("if a<b && c>d" is text)
_INLINE_HTML = re.compile(
    r"</?(?:a|abbr|b|big|blockquote|br|center|code|del|details|div|em|figcaption|figure|font|"
    r"h[1-6]|hr|i|img|ins|kbd|li|mark|ol|p|pre|s|small|span|strong|sub|summary|sup|table|"
    r"tbody|td|th|thead|tr|u|ul)"
    r"(?:[ \t]+[A-Za-z_:][\w.:-]{0,64}(?:[ \t]*=[ \t]*(?:\"[^\"\n]{0,500}\"|'[^'\n]{0,500}'"
    r"|[^\s\"'=<>`]{1,500}))?){0,32}[ \t]*/?>",
    re.I,
)


# --- PDF ------------------------------------------------------------------------------


def _read_pdf(
    path: Path, data: bytes, password: str | None
) -> tuple[list[Page], list[str], str | None, bool]:
    """(pages, warnings, title, whether it is a deck of slides)"""
    with _quiet_pypdf():
        reader = _open_pdf(path, data, password)
        n_pages = len(reader.pages)
        presented, slide_shaped = _made_by_presenter(reader), _slide_shaped(reader)
        pages, failed, empty, sparse = [], [], [], []
        most, chars = pdf_text_bound(len(data)), 0
        drawn: list[list[Level] | None] = []
        for number, page, text, levels in _pdf_texts(path, data, reader):
            drawn.append(levels)
            chars += len(text or "")
            if chars > most:  # pages that decode one small stream again and again
                raise CorruptDocumentError(
                    path, f"{_pages(number)} {'holds' if number == 1 else 'hold'} over "
                    f"{most:,} characters of text, "
                    f"more than a PDF of {len(data):,} bytes can (a decompression bomb?)",
                    _EXTRACT_IT,
                )  # fmt: skip
            if text is None:  # one broken page should not lose the rest
                text = ""
                failed.append(number)
            elif not text:
                empty.append(number)
            elif len(text) < SPARSE_PAGE_CHARS and not presented and _has_image(page):
                sparse.append(number)  # a scan with a stamp or page number on it?
            pages.append(Page(number, text))

    if len(failed) == n_pages:
        raise _corrupt(path, data, _pdf_error("no page could be read"))
    warnings = []
    if failed:
        warnings.append(f"page {_ranges(failed)}: could not be read (damaged?)")
    if empty and len(empty) < n_pages:
        warnings.append(f"page {_ranges(empty)}: no extractable text (scanned? run OCR)")
    if sparse:
        warnings.append(
            f"page {_ranges(sparse)}: an image with only a line or two of text (scanned? run "
            f"OCR, e.g. `ocrmypdf --force-ocr {path.name} ocr.pdf`)"
        )
    if b"%%EOF" not in data[-2048:]:
        warnings.append("file looks truncated (no %%EOF); indexed what could be read")
    filled = sorted(len(p.text) for p in pages if p.text)
    deck = presented or (slide_shaped and bool(filled) and filled[len(filled) // 2] < 600)
    body = body_size([levels for levels in drawn if levels])
    margins = [None if levels is None else page_margins(levels, body) for levels in drawn]
    texts = strip_furniture([(page.number, page.text) for page in pages], margins)
    texts = texts if deck else _join_split_words(texts)
    pages = [Page(page.number, text) for page, text in zip(pages, texts)]
    return pages, warnings, _pdf_title(reader), deck


#: What a presentation program writes as a PDF's creator or producer
_PRESENTERS = re.compile(r"beamer|powerpoint|keynote|impress|google slides", re.IGNORECASE)


def _made_by_presenter(reader: Any) -> bool:
    """Whether a presentation program (Beamer, PowerPoint, Keynote, Impress) made the PDF, by
    its creator or producer: its pages are slides (a PDF audit: a deck was chunked three
    slides at a time and cited "pages 3-5" for a fact on slide 5, and a slide of a title and
    a chart was said to be a scan)."""
    try:
        info = reader.metadata or {}
        return bool(_PRESENTERS.search(f"{info.get('/Creator', '')} {info.get('/Producer', '')}"))
    except Exception:  # noqa: BLE001 - a broken info dictionary: not known to be slides
        return False


def _slide_shaped(reader: Any) -> bool:
    """Whether every page (two or more) has a slide's shape: 4:3, 16:10 or 16:9. With little
    text on a page (`_read_pdf`), such a PDF is read as slides whoever made it; a landscape
    A4 or Letter report is not (a review)."""
    try:
        pages = reader.pages
        if len(pages) < 2:
            return False
        for page in pages:
            width, height = float(page.mediabox.width), float(page.mediabox.height)
            if (page.rotation or 0) % 180:
                width, height = height, width
            if not any(abs(width / height - r) < 0.03 for r in (4 / 3, 16 / 10, 16 / 9)):
                return False
        return True
    except Exception:  # noqa: BLE001 - a damaged page box: read as pages
        return False


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.split("\n") if line.strip()), "")


def check_pdf_text(path: str | os.PathLike, password: str | None = None) -> None:
    """Raise the DocumentError `read_document` would for a PDF that cannot give any text
    (encrypted without its password, damaged, or only scanned pages); return at its first
    page with text. A good PDF costs one page, so `add` can learn before it loads the model
    whether a run of PDFs holds anything to index. A file that is not a PDF: `read_document`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError:
        read_document(path, password)  # says why (missing, a folder, permissions)
        return
    if not data or _sniff(data, path.suffix.lower()) != "pdf":
        read_document(path, password)
        return
    with _quiet_pypdf():
        reader = _open_pdf(path, data, password)
        read_any = False
        for _number, _page, text, _margins in _pdf_texts(path, data, reader):
            if text:
                return
            read_any = read_any or text is not None
    if not read_any:
        raise _corrupt(path, data, _pdf_error("no page could be read"))
    raise _no_pdf_text(path)


@contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """pypdf warns about every quirk it repairs: errors only, while we read."""
    pdf_logger = logging.getLogger("pypdf")
    level = pdf_logger.level
    pdf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pdf_logger.setLevel(level)


def _open_pdf(path: Path, data: bytes, password: str | None):
    """A pypdf reader of `data`, decrypted, with at least one page; else the DocumentError
    that says why not (encrypted, damaged)."""
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            # The given password (user or owner), else the empty one many PDFs use.
            tries = [password, ""] if password else [""]
            if all(reader.decrypt(p) == PasswordType.NOT_DECRYPTED for p in tries):
                if password is None:
                    raise EncryptedDocumentError(path, "encrypted PDF", NEEDS_PASSWORD)
                raise EncryptedDocumentError(
                    path,
                    "wrong password for encrypted PDF",
                    "check the password given (clara-index add --password)",
                )
        n_pages = len(reader.pages)
    except DocumentError:
        raise
    except DependencyError:
        raise _aes_error(path) from None
    except FileNotDecryptedError:
        raise EncryptedDocumentError(path, "encrypted PDF", NEEDS_PASSWORD) from None
    except NotImplementedError as e:  # e.g. certificate (public-key) security handlers
        raise EncryptedDocumentError(
            path, f"unsupported PDF encryption ({e})", "save an unencrypted copy"
        ) from None
    except Exception as e:  # pypdf raises many types on damaged files
        raise _corrupt(path, data, e) from None
    if n_pages == 0:
        raise _corrupt(path, data, _pdf_error("no pages found"))
    return reader


def _pdf_texts(
    path: Path, data: bytes, reader
) -> Iterator[tuple[int, Any, str | None, list[Level] | None]]:
    """(page number, page, its cleaned text, its lines as drawn: `page_levels`) in order;
    text None for a page that could not be read. Past `pdf_time_budget`, looked at between
    pages, the `CorruptDocumentError` that says so (pages that decode a big stream showing no
    text escape the bound on text; one page drawing a big stream many times is bounded by
    pypdf's own limits on a stream's operators and a page's forms). Not at each operator: a
    visitor of operators makes pypdf read pages and forms that hold no text, which it
    otherwise skips (a logo drawn on every page made a 250 KB file 25 times slower to read);
    the visitor of text that gives each line's place reads them as pypdf does without one
    (`_text_only_visitor`)."""
    from pypdf.errors import DependencyError

    budget = pdf_time_budget(len(data))
    deadline = time.monotonic() + budget
    tex = _made_by_tex(reader)
    for number in range(1, len(reader.pages) + 1):
        if time.monotonic() > deadline:
            raise _too_slow(path, data, number, budget)
        try:
            page = reader.pages[number - 1]
            runs: list[tuple[float, float, str]] = []
            levels: list[Level] | None = None
            if _text_only_visitor():
                _VISITING.text_only = True
                try:
                    raw = page.extract_text(
                        visitor_text=lambda *a, runs=runs: runs.append(_drawn(*a))
                    )
                finally:
                    _VISITING.text_only = False
                try:
                    levels = page_levels(runs)
                except Exception:  # noqa: BLE001 - a layout not understood: lines as they read
                    levels = None
            else:
                raw = page.extract_text()
            text = clean_pdf_text(raw or "", tex=tex)
            try:
                filled = form_values(page)  # (not in the page's own text)
            except Exception:  # noqa: BLE001 - never at the cost of the page's text
                filled = ""
            if filled:
                text = f"{text}\n{filled}" if text else filled
        except DependencyError:
            raise _aes_error(path) from None
        except Exception:  # noqa: BLE001 - the caller counts it as a failed page
            yield number, None, None, None
        else:
            yield number, page, text, levels


_VISITING = threading.local()


@functools.cache
def _text_only_visitor() -> bool:
    """Whether pypdf can be asked for where its text is drawn without reading what draws no
    text. Given any visitor, pypdf parses every content stream and form, text or not, which
    it otherwise skips: a vector logo in a report's header made it 16 times slower to read,
    and a 198-page one was refused as a bomb (a re-audit; the same slowdown an earlier fix
    had removed). While `_VISITING.text_only` is set, its check for text is kept (a private
    function of pypdf's, wrapped here; without it, pages are read without their layout)."""
    try:
        from pypdf import _text_extraction as extraction
    except ImportError:
        return False
    original = getattr(extraction, "_get_content_stream_for_text", None)
    if original is None:
        return False
    if getattr(original, "clara_text_only", False):
        return True

    def content_for_text(*args: Any, **kwargs: Any) -> Any:
        if getattr(_VISITING, "text_only", False) and "has_visitor" in kwargs:
            kwargs["has_visitor"] = False  # (a stream without text operators gives no text)
        return original(*args, **kwargs)

    content_for_text.clara_text_only = True  # type: ignore[attr-defined]
    extraction._get_content_stream_for_text = content_for_text
    return True


def _drawn(text: str, cm: Any, tm: Any, font: Any, size: float) -> tuple[float, float, str]:
    """A piece of a page's text as pypdf's visitor sees it: (its baseline's height on the
    page, its type size as drawn, its text)."""
    y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
    return y, (size or 0) * math.hypot(tm[2], tm[3]) * math.hypot(cm[2], cm[3]), text


def _made_by_tex(reader: Any) -> bool:
    """Whether a TeX engine wrote the PDF (its producer: pdfTeX, XeTeX's xdvipdfmx, LuaTeX,
    dvipdfm), whose default fonts draw accents apart from their letters."""
    try:
        info = reader.metadata or {}
        producer = str(info.get("/Producer", ""))  # (not "iText", a re-audit found)
        return bool(re.search(r"\b(?:pdf|xe|lua)?tex\b|dvipdf", producer, re.IGNORECASE))
    except Exception:  # noqa: BLE001 - a broken info dictionary: not known to be TeX
        return False


def form_values(page: Any, most: int = 20_000) -> str:
    """The text typed into a page's form fields, a line each ("Applicant name: Ada"; labelled
    by the field's description, else its name): a filled-in form's answers are drawn by its
    fields, not its page, and reading the page alone lost every one of them. Ticks and
    choices by name (/Yes, /Off) are left out; at most `most` characters. A damaged
    annotation or field is passed over: it never costs the page its text."""
    from pypdf.generic import TextStringObject

    def resolved(x: Any) -> Any:
        return x.get_object() if hasattr(x, "get_object") else x

    try:
        annots = resolved(page.get("/Annots"))
        annots = list(annots) if isinstance(annots, list) else []
    except Exception:  # noqa: BLE001 - a dangling or odd /Annots
        return ""
    lines: list[str] = []
    size = 0
    for ref in annots:
        try:
            annot = resolved(ref)
            if not isinstance(annot, dict) or annot.get("/Subtype") != "/Widget":
                continue
            field, value, label = annot, None, None
            for _ in range(16):  # the field's value and name may be its ancestors'
                value = value if value is not None else resolved(field.get("/V"))
                label = label or resolved(field.get("/TU")) or resolved(field.get("/T"))
                parent = resolved(field.get("/Parent"))
                if (value is not None and label) or not isinstance(parent, dict):
                    break
                field = parent
            if not isinstance(value, TextStringObject) or not value.strip():
                continue
            line = clean_pdf_text(f"{label}: {value}" if label else str(value))
        except Exception:  # noqa: BLE001 - a damaged annotation: the page's text stands
            continue
        if line and line not in lines:
            size += len(line) + 1
            if size > most:
                break
            lines.append(line)
    return "\n".join(lines)


def _pdf_error(message: str) -> Exception:
    from pypdf.errors import PdfReadError

    return PdfReadError(message)


def _no_pdf_text(path: Path) -> NoTextError:
    return NoTextError(
        path,
        "no extractable text (scanned/image-only PDF?)",
        f"run OCR first, e.g. `ocrmypdf {path.name} ocr.pdf`",
    )


SPARSE_PAGE_CHARS = 100  # less text than this beside an image: probably a scanned page

#: Characters of text a PDF may hold per byte of file, past a floor. Text in a PDF is stored
#: as compressed drawing operators beside fonts and images: two real manuals held 0.24 and
#: 0.27 characters per byte, while a 7 KB file whose pages each decode one 2 MB stream held
#: 2.9 million (a security audit: 18 s of reading, and minutes for bigger ones).
PDF_CHARS_PER_BYTE, PDF_CHARS_FLOOR = 20, 1 << 20


#: What to do with a PDF refused as too much text or too slow for its size
_EXTRACT_IT = (
    "if it is a real document, extract its text to a .txt file (e.g. with `pdftotext`) and "
    "index that"
)


def _too_slow(path: Path, data: bytes, pages: int, budget: float) -> CorruptDocumentError:
    return CorruptDocumentError(
        path, f"reading {_pages(pages)} took over {budget:.0f} s, more than a PDF of "
        f"{len(data):,} bytes can need (a decompression bomb?)", _EXTRACT_IT,
    )  # fmt: skip


def _pages(n: int) -> str:
    return "its first page" if n == 1 else f"its first {n} pages"


def pdf_text_bound(size: int) -> int:
    """The most characters of text a PDF of `size` bytes is read for."""
    return PDF_CHARS_FLOOR + PDF_CHARS_PER_BYTE * size


def pdf_time_budget(size: int) -> float:
    """Seconds a PDF of `size` bytes may take to read: real ones read at about 0.3 MB (a
    dozen pages) a second here, so 30 s plus 30 s a megabyte is far beyond them; pages that
    each decode one big stream of operators showing no text are not caught by the bound on
    text, and would take hours."""
    return 30.0 + 30.0 * size / 2**20


def _has_image(page) -> bool:
    """Whether the page draws an image of its own (an XObject of subtype /Image)."""
    try:
        xobjects = page["/Resources"].get_object().get("/XObject")
        if xobjects is None:
            return False
        return any(
            x.get_object().get("/Subtype") == "/Image" for x in xobjects.get_object().values()
        )
    except Exception:  # noqa: BLE001 - a damaged resource dictionary: no warning, no harm
        return False


def _pdf_title(reader) -> str | None:
    """The PDF's metadata title, else the words set largest on its first page (a PDF audit:
    a thesis without one was titled by its cover's first line, "University of Northbridge",
    in every chunk's context line)."""
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:  # noqa: BLE001 - a broken info dictionary only loses the title
        title = None
    title = " ".join(str(title).split()) if title else None
    if title and usable_title(title):
        return title
    try:
        with _quiet_pypdf():
            return _largest_words(reader.pages[0]) or title
    except Exception:  # noqa: BLE001 - a page that cannot be read again has no title
        return title


def _largest_words(page: Any) -> str | None:
    """The words set in the page's largest type, when that is at least 1.2 times the size of
    most of its text and they make a title's length (4 to 200 characters)."""
    runs: list[tuple[float, str]] = []

    def seen(text: str, cm: list[float], tm: list[float], font: Any, size: float) -> None:
        upright = not (tm[1] or tm[2] or cm[1] or cm[2])  # (a "DRAFT" watermark set across
        # the page in huge type is no title: a review)
        if text.strip() and size and upright:  # (the size as drawn: scaled by both matrices)
            runs.append(
                (round(size * math.hypot(tm[2], tm[3]) * math.hypot(cm[2], cm[3]), 1), text)
            )

    _VISITING.text_only = _text_only_visitor()  # (what draws no text stays unread)
    try:
        page.extract_text(visitor_text=seen)
    finally:
        _VISITING.text_only = False
    if not runs:
        return None
    chars: Counter[float] = Counter()
    for size, text in runs:
        chars[size] += len(text.strip())
    body, largest = chars.most_common(1)[0][0], max(chars)
    if largest < 1.2 * body:
        return None
    title = " ".join(" ".join(text for size, text in runs if abs(size - largest) < 0.5).split())
    return title if 4 <= len(title) <= 200 else None


def _aes_error(path: Path) -> EncryptedDocumentError:
    return EncryptedDocumentError(
        path,
        "AES-encrypted PDF needs the 'cryptography' package",
        "pip install cryptography (or save an unencrypted copy)",
    )


def _corrupt(path: Path, data: bytes, e: Exception) -> CorruptDocumentError:
    truncated = b"%%EOF" not in data[-2048:]
    reason = "truncated PDF" if truncated else "corrupt PDF"
    detail = str(e) or type(e).__name__
    return CorruptDocumentError(
        path,
        f"{reason} ({detail[:120]})",
        "re-download or re-export it (or repair it with `qpdf` or `mutool clean`)",
    )


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    out: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)
