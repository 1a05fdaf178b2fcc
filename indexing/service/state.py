"""What the indexing service remembers between restarts: uploaded files and the jobs that
attach them to vector stores (`<index>/uploads/registry.sqlite`, next to the uploads)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clara.paths import UPLOADS, hold_owner_lock, make_private_dirs, owner_running, sqlite_error
from indexing.durable import FULLFSYNC, empty_wal

if TYPE_CHECKING:
    from clara_cli.http import KeyScope

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, filename TEXT NOT NULL, bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL, purpose TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stores (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at INTEGER NOT NULL, metadata TEXT
);
CREATE TABLE IF NOT EXISTS links (
    store_id TEXT NOT NULL, file_id TEXT NOT NULL, created_at INTEGER NOT NULL,
    status TEXT NOT NULL, error_code TEXT, error_message TEXT, doc_id TEXT,
    usage_bytes INTEGER NOT NULL DEFAULT 0, attributes TEXT, chunk_tokens INTEGER,
    overlap INTEGER, PRIMARY KEY (store_id, file_id)
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, store_id TEXT NOT NULL, created_at INTEGER NOT NULL,
    file_ids TEXT NOT NULL, cancelled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS claims (
    store_id TEXT NOT NULL, file_id TEXT NOT NULL, owner TEXT NOT NULL,
    PRIMARY KEY (store_id, file_id)
);
CREATE TABLE IF NOT EXISTS made_by (
    kind TEXT NOT NULL, id TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (kind, id)
);
"""
# `claims` (0.2.9): the service indexing a link, so that a service starting beside another on
# the same index root (clara-serve's Files API and clara-index serve) resumes only the jobs of
# one that has stopped, not the other's running ones. An owner is a random name, alive while
# its process holds an exclusive lock on `owners/<name>.lock` (pids do not tell: in two
# containers both services are pid 1). Older versions ignore the table.
# `made_by` (0.2.14): the name of the API key that uploaded a file (kind "file") or made a
# vector store ("store"), with --api-key-file: a key limited to some collections sees those
# and what it made (`clara_cli.http.KeyScope`). Older versions ignore the table; what they
# made has no maker, and only keys without a limit see it.


@dataclass
class FileRecord:
    id: str
    filename: str
    bytes: int
    created_at: int
    purpose: str


@dataclass
class StoreRecord:
    id: str
    name: str
    created_at: int
    metadata: dict[str, str] | None = None


@dataclass
class Link:
    """A file attached to a vector store: the job's status, and the document it became."""

    store_id: str
    file_id: str
    created_at: int
    status: str  # in_progress | completed | failed | cancelled
    error_code: str | None = None
    error_message: str | None = None
    doc_id: str | None = None
    usage_bytes: int = 0
    attributes: dict[str, Any] | None = None
    chunk_tokens: int | None = None  # from a static chunking_strategy
    overlap: int | None = None


@dataclass
class Batch:
    """Files attached to a vector store by one request (OpenAI's file batch)."""

    id: str
    store_id: str
    created_at: int
    file_ids: list[str]
    cancelled: int = 0


_JSON = {"metadata", "attributes", "file_ids"}


def _row(cls, row: tuple) -> Any:
    values = [
        json.loads(v) if f.name in _JSON and v is not None else v for f, v in zip(fields(cls), row)
    ]
    return cls(*values)


@contextlib.contextmanager
def _read_only(directory: Path) -> Iterator[sqlite3.Connection | None]:
    """The registry in `directory` opened read-only, writing nothing (for clara-serve beside a
    `clara-index serve`, whose registry it may not write: a read-only copy, another user's
    folder); None when there is none. An OSError or sqlite3.Error when it cannot be read."""
    path = directory / "registry.sqlite"
    if not path.is_file():
        yield None
        return
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def read_links(directory: Path, store_id: str) -> list[Link]:
    """A store's links as the registry in `directory` records them, read read-only
    (`_read_only`: none without a registry)."""
    with _read_only(directory) as db:
        if db is None:
            return []
        rows = db.execute("SELECT * FROM links WHERE store_id=?", (store_id,)).fetchall()
    return [_row(Link, r) for r in rows]


