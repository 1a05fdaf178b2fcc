"""The on-disk index: add/search/remove/replace, durability under kill -9, readers, ANN recall.

Everything uses random vectors with a tiny shape (n_mem=4, d=8: 32 flat dims); no model.
Crash tests run a writer in a subprocess with CLARA_CRASH_AT=<step> (see indexing/durable.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clara.errors import (
    CollectionLockedError,
    CollectionNameCaseError,
    DamagedCollectionError,
    IndexMismatchError,
)
from indexing import meta, vectors, view
from indexing.store import (
    ChunkRecord,
    Collection,
    CollectionError,
    CollectionNotFoundError,
    DocumentNotFoundError,
    delete_collection,
    list_collections,
)
from tests.tiny import STORE_D, STORE_MANIFEST, STORE_N_MEM

N_MEM, D = STORE_N_MEM, STORE_D
REPO = Path(__file__).resolve().parents[1]
MANIFEST = STORE_MANIFEST


def doc_vectors(seed: int, n: int = 3) -> np.ndarray:
    """Deterministic memories for document `d<seed>`: (n, n_mem, d) float32."""
    return np.random.default_rng(seed).standard_normal((n, N_MEM, D)).astype(np.float32)


def cosine(q: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Hand-written reference: cosine of flattened vectors, (Q, N)."""
    qf, df = (
        q.reshape(len(q), -1).astype(np.float64),
        docs.reshape(len(docs), -1).astype(np.float64),
    )
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    df /= np.linalg.norm(df, axis=1, keepdims=True)
    return qf @ df.T


def add(col: Collection, seed: int, n: int = 3) -> str:
    chunks = [ChunkRecord(f"d{seed} chunk {i}", i + 1, i + 1, 20 + i) for i in range(n)]
    return col.add_document(
        f"/docs/d{seed}.txt", f"d{seed}", f"sha-{seed}", chunks, doc_vectors(seed, n)
    )


@pytest.fixture
def col(tmp_path: Path):
    c = Collection.open(tmp_path, "main", manifest=MANIFEST, create=True)
    yield c
    c.close()


def test_search_scores_are_cosine_of_flattened_vectors(col: Collection):
    for seed in range(6):
        add(col, seed)
    stored = np.concatenate([doc_vectors(s).astype(np.float16) for s in range(6)])  # (18, 4, 8)
    q = np.random.default_rng(99).standard_normal((2, N_MEM, D)).astype(np.float32)
    hits = col.search(q, k=5)  # the flattened cosine (no rerank: the paper's)
    expected = cosine(q, stored)
    for qi in range(2):
        order = np.argsort(-expected[qi])[:5]
        assert [h.chunk_id for h in hits[qi]] == [int(i) + 1 for i in order]  # ids start at 1
        np.testing.assert_allclose([h.score for h in hits[qi]], expected[qi, order], atol=1e-5)
    # with a rerank depth FAISS's nearest are re-scored by MaxSim (here all 18: fewer)
    from clara.retrieval import maxsim_numpy

    hits = col.search(q, k=5, rerank=100)
    late = maxsim_numpy(q, stored.astype(np.float32))
    for qi in range(2):
        order = np.argsort(-late[qi])[:5]
        assert [h.chunk_id for h in hits[qi]] == [int(i) + 1 for i in order]
        np.testing.assert_allclose([h.score for h in hits[qi]], late[qi, order], atol=1e-5)
    # a shallower re-score ranks only FAISS's 8 nearest, by MaxSim
    near = np.argsort(-expected[0])[:8]
    want = near[np.argsort(-late[0, near], kind="stable")][:5]
    assert [h.chunk_id for h in col.search(q, k=5, rerank=8)[0]] == [int(i) + 1 for i in want]
    # a (n_mem, d) query is one query; a stored chunk finds itself with cosine 1
    top = col.search(doc_vectors(3)[1], k=1)[0][0]
    assert (top.doc_name, top.ordinal, top.page_start) == ("d3", 1, 2)
    assert top.score == pytest.approx(1.0, abs=1e-5)
    assert col.chunks([top.chunk_id])[0].text == "d3 chunk 1"
    with pytest.raises(ValueError, match="query must be"):
        col.search(np.zeros((2, D, N_MEM)))


def test_memories_round_trip_in_order(col: Collection):
    a, b = add(col, 1), add(col, 2)
    ids_b = [c.id for c in col.document_chunks(b)]
    ids_a = [c.id for c in col.document_chunks(a)]
    got = col.memories([ids_b[2], ids_a[0]])
    assert got.dtype == np.float32 and got.shape == (2, N_MEM, D)
    np.testing.assert_allclose(got[0], doc_vectors(2)[2], atol=2e-3)
    np.testing.assert_allclose(got[1], doc_vectors(1)[0], atol=2e-3)
    with pytest.raises(KeyError):
        col.memories([12345])


def test_add_rejects_bad_memories(col: Collection):
    chunks = [ChunkRecord("x")]
    with pytest.raises(ValueError, match="shape"):
        col.add_document(None, "x", "s", chunks, np.zeros((2, N_MEM, D)))
    with pytest.raises(ValueError, match="NaN"):
        col.add_document(None, "x", "s", chunks, np.full((1, N_MEM, D), np.nan))
    assert col.stats()["generation"] == 0
    empty = col.add_document(None, "blank.pdf", "s0", [], np.zeros((0, N_MEM, D)))  # no text
    assert col.document(empty).n_chunks == 0 and col.search(doc_vectors(1)[0]) == [[]]


def test_many_documents_go_in_one_commit(col: Collection, monkeypatch):
    """`remove` of a folder and `add --prune` removed documents one commit each: the flat
    index compacted its whole array per document (23 s for 1000 of 10k, a scale audit)."""
    from indexing import vectors

    ids = [add(col, s, n=2) for s in range(6)]
    calls = []
    remove_ids = vectors.VectorIndex.remove
    monkeypatch.setattr(vectors.VectorIndex, "remove", lambda self, x: calls.append(len(x)) or remove_ids(self, x))  # fmt: skip
    assert col.remove_documents([ids[0], ids[1], ids[1], "doc-missing", ids[4]]) == [ids[0], ids[1], ids[4]]  # fmt: skip
    assert calls == [6]  # one index update for the six chunks (then a compaction: half dead)
    assert {d.id for d in col.list_documents()} == {ids[2], ids[3], ids[5]}
    assert col.remove_documents(["doc-missing"]) == []


