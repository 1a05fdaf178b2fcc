"""Collection.retrieve: dense, lexical and hybrid over one collection, with the fused score and
each retriever's rank checked by hand; the dense fallback. Random vectors, no model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clara.retrieval import Fusion
from indexing.store import ChunkRecord, Collection
from tests.tiny import STORE_D, STORE_MANIFEST, STORE_N_MEM

N_MEM, D = STORE_N_MEM, STORE_D
MANIFEST = STORE_MANIFEST
TEXTS = {
    "tea": "Green tea is brewed at 80 degrees for two minutes.",
    "git": "Run git branch --set-upstream-to=origin/main to track it.",
    "bikes": "Oil the bicycle chain every 300 kilometres.",
}


@pytest.fixture
def col(tmp_path: Path):
    rng = np.random.default_rng(0)
    c = Collection.open(tmp_path, "main", manifest=MANIFEST, create=True)
    c.vecs = {}
    for name, text in TEXTS.items():
        v = rng.standard_normal((1, N_MEM, D)).astype(np.float32)
        c.vecs[name] = v[0]
        c.add_document(f"/d/{name}.txt", name, f"sha-{name}", [ChunkRecord(text, 1, 1, 9, name)], v)
    yield c
    c.close()


def names(hits) -> list[str]:
    return [h.doc_name for h in hits]


def test_dense_and_lexical_each_rank_their_own_way(col: Collection):
    dense = col.retrieve("set-upstream-to", col.vecs["tea"], k=3, mode="dense")
    assert names(dense)[0] == "tea" and dense[0].score == pytest.approx(1.0, abs=1e-3)
    assert [h.ranks for h in dense] == [{"dense": 1}, {"dense": 2}, {"dense": 3}]
    lexical = col.retrieve("--set-upstream-to", None, k=3, mode="lexical")
    assert names(lexical) == ["git"] and lexical[0].ranks == {"lexical": 1}
    assert lexical[0].text == TEXTS["git"] and lexical[0].context == "git"
    assert lexical[0].path == "/d/git.txt" and lexical[0].contextual_text.startswith("git\n")


def test_hybrid_fuses_both_with_the_rrf_score(col: Collection):
    dense = col.retrieve("x", col.vecs["tea"], k=3, mode="dense")
    equal = Fusion(k=1, weights={"dense": 1.0, "lexical": 1.0})
    hits = col.retrieve("set-upstream-to", col.vecs["tea"], k=3, mode="hybrid", fusion=equal)
    by_name = {h.doc_name: h for h in hits}
    git_dense_rank = names(dense).index("git") + 1
    # tea: dense rank 1 only -> 1/2; git: lexical rank 1 + its dense rank
    assert by_name["tea"].score == pytest.approx(1 / 2)
    assert by_name["git"].score == pytest.approx(1 / 2 + 1 / (1 + git_dense_rank))
    assert names(hits)[0] == "git" and by_name["git"].ranks == {
        "dense": git_dense_rank,
        "lexical": 1,
    }
    assert by_name["tea"].ranks == {"dense": 1, "lexical": None}
    assert set(by_name["git"].scores) == {"dense", "lexical"} and all(
        h.mode == "hybrid" for h in hits
    )
    # the lexical weight at 0 leaves the dense order
    dense_only = Fusion(weights={"dense": 1.0, "lexical": 0.0})
    assert names(col.retrieve("set-upstream-to", col.vecs["tea"], 3, "hybrid", dense_only)) == (
        names(dense)
    )


def test_no_usable_words_falls_back_to_dense(col: Collection):
    for mode in ("hybrid", "lexical"):
        hits = col.retrieve("what is it?", col.vecs["bikes"], k=2, mode=mode)
        assert names(hits)[0] == "bikes" and all(h.mode == "dense" for h in hits)
        assert hits[0].ranks == {"dense": 1}
    assert col.retrieve("what?", None, k=2, mode="lexical") == []  # nothing to fall back on


def test_removed_documents_never_come_back_and_bad_modes_are_refused(col: Collection):
    col.remove_document(col.find_by_sha("sha-git").id)
    hits = col.retrieve("set-upstream-to", col.vecs["git"], k=5)
    assert "git" not in names(hits) and len(hits) == 2
    with pytest.raises(ValueError, match="hybrid, dense, lexical"):
        col.retrieve("x", col.vecs["tea"], mode="sparse")
    with pytest.raises(ValueError, match="query vector"):
        col.retrieve("tea", None, mode="hybrid")


def test_a_word_in_every_chunk_ranks_nothing_in_the_fusion(tmp_path: Path):
    """A documents audit: 30 chunks of a log repeat "lighthouse"; one short document holds the
    sentence asked for. BM25 gives the log's chunks ~0 (the word is in every chunk), yet they
    took lexical ranks 2-30, and with the dense side favouring the log the document came 7th
    in hybrid search. Now only chunks matching a telling word rank by words."""
    rng = np.random.default_rng(1)
    c = Collection.open(tmp_path, "main", manifest=MANIFEST, create=True)
    try:
        log = rng.standard_normal((30, N_MEM, D)).astype(np.float32)
        pages = [ChunkRecord(f"Tiny page {i} of the ledger of lighthouse mackerel.", 1, 1, 9, "")
                 for i in range(30)]  # fmt: skip
        c.add_document("/d/ledger.txt", "ledger", "sha-ledger", pages, log)
        keeper = "The velvet lighthouse keeper whistles at gulls."
        v = rng.standard_normal((1, N_MEM, D)).astype(np.float32)
        c.add_document(
            "/d/keeper.txt", "keeper", "sha-keeper", [ChunkRecord(keeper, 1, 1, 9, "")], v
        )
        question = "velvet lighthouse keeper whistles at gulls"
        words = c.retrieve(question, None, k=40, mode="lexical")
        assert words[0].doc_name == "keeper" and len(words) == 31  # every match, by score
        assert all(h.score < 1e-4 for h in words[1:])
        hits = c.retrieve(question, log[0], k=5)  # the dense side: the log first
        assert hits[0].doc_name == "keeper" and hits[0].ranks["lexical"] == 1
        assert all(h.ranks.get("lexical") is None for h in hits[1:])
    finally:
        c.close()


def test_in_a_collection_where_every_word_is_floored_words_still_rank(tmp_path: Path):
    """A review: in a store of two chunks every word is in half of them, so BM25 floors all;
    dropping those matches left hybrid search without its lexical side there. When no chunk
    matches a telling word, all matches rank by words as before."""
    rng = np.random.default_rng(2)
    c = Collection.open(tmp_path, "main", manifest=MANIFEST, create=True)
    try:
        texts = {
            "refunds": "Refunds are paid within fourteen days.",
            "shipping": "Shipping takes a week.",
        }
        vecs = {}
        for name, text in texts.items():
            vecs[name] = rng.standard_normal((1, N_MEM, D)).astype(np.float32)
            c.add_document(
                f"/d/{name}.txt", name, f"sha-{name}", [ChunkRecord(text, 1, 1, 9, "")], vecs[name]
            )
        hits = c.retrieve("when are refunds paid", vecs["shipping"][0], k=2)
        assert names(hits) == ["refunds", "shipping"] and hits[0].ranks == {
            "dense": 2,
            "lexical": 1,
        }
    finally:
        c.close()


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_a_text_held_twice_is_one_hit(col: Collection, mode: str):
    """The same file uploaded twice (or a notice every page repeats) took two of the answer's
    few places with one text: the better copy stays, the next distinct text takes the place."""
    rng = np.random.default_rng(3)
    twice = rng.standard_normal((1, N_MEM, D)).astype(np.float32)
    for name in ("tea-copy", "tea-again"):  # (whitespace aside, the same text)
        text = TEXTS["tea"].replace(" at ", "  at\n") if name == "tea-again" else TEXTS["tea"]
        col.add_document(f"/d/{name}.txt", name, f"sha-{name}", [ChunkRecord(text, 1, 1, 9)], twice)
    hits = col.retrieve("green tea brewed", col.vecs["tea"], k=3, mode=mode)
    texts = [" ".join(h.text.split()) for h in hits]
    assert len(texts) == len(set(texts)) and TEXTS["tea"] in texts
    assert len(hits) == (3 if mode != "lexical" else 1)  # (words: only the tea texts match)


def test_several_collections_are_searched_as_one(tmp_path: Path):
    """`retrieve_from` over two collections ranks as one collection holding both would, by
    dense score (the same cosine in each); each hit names its collection and, asked for, has
    its own memory; a document filter applies to its own collection; a text in both is one
    hit."""
    from indexing.store import retrieve_from

    rng = np.random.default_rng(1)
    texts = {
        **TEXTS,
        "rye": "Rye bread keeps a week wrapped in linen.",
        "ink": "Ink dries faster on warm paper.",
    }
    whole = Collection.open(tmp_path, "whole", manifest=MANIFEST, create=True)
    parts = [Collection.open(tmp_path, n, manifest=MANIFEST, create=True) for n in ("a", "b")]
    vecs = {}
    for i, (name, text) in enumerate(texts.items()):
        vecs[name] = rng.standard_normal((1, N_MEM, D)).astype(np.float32)
        for c in (whole, parts[i % 2]):
            c.add_document(
                f"/d/{name}.txt",
                name,
                f"sha-{name}",
                [ChunkRecord(text, 1, 1, 9, name)],
                vecs[name],
            )
    for query in ("rye", "ink", "git"):
        q = vecs[query][0] + 0.5 * rng.standard_normal((N_MEM, D)).astype(np.float32)
        one = whole.retrieve("x", q, k=5, mode="dense")
        both = retrieve_from(
            [(parts[0], None), (parts[1], None)], "x", q, 5, "dense", memories=True
        )
        assert names(both) == names(one) and [h.score for h in both] == pytest.approx(
            [h.score for h in one]
        )
        owner = {name: "ab"[i % 2] for i, name in enumerate(texts)}
        assert [h.collection for h in both] == [owner[h.doc_name] for h in both]
        for h in both:
            np.testing.assert_allclose(h.memory, vecs[h.doc_name][0], atol=1e-2)
        hybrid = retrieve_from([(parts[0], None), (parts[1], None)], query, q, 2, "hybrid")
        assert names(hybrid)[0] == query  # its word and its vector
    tea_doc = parts[0].find_by_path("/d/tea.txt").id
    only_tea = retrieve_from(
        [(parts[0], [tea_doc]), (parts[1], None)], "x", vecs["tea"][0], 5, "dense"
    )
    assert "tea" in names(only_tea) and not {"bikes", "ink"} & set(names(only_tea))  # (a's others)
    assert retrieve_from([(parts[0], []), (parts[1], [])], "x", vecs["tea"][0], 5, "dense") == []
    parts[1].add_document(
        "/e/tea.txt",
        "tea-copy",
        "sha-tea2",
        [ChunkRecord(TEXTS["tea"], 1, 1, 9, "tea")],
        vecs["tea"],
    )
    copies = retrieve_from(
        [(parts[0], None), (parts[1], None)], "green tea", vecs["tea"][0], 5, "hybrid"
    )
    assert [h.text for h in copies].count(TEXTS["tea"]) == 1
    for c in (whole, *parts):
        c.close()


def test_a_small_collection_beside_a_large_one_ranks_as_in_one_collection(tmp_path: Path):
    """An audit: BM25 weighs a word by its own collection's counts, so the one chunk of a
    personal store (every word in half its chunks or more: weighed 1e-6, scored 0) ranked
    below any match of a 30-file store, even holding every word of the question. Lexical
    scores across collections are now those of one collection holding them all."""
    from indexing.hybrid import _shared_bm25
    from indexing.lexical import query_terms
    from indexing.store import retrieve_from

    rng = np.random.default_rng(2)
    note = "My hotel in Lisbon: confirmation number 4417, for the conference."
    filler = [f"Table {i}: the number of items in row {i} is {i * 3}." for i in range(40)]
    big = Collection.open(tmp_path, "big", manifest=MANIFEST, create=True)
    small = Collection.open(tmp_path, "small", manifest=MANIFEST, create=True)
    whole = Collection.open(tmp_path, "whole", manifest=MANIFEST, create=True)

    def add(col, name, text):
        v = rng.standard_normal((1, N_MEM, D)).astype(np.float32)
        col.add_document(f"/d/{name}.txt", name, f"sha-{name}", [ChunkRecord(text, 1, 1, 9, "")], v)

    for i, text in enumerate(filler):
        add(big, f"t{i}", text)
        add(whole, f"t{i}", text)
    add(small, "note", note)
    add(whole, "note", note)
    question = "What is the confirmation number of the hotel in Lisbon?"
    alone = whole.retrieve(question, None, k=5, mode="lexical")
    assert alone[0].doc_name == "note"
    both = retrieve_from([(big, None), (small, None)], question, None, 5, "lexical")
    assert [h.doc_name for h in both] == [h.doc_name for h in alone]
    assert [h.score for h in both] == pytest.approx([h.score for h in alone], rel=0.05)
    assert both[0].collection == "small"
    # each collection's term counts are looked up once, for its search and for the weights
    from indexing.meta import Meta

    looked: list[list[str]] = []
    counts_of = Meta.term_counts

    def counting(self, terms):
        looked.append(terms)
        return counts_of(self, terms)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Meta, "term_counts", counting)
        again = retrieve_from([(big, None), (small, None)], question, None, 5, "lexical")
    assert [h.score for h in again] == [h.score for h in both] and len(looked) == 2
    # one collection: the sum of each term's own score is the collection's score
    terms = query_terms(question)
    for col in (big, whole):
        found = [(0, col.search_lexical(terms, 10))]
        ((_, rescored),) = _shared_bm25([col], terms, found)
        assert [i for i, _ in rescored] == [i for i, _ in found[0][1]]
        assert [s for _, s in rescored] == pytest.approx([s for _, s in found[0][1]], rel=1e-6)
    # a file in each of three collections: still k hits (copies left out after the k-th)
    q = rng.standard_normal((N_MEM, D)).astype(np.float32)
    copies = retrieve_from([(big, None)] * 3, "x", q, 5, "dense")
    assert len(copies) == 5 and len({h.text for h in copies}) == 5
    for c in (big, small, whole):
        c.close()


def test_a_collection_without_a_full_text_index_is_searched_beside_others(tmp_path: Path):
    """A review: one collection an old clara made (no full-text table, and a reader that
    could not add it) made every search of several collections fail as "damaged"; it adds
    no word matches, as when it is searched alone."""
    import sqlite3

    from indexing.store import retrieve_from

    rng = np.random.default_rng(3)
    cols = [Collection.open(tmp_path, n, manifest=MANIFEST, create=True) for n in ("a", "b")]
    vecs = {}
    for col, (name, text) in zip(cols * 2, TEXTS.items()):
        vecs[name] = rng.standard_normal((1, N_MEM, D)).astype(np.float32)
        col.add_document(
            f"/d/{name}.txt", name, f"sha-{name}", [ChunkRecord(text, 1, 1, 9, name)], vecs[name]
        )
    db = sqlite3.connect(tmp_path / "b" / "meta.sqlite")
    db.execute("DROP TABLE chunks_fts_vocab")
    db.execute("DROP TABLE chunks_fts")
    db.commit()
    db.close()
    cols[1].lexical = False
    for mode in ("hybrid", "lexical"):
        hits = retrieve_from([(c, None) for c in cols], "green tea brewed", vecs["git"][0], 3, mode)
        assert hits and hits[0].doc_name in ("tea", "git")
    for c in cols:
        c.close()
