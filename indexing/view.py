"""The in-memory side of a collection: the memory file's memmap and the FAISS index, kept equal
to one committed SQLite state.

FAISS is derived data. Chunk ids are never reused, so any saved index -- whatever generation it
was written at -- is brought up to date by diffing its ids against SQLite and reading the
missing rows from the memory file (`VectorIndex.sync`). That is how readers follow a writer
without ever writing, and how a writer recovers from a crash between commit and save.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clara.errors import ChunkNotFoundError, CollectionError
from clara.retrieval import flatten_normalize
from indexing.durable import remove_quietly
from indexing.layout import FAISS_FILE, damaged, faiss_file_name
from indexing.manifest import Manifest
from indexing.meta import Meta, State
from indexing.vectors import MemoryFile, ShortMemoryFileError, VectorIndex, resolve_kind

#: FAISS files up to this size are rewritten on every commit; bigger ones once this share of
#: their vectors changed (and on close), so adding one document to a 100k-chunk collection does
#: not rewrite gigabytes. Readers and a reopening writer catch up from SQLite either way.
SAVE_ALWAYS_BYTES = 16 << 20
SAVE_CHANGED_SHARE = 0.10
_RETRIES = 5


def check_memory_file(directory: Path, state: State, manifest: Manifest) -> None:
    """Raise DamagedCollectionError when the memory file of committed `state` is missing or
    holds fewer rows than it counts.

    Rows are appended and fsynced before the commit that counts them, and a memory file is
    deleted only after a commit names its successor, so while SQLite still holds `state` its
    file is never missing or short because a writer is at work: that is damage (a file deleted
    or cut short from outside, a bad copy), and no retry will mend it."""
    path = directory / state.memory_file
    row_bytes = manifest.n_mem * manifest.hidden_size * 2  # float16 rows
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        if state.n_rows:
            raise damaged(directory, f"its memory file {state.memory_file} is missing") from None
        return
    if size < state.n_rows * row_bytes:
        raise damaged(
            directory,
            f"its memory file {state.memory_file} holds {size // row_bytes} of its "
            f"{state.n_rows} committed rows: cut short",
        )


class IndexView:
    """Memmap + FAISS index reflecting `generation` of `meta` (not thread-safe: the owning
    Collection serialises calls)."""

    def __init__(self, directory: Path, manifest: Manifest, meta: Meta, writer: bool):
        self.directory = directory
        self.manifest = manifest
        self.meta = meta
        self.writer = writer
        self.memory: MemoryFile | None = None
        self.index: VectorIndex | None = None
        self.generation = -1  # the committed state index and memmap reflect
        self.saved_generation = -1  # the tag of the FAISS file equal to `index` (writer)
        self.unsaved = 0  # vectors added/removed since that file

    def snapshot(self) -> tuple[State, np.ndarray, np.ndarray]:
        """(state, chunk ids sorted, their rows), read in one transaction."""
        with self.meta.snapshot():
            return self.meta.state(), *self.meta.live()

    def memory_for(self, state: State) -> MemoryFile:
        if self.memory is None or self.memory.path.name != state.memory_file:
            self._drop_memory()
            memory = MemoryFile(
                self.directory / state.memory_file, self.manifest.n_mem, self.manifest.hidden_size
            )
            if state.n_rows:
                try:  # opened (FileNotFoundError: compacted away since our snapshot? _recheck),
                    memory.rows_on_disk()  # then checked: it belongs to the database we read
                    self._check_ours()
                except BaseException:
                    memory.close()
                    raise
            self.memory = memory
        return self.memory

    def _drop_memory(self) -> None:
        if self.memory is not None:
            self.memory.close()  # its handle: a compacted-away file's space is freed
        self.memory = None

    def _recheck(self, state: State) -> None:
        """After the memory file of `state` was missing or short: raise DamagedCollectionError
        when `state` is still the committed one (see `check_memory_file`); otherwise a commit came
        in between (a compaction swapped files) and the caller looks again. A folder whose
        database is no longer the one this view reads (the collection was deleted, or swapped
        for a rebuilt one, under it) is neither: "try again", and the next open sees it."""
        self._drop_memory()
        with self.meta.snapshot():
            now = self.meta.state()
        if (now.generation, now.memory_file) != (state.generation, state.memory_file):
            return
        self._check_ours()
        check_memory_file(self.directory, now, self.manifest)

    def _check_ours(self) -> None:
        """Files are opened by path: raise CollectionError ("try again") when the folder's
        database is no longer the one this view reads, so that another collection's files
        (a rebuilt one renamed into its place) are never read as ours."""
        if self.meta.replaced():
            raise CollectionError(
                f"collection '{self.directory.name}' was deleted or replaced while it was being "
                "read; try again"
            )

    def want(self, n: int, current: VectorIndex | None) -> str:
        return resolve_kind(self.manifest.index_type, n, current.kind if current else None)

    def _newest_saved(self) -> tuple[int, VectorIndex | None]:
        """(generation tag, index) of the newest readable FAISS file; (-1, None) if none."""
        files = sorted(
            (int(m.group(1)), p)
            for p in self.directory.iterdir()
            if (m := FAISS_FILE.match(p.name))
        )
        for generation, path in reversed(files):
            try:
                index = VectorIndex.load(path)
            except RuntimeError:  # deleted by the writer meanwhile, or damaged: try older
                continue
            self._check_ours()  # loaded, then checked: not a swapped-in folder's index
            if index.dim == self.manifest.dim:
                return generation, index
        return -1, None

    def sync(self, state: State, ids: np.ndarray, rows: np.ndarray, rebuild: bool = False) -> None:
        """Make the index hold exactly the chunks of `state`: diff the index we have (or the
        newest saved one) against `ids`, or with `rebuild` build anew from the memory file."""
        memory = self.memory_for(state)
        memory.require(state.n_rows)  # before FAISS: a saved index may need no row at all

        def fetch(pos: np.ndarray) -> np.ndarray:  # (k,) positions into ids -> (k, D)
            return flatten_normalize(memory.read(rows[pos]))

        previous = self.index
        index = None if rebuild else previous
        if index is not None and index.kind != self.want(len(ids), index):
            index = None
        if index is not None and not self.writer and index.needs_rebuild:
            index = None  # a reader's HNSW full of removed ids: take the writer's rebuilt file
        if index is None and not rebuild:
            tag, saved = self._newest_saved()
            if saved is not None and saved.kind == self.want(len(ids), saved):
                index, self.saved_generation, self.unsaved = saved, tag, 0
        if index is not None:
            self.unsaved += index.sync(ids, fetch)
            if index.needs_rebuild:  # (a reader: no newer file fixed it, so build its own)
                previous, index = index, None
        if index is None:
            index = VectorIndex.build(self.want(len(ids), previous), self.manifest.dim, ids, fetch)
            self.saved_generation, self.unsaved = -1, len(ids)
        self.index, self.generation = index, state.generation

    def refresh(self, rebuild: bool = False) -> bool:
        """Catch up with the latest commit (one cheap SELECT when there is none)."""
        if not rebuild and self.index is not None and self.meta.generation() == self.generation:
            return False
        for _ in range(_RETRIES):
            state, ids, rows = self.snapshot()
            try:
                self.sync(state, ids, rows, rebuild=rebuild)
                return True
            except (FileNotFoundError, ShortMemoryFileError):  # a compaction, or damage
                self._recheck(state)
        raise CollectionError(f"collection '{self.directory.name}' keeps changing; try again")

    def apply(self, generation: int, removed: np.ndarray, ids: np.ndarray, vecs) -> None:
        """Writer: move the index from the previous commit to `generation`, just committed."""
        if self.index is not None and self.generation == generation - 1:
            self.index.remove(removed)
            if len(ids):
                self.index.add(ids, vecs)
            self.unsaved += len(removed) + len(ids)
            self.generation = generation
        # else an earlier update failed half-way: refresh() diffs against SQLite
        self.refresh()
        if self.index.needs_rebuild or self.index.kind != self.want(self.index.ntotal, self.index):
            self.refresh(rebuild=True)

    def read(self, chunk_ids: list[int]) -> np.ndarray:
        """Stored memories of these chunks, (k, n_mem, d) float16, from one consistent state."""
        for _ in range(_RETRIES):
            with self.meta.snapshot():
                state = self.meta.state()
                where = self.meta.rows_of(chunk_ids)
            missing = [i for i in chunk_ids if i not in where]
            if missing:
                raise ChunkNotFoundError(f"no chunk(s) {missing[:5]} in '{self.directory.name}'")
            try:
                rows = np.array([where[i] for i in chunk_ids], dtype=np.int64)
                return self.memory_for(state).read(rows)
            except (FileNotFoundError, ShortMemoryFileError):  # a compaction, or damage
                self._recheck(state)
        raise CollectionError(f"collection '{self.directory.name}' keeps changing; try again")

    def maybe_save(self, force: bool = False) -> None:
        """Writer: save FAISS tagged with the current generation when it is worth it."""
        index = self.index
        if index is None or self.saved_generation == self.generation:
            return
        small = index.ntotal * index.dim * 4 <= SAVE_ALWAYS_BYTES
        if force or small or self.unsaved >= SAVE_CHANGED_SHARE * max(1, index.ntotal):
            index.save(self.directory / faiss_file_name(self.generation))
            self.saved_generation, self.unsaved = self.generation, 0
            self.drop_other_faiss_files()

    def drop_other_faiss_files(self) -> None:
        for p in self.directory.iterdir():
            m = FAISS_FILE.match(p.name)
            if m and int(m.group(1)) != self.saved_generation:
                remove_quietly(p)

    def close(self) -> None:
        self._drop_memory()
        self.index = None
