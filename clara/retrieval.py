"""Retrieval math as pure functions: cosine of flattened memory vectors, late interaction
(MaxSim) over them, differentiable top-k,
reciprocal rank fusion of several rankings. mlx is imported by the functions that use it, so
the index (numpy, FAISS, SQLite) can fuse rankings without loading it."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import mlx.core as mx

#: Where retrieval happens, one of these: hybrid fuses the other two.
RETRIEVAL_MODES = ("hybrid", "dense", "lexical")
#: What the generator reads of the retrieved chunks: their memory vectors (CLaRa), their raw
#: text (classic RAG, the bare model) or the best one's text and the others' memories.
READING_MODES = ("memory", "text", "mixed")
#: How the query adapter's vectors score a chunk's memory vectors: "flat" is the paper's
#: cosine of the flattened vectors; "maxsim" re-scores the RERANK_DEPTH nearest by it with
#: late interaction (`maxsim_scores`). A checkpoint names its own (`ClaraConfig.dense_scoring`).
DENSE_SCORINGS = ("flat", "maxsim")
RERANK_DEPTH = 100


@dataclass(frozen=True)
class Fusion:
    """Reciprocal rank fusion settings: score(d) = sum over retrievers r of
    weights[r] / (k + rank_r(d)), ranks from 1; `depth` candidates are taken from each.

    Defaults tuned by `bench/bench_retrieval.py --tune` on the TRAIN-split questions of Apple's
    ml-clara example documents (never the held-out ones; table in BENCHMARKS.md) for the default
    adapters shipped on 2026-12-04, whose query adapter ranks nearly as well as BM25: the
    memory-vector ranking counts half, and k = 60 (the usual RRF constant) lets a document that
    both rank high beat one that only one of them ranks first. (For the weaker adapters before
    them the best was k = 5 and a quarter: `--fusion-k 5 --dense-weight 0.25`.)"""

    k: float = 60.0
    weights: Mapping[str, float] = field(default_factory=lambda: {"dense": 0.5, "lexical": 1.0})
    depth: int = 50

    def __post_init__(self) -> None:
        if not self.k > 0:
            raise ValueError(f"fusion k must be positive, got {self.k}")
        if any(not w >= 0 for w in self.weights.values()):
            raise ValueError(f"fusion weights must be >= 0, got {dict(self.weights)}")
        if self.depth < 1:
            raise ValueError(f"fusion depth must be at least 1, got {self.depth}")

    def score(self, ranks: Mapping[str, int | None]) -> float:
        """The fused score of an item with these 1-based ranks (None: not returned)."""
        return rrf_score(ranks, self.k, self.weights)


def rrf_score(
    ranks: Mapping[str, int | None], k: float, weights: Mapping[str, float] | None = None
) -> float:
    """`sum_r weights[r] / (k + rank_r)` over the rankings that returned the item (weight 1
    where none is given)."""
    weights = weights or {}
    return sum(weights.get(n, 1.0) / (k + r) for n, r in ranks.items() if r is not None)


@dataclass(frozen=True)
class Fused:
    """One fused item: its RRF score and its 1-based rank in each ranking (None: absent)."""

    id: Hashable
    score: float
    ranks: dict[str, int | None]


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[Hashable]],
    k: float = 60.0,
    weights: Mapping[str, float] | None = None,
) -> list[Fused]:
    """Fuse best-first rankings by `sum_r weights[r] / (k + rank)`; best first, ties broken by
    the best single rank, then by first appearance (rankings taken in order)."""
    ranks: dict[Hashable, dict[str, int | None]] = {}
    for name, ranking in rankings.items():
        for rank, item in enumerate(ranking, start=1):
            entry = ranks.setdefault(item, dict.fromkeys(rankings))
            if entry[name] is None:  # a repeated item keeps its best rank
                entry[name] = rank
    fused = []
    for order, (item, r) in enumerate(ranks.items()):
        best = min(v for v in r.values() if v is not None)
        fused.append((rrf_score(r, k, weights), best, order, item, r))
    fused.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [Fused(item, score, r) for score, _, _, item, r in fused]


def flatten_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """`(N, n_mem, d)` -> `(N, n_mem*d)` float32 rows of unit L2 norm (for inner-product search)."""
    x = np.asarray(x, dtype=np.float32)
    flat = x.reshape(len(x), int(np.prod(x.shape[1:])))  # also for no rows
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.maximum(norms, eps)


def unit(x: mx.array, eps: float = 1e-12) -> mx.array:
    """`x` scaled to unit L2 norm along its last axis (MLX, differentiable)."""
    import mlx.core as mx

    return x / mx.maximum(mx.linalg.norm(x, axis=-1, keepdims=True), eps)


def cosine_scores(queries: mx.array, docs: mx.array, eps: float = 1e-12) -> mx.array:
    """Cosine similarity of flattened vectors: `(Q, n_mem, d)` x `(N, n_mem, d)` -> `(Q, N)`."""
    import mlx.core as mx

    q = unit(queries.reshape(queries.shape[0], -1).astype(mx.float32), eps)
    k = unit(docs.reshape(docs.shape[0], -1).astype(mx.float32), eps)
    return q @ k.T


def maxsim_scores(queries: mx.array, docs: mx.array, eps: float = 1e-12) -> mx.array:
    """Late interaction over memory vectors: `(Q, n_mem, d)` x `(N, n_mem, d)` -> `(Q, N)`, each
    query vector's best cosine among a document's vectors, averaged over the query vectors
    (ColBERT's MaxSim, as a mean so it lies in [-1, 1] like the flattened cosine). `docs` of
    shape `(Q, N, n_mem, d)` are each query's own candidates. Differentiable."""
    import mlx.core as mx

    q = unit(queries.astype(mx.float32), eps)
    k = unit(docs.astype(mx.float32), eps)
    if k.ndim == 4:  # (Q, N, m, n): each candidate vector against each query vector
        return (k @ q[:, None].swapaxes(-1, -2)).max(axis=-2).mean(axis=-1)
    Q, n, d = q.shape
    N, m, _ = k.shape
    s = (q.reshape(Q * n, d) @ k.reshape(N * m, d).T).reshape(Q, n, N, m)
    return s.max(axis=-1).mean(axis=1)


def maxsim_numpy(queries: np.ndarray, docs: np.ndarray, block: int = 512) -> np.ndarray:
    """`maxsim_scores` in numpy (float32), `docs` taken `block` at a time: the index re-scores
    its nearest candidates with it. The products run in numpy's own loops (`einsum`), not its
    threaded BLAS: inside clara-serve, right after a query encoding, BLAS threads waking
    beside MLX's made a 100-candidate re-score take 20-40 ms instead of ~3."""

    def units(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        norms = np.linalg.norm(x, axis=-1, keepdims=True)
        return x / np.maximum(norms, 1e-12)

    q, k = units(queries), units(docs)
    Q, n, d = q.shape
    out = np.empty((Q, len(k)), np.float32)
    for lo in range(0, len(k), block):
        part = k[lo : lo + block]
        s = np.einsum("qid,njd->qinj", q, part, optimize=False)  # (Q, n, B, m)
        out[:, lo : lo + len(part)] = s.max(axis=-1).mean(axis=1)
    return out


def maxsim_rerank(
    query: np.ndarray, cands: Sequence[int], memories: np.ndarray, k: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One query `(n_mem, d)`'s candidate ids `cands`, with their memories `(len(cands), m, d)`,
    re-scored by MaxSim: (scores, ids) best first, at most `k` (default all)."""
    scores = maxsim_numpy(query[None], memories)[0]
    best = np.argsort(-scores, kind="stable")[:k]
    return scores[best], np.asarray(cands)[best]


def soft_topk(scores: mx.array, k: int, tau: float) -> mx.array:
    """Sequential masked softmax relaxation of top-k: `(..., N)` -> `(..., k, N)`.

    Row i is softmax(scores / tau) over the items not yet picked by rows < i, where "picked"
    is the hard argmax of each earlier row (the reference's masking).
    """
    import mlx.core as mx

    rows = []
    mask = mx.zeros(scores.shape, dtype=mx.bool_)
    neg = mx.array(-1e9, dtype=scores.dtype)
    for _ in range(k):
        logits = mx.where(mask, neg, scores / tau)
        row = mx.softmax(logits, axis=-1)
        rows.append(row)
        picked = mx.argmax(logits, axis=-1, keepdims=True)
        mask = mask | (mx.arange(scores.shape[-1]) == picked)
    return mx.stack(rows, axis=-2)


def hard_topk(scores: mx.array, k: int) -> mx.array:
    """One-hot rows of the k best items in descending order: `(..., N)` -> `(..., k, N)`."""
    import mlx.core as mx

    idx = mx.argsort(-scores, axis=-1)[..., :k]  # (..., k)
    return (idx[..., None] == mx.arange(scores.shape[-1])).astype(scores.dtype)


def differentiable_topk(scores: mx.array, k: int, tau: float = 0.02) -> mx.array:
    """Straight-through top-k: forward = hard one-hot selection, backward = soft relaxation.

    `W = K_hard + K_soft - stop_gradient(K_soft)`; select context with `W @ doc_vectors`.
    """
    import mlx.core as mx

    soft = soft_topk(scores, k, tau)
    return hard_topk(scores, k) + soft - mx.stop_gradient(soft)


def recall_precision_at_k(
    ranked: list[list[int]], positives: list[list[int]], ks: tuple[int, ...] = (1, 3, 5)
) -> dict[str, float]:
    """Mean Recall@k / Precision@k over questions, given ranked ids and gold ids."""
    out: dict[str, float] = {}
    for k in ks:
        rec, prec = [], []
        for r, pos in zip(ranked, positives):
            if not pos:
                continue
            hits = len(set(r[:k]) & set(pos))
            rec.append(hits / len(pos))
            prec.append(hits / k)
        out[f"recall@{k}"] = float(np.mean(rec)) if rec else 0.0
        out[f"precision@{k}"] = float(np.mean(prec)) if prec else 0.0
    return out
