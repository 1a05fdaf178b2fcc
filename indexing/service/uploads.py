"""Uploads of the indexing service's files API: a multipart body streamed to disk with a size
limit, then renamed into `<uploads>/<file_id>/<filename>` (a crash leaves only a temp folder,
swept at start-up)."""

from __future__ import annotations

import asyncio
import email.errors
import email.header
import os
import re
import secrets
import shutil
import time
import unicodedata
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from clara.paths import upload_file_id
from clara.text import hidden_char, whole_characters
from clara_cli.http import APIError, client_gone_error, media_type, storage_error
from indexing.durable import sync
from indexing.service.state import FileRecord

PURPOSES = ("assistants", "user_data")
_FORM_SLACK = 64 * 1024  # room for the form's other fields around the file
_TAIL = 16  # bytes of a body kept to see how it ends


class _TooLarge(Exception):
    pass


def safe_name(filename: str | None) -> str:
    """The file name a client sent, without folders or NULs (never empty, '.' or '..'), its
    control and text-direction characters '_' (a terminal escape in the server's log and
    `clara-index list`; a right-to-left override showing 'x.exe.txt' as 'x.txt.exe')."""
    name = Path((filename or "").replace("\\", "/")).name.replace("\x00", "")
    name = unicodedata.normalize("NFC", name)  # (a Mac browser sends names decomposed)
    name = "".join("_" if hidden_char(c) else c for c in name)
    if name in ("", ".", ".."):
        return "upload"
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    # file systems count bytes (255 a name): shorten the stem, whole characters, keep the type
    suffix = Path(name).suffix if len(Path(name).suffix.encode()) <= 16 else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    while len((stem + suffix).encode()) > MAX_NAME_BYTES:
        stem = stem[: whole_characters(stem, len(stem) - 1)]
    return stem + suffix


def sent_name(upload: UploadFile) -> str | None:
    """The file name an upload's part gives, as its client meant it: an RFC 5987 `filename*`
    beside `filename` wins (.NET's HttpClient sends both, the plain one in ASCII or as a MIME
    encoded word), and the `%22`, `%0D`, `%0A` browsers write for `"`, CR and LF (HTML's
    form encoding) are those characters again."""
    name = upload.filename
    disposition = upload.headers.get("content-disposition", "")
    m = _EXTENDED.search(disposition)
    if m:
        try:
            return urllib.parse.unquote(m.group(2), encoding=m.group(1), errors="strict")
        except (LookupError, UnicodeDecodeError):
            pass
    if name and name.startswith("=?") and name.endswith("?="):
        try:
            name = str(email.header.make_header(email.header.decode_header(name)))
        except (LookupError, UnicodeDecodeError, email.errors.HeaderParseError):
            pass
    if name and "%" in name:
        name = re.sub("%(22|0[dD]|0[aA])", lambda e: chr(int(e.group(1), 16)), name)
    return name


_EXTENDED = re.compile(r"""filename\*\s*=\s*"?([\w-]+)'[^']*'([^";\s]+)""", re.I)


MAX_NAME_BYTES = 200  # of a stored upload's name (the temporary folder adds to its path)


class Uploads:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        for leftover in directory.glob(".file-*.tmp"):  # uploads a crash cut short
            shutil.rmtree(leftover, ignore_errors=True)

    def path(self, rec: FileRecord) -> Path:
        return self.directory / rec.id / rec.filename

    def file_id_of(self, path: str | None) -> str | None:
        """`<uploads>/<file_id>/<name>` -> file_id (None for any other path)."""
        return upload_file_id(self.directory.parent, path)

    async def receive(self, request: Request) -> FileRecord:
        """Parse a `file` + `purpose` multipart upload and store the file; 400/413 on bad input."""
        limit = self.max_bytes
        too_large = APIError(
            413, f"the upload is larger than this service accepts ({limit} bytes; "
            "see --max-upload-mb)", param="file", code="file_too_large",
        )  # fmt: skip
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit + _FORM_SLACK:
            raise too_large

        tail = bytearray()  # the body's last bytes: did it end with its closing boundary?

        async def body() -> AsyncIterator[bytes]:
            seen = 0
            async for chunk in request.stream():
                seen += len(chunk)
                if seen > limit + _FORM_SLACK:
                    raise _TooLarge
                tail[:] = (tail + chunk)[-_TAIL:]
                yield chunk

        if media_type(request.headers) != "multipart/form-data":
            raise APIError(400, "upload the file as multipart/form-data with fields 'file' and "
                           "'purpose'")  # fmt: skip
        try:
            form = await MultiPartParser(request.headers, body(), max_files=1).parse()
        except _TooLarge:
            raise too_large from None
        except MultiPartException as exc:
            raise APIError(400, f"could not read the multipart body: {exc.message}") from None
        except ClientDisconnect:  # (a 500 and two tracebacks: an aborted upload is no fault)
            raise client_gone_error() from None
        try:
            upload, purpose = form.get("file"), form.get("purpose")
            if upload is None:
                cut = b"--\r\n" not in tail[-8:] and not tail.endswith(b"--")
                raise APIError(
                    400, "missing required parameter: 'file'" + (
                        " (the multipart body ends before its closing boundary: was the "
                        "upload cut off?)" if cut else ""
                    ), param="file",
                )  # fmt: skip
            if isinstance(upload, str):  # (RFC 7578: a filename* alone does not make a file)
                raise APIError(
                    400, "'file' must be a file part: Content-Disposition: form-data; "
                    'name="file"; filename="..."', param="file",
                )  # fmt: skip
            if any(key.startswith("expires_after") for key in form.keys()):
                raise APIError(
                    400, "expires_after is not supported: an upload lasts until it is deleted",
                    param="expires_after", code="unsupported_parameter",
                )  # fmt: skip
            if purpose not in PURPOSES:
                raise APIError(
                    400, f"'purpose' must be one of {', '.join(PURPOSES)}, got {purpose!r}",
                    param="purpose",
                )  # fmt: skip
            if upload.size is not None and upload.size > limit:
                raise too_large
            rec = FileRecord(
                f"file-{secrets.token_hex(12)}", safe_name(sent_name(upload)), 0,
                int(time.time()), purpose,
            )  # fmt: skip
            rec.bytes = await asyncio.to_thread(self._save, rec, upload.file)
        finally:
            await form.close()
        return rec

    def _save(self, rec: FileRecord, source: Any) -> int:
        tmp = self.directory / f".{rec.id}.tmp"
        try:
            tmp.mkdir(parents=True)
            with open(tmp / rec.filename, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
                out.flush()
                sync(out.fileno())
            os.rename(tmp, self.directory / rec.id)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk, ...: nothing left behind
            if isinstance(exc, OSError):  # the operator's to fix: say where and what
                raise storage_error(exc, self.directory, "store the upload") from None
            raise
        return self.path(rec).stat().st_size

    async def delete(self, file_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.directory / file_id, True)
