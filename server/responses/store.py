"""Stored responses (`store: true`, the default): what `previous_response_id`, `GET` and
`DELETE /v1/responses/{id}` read, kept in one SQLite file (`$CLARA_HOME/responses.sqlite`
unless `--responses-db` says otherwise) so a chain survives a restart.

Each row holds the response object as returned and the input items of its turn (the messages
the request added, instructions excluded, as OpenAI does); a chain is rebuilt by following
`previous_response_id` back. A streamed response is stored as it starts (its id is announced
then), with the writing process in `running`: if that process dies before the response ends,
reading it says "failed" (INTERRUPTED) instead of "in_progress" forever. A row of this
process's own pid that this process is not writing was a dead process's: in a container every
server is pid 1, so the pid alone said "still running" after a crash and a restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from clara.paths import hold_owner_lock, make_private_dirs, owner_running, pid_alive
from clara_cli.http import SCOPE, APIError, storage_error

log = logging.getLogger("clara.responses")

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, previous_id TEXT,
    input TEXT NOT NULL, response TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS running (id TEXT PRIMARY KEY, pid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS owners (id TEXT PRIMARY KEY, key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS writers (id TEXT PRIMARY KEY, writer TEXT NOT NULL);
"""
# `writers` (0.2.17): the name of the process writing a response still in progress, alive
# while it holds `<db>.writers/<name>.lock` (`clara.paths.hold_owner_lock`): replicas sharing
# the file in their own containers (each pid 1, or the other's pid not there) read each
# other's running responses as failed, and wrote it. `running` keeps the pid for an older
# clara, which reads that alone.
# `owners` (0.2.13): the name of the API key that made a response (--api-key-file), the only
# key that reads, continues and deletes it; a response without a row (made without keys, or by
# an older clara) is every key's. A table of its own, so an older clara still writes this file.
#: The response each input and output item is in, for `item_reference` inputs (0.2.10);
#: responses stored without theirs (before the table, or by an older clara meanwhile) are
#: indexed at the next open (`_index_items`).
ITEMS = """
CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, response TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS items_by_response ON items (response);
"""
#: What a stored response still "in_progress" becomes once the process writing it is gone.
INTERRUPTED = {
    "code": "server_error",
    "message": "the server stopped before this response finished; send the request again",
}


class Chain(NamedTuple):
    """A conversation's stored turns, oldest first: (input items, response) each; `gap` is
    the id of a deleted ancestor where it stops (the turns before it are gone)."""

    turns: list[tuple[list[dict], dict]]
    gap: str | None = None


#: What `_readable` decides on: a stored response's input and response, its owner (the API
#: key that made it, or NULL) and when it was made
_READ = (
    "r.input, r.response, o.key, r.created_at FROM responses r LEFT JOIN owners o ON o.id = r.id"
)
#: seconds between two looks for responses past --keep-responses (also at the first use)
EXPIRE_EVERY_S = 3600
MAX_CHAIN = 1000  # a chain longer than this is cut (its oldest turns would not fit anyway)
#: Responses this process is writing now (every store of it: their rows carry its pid)
_WRITING: set[str] = set()
#: Of those, the ones deleted meanwhile: the stream's later writes must not bring them back
_DELETED: set[str] = set()


