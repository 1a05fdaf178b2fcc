"""Read -> chunk -> compress -> store: the indexing pipeline of `clara-index` and the service.

    indexer = Indexer(cm, collection, IndexOptions(batch_size=8))
    for event in indexer.run(paths):          # FileResult per file, Progress per model batch
        ...

Compression batches span documents (small files still fill a batch); each document is
committed on its own as soon as its last chunk is compressed, so a crash keeps every finished
document and running again finishes the job. A long document also keeps its compressed chunks
as it goes (`indexing.partial`): running again after a crash or Ctrl-C goes on from there. A file whose path is indexed with the same
content hash is "unchanged" (not even parsed); a changed file replaces its old version in one
commit. `run` is a generator that yields after every batch: the service steps it one batch
at a time on its MLX thread.

Crash tests: `CLARA_CRASH_AT=index:after-document-<n>` kills the process right after the n-th
document of a run is committed (see `indexing.durable`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from clara.errors import (
    ChunkingError,
    ClaraError,
    DocumentNotFoundError,
    InvalidArgumentError,
    NoTextError,
    many,
)
from clara.paths import file_sha256, index_root, path_bytes, path_text, upload_file_id
from indexing import partial
from indexing.chunking import Chunk, chunk_document, document_text
from indexing.context import CONTEXT_TOKENS, fit_context, recover_contexts
from indexing.durable import crash_point, fsync_dir
from indexing.layout import STAGING, finish_swap
from indexing.partial import PartialMemories
from indexing.readers import PDF_EXTENSIONS, Document, check_pdf_text, read_document
from indexing.store import ChunkRecord, Collection

log = logging.getLogger(__name__)

Status = Literal["added", "replaced", "unchanged", "duplicate", "moved", "failed", "recompressed"]


#: Tokens neighbouring chunks share unless told (`clara-index add --overlap`).
DEFAULT_OVERLAP = 32


@dataclass
class IndexOptions:
    chunk_tokens: int | None = None  # None: doc_max_tokens less room for the context line
    overlap: int = DEFAULT_OVERLAP
    batch_size: int = 8  # chunks per step (the model picks its forward-pass batch)
    password: str | None = None  # for encrypted PDFs
    dedupe: bool = True  # skip a new path whose content is already indexed under another
    reread: bool = False  # read and compress a file already indexed even when unchanged
    # (after an upgrade whose readers read it better)
    # chunks to compress in the next step, at most batch_size (the indexing service: fewer
    # while chats run beside it, so a chat waits less for the step under way)
    step_chunks: Callable[[], int] | None = None


@dataclass
class Reading:
    """A file read and chunked: no model work, so any thread may make it (`read_source`)."""

    doc: Document
    chunks: list[Chunk]
    mtime: float


@dataclass
class Source:
    """A file to index: where to read it and the name shown for it (default: its file name);
    `read`: what `read_source` made of it already (read there, not on the model's thread)."""

    path: Path
    name: str | None = None
    read: Reading | FileResult | None = None


@dataclass
class FileResult:
    path: Path
    status: Status
    doc_id: str | None = None
    chunks: int = 0
    pages: int | None = None
    error: ClaraError | None = None
    warnings: list[str] = field(default_factory=list)
    detail: str = ""  # why "duplicate" (the same content as another document)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "status": self.status,
            "doc_id": self.doc_id,
            "chunks": self.chunks,
            "pages": self.pages,
            "error": str(self.error) if self.error else None,
            "warnings": self.warnings,
            "detail": self.detail or None,
        }


@dataclass
class Progress:
    """One compressor batch is done (`chunks` of it), `waiting` chunks of the files read so
    far still to compress."""

    chunks: int
    waiting: int = 0


@dataclass
class _Pending:
    """A read and chunked document waiting for its memories."""

    source: Source
    doc: Document
    chunks: list[Chunk]
    memories: np.ndarray  # (N, n_mem, d) float16, filled as batches finish
    mtime: float | None
    replaces: str | None  # id of the older version at the same path
    done: int = 0  # chunks compressed (always the first ones: chunks go in order)
    partial: PartialMemories | None = None  # long documents: where finished chunks are kept
    resumed: int = 0  # chunks an earlier, interrupted run compressed


