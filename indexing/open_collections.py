"""The servers' read-only collections: each opened once, reopened when its folder changed,
and closed only once no request holds it."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clara.errors import CollectionNotFoundError
from indexing.layout import case_clash, finish_swap
from indexing.manifest import MANIFEST
from indexing.store import Collection

#: Collections kept open, the least recently used let go past it: a server over thousands of
#: vector stores stays under the process's open-files limit (1024 under some supervisors).
#: Each holds five (its database, its log and shared-memory files, its memory file twice),
#: and clara-serve keeps two such sets (chats', and the vector-store routes'): 640 at most.
#: (A listing looks at each through `peek`, which neither keeps it open nor lets another go.)
MAX_OPEN = 64


class OpenCollections:
    """Read-only collections under `root`, opened on first use and kept open (the
    `MAX_OPEN` most recently used). One is reopened when its folder or manifest is another
    file than the one opened (deleted and made again, or swapped by `rebuild --recompress`).
    Opening checks `manifest` (the loaded model's) when one is given. Safe from any thread:
    a request holds a collection through `lease` (or `acquire` ... `release`), and one
    replaced, gone or least used is closed when the last request holding it lets go."""

    def __init__(
        self, root: Path, manifest: dict[str, Any] | None = None, vectors: bool = True
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.vectors = vectors  # False: load a collection's vector index at its first search
        self._open: OrderedDict[str, tuple[Collection, tuple[int, int]]] = OrderedDict()
        self._held: dict[int, int] = {}  # id(collection): requests holding it
        self._retired: dict[int, Collection] = {}  # no longer open for new requests
        self._lock = threading.Lock()

    @contextmanager
    def lease(self, name: str) -> Iterator[Collection | None]:
        """The collection `name` for the request's time, or None when there is none (a
        damaged one raises, and so does `name` in another case than an existing one:
        `CollectionNameCaseError`). It stays open until the block ends, whatever happens
        to it meanwhile."""
        col = self.acquire(name)
        try:
            yield col
        finally:
            self.release(col)

    def acquire(self, name: str) -> Collection | None:
        """`lease` for code that cannot hold a `with` block (an async request that opens
        it on a thread): each collection acquired must be `release`d."""
        directory = self.root / name
        if not directory.exists():
            finish_swap(self.root, name)  # (a recompress a crash interrupted in its swap)
        try:
            folder = os.stat(directory).st_ino
        except OSError:
            folder = None
        try:
            ident = (folder, os.stat(directory / MANIFEST).st_ino)
        except OSError:
            ident = None  # no manifest: opening says whether it is damage or nothing yet
        with self._lock:
            cached = self._open.get(name)
            if cached is not None and cached[1] == ident:
                self._open.move_to_end(name)  # (the most recently used last)
                return self._hold(cached[0])
        # opened without the lock, which other requests take from the event loop: opening is
        # file work (the folder listed, SQLite, an old index's word table built once)
        if folder is None and case_clash(self.root, name) is None:
            return None
        try:
            col = Collection.open(
                self.root, name, self.manifest, readonly=True, vectors=self.vectors
            )
        except CollectionNotFoundError:
            return None
        if ident is None:  # made between the look and the open: the next look reopens
            ident = (folder, -1)
        closing = []
        with self._lock:
            cached = self._open.pop(name, None)
            if cached is not None and cached[1] == ident:  # another request opened it too
                closing.append(col)
                col = cached[0]
            elif cached is not None:
                closing += self._retire(cached[0])
            self._open[name] = (col, ident)
            while len(self._open) > MAX_OPEN:
                closing += self._retire(self._open.popitem(last=False)[1][0])
            self._hold(col)
        for old in closing:
            old.close()
        return col

    def hold(self, col: Collection) -> None:
        """One more hold on a collection already held (for a thread the request hands it
        to, which may outlast the request): `release` it there."""
        with self._lock:
            self._hold(col)

    def release(self, col: Collection | None) -> None:
        """Let go of a collection `acquire` gave (None: nothing); closed if it was retired
        and this was the last request holding it."""
        if col is None:
            return
        with self._lock:
            holds = self._held.pop(id(col), 0)  # (0: `close` has closed them all since)
            if holds > 1:
                self._held[id(col)] = holds - 1
                return
            last = self._retired.pop(id(col), None)
        if last is not None:
            last.close()

    @contextmanager
    def peek(self, name: str) -> Iterator[Collection | None]:
        """The collection `name` for one look (a listing of every store): the open one when
        it is open, else one opened for the look and closed after it, so that a listing of
        thousands neither keeps them open nor lets go of those that searches use. None when
        there is none."""
        with self._lock:
            kept = name in self._open
        if kept:
            with self.lease(name) as col:  # (reopened if it was replaced)
                yield col
            return
        try:
            col = Collection.open(self.root, name, self.manifest, readonly=True, vectors=False)
        except CollectionNotFoundError:
            yield None
            return
        try:
            yield col
        finally:
            col.close()

    def drop(self, name: str) -> None:
        """Forget `name` (it was deleted): closed once no request holds it."""
        with self._lock:
            cached = self._open.pop(name, None)
            closing = [] if cached is None else self._retire(cached[0])
        for col in closing:
            col.close()

    def _hold(self, col: Collection) -> Collection:
        """One more request holds `col` (caller holds the lock)."""
        self._held[id(col)] = self._held.get(id(col), 0) + 1
        return col

    def _retire(self, col: Collection) -> list[Collection]:
        """`col` is open for no new request: to close now (returned, for the caller to close
        once it let go of the lock), or when the last request holding it lets go (caller
        holds the lock)."""
        if id(col) in self._held:
            self._retired[id(col)] = col
            return []
        return [col]

    def close(self) -> None:
        """Close them all: the server is stopping (a request still running past its grace
        then finds its collection closed, an error)."""
        with self._lock:
            cols = [c for c, _ in self._open.values()] + list(self._retired.values())
            self._open, self._retired, self._held = OrderedDict(), {}, {}
        for col in cols:
            col.close()
