"""The servers' read-only collections: each opened once, reopened when its folder changed."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clara.errors import CollectionNotFoundError
from indexing.layout import case_clash
from indexing.manifest import MANIFEST
from indexing.store import Collection

#: Seconds a replaced collection stays open for the searches that may still be reading it
RETIRE_S = 60.0
#: ... when more than MAX_OPEN are retired (hundreds of stores used within a minute): a
#: request holds its collection for one search or listing, far less than this
BUSY_RETIRE_S = 5.0
#: Collections kept open (three files each), the least recently used retired past it: a
#: server over thousands of vector stores stays under the process's open-files limit (1024
#: under many supervisors); a security audit counted 3 more per store created and listed.
#: (A listing looks at each through `peek`, which neither keeps it open nor retires another.)
MAX_OPEN = 128


class OpenCollections:
    """Read-only collections under `root`, opened on first use and kept open (the
    `MAX_OPEN` most recently used). One is reopened when its folder or manifest is another
    file than the one opened (deleted and made again, or swapped by `rebuild --recompress`).
    Opening checks `manifest` (the loaded model's) when one is given. Safe from any thread: a
    collection replaced, gone or least used is closed only `RETIRE_S` later (`BUSY_RETIRE_S`
    past MAX_OPEN of them), as a search in another thread may still be reading it."""

    def __init__(
        self, root: Path, manifest: dict[str, Any] | None = None, vectors: bool = True
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.vectors = vectors  # False: load a collection's vector index at its first search
        self._open: OrderedDict[str, tuple[Collection, tuple[int, int]]] = OrderedDict()
        self._retired: list[tuple[float, Collection]] = []  # (when, collection) to close
        self._lock = threading.Lock()

    def get(self, name: str) -> Collection | None:
        """The collection `name`, or None when there is none (a damaged one raises, and so
        does `name` in another case than an existing one: `CollectionNameCaseError`)."""
        directory = self.root / name
        try:
            folder = os.stat(directory).st_ino
        except OSError:
            folder = None
        try:
            ident = (folder, os.stat(directory / MANIFEST).st_ino)
        except OSError:
            ident = None  # no manifest: opening says whether it is damage or nothing yet
        with self._lock:
            self._close_retired()
            cached = self._open.get(name)
            if cached is not None and cached[1] == ident:
                self._open.move_to_end(name)  # (the most recently used last)
                return cached[0]
            if cached is not None:
                del self._open[name]
                self._retired.append((time.monotonic(), cached[0]))
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
            self._open[name] = (col, ident)
            while len(self._open) > MAX_OPEN:
                self._retired.append((time.monotonic(), self._open.popitem(last=False)[1][0]))
            self._close_retired()
            return col

    @contextmanager
    def peek(self, name: str) -> Iterator[Collection | None]:
        """The collection `name` for one look (a listing of every store): the open one when
        it is open, else one opened for the look and closed after it, so that a listing of
        thousands neither keeps them open nor retires those that searches use. None when
        there is none."""
        with self._lock:
            kept = name in self._open
        if kept:
            yield self.get(name)  # (reopened if it was replaced)
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
        """Forget `name` (it was deleted): closed `RETIRE_S` later."""
        with self._lock:
            cached = self._open.pop(name, None)
            if cached is not None:
                self._retired.append((time.monotonic(), cached[0]))

    def _close_retired(self) -> None:
        """Close what was retired `RETIRE_S` ago (caller holds the lock)."""
        now = time.monotonic()
        while self._retired and now - self._retired[0][0] >= (
            BUSY_RETIRE_S if len(self._retired) > MAX_OPEN else RETIRE_S
        ):
            self._retired.pop(0)[1].close()

    def close(self) -> None:
        """Close them all (the server is stopping: no search is running)."""
        with self._lock:
            cols = [c for c, _ in self._open.values()] + [c for _, c in self._retired]
            self._open, self._retired = OrderedDict(), []
        for col in cols:
            col.close()