def model_manifest(cm: Any, checkpoint: str | os.PathLike | None = None) -> dict[str, Any]:
    """What a collection records about the model (plus the checkpoint, for fix-it messages)."""
    manifest = dict(cm.manifest())
    if checkpoint is not None:  # absolute: the hint must work from any folder
        where = Path(checkpoint)
        manifest["checkpoint"] = str(where.resolve() if where.exists() else checkpoint)
    return manifest


def chunk_limits(cm: Any, chunk_tokens: int | None, overlap: int) -> tuple[int, int]:
    """(max tokens, overlap) after checking them against the checkpoint's doc_max_tokens."""
    return chunk_limits_for(int(cm.config.doc_max_tokens), chunk_tokens, overlap)


def chunk_limits_for(limit: int, chunk_tokens: int | None, overlap: int) -> tuple[int, int]:
    """`chunk_limits` for a checkpoint's doc_max_tokens `limit`, known without its model."""
    room = CONTEXT_TOKENS if limit > 4 * CONTEXT_TOKENS else 0  # for the context line
    size = limit - room if chunk_tokens is None else chunk_tokens
    if not 1 <= size <= limit:
        raise ChunkingError(
            f"chunk size {size} must be between 1 and the checkpoint's doc_max_tokens ({limit}); "
            "the compressor reads at most that many tokens of a chunk"
        )
    if not 0 <= overlap < size:
        raise ChunkingError(
            f"overlap {overlap} must be between 0 and the chunk size - 1 ({size - 1})"
        )
    return size, overlap


def compress(cm: Any, texts: list[str]) -> np.ndarray:
    """Chunk texts -> memories (N, n_mem, d) float32; the model picks its forward batch
    (`clara.model.compress_batch`: the measured best for this device)."""
    import mlx.core as mx

    return np.array(cm.compress(texts).astype(mx.float32))


def fit_contexts(cm: Any, chunks: list[Any]) -> list[Any]:
    """Cut each chunk's context line to the room its text leaves in doc_max_tokens."""
    limit = int(cm.config.doc_max_tokens)
    out = []
    for c in chunks:
        ctx = fit_context(cm.tokenizer, c.context, limit - c.n_tokens - 1)
        out.append(c if ctx == c.context else dataclasses.replace(c, context=ctx))
    return out


def known_result(
    collection: Collection,
    path: Path,
    dedupe: bool = True,
    touched: list | None = None,
    reread: bool = False,
) -> FileResult | None:
    """What adding `path` comes to when no model is needed to know: "unchanged" (indexed with
    its current content), or with `dedupe` "duplicate" (a new path whose content a document
    still on disk holds) or "moved" (a new path whose content a document whose file is gone
    held: renamed or moved, it becomes that document, its memories kept, in a writable
    collection); None when it has to be read and compressed. A file found unchanged
    by its content, not its stat, has its stat recorded (`Collection.note_file_stats`): at
    once, or with `touched` appended to it, for the caller to record many in one write.
    With `reread`, a file indexed already is read again whatever its content (None)."""
    existing = collection.find_by_path(str(path))
    return _known(collection, path, existing, dedupe, touched, reread)[0]


def _known(
    collection: Collection,
    path: Path,
    existing: Any,
    dedupe: bool,
    touched: list | None = None,
    reread: bool = False,
) -> tuple[FileResult | None, str | None]:
    """`known_result`, given the document stored for `path` (or None), and the file's SHA-256
    (None when it was not read: unchanged by its size and time, or unreadable)."""
    if reread and existing is not None:
        return None, _hash(path)[0]
    if existing is not None and _same_stat(existing, path):
        # size and modification time as indexed: unchanged without reading it (as rsync and
        # make judge; a re-run over a 50 GB library read all of it, twice for a new file)
        return FileResult(path, "unchanged", existing.id, existing.n_chunks, existing.n_pages), None
    sha, st = _hash(path)
    if sha is None:
        return None, None
    if existing is not None and existing.sha256 == sha:
        if not collection.readonly and st is not None:  # (else read again at every run)
            stat = (existing.id, st.st_size, st.st_mtime)
            collection.note_file_stats([stat]) if touched is None else touched.append(stat)
        unchanged = FileResult(path, "unchanged", existing.id, existing.n_chunks, existing.n_pages)
        return unchanged, sha
    if dedupe and existing is None:
        other = collection.find_by_sha(sha)
        if other is not None and upload_file_id(collection.directory.parent, other.path):
            other = None  # (an upload, whose deletion through the API took this file's
            # text out of answers with it: an audit; search leaves out the second copy)
        if other is not None and _still_holds(other, sha):
            where = other.path or other.name
            return FileResult(
                path, "duplicate", other.id, other.n_chunks, other.n_pages,
                detail=f"same content as {where} ({other.id}): not indexed again",
            ), sha  # fmt: skip
        if other is not None and file_gone(other.path) and not collection.readonly and st:
            # renamed or moved: the same document under its new name (it was compressed
            # again, and the old one kept answering from a file that is not there)
            collection.move_document(other.id, str(path), path.name, st.st_size, st.st_mtime)
            return FileResult(
                path, "moved", other.id, other.n_chunks, other.n_pages,
                detail=f"moved from {other.path}: its memories kept",
            ), sha  # fmt: skip
    return None, sha