def _made(db: sqlite3.Connection, kind: str, ident: str, key: str | None) -> None:
    """Record that the API key named `key` made the file or store `ident` (None: made without
    keys, or by `clara-index`: no maker)."""
    if key is None:
        db.execute("DELETE FROM made_by WHERE kind=? AND id=?", (kind, ident))
    else:
        db.execute("INSERT OR REPLACE INTO made_by VALUES (?, ?, ?)", (kind, ident, key))


def visible_to(root: Path, collections: list[str], scope: KeyScope | None) -> list[str]:
    """Those of `collections` (vector stores under the index `root`) an API key of `scope`
    (None: unlimited) may read: those its line of the key file names, and the stores it made
    (`made_by`, read read-only, once for all; a registry that cannot be read gives no maker:
    the key reads what its line names). The one lookup both servers make."""
    if scope is None:
        return list(collections)
    made = store_makers(root)
    return [c for c in collections if scope.sees(c, made.get(c))]


def store_names(root: Path) -> dict[str, str]:
    """Each vector store's name (id -> the name it was given), read read-only (`_read_only`:
    none without a registry, or one that cannot be read)."""
    try:
        with _read_only(root / UPLOADS) as db:
            return {} if db is None else dict(db.execute("SELECT id, name FROM stores"))
    except (OSError, sqlite3.Error) as exc:
        log.warning("the vector stores' names cannot be read (%s)", exc)
        return {}


def store_makers(root: Path) -> dict[str, str]:
    """Each vector store's maker (id -> the name of the API key that made it, where one did),
    read read-only: {} without a registry, or one that cannot be read."""
    try:
        with _read_only(root / UPLOADS) as db:
            if (
                db is None
                or not db.execute("SELECT 1 FROM sqlite_master WHERE name='made_by'").fetchone()
            ):  # (not in a registry an older clara made)
                return {}
            return dict(db.execute("SELECT id, key FROM made_by WHERE kind='store'"))
    except (OSError, sqlite3.Error) as exc:
        log.warning("the vector stores' makers cannot be read (%s): a key limited to some "
                    "collections reads only those its line names", exc)  # fmt: skip
        return {}


def key_sees(root: Path, collection: str, scope: KeyScope | None) -> bool:
    """Whether an API key of `scope` may read `collection` (`visible_to`)."""
    return (
        scope is None
        or collection in scope.collections
        or bool(visible_to(root, [collection], scope))
    )


def _values(obj: Any) -> list[Any]:
    return [
        json.dumps(v) if f.name in _JSON and v is not None else v
        for f, v in ((f, getattr(obj, f.name)) for f in fields(obj))
    ]