class ResponseStore:
    """Thread-safe; every write is committed before the call returns. The file is made on
    first use (a server that stores nothing leaves none)."""

    def __init__(self, path: Path, keep_days: float = 0) -> None:
        """`keep_days` (--keep-responses): responses older than that are deleted, at the
        first use and then at most hourly as responses are stored; 0 keeps them until
        deleted."""
        self.path = path
        self.keep_days = keep_days
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._expired_at = -float("inf")  # (monotonic) when `_expire` last ran
        self.writer = secrets.token_hex(8)  # this process's name in `writers`
        self._writer_lock: int | None = None  # held from its first running response on

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection (call with the lock held)."""
        if self._conn is None:
            db = None
            try:  # a full disk, a read-only folder, a damaged file: a storage_error, for a
                # read too (it was a 500 and a traceback)
                make_private_dirs(self.path.parent)
                with contextlib.suppress(FileExistsError):  # for this user only: it holds
                    # conversations (SQLite gives its -wal and -shm files the same mode)
                    os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA secure_delete=ON")  # a deleted response's text zeroed
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                _index_items(db)
            except (OSError, sqlite3.DatabaseError) as exc:
                if db is not None:
                    db.close()
                raise self._storage_error(exc, "open the stored responses") from None
            self._conn = db
            self._expire()
        return self._conn

    def _expire(self) -> None:
        """Delete the responses older than `keep_days` (lock held, connection open), with
        their items, owners and running marks; the WAL emptied after, as `delete` does."""
        if self.keep_days <= 0 or time.monotonic() - self._expired_at < EXPIRE_EVERY_S:
            return
        self._expired_at = time.monotonic()
        before = int(time.time() - self.keep_days * 86400)
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                old = "SELECT id FROM responses WHERE created_at < ?"
                for table, column in (
                    ("items", "response"),
                    ("owners", "id"),
                    ("running", "id"),
                    ("writers", "id"),
                ):
                    db.execute(f"DELETE FROM {table} WHERE {column} IN ({old})", (before,))
                n = db.execute("DELETE FROM responses WHERE created_at < ?", (before,)).rowcount
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            if n:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                log.info("%d stored response%s older than %g days deleted (--keep-responses)",
                         n, "s" * (n != 1), self.keep_days)  # fmt: skip
        except sqlite3.DatabaseError as exc:  # (a full disk: the next store says so)
            log.warning("could not delete the expired stored responses: %s", exc)

    def _reading(self) -> sqlite3.Connection | None:
        """The connection for a read (lock held): None while there is no file (a server that
        stores nothing leaves none: a GET of an unknown id made it)."""
        if self._conn is None and not self.path.exists():
            return None
        return self._db

    def put(
        self, response: dict[str, Any], input_items: list[dict[str, Any]], key: str | None = None
    ) -> None:
        """Store (or update) a response and the input items of its turn, made with the API
        key named `key` (None: no key), the one that may read it from then on."""
        row = (
            response["id"],
            response["created_at"],
            response.get("previous_response_id"),
            json.dumps(input_items, ensure_ascii=False),
            json.dumps(response, ensure_ascii=False),
        )
        running = response.get("status") == "in_progress"  # a stream's, as it starts
        items = [(item["id"], response["id"]) for item in items_of(input_items, response)]
        with self._lock:
            if response["id"] in _DELETED:  # deleted while it streamed: not written again
                if not running:
                    _DELETED.discard(response["id"])
                    _WRITING.discard(response["id"])
                return
            try:
                db = self._db
                self._expire()
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:  # (on a full disk: "I/O error")
                raise self._storage_error(exc) from None
            try:
                db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", row)
                # (an item id is its latest response's, unless that is another key's: a client
                # sending another key's item id took it over, whose `item_reference` was a 404)
                for item_id, response_id in items:
                    held = db.execute(
                        "SELECT o.key FROM items i JOIN owners o ON o.id = i.response "
                        "WHERE i.id = ?", (item_id,),
                    ).fetchone()  # fmt: skip
                    if held is None or held[0] == key:
                        db.execute(
                            "INSERT OR REPLACE INTO items VALUES (?, ?)", (item_id, response_id)
                        )
                if key is not None:
                    db.execute("INSERT OR REPLACE INTO owners VALUES (?, ?)", (response["id"], key))
                if running:
                    if self._writer_lock is None:
                        self._writer_lock = hold_owner_lock(self._writer_path(self.writer))
                    db.execute("INSERT OR REPLACE INTO running VALUES (?, ?)",
                               (response["id"], os.getpid()))  # fmt: skip
                    db.execute("INSERT OR REPLACE INTO writers VALUES (?, ?)",
                               (response["id"], self.writer))  # fmt: skip
                else:
                    db.execute("DELETE FROM running WHERE id = ?", (response["id"],))
                    db.execute("DELETE FROM writers WHERE id = ?", (response["id"],))
                db.execute("COMMIT")
                (_WRITING.add if running else _WRITING.discard)(response["id"])
            except BaseException as exc:
                if db.in_transaction:  # (SQLite ends it itself on a full disk)
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise self._storage_error(exc) from None
                raise

    def _storage_error(self, exc: Exception, what: str = "store the response") -> APIError:
        """What the disk refused, as the 507/500 `storage_error` uploads give (it was a 500
        "internal" with a traceback; a stream was cut without a word)."""
        return storage_error(
            exc, self.path, what, also=", or send store: false without previous_response_id"
        )

    def get(self, response_id: str, key: str | None = None) -> dict[str, Any] | None:
        """The response, if stored and `key`'s (the API key name asking; see `owners`)."""
        row = self._row(response_id, key)
        if row is None:
            return None
        response = json.loads(row[1])
        if response.get("status") == "in_progress" and self._orphaned(response_id):
            response.update(status="failed", error=INTERRUPTED)  # its server died mid-answer
            self.put(response, json.loads(row[0]), row[2])  # (its owner, not the reader)
        return response

    def _writer_path(self, writer: str) -> Path:
        return self.path.with_name(f"{self.path.name}.writers") / f"{writer}.lock"

    def _orphaned(self, response_id: str) -> bool:
        with self._lock:
            writer = self._read("SELECT writer FROM writers WHERE id = ?", response_id)
            found = self._read("SELECT pid FROM running WHERE id = ?", response_id)
        if writer is not None:  # (its lock: any container's, on this file system)
            if writer[0] == self.writer:
                return response_id not in _WRITING
            return not owner_running(self._writer_path(writer[0]))
        if found is None:
            return True
        if found[0] == os.getpid():  # (this process's, or a dead one's under the same pid)
            return response_id not in _WRITING
        return not pid_alive(found[0])

    def _row(self, response_id: str, key: str | None) -> tuple[str, str, str | None] | None:
        """(input, response, owner) of a stored response `key` may read (another key's:
        None)."""
        with self._lock:
            found = self._read(f"SELECT {_READ} WHERE r.id = ?", response_id)
        return self._readable(found, key)

    def _readable(self, found: tuple | None, key: str | None) -> tuple | None:
        """(input, response, owner) of a row of `_READ`, if `key` may read it: its own or every
        key's (`owners`), and not older than --keep-responses (gone to its readers at once;
        its row goes at the next `_expire`)."""
        if found is None or not _visible_to(found[2], key):
            return None
        if self.keep_days > 0 and found[3] < time.time() - self.keep_days * 86400:
            return None
        return found[:3]

    def _read(self, sql: str, *args: Any) -> tuple | None:
        """One row (lock held); a database the disk cannot give is a `storage_error`."""
        db = self._reading()
        if db is None:
            return None
        try:
            return db.execute(sql, args).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._storage_error(exc, "read the stored responses") from None

    def delete(self, response_id: str, key: str | None = None) -> bool:
        """Delete a response `key` may read; False if there is none."""
        with self._lock:
            db = self._reading()
            if db is None:
                return False
            self._expire()
            try:
                found = db.execute(f"SELECT {_READ} WHERE r.id = ?", (response_id,)).fetchone()
                if found is not None and not _visible_to(found[2], key):
                    return False  # (another key's: not there for this one)
                # (past --keep-responses: none, as GET says; its row goes all the same)
                gone = found is not None and self._readable(found, key) is None
                cur = db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
                db.execute("DELETE FROM running WHERE id = ?", (response_id,))
                db.execute("DELETE FROM writers WHERE id = ?", (response_id,))
                db.execute("DELETE FROM items WHERE response = ?", (response_id,))
                db.execute("DELETE FROM owners WHERE id = ?", (response_id,))
                if cur.rowcount:  # (its text stayed in the WAL until a checkpoint: a crash
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # kept it for good)
            except sqlite3.DatabaseError as exc:
                raise self._storage_error(exc, "delete the stored response") from None
            if response_id in _WRITING and cur.rowcount:  # (its stream wrote it again at its
                _DELETED.add(response_id)  # end: a deleted conversation came back)
        return cur.rowcount > 0 and not gone

    def item(self, item_id: str, key: str | None = None) -> dict[str, Any] | None:
        """A stored response's input or output item by its id (an `item_reference`), of a
        response `key` may read."""
        with self._lock:
            db = self._reading()
            if (
                db is None
                or not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'items'").fetchone()
            ):
                return None
            found = self._read(
                f"SELECT {_READ} JOIN items i ON i.response = r.id WHERE i.id = ?", item_id
            )
        if self._readable(found, key) is None:
            return None
        items = items_of(json.loads(found[0]), json.loads(found[1]))
        return next((item for item in items if item.get("id") == item_id), None)

    def chain(self, response_id: str, key: str | None = None) -> Chain | None:
        """(input items, response) of `response_id` and its ancestors, oldest first; None if
        `response_id` is not stored (or not `key`'s). A deleted ancestor ends the chain there
        (`Chain.gap` names it)."""
        out = []
        current: str | None = response_id
        while current is not None and len(out) < MAX_CHAIN:
            row = self._row(current, key)
            if row is None:
                if not out:
                    return None
                return Chain(out[::-1], gap=current)
            items, response = json.loads(row[0]), json.loads(row[1])
            out.append((items, response))
            current = response.get("previous_response_id")
        return Chain(out[::-1])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._writer_lock is not None:  # its running responses are a stopped one's
                with contextlib.suppress(OSError):
                    os.unlink(self._writer_path(self.writer))
                os.close(self._writer_lock)
                self._writer_lock = None