def test_removed_documents_are_never_returned_and_disk_shrinks(col: Collection):
    ids = [add(col, s, n=4) for s in range(4)]
    before = col.stats()
    col.remove_document(ids[0])
    col.remove_document(ids[1])  # 8 of 16 rows dead > 25%: compacts
    after = col.stats()
    assert (after["documents"], after["chunks"], after["dead_rows"]) == (2, 8, 0)
    mem = lambda s: sum(v for k, v in s["files"].items() if k.startswith("memory-"))  # noqa: E731
    assert mem(after) == mem(before) // 2 == 8 * N_MEM * D * 2
    faiss_bytes = lambda s: sum(v for k, v in s["files"].items() if k.startswith("faiss-"))  # noqa: E731
    assert faiss_bytes(after) < faiss_bytes(before)
    for seed in (0, 1):
        hits = col.search(doc_vectors(seed, 4), k=16)
        assert all(h.doc_id not in ids[:2] for row in hits for h in row)
        assert len(hits[0]) == 8
    assert col.document(ids[0]) is None and col.document_chunks(ids[0]) == []
    # the survivors' vectors moved to new rows and are still right
    for seed, doc in ((2, ids[2]), (3, ids[3])):
        chunk_ids = [c.id for c in col.document_chunks(doc)]
        np.testing.assert_allclose(col.memories(chunk_ids), doc_vectors(seed, 4), atol=2e-3)
    with pytest.raises(DocumentNotFoundError):
        col.remove_document(ids[0])