class Registry:
    """Thread-safe (one lock) access to the registry; every call is one short statement."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        make_private_dirs(directory)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(
            directory / "registry.sqlite", isolation_level=None, check_same_thread=False
        )
        try:
            self.db.execute("PRAGMA secure_delete=ON")  # a deleted upload's name zeroed
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            if FULLFSYNC is not None:  # (macOS: to the disk, not its cache)
                self.db.execute("PRAGMA fullfsync=ON")
            self.db.executescript(SCHEMA)
        except sqlite3.OperationalError as exc:  # a full disk: one line, not a traceback
            self.db.close()
            raise sqlite_error(exc, directory) from exc
        self.owner = secrets.token_hex(8)  # this service's name in `claims`
        self._owner_lock: int | None = None  # taken by its first claim

    def close(self) -> None:
        with self._lock:
            self.db.close()
            if self._owner_lock is not None:  # its claims are a stopped service's now
                with contextlib.suppress(OSError):
                    os.unlink(self._owner_path(self.owner))
                os.close(self._owner_lock)  # (closing lets the lock go)
                self._owner_lock = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back if anything in it fails (lock held): a
        failed statement left the shared connection in its transaction, and every later
        BEGIN failed."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")  # (one that fails, on a full disk, rolls back too)
            except BaseException:
                if self.db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                raise

    def _all(self, sql: str, *args: Any) -> list[tuple]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    def _run(self, sql: str, *args: Any) -> None:
        with self._lock:
            self.db.execute(sql, args)

    # -- files -----------------------------------------------------------------------------
    def add_file(self, rec: FileRecord, maker: str | None = None) -> None:
        """Record an upload, and the API key that made it (`made_by`), in one transaction."""
        with self._transaction() as db:
            db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?)", _values(rec))
            _made(db, "file", rec.id, maker)

    def file(self, file_id: str) -> FileRecord | None:
        rows = self._all("SELECT * FROM files WHERE id=?", file_id)
        return _row(FileRecord, rows[0]) if rows else None

    def files(self) -> list[FileRecord]:
        return [_row(FileRecord, r) for r in self._all("SELECT * FROM files")]

    def delete_file(self, file_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM files WHERE id=?", (file_id,))
            db.execute("DELETE FROM made_by WHERE kind='file' AND id=?", (file_id,))
        self._empty_wal()

    # -- makers (the API key that made a file or a store: `made_by`) -----------------------
    def maker(self, kind: str, ident: str) -> str | None:
        rows = self._all("SELECT key FROM made_by WHERE kind=? AND id=?", kind, ident)
        return rows[0][0] if rows else None

    def makers(self, kind: str) -> dict[str, str]:
        """id -> the name of the key that made it, for each file or store with one."""
        return dict(self._all("SELECT id, key FROM made_by WHERE kind=?", kind))

    def _empty_wal(self) -> None:
        """Empty the WAL after a deletion (it held the deleted upload's name and attributes
        until the service stopped: a privacy audit), not waiting long for readers."""
        with self._lock, contextlib.suppress(sqlite3.OperationalError):
            empty_wal(self.db, wait_ms=200)

    # -- vector stores ---------------------------------------------------------------------
    def add_store(self, rec: StoreRecord, maker: str | None = None, made: bool = False) -> None:
        """Record a store (new, or its name and metadata changed); a new one (`made`) with
        the API key that made it (`made_by`), in one transaction."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO stores VALUES (?, ?, ?, ?)", _values(rec))
            if made:
                _made(db, "store", rec.id, maker)

    def store(self, store_id: str) -> StoreRecord | None:
        rows = self._all("SELECT * FROM stores WHERE id=?", store_id)
        return _row(StoreRecord, rows[0]) if rows else None

    def stores_named(self, name: str) -> list[StoreRecord]:
        rows = self._all("SELECT * FROM stores WHERE name=? ORDER BY created_at", name)
        return [_row(StoreRecord, row) for row in rows]

    def delete_store(self, store_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM links WHERE store_id=?", (store_id,))
            db.execute("DELETE FROM claims WHERE store_id=?", (store_id,))
            db.execute("DELETE FROM batches WHERE store_id=?", (store_id,))
            db.execute("DELETE FROM stores WHERE id=?", (store_id,))
            db.execute("DELETE FROM made_by WHERE kind='store' AND id=?", (store_id,))
        self._empty_wal()

    # -- links (vector store files) --------------------------------------------------------
    def put_link(self, link: Link) -> None:
        marks = ", ".join("?" * len(fields(Link)))
        self._run(f"INSERT OR REPLACE INTO links VALUES ({marks})", *_values(link))

    def link(self, store_id: str, file_id: str) -> Link | None:
        rows = self._all("SELECT * FROM links WHERE store_id=? AND file_id=?", store_id, file_id)
        return _row(Link, rows[0]) if rows else None

    def links(self, *, store_id: str | None = None, file_id: str | None = None) -> list[Link]:
        where = [(k, v) for k, v in (("store_id", store_id), ("file_id", file_id)) if v]
        sql = "SELECT * FROM links" + (
            " WHERE " + " AND ".join(f"{k}=?" for k, _ in where) if where else ""
        )
        return [_row(Link, r) for r in self._all(sql, *(v for _, v in where))]

    def count_links(self, status: str) -> int:
        return int(self._all("SELECT COUNT(*) FROM links WHERE status=?", status)[0][0])

    def update_link(self, store_id: str, file_id: str, **values: Any) -> None:
        sets = ", ".join(f"{k}=?" for k in values)
        stored = [json.dumps(v) if k in _JSON and v is not None else v for k, v in values.items()]
        self._run(
            f"UPDATE links SET {sets} WHERE store_id=? AND file_id=?", *stored, store_id, file_id
        )

    def delete_link(self, store_id: str, file_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM links WHERE store_id=? AND file_id=?", (store_id, file_id))
            db.execute("DELETE FROM claims WHERE store_id=? AND file_id=?", (store_id, file_id))
        self._empty_wal()

    # -- claims (which service is indexing a link) -----------------------------------------
    def claim(self, store_id: str, file_id: str, *, unless_running: bool = False) -> bool:
        """Record that this service indexes the link; with `unless_running`, only if no
        running service does (then False, and that one goes on with it)."""
        self._hold_owner_lock()
        with self._transaction() as db:
            if unless_running:
                rows = db.execute(
                    "SELECT owner FROM claims WHERE store_id=? AND file_id=?", (store_id, file_id)
                ).fetchall()
                if rows and rows[0][0] != self.owner and self._running(rows[0][0]):
                    return False
            db.execute(
                "INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (store_id, file_id, self.owner)
            )
        return True

    def stopped_claims(self) -> list[tuple[str, str]]:
        """(store, file) of the jobs claimed by another service that has stopped (a replica
        stopped by a rolling upgrade mid-job): this one may take them (`claim`)."""
        rows = self._all(
            "SELECT c.store_id, c.file_id, c.owner FROM claims c JOIN links l ON "
            "l.store_id = c.store_id AND l.file_id = c.file_id WHERE l.status = 'in_progress' "
            "AND c.owner != ?", self.owner,
        )  # fmt: skip
        running: dict[str, bool] = {}
        for _, _, owner in rows:
            if owner not in running:
                running[owner] = self._running(owner)
        return [(store, file) for store, file, owner in rows if not running[owner]]

    def release(self, store_id: str, file_id: str) -> None:
        """The link's job ended (completed, failed or cancelled) in this service (another
        running service's claim stays)."""
        self._run("DELETE FROM claims WHERE store_id=? AND file_id=? AND owner=?",
                  store_id, file_id, self.owner)  # fmt: skip

    def _owner_path(self, owner: str) -> Path:
        return self.directory / "owners" / f"{owner}.lock"

    def _hold_owner_lock(self) -> None:
        """Hold `owners/<self.owner>.lock` for as long as this registry is open."""
        with self._lock:
            if self._owner_lock is None:
                self._owner_lock = self._take_owner_lock()

    def _take_owner_lock(self) -> int:
        return hold_owner_lock(self._owner_path(self.owner))

    def _running(self, owner: str) -> bool:
        """Whether the service named `owner` still runs (holds its lock)."""
        return owner_running(self._owner_path(owner))

    # -- file batches ----------------------------------------------------------------------
    def add_batch(self, batch: Batch) -> None:
        self._run("INSERT INTO batches VALUES (?, ?, ?, ?, ?)", *_values(batch))

    def batch(self, store_id: str, batch_id: str) -> Batch | None:
        rows = self._all("SELECT * FROM batches WHERE id=? AND store_id=?", batch_id, store_id)
        return _row(Batch, rows[0]) if rows else None

    def cancel_batch(self, batch_id: str) -> None:
        self._run("UPDATE batches SET cancelled=1 WHERE id=?", batch_id)