def _visible_to(owner: str | None, key: str | None) -> bool:
    """Whether the API key named `key` may see a response its `owner` made: its own, or one
    made without keys (every key's), unless the key is limited to some collections (`SCOPE`):
    that one may quote any collection."""
    return owner == key or (owner is None and SCOPE.get() is None)


def items_of(input_items: list[dict[str, Any]], response: dict[str, Any]) -> list[dict]:
    """A stored response's input and output items that have ids."""
    out = [*input_items, *(response.get("output") or [])]
    return [item for item in out if isinstance(item.get("id"), str)]


def _index_items(db: sqlite3.Connection) -> None:
    """Index the items of the responses stored without theirs: all of them the first time (a
    store older than the `items` table), then those an older clara stored meanwhile (it
    writes no items: after going back and forward again, their `item_reference`s were 404s).
    Found by a look at each response's id, not its JSON. A store that may not be written (a
    read-only file, a full disk) is read as it is: its new item references are not found."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:  # (read-only: "attempt to write a readonly database")
        return
    try:
        for statement in ITEMS.split(";"):
            if statement.strip():
                db.execute(statement)
        todo = db.execute(
            "SELECT r.id, r.input, r.response FROM responses r WHERE NOT EXISTS "
            "(SELECT 1 FROM items i WHERE i.response = r.id)"
        ).fetchall()
        if len(todo) > 1000:  # (seconds for 100k: said, as the word index's rebuild is)
            log.info("indexing the items of %d stored responses (once)", len(todo))
        for rid, input_json, response_json in todo:
            items = items_of(json.loads(input_json), json.loads(response_json))
            db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?)",
                           [(item["id"], rid) for item in items])  # fmt: skip
        db.execute("COMMIT")
    except sqlite3.OperationalError:  # (a read-only file opened for WAL, a full disk)
        if db.in_transaction:
            db.execute("ROLLBACK")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