def test_small_removal_waits_for_compact(col: Collection):
    ids = [add(col, s) for s in range(10)]
    col.remove_document(ids[4])  # 3 of 30 rows dead: below the 25% threshold
    stats = col.stats()
    assert stats["dead_rows"] == 3
    q = doc_vectors(7)
    before = [[(h.chunk_id, round(h.score, 5)) for h in row] for row in col.search(q, k=4)]
    col.compact()
    stats2 = col.stats()
    assert stats2["dead_rows"] == 0 and stats2["generation"] == stats["generation"] + 1
    assert stats2["bytes_on_disk"] < stats["bytes_on_disk"]
    after = [[(h.chunk_id, round(h.score, 5)) for h in row] for row in col.search(q, k=4)]
    assert after == before


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_compact_erases_what_a_removed_document_left_on_disk(
    tmp_path: Path, index_type: str, monkeypatch
):
    """A privacy audit: after `remove`, answers never had the document again, but the disk
    did: FTS5 kept its words with their positions in its segments (also after a restart),
    its memory rows stayed (below a quarter of the rows dead), an HNSW index kept its
    vectors, and a save for an interrupted run of a file deleted since stayed a week."""
    import faiss

    from indexing import partial

    monkeypatch.setattr(view, "SAVE_ALWAYS_BYTES", 0)  # (as a big index: saved only past a
    # share of changes, so a small removal stayed in the saved file: a review)
    col = Collection.open(tmp_path, "main", manifest=MANIFEST, create=True, index_type=index_type)
    try:
        assert col._meta.db.execute("PRAGMA secure_delete").fetchone()[0] == 1
        keep = [add(col, s) for s in range(6)]
        secret = [ChunkRecord(f"Patient zorbolitis{i} employee purplewombat{i}") for i in range(3)]
        doc = col.add_document("/d/secret.md", "secret.md", "sha-secret", secret, doc_vectors(99))
        saves = tmp_path / "main" / partial.PARTIAL_DIR
        saves.mkdir()
        for name, path in (("gone", "/nowhere/secret-upload.md"), ("here", str(tmp_path))):
            (saves / f"{name}.json").write_text(json.dumps({"key": "k", "rows": 1, "path": path}))
            (saves / f"{name}.f16").write_bytes(b"\0" * 64)
        (memory,) = (tmp_path / "main").glob("memory-*.f16")
        held = os.open(memory, os.O_RDONLY)  # (as a server holds it until its next search)
        col.remove_document(doc)

        def files() -> bytes:
            return b"".join(p.read_bytes() for p in (tmp_path / "main").rglob("*") if p.is_file())

        dropped = col.compact()
        assert dropped["memory_rows"] == 3 and dropped["partial"] == 1
        still = os.pread(held, 1 << 20, 0)  # the deleted file's blocks: zeroed first
        os.close(held)
        assert doc_vectors(99)[0].astype(np.float16).tobytes() not in still
        assert (
            doc_vectors(5)[0].astype(np.float16).tobytes() in still
        )  # (kept rows are as they were)
        assert dropped["index_vectors"] == (3 if index_type == "hnsw" else 0)
        on_disk = files()
        assert b"purplewombat" not in on_disk and b"zorbolitis" not in on_disk
        assert sorted(p.stem for p in saves.iterdir()) == ["here", "here"]
        assert col.stats()["dead_rows"] == 0 and col.stats()["documents"] == len(keep)
        (saved,) = (tmp_path / "main").glob("faiss-*.index")
        assert faiss.read_index(str(saved)).ntotal == 18  # (only the live vectors)
        assert dropped["wal_emptied"]
        # a reader of an older state (a server mid-search) keeps the log from being emptied:
        # compact says so (a review: it said "database rewritten" with the text still there)
        monkeypatch.setattr(meta, "BUSY_TIMEOUT_MS", 100)
        reader = sqlite3.connect(tmp_path / "main" / "meta.sqlite", isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM chunks").fetchone()
        col.remove_document(keep[0])
        assert col.compact()["wal_emptied"] is False
        reader.execute("COMMIT")
        reader.close()
        assert col.compact()["wal_emptied"] is True
        hits = col.retrieve("d3 chunk", doc_vectors(3)[0], k=3)
        assert hits and hits[0].doc_id == keep[3]
        assert col.retrieve("purplewombat0", None, k=3, mode="lexical") == []
    finally:
        col.close()


def test_replace_and_find_for_incremental_indexing(col: Collection):
    old = add(col, 1)
    for seed in range(10, 14):
        add(col, seed)  # so that replacing d1 leaves too few dead rows to compact
    assert col.find_by_sha("sha-1").id == old
    assert col.find_by_path("/docs/d1.txt").id == old
    assert col.find_by_sha("nope") is None
    generation = col.stats()["generation"]
    chunks = [ChunkRecord("new text", 1, 1, 5)]
    new = col.replace_document(old, "/docs/d1.txt", "d1", "sha-1b", chunks, doc_vectors(50, 1))
    assert col.stats()["generation"] == generation + 1  # one commit
    assert [d.name for d in col.list_documents()] == ["d10", "d11", "d12", "d13", "d1"]
    assert col.find_by_path("/docs/d1.txt").sha256 == "sha-1b"
    assert col.search(doc_vectors(50)[0], k=1)[0][0].doc_id == new
    assert old not in {h.doc_id for h in col.search(doc_vectors(1), k=16)[0]}
    with pytest.raises(DocumentNotFoundError):
        col.replace_document(old, None, "x", "s", chunks, doc_vectors(51, 1))


def test_reopen_gives_same_results(tmp_path: Path):
    col = Collection.open(tmp_path, "main", manifest=MANIFEST, create=True)
    for s in range(5):
        add(col, s)
    col.remove_document(col.find_by_sha("sha-2").id)
    q = np.random.default_rng(5).standard_normal((3, N_MEM, D))
    before = col.search(q, k=6)
    col.close()
    again = Collection.open(tmp_path, "main", manifest=MANIFEST)
    assert again.search(q, k=6) == before
    assert len(again.list_documents()) == 4
    again.close()


def test_mismatched_manifest_names_both_fingerprints(tmp_path: Path):
    Collection.open(tmp_path, "main", manifest=MANIFEST, create=True).close()
    other = dict(MANIFEST, checkpoint_fingerprint="fp-bbbb")
    with pytest.raises(IndexMismatchError) as err:
        Collection.open(tmp_path, "main", manifest=other, create=True)
    message = str(err.value)
    assert "fp-aaaa" in message and "fp-bbbb" in message and "clara-index rebuild" in message
    with pytest.raises(IndexMismatchError, match="n_mem 8"):
        Collection.open(tmp_path, "main", manifest=dict(MANIFEST, n_mem=8))
    reader = Collection.open(tmp_path, "main", readonly=True)  # no manifest: accepted
    assert reader.manifest.fingerprint == "fp-aaaa" and reader.manifest.compression_rate == 16
    assert reader.manifest.extra == {"base_fingerprint": "base-1", "doc_max_tokens": 64}
    reader.close()


def test_missing_collection_and_read_only(tmp_path: Path):
    with pytest.raises(CollectionNotFoundError, match="no collection 'nope'"):
        Collection.open(tmp_path, "nope", readonly=True)
    Collection.open(tmp_path, "main", manifest=MANIFEST, create=True).close()
    reader = Collection.open(tmp_path, "main", readonly=True)
    with pytest.raises(CollectionError, match="read-only"):
        add(reader, 1)
    reader.close()


def test_one_writer_at_a_time(tmp_path: Path):
    col = Collection.open(tmp_path, "main", manifest=MANIFEST, create=True)
    with pytest.raises(CollectionLockedError, match="already open for writing in this process"):
        Collection.open(tmp_path, "main", manifest=MANIFEST)  # (another process: its pid, below)
    out = run_child(tmp_path, "add", "7")
    assert out.returncode == 1 and f"being written by pid {os.getpid()}" in out.stderr
    col.close()
    assert run_child(tmp_path, "add", "7").returncode == 0


def test_list_and_delete_collections(tmp_path: Path):
    (tmp_path / ".a.creating-999999999-beef").mkdir()  # left by a creator that died
    a = Collection.open(tmp_path, "a", manifest=MANIFEST, create=True)
    Collection.open(tmp_path, "b", manifest=MANIFEST, create=True).close()
    assert list_collections(tmp_path) == ["a", "b"]
    with pytest.raises(CollectionLockedError):
        delete_collection(tmp_path, "a")
    a.close()
    delete_collection(tmp_path, "a")
    assert list_collections(tmp_path) == ["b"] and sorted(os.listdir(tmp_path)) == ["b"]
    with pytest.raises(ValueError):
        Collection.open(tmp_path, "../x", manifest=MANIFEST, create=True)


def test_a_writer_can_hand_its_lock_to_the_delete(tmp_path: Path):
    """The service deletes a store under the lock it holds, from its check to the folder's
    removal: a clara-index starting in between (it once did, after the store's record was
    gone) finds it held. `close(keep_lock=True)` keeps the lock; `delete_collection` takes
    it and lets it go, also when it fails."""
    from indexing.durable import WriterLock

    a = Collection.open(tmp_path, "a", manifest=MANIFEST, create=True)
    lock = a.close(keep_lock=True)
    assert lock is not None
    with pytest.raises(CollectionLockedError):  # still held
        WriterLock(tmp_path / "a", "a")
    delete_collection(tmp_path, "a", lock=lock)
    assert list_collections(tmp_path) == [] and lock._fd is None
    Collection.open(tmp_path, "b", manifest=MANIFEST, create=True).close()
    held = WriterLock(tmp_path / "b", "b")
    (tmp_path / "b" / "manifest.json").unlink()
    with pytest.raises(CollectionNotFoundError):
        delete_collection(tmp_path, "b", lock=held)
    assert held._fd is None  # released all the same


# -- other processes -------------------------------------------------------------------------

CHILD = r"""
import json, sys
import numpy as np
from indexing.store import ChunkRecord, Collection
root, op, *args = sys.argv[1:]
N_MEM, D = 4, 8
vecs = lambda seed, n=3: np.random.default_rng(seed).standard_normal((n, N_MEM, D)).astype(np.float32)
if op == "reader":  # answer "<seed>" lines: docs of the top-3 hits for that doc's first chunk
    col = Collection.open(root, "main", readonly=True)
    for line in sys.stdin:
        hits = col.search(vecs(int(line))[0], k=3)[0]
        print(json.dumps(list(dict.fromkeys(h.doc_name for h in hits))), flush=True)
    sys.exit(0)
try:
    col = Collection.open(root, "main", manifest=json.loads(args[-1]), create=True)
except Exception as e:
    print(e, file=sys.stderr)
    sys.exit(1)
if op == "add":
    seed = int(args[0])
    chunks = [ChunkRecord(f"d{seed} chunk {i}", i + 1, i + 1, 20 + i) for i in range(3)]
    if col.find_by_sha(f"sha-{seed}") is None:
        col.add_document(f"/docs/d{seed}.txt", f"d{seed}", f"sha-{seed}", chunks, vecs(seed))
elif op == "remove":
    col.remove_document(col.find_by_sha(f"sha-{args[0]}").id)
elif op == "compact":
    col.compact()
col.close()
"""


def child_env(crash_at: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("CLARA_CRASH_AT", None)
    if crash_at:
        env["CLARA_CRASH_AT"] = crash_at
    return env


def run_child(root: Path, op: str, *args: str, crash_at: str | None = None):
    cmd = [sys.executable, "-c", CHILD, str(root), op, *args, json.dumps(MANIFEST)]
    return subprocess.run(cmd, env=child_env(crash_at), capture_output=True, text=True, timeout=120)


def test_reader_process_follows_writer_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # the writer saves FAISS only on close, so the reader must catch up from the memory file
    monkeypatch.setattr(view, "SAVE_ALWAYS_BYTES", 0)
    monkeypatch.setattr(view, "SAVE_CHANGED_SHARE", 1e9)
    col = Collection.open(tmp_path, "main", manifest=MANIFEST, create=True)
    add(col, 1)
    reader = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), "reader"],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def ask(seed: int) -> list[str]:
        reader.stdin.write(f"{seed}\n")
        reader.stdin.flush()
        return json.loads(reader.stdout.readline())

    try:
        assert ask(2) == ["d1"]
        add(col, 2)
        assert ask(2)[0] == "d2"
        col.remove_document(col.find_by_sha("sha-1").id)  # compacts: memory file swapped
        assert ask(1) == ["d2"]
        for s in range(3, 40):
            add(col, s)
        assert ask(33)[0] == "d33"
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)
        col.close()
    assert reader.returncode == 0


