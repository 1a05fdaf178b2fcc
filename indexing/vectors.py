"""Memory vectors on disk (append-only float16 file) and the FAISS index over them.

Retrieval scores are cosine similarities of the FLATTENED memory vectors (n_mem*d dims), so the
index stores L2-normalised flat rows and searches by inner product. Index ids are the chunk ids
of `meta.sqlite` (flat and HNSW through `IndexIDMap2`; IVF stores ids itself, and an IDMap over
IVF breaks on removal). Ids are never reused, so the set of ids an index holds says exactly
which vectors it holds: that is what `sync` relies on.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import faiss
import numpy as np

from clara import _omp
from clara.errors import InvalidArgumentError
from indexing.durable import crash_point, fsync_dir, sync

_omp.settle_faiss(faiss)  # (macOS with torch installed: one OpenMP thread)

INDEX_TYPES = ("flat", "hnsw", "ivf", "auto")
#: "auto" switches from exact to IVF at this many vectors (back to flat below half of it).
#: At the default shape (9216 dims) a flat scan of 50k vectors reads 1.8 GB per query.
AUTO_THRESHOLD = 50_000
#: Below this many vectors IVF cannot be trained well; an "ivf" collection searches exactly.
IVF_MIN_VECTORS = 1_000
#: k-means on 50 points per list for 10 iterations: a 50k x 9216 switch trains in seconds.
IVF_TRAIN_PER_LIST = 50
IVF_KMEANS_ITERS = 10
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 256
#: HNSW cannot delete; removed ids are masked at search time until they pass this share.
HNSW_MAX_TOMBSTONES = 0.25
BATCH = 4096


def resolve_kind(index_type: str, n: int, current: str | None = None) -> str:
    """The concrete index kind ("flat" | "hnsw" | "ivf") for a requested type and size."""
    if index_type not in INDEX_TYPES:
        raise InvalidArgumentError(
            f"index_type must be one of {', '.join(INDEX_TYPES)}, not {index_type!r}"
        )
    if index_type == "auto":
        threshold = AUTO_THRESHOLD // 2 if current == "ivf" else AUTO_THRESHOLD  # hysteresis
        return "ivf" if n >= threshold else "flat"
    if index_type == "ivf" and n < IVF_MIN_VECTORS:
        return "flat"
    return index_type


def ivf_nlist(n: int) -> int:
    """~sqrt(n) lists, with at least 39 training points per list (FAISS's own minimum)."""
    return max(1, min(int(math.sqrt(n)), n // 39, 65536))


def ivf_nprobe(nlist: int) -> int:
    return min(nlist, max(16, nlist // 16))


class ShortMemoryFileError(RuntimeError):
    """The memory file holds fewer rows than were asked for."""


class MemoryFile:
    """Append-only file of float16 rows shaped (n_mem, d), read through `np.memmap`.

    Rows at or past the committed count (kept in SQLite) may be garbage from a crashed write;
    readers never look at them and the writer truncates them on open and before appending.
    """

    def __init__(self, path: Path, n_mem: int, d: int):
        self.path = path
        self.row_shape = (n_mem, d)
        self.row_bytes = n_mem * d * 2
        self._file: BinaryIO | None = None  # opened at the first read, kept until `close`
        self._mm: np.memmap | None = None

    def _opened(self) -> BinaryIO:
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - kept open: see rows_on_disk
        return self._file

    def rows_on_disk(self) -> int:
        """Whole rows the file holds now (FileNotFoundError when it was gone at the first
        look). Always the file this object opened first: one replaced at its path since (a
        collection folder deleted or swapped by `rebuild --recompress` under an open reader)
        is still read as it was, never another collection's rows at the same row numbers;
        one cut short in place is seen as short."""
        return os.fstat(self._opened().fileno()).st_size // self.row_bytes

    def require(self, n_rows: int) -> None:
        """Raise ShortMemoryFileError (FileNotFoundError) unless the file holds `n_rows` rows."""
        if n_rows and (n := self.rows_on_disk()) < n_rows:
            raise ShortMemoryFileError(f"{self.path} holds {n} rows, {n_rows} are committed")

    def _map(self, min_rows: int) -> np.memmap:
        # The size is looked at on every read: a map past the end of a file cut short since
        # would kill the process (SIGBUS) instead of raising.
        n = self.rows_on_disk()
        if n < min_rows:
            raise ShortMemoryFileError(f"{self.path} holds {n} rows, the index needs {min_rows}")
        if self._mm is None or not min_rows <= self._mm.shape[0] <= n:
            self._mm = None
            self._mm = np.memmap(self._opened(), np.float16, "r", shape=(n, *self.row_shape))
        return self._mm

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows (k,) -> (k, n_mem, d) float16 copy."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.zeros((0, *self.row_shape), np.float16)
        return np.asarray(self._map(int(rows.max()) + 1)[rows])

    def append(self, start_row: int, data: np.ndarray) -> None:
        """Write (n, n_mem, d) float16 rows at `start_row` (dropping anything after it), fsync."""
        buf = np.ascontiguousarray(data, dtype=np.float16).tobytes()
        with open(self.path, "r+b" if self.path.exists() else "w+b") as f:
            f.truncate(start_row * self.row_bytes)
            f.seek(start_row * self.row_bytes)
            half = len(buf) // 2
            f.write(buf[:half])
            f.flush()
            crash_point("add:mid-append")
            f.write(buf[half:])
            f.flush()
            sync(f.fileno())

    def copy_rows_from(self, source: MemoryFile, rows: np.ndarray) -> None:
        """Fill this (new) file with `source`'s rows, in order, then fsync (compaction)."""
        with open(self.path, "wb") as f:
            for start in range(0, len(rows), 1024):
                f.write(source.read(rows[start : start + 1024]).tobytes())
            f.flush()
            sync(f.fileno())

    def zero_rows(self, rows: np.ndarray) -> None:
        """Overwrite these rows with zeros, then fsync (the removed rows of a file about to be
        deleted: a reader that still has it open, a server until its next search, holds its
        blocks, which kept the removed documents' memories)."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if rows.size == 0:
            return
        runs = np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1)
        with open(self.path, "r+b") as f:
            for run in runs:
                f.seek(int(run[0]) * self.row_bytes)
                for start in range(0, len(run), 1024):
                    f.write(bytes(min(1024, len(run) - start) * self.row_bytes))
            f.flush()
            sync(f.fileno())

    def truncate(self, n_rows: int) -> None:
        """Drop bytes past the committed rows (writer only); creates the file when missing."""
        self._mm = None
        with open(self.path, "r+b" if self.path.exists() else "w+b") as f:
            if os.fstat(f.fileno()).st_size != n_rows * self.row_bytes:
                f.truncate(n_rows * self.row_bytes)
                sync(f.fileno())

    def close(self) -> None:
        """Drop the map and the handle (a deleted file's space is freed once none is open)."""
        self._mm = None
        if self._file is not None:
            self._file.close()
            self._file = None


class VectorIndex:
    """FAISS over normalised flat vectors keyed by chunk id, searched by inner product (cosine)."""

    def __init__(self, index: faiss.Index):
        self.index = index  # keep this object: it owns `inner`
        inner = faiss.downcast_index(getattr(index, "index", index))  # the index under IDMap2
        if isinstance(inner, faiss.IndexHNSWFlat):
            self.kind = "hnsw"
        elif isinstance(inner, faiss.IndexIVFFlat):
            self.kind = "ivf"
        elif isinstance(inner, faiss.IndexFlat):
            self.kind = "flat"
        else:
            raise ValueError(f"unsupported FAISS index {type(inner).__name__}")
        self.inner = inner
        self.dim = index.d
        self._tombstones = np.zeros(0, np.int64)  # hnsw only: ids still in the graph, not live
        self._selector = None

    @classmethod
    def empty(
        cls, kind: str, dim: int, train: np.ndarray | None = None, nlist: int | None = None
    ) -> VectorIndex:
        """A new index; IVF needs `train` vectors (and takes `nlist`, default ~sqrt(len))."""
        if kind == "flat":
            spec = "IDMap2,Flat"
        elif kind == "hnsw":
            spec = f"IDMap2,HNSW{HNSW_M},Flat"
        elif kind == "ivf":
            if train is None or len(train) == 0:
                raise ValueError("an IVF index needs training vectors")
            spec = f"IVF{nlist or ivf_nlist(len(train))},Flat"
        else:
            raise ValueError(f"unknown index kind {kind!r}")
        index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
        inner = faiss.downcast_index(getattr(index, "index", index))
        if kind == "hnsw":
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        if kind == "ivf":
            inner.cp.min_points_per_centroid = 1  # ivf_nlist already keeps >= 39 per list
            inner.cp.niter = IVF_KMEANS_ITERS
            index.train(train)
            inner.nprobe = ivf_nprobe(inner.nlist)
        return cls(index)

    @classmethod
    def build(
        cls, kind: str, dim: int, ids: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray]
    ) -> VectorIndex:
        """Build from scratch; `fetch(positions)` returns the normalised vectors of ids[positions]."""
        train, nlist = None, ivf_nlist(len(ids))
        if kind == "ivf":
            n_train = min(len(ids), IVF_TRAIN_PER_LIST * nlist)
            pick = np.sort(np.random.default_rng(0).choice(len(ids), n_train, replace=False))
            train = fetch(pick)
        vi = cls.empty(kind, dim, train, nlist)
        for start in range(0, len(ids), BATCH):
            pos = np.arange(start, min(start + BATCH, len(ids)))
            vi.index.add_with_ids(fetch(pos), ids[pos])
        return vi

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        return cls(faiss.read_index(str(path)))

    # -- contents ---------------------------------------------------------------------------
    def all_ids(self) -> np.ndarray:
        """Every id in the FAISS structure, masked ones included."""
        if self.kind != "ivf":
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        lists = self.inner.invlists
        parts = [np.zeros(0, np.int64)]
        for i in range(self.inner.nlist):
            if n := lists.list_size(i):
                parts.append(faiss.rev_swig_ptr(lists.get_ids(i), n).astype(np.int64))
        return np.sort(np.concatenate(parts))

    def ids(self) -> np.ndarray:
        """The ids a search can return, sorted."""
        return np.setdiff1d(self.all_ids(), self._tombstones)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self._tombstones)

    @property
    def tombstones(self) -> int:
        """Removed vectors still in the structure (HNSW's; the others remove at once)."""
        return len(self._tombstones)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return
        if self.kind == "hnsw":
            self._tombstones = np.union1d(self._tombstones, ids)
            self._selector = None
        else:
            self.index.remove_ids(faiss.IDSelectorBatch(ids))

    @property
    def needs_rebuild(self) -> bool:
        """True when the structure has drifted: too many HNSW tombstones, IVF lists too long."""
        total = int(self.index.ntotal)
        if self.kind == "hnsw":
            return total > 0 and self.tombstones > HNSW_MAX_TOMBSTONES * total
        if self.kind == "ivf":
            return ivf_nlist(total) >= 2 * self.inner.nlist
        return False

    def sync(self, ids: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray]) -> int:
        """Make the index hold exactly `ids` (sorted); `fetch(positions)` gives ids[positions]'s
        normalised vectors. Returns how many vectors were added or removed."""
        present = self.ids()
        gone = np.setdiff1d(present, ids, assume_unique=True)
        self.remove(gone)
        new_pos = np.flatnonzero(~np.isin(ids, present, assume_unique=True))
        for start in range(0, len(new_pos), BATCH):
            pos = new_pos[start : start + BATCH]
            self.add(ids[pos], fetch(pos))
        return len(gone) + len(new_pos)

    # -- search and persistence -------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """queries (Q, D) normalised -> scores (Q, k') and ids (Q, k'), -1 where fewer exist;
        with `allowed` (ids), among those only (an attribute filter's documents)."""
        k = max(1, min(k, self.ntotal))
        params = None
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, 2 * k))
            if len(self._tombstones):
                if self._selector is None:
                    batch = faiss.IDSelectorBatch(self._tombstones)
                    self._selector = (batch, faiss.IDSelectorNot(batch))  # keep batch alive
                params.sel = self._selector[1]
        keep = []  # (the selectors' objects, alive while FAISS reads them)
        if allowed is not None:
            only = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            keep.append(only)
            if self.kind == "ivf":  # (a selector filters what the probed lists hold: all)
                params = faiss.SearchParametersIVF(nprobe=self.inner.nlist)
            elif params is None:
                params = faiss.SearchParameters()
            if self.kind == "hnsw":  # (and what the graph walk meets: wider, as it is sparser)
                wider = k * max(1, int(self.index.ntotal) // max(1, len(allowed)))
                params.efSearch = int(min(max(params.efSearch, wider), self.index.ntotal))
            if params.sel is not None:
                only = faiss.IDSelectorAnd(only, params.sel)
                keep.append(only)
            params.sel = only
        scores, ids = self.index.search(queries, k, params=params)
        del keep
        return scores, ids

    def save(self, path: Path) -> None:
        """Write-to-temp, fsync, rename: a reader sees the old file or the new, never half."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            try:
                faiss.write_index(self.index, str(tmp))
            except RuntimeError as exc:  # FAISS's, for what is an OSError (a full disk)
                raise _as_os_error(exc, tmp) from None
            fd = os.open(tmp, os.O_RDONLY)
            try:
                sync(fd)
            finally:
                os.close(fd)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a partial file kept a full disk full
            raise
        crash_point("faiss:after-temp")
        os.replace(tmp, path)
        fsync_dir(path.parent)
        crash_point("faiss:after-replace")


def _as_os_error(exc: RuntimeError, path: Path) -> Exception:
    """FAISS reports a failed write as a RuntimeError quoting strerror: the OSError it is, so
    the CLIs and servers say "no space left on device" and what to do, not a traceback."""
    text = str(exc)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO):
        if os.strerror(code) in text:
            return OSError(code, os.strerror(code), str(path))
    return exc