def file_gone(stored: str | None) -> bool:
    """Whether nothing is at a document's stored path, known for sure: a file in a folder
    that may not be read is there as far as anyone can tell (os.path.lexists says False for
    both). The stored path is text (`path_text`: a name's bytes that are not UTF-8 as
    `\\xNN`), looked at as the name it stands for: an existing Latin-1 name was "gone"."""
    if stored is None:
        return False
    try:
        os.lstat(_on_disk(stored))
    except (FileNotFoundError, NotADirectoryError):
        return True
    except (OSError, ValueError):  # permission denied, an I/O error, a NUL in a name
        return False
    return False


def _on_disk(stored: str) -> str:
    """The file name a stored path stands for (`path_text`'s escapes undone)."""
    return os.fsdecode(path_bytes(stored))


PREFLIGHT_BYTES = 1 << 20


def preflight(path: Path, password: str | None = None) -> FileResult | None:
    """The failure adding `path` comes to when no model is needed to know it: an empty file; a
    text file of at most 1 MiB that is unreadable, binary or blank; a PDF that gives no text
    (encrypted without its password, damaged, only scanned pages: `check_pdf_text` stops at
    the first page with text, so a good PDF is not parsed twice). None when only indexing can
    tell. Lets `add` skip loading the model when none of its files can be indexed; the
    messages are the ones indexing would give."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return None  # the Indexer's read says why, with its hint
    is_pdf = size > 0 and path.suffix.lower() in PDF_EXTENSIONS
    if size > PREFLIGHT_BYTES and not is_pdf:
        return None
    try:
        if is_pdf:
            check_pdf_text(path, password)
        else:
            read_document(path, password)
    except ClaraError as exc:
        return FileResult(path, "failed", error=exc)
    except Exception:  # noqa: BLE001 - the Indexer reports it properly
        return None
    return None


# The files hashed lately, by path: (their stat as hashed, SHA-256). `clara-index add` looks
# at each file before loading the model, then again as it indexes it; a file whose stat is
# as it was is not read a second time (any write or `utime` changes its ctime).
_HASHED: OrderedDict[str, tuple[tuple, str]] = OrderedDict()
_HASHED_MAX = 4096
_HASHED_LOCK = threading.Lock()


def _hash(path: Path) -> tuple[str | None, os.stat_result | None]:
    """The file's SHA-256 (None: unreadable) and its stat, as unchanged through the read
    (None when it changed meanwhile: nothing to record of it)."""
    try:
        before = os.stat(path)
    except OSError:
        return file_sha256(path), None  # (file_sha256 says None, or a race made it appear)
    key = _stat_key(before)
    with _HASHED_LOCK:
        memo = _HASHED.get(str(path))
    if memo is not None and memo[0] == key:
        return memo[1], before
    sha = file_sha256(path)
    try:
        after = os.stat(path)
    except OSError:
        return sha, None
    if sha is None or _stat_key(after) != key:
        return sha, None
    with _HASHED_LOCK:
        _HASHED[str(path)] = (key, sha)
        _HASHED.move_to_end(str(path))
        while len(_HASHED) > _HASHED_MAX:
            _HASHED.popitem(last=False)
    return sha, before


def _stat_key(st: os.stat_result) -> tuple:
    """What changes when a file's bytes may have (a write or `utime` changes its ctime)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _same_stat(doc: Any, path: Path) -> bool:
    """Whether the file has the size and modification time it was indexed with."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return doc.mtime is not None and st.st_size == doc.size and st.st_mtime == doc.mtime


def _still_holds(doc: Any, sha256: str) -> bool:
    """Whether the file a document was indexed from still has that content (a copy of it is
    then "unchanged"); False once that file changed or went, so the copy is indexed itself."""
    return doc.path is None or file_sha256(Path(_on_disk(doc.path))) == sha256


class Indexer:
    """Indexes files into one collection (opened as writer) with one loaded ClaraModel."""

    def __init__(self, cm: Any, collection: Collection, options: IndexOptions | None = None):
        self.cm = cm
        self.collection = collection
        self.options = options or IndexOptions()
        chunk_limits(cm, self.options.chunk_tokens, self.options.overlap)  # (before any file)
        if self.options.batch_size < 1:
            raise InvalidArgumentError(
                f"batch size must be at least 1, got {self.options.batch_size}"
            )
        collection.check_writable()  # (a reader's: refused now, not after the first compression)
        self.committed = 0
        self.manifest = model_manifest(cm)

    def run(
        self, sources: Iterable[Source | Path | str | FileResult]
    ) -> Iterator[FileResult | Progress]:
        """Index every source; yields a FileResult per file and a Progress per model batch.
        A FileResult among the sources (a verdict known before, as `preflight`'s) is passed
        on where its file comes."""
        many(sources, "sources")
        batch_size = self.options.batch_size
        todo = iter(sources)
        waiting: deque[tuple[_Pending, int]] = deque()  # (document, chunk index) to compress
        in_flight: dict[str, Path] = {}  # sha256 -> path, of documents read but not committed
        exhausted = False
        partial.sweep(self.collection.directory)
        while True:
            while not exhausted and len(waiting) < batch_size:
                src = next(todo, None)
                if src is None:
                    exhausted = True
                    break
                if isinstance(src, FileResult):
                    yield src
                    continue
                if not isinstance(src, Source):  # a path: stored resolved, as the CLI's (a
                    src = Source(Path(src).resolve())  # relative one from any folder, links)
                elif not src.path.is_absolute():
                    src = Source(src.path.resolve(), src.name)
                prepared = self._prepare(src, in_flight)
                if isinstance(prepared, FileResult):
                    yield prepared
                    continue
                if prepared.done == len(prepared.chunks):  # an earlier run compressed it all
                    yield self._commit(prepared)
                    continue
                in_flight[prepared.doc.sha256] = src.path
                waiting.extend((prepared, i) for i in range(prepared.done, len(prepared.chunks)))
                yield Progress(0, len(waiting))  # reading a file is a step of its own (a big
                # PDF: seconds)
            if not waiting:
                return
            step = batch_size if self.options.step_chunks is None else self.options.step_chunks()
            batch = [waiting.popleft() for _ in range(max(1, min(step, batch_size, len(waiting))))]
            memories = compress(self.cm, [p.chunks[i].contextual_text for p, i in batch])
            finished: list[_Pending] = []
            touched: dict[int, _Pending] = {}
            for (p, i), m in zip(batch, memories):
                p.memories[i] = m
                p.done += 1
                touched[id(p)] = p
                if p.done == len(p.chunks):
                    finished.append(p)
            for p in touched.values():
                keep = p.partial
                if (
                    keep is not None
                    and p.done < len(p.chunks)
                    and p.done - keep.saved >= partial.EVERY
                ):
                    keep.append(p.memories[keep.saved : p.done])
            for p in finished:
                in_flight.pop(p.doc.sha256, None)
                yield self._commit(p)
            yield Progress(len(batch), len(waiting))

    def _prepare(self, src: Source, in_flight: dict[str, Path]) -> _Pending | FileResult:
        path, coll = src.path, self.collection
        existing = coll.find_by_path(str(path))
        known, sha = _known(  # (read once at most)
            coll, path, existing, self.options.dedupe, reread=self.options.reread
        )
        if known is not None:
            return known
        if sha is not None and self.options.dedupe and existing is None and sha in in_flight:
            detail = f"same content as {in_flight[sha]}"  # an earlier file of this run
            return FileResult(path, "duplicate", detail=detail + ": not indexed again")
        read = src.read or read_source(self.cm, src, self.options)
        if isinstance(read, FileResult):
            return read
        doc, chunks = read.doc, read.chunks
        shape = (len(chunks), self.cm.n_mem, self.cm.hidden_size)
        memories = np.zeros(shape, np.float16)
        replaces = existing.id if existing is not None else None
        pending = _Pending(src, doc, chunks, memories, read.mtime, replaces)
        if len(chunks) >= partial.MIN_CHUNKS:
            key = partial.partial_key(self.manifest, [c.contextual_text for c in chunks])
            pending.partial = PartialMemories(
                self.collection.directory, doc.sha256, key, shape[1:], path=path_text(path)
            )
            rows = pending.partial.load()
            memories[: len(rows)] = rows
            pending.done = pending.resumed = len(rows)
        return pending

    def _commit(self, p: _Pending) -> FileResult:
        path, doc = p.source.path, p.doc
        paged = doc.kind == "pdf" or len(doc.pages) > 1  # text has pages only at form feeds
        records = [
            ChunkRecord(
                c.text, c.page_start if paged else None, c.page_end if paged else None,
                c.n_tokens, c.context,
            )
            for c in p.chunks
        ]  # fmt: skip
        args = (str(path), p.source.name or path.name, doc.sha256, records, p.memories)
        info = dict(size=doc.size, mtime=p.mtime, n_pages=len(doc.pages) if paged else None)
        status: Status = "added"
        if p.replaces is not None:
            try:
                doc_id = self.collection.replace_document(p.replaces, *args, **info)
                status = "replaced"
            except DocumentNotFoundError:  # removed meanwhile: nothing left to replace
                doc_id = self.collection.add_document(*args, **info)
        else:
            doc_id = self.collection.add_document(*args, **info)
        self.committed += 1
        if p.partial is not None:
            p.partial.discard()
        else:  # (a short new version: an older, longer one's saves went only at their age
            partial.forget_path(self.collection.directory, path_text(path))  # limit)
        crash_point(f"index:after-document-{self.committed}")
        detail = (
            f"resumed: {p.resumed} of {len(records)} chunks were compressed by an earlier run"
            if p.resumed
            else ""
        )
        return FileResult(
            path, status, doc_id, len(records), len(doc.pages), warnings=list(doc.warnings),
            detail=detail,
        )  # fmt: skip


def read_source(cm: Any, src: Source, options: IndexOptions) -> Reading | FileResult:
    """Read and chunk `src` with `cm`'s tokenizer (no MLX work: any thread may call it); a
    file that cannot be read is a failed `FileResult`."""
    path = src.path
    try:
        max_tokens, overlap = chunk_limits(cm, options.chunk_tokens, options.overlap)
        mtime = os.stat(path).st_mtime
        doc = read_document(path, options.password)
        chunks = chunk_document(
            doc, cm.tokenizer, max_tokens, overlap, src.name or path_text(path.name)
        )
        chunks = fit_contexts(cm, chunks)
        if not chunks:
            raise NoTextError(path, "no text to index", "check the file")
    except ClaraError as exc:  # DocumentError, ChunkingError: this file only
        return FileResult(path, "failed", error=exc)
    except OSError as exc:
        return FileResult(
            path, "failed", error=ClaraError(f"{path_text(path)}: {exc.strerror or exc}")
        )
    except Exception as exc:  # a bug met on one file must not stop the files after it
        log.debug("reading %s failed", path_text(path), exc_info=True)
        return FileResult(path, "failed", error=ClaraError(
            f"{path_text(path)}: could not be read ({type(exc).__name__}: {exc}); the other "
            "files go on; please report this as a bug"
        ))  # fmt: skip
    return Reading(doc, chunks, mtime)


# ---- recompress: re-encode a collection with another checkpoint ----------------------------
def recompress(
    cm: Any,
    root: str | Path | None,
    name: str,
    *,
    batch_size: int = 8,
    checkpoint: str | os.PathLike | None = None,
) -> Iterator[FileResult | Progress]:
    """Re-encode every stored chunk of collection `name` with `cm` (e.g. after training).

    The new collection is built under `<root>/.recompress/<name>` (one document per commit,
    so an interrupted run resumes) while the old one stays searchable and locked against
    writes, then swapped in. Chunk texts are reused; document ids change.
    """
    base = index_root(root)
    staging_root = base / STAGING
    marker = staging_root / f"{name}.complete"
    manifest = model_manifest(cm, checkpoint)
    if marker.exists() and not (base / name).exists():
        finish_swap(base, name)  # an earlier run died between the two renames of the swap
        return
    limit = int(cm.config.doc_max_tokens)
    with Collection.open(base, name) as old:  # the writer lock: no adds while we copy
        staging = staging_root / name
        if staging.exists() and not _same_model(staging_root, name, manifest):
            shutil.rmtree(staging)  # left by a run with another checkpoint
        new = Collection.open(
            staging_root, name, manifest, create=True, index_type=old.manifest.index_type
        )
        with new:
            current = old.list_documents()
            keys = {(d.path, d.name, d.sha256) for d in current}
            done = set()
            for staged in new.list_documents():  # an interrupted run's
                key = (staged.path, staged.name, staged.sha256)
                if key in keys:
                    done.add(key)
                else:  # removed or changed since: it would come back with the swap
                    new.remove_document(staged.id)
            for d in current:
                if (d.path, d.name, d.sha256) in done:
                    continue
                chunks = old.document_chunks(d.id)
                if not any(c.context for c in chunks):  # indexed before contextual chunks
                    contexts = recover_contexts([c.text for c in chunks], d.name, _source(d))
                    chunks = [dataclasses.replace(c, context=x) for c, x in zip(chunks, contexts)]
                chunks = fit_contexts(cm, chunks)
                memories = np.zeros((len(chunks), cm.n_mem, cm.hidden_size), np.float32)
                for start in range(0, len(chunks), batch_size):
                    part = chunks[start : start + batch_size]
                    texts = [c.contextual_text for c in part]
                    memories[start : start + len(part)] = compress(cm, texts)
                    yield Progress(len(part))
                records = [
                    ChunkRecord(c.text, c.page_start, c.page_end, c.n_tokens, c.context)
                    for c in chunks
                ]
                doc_id = new.add_document(
                    d.path, d.name, d.sha256, records, memories,
                    size=d.size, mtime=d.mtime, n_pages=d.n_pages,
                )  # fmt: skip
                result = FileResult(
                    Path(d.path or d.name), "recompressed", doc_id, len(chunks), d.n_pages
                )
                if too_long := sum(c.n_tokens > limit for c in chunks):
                    result.warnings.append(
                        f"{too_long} chunks are longer than the checkpoint's doc_max_tokens "
                        f"({limit}) and were cut; add the file again to re-chunk it"
                    )
                yield result
        # the old collection's FAISS file now: once swapped, its folder is the new one's
        old.save_index()
        marker.touch()
        fsync_dir(staging_root)
        doomed = _swap_in(base, name)
    if doomed is not None:
        shutil.rmtree(doomed, ignore_errors=True)


def _source(d: Any) -> tuple[str, str, list[str], str | None] | None:
    """(text, kind, Markdown headings, metadata title) of a stored document's file, when it
    is still there with the content that was indexed."""
    if not d.path or file_sha256(Path(d.path)) != d.sha256:
        return None
    try:
        doc = read_document(d.path)
    except ClaraError:
        return None
    return document_text(doc)[0], doc.kind, doc.headings, doc.title


def _same_model(staging_root: Path, name: str, manifest: dict[str, Any]) -> bool:
    try:
        Collection.open(staging_root, name, manifest, readonly=True).close()
    except ClaraError:
        return False
    return True


def _swap_in(base: Path, name: str) -> Path | None:
    """Move `<base>/.recompress/<name>` to `<base>/<name>`; returns the old folder, now hidden."""
    staging_root = base / STAGING
    target = base / name
    doomed = None
    if target.exists():
        # Hidden name that layout's sweep removes once this process is gone.
        doomed = base / f".{name}.deleted-{os.getpid()}-{int(time.time() * 1e6) & 0xFFFFFFFF:x}"
        os.rename(target, doomed)
        crash_point("recompress:between-renames")
    try:
        os.rename(staging_root / name, target)
    except FileNotFoundError:  # another process's `finish_swap` moved it in meanwhile
        if not target.exists():
            raise
    fsync_dir(base)
    crash_point("recompress:before-unmark")
    (staging_root / f"{name}.complete").unlink(missing_ok=True)
    fsync_dir(staging_root)
    return doomed