def test_reader_sees_compaction_swap_in_process(tmp_path: Path):
    col = Collection.open(tmp_path, "main", manifest=MANIFEST, create=True)
    ids = [add(col, s) for s in range(4)]
    reader = Collection.open(tmp_path, "main", readonly=True)
    keep = [c.id for c in reader.document_chunks(ids[3])]
    np.testing.assert_allclose(reader.memories(keep), doc_vectors(3), atol=2e-3)  # maps file 0
    col.remove_document(ids[0])
    col.remove_document(ids[1])  # compaction renumbers rows and deletes the old file
    np.testing.assert_allclose(reader.memories(keep), doc_vectors(3), atol=2e-3)
    assert {h.doc_name for h in reader.search(doc_vectors(0), k=6)[0]} == {"d2", "d3"}
    reader.close()
    col.close()


# -- crashes ---------------------------------------------------------------------------------

ADD_STEPS_OLD = ["add:before-append", "add:mid-append", "add:after-append", "add:before-commit"]
ADD_STEPS_NEW = ["add:after-commit", "faiss:after-temp", "faiss:after-replace"]


def our_files(directory: Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime) of every file but SQLite's own (its last connection to close
    checkpoints the WAL, even a read-only one; that is SQLite's atomic business, not ours)."""
    return sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in directory.iterdir()
        if not p.name.startswith("meta.sqlite")
    )


def check_consistent(root: Path, expected_docs: set[str], writer: bool) -> None:
    """The collection holds exactly `expected_docs`, every vector is right, files are tidy."""
    col = Collection.open(root, "main", manifest=MANIFEST if writer else None, readonly=not writer)
    try:
        assert {d.name for d in col.list_documents()} == expected_docs
        stats = col.stats()
        assert stats["indexed_vectors"] == stats["chunks"] == 3 * len(expected_docs)
        for doc in col.list_documents():
            seed = int(doc.name[1:])
            ids = [c.id for c in col.document_chunks(doc.id)]
            np.testing.assert_allclose(col.memories(ids), doc_vectors(seed), atol=2e-3)
            top = col.search(doc_vectors(seed)[0], k=1)[0][0]
            assert top.doc_name == doc.name and top.score == pytest.approx(1.0, abs=1e-4)
            # the full-text rows moved with the chunk rows: this document's words find
            # exactly its chunks
            lexical = col.search_lexical(doc.name, k=10)
            assert sorted(i for i, _ in lexical) == sorted(ids)
        assert stats["lexical_chunks"] == stats["chunks"]
        if writer:  # the writer tidied up: one memory file of the committed size, one FAISS file
            memory = [f for f in stats["files"] if f.startswith("memory-")]
            faiss_files = [f for f in stats["files"] if f.startswith("faiss-")]
            assert faiss_files == [f"faiss-{stats['generation']}.index"]
            assert len(memory) == 1
            assert stats["files"][memory[0]] == stats["memory_rows"] * N_MEM * D * 2
            assert not [f for f in os.listdir(root / "main") if f.endswith(".tmp")]
    finally:
        col.close()


@pytest.mark.parametrize("step", ADD_STEPS_OLD + ADD_STEPS_NEW)
def test_crash_during_add_leaves_old_or_new_state(tmp_path: Path, step: str):
    assert run_child(tmp_path, "add", "1").returncode == 0
    crashed = run_child(tmp_path, "add", "2", crash_at=step)
    assert crashed.returncode == -9, crashed.stderr
    expected = {"d1"} if step in ADD_STEPS_OLD else {"d1", "d2"}
    files = our_files(tmp_path / "main")
    check_consistent(tmp_path, expected, writer=False)  # a reader copes before any cleanup...
    assert our_files(tmp_path / "main") == files  # ...without touching the files
    check_consistent(tmp_path, expected, writer=True)
    assert run_child(tmp_path, "add", "2").returncode == 0  # re-running completes the add
    check_consistent(tmp_path, {"d1", "d2"}, writer=True)


