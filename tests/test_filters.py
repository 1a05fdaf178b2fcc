"""Attribute filters (`indexing.filters`), as OpenAI's file search takes them: checked, then
matched against a document's attributes; and a search restricted to the documents they pass
(`Collection.retrieve(documents=...)`), in every mode. Random vectors, no model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clara.errors import InvalidArgumentError
from indexing.filters import check_filter, matches, prepared
from indexing.store import ChunkRecord, Collection
from tests.tiny import STORE_D, STORE_MANIFEST, STORE_N_MEM

DOC = {"team": "hr", "year": 2024, "draft": False, "score": 0.5}


def eq(key, value, kind="eq"):
    return {"type": kind, "key": key, "value": value}


@pytest.mark.parametrize(
    "node, passes",
    [
        (eq("team", "hr"), True),
        (eq("team", "eng"), False),
        (eq("team", "eng", "ne"), True),
        (eq("missing", "x", "ne"), True),  # (no such attribute: only ne and nin pass)
        (eq("missing", "x"), False),
        (eq("year", 2024), True),
        (eq("year", 2024.0), True),
        (eq("year", "2024"), False),  # (a string is no number)
        (eq("draft", False), True),
        (eq("draft", 0), False),  # (a boolean is no number, whatever Python says)
        (eq("year", 2020, "gt"), True),
        (eq("year", 2024, "gte"), True),
        (eq("year", 2024, "lt"), False),
        (eq("score", 0.5, "lte"), True),
        (eq("team", "a", "gt"), True),  # (strings compare as strings)
        (eq("team", 1, "gt"), False),
        (eq("draft", True, "lt"), False),
        (eq("team", ["eng", "hr"], "in"), True),
        (eq("team", ["eng"], "nin"), True),
        (eq("missing", ["x"], "nin"), True),
        ({"type": "and", "filters": [eq("team", "hr"), eq("year", 2023, "gt")]}, True),
        ({"type": "and", "filters": [eq("team", "hr"), eq("year", 2025, "gt")]}, False),
        ({"type": "or", "filters": [eq("team", "eng"), eq("draft", False)]}, True),
        (
            {
                "type": "or",
                "filters": [eq("team", "eng"), {"type": "and", "filters": [eq("year", 2024)]}],
            },
            True,
        ),  # fmt: skip
    ],
)
def test_a_filter_passes_the_documents_whose_attributes_match(node, passes: bool) -> None:
    assert matches(check_filter(node), DOC) is passes


@pytest.mark.parametrize(
    "node, says",
    [
        ({"type": "like", "key": "a", "value": 1}, "filters.type: 'like' is no filter type"),
        ({"type": "eq", "key": "a"}, "a string 'key' and a 'value'"),
        ({"type": "eq", "key": "a", "value": {"x": 1}}, "compares with a string"),
        ({"type": "in", "key": "a", "value": "x"}, "takes a list"),
        ({"type": "and", "filters": []}, "a list 'filters' of 1 to 16"),
        ({"type": "and", "filters": [{"type": "eq", "key": 1, "value": 1}]}, "filters.filters.[0]"),
        ({"type": "eq", "key": "a", "value": 1, "extra": 2}, "(not extra)"),
        ("team = hr", "a filter is an object"),
    ],
)
def test_a_malformed_filter_is_refused_saying_where(node, says: str) -> None:
    with pytest.raises(InvalidArgumentError, match=None) as info:
        check_filter(node)
    assert says in str(info.value), str(info.value)


def test_a_filter_too_big_or_deep_is_refused() -> None:
    deep: dict = eq("a", 1)
    for _ in range(3):
        deep = {"type": "and", "filters": [deep]}
    with pytest.raises(InvalidArgumentError, match="not deeper ones"):
        check_filter(deep)
    check_filter(deep["filters"][0])  # (two levels of and/or: taken)
    with pytest.raises(InvalidArgumentError, match="1 to 16 filters"):
        check_filter({"type": "or", "filters": [eq("a", i) for i in range(17)]})
    with pytest.raises(InvalidArgumentError, match="at most 100 values"):
        check_filter(eq("a", list(range(101)), "in"))
    # prepared for many documents (each list a set, built once): the same answers
    for node, passes in [
        (eq("year", [*range(90), 2024.0], "in"), True),
        (eq("draft", [0, 1, *range(2, 50)], "in"), False),
        (eq("draft", [0, 1], "nin"), True),
        (eq("missing", [1], "nin"), True),
        ({"type": "or", "filters": [eq("team", ["x"], "in"), eq("team", ["hr"], "in")]}, True),
    ]:
        assert matches(prepared(check_filter(node)), DOC) is passes is matches(node, DOC)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_a_search_among_some_documents_returns_only_theirs(
    tmp_path: Path, mode: str, index_type: str
) -> None:
    rng = np.random.default_rng(0)
    col = Collection.open(
        tmp_path, "c", manifest=STORE_MANIFEST, create=True, index_type=index_type
    )
    try:
        docs = {}
        for name in ("hr", "eng", "ops"):
            texts = [
                f"The {name} holiday policy, part {i}: carry over five days." for i in range(4)
            ]
            vecs = rng.standard_normal((4, STORE_N_MEM, STORE_D)).astype(np.float32)
            docs[name] = col.add_document(
                f"/d/{name}.md", f"{name}.md", f"sha-{name}", [ChunkRecord(t) for t in texts], vecs
            )
        query = rng.standard_normal((STORE_N_MEM, STORE_D)).astype(np.float32)
        everything = col.retrieve("holiday policy carry over", query, k=6, mode=mode)
        assert {h.doc_name for h in everything} >= {"hr.md", "eng.md"}
        only = col.retrieve("holiday policy carry over", query, k=6, mode=mode,
                            documents=[docs["hr"], docs["ops"]])  # fmt: skip
        assert {h.doc_name for h in only} == {"hr.md", "ops.md"} and len(only) == 6
        assert col.retrieve("holiday", query, k=3, mode=mode, documents=[]) == []
    finally:
        col.close()


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
@pytest.mark.parametrize("exact_below", [4096, 0])
def test_a_narrow_filter_finds_its_chunks_in_an_approximate_index(
    tmp_path: Path, index_type: str, exact_below: int, monkeypatch
) -> None:
    """A review: a FAISS selector only filters what an IVF index's probed lists or an HNSW
    walk meet, so a filter letting 3 of 2000 chunks through found none or a few. Few chunks
    are scored exactly from their memories; many widen the search (EXACT_FILTERED = 0)."""
    from indexing import store

    monkeypatch.setattr(store, "EXACT_FILTERED", exact_below)
    rng = np.random.default_rng(1)
    col = Collection.open(
        tmp_path, "c", manifest=STORE_MANIFEST, create=True, index_type=index_type
    )
    try:
        ids = []
        for d in range(40):
            vecs = rng.standard_normal((50, STORE_N_MEM, STORE_D)).astype(np.float32)
            records = [ChunkRecord(f"doc {d} chunk {i}") for i in range(50)]
            ids.append(col.add_document(f"/d/{d}.md", f"{d}.md", f"sha{d}", records, vecs))
        assert col.stats()["index_kind"] == index_type
        query = rng.standard_normal((STORE_N_MEM, STORE_D)).astype(np.float32)
        for _ in range(3):
            hits = col.retrieve("q", query, k=10, mode="dense", documents=[ids[7]])
            assert len(hits) == 10 and {h.doc_name for h in hits} == {"7.md"}
            query = rng.standard_normal((STORE_N_MEM, STORE_D)).astype(np.float32)
    finally:
        col.close()


def test_a_registry_clara_serve_cannot_read_leaves_the_uploads_out(tmp_path: Path) -> None:
    """A review: clara-serve beside a `clara-index serve` opened its registry for writing (a
    read-only copy, another user's folder: every filtered chat failed). It reads it read-only
    now; one it cannot read at all leaves the uploads out of what a filter lets through, not
    in (their attributes unknown, `ne` would have passed them all)."""
    from server.metrics import Metrics
    from server.rag import Rag

    rng = np.random.default_rng(2)
    col = Collection.open(tmp_path, "c", manifest=STORE_MANIFEST, create=True)
    try:
        upload = tmp_path / "uploads" / "file-0123456789abcdef01234567" / "hr.md"
        for path in (upload, tmp_path / "notes" / "eng.md"):
            vecs = rng.standard_normal((1, STORE_N_MEM, STORE_D)).astype(np.float32)
            col.add_document(str(path), path.name, f"sha-{path.name}", [ChunkRecord("x")], vecs)
        rag = Rag(None, tmp_path, "c", STORE_MANIFEST, Metrics())
        names = lambda: sorted(a["filename"] for a in rag.attributes("c", col).values())  # noqa: E731
        assert names() == ["eng.md", "hr.md"]  # (no registry: no upload attributes to read)
        (tmp_path / "uploads").mkdir()
        (tmp_path / "uploads" / "registry.sqlite").write_bytes(b"not a database" * 100)
        assert names() == ["eng.md"]
    finally:
        col.close()


def test_several_collections_name_only_those_searched(tmp_path: Path, tiny_llama_dir) -> None:
    """A multi-store audit: the server's default collection listed beside a store before
    anything was indexed into it was not searched, yet `retrieval.collections` named it, and
    a follow-up that searched "it" again was told it had been deleted."""
    from clara.checkpoint import load_clara
    from server.metrics import Metrics
    from server.protocol import RagParams
    from server.rag import Rag
    from tests.test_server_harness import DOCS, add_documents

    cm = load_clara(tiny_llama_dir, None, dtype=None)
    add_documents(tmp_path, cm, DOCS[:2], collection="store")
    add_documents(tmp_path, cm, DOCS[2:4], collection="other")
    rag = Rag(cm, tmp_path, "default", cm.manifest(), Metrics())
    try:
        question = DOCS[3][1]
        qvec = np.array(cm.encode_queries([question]))[0].astype(np.float32)

        def ask(*names: str):
            p = RagParams(question, question, collections=list(names), scope=None, top_k=4)
            return rag.retrieve(p, qvec)

        alone = ask("store", "default")
        assert (alone.status, alone.collection, alone.collections) == ("ok", "store", [])
        both = ask("default", "store", "other")
        assert (both.collection, both.collections) == ("store", ["store", "other"])
        assert both.sources[0].filename == DOCS[3][0] and both.sources[0].collection == "other"
        assert {s.collection for s in both.sources} == {"store", "other"}
    finally:
        rag.close()
