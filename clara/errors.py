"""Exceptions raised by the library; user-facing surfaces turn them into one clear line.

Every error a user can cause is defined here, so the CLIs and `clara_cli.http.to_api_error`
(the one place that maps them to HTTP statuses) know them all.
"""

from __future__ import annotations

import os
from pathlib import Path

from clara.paths import path_text
from clara.text import one_line, printable


class ClaraError(Exception):
    """Base class for every error clara raises on purpose."""


class ModelNotFoundError(ClaraError):
    """A base model could not be found locally (and could not be fetched)."""


class CheckpointError(ClaraError):
    """A CLaRa checkpoint is missing, malformed or made for another base model."""


class IndexMismatchError(ClaraError):
    """An index was built with a different checkpoint than the one loaded."""


class ModelThreadError(ClaraError, RuntimeError):
    """A model called from another thread than the one that loaded it (MLX arrays belong to
    the thread that made them, and two threads would switch each other's adapters)."""


class ContextLengthError(ClaraError):
    """A prompt does not fit the model's context window."""


class UnsupportedModeError(ClaraError):
    """A reading mode the loaded checkpoint's prompt layout cannot express."""


class CollectionError(ClaraError):
    """A collection cannot do what was asked (read-only, damaged, ...)."""


class CollectionNotFoundError(CollectionError):
    """No collection of that name exists."""


class CollectionNameCaseError(CollectionError):
    """A collection named in another case than the existing one (macOS's and Windows' file
    systems take one for the other): the message names the existing one."""


class DamagedCollectionError(CollectionError):
    """A collection's files are unreadable (a truncated manifest, a missing database, ...)."""


class DocumentNotFoundError(CollectionError, KeyError):
    """No document with that id in the collection."""

    def __str__(self) -> str:  # the message as written (KeyError's would quote it)
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class ChunkNotFoundError(DocumentNotFoundError):
    """No chunk with that id in the collection (its document removed, or never there)."""


class CollectionLockedError(ClaraError):
    """Another process holds the collection's writer lock (`here`: this process does, so
    waiting will not free it)."""

    def __init__(self, message: str, here: bool = False) -> None:
        super().__init__(message)
        self.here = here


#: The type of a pydantic validation error a request model raises for a malformed part it
#: checks itself (an attribute filter): its ctx holds `what` is wrong and `at`, the path
#: inside the part; the HTTP layer answers a 400 naming the whole path.
INVALID_PART = "invalid_part"


class InvalidArgumentError(ClaraError, ValueError):
    """A call's argument is malformed or out of range: a collection name, a retrieval mode, a
    vector's shape (a ValueError too, as Python's own would be)."""


class GrammarError(InvalidArgumentError):
    """A JSON schema clara cannot hold an answer to, or one whose grammar ran past its
    limits (`clara.structured`)."""


class ChunkingError(ClaraError, ValueError):
    """Invalid chunking options, or text that cannot be cut within the token budget."""


class DocumentError(ClaraError):
    """A document cannot be read; `str()` is one line: file, reason, what to do."""

    def __init__(self, path: str | os.PathLike, reason: str, hint: str = "") -> None:
        self.path = Path(path)
        self.reason = one_line(reason)
        self.hint = one_line(hint)
        where = printable(path_text(path))
        super().__init__(f"{where}: {self.reason}" + (f": {self.hint}" if self.hint else ""))


def many(value: object, what: str) -> None:
    """Refuse one string or path where a list of `what` is asked for: it was iterated as a
    list of its characters (`compress("text")` made a memory of each; `Indexer.run("a.txt")`
    failed on "a", "." ...; `iter_inputs("docs")` walked "/" for the "/" of its path)."""
    if isinstance(value, (str, bytes, os.PathLike)):
        raise InvalidArgumentError(
            f"expected a list of {what}, got one {type(value).__name__} ({value!r:.60}): pass "
            f"it in a list, [{what[:-1] if what.endswith('s') else what}]"
        )


class MissingFileError(DocumentError):
    """The path does not exist, or is not a regular file."""


class UnsupportedDocumentError(DocumentError):
    """A type clara does not read (office files, images, archives, binaries)."""


class EncryptedDocumentError(DocumentError):
    """An encrypted PDF without the right password, or one needing a missing AES package."""


class NoTextError(DocumentError):
    """An empty file, or a PDF without extractable text (scanned pages)."""


class CorruptDocumentError(DocumentError):
    """A damaged or truncated file."""


class GGUFConversionError(ClaraError):
    """A GGUF file cannot be converted (not llama, unknown tensors or tokenizer)."""


class DataError(ClaraError):
    """A data file is missing or a record does not have the expected shape."""


class TeacherError(ClaraError):
    """The teacher endpoint failed or answered in an unusable way."""
