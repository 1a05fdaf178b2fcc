"""Training losses as pure functions on `mx.array` (sums; the trainer divides by global counts).

Returning sums instead of means makes gradient accumulation and data parallelism exact: the
trainer divides by the token / document counts of the whole optimiser step on every rank.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def masked_ce_sum(logits: mx.array, targets: mx.array, mask: mx.array) -> mx.array:
    """Sum of next-token cross-entropy over positions where `mask` is 1.

    logits `(B, A, V)`, targets `(B, A)` int, mask `(B, A)` float -> scalar.
    """
    ce = nn.losses.cross_entropy(logits.astype(mx.float32), targets, reduction="none")  # (B, A)
    return (ce * mask).sum()


def memory_mse(memory: mx.array, hidden: mx.array, text_mask: mx.array) -> mx.array:
    """Per-document MSE between the mean memory state and the mean document-token state.

    memory `(B, n_mem, d)`, hidden `(B, L, d)`, text_mask `(B, L)` bool -> `(B,)`; each row
    is `mean_d((mean_j memory[j] - mean_{t in doc} hidden[t]) ** 2)`, the reference's
    `F.mse_loss(non_mem_mean, mem_mean)` per document.
    """
    m = text_mask.astype(hidden.dtype)[..., None]  # (B, L, 1)
    count = mx.maximum(m.sum(axis=1), 1.0)  # (B, 1)
    doc_mean = (hidden * m).sum(axis=1) / count  # (B, d)
    mem_mean = memory.mean(axis=1)  # (B, d)
    return ((mem_mean - doc_mean).astype(mx.float32) ** 2).mean(axis=-1)


def lm_ce_sum(logits: mx.array, tokens: mx.array, mask: mx.array) -> mx.array:
    """Plain language-model loss: sum of CE predicting `tokens[:, 1:]` where `mask[:, 1:]` is 1.

    logits `(B, L, V)` (from `tokens`), tokens `(B, L)`, mask `(B, L)` -> scalar.
    """
    return masked_ce_sum(logits[:, :-1], tokens[:, 1:], mask[:, 1:].astype(mx.float32))
