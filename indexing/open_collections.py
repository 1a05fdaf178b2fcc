"""The servers' read-only collections: each opened once, reopened when its folder changed."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from clara.errors import CollectionNotFoundError
from indexing.manifest import MANIFEST
from indexing.store import Collection


class OpenCollections:
    """Read-only collections under `root`, opened on first use and kept open. One is
    reopened when its folder or manifest is another file than the one opened (deleted and
    made again, or swapped by `rebuild --recompress`), and closed when it is gone. Opening
    checks `manifest` (the loaded model's) when one is given. Safe from any thread."""

    def __init__(self, root: Path, manifest: dict[str, Any] | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self._open: dict[str, tuple[Collection, tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Collection | None:
        """The collection `name`, or None when there is none (a damaged one raises)."""
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
            cached = self._open.get(name)
            if cached is not None and cached[1] == ident:
                return cached[0]
            if cached is not None:
                del self._open[name]
                cached[0].close()
            if folder is None:
                return None
            try:
                col = Collection.open(self.root, name, self.manifest, readonly=True)
            except CollectionNotFoundError:
                return None
            if ident is None:  # made between the look and the open: the next look reopens
                ident = (folder, -1)
            self._open[name] = (col, ident)
            return col

    def drop(self, name: str) -> None:
        """Close `name` if it is open (it was deleted)."""
        with self._lock:
            cached = self._open.pop(name, None)
        if cached is not None:
            cached[0].close()

    def close(self) -> None:
        with self._lock:
            cached, self._open = list(self._open.values()), {}
        for col, _ in cached:
            col.close()