@pytest.mark.parametrize(
    "step, expected",
    [
        ("remove:before-commit", {"d1", "d2"}),
        ("remove:after-commit", {"d1"}),
        ("compact:after-write", {"d1"}),  # the removal committed; its compaction did not
        ("compact:after-commit", {"d1"}),
    ],
)
def test_crash_during_remove_and_compaction(tmp_path: Path, step: str, expected: set[str]):
    for seed in (1, 2):
        assert run_child(tmp_path, "add", str(seed)).returncode == 0
    crashed = run_child(tmp_path, "remove", "2", crash_at=step)  # 50% dead: compacts
    assert crashed.returncode == -9, crashed.stderr
    check_consistent(tmp_path, expected, writer=False)
    check_consistent(tmp_path, expected, writer=True)
    if "d2" in expected:
        assert run_child(tmp_path, "remove", "2").returncode == 0
    check_consistent(tmp_path, {"d1"}, writer=True)


# -- index types -----------------------------------------------------------------------------


def clustered(n: int, seed: int, n_clusters: int = 50) -> np.ndarray:
    """(n, n_mem, d) vectors around `n_clusters` centres: structure ANN indexes can exploit."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, N_MEM * 4, D))
    pick = rng.integers(0, n_clusters, n)
    return (centres[pick] + 0.3 * rng.standard_normal((n, N_MEM * 4, D))).astype(np.float32)


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_index_recall_on_clustered_data(tmp_path: Path, index_type: str):
    manifest = dict(MANIFEST, n_mem=N_MEM * 4)  # 128 flat dims
    col = Collection.open(tmp_path, "ann", manifest=manifest, create=True, index_type=index_type)
    data = clustered(5000, seed=0)
    for start in range(0, len(data), 500):
        part = data[start : start + 500]
        chunks = [ChunkRecord(f"c{start + i}") for i in range(len(part))]
        col.add_document(None, f"part{start}", f"sha{start}", chunks, part)
    assert col.stats()["index_kind"] == index_type
    queries = clustered(200, seed=1)
    truth = np.argsort(-cosine(queries, data.astype(np.float16)), axis=1)[:, :10] + 1  # chunk ids
    hits = col.search(queries, k=10)
    recall = np.mean([len({h.chunk_id for h in row} & set(t)) / 10 for row, t in zip(hits, truth)])
    assert recall > 0.9
    # removal is honoured by both (HNSW masks removed ids until it is rebuilt)
    col.remove_document(col.find_by_sha("sha0").id)
    assert all(h.chunk_id > 500 for row in col.search(queries[:20], k=10) for h in row)
    col.close()
    again = Collection.open(tmp_path, "ann", readonly=True)
    assert all(h.chunk_id > 500 for row in again.search(queries[:20], k=10) for h in row)
    again.close()


def test_auto_switches_to_ivf_and_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(vectors, "AUTO_THRESHOLD", 600)
    col = Collection.open(tmp_path, "main", manifest=MANIFEST, create=True)
    data = clustered(800, seed=3)[:, :N_MEM]
    doc_ids = []
    for start in range(0, 800, 200):
        chunks = [ChunkRecord("x") for _ in range(200)]
        doc_ids.append(
            col.add_document(None, f"p{start}", f"s{start}", chunks, data[start : start + 200])
        )
        assert col.stats()["index_kind"] == ("ivf" if start + 200 >= 600 else "flat")
    for doc in doc_ids[:2]:
        col.remove_document(doc)  # 400 left: still >= half the threshold
    assert col.stats()["index_kind"] == "ivf"
    col.remove_document(doc_ids[2])
    assert col.stats()["index_kind"] == "flat"
    col.close()
    again = Collection.open(tmp_path, "main", manifest=MANIFEST, index_type="hnsw")
    assert again.stats()["index_kind"] == "hnsw" and again.manifest.index_type == "hnsw"
    top = again.search(data[700], k=1)[0][0]
    assert top.score == pytest.approx(1.0, abs=1e-4)
    again.close()


def test_hnsw_reader_takes_the_rebuilt_graph(tmp_path: Path):
    """A long-lived reader of an HNSW collection follows the writer's removals by masking ids;
    once the writer has rebuilt its graph (too many removed), the reader takes the rebuilt
    file on its next search instead of masking ever more ids of its old graph."""
    col = Collection.open(tmp_path, "h", manifest=MANIFEST, create=True, index_type="hnsw")
    docs = [add(col, seed, n=50) for seed in range(4)]
    reader = Collection.open(tmp_path, "h", readonly=True)
    probe = doc_vectors(3, 50)[7]
    first = reader.search(probe, k=1)[0][0]
    assert first.doc_name == "d3" and first.score == pytest.approx(1.0, abs=1e-3)
    for doc in docs[:2]:  # half the chunks gone: the writer rebuilds and saves its graph
        col.remove_document(doc)
    assert len(col._view.index._tombstones) == 0
    hit = reader.search(probe, k=1)[0][0]
    assert hit.chunk_id == first.chunk_id and hit.score == pytest.approx(1.0, abs=1e-3)
    index = reader._view.index
    assert index.kind == "hnsw" and len(index._tombstones) == 0 and index.ntotal == 100
    assert {h.doc_name for h in reader.search(doc_vectors(0, 50)[0], k=100)[0]} == {"d2", "d3"}
    reader.close()
    col.close()


def test_a_full_disk_is_an_os_error_and_leaves_no_partial_index_file(col, monkeypatch, capsys):
    """Before (a disk-full audit): FAISS's RuntimeError reached clara-index as a traceback,
    and its partial temporary file kept the disk full."""
    import errno

    from clara_cli.common import run_main

    add(col, 1)

    def write_half(index, path):
        Path(path).write_bytes(b"\0" * 1000)
        raise RuntimeError(
            f"Error in write_index: write error in {path}: (No space left on device)"
        )

    monkeypatch.setattr(vectors.faiss, "write_index", write_half)
    with pytest.raises(OSError) as info:
        add(col, 2)
    assert info.value.errno == errno.ENOSPC
    assert not list(col.directory.glob(".*.tmp"))
    assert run_main("clara-index", lambda: add(col, 3)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert "free disk space there and run it again" in err
    monkeypatch.undo()
    assert len(col.list_documents()) >= 1  # what was committed is still read


def test_a_read_only_folder_is_read_and_refuses_writers_with_a_reason(tmp_path, monkeypatch):
    """Before: a read-only index (a read-only mount, a copy without write permission) could
    not be read at all: SQLite's WAL readers write an -shm file ("unable to open database
    file"), and writers failed with a traceback."""
    import errno

    from indexing import meta

    with Collection.open(tmp_path, "ro", manifest=MANIFEST, create=True) as c:
        add(c, 1)
    folder = str(tmp_path / "ro")
    real_access = os.access
    monkeypatch.setattr(
        meta.os, "access", lambda p, mode: False if str(p) == folder else real_access(p, mode)
    )
    with Collection.open(tmp_path, "ro", readonly=True) as reader:
        assert [d.name for d in reader.list_documents()] == ["d1"]
        assert reader.search(doc_vectors(1, 1)[0], k=1)[0][0].doc_id
    with pytest.raises(OSError) as info:
        Collection.open(tmp_path, "ro")
    assert info.value.errno in (errno.EROFS, errno.EACCES) and info.value.filename == folder


