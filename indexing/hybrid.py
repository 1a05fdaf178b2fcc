"""Search a collection the way every surface does: dense, lexical, or both fused (hybrid).

    hits = col.retrieve(question, query_vector, k=5, mode="hybrid")   # -> list[SearchHit]

dense = cosine of the query adapter's vector with the chunks' memories (FAISS); lexical =
BM25 over the chunks' full-text terms (SQLite FTS5); hybrid = reciprocal rank fusion of the
two (`clara.retrieval.Fusion`). A question without one usable word (or a collection without
a full-text index) is searched dense alone, and its hits say so (`mode`). Each hit carries
its text, context line, document and where it ranked in each retriever.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from clara.errors import InvalidArgumentError
from clara.retrieval import RETRIEVAL_MODES, Fused, Fusion, reciprocal_rank_fusion
from indexing.lexical import TITLE_WEIGHT, prune, query_terms
from indexing.meta import Contextual

if TYPE_CHECKING:
    from indexing.store import Collection


@dataclass
class SearchHit(Contextual):
    """One retrieved chunk with its text and document, as the CLI, servers and eval show it."""

    chunk_id: int
    doc_id: str
    doc_name: str
    path: str | None
    ordinal: int
    page_start: int | None
    page_end: int | None
    text: str  # the chunk's own text (what snippets show)
    context: str  # "title / section heading" read in front of it
    score: float  # hybrid: fused RRF score; dense: cosine; lexical: BM25 (higher is better)
    mode: str  # the mode that produced it (hybrid falls back to dense)
    ranks: dict[str, int | None] = field(default_factory=dict)  # 1-based rank per retriever
    scores: dict[str, float] = field(default_factory=dict)  # each retriever's own score
    # (n_mem, d) float32 stored memory vectors, when asked for (`Collection.retrieve`)
    memory: np.ndarray | None = field(default=None, repr=False)
    collection: str = ""  # the collection it is in (`retrieve_across` searches several)


# FTS5's BM25 floors a word's IDF at 1e-6 when it is in half the chunks or more, so a chunk
# matching only such words scores at most this much per word of the question (k1 = 1.2, the
# title weighted TITLE_WEIGHT; doubled for margin: a telling word's IDF is above 1e-3 but
# in collections of millions of chunks). Ranked anyway, those chunks (all 400 pages of a log
# repeating the question's one common word) took lexical ranks 2, 3, ... and buried, in the
# fusion, the one chunk that held the whole sentence asked for. Hybrid ranks by words only
# the chunks above it, unless none is (a collection of 2 chunks floors every word);
# `--mode lexical` lists every match, by score.
FLOORED_WORD_BM25 = 2 * 1e-6 * (1.2 + 1) * (TITLE_WEIGHT + 1)


def check_mode(mode: str) -> str:
    if mode not in RETRIEVAL_MODES:
        raise InvalidArgumentError(
            f"retrieval mode must be one of {', '.join(RETRIEVAL_MODES)}, not {mode!r}"
        )
    return mode


def retrieve(
    col: Collection,
    text: str,
    vector: np.ndarray | None,
    k: int = 5,
    mode: str = "hybrid",
    fusion: Fusion | None = None,
    rerank: int = 0,
    only: np.ndarray | None = None,
) -> list[SearchHit]:
    """Up to `k` hits for the question `text` (and its query vector (n_mem, d), needed by
    dense and hybrid, and by lexical when it falls back), best first, among the chunk ids
    `only` when given; the dense side's nearest `rerank` re-scored by MaxSim
    (`Collection.search`)."""
    return retrieve_across([(col, only)], text, vector, k, mode, fusion, rerank)


def retrieve_across(
    searched: Sequence[tuple[Collection, np.ndarray | None]],
    text: str,
    vector: np.ndarray | None,
    k: int = 5,
    mode: str = "hybrid",
    fusion: Fusion | None = None,
    rerank: int = 0,
) -> list[SearchHit]:
    """`retrieve` over several collections at once, each among its chunk ids `only` when
    given (`searched`: [(collection, only)]), as if they were one: each retriever's
    candidates from all of them are ranked together by its own score, then fused. The dense
    scores of collections indexed by one model are the same cosine (or MaxSim); lexical
    scores are reweighed to those of one collection holding them all (`_shared_bm25`). A
    collection without a full-text index adds no lexical candidates (alone, it is searched
    dense, as `retrieve` does)."""
    check_mode(mode)
    searched = [(col, only) for col, only in searched if only is None or len(only)]
    if not searched:
        return []  # (a filter no document passes)
    fusion = fusion or Fusion()
    # (twice k from one retriever: room for the copies `_hits` leaves out)
    depth = max(k, fusion.depth) if mode == "hybrid" else 2 * k
    if vector is None and mode != "lexical":
        raise InvalidArgumentError(f"{mode} retrieval needs the question's query vector")
    terms = query_terms(text)
    lexical = None
    if mode != "dense":
        # several: each term's chunks counted once in each, for its search and its weight
        several = len(searched) > 1 and bool(terms)
        stats = [col.term_stats(terms) for col, _ in searched] if several else None
        found = [
            (i, col.search_lexical(terms, depth, only, stats[i][1] if stats else None))
            for i, (col, only) in enumerate(searched)
        ]
        if any(hits is not None for _, hits in found):
            if stats:  # (each collection's scores weigh words by its own counts)
                found = _shared_bm25([col for col, _ in searched], terms, found, stats)
            lexical = _ranked([(i, cid, s) for i, hits in found for cid, s in hits or []])
    if lexical is None and mode != "dense":
        if vector is None:
            return []  # lexical alone, nothing to search with
        mode = "dense"  # no usable word, or no full-text index
    dense: list = []
    if mode != "lexical":
        dense = _ranked(
            [
                (i, h.chunk_id, h.score)
                for i, (col, only) in enumerate(searched)
                for h in col.search(vector, depth, rerank, only)[0]
            ]
        )
    if mode == "hybrid":  # only matches on a word that tells chunks apart
        floor = FLOORED_WORD_BM25 * len(terms)  # (distinct terms)
        lexical = [hit for hit in lexical if hit[1] > floor] or lexical
        # each list as deep as one collection holding them all would make it: fused, what
        # ranks below it would count (one collection's lists are that deep already)
        dense, lexical = dense[:depth], lexical[:depth]
    dense_scores, lexical_scores = dict(dense), dict(lexical or [])
    rankings = {}
    if mode != "lexical":
        rankings["dense"] = [i for i, _ in dense]
    if mode != "dense":
        rankings["lexical"] = [i for i, _ in lexical]
    if mode == "hybrid":
        fused = reciprocal_rank_fusion(rankings, fusion.k, fusion.weights)
    else:
        only = rankings[mode]
        own = dense_scores if mode == "dense" else lexical_scores
        fused = [Fused(i, own[i], {mode: r}) for r, i in enumerate(only, start=1)]
    cols = [col for col, _ in searched]
    page, out = 2 * k, []  # (twice k: room for the copies `without_copies` leaves out)
    for start in range(0, len(fused), page):
        out = without_copies(
            out + _hits(cols, fused[start : start + page], mode, dense_scores, lexical_scores)
        )
        if len(out) >= k or len(cols) == 1:  # (a file in each of several collections searched
            break  # is there once for each: read on; one collection: its first page, as ever)
    return out[:k]


def fts_idf(rows: int, holding: int) -> float:
    """The weight FTS5's bm25 gives a term held by `holding` of `rows` chunks (at least 1e-6:
    one in half of them or more weighs almost nothing)."""
    idf = math.log((rows - holding + 0.5) / (holding + 0.5)) if rows else 0.0
    return idf if idf > 0 else 1e-6


def _shared_bm25(
    cols: list[Collection],
    terms: list[str],
    found: list[tuple[int, list | None]],
    stats: list[tuple[int, list[int]]] | None = None,
) -> list[tuple[int, list | None]]:
    """Each collection's lexical hits scored as if the collections were one: BM25 weighs a
    term by how rare it is among all their chunks, not among each one's own. A word in both
    chunks of a 2-chunk store weighed nothing there (every score 0), and a store of 13 chunks
    weighed a word 3 or 4 times less than the 436 chunks of all the stores did, so a small
    store's best chunks ranked below any match of a large one (an audit). Each hit's score is
    the sum of each term's own score in its collection, times the term's weight over all of
    them divided by its weight in its own (the words' frequencies in the chunk and its
    length, normalized in its own collection, are kept as they are). `stats`: each
    collection's `term_stats(terms)`, when the caller has them."""
    stats = stats if stats is not None else [col.term_stats(terms) for col in cols]
    rows = sum(n for n, _ in stats)
    holding = [sum(counts[t] for _, counts in stats) for t in range(len(terms))]
    shared = [fts_idf(rows, h) for h in holding]
    out: list[tuple[int, list | None]] = []
    for i, hits in found:
        if not hits:
            out.append((i, hits))
            continue
        n, counts = stats[i]
        ids = [cid for cid, _ in hits]
        score = dict.fromkeys(ids, 0.0)
        for t in prune(terms, counts):  # (the terms its search scored: `Meta.lexical_search`)
            at = terms.index(t)
            ratio = shared[at] / fts_idf(n, counts[at])
            for cid, part in cols[i].term_scores(t, ids).items():
                score[cid] += part * ratio
        out.append((i, sorted(score.items(), key=lambda kv: -kv[1])))
    return out


