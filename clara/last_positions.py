"""A forward pass whose caller reads only its last positions' final hidden states.

An encoder pass (`ClaraModel.compress`, `encode_queries`) keeps the hidden states of its
`n_mem` memory positions, the last of each row, and drops the rest. Every block but the last
still needs every position (the next block's keys and values read them), but the last block's
queries, attention output, MLP and final norm matter only at the kept positions; its keys and
values are computed for all. For a 256-token chunk with 16 memory positions that skips 94% of
the last block's products: ~3% of a 30-block compressor pass (1/32 of an 8B model's). Each kept
row gets the full pass's arithmetic on fewer rows; as the matmul kernels group rows by count,
it agrees with the full pass to float32 rounding (~5e-6 of the largest value), not bit for bit.

Taken by architectures whose blocks are Llama's layout (mlx-lm's llama, clara's hyperclovax:
`input_layernorm`, `self_attn` with q/k/v/o projections and `rope`, `post_attention_layernorm`,
`mlp`, and hyperclovax's multipliers and post-norms); others run the whole pass and slice it.
"""

from __future__ import annotations

import sys

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import create_attention_mask

_TAKEN = ("mlx_lm.models.llama", "clara.models.hyperclovax")


def taken(model: nn.Module) -> bool:
    """Whether `model` (an architecture's `lm.model`) takes the short last block."""
    layers = getattr(model, "layers", None)
    if not layers or type(model).__module__ not in _TAKEN:
        return False
    if getattr(model, "swa_idx", None) is not None:  # sliding-window layers: another mask
        return False
    return type(layers[-1]).__module__ == type(model).__module__


def final_hidden(model: nn.Module, embeddings: mx.array, cache: list, rows: int) -> mx.array:
    """`model(None, cache, embeddings)[:, -rows:]` (hidden states after the final norm),
    with the last block computed for those rows only where the architecture is `taken`.
    `cache`: one per layer, all at the same offset (a stateless stand-in such as
    `clara.model._Positions`, whose masks hide the keys a causal mask hides)."""
    if not taken(model):
        return model(None, cache=cache, input_embeddings=embeddings)[:, -rows:]
    multiplier = getattr(model.args, "embedding_multiplier", 1.0)
    h = embeddings * multiplier if multiplier != 1.0 else embeddings
    mask = create_attention_mask(h, cache[0])
    for layer, c in zip(model.layers[:-1], cache[:-1]):
        h = layer(h, mask, cache=c)
    if mask is not None and not isinstance(mask, str):  # "causal": row t of the last `rows`
        mask = mask[..., -rows:, :]  # sees keys up to S - rows + t, what the kernels apply
    return model.norm(_last_block(model.layers[-1], h, mask, cache[-1], rows))


def _last_block(block, x: mx.array, mask, cache, rows: int) -> mx.array:
    """`block(x, mask, cache)[:, -rows:]` for a Llama-layout block, its queries, attention
    output and MLP computed for those rows only."""
    attn = block.self_attn
    B, L, _ = x.shape
    normed = block.input_layernorm(x)
    q = attn.q_proj(normed[:, -rows:]).reshape(B, rows, attn.n_heads, -1).transpose(0, 2, 1, 3)
    k = attn.k_proj(normed).reshape(B, L, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
    v = attn.v_proj(normed).reshape(B, L, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
    offset = cache.offset if cache is not None else 0
    q = attn.rope(q, offset=offset + (L - rows))
    k = attn.rope(k, offset=offset)
    if cache is not None:
        k, v = cache.update_and_fetch(k, v)
    # the attention the architecture's module calls (clara.attention swaps its own in there)
    sdpa = sys.modules[type(attn).__module__].scaled_dot_product_attention
    out = sdpa(q, k, v, cache=cache, scale=attn.scale, mask=mask)
    r = attn.o_proj(out.transpose(0, 2, 1, 3).reshape(B, rows, -1))
    post = getattr(block, "use_post_norm", False)
    scale = getattr(block, "residual_multiplier", 1.0)
    if post:
        r = block.post_norm1(r)
    h = x[:, -rows:] + (r * scale if scale != 1.0 else r)
    r = block.mlp(block.post_attention_layernorm(h))
    if post:
        r = block.post_norm2(r)
    return h + (r * scale if scale != 1.0 else r)