def test_writes_reach_the_disk_through_full_fsync_where_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """macOS's fsync leaves data in the drive's cache: every durable write of the index goes
    through F_FULLFSYNC there, and through fsync where a file system refuses it. (Linux has no
    F_FULLFSYNC: the command number is made up here, and fcntl recorded.)"""
    import fcntl

    from indexing import durable

    calls: list[str] = []
    refuse = False

    def fake_fcntl(fd: int, cmd: int, *args):
        assert cmd == 12345
        calls.append("full")
        if refuse:
            raise OSError(45, "Operation not supported")

    real_fsync = os.fsync
    monkeypatch.setattr(durable, "FULLFSYNC", 12345)
    monkeypatch.setattr(fcntl, "fcntl", fake_fcntl)
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    col = Collection.open(tmp_path, "main", manifest=MANIFEST, create=True)
    try:
        add(col, 1)
    finally:
        col.close()
    assert calls and set(calls) == {"full"}, calls
    calls.clear()
    refuse = True
    durable.atomic_write_bytes(tmp_path / "x", b"data")
    assert calls == ["full", "fsync", "full", "fsync"]  # the file, then its folder
    assert (tmp_path / "x").read_bytes() == b"data"


def test_a_name_in_another_case_is_the_existing_collection_named_not_a_second_folder(
    tmp_path: Path,
):
    """macOS's and Windows' file systems take `Docs` for `docs`: opening or creating `Docs`
    beside `docs` wrote into it there and made a second collection on Linux. Now, on every
    system, it names the one there is; `uploads` is reserved in any case."""
    Collection.open(tmp_path, "docs", manifest=MANIFEST, create=True).close()
    for create in (False, True):
        with pytest.raises(CollectionNameCaseError, match="use 'docs'"):
            Collection.open(tmp_path, "Docs", manifest=MANIFEST, create=create)
    assert list_collections(tmp_path) == ["docs"]
    Collection.open(tmp_path, "docs", manifest=MANIFEST).close()  # its own name still opens
    # the server's cache of open collections says so too (it answered without retrieval)
    from indexing.open_collections import OpenCollections

    with pytest.raises(CollectionNameCaseError, match="use 'docs'"):
        with OpenCollections(tmp_path, MANIFEST).lease("Docs"):
            pass
    for name in ("uploads", "Uploads"):
        with pytest.raises(CollectionError, match="reserved"):
            Collection.open(tmp_path, name, manifest=MANIFEST, create=True)


def test_collections_made_before_in_two_cases_or_named_uploads_still_open(tmp_path: Path):
    """On Linux, clara before 0.2.1 made `Docs` beside `docs`, and `Uploads`: each still opens
    by its own name, and listing them works."""
    from indexing import layout
    from indexing.manifest import Manifest

    for name in ("docs", "Docs", "Uploads"):  # as the old code made them
        layout.create_collection_dir(tmp_path / name, Manifest.from_dict(MANIFEST))
    assert list_collections(tmp_path) == ["Docs", "Uploads", "docs"]
    for name in ("docs", "Docs", "Uploads"):
        Collection.open(tmp_path, name, manifest=MANIFEST).close()


def test_on_macos_with_torch_installed_faiss_tolerates_a_second_openmp(monkeypatch):
    """faiss-cpu's and torch's macOS wheels each bundle libomp, and loading the second
    aborted the process (faiss-wheels issue 73); a development install has torch. There, and
    only there, the second runtime is let through and faiss searches on one thread."""
    import importlib.util

    import faiss

    from clara import _omp

    monkeypatch.delenv("KMP_DUPLICATE_LIB_OK", raising=False)
    monkeypatch.setattr(_omp, "TWO_RUNTIMES", False)
    _omp.enable()  # (Linux: nothing)
    assert not _omp.TWO_RUNTIMES and "KMP_DUPLICATE_LIB_OK" not in os.environ
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no torch
    _omp.enable()
    assert not _omp.TWO_RUNTIMES and "KMP_DUPLICATE_LIB_OK" not in os.environ
    monkeypatch.undo()
    monkeypatch.delenv("KMP_DUPLICATE_LIB_OK", raising=False)
    monkeypatch.setattr(_omp, "TWO_RUNTIMES", False)
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())  # torch there
    _omp.enable()
    assert _omp.TWO_RUNTIMES and os.environ["KMP_DUPLICATE_LIB_OK"] == "TRUE"
    before = faiss.omp_get_max_threads()
    try:
        _omp.settle_faiss(faiss)
        assert faiss.omp_get_max_threads() == 1
    finally:
        faiss.omp_set_num_threads(before)


def test_only_the_most_recently_used_collections_stay_open(tmp_path: Path, monkeypatch):
    """A security audit: a server kept every collection it had read open (three files each),
    so some hundreds of vector stores created and listed took the process past its
    open-files limit. A listing now looks through `peek`, which keeps none open, and one let
    go is closed at once unless a request still holds it."""
    from indexing import open_collections

    monkeypatch.setattr(open_collections, "MAX_OPEN", 2)
    for name in "abcd":
        with Collection.open(tmp_path, name, manifest=MANIFEST, create=True) as col:
            add(col, 1)
    readers = open_collections.OpenCollections(tmp_path, vectors=False)
    try:
        with readers.lease("a") as a, readers.lease("b") as b:
            pass
        with readers.lease("a") as again:  # (used last: b is now the least recently used)
            assert again is a
        with readers.lease("c"):  # b let go: held by no request, closed now
            assert list(readers._open) == ["a", "c"] and b._closed and not a._closed
        with readers.peek("d") as d, readers.peek("a") as kept:  # a listing's look
            assert d.stats()["documents"] == 1 and kept is a
        assert d._closed and list(readers._open) == ["c", "a"]  # d not kept, none let go
        with readers.peek("nope") as missing:
            assert missing is None
        assert readers._held == {} and readers._retired == {}
    finally:
        readers.close()
    with readers.lease("a") as reopened:  # (after close: reopens)
        assert a._closed and reopened.stats()["documents"] == 1
    readers.close()


