"""Attention on MLX's CPU backend with a fused softmax.

On the CPU, `mx.fast.scaled_dot_product_attention` runs matmul, softmax and matmul, and its
softmax calls MLX's scalar `exp` once per score: for a 272-token compressor input that was
about 40% of the forward pass (BENCHMARKS.md). `attention` does the same arithmetic with the
`exp(s - max)` step in an `mx.compile`d kernel, which `clara._jit` builds for this CPU.

`install(model)` swaps it into the module of the model's mlx-lm (or clara) architecture, in
place of mlx-lm's `scaled_dot_product_attention`, only when MLX computes on the CPU. It hands
quantized KV caches and attention sinks to the original. `CLARA_CPU_ATTENTION=off` keeps the
original.

Inference only, in effect: inside `mx.value_and_grad` MLX calls `mx.compile`d functions
uncompiled, so a training step gets the same arithmetic with MLX's scalar `exp` (a compiled
`exp` over (200, 49152) values took 53 ms alone and 167 ms under `value_and_grad`, the same as
plain `mx.exp`; one-off check, 2026-12-02).
"""

from __future__ import annotations

import sys
from functools import partial

import mlx.core as mx
from mlx_lm.models import base as mlx_base

from clara import _blas

_original = mlx_base.scaled_dot_product_attention


@partial(mx.compile, shapeless=True)
def _exp_shifted(scores: mx.array, top: mx.array) -> mx.array:
    return mx.exp(scores - top)


@partial(mx.compile, shapeless=True)
def _softmax_grad(y: mx.array, g: mx.array, gy: mx.array) -> mx.array:
    return y * (g - gy)


@mx.custom_function
def softmax(scores: mx.array) -> mx.array:
    """Softmax over the last axis, `exp` in a fused kernel; its vjp is the closed form."""
    e = _exp_shifted(scores, scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@softmax.vjp
def _softmax_vjp(primals, cotangent, output):
    return _softmax_grad(output, cotangent, (cotangent * output).sum(axis=-1, keepdims=True))


def _grouped_mask(mask: mx.array, B: int, Hk: int, rep: int) -> mx.array:
    """`mask` broadcastable to the (B, Hk, rep, T, S) scores of grouped-query attention."""
    if mask.ndim <= 2:
        return mask
    if mask.ndim == 3:  # (B, T, S)
        return mask[:, None, None]
    if mask.shape[1] == 1:  # (B, 1, T, S)
        return mask[:, :, None]
    return mask.reshape(B, Hk, rep, *mask.shape[2:])  # (B, H, T, S)


def attention(queries, keys, values, cache, scale: float, mask, sinks=None) -> mx.array:
    """`softmax(q k^T * scale + mask) v`, as mlx-lm's `scaled_dot_product_attention`."""
    if sinks is not None or hasattr(cache, "bits"):
        return _original(queries, keys, values, cache, scale=scale, mask=mask, sinks=sinks)
    B, H, T, D = queries.shape
    Hk, S = keys.shape[1], keys.shape[2]
    rep = H // Hk
    # Each KV head's query rows side by side: (B, Hk, rep*T, D). Plain batched matmuls;
    # broadcasting K or V over a `rep` axis instead made MLX's CPU matmul 40x slower.
    q = (queries * scale).reshape(B, Hk, rep * T, D)
    scores = q @ keys.swapaxes(-1, -2)  # (B, Hk, rep*T, S)
    if scores.dtype != mx.float32:
        scores = scores.astype(mx.float32)
    if mask is not None:
        scores = scores.reshape(B, Hk, rep, T, S)
        if isinstance(mask, str):
            if mask != "causal":
                raise ValueError(f"unsupported attention mask {mask!r}")
            if T > 1:
                keep = mx.arange(S - T, S)[:, None] >= mx.arange(S)[None]
                scores = mx.where(keep, scores, mx.finfo(mx.float32).min)
        else:
            mask = _grouped_mask(mask, B, Hk, rep)
            if mask.dtype == mx.bool_:
                scores = mx.where(mask, scores, mx.finfo(mx.float32).min)
            else:
                scores = scores + mask.astype(mx.float32)
        scores = scores.reshape(B, Hk, rep * T, S)
    weights = softmax(scores).astype(values.dtype)
    return (weights @ values).reshape(B, H, T, D)


def enabled() -> bool:
    return not _blas._off("CLARA_CPU_ATTENTION") and mx.default_device() == mx.cpu


def install(model) -> bool:
    """Use `attention` in `model`'s architecture module (CPU only); True if it is in use."""
    module = sys.modules.get(type(model).__module__)
    if module is None or not hasattr(module, "scaled_dot_product_attention"):
        return False
    current = module.scaled_dot_product_attention
    if not enabled():
        if current is attention:
            module.scaled_dot_product_attention = _original
        return False
    if current is _original or current is attention:
        module.scaled_dot_product_attention = attention
        return True
    return False
