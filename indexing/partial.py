"""Memories of a long document compressed so far, kept so that an interrupted run resumes.

A document is committed only once all its chunks are compressed; for a book that is many
minutes of work. While a document of at least `MIN_CHUNKS` chunks is compressed, every
`EVERY` finished chunks are appended to `<collection>/partial/<sha256>.f16` (float16 rows,
exactly what the memory file will hold) and `<sha256>.json` records how many rows are valid
and the key they were made under: the model's manifest (fingerprint included) and the chunk
texts. The next run of the same file with the same model and chunking starts after them; any
other key starts afresh. Committing the document deletes both files; ones left by files that
were never indexed again are swept after `MAX_AGE_S`.

Crash tests: `CLARA_CRASH_AT=index:after-partial-<n>` kills the process right after the n-th
save of a run (see `indexing.durable`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexing.durable import crash_point, fsync_dir, remove_quietly, sync

PARTIAL_DIR = "partial"
MIN_CHUNKS = 32  # shorter documents redo their few chunks
EVERY = 16  # finished chunks between saves
MAX_AGE_S = 7 * 24 * 3600

_saves = 0  # saves in this process, for the crash hook


def partial_key(manifest: dict[str, Any], texts: Sequence[str]) -> str:
    """What the saved rows depend on: the model (manifest) and what the compressor reads."""
    h = hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode())
    for text in texts:
        h.update(b"\0" + text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def sweep(collection_dir: Path, max_age_s: float = MAX_AGE_S) -> None:
    """Delete partial files not written for `max_age_s` (files never indexed again)."""
    folder = collection_dir / PARTIAL_DIR
    if not folder.is_dir():
        return
    cutoff = time.time() - max_age_s
    for p in folder.iterdir():
        try:
            if p.stat().st_mtime < cutoff:
                remove_quietly(p)
        except OSError:
            pass


class PartialMemories:
    """The saved rows of one document (by content hash), valid under one key."""

    def __init__(
        self,
        collection_dir: Path,
        sha256: str,
        key: str,
        row_shape: tuple[int, int],
        path: str | None = None,
    ):
        self.folder = collection_dir / PARTIAL_DIR
        self.path = path  # the file's, recorded: its older versions' saves go at its commit
        self.rows_path = self.folder / f"{sha256}.f16"
        self.head_path = self.folder / f"{sha256}.json"
        self.key = key
        self.row_shape = row_shape
        self.row_bytes = int(np.prod(row_shape)) * 2
        self.saved = 0  # rows on disk (valid under self.key)

    def load(self) -> np.ndarray:
        """The rows an earlier run saved under this key, (k, n_mem, d) float16; k may be 0."""
        empty = np.zeros((0, *self.row_shape), np.float16)
        try:
            head = json.loads(self.head_path.read_text())
            n = int(head["rows"]) if head.get("key") == self.key else 0
            if n <= 0 or self.rows_path.stat().st_size < n * self.row_bytes:
                return empty
            rows = np.fromfile(self.rows_path, np.float16, count=n * int(np.prod(self.row_shape)))
        except (OSError, ValueError, KeyError, TypeError):
            return empty
        self.saved = n
        return rows.reshape(n, *self.row_shape)

    def append(self, rows: np.ndarray) -> None:
        """Save `rows` (float16), the document's next ones after those saved: rows first (and
        fsync), then the header that counts them."""
        global _saves
        self.folder.mkdir(exist_ok=True)
        mode = "r+b" if self.saved and self.rows_path.exists() else "w+b"
        with open(self.rows_path, mode) as f:
            f.seek(self.saved * self.row_bytes)
            f.truncate()  # rows past the header's count: an append a crash cut short
            f.write(np.ascontiguousarray(rows, np.float16).tobytes())
            f.flush()
            sync(f.fileno())
        self.saved += len(rows)
        tmp = self.head_path.with_name(f".{self.head_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": self.key, "rows": self.saved, "path": self.path}))
        os.replace(tmp, self.head_path)
        fsync_dir(self.folder)
        _saves += 1
        crash_point(f"index:after-partial-{_saves}")

    def discard(self) -> None:
        """Remove these saves, and those of the same file's other versions (a long file
        edited between interrupted runs: each version's saves stayed for `MAX_AGE_S`)."""
        remove_quietly(self.head_path)
        remove_quietly(self.rows_path)
        if self.path is not None:
            forget_path(self.folder.parent, self.path)


def forget_path(collection_dir: Path, path: str) -> None:
    """Remove the saves of every version of the file at `path`."""
    folder = collection_dir / PARTIAL_DIR
    if not folder.is_dir():
        return
    for head in folder.glob("*.json"):
        try:
            if json.loads(head.read_text()).get("path") != path:
                continue
        except (OSError, ValueError, AttributeError):
            continue
        remove_quietly(head)
        remove_quietly(head.with_suffix(".f16"))


def forget_gone(collection_dir: Path) -> int:
    """Remove the saves of files no longer there (an upload deleted, a file removed before
    its run went on); returns how many. Those of files still there stay, for their run."""
    folder = collection_dir / PARTIAL_DIR
    if not folder.is_dir():
        return 0
    n = 0
    for head in folder.glob("*.json"):
        try:
            path = json.loads(head.read_text()).get("path")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(path, str) and not os.path.lexists(path):
            remove_quietly(head)
            remove_quietly(head.with_suffix(".f16"))
            n += 1
    return n