def test_a_collection_stays_open_while_a_request_holds_it(tmp_path: Path, monkeypatch):
    """The third review of the open-files fix: collections let go were closed a fixed time
    later (5 s once more than 128 were), so a vector-store search that waited longer for the
    model found its collection closed (a 500), and 600 stores fetched within 4 s still peaked
    at 1,743 open files. Now a request holds its collection (a lease): one let go, deleted
    or replaced is closed when the last request holding it ends, and not before."""
    from indexing import open_collections

    monkeypatch.setattr(open_collections, "MAX_OPEN", 2)
    for name in "abc":
        with Collection.open(tmp_path, name, manifest=MANIFEST, create=True) as col:
            add(col, 1)
    readers = open_collections.OpenCollections(tmp_path)
    try:
        a = readers.acquire("a")  # a search waiting for the model
        with readers.lease("b"), readers.lease("c"):  # a is the least recently used: let go
            pass
        readers.drop("a")  # ... and deleted
        assert list(readers._open) == ["b", "c"] and not a._closed
        assert a.search(doc_vectors(1, 1), k=1)[0][0].doc_id  # still reads
        readers.hold(a)  # handed to a thread too
        readers.release(a)
        assert not a._closed
        readers.release(a)  # the last hold: closed now
        assert a._closed and readers._held == {} and readers._retired == {}
        with readers.lease("b") as b:  # a collection replaced while a request reads it
            shutil.rmtree(tmp_path / "b")
            with Collection.open(tmp_path, "b", manifest=MANIFEST, create=True) as col:
                add(col, 2)
            with readers.lease("b") as new:
                assert new is not b and not b._closed and new.stats()["documents"] == 1
            assert b.stats()["documents"] == 1
        assert b._closed and not new._closed
        made: list[Collection] = []  # every collection opened from here on
        opener = Collection.open

        def recording(*args: Any, **kwargs: Any) -> Collection:
            made.append(opener(*args, **kwargs))
            return made[-1]

        monkeypatch.setattr(Collection, "open", recording)
        for name in "abc" * 20:  # stores used one after another: at most MAX_OPEN stay open
            with readers.lease(name):
                assert sum(not c._closed for c in made) <= 2
        held = [readers.acquire(n) for n in "abc"]  # three requests at once: three open
        assert sum(not c._closed for c in made) == 3
        for col in held:
            readers.release(col)
        assert sum(not c._closed for c in made) == 2
        assert readers._held == {} and readers._retired == {}
    finally:
        readers.close()


def _service_readers(root: Path):
    """An indexing service's read side alone (its leases on collections), no model."""
    from indexing.open_collections import OpenCollections
    from indexing.service.handler import IndexService

    svc = IndexService.__new__(IndexService)
    svc._readers = OpenCollections(root, vectors=False)
    return svc


def test_requests_cancelled_at_any_point_leave_no_collection_held(tmp_path: Path, monkeypatch):
    """A review of the leases: 300 requests on three stores and a missing one, half of them
    cancelled (a client gone) at a random point, one store kept open: afterwards none is
    held, and only the one kept is open."""
    import asyncio
    import random

    from clara_cli.http import APIError
    from indexing import open_collections

    monkeypatch.setattr(open_collections, "MAX_OPEN", 1)
    for name in "abc":
        with Collection.open(tmp_path, name, manifest=MANIFEST, create=True) as col:
            add(col, 1)
    svc, rng = _service_readers(tmp_path), random.Random(0)

    async def use(name: str, delay: float) -> None:
        async with svc.reading_async(name) as col:
            await asyncio.sleep(delay)
            assert col.stats()["documents"] == 1

    async def run() -> list:
        tasks = []
        for _ in range(300):
            tasks.append(asyncio.ensure_future(use(rng.choice("abcx"), rng.random() / 100)))
            if rng.random() < 0.5:
                await asyncio.sleep(rng.random() / 200)
                tasks[-1].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.5)  # (releases run on the loop's threads)
        return done

    done = asyncio.run(run())
    assert {type(d) for d in done} <= {type(None), asyncio.CancelledError, APIError}
    assert sum(d is None for d in done) > 50 and sum(isinstance(d, APIError) for d in done)
    readers = svc._readers
    assert readers._held == {} and readers._retired == {} and len(readers._open) == 1
    readers.close()


def test_a_store_being_opened_stalls_no_other_request(tmp_path: Path, monkeypatch):
    """A review of the leases: a request that ended released its store on the event loop,
    under the lock held while another store was opened (a folder listing, SQLite, an old
    index's word table built once): every request stalled meanwhile."""
    import asyncio
    import time

    for name in "ab":
        with Collection.open(tmp_path, name, manifest=MANIFEST, create=True) as col:
            add(col, 1)
    svc = _service_readers(tmp_path)
    opener = Collection.open

    def slow_open(root: Path, name: str, *args: Any, **kwargs: Any) -> Collection:
        if name == "b":
            time.sleep(2.0)
        return opener(root, name, *args, **kwargs)

    monkeypatch.setattr(Collection, "open", slow_open)

    async def ticks(lags: list[float]) -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - began)

    async def run() -> float:
        lags: list[float] = []
        async with svc.reading_async("a"):
            ticker = asyncio.ensure_future(ticks(lags))
            b = asyncio.ensure_future(svc.check_store_async("b"))  # opened on a thread
            await asyncio.sleep(0.2)
        await b  # (a released meanwhile)
        ticker.cancel()
        return max(lags)

    assert asyncio.run(run()) < 0.5
    svc._readers.close()


