"""`meta.sqlite`: documents, chunks and the commit state. SQLite is the commit point.

The `state` table holds `generation` (bumped by every commit), `memory_file` (the current
append-only vector file), `n_rows` (rows of it that are committed) and `next_chunk_id` (chunk
ids, which are also FAISS ids, are never reused).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import sqlite3
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from clara.paths import UNNAMED_TEMP_S, disk_full, sqlite_error, temp_sibling
from indexing.durable import FULLFSYNC, empty_wal
from indexing.lexical import (
    LEXICAL_VERSION,
    TITLE_WEIGHT,
    TOKENIZER,
    fts_row,
    match_query,
    prune,
    stems_of,
    words_of,
)

log = logging.getLogger("clara.index")

SCHEMA = """
CREATE TABLE documents (
    id TEXT PRIMARY KEY,            -- "doc-<12 hex>"
    path TEXT,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL,
    n_pages INTEGER,
    created REAL NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX documents_sha256 ON documents(sha256);
CREATE INDEX documents_path ON documents(path);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,         -- = FAISS id
    doc_id TEXT NOT NULL REFERENCES documents(id),
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    page_start INTEGER,
    page_end INTEGER,
    n_tokens INTEGER NOT NULL,
    row INTEGER NOT NULL,           -- row in the memory file
    context TEXT NOT NULL DEFAULT '' -- "title / section heading", read before the text
);
CREATE INDEX chunks_doc ON chunks(doc_id, ordinal);
CREATE TABLE state (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""
# rowid = chunk id; `title` = terms of the document's name and the chunk's context line,
# `body` = terms of its text (lexical.fts_row). Written in the same transactions as `chunks`,
# so the crash guarantees cover it. `rank` is bm25 with the title weighted TITLE_WEIGHT.
FTS_SCHEMA = f'CREATE VIRTUAL TABLE chunks_fts USING fts5(title, body, tokenize="{TOKENIZER}")'
FTS_VOCAB = "CREATE VIRTUAL TABLE chunks_fts_vocab USING fts5vocab(chunks_fts, 'row')"
FTS_RANK = f"INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('rank', 'bm25({TITLE_WEIGHT}, 1.0)')"
_SQL_VARS = 900  # stay under SQLite's bound-parameter limit
BUSY_TIMEOUT_MS = 30_000  # how long a statement waits for another connection's lock


@dataclass
class ChunkRecord:
    """A chunk to add: its text and where it came from."""

    text: str
    page_start: int | None = None
    page_end: int | None = None
    n_tokens: int = 0
    context: str = ""  # "title / section heading" (see indexing.context)


class Contextual:
    """`contextual_text` for a chunk-like record with a `context` line and its `text`."""

    context: str
    text: str

    @property
    def contextual_text(self) -> str:
        """What the compressor and the generator read: the context line, then the text."""
        return contextual(self.context, self.text)


@dataclass
class Chunk(Contextual):
    id: int
    doc_id: str
    ordinal: int
    text: str
    page_start: int | None
    page_end: int | None
    n_tokens: int
    context: str = ""


def contextual(context: str, text: str) -> str:
    return f"{context}\n{text}" if context else text


@dataclass
class Document:
    id: str
    path: str | None
    name: str
    sha256: str
    size: int
    mtime: float | None
    n_pages: int | None
    created: float
    status: str
    n_chunks: int = 0


@dataclass
class State:
    generation: int
    memory_file: str
    n_rows: int
    next_chunk_id: int


_DOC_COLS = "d.id, d.path, d.name, d.sha256, d.size, d.mtime, d.n_pages, d.created, d.status"
_DOC_SELECT = (
    f"SELECT {_DOC_COLS}, (SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.id) FROM documents d"
)


_CHUNK_COLS = "id, doc_id, ordinal, text, page_start, page_end, n_tokens, row, context"


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _batches(ids: Sequence[int]) -> Iterator[list[int]]:
    ids = [int(i) for i in ids]
    for start in range(0, len(ids), _SQL_VARS):
        yield ids[start : start + _SQL_VARS]


class MissingDatabaseError(sqlite3.OperationalError):
    """A collection's meta.sqlite is gone (neither readers nor writers create an empty one)."""


def is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the database itself is broken (not locked, busy or unwritable)."""
    name = getattr(exc, "sqlite_errorname", "")  # Python 3.11+
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return True
    text = str(exc)
    return isinstance(exc, MissingDatabaseError) or any(
        s in text for s in ("malformed", "not a database", "no such table")
    )


def _file_id(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):  # (a FIFO there blocked SQLite's read-only open for good)
        raise sqlite3.DatabaseError(f"{path.name} is not a database (not a regular file)")
    return st.st_dev, st.st_ino


def _pending_wal(path: Path) -> bool:
    """Whether `path`'s WAL holds frames (commits, maybe, not yet in the database file)."""
    try:
        return os.path.getsize(f"{path}-wal") > 0
    except OSError:
        return False


def _private_copy(path: Path) -> Path:
    """`path` and its WAL copied into a new temporary folder (`.clara-meta.<pid>-....copy`,
    which `Meta.close` removes; those of processes that ended without closing it are removed
    here, as they hold documents' text); returns the copy's path."""
    folder = temp_sibling(Path(tempfile.gettempdir()) / "clara-meta", ".copy")
    _sweep_unnamed_copies()
    try:
        copy = folder / path.name
        _copy_regular(path, copy)
        _copy_regular(Path(f"{path}-wal"), Path(f"{copy}-wal"))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    log.info("%s: read-only, with commits in its WAL: read from a copy of both", path)
    return copy


def _copy_regular(source: Path, target: Path) -> None:
    """Copy a regular file, at most the size it had when opened: a device or FIFO in its
    place is refused as not a database (a `meta.sqlite` linked to /dev/zero filled the
    temporary folder without end, a security audit; a FIFO would block the open for good, a
    review: it is opened without waiting, then looked at)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # (a FIFO with no writer, on some systems)
            raise sqlite3.DatabaseError(
                f"{source.name} is not a database (not a regular file)"
            ) from None
        raise
    with open(fd, "rb") as src:
        size = os.fstat(src.fileno())
        if not stat.S_ISREG(size.st_mode):
            raise sqlite3.DatabaseError(f"{source.name} is not a database (not a regular file)")
        with open(target, "wb") as out:
            left = size.st_size
            while left > 0 and (block := src.read(min(left, 1 << 20))):
                out.write(block)
                left -= len(block)


#: a copy folder named before 0.2.9 (mkdtemp's `clara-meta-` and 8 characters, no pid)
_UNNAMED_COPY = re.compile(r"clara-meta-[a-z0-9_]{8}")


def _sweep_unnamed_copies() -> None:
    """Remove the copies older versions left (no pid in their names) once a day old, as
    `clara.paths.sweep_temps` removes unnamed temporary folders."""
    for folder in Path(tempfile.gettempdir()).glob("clara-meta-*"):
        try:
            old = time.time() - folder.stat().st_mtime > UNNAMED_TEMP_S
        except OSError:
            continue
        if _UNNAMED_COPY.fullmatch(folder.name) and old and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


class Meta:
    """One connection to `meta.sqlite` (WAL, synchronous=FULL, explicit transactions)."""

    def __init__(self, path: Path, *, readonly: bool):
        self.path = path
        # isolation_level=None: we issue BEGIN/COMMIT ourselves; check_same_thread off because
        # the owning Collection serialises access with its own lock. Readers and writers alike
        # open the file "rw" (WAL readers write the -shm index) and never create it: only
        # `create` does, in a new collection's hidden folder. A writer that made an empty one
        # beside a collection's memory files would start it afresh over them. In a read-only
        # folder (a read-only mount, a copy without write permission) WAL readers cannot
        # write the -shm index, and every read failed "unable to open database file": as
        # nothing can change the files there, readers read them as they are (immutable), and
        # writers are refused, saying why.
        try:  # before connecting: a file swapped in between reads as `replaced`, never as ours
            self.file_id = _file_id(path)
        except FileNotFoundError:
            raise MissingDatabaseError(f"{path.name} is missing") from None
        writable = os.access(path.parent, os.W_OK)
        if not readonly and not writable:
            read_only = bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
            code = errno.EROFS if read_only else errno.EACCES
            raise OSError(code, os.strerror(code), str(path.parent))
        self._copy: Path | None = None
        try:
            self.db = self._open(path, as_is=not writable)
        except sqlite3.OperationalError as exc:
            if not path.exists():  # deleted since the check above
                raise MissingDatabaseError(f"{path.name} is missing") from None
            if not (readonly and disk_full(path.parent)):
                raise sqlite_error(exc, path.parent) from exc
            # a WAL reader makes an -shm file, which a full disk refuses: read the files as
            # they are, as in a read-only folder (what a writer commits once there is room
            # again is seen after a restart)
            log.warning("%s: the disk is full: read as it is", path)
            self.db = self._open(path, as_is=True)
        if readonly:
            self.db.execute("PRAGMA query_only=ON")

    def _open(self, path: Path, as_is: bool) -> sqlite3.Connection:
        """A connection to `path`, "rw", or (`as_is`) immutable: nothing written beside it.
        An immutable read skips the WAL, and commits not yet folded into the database (a copy
        taken while a server kept it open, or after a writer was killed) were left out without
        a word: with any there, a private copy of both is read, which SQLite folds. (Made
        for files nobody writes, as a backup: a copy of a database being written, its file
        then its WAL, may hold neither state.)"""
        source, mode = path, "ro&immutable=1" if as_is else "rw"
        if as_is and _pending_wal(path):
            source = self._copy = _private_copy(path)
            mode = "rw"
        target = f"file:{quote(str(source))}?mode={mode}"
        try:
            db = sqlite3.connect(
                target,
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
            try:
                db.execute("PRAGMA synchronous=FULL")  # a commit survives power loss
                db.execute("PRAGMA secure_delete=ON")  # deleted text zeroed, not left in pages
                if FULLFSYNC is not None:  # (macOS: to the disk, not its cache)
                    db.execute("PRAGMA fullfsync=ON")
            except BaseException:
                db.close()
                raise
        except BaseException:
            if self._copy is not None:
                shutil.rmtree(self._copy.parent, ignore_errors=True)
                self._copy = None
            raise
        return db

    def replaced(self) -> bool:
        """Whether the database at `path` is gone or another file than the one this connection
        reads (its collection folder was deleted, or swapped for a rebuilt one)."""
        try:  # (the connection keeps reading its file even once renamed or deleted)
            return _file_id(self.path) != self.file_id
        except (FileNotFoundError, sqlite3.DatabaseError):  # (gone, or not a file any more)
            return True

    @staticmethod
    def create(path: Path, memory_file: str) -> None:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA secure_delete=ON")
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # lets compaction give pages back
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            db.execute(FTS_SCHEMA)
            db.execute(FTS_RANK)
            db.execute(FTS_VOCAB)
            state = {"generation": 0, "memory_file": memory_file, "n_rows": 0, "next_chunk_id": 1}
            state["lexical"] = LEXICAL_VERSION
            db.executemany("INSERT INTO state VALUES (?, ?)", state.items())
        finally:
            db.close()

    def close(self) -> None:
        self.db.close()
        if self._copy is not None:
            shutil.rmtree(self._copy.parent, ignore_errors=True)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (takes SQLite's write lock up front); commits or rolls back."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every SELECT inside sees the same committed state."""
        self.db.execute("BEGIN")
        try:
            yield self.db
        finally:
            self.db.execute("COMMIT")

    # -- state ------------------------------------------------------------------------------
    def generation(self) -> int:
        return int(self.db.execute("SELECT value FROM state WHERE key='generation'").fetchone()[0])

    def state(self) -> State:
        values = dict(self.db.execute("SELECT key, value FROM state"))
        return State(
            int(values["generation"]),
            str(values["memory_file"]),
            int(values["n_rows"]),
            int(values["next_chunk_id"]),
        )

    def set_state(self, **values: int | str) -> None:
        self.db.executemany(
            "UPDATE state SET value=? WHERE key=?", [(v, k) for k, v in values.items()]
        )

    # -- writes (inside transaction()) ------------------------------------------------------
    def insert_document(self, doc: Document) -> None:
        self.db.execute(
            "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (doc.id, doc.path, doc.name, doc.sha256, doc.size, doc.mtime, doc.n_pages)
            + (doc.created, doc.status),
        )

    def set_file_stats(self, stats: Sequence[tuple[str, int, float]]) -> None:
        """(document id, size, mtime) each."""
        self.db.executemany(
            "UPDATE documents SET size=?, mtime=? WHERE id=?", [(z, t, i) for i, z, t in stats]
        )

    def insert_chunks(
        self,
        doc_id: str,
        records: Sequence[ChunkRecord],
        ids: np.ndarray,
        rows: np.ndarray,
        doc_name: str = "",
    ) -> None:
        rows_ = [
            (int(i), doc_id, n, r.text, r.page_start, r.page_end, int(r.n_tokens), int(row))
            + (r.context,)
            for n, (r, i, row) in enumerate(zip(records, ids, rows, strict=True))
        ]
        self.db.executemany(f"INSERT INTO chunks ({_CHUNK_COLS}) VALUES ({_marks(9)})", rows_)
        self.db.executemany(
            "INSERT INTO chunks_fts (rowid, title, body) VALUES (?, ?, ?)",
            [(int(i), *fts_row(doc_name, r.context, r.text)) for r, i in zip(records, ids)],
        )

    def move_document(
        self, doc_id: str, path: str, name: str, size: int, mtime: float | None
    ) -> None:
        """A document's file moved (renamed) with its content: its path, name and stat, and
        the name its chunks' word index rows carry."""
        self.db.execute(
            "UPDATE documents SET path=?, name=?, size=?, mtime=? WHERE id=?",
            (path, name, size, mtime, doc_id),
        )
        rows = self.db.execute(
            "SELECT id, context, text FROM chunks WHERE doc_id=?", (doc_id,)
        ).fetchall()
        sql = "DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE doc_id=?)"
        self.db.execute(sql, (doc_id,))
        self.db.executemany(
            "INSERT INTO chunks_fts (rowid, title, body) VALUES (?, ?, ?)",
            [(int(i), *fts_row(name, c, t)) for i, c, t in rows],
        )

    def delete_document(self, doc_id: str) -> np.ndarray:
        """Delete a document and its chunks; returns the deleted chunk ids."""
        ids = self.db.execute("SELECT id FROM chunks WHERE doc_id=?", (doc_id,)).fetchall()
        sql = "DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE doc_id=?)"
        self.db.execute(sql, (doc_id,))
        self.db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
        self.db.execute("DELETE FROM documents WHERE id=?", (doc_id,))
        return np.array([i for (i,) in ids], dtype=np.int64)

    def build_lexical(self) -> int:
        """(Re)build the full-text table from the chunk rows (inside transaction()); also adds
        the `context` column to an index made before it. Returns the chunks indexed."""
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(chunks)")}
        if "context" not in cols:
            self.db.execute("ALTER TABLE chunks ADD COLUMN context TEXT NOT NULL DEFAULT ''")
        self.db.execute("DROP TABLE IF EXISTS chunks_fts_vocab")
        self.db.execute("DROP TABLE IF EXISTS chunks_fts")
        self.db.execute(FTS_SCHEMA)
        self.db.execute(FTS_RANK)
        self.db.execute(FTS_VOCAB)
        n = 0
        sql = (
            "SELECT c.id, d.name, c.context, c.text FROM chunks c "
            "JOIN documents d ON d.id = c.doc_id ORDER BY c.id"
        )
        cursor = self.db.execute(sql)
        insert = "INSERT INTO chunks_fts (rowid, title, body) VALUES (?, ?, ?)"
        while batch := cursor.fetchmany(1000):
            rows = [(i, *fts_row(name, c, t)) for i, name, c, t in batch]
            self.db.executemany(insert, rows)
            n += len(rows)
        self.db.execute("INSERT OR REPLACE INTO state VALUES ('lexical', ?)", (LEXICAL_VERSION,))
        return n

    def lexical_current(self) -> bool:
        """True when the full-text table exists and was made by this version's tokenizer."""
        row = self.db.execute("SELECT value FROM state WHERE key='lexical'").fetchone()
        return row is not None and int(row[0]) == LEXICAL_VERSION

    def renumber(self, ids: np.ndarray, rows: np.ndarray) -> None:
        self.db.executemany(
            "UPDATE chunks SET row=? WHERE id=?", zip(rows.tolist(), ids.tolist(), strict=True)
        )

    # -- reads ------------------------------------------------------------------------------
    def document(self, doc_id: str) -> Document | None:
        row = self.db.execute(f"{_DOC_SELECT} WHERE d.id=?", (doc_id,)).fetchone()
        return Document(*row) if row else None

    def documents(self) -> list[Document]:
        return [Document(*r) for r in self.db.execute(f"{_DOC_SELECT} ORDER BY d.created, d.id")]

    def _newest(self, where: str, value: str) -> Document | None:
        sql = f"{_DOC_SELECT} WHERE {where} ORDER BY d.created DESC LIMIT 1"
        row = self.db.execute(sql, (value,)).fetchone()
        return Document(*row) if row else None

    def find_by_sha(self, sha256: str) -> Document | None:
        return self._newest("d.sha256=?", sha256)

    def find_by_path(self, path: str) -> Document | None:
        return self._newest("d.path=?", path)

    def chunks(self, ids: Sequence[int]) -> dict[int, Chunk]:
        out: dict[int, Chunk] = {}
        for batch in _batches(ids):
            marks = ",".join("?" * len(batch))
            sql = (
                "SELECT id, doc_id, ordinal, text, page_start, page_end, n_tokens, context "
                f"FROM chunks WHERE id IN ({marks})"
            )
            for row in self.db.execute(sql, batch):
                out[row[0]] = Chunk(*row)
        return out

    def doc_chunk_ids(self, doc_id: str) -> list[int]:
        sql = "SELECT id FROM chunks WHERE doc_id=? ORDER BY ordinal"
        return [i for (i,) in self.db.execute(sql, (doc_id,))]

    def hit_info(self, ids: Sequence[int]) -> dict[int, tuple]:
        """id -> (doc_id, doc name, ordinal, page_start, page_end) for ids that still exist."""
        out: dict[int, tuple] = {}
        for batch in _batches(ids):
            marks = ",".join("?" * len(batch))
            sql = (
                "SELECT c.id, c.doc_id, d.name, c.ordinal, c.page_start, c.page_end FROM chunks c "
                f"JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({marks})"
            )
            for row in self.db.execute(sql, batch):
                out[row[0]] = row[1:]
        return out

    def chunk_ids_of(self, doc_ids: Sequence[str]) -> list[int]:
        sql = "SELECT id FROM chunks WHERE doc_id IN (SELECT value FROM json_each(?))"
        return [i for (i,) in self.db.execute(sql, (json.dumps(list(doc_ids)),))]

    def lexical_search(
        self,
        terms: list[str],
        k: int,
        only: Sequence[int] | None = None,
        counts: list[int] | None = None,
    ) -> list[tuple[int, float]]:
        """(chunk id, bm25 score, higher is better) of the best `k` chunks holding any of
        `terms` (query terms; the most frequent are left out past lexical.POSTINGS_BUDGET),
        among the chunk ids `only` when given. `counts`: `term_counts(terms)`, when the
        caller has them already."""
        counts = self.term_counts(terms) if counts is None else counts
        match = match_query(prune(terms, counts))
        if match is None:
            return []  # no term is in any chunk
        if only is not None:  # (one JSON array: no bound-parameter limit; `+rowid` keeps the
            sql = (  # set out of FTS5, which ran the whole MATCH once per id: 10 s for 30k)
                "SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ? AND +rowid IN "
                "(SELECT value FROM json_each(?)) ORDER BY rank LIMIT ?"
            )
            args = (match, json.dumps([int(i) for i in only]), int(k))
            return [(int(i), -float(r)) for i, r in self.db.execute(sql, args)]
        sql = "SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?"
        return [(int(i), -float(r)) for i, r in self.db.execute(sql, (match, int(k)))]

    def term_counts(self, terms: list[str]) -> list[int]:
        """The chunks holding each query term (a phrase: its rarest word's, at most)."""
        words = sorted({w for t in terms for w in words_of(t)})
        stem = dict(zip(words, stems_of(words)))
        wanted = sorted({s for s in stem.values() if s})
        df = dict(
            self.db.execute(
                f"SELECT term, doc FROM chunks_fts_vocab WHERE term IN ({_marks(len(wanted))})",
                wanted,
            )
        )
        # A phrase is in at most as many chunks as its rarest word.
        return [min(df.get(stem[w], 0) if stem[w] else 0 for w in words_of(t)) for t in terms]

    def term_scores(self, term: str, ids: Sequence[int]) -> dict[int, float]:
        """Each of the chunks `ids` holding `term`: its bm25 score for that term alone (what
        the term adds to a question's score: the score of several terms is their sum)."""
        match = match_query([term])
        sql = (
            "SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ? AND +rowid IN "
            "(SELECT value FROM json_each(?))"
        )
        rows = self.db.execute(sql, (match, json.dumps([int(i) for i in ids])))
        return {int(i): -float(r) for i, r in rows}

    def rows_of(self, ids: Sequence[int]) -> dict[int, int]:
        out: dict[int, int] = {}
        for batch in _batches(ids):
            marks = ",".join("?" * len(batch))
            out.update(self.db.execute(f"SELECT id, row FROM chunks WHERE id IN ({marks})", batch))
        return out

    def live(self, by_row: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(ids, rows) of every chunk, sorted by id (or by row)."""
        sql = "SELECT id, row FROM chunks ORDER BY " + ("row" if by_row else "id")
        data = self.db.execute(sql).fetchall()
        arr = np.array(data, dtype=np.int64).reshape(-1, 2)
        return arr[:, 0].copy(), arr[:, 1].copy()

    def counts(self) -> tuple[int, int]:
        n_docs = self.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        n_chunks = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return int(n_docs), int(n_chunks)

    def lexical_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0])

    def lexical_rows(self) -> int:
        """The rows FTS5's bm25 counts (its "averages" record, read without a scan: the
        table's first varint); `lexical_count` where that record cannot be read."""
        row = self.db.execute("SELECT block FROM chunks_fts_data WHERE id = 1").fetchone()
        n = _varint(bytes(row[0])) if row and row[0] else None
        return self.lexical_count() if n is None else n

    def shrink(self) -> None:
        """Give freed pages back to the filesystem and empty the WAL (after big deletes)."""
        self.db.execute("PRAGMA incremental_vacuum")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def empty_wal(self, wait_ms: int) -> bool:
        """`durable.empty_wal` of this database."""
        return empty_wal(self.db, wait_ms)

    def erase_freed(self) -> bool:
        """Leave nothing of deleted rows in the file: the full-text index merged into one
        segment (FTS5 keeps a deleted row's terms, with their positions, in its segments until
        a merge), the database rewritten (VACUUM: no free pages, no free space inside pages
        from before `secure_delete`), the WAL emptied. False when a reader kept the WAL from
        being emptied meanwhile: the old pages may still be in the file until a later run."""
        if self.db.execute("SELECT 1 FROM sqlite_master WHERE name='chunks_fts'").fetchone():
            with self.transaction():
                self.db.execute("INSERT INTO chunks_fts (chunks_fts) VALUES ('optimize')")
        self.db.execute("VACUUM")
        return self.empty_wal(BUSY_TIMEOUT_MS)


def _varint(data: bytes) -> int | None:
    """SQLite's variable-length integer at the start of `data` (None: cut short)."""
    value = 0
    for i, byte in enumerate(data[:9]):
        if i == 8:
            return (value << 8) | byte
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value
    return None
