"""Attention on MLX's CPU backend with a fused softmax.

On the CPU, `mx.fast.scaled_dot_product_attention` runs matmul, softmax and matmul, and its
softmax calls MLX's scalar `exp` once per score: for a 272-token compressor input that was
about 40% of the forward pass (BENCHMARKS.md). `attention` does the same arithmetic with the
`exp(s - max)` step in an `mx.compile`d kernel, which `clara._jit` builds for this CPU.

Prompts go further where clara's C library is built (Linux, clara/_blas.py): inside
`fused_passes(start)` (the decoder's prefill) one fused kernel (clara/_attention.c) computes
the scores, mask, softmax and weighted sum a tile of rows at a time without writing the
(rows x keys) scores, and skips the causal upper triangle. On a 1325-token text prompt MLX's
attention was 64% of the prefill, and the prefill took 0.6x the time with the kernel
(bench/bench_burst.py). Where clara's MLX extension builds (clara/_mlx_attention.cpp,
clara/_mlxext.py) the kernel is an op in MLX's graph and waits for nothing, so every prompt
row takes it, in every lane; a memory prompt of ~125 positions then prefills in ~0.8x the
time. Without the extension it reads its inputs through NumPy, which waits for them (30 waits
a forward): then only rows from `start` (`prefill_step`, 512) take it, because on shorter
passes the waits cost what it saved. Query encodings and compressions take the op too
(`encoder_passes`), where the extension builds. Decode steps (`decode_steps()`) take the
extension's other op, for a few rows against keys in their cache layout.
`CLARA_FUSED_ATTENTION=off` keeps MLX's ops everywhere (the default on CPUs without AVX2, where
the kernels' vectors were not measured: `_blas.fused_attention_default`; `on` forces them);
`CLARA_ROWS_ATTENTION=off` keeps the NumPy route for prompts and MLX's ops for decode steps.

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

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.models import base as mlx_base

from clara import _blas, _mlxext, _native, lanes

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


_fused_from: int | None = None  # inside `fused_passes(start)`: its start
_steps = False  # inside `decode_steps()`


@contextmanager
def decode_steps() -> Iterator[None]:
    """Decode steps' forward passes (one new row per sequence, no gradients): their attention
    is one MLX op (`clara/_mlx_attention.cpp`, where it builds) instead of MLX's ~15. Only
    steps take it, never a prompt's rows, so which path a row takes never depends on how a
    prompt was batched, chunked or cached. Entered on the thread that owns the model."""
    global _steps
    previous, _steps = _steps, True
    try:
        yield
    finally:
        _steps = previous


def _ext():
    """clara's MLX extension where it is built and not switched off
    (`CLARA_ROWS_ATTENTION=off`, read at every call), else None."""
    ext = _mlxext.module()
    if ext is None or _native.off("CLARA_ROWS_ATTENTION") or not _blas.fused_attention_default():
        return None
    return ext


def _kernel_mask(mask, B: int, H: int, T: int, S: int):
    """(causal, mask as 4-D) for the kernels: "causal" or None give no array; a boolean
    array broadcastable to (B, H, T, S) is given 4 dims. None where they do not take it
    (another string, an additive or misshapen mask)."""
    if isinstance(mask, str):
        return (True, None) if mask == "causal" else None
    if mask is None:
        return False, None
    if mask.dtype != mx.bool_ or mask.ndim > 4 or mask.shape[-1] != S:
        return None
    m = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    if any(n not in (1, want) for n, want in zip(m.shape[:3], (B, H, T))):
        return None
    return False, m


def rows(
    queries: mx.array, keys: mx.array, values: mx.array, scale: float, mask: Any
) -> mx.array | None:
    """`attention` as one op for a decode step's rows; None where it does not apply (the
    extension unavailable, float16 inputs, an additive or misshapen mask, rows it does not
    take)."""
    ext = _ext()
    B, H, T, D = queries.shape
    Hk, S = keys.shape[1], keys.shape[2]
    if ext is None or queries.dtype != mx.float32 or D % 16 or D > 256 or H % Hk:
        return None
    taken = _kernel_mask(mask, B, H, T, S)
    if taken is None:
        return None
    return ext.attention_rows(queries, keys, values, taken[1], scale, taken[0])


@contextmanager
def fused_passes(start: int) -> Iterator[None]:
    """Inference forward passes over prompts (no gradients, not traced by `mx.compile`) in
    which the rows at positions `start` and on take the fused kernel. A pass's rows start at
    its keys minus its rows (a prompt chunk after the cached positions), so callers cut their
    chunks at `start`. Entered on the thread that owns the model."""
    global _fused_from
    previous, _fused_from = _fused_from, start
    try:
        yield
    finally:
        _fused_from = previous


@contextmanager
def encoder_passes() -> Iterator[None]:
    """Compressor and query-adapter passes (inference, `ClaraModel.compress` and
    `encode_queries`): every row's attention through the fused kernel where it is an MLX op
    (clara/_mlx_attention.cpp). Float32 throughout, the same sums in another order: the
    memories differ from MLX's ops by rounding (~3e-6 of their largest value). Without the
    extension MLX's ops stay, as the NumPy route's waits would cost what it saves at these
    lengths. Five 256-token chunks compressed in 0.88x the time (bench/bench_burst.py)."""
    if _ext() is None:
        yield
        return
    with fused_passes(0):
        yield


def usable() -> bool:
    """Whether `fused_passes` would run the fused kernel here: the library built, this
    attention installed (CPU), the kernel not switched off (`CLARA_FUSED_ATTENTION=off`)."""
    return _blas._thin is not None and _blas.fused_attention_default() and enabled()


def fused_from() -> int | None:
    """The first position whose rows take the fused kernel now (None: none do): inside
    `fused_passes`, where `usable`. As an MLX op (clara/_mlx_attention.cpp, where it builds)
    the kernel waits for nothing, so every prompt row takes it (0), in any lane; through NumPy
    only the rows from `fused_passes`' start do, and none while `lanes.run` builds passes side
    by side (its waits would run them one after the other)."""
    if _fused_from is None or not usable():
        return None
    if _ext() is not None:
        return 0
    return None if lanes.splitting() else _fused_from


def fused_takes(head_dim: int) -> bool:
    """Whether the kernel computes attention with heads of this size (multiples of 64)."""
    return head_dim % 64 == 0 and head_dim <= 256


def _floats(a: np.ndarray) -> tuple[int, ...]:
    return tuple(s // a.itemsize for s in a.strides)


def fused(
    queries: mx.array,
    keys: mx.array,
    values: mx.array,
    scale: float,
    mask: Any,
    causal: bool = False,
) -> mx.array | None:
    """`attention` through clara/_attention.c; None where it does not apply (no library, a
    mask other than None, "causal" or a boolean array, a head size it does not take).
    `causal`: a boolean `mask` hides every key past its row's causal limit anyway, so the
    kernel may skip those key blocks (the same result, half the work of a full prompt)."""
    lib = _blas._thin
    if lib is None:
        return None
    B, H, T, D = queries.shape
    Hk, S = keys.shape[1], keys.shape[2]
    if not fused_takes(D):
        return None
    taken = _kernel_mask(mask, B, H, T, S)
    if taken is None:
        return None
    causal, m = taken[0] or causal, taken[1]
    offset = S - T if causal else 0
    ext = _ext()
    if ext is not None:  # one op, no waits
        return ext.attention_blocks(queries, keys, values, m, scale, causal).astype(queries.dtype)
    arrays = [x if x.dtype == mx.float32 else x.astype(mx.float32) for x in (queries, keys, values)]
    mx.eval(*arrays, *([m] if m is not None else []))
    q, k, v = (np.asarray(x) for x in arrays)
    q, v = (x if x.strides[-1] == x.itemsize else np.ascontiguousarray(x) for x in (q, v))
    kt = np.zeros((B, Hk, D, -(-S // 64) * 64), np.float32)  # the keys transposed, padded
    kt[..., :S] = k.swapaxes(-1, -2)
    mask_ptr, mstrides = None, (0, 0, 0)
    if m is not None:
        mn = np.asarray(m)
        if mn.strides[-1] != 1:
            mn = np.ascontiguousarray(mn)
        mstrides = tuple(0 if n == 1 else st for n, st in zip(mn.shape[:3], mn.strides[:3]))
        mask_ptr = mn.ctypes.data
    out = np.empty((B, T, H, D), np.float32)
    (qb, qh, qt, _), (kb, kh, kd, _), (vb, vh, vs, _) = _floats(q), _floats(kt), _floats(v)
    L = ctypes.c_long
    done = lib.clara_attention(
        B, H, Hk, T, S, D,
        ctypes.c_void_p(q.ctypes.data), L(qb), L(qh), L(qt),
        ctypes.c_void_p(kt.ctypes.data), L(kb), L(kh), L(kd),
        ctypes.c_void_p(v.ctypes.data), L(vb), L(vh), L(vs),
        ctypes.c_void_p(mask_ptr), *map(L, mstrides),
        causal, offset, ctypes.c_float(scale), ctypes.c_void_p(out.ctypes.data),
    )  # fmt: skip
    if not done:
        return None
    return mx.array(out).transpose(0, 2, 1, 3).astype(queries.dtype)


def attention(
    queries: mx.array,
    keys: mx.array,
    values: mx.array,
    cache: Any,
    scale: float,
    mask: Any,
    sinks: mx.array | None = None,
) -> mx.array:
    """`softmax(q k^T * scale + mask) v`, as mlx-lm's `scaled_dot_product_attention`."""
    if sinks is not None or hasattr(cache, "bits"):
        return _original(queries, keys, values, cache, scale=scale, mask=mask, sinks=sinks)
    B, H, T, D = queries.shape
    if _steps and T == 1:
        out = rows(queries, keys, values, scale, mask)
        if out is not None:
            return out
    start = fused_from()
    if start is not None and keys.shape[2] - T >= start:
        # a cache whose masks are causal ones with more hidden (`_Positions`' left padding)
        out = fused(queries, keys, values, scale, mask, getattr(cache, "causal_mask", False))
        if out is not None:
            return out
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
    return not _native.off("CLARA_CPU_ATTENTION") and mx.default_device() == mx.cpu


def install(model: nn.Module) -> bool:
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
        _mlxext.module()  # the attention ops: built (once per machine) at load, not mid-answer
        return True
    return False