def test_a_reader_for_metadata_loads_no_vectors_until_it_searches(tmp_path: Path):
    """Listing vector stores opened every collection's whole vector index and kept it (a
    server grew from 3.9 to 6.5 GB to list 106 collections); `list` and `collections` read
    1.7 GB of FAISS file to print counts."""
    from indexing.open_collections import OpenCollections

    with Collection.open(tmp_path, "main", manifest=MANIFEST, create=True) as col:
        ids = [add(col, s) for s in range(3)]
    readers = OpenCollections(tmp_path, vectors=False)
    try:
        reader = readers.acquire("main")
        assert reader._view.index is None and {d.id for d in reader.list_documents()} == set(ids)
        assert reader.stats()["documents"] == 3 and reader._view.index is None
        hits = reader.search(doc_vectors(1, 3), k=1)  # the first search loads it
        assert hits[0][0].doc_id == ids[1] and reader._view.index is not None
    finally:
        readers.close()
    os.truncate(tmp_path / "main" / "memory-0.f16", 10)  # damage is still found at open
    with pytest.raises(DamagedCollectionError):
        Collection.open(tmp_path, "main", readonly=True, vectors=False)


def test_a_read_only_copy_reads_the_commits_still_in_its_wal(tmp_path, monkeypatch):
    """A copy taken while a server kept the collection open (the README's backups allow it)
    or after a writer was killed holds commits in meta.sqlite-wal only. Read only, it was
    opened immutable, which skips the WAL: its last documents were missing without a word
    (an operator's audit)."""
    import shutil

    from indexing import meta

    with Collection.open(tmp_path, "live", manifest=MANIFEST, create=True) as c:
        add(c, 1)
    reader = Collection.open(tmp_path, "live", readonly=True)  # a server: the WAL stays
    try:
        with Collection.open(tmp_path, "live") as c:
            add(c, 2)
        assert os.path.getsize(tmp_path / "live" / "meta.sqlite-wal") > 0
        shutil.copytree(tmp_path / "live", tmp_path / "backup" / "live")
    finally:
        reader.close()
    folder = str(tmp_path / "backup" / "live")
    real_access = os.access
    monkeypatch.setattr(
        meta.os, "access", lambda p, mode: False if str(p) == folder else real_access(p, mode)
    )
    before = sorted(os.listdir(folder))
    with Collection.open(tmp_path / "backup", "live", readonly=True) as copy:
        assert sorted(d.name for d in copy.list_documents()) == ["d1", "d2"]
        second = next(d.id for d in copy.list_documents() if d.name == "d2")
        assert copy.search(doc_vectors(2, 3)[0], k=1)[0][0].doc_id == second
    assert sorted(os.listdir(folder)) == before  # the copy is left as it was

    # a security audit: the copy followed a meta.sqlite linked to /dev/zero and filled the
    # temporary folder without end; and copies a killed process left (documents' text) stayed
    import tempfile

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    temp = Path(tempfile.gettempdir())
    left = Path(tempfile.mkdtemp(prefix=f".clara-meta.{gone.pid}-", suffix=".copy", dir=temp))
    (left / "meta.sqlite").write_text("documents' text")
    unnamed = Path(tempfile.mkdtemp(prefix="clara-meta-", dir=temp))  # (an older version's)
    os.utime(unnamed, (0, 0))
    Collection.open(tmp_path / "backup", "live", readonly=True, vectors=False).close()
    assert not left.exists() and not unnamed.exists()  # (their processes have ended)
    assert not list(temp.glob(f".clara-meta.{os.getpid()}-*"))  # (and its own is closed)
    os.replace(f"{folder}/meta.sqlite", f"{folder}/meta.sqlite.real")
    os.symlink("/dev/zero", f"{folder}/meta.sqlite")
    with pytest.raises(DamagedCollectionError):
        Collection.open(tmp_path / "backup", "live", readonly=True, vectors=False)
    # a FIFO in its place is refused too (a review: the open waited for a writer for good)
    os.unlink(f"{folder}/meta.sqlite")
    os.mkfifo(f"{folder}/meta.sqlite")
    with pytest.raises(DamagedCollectionError):
        Collection.open(tmp_path / "backup", "live", readonly=True, vectors=False)
    os.unlink(f"{folder}/meta.sqlite-wal")  # nothing to copy: SQLite's own open (it blocked)
    with pytest.raises(DamagedCollectionError):
        Collection.open(tmp_path / "backup", "live", readonly=True, vectors=False)


def test_a_full_disk_leaves_readers_reading_and_tells_writers(tmp_path, monkeypatch):
    """A WAL reader makes an -shm file, which a full disk refuses ("disk I/O error"): every
    read (`list`, `search`, a server's start) was a traceback (an operator's audit, on a
    full tmpfs). Readers now read the files as they are; a writer is told the disk is full."""
    import errno
    import sqlite3

    from indexing import meta

    with Collection.open(tmp_path, "full", manifest=MANIFEST, create=True) as c:
        add(c, 1)
    opened = meta.Meta._open

    def no_shm(self, path, as_is):  # what SQLite does there: the rw open fails
        if not as_is:
            raise sqlite3.OperationalError("disk I/O error")
        return opened(self, path, as_is)

    monkeypatch.setattr(meta.Meta, "_open", no_shm)
    from clara import paths

    for module in (meta, paths):
        monkeypatch.setattr(module, "disk_full", lambda folder: True)
    with Collection.open(tmp_path, "full", readonly=True) as reader:
        assert [d.name for d in reader.list_documents()] == ["d1"]
    with pytest.raises(OSError) as info:
        Collection.open(tmp_path, "full")
    assert info.value.errno == errno.ENOSPC


def test_the_index_root_it_makes_is_readable_by_this_user_only(tmp_path: Path) -> None:
    """A team deployment audit: the index root, with everyone's documents and uploads, was
    made with the umask's mode (often 0755), readable by every user of the machine. Folders
    that were there keep theirs."""
    root = tmp_path / "home" / "indexes"
    with Collection.open(root, "team", manifest=MANIFEST, create=True) as c:
        add(c, 1)
    assert root.stat().st_mode & 0o777 == 0o700
    assert root.parent.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    Collection.open(shared, "team", manifest=MANIFEST, create=True).close()
    assert shared.stat().st_mode & 0o777 == 0o755
    # the collection itself is private all the same (a privacy audit: in an --index folder
    # of the user's own, 0755, every user of the machine read its documents' text)
    assert (shared / "team").stat().st_mode & 0o777 == 0o700
