"""Office documents of every kind clara reads: which kind a file is (by its name, or by its
parts when it has none), and its text: word-processor documents and e-books
(`indexing.office_text`), slides and workbooks (`indexing.slides_sheets`)."""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Callable

from clara.errors import InvalidArgumentError
from indexing.office_text import (
    Archive,
    OfficeError,
    OfficeText,
    docx_text,
    epub_text,
    odt_text,
)
from indexing.slides_sheets import odp_text, ods_text, pptx_text, xlsx_text

__all__ = ["OFFICE_EXTENSIONS", "OFFICE_KINDS", "OfficeError", "OfficeText", "office_kind",
           "office_text"]  # fmt: skip

#: what a file of each name is read as (a macro-enabled or template file as its kind)
OFFICE_KINDS = {".docx": ".docx", ".docm": ".docx", ".dotx": ".docx", ".dotm": ".docx",
                ".odt": ".odt", ".ott": ".odt", ".epub": ".epub",
                ".pptx": ".pptx", ".pptm": ".pptx", ".ppsx": ".pptx", ".ppsm": ".pptx",
                ".potx": ".pptx", ".potm": ".pptx",
                ".xlsx": ".xlsx", ".xlsm": ".xlsx", ".xltx": ".xlsx", ".xltm": ".xlsx",
                ".odp": ".odp", ".otp": ".odp", ".ods": ".ods", ".ots": ".ods"}  # fmt: skip
OFFICE_EXTENSIONS = frozenset(OFFICE_KINDS)
#: each kind's reader
_READERS: dict[str, Callable[[Archive], OfficeText]] = {
    ".docx": docx_text, ".odt": odt_text, ".epub": epub_text, ".pptx": pptx_text,
    ".xlsx": xlsx_text, ".odp": odp_text, ".ods": ods_text,
}  # fmt: skip
#: an OpenDocument file's kind by its `mimetype` part
_MIMETYPES = {
    b"application/vnd.oasis.opendocument.text": ".odt",
    b"application/vnd.oasis.opendocument.presentation": ".odp",
    b"application/vnd.oasis.opendocument.spreadsheet": ".ods",
    b"application/epub+zip": ".epub",
}


def office_text(data: bytes, ext: str) -> OfficeText:
    """The text of a .docx, .odt, .epub, .pptx, .xlsx, .odp or .ods file's bytes (`ext` says
    which: an OFFICE_EXTENSIONS name, with or without its dot)."""
    kind = OFFICE_KINDS.get("." + ext.lower().lstrip("."))
    if kind is None:
        raise InvalidArgumentError(
            f"{ext!r} is not an office file type read here: one of {', '.join(OFFICE_KINDS)}"
        )
    try:
        archive = Archive(zipfile.ZipFile(io.BytesIO(data)))
    except zipfile.BadZipFile:
        raise OfficeError(
            f"not a {ext} file (not a zip archive)", "re-download or re-export the file"
        ) from None
    try:
        with archive:
            return _READERS[kind](archive)
    except RecursionError:  # (100k nested spans)
        raise OfficeError("nested too deeply to read", "re-export the file") from None


def office_kind(data: bytes) -> str | None:
    """Which of .docx, .odt, .epub, .pptx, .xlsx, .odp, .ods a zip's bytes are by their parts
    (an upload without its extension), or None."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = set(z.namelist())
            if "word/document.xml" in names or "word/document2.xml" in names:
                return ".docx"
            if "ppt/presentation.xml" in names:
                return ".pptx"
            if "xl/workbook.xml" in names:
                return ".xlsx"
            if "mimetype" in names and z.getinfo("mimetype").file_size < 100:
                return _MIMETYPES.get(z.read("mimetype").strip())
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, zlib.error):
        return None
    return None
