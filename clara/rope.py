"""Rotary position embedding on MLX's CPU backend, its angles computed once per forward pass.

On the CPU, `mx.fast.rope` has no kernel: MLX builds its reference graph at every call
(positions, inverse frequencies, angles, cos, sin, then the rotation: about 25 ops). A
Llama-style layer calls it twice (queries, keys), so a decode step of a 30-layer model ran
~1500 of these small ops, each paying MLX's per-op dispatch: with RoPE left out (wrong
answers, a timing bound only) a batch-1 decode step of SmolLM2-135M took 29 ms instead of
41 ms here.

`SharedRoPE` replaces the architecture's `nn.RoPE` (CPU only, `install`). Inside
`same_positions(cache)`, which clara's forward passes enter, every layer rotates the same
positions (each layer's cache has advanced the same way), so the cos/sin tables are built by
the first call and reused by the other 59; the rotation's products and sums run as one
compiled function (the JIT keeps them apart, no FMA: `clara._jit`). The arithmetic is op for
op MLX's own reference (`mlx/fast.cpp`, the fallback of `rope`): outputs are bit for bit
`mx.fast.rope`'s (tested). Measured (one-off): a batch-1 decode step 40.5 -> 34.0 ms.
Outside such a block, or for an offset the block does not know, it computes its own tables
the same way. `CLARA_CPU_ROPE=off` keeps `nn.RoPE`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache, partial

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from clara import _native

_local = threading.local()  # the innermost `same_positions` block of this thread


class _Block:
    def __init__(self, ints: set[int], ids: set[int]) -> None:
        self.ints = ints  # integer offsets of the block's caches
        self.ids = ids  # id() of array offsets of the block's caches
        self.tables: dict[tuple, tuple[mx.array, mx.array]] = {}

    def knows(self, offset) -> bool:
        if isinstance(offset, int):
            return offset in self.ints
        return id(offset) in self.ids


@contextmanager
def same_positions(cache: Sequence | None) -> Iterator[None]:
    """A forward pass whose layers all rotate the same positions: `cache` is its per-layer
    caches (each with an `offset`, all equal), or None (offset 0)."""
    offsets = [0] if not cache else [getattr(c, "offset", 0) for c in cache]
    ints = {o for o in offsets if isinstance(o, int)}
    ids = {id(o) for o in offsets if not isinstance(o, int)}
    previous = getattr(_local, "block", None)
    _local.block = _Block(ints, ids)
    try:
        yield
    finally:
        _local.block = previous


@cache
def _inv_freqs(base: float, dims: int) -> mx.array:
    """The reference's inverse frequencies `exp(-i * logf(base) / (dims / 2))`, its step in
    float32 exactly as `std::log(float) / int` in C++; made once per (base, dims)."""
    half = dims // 2
    libm = ctypes.util.find_library("m")  # C's logf, as the reference calls it
    if libm is not None:
        logf = ctypes.CDLL(libm).logf
        logf.restype, logf.argtypes = ctypes.c_float, [ctypes.c_float]
        log_base = np.float32(logf(float(np.float32(base))))
    else:
        log_base = np.float32(math.log(np.float32(base)))
    step = mx.array(float(log_base / np.float32(half)))
    out = mx.exp(mx.arange(0, -half, -1, dtype=mx.float32) * step)
    mx.eval(out)
    return out


@partial(mx.compile, shapeless=True)
def _rotate(x1: mx.array, x2: mx.array, cos: mx.array, sin: mx.array):
    """The rotation, op for op the reference's, in one fused kernel."""
    return x1 * cos - x2 * sin, x1 * sin + x2 * cos


class SharedRoPE(nn.Module):
    """`nn.RoPE` with its tables shared by the layers of one forward pass (see the module)."""

    def __init__(self, rope: nn.RoPE) -> None:
        super().__init__()
        self.dims, self.traditional = rope.dims, rope.traditional
        self.base, self.scale = rope.base, rope.scale
        self._inv_freqs = _inv_freqs(self.base, self.dims)  # "_": not a parameter

    def _tables(self, T: int, offset, dtype: mx.Dtype) -> tuple[mx.array, mx.array]:
        off = mx.array(offset, dtype=mx.int32) if isinstance(offset, int) else offset
        if off.size > 1:
            off = mx.expand_dims(off, (-1, -2))
        positions = (mx.arange(T, dtype=mx.float32) + off) * mx.array(self.scale, mx.float32)
        theta = mx.expand_dims(positions, -1) * self._inv_freqs
        return mx.cos(theta).astype(dtype), mx.sin(theta).astype(dtype)

    def __call__(self, x: mx.array, offset=0) -> mx.array:
        shape = x.shape
        if x.ndim == 3:
            x = mx.expand_dims(x, 1)
        elif x.ndim > 4:
            x = mx.flatten(x, 1, x.ndim - 3)
        T = x.shape[2]
        block = getattr(_local, "block", None)
        if block is not None and block.knows(offset):
            key = (T, x.dtype, self.dims, self.base, self.scale)
            tables = block.tables.get(key)
            if tables is None:
                tables = block.tables[key] = self._tables(T, offset, x.dtype)
        else:
            tables = self._tables(T, offset, x.dtype)
        cos, sin = tables
        half, dims = self.dims // 2, self.dims
        if self.traditional:
            x1, x2 = x[..., 0:dims:2], x[..., 1:dims:2]
        else:
            x1, x2 = x[..., :half], x[..., half:dims]
        outs = list(_rotate(x1, x2, cos, sin))
        if self.traditional:
            B, N = x.shape[0], x.shape[1]
            out = mx.concatenate([mx.expand_dims(o, -1) for o in outs], axis=-1)
            out = out.reshape(B, N, T, dims)
            if dims < x.shape[-1]:
                out = mx.concatenate([out, x[..., dims:]], axis=-1)
            return out.reshape(shape)
        if dims < x.shape[-1]:
            outs.append(x[..., dims:])
        return mx.concatenate(outs, axis=-1).reshape(shape)


def enabled() -> bool:
    return not _native.off("CLARA_CPU_ROPE") and mx.default_device() == mx.cpu


def install(model: nn.Module) -> int:
    """Put `SharedRoPE` in place of every plain `nn.RoPE` of `model` (CPU only; back to
    `nn.RoPE` otherwise); returns how many modules now use it."""
    count = 0
    for _, module in model.named_modules():
        rope = getattr(module, "rope", None)
        if enabled() and type(rope) is nn.RoPE:
            module.rope = SharedRoPE(rope)
        elif not enabled() and isinstance(rope, SharedRoPE):
            module.rope = nn.RoPE(rope.dims, rope.traditional, rope.base, rope.scale)
        count += isinstance(getattr(module, "rope", None), SharedRoPE)
    return count