def _ranked(found: list[tuple[int, int, float]]) -> list[tuple[tuple[int, int], float]]:
    """[((collection's place, chunk id), score)] best first: one retriever's candidates, each
    collection's best first, from every collection searched (a stable sort: one
    collection's ties keep its order; one collection's list is taken as it is)."""
    ranked = [((i, cid), s) for i, cid, s in found]
    if len({i for i, _, _ in found}) > 1:
        ranked.sort(key=lambda t: -t[1])
    return ranked


def without_copies(hits: list[SearchHit]) -> list[SearchHit]:
    """`hits` (best first) without those whose text, spaces aside, a better one has: the same
    file indexed twice, uploaded twice, or a notice every page repeats took one place of the
    answer's few for each copy."""
    out, seen = [], set()
    for h in hits:
        text = " ".join(h.text.split())
        if text not in seen:
            seen.add(text)
            out.append(h)
    return out


def _hits(cols, top, mode, dense_scores, lexical_scores) -> list[SearchHit]:
    """Fused items ((collection's place in `cols`, chunk id)) -> hits with text and
    document; ids removed meanwhile are skipped."""
    chunks, docs = {}, {}
    for i, col in enumerate(cols):
        ids = [cid for at, cid in (f.id for f in top) if at == i]
        if not ids:
            continue
        found = {c.id: c for c in col.chunks(ids)}
        chunks.update({(i, cid): c for cid, c in found.items()})
        docs.update({(i, d): col.document(d) for d in {c.doc_id for c in found.values()}})
    out = []
    for f in top:
        c = chunks.get(f.id)
        d = docs.get((f.id[0], c.doc_id)) if c is not None else None
        if d is None:
            continue
        scores = {"dense": dense_scores.get(f.id), "lexical": lexical_scores.get(f.id)}
        out.append(
            SearchHit(
                c.id, c.doc_id, d.name, d.path, c.ordinal, c.page_start, c.page_end, c.text,
                c.context, float(f.score), mode, dict(f.ranks),
                {n: float(v) for n, v in scores.items() if v is not None},
                collection=cols[f.id[0]].name,
            )
        )  # fmt: skip
    return out
