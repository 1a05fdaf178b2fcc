"""Retrieval math as pure functions: cosine of flattened memory vectors, differentiable top-k."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def flatten_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """`(N, n_mem, d)` -> `(N, n_mem*d)` float32 rows of unit L2 norm (for inner-product search)."""
    flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.maximum(norms, eps)


def cosine_scores(queries: mx.array, docs: mx.array, eps: float = 1e-12) -> mx.array:
    """Cosine similarity of flattened vectors: `(Q, n_mem, d)` x `(N, n_mem, d)` -> `(Q, N)`."""
    q = queries.reshape(queries.shape[0], -1).astype(mx.float32)
    k = docs.reshape(docs.shape[0], -1).astype(mx.float32)
    q = q / mx.maximum(mx.linalg.norm(q, axis=-1, keepdims=True), eps)
    k = k / mx.maximum(mx.linalg.norm(k, axis=-1, keepdims=True), eps)
    return q @ k.T


def soft_topk(scores: mx.array, k: int, tau: float) -> mx.array:
    """Sequential masked softmax relaxation of top-k: `(..., N)` -> `(..., k, N)`.

    Row i is softmax(scores / tau) over the items not yet picked by rows < i, where "picked"
    is the hard argmax of each earlier row (the reference's masking).
    """
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
    idx = mx.argsort(-scores, axis=-1)[..., :k]  # (..., k)
    return (idx[..., None] == mx.arange(scores.shape[-1])).astype(scores.dtype)


def differentiable_topk(scores: mx.array, k: int, tau: float = 0.02) -> mx.array:
    """Straight-through top-k: forward = hard one-hot selection, backward = soft relaxation.

    `W = K_hard + K_soft - stop_gradient(K_soft)`; select context with `W @ doc_vectors`.
    """
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
