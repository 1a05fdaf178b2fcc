"""Damaged collections on disk: a memory file deleted or cut short, a meta.sqlite gone. Each is
reported as DamagedCollectionError naming the collection, by readers and writers alike, while
the files a writer at work legitimately swaps or grows are still read (retried) as before.

Random vectors with a tiny shape (tests.tiny.STORE_MANIFEST); no model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from clara.errors import DamagedCollectionError
from indexing.store import ChunkRecord, Collection
from tests.tiny import STORE_D, STORE_MANIFEST, STORE_N_MEM

ROW_BYTES = STORE_N_MEM * STORE_D * 2


def vectors(seed: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, STORE_N_MEM, STORE_D)).astype(np.float32)


def add(col: Collection, seed: int, n: int = 3) -> str:
    chunks = [ChunkRecord(f"d{seed} chunk {i}", n_tokens=5) for i in range(n)]
    return col.add_document(
        f"/docs/d{seed}.txt", f"d{seed}.txt", f"sha-{seed}", chunks, vectors(seed, n)
    )


def make(root: Path, name: str = "main", docs: int = 3) -> Path:
    """A closed collection of `docs` documents (3 chunks each); returns its folder."""
    with Collection.open(root, name, manifest=STORE_MANIFEST, create=True) as col:
        for seed in range(docs):
            add(col, seed)
    return root / name


@pytest.mark.parametrize("faiss_kept", [False, True])
@pytest.mark.parametrize("harm", ["deleted", "truncated"])
def test_a_lost_or_short_memory_file_is_damage_for_readers_and_writers(
    tmp_path: Path, harm: str, faiss_kept: bool
) -> None:
    """Before: "keeps changing; try again" (deleted) or a bare RuntimeError (truncated)."""
    folder = make(tmp_path)
    memory = folder / "memory-0.f16"
    if harm == "deleted":
        memory.unlink()
        what = "its memory file memory-0.f16 is missing"
    else:
        os.truncate(memory, ROW_BYTES + 5)  # 1 whole row of 9 committed
        what = "its memory file memory-0.f16 holds 1 of its 9 committed rows: cut short"
    if not faiss_kept:  # a reader must then read every row to build its index
        for p in folder.glob("faiss-*.index"):
            p.unlink()
    for opener in (
        lambda: Collection.open(tmp_path, "main", readonly=True),
        lambda: Collection.open(tmp_path, "main"),  # the writer
    ):
        with pytest.raises(DamagedCollectionError) as info:
            opener().close()
        message = str(info.value)
        assert f"collection 'main' in {tmp_path} is damaged ({what})" in message
        assert "restore its folder" in message
    size = memory.stat().st_size if memory.exists() else None
    assert size == (None if harm == "deleted" else ROW_BYTES + 5)  # nothing "repaired" away


def test_a_reader_open_before_the_damage_reports_it_on_its_next_read(tmp_path: Path) -> None:
    make(tmp_path)
    reader = Collection.open(tmp_path, "main", readonly=True)
    doc = reader.list_documents()[0]
    ids = [c.id for c in reader.document_chunks(doc.id)]
    assert reader.memories(ids).shape == (3, STORE_N_MEM, STORE_D)  # maps the file
    os.truncate(tmp_path / "main" / "memory-0.f16", ROW_BYTES)  # under the reader's map
    with pytest.raises(DamagedCollectionError, match="holds 1 of its 9 committed rows"):
        reader.memories(ids[-1:] if ids[-1] > 1 else ids)
    with pytest.raises(DamagedCollectionError, match="holds 1 of its 9"):
        reader.search(vectors(0)[0], k=3, rerank=3)  # MaxSim reads the rows too
    reader.close()


def test_a_database_broken_under_an_open_reader_is_damage_not_a_bare_sqlite_error(
    tmp_path: Path,
) -> None:
    """Before: sqlite3.DatabaseError ("database disk image is malformed"), which clara-serve
    answered as an anonymous 500 with a traceback per request."""
    folder = make(tmp_path)
    reader = Collection.open(tmp_path, "main", readonly=True)
    assert reader.search_lexical("chunk", 3)
    for name in ("meta.sqlite", "meta.sqlite-wal", "meta.sqlite-shm"):
        if (folder / name).exists():
            (folder / name).write_bytes(b"not a database " * 400)
    for read in (
        lambda: reader.search_lexical("chunk", 3),
        reader.list_documents,
        reader.stats,
    ):
        with pytest.raises(DamagedCollectionError) as info:
            read()
        assert f"collection 'main' in {tmp_path} is damaged (meta.sqlite: " in str(info.value)
    reader.close()


@pytest.mark.parametrize("read_before", [True, False])
@pytest.mark.parametrize("swap", ["deleted", "recompressed"])
def test_a_folder_deleted_or_swapped_under_an_open_reader_is_not_damage(
    tmp_path: Path, swap: str, read_before: bool
) -> None:
    """`clara-index delete` renames the folder away; `rebuild --recompress` renames a new
    one in its place. A reader open on the old folder keeps reading the old vectors (never
    the new folder's rows at the same row numbers) or is told to try again: not damage."""
    from clara.errors import CollectionError

    folder = make(tmp_path)
    reader = Collection.open(tmp_path, "main", readonly=True)
    doc = reader.list_documents()[0]
    ids = [c.id for c in reader.document_chunks(doc.id)]
    if read_before:
        want = reader.memories(ids)
    else:  # nothing mapped yet
        reader._view._drop_memory()
    os.rename(folder, tmp_path / ".main.deleted")
    if swap == "recompressed":
        other = make(tmp_path / ".recompress", docs=2)  # other vectors, fewer rows
        os.rename(other, folder)
    try:
        got = reader.memories(ids)
    except CollectionError as exc:
        assert not isinstance(exc, DamagedCollectionError), exc
        assert "was deleted or replaced while it was being read; try again" in str(exc)
        assert not read_before
    else:
        assert read_before and np.array_equal(got, want)
    reader.close()


def test_a_memory_file_swapped_by_a_commit_is_looked_for_again_not_damage(tmp_path: Path):
    """The genuine race: a reader's snapshot names memory-0.f16, then a compaction commits
    memory-<g>.f16 and deletes the old file before the reader opens it. The re-check sees a
    newer commit, so the reader looks again (and finds the new file); only a file missing for
    the state SQLite still holds is damage."""
    folder = make(tmp_path, docs=4)
    writer = Collection.open(tmp_path, "main")
    reader = Collection.open(tmp_path, "main", readonly=True)
    view = reader._view
    stale = view.snapshot()  # (state, ids, rows) before the compaction
    view.memory = view.index = None  # as a fresh reader would be
    docs = writer.list_documents()
    writer.remove_document(docs[0].id)
    writer.remove_document(docs[1].id)  # past COMPACT_DEAD_SHARE: a new memory file
    assert not (folder / stale[0].memory_file).exists()
    with pytest.raises(FileNotFoundError):
        view.sync(*stale)
    view._recheck(stale[0])  # a commit since: no error, the caller looks again
    assert view.refresh() and view.index.ntotal == 6
    assert reader.search(vectors(3)[0], k=2, rerank=2)[0][0].doc_name == "d3.txt"

    # rows a writer appended but has not committed yet: longer than committed is never damage
    state = writer._meta.state()
    with open(folder / state.memory_file, "ab") as f:
        f.write(b"\0" * (ROW_BYTES * 2 + 7))
    last = [c.id for c in reader.document_chunks(docs[3].id)]  # rows 3-5 since compaction
    np.testing.assert_allclose(reader.memories(last), vectors(3), atol=2e-3)
    writer.close()
    os.truncate(folder / state.memory_file, ROW_BYTES * 3)  # the same committed state: damage
    with pytest.raises(DamagedCollectionError, match=r"holds 3 of its 6 committed rows"):
        reader.memories(last)
    reader.close()


@pytest.mark.parametrize("gone", ["meta.sqlite", "manifest.json"])
def test_a_writer_never_starts_afresh_over_a_damaged_folder(tmp_path: Path, gone: str) -> None:
    """A writer (even one allowed to create) on a folder whose database or manifest is gone
    says it is damaged and creates nothing: an empty meta.sqlite (or a new collection) beside
    the old memory files would make it look empty and then overwrite them."""
    folder = make(tmp_path)
    (folder / gone).unlink()
    before = sorted(p.name for p in folder.iterdir())
    for kwargs in ({}, {"manifest": STORE_MANIFEST, "create": True}, {"readonly": True}):
        with pytest.raises(DamagedCollectionError, match=rf"is damaged \({gone} is missing\)"):
            Collection.open(tmp_path, "main", **kwargs)
    assert sorted(p.name for p in folder.iterdir()) == before
    with Collection.open(tmp_path, "other", manifest=STORE_MANIFEST, create=True) as col:
        add(col, 1)  # a new collection is still created
    assert (tmp_path / "other" / "meta.sqlite").exists()
