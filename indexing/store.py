"""Collections: the durable on-disk index of compressed memories (layout in `indexing.layout`).

A write goes: append rows to the memory file + fsync -> ONE SQLite transaction (documents,
chunks, their full-text rows, generation+1) -> update FAISS in memory -> save it (temp + fsync
+ rename). SQLite is the commit point: rows past the committed `n_rows`, memory files SQLite does not name and FAISS
files of other generations are leftovers that the next writer drops on open. A crash at any
point therefore leaves the last committed state (crash hooks: `indexing.durable`).

    col = Collection.open(root, "papers", manifest=cm.manifest(), create=True)   # writer
    doc_id = col.add_document(path, name, sha256, [ChunkRecord(text), ...], memories)  # (N, n_mem, d)
    reader = Collection.open(root, "papers", readonly=True)
    hits = reader.retrieve(question, vector, k=5, rerank=cm.config.dense_rerank)  # [SearchHit]
    nearest = reader.search(vectors, k=5)  # dense only, [[Hit]] per query (no re-scoring)

Only numpy, faiss and sqlite3 are used here: no mlx.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clara.errors import (
    CollectionError,
    CollectionLockedError,
    CollectionNameCaseError,
    CollectionNotFoundError,
    DocumentNotFoundError,
    InvalidArgumentError,
)
from clara.paths import is_reserved, path_text
from clara.retrieval import Fusion, flatten_normalize, maxsim_rerank
from indexing import partial
from indexing.durable import (
    WriterLock,
    crash_point,
    fsync_dir,
    remove_quietly,
)
from indexing.hybrid import SearchHit, retrieve_across
from indexing.layout import (
    META,
    case_clash,
    collection_dir,
    create_collection_dir,
    damaged,
    delete_collection,
    finish_swap,
    holds_data_without_manifest,
    list_collections,
    memory_file_name,
)
from indexing.lexical import query_terms
from indexing.manifest import MANIFEST, Manifest, read_manifest, write_manifest
from indexing.meta import (
    Chunk,
    ChunkRecord,
    Document,
    Meta,
    MissingDatabaseError,
    is_corrupt,
)
from indexing.vectors import MemoryFile, resolve_kind
from indexing.view import IndexView, check_memory_file

__all__ = [
    "Chunk",
    "ChunkRecord",
    "Collection",
    "CollectionError",
    "CollectionNotFoundError",
    "Document",
    "DocumentNotFoundError",
    "Hit",
    "Manifest",
    "SearchHit",
    "collection_counts",
    "delete_collection",
    "list_collections",
]

log = logging.getLogger("clara.index")

#: Compact the memory file once this share of its rows belongs to removed chunks.
COMPACT_DEAD_SHARE = 0.25
#: An attribute filter letting through at most this many chunks is searched exactly, from their
#: stored memories (~18 KB each with the default model), in an HNSW or IVF index
EXACT_FILTERED = 4096


@dataclass
class Hit:
    """One search result; `Collection.chunks([hit.chunk_id])` gives its text."""

    chunk_id: int
    doc_id: str
    score: float  # MaxSim of the query and memory vectors (flattened cosine without rerank)
    doc_name: str
    ordinal: int  # position of the chunk in its document
    page_start: int | None
    page_end: int | None


def _bytes_in(folder: Path) -> int:
    """Bytes of the files in `folder` (0 if none), passing over those a writer renames or
    removes as they are counted (`indexing.partial`'s temp files, a commit's cleanup)."""
    total = 0
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file():
                        total += entry.stat().st_size
    return total


class Collection:
    """A named, durable collection of documents, chunks and their memory vectors.

    One writer process at a time (others get CollectionLockedError), any number of read-only
    ones; a reader sees each commit whole, and picks new ones up before every search.
    """

    def __init__(self, directory: Path, manifest: Manifest, readonly: bool):
        self.directory = directory
        self.name = directory.name
        self.manifest = manifest
        self.readonly = readonly
        self._mutex = threading.RLock()  # one operation at a time per Collection object
        self._closed = False
        self._meta = Meta(directory / META, readonly=readonly)
        try:
            self._view = IndexView(directory, manifest, self._meta, writer=not readonly)
        except BaseException:
            self._meta.close()  # (and a private copy it read, `Meta._open`)
            raise
        self._lock: WriterLock | None = None
        self.lexical = True  # False: an old index a reader could not upgrade (dense only)
        self.notes: list[str] = []  # one-line messages for the user (e.g. an upgrade done)

    @classmethod
    def open(
        cls,
        root: str | Path | None,
        name: str,
        manifest: dict[str, Any] | Manifest | None = None,
        *,
        create: bool = False,
        readonly: bool = False,
        index_type: str | None = None,
        vectors: bool = True,
    ) -> Collection:
        """Open (with `create=True`, make if missing) collection `name` under `root`
        (None: `$CLARA_HOME/indexes`).

        `manifest` is what the loaded model records (`cm.manifest()`); a collection built by
        another checkpoint then raises IndexMismatchError. Without one any collection is
        accepted. `readonly=True` takes no lock and never writes. `index_type` ("flat" |
        "hnsw" | "ivf" | "auto", default "auto") is kept in the manifest; a writer passing a
        different one converts the index. A reader with `vectors=False` loads its vector
        index at its first search (listing documents, counting them need none of it).
        """
        directory = collection_dir(root, name)
        finish_swap(directory.parent, name)  # (a recompress a crash interrupted)
        if (other := case_clash(root, name)) is not None:
            raise CollectionNameCaseError(
                f"no collection '{name}' in {directory.parent}, but '{other}', the same name in "
                f"another case (one folder on macOS and Windows): use '{other}', or a name of "
                "its own"
            )
        expected = Manifest.from_dict(manifest) if isinstance(manifest, dict) else manifest
        if index_type is not None:
            resolve_kind(index_type, 0)  # rejects unknown names early
        if holds_data_without_manifest(directory):
            raise damaged(directory, f"{MANIFEST} is missing")
        if not (directory / MANIFEST).exists():
            if not create or readonly:
                existing = ", ".join(list_collections(root)) or "none"
                raise CollectionNotFoundError(
                    f"no collection '{name}' in {directory.parent} (existing: {existing}); "
                    "index some documents into it first"
                )
            if expected is None:
                raise InvalidArgumentError("creating a collection needs the model's manifest")
            if is_reserved(name):  # (`Uploads` is the uploads folder on macOS)
                raise CollectionError(
                    f"collection name '{name}' is reserved (the Files API keeps its uploads in "
                    f"{directory.parent / 'uploads'}): pick another"
                )
            fresh = Manifest.from_dict(expected.to_dict())
            fresh.index_type = index_type or fresh.index_type
            fresh.created = time.time()
            create_collection_dir(directory, fresh)
        try:
            stored = read_manifest(directory)
        except FileNotFoundError:  # deleted since the check above
            raise CollectionNotFoundError(f"no collection '{name}' in {directory.parent}") from None
        except OSError as exc:  # permissions, I/O: the folder is not (known to be) broken
            raise CollectionError(
                f"collection '{name}': cannot read {directory / MANIFEST}: {exc.strerror or exc}"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise damaged(directory, f"{MANIFEST} unreadable: {exc}") from None
        if expected is not None:
            stored.check_matches(expected, name)
        try:
            col = cls(directory, stored, readonly)
        except sqlite3.DatabaseError as exc:
            if is_corrupt(exc):
                raise damaged(directory, _meta_trouble(exc)) from None
            raise
        try:
            if readonly:
                col._upgrade_lexical()
                if vectors:
                    col.refresh()
                else:  # (what loading would have found: a lost or cut memory file)
                    col._check_memory_file()
            else:
                col._lock = WriterLock(directory, f"collection '{name}'")
                if index_type is not None and index_type != stored.index_type:
                    stored.index_type = index_type
                    write_manifest(directory, stored)
                col._upgrade_lexical()
                col._reconcile()
        except sqlite3.DatabaseError as exc:
            col.close()
            if is_corrupt(exc):
                raise damaged(directory, _meta_trouble(exc)) from None
            raise
        except BaseException:
            col.close()
            raise
        return col

    def save_index(self) -> None:
        """Writer: save a lagging FAISS file now (`close` does too), e.g. while the folder
        still holds this collection, before it is renamed away."""
        with self._guard():
            if self._lock is not None and self._view.generation >= 0:
                self._view.maybe_save(force=True)

    def close(self, keep_lock: bool = False) -> WriterLock | None:
        """Writer: save a lagging FAISS file and release the lock. Safe to call twice.
        With `keep_lock`, the writer lock is returned still held (`delete_collection` takes
        it: no other process can come between)."""
        with self._mutex:  # (two threads closing at once: the second finds it closed)
            if self._closed:
                return None
            kept, saved = None, False
            with self._guard():
                try:
                    self.save_index()
                    saved = True
                finally:
                    if self._lock is not None:
                        if keep_lock and saved:  # (not saved: raising, so let it go)
                            kept = self._lock
                        else:
                            self._lock.release()
                        self._lock = None
                    self._view.close()
                    self._meta.close()
                    self._closed = True
            return kept

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "reader" if self.readonly else "writer"
        return f"Collection({self.name!r}, {mode}, generation={self._view.generation})"

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """One operation at a time on this object; SQLite finding the database broken under
        an open collection (overwritten, cut short) is the same `DamagedCollectionError`
        opening it would raise, not a bare `sqlite3.DatabaseError` (an HTTP 500 "internal")."""
        with self._mutex:
            if self._closed:
                raise CollectionError(f"collection {self.name!r} is closed: open it again")
            try:
                yield
            except sqlite3.DatabaseError as exc:
                if is_corrupt(exc):
                    raise damaged(self.directory, _meta_trouble(exc)) from None
                raise
            except FileNotFoundError:
                if not self.directory.exists():  # (its stats listed files no longer there)
                    raise CollectionNotFoundError(
                        f"collection {self.name!r} was deleted (by another process?)"
                    ) from None
                raise

    def refresh(self) -> bool:
        """Pick up commits made since the last look (one SELECT when there are none).
        Returns True when the view changed. Runs before every search."""
        with self._guard():
            changed = self._view.refresh()
            if not self.lexical and self._meta.lexical_current():
                self.lexical = True  # a writer has added the full-text table since
            return changed

    def _check_memory_file(self) -> None:
        """Raise DamagedCollectionError when the committed memory file is missing or short."""
        with self._meta.snapshot():
            state = self._meta.state()
        check_memory_file(self.directory, state, self.manifest)

    def _upgrade_lexical(self) -> None:
        """Give an index made before the full-text table one (once, in one transaction).
        A reader does it too when no writer holds the collection, else searches dense only."""
        if self._meta.lexical_current():
            return
        lock, meta = self._lock, self._meta
        try:
            if self.readonly:
                lock = WriterLock(self.directory, f"collection '{self.name}'")
                meta = Meta(self.directory / META, readonly=False)
            with meta.transaction():
                n = meta.build_lexical() if not meta.lexical_current() else None
        except (CollectionLockedError, OSError, sqlite3.Error) as exc:
            self.lexical = False
            self._note(
                f"collection '{self.name}' has no full-text index yet ({exc}); searching it "
                "by memory vectors only until `clara-index rebuild` adds one"
            )
            return
        finally:
            if lock is not None and lock is not self._lock:
                lock.release()
            if meta is not self._meta:
                meta.close()
        if n is not None:
            self._note(
                f"collection '{self.name}': built its full-text index anew ({n} chunks): it "
                "was missing or made by an older clara (once only)"
            )

    def _note(self, message: str) -> None:
        self.notes.append(message)
        log.warning("%s", message)

    def _reconcile(self) -> None:
        """Writer open: drop what unfinished or superseded writes left, catch FAISS up."""
        with self._guard():
            state = self._meta.state()
            path = self.directory / state.memory_file
            memory = MemoryFile(path, self.manifest.n_mem, self.manifest.hidden_size)
            check_memory_file(self.directory, state, self.manifest)  # (we hold the lock:
            # nobody is writing)
            memory.truncate(state.n_rows)  # rows of an add that never committed
            for p in self.directory.iterdir():
                stale_memory = p.name.startswith("memory-") and p.name != state.memory_file
                if stale_memory or (p.name.startswith(".") and p.name.endswith(".tmp")):
                    remove_quietly(p)
            self._view.memory = memory
            self._view.refresh()
            self._view.maybe_save()
            self._view.drop_other_faiss_files()  # e.g. the old one after a crash mid-save

    # -- writes ------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """A `CollectionError` unless this is an open writer."""
        if self._lock is None:
            raise CollectionError(f"collection '{self.name}' is open read-only (or closed)")

    def note_file_stats(self, stats: Sequence[tuple[str, int, float]]) -> None:
        """Record (document id, size, modification time) of documents' files found with the
        same content (touched, copied with new times, checked out again by git), in one
        write: later runs then know them unchanged without reading them. Nothing a reader
        sees changes."""
        self.check_writable()
        if stats:
            with self._guard(), self._meta.transaction():
                self._meta.set_file_stats(stats)

    def add_document(
        self,
        path: str | None,
        name: str,
        sha256: str,
        chunks: Sequence[ChunkRecord],
        memories: np.ndarray,
        *,
        size: int | None = None,
        mtime: float | None = None,
        n_pages: int | None = None,
    ) -> str:
        """Commit a document with its chunks and their memories (N, n_mem, d) atomically.
        `size`/`mtime` default to the file at `path`. Returns the new "doc-<12 hex>" id."""
        return self._commit(None, path, name, sha256, chunks, memories, size, mtime, n_pages)

    def replace_document(
        self,
        old_doc_id: str,
        path: str | None,
        name: str,
        sha256: str,
        chunks: Sequence[ChunkRecord],
        memories: np.ndarray,
        *,
        size: int | None = None,
        mtime: float | None = None,
        n_pages: int | None = None,
    ) -> str:
        """Add the new version and remove `old_doc_id` in ONE commit; returns the new id."""
        return self._commit(old_doc_id, path, name, sha256, chunks, memories, size, mtime, n_pages)

    def _commit(self, old_id, path, name, sha256, chunks, memories, size, mtime, n_pages) -> str:
        self.check_writable()
        n_mem, d = self.manifest.n_mem, self.manifest.hidden_size
        memories = np.asarray(memories)
        if memories.shape != (len(chunks), n_mem, d):
            raise InvalidArgumentError(
                f"memories must have shape (len(chunks)={len(chunks)}, n_mem={n_mem}, d={d}), "
                f"got {memories.shape}"
            )
        mem16 = memories.astype(np.float16)  # (N, n_mem, d): exactly what the file stores
        if not np.isfinite(mem16).all():
            raise InvalidArgumentError("memories contain NaN/inf (or values beyond float16 range)")
        if size is None and path and os.path.isfile(path):
            st = os.stat(path)
            size = st.st_size
            mtime = st.st_mtime if mtime is None else mtime
        doc = Document(
            id=f"doc-{secrets.token_hex(6)}",
            path=path_text(path) if path is not None else None,
            name=path_text(name),
            sha256=sha256,
            size=int(size or 0),
            mtime=mtime,
            n_pages=n_pages,
            created=time.time(),
            status="ready",
        )
        with self._guard():
            if old_id is not None and self._meta.document(old_id) is None:
                raise DocumentNotFoundError(f"no document {old_id} in '{self.name}'")
            state = self._meta.state()
            n = len(chunks)
            ids = np.arange(state.next_chunk_id, state.next_chunk_id + n, dtype=np.int64)
            rows = np.arange(state.n_rows, state.n_rows + n, dtype=np.int64)
            crash_point("add:before-append")
            self._view.memory.append(state.n_rows, mem16)
            crash_point("add:after-append")
            with self._meta.transaction():
                removed = self._meta.delete_document(old_id) if old_id else np.zeros(0, np.int64)
                self._meta.insert_document(doc)
                self._meta.insert_chunks(doc.id, chunks, ids, rows, doc.name)
                self._meta.set_state(
                    generation=state.generation + 1,
                    n_rows=state.n_rows + n,
                    next_chunk_id=state.next_chunk_id + n,
                )
                crash_point("add:before-commit")
            crash_point("add:after-commit")
            self._after_commit(state.generation + 1, removed, ids, flatten_normalize(mem16))
        return doc.id

    def remove_document(self, doc_id: str) -> None:
        """Remove a document with its chunks and vectors (disk space returns at compaction)."""
        if not self.remove_documents([doc_id]):
            raise DocumentNotFoundError(f"no document {doc_id} in '{self.name}'")

    def move_document(
        self, doc_id: str, path: str, name: str, size: int, mtime: float | None = None
    ) -> None:
        """Record that a document's file moved to `path` (named `name`) with the same content:
        its chunks and memories stay, nothing is compressed again."""
        self.check_writable()
        with self._guard():
            generation = self._meta.state().generation + 1
            with self._meta.transaction():
                if self._meta.document(doc_id) is None:
                    raise DocumentNotFoundError(f"no document {doc_id} in '{self.name}'")
                self._meta.move_document(doc_id, path_text(path), path_text(name), size, mtime)
                self._meta.set_state(generation=generation)
            empty = np.zeros(0, np.int64)
            self._after_commit(generation, empty, empty, None)

    def remove_documents(self, doc_ids: Sequence[str]) -> list[str]:
        """Remove these documents in one commit (one vector-index update: removing a folder
        of 1000 one at a time compacted the flat index 1000 times); returns the ids that
        were there."""
        self.check_writable()
        with self._guard():
            generation = self._meta.state().generation + 1
            with self._meta.transaction():
                found = [self._meta.document(d) for d in dict.fromkeys(doc_ids)]
                there = [d.id for d in found if d is not None]
                if not there:
                    return []
                removed = np.concatenate([self._meta.delete_document(d) for d in there])
                self._meta.set_state(generation=generation)
                crash_point("remove:before-commit")
            crash_point("remove:after-commit")
            self._after_commit(generation, removed, np.zeros(0, np.int64), None)
            # (the WAL held their text until a checkpoint; a reader mid-search lets it be)
            self._meta.empty_wal(wait_ms=200)
            for d in found:  # what interrupted runs kept of their files (a privacy audit)
                if d is not None and d.path:
                    partial.forget_path(self.directory, d.path)
            return there

    def _after_commit(self, generation: int, removed: np.ndarray, ids: np.ndarray, vecs) -> None:
        self._view.apply(generation, removed, ids, vecs)
        state = self._meta.state()
        if state.n_rows - self._view.index.ntotal > COMPACT_DEAD_SHARE * state.n_rows:
            self._compact()
        self._view.maybe_save()

    def compact(self) -> dict[str, Any]:
        """Erase from disk what removed (and replaced) documents left there; searches go on
        meanwhile. Removing takes a document out of every answer at once, but its memory rows
        stay in the memory file until a quarter of the rows are dead (then compaction drops
        them), an HNSW index keeps its vectors as tombstones, FTS5 keeps its words in its
        segments until a merge, and the database and its WAL may keep freed pages. This
        drops the rows, rebuilds an HNSW index without tombstones, merges the words, rewrites
        the database and empties its WAL. Also removes what interrupted runs kept of files no
        longer there (`indexing.partial`). Returns the memory rows, index vectors and partial
        saves dropped, and whether the WAL could be emptied (`wal_emptied`: False while another
        process read an older state; the old pages may then stay until a later compact)."""
        self.check_writable()
        with self._guard():
            self._view.refresh()
            dead_rows = self._meta.state().n_rows - self._view.index.ntotal
            if dead_rows:
                self._compact()
            dead_vectors = self._view.index.tombstones
            if dead_vectors:
                self._view.refresh(rebuild=True)
            self._view.maybe_save(force=True)  # (a big flat index saves only past a share
            emptied = self._meta.erase_freed()  # of changes: the old file kept them)
            saves = partial.forget_gone(self.directory)
            return {
                "memory_rows": dead_rows, "index_vectors": dead_vectors, "partial": saves,
                "wal_emptied": emptied,
            }  # fmt: skip

    def _compact(self) -> None:
        state = self._meta.state()
        with self._meta.snapshot():
            ids, rows = self._meta.live(by_row=True)
        generation = state.generation + 1
        old = self._view.memory
        new = MemoryFile(
            self.directory / memory_file_name(generation),
            self.manifest.n_mem,
            self.manifest.hidden_size,
        )
        new.copy_rows_from(old, rows)
        fsync_dir(self.directory)
        # The removed rows zeroed before the commit (no live chunk is in them): a crash after
        # it left the old file to be deleted with them as they were; a server that still
        # holds the file reads the live rows until its next search (see zero_rows)
        with contextlib.suppress(OSError):
            old.zero_rows(np.setdiff1d(np.arange(state.n_rows, dtype=np.int64), rows))
        crash_point("compact:after-write")
        with self._meta.transaction():
            self._meta.renumber(ids, np.arange(len(ids), dtype=np.int64))
            self._meta.set_state(generation=generation, memory_file=new.path.name, n_rows=len(ids))
        crash_point("compact:after-commit")
        self._view.memory = new
        self._view.generation = generation  # same ids, same vectors: the index is still exact
        old.close()
        remove_quietly(old.path)
        fsync_dir(self.directory)
        self._meta.shrink()

    def rebuild(self) -> None:
        """Rebuild FAISS from the memory file and the full-text table from the chunks."""
        self.check_writable()
        with self._guard():
            with self._meta.transaction():
                self._meta.build_lexical()
            self._view.refresh(rebuild=True)
            self._view.maybe_save(force=True)

    # -- reads -------------------------------------------------------------------------------
    def search(
        self, query: np.ndarray, k: int = 5, rerank: int = 0, only: np.ndarray | None = None
    ) -> list[list[Hit]]:
        """query (Q, n_mem, d) or (n_mem, d) -> for each query up to k hits, best first.

        FAISS finds the `max(k, rerank)` nearest chunks by the cosine of the flattened vectors
        (among the chunk ids `only`, when given); with `rerank` (the checkpoint's
        `ClaraConfig.dense_rerank`) those are re-scored by MaxSim over the stored memory
        vectors and the best k kept."""
        if k < 0 or rerank < 0:
            raise InvalidArgumentError(f"k and rerank must be 0 or more, got {k} and {rerank}")
        q = np.asarray(query)
        q = q[None] if q.ndim == 2 else q
        shape = (self.manifest.n_mem, self.manifest.hidden_size)
        if q.ndim != 3 or q.shape[1:] != shape:
            raise InvalidArgumentError(
                f"query must be (Q, {shape[0]}, {shape[1]}) or {shape}, got {q.shape}"
            )
        with self._guard():
            self._view.refresh()
            index = self._view.index
            if index is None or index.ntotal == 0 or k == 0:
                return [[] for _ in range(len(q))]
            depth = min(rerank, index.ntotal)
            if only is not None and len(only) == 0:
                return [[] for _ in range(len(q))]
            exact = only is not None and index.kind != "flat" and len(only) <= EXACT_FILTERED
            try:  # (an approximate index walks past the few it may return: 0 of 10 hits)
                scores, ids = self._exact(q, only, max(k, depth)) if exact else (None, None)
            except KeyError:  # (one removed meanwhile by another process)
                exact = False
            if not exact:
                scores, ids = index.search(flatten_normalize(q), max(k, depth), only)  # (Q, n)
            if depth:
                scores, ids = self._maxsim(q, ids, k)
            info = self._meta.hit_info(np.unique(ids[ids >= 0]).tolist())
        # an id missing from `info` was removed after the refresh: never return it
        return [
            [Hit(i, info[i][0], float(s), *info[i][1:]) for s, i in zip(srow, irow) if i in info]
            for srow, irow in zip(scores, ids.tolist())
        ]

    def _exact(self, q: np.ndarray, only: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's answer for the chunk ids `only`, computed exactly from their stored memories
        (the flattened cosine): (Q, k) scores and ids, -1 where fewer exist."""
        memory = flatten_normalize(self._view.read(only.tolist()))  # (n, D)
        sims = flatten_normalize(q) @ memory.T  # (Q, n)
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        ids = np.full((len(q), k), -1, np.int64)
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids[:, : top.shape[1]] = only[top]
        scores[:, : top.shape[1]] = np.take_along_axis(sims, top, axis=1)
        return scores, ids

    def _maxsim(self, q: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's candidates `ids` (Q, n; -1 for none) re-scored by MaxSim, best k first."""
        found = np.unique(ids[ids >= 0])
        if found.size == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        try:
            memory = self._view.read(found.tolist())  # (U, n_mem, d) float16
        except KeyError:  # removed since FAISS's snapshot: rank the ones still there
            found = np.array(sorted(self._meta.rows_of(found.tolist())), np.int64)
            memory = self._view.read(found.tolist())
        col = {int(c): j for j, c in enumerate(found)}
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for r, row in enumerate(ids):
            cands = [int(c) for c in row if int(c) in col]
            if not cands:
                continue
            s, best = maxsim_rerank(q[r], cands, memory[[col[c] for c in cands]], k)
            out_s[r, : len(best)] = s
            out_i[r, : len(best)] = best
        return out_s, out_i

    def search_lexical(
        self,
        text: str | list[str],
        k: int = 5,
        only: np.ndarray | None = None,
        counts: list[int] | None = None,
    ) -> list[tuple[int, float]] | None:
        """BM25 over chunk terms: [(chunk id, score)] best first (among the chunk ids `only`,
        when given); None when `text` has no usable word (or the collection has no full-text
        index: see `lexical`). `text` may be its `query_terms` already, and `counts` their
        `term_stats` counts (not looked up again)."""
        terms = query_terms(text) if isinstance(text, str) else text
        if not terms or not self.lexical:
            return None
        with self._guard():
            return self._meta.lexical_search(terms, k, only, counts)

    def term_stats(self, terms: list[str]) -> tuple[int, list[int]]:
        """(chunks in the full-text index, the chunks holding each query term): what BM25
        weighs a term by (`hybrid.retrieve_across` adds them up over collections)."""
        if not self.lexical:  # (an index made before words were: none to weigh)
            return 0, [0] * len(terms)
        with self._guard():
            return self._meta.lexical_rows(), self._meta.term_counts(terms)

    def term_scores(self, term: str, chunk_ids: Sequence[int]) -> dict[int, float]:
        """BM25 of `term` alone in each of these chunks that holds it (`Meta.term_scores`)."""
        with self._guard():
            return self._meta.term_scores(term, chunk_ids)

    def chunk_ids_of(self, doc_ids: Sequence[str]) -> np.ndarray:
        """The chunk ids of these documents (those still there), sorted."""
        with self._guard():
            return np.array(sorted(self._meta.chunk_ids_of(doc_ids)), dtype=np.int64)

    def retrieve(
        self,
        text: str,
        vector: np.ndarray | None,
        k: int = 5,
        mode: str = "hybrid",
        fusion: Fusion | None = None,
        rerank: int = 0,
        memories: bool = False,
        documents: Sequence[str] | None = None,
    ) -> list[SearchHit]:
        """Search by question: "hybrid" (default), "dense" or "lexical" (`indexing.hybrid`).
        `vector` (n_mem, d) is the question's query-adapter encoding; `rerank` as in `search`
        (pass the checkpoint's `cm.config.dense_rerank`); `documents`: among these documents'
        chunks only (an attribute filter's). Hits carry text and document, and with
        `memories` their stored memory vectors (`SearchHit.memory`)."""
        if k < 0 or rerank < 0:
            raise InvalidArgumentError(f"k and rerank must be 0 or more, got {k} and {rerank}")
        return retrieve_from([(self, documents)], text, vector, k, mode, fusion, rerank, memories)

    def memories(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """Stored memory vectors of these chunks: (k, n_mem, d) float32, in the order asked."""
        with self._guard():
            return self._view.read([int(i) for i in chunk_ids]).astype(np.float32)

    def chunks(self, chunk_ids: Sequence[int]) -> list[Chunk]:
        """Chunk text and metadata in the order asked; ids that no longer exist are skipped."""
        with self._guard():
            found = self._meta.chunks(chunk_ids)
        return [found[int(i)] for i in chunk_ids if int(i) in found]

    def document_chunks(self, doc_id: str) -> list[Chunk]:
        with self._guard():
            return self.chunks(self._meta.doc_chunk_ids(doc_id))

    def document(self, doc_id: str) -> Document | None:
        with self._guard():
            return self._meta.document(doc_id)

    def list_documents(self) -> list[Document]:
        with self._guard():
            return self._meta.documents()

    def find_by_sha(self, sha256: str) -> Document | None:
        """The newest document with this content hash (same hash: nothing to re-index)."""
        with self._guard():
            return self._meta.find_by_sha(sha256)

    def find_by_path(self, path: str | Path) -> Document | None:
        """The newest document indexed from `path` (hash changed: `replace_document`)."""
        with self._guard():
            return self._meta.find_by_path(path_text(path))

    def stats(self) -> dict[str, Any]:
        """Counts, generation, index type and bytes on disk per file."""
        with self._guard():
            with self._meta.snapshot():
                state = self._meta.state()
                n_docs, n_chunks = self._meta.counts()
                n_lexical = self._meta.lexical_count() if self.lexical else 0
            files = {
                p.name: p.stat().st_size
                for p in sorted(self.directory.iterdir())
                if p.is_file() and not p.name.startswith(".")
            }
            if begun := _bytes_in(self.directory / "partial"):  # (long files begun)
                files["partial/"] = begun
            index = self._view.index
            return {
                "name": self.name,
                "documents": n_docs,
                "chunks": n_chunks,
                "generation": state.generation,
                "memory_rows": state.n_rows,
                "dead_rows": state.n_rows - n_chunks,
                "lexical_chunks": n_lexical,
                "index_type": self.manifest.index_type,
                "index_kind": index.kind if index else None,
                "indexed_vectors": index.ntotal if index else 0,
                "dim": self.manifest.dim,
                "fingerprint": self.manifest.fingerprint,
                "files": files,
                "bytes_on_disk": sum(files.values()),
            }


def _meta_trouble(exc: sqlite3.DatabaseError) -> str:
    """What a corrupt-database error says, in the words a damaged() message wants."""
    return str(exc) if isinstance(exc, MissingDatabaseError) else f"{META}: {exc}"


def collection_counts(root: str | Path | None, name: str) -> tuple[int, int]:
    """(documents, chunks) of a collection from its metadata alone: neither its vector index nor
    its memory file is loaded, and no lock is taken (a reader sees the last commit)."""
    meta = Meta(collection_dir(root, name) / META, readonly=True)
    try:
        with meta.snapshot():
            return meta.counts()
    finally:
        meta.close()


def retrieve_from(
    searched: Sequence[tuple[Collection, Sequence[str] | None]],
    text: str,
    vector: np.ndarray | None,
    k: int = 5,
    mode: str = "hybrid",
    fusion: Fusion | None = None,
    rerank: int = 0,
    memories: bool = False,
) -> list[SearchHit]:
    """`Collection.retrieve` over several collections as one (`searched`: [(collection,
    documents)], documents None for all of its own); each hit names its `collection`."""
    if k < 0 or rerank < 0:
        raise InvalidArgumentError(f"k and rerank must be 0 or more, got {k} and {rerank}")
    cols = {col.name: col for col, _ in searched}
    for _ in range(3):
        only = [(c, None if d is None else c.chunk_ids_of(d)) for c, d in searched]
        hits = retrieve_across(only, text, vector, k, mode, fusion, rerank)
        if not (memories and hits):
            return hits
        try:
            for name in {h.collection for h in hits}:
                mine = [h for h in hits if h.collection == name]
                for hit, memory in zip(mine, cols[name].memories([h.chunk_id for h in mine])):
                    hit.memory = memory
        except KeyError:  # a document removed between search and read: search again
            continue
        return hits
    names = ", ".join(f"'{n}'" for n in cols)
    what = f"collection {names} keeps" if len(cols) == 1 else f"collections {names} keep"
    raise CollectionError(f"{what} changing; try again")
