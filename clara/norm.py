"""RMSNorm on MLX's CPU backend as one compiled graph.

On the CPU, `mx.fast.rms_norm` has no kernel: MLX builds its reference graph at every call
(square, sum, the element count, scale, add, rsqrt, two products: about 10 ops with their
broadcasts), 61 times per forward pass of a 30-layer Llama. `CompiledRMSNorm` runs the same
reference (`mlx/fast.cpp`, the fallback of `rms_norm`) through `mx.compile`, so the
elementwise ops around the reduction run fused: outputs are bit for bit `mx.fast.rms_norm`'s
(tested; the JIT does not contract products and sums into FMAs, `clara._jit`). Measured on a
decode step (one-off): about 3 ms of ~35 at batch 1.

`install(model)` swaps it in for every float32 `nn.RMSNorm` (CPU only); the parameters are
the same arrays under the same names. `CLARA_CPU_NORM=off` keeps `nn.RMSNorm`.
"""

from __future__ import annotations

from functools import partial

import mlx.core as mx
import mlx.nn as nn

from clara import _native


@partial(mx.compile, shapeless=True)
def _rms_norm(x: mx.array, weight: mx.array, eps: mx.array) -> mx.array:
    return x * mx.rsqrt(mx.mean(mx.square(x), axis=-1, keepdims=True) + eps) * weight


class CompiledRMSNorm(nn.Module):
    """`nn.RMSNorm` (same `weight`, same results) for float32 inputs on the CPU."""

    def __init__(self, norm: nn.RMSNorm) -> None:
        super().__init__()
        self.weight = norm.weight
        self.eps = norm.eps
        self._eps = mx.array(norm.eps, dtype=mx.float32)

    def __call__(self, x: mx.array) -> mx.array:
        if x.dtype == mx.float32 and self.weight.dtype == mx.float32:
            return _rms_norm(x, self.weight, self._eps)
        return mx.fast.rms_norm(x, self.weight, self.eps)


def enabled() -> bool:
    return not _native.off("CLARA_CPU_NORM") and mx.default_device() == mx.cpu


def install(model: nn.Module) -> int:
    """Put `CompiledRMSNorm` in place of every `nn.RMSNorm` child of `model` (CPU only; back
    to `nn.RMSNorm` otherwise); returns how many modules now use it."""
    count = 0
    for _, module in model.named_modules():
        for name, child in list(module.children().items()):
            if enabled() and type(child) is nn.RMSNorm:
                setattr(module, name, CompiledRMSNorm(child))
            elif not enabled() and isinstance(child, CompiledRMSNorm):
                plain = nn.RMSNorm(child.weight.shape[0], eps=child.eps)
                plain.weight = child.weight
                setattr(module, name, plain)
            count += isinstance(getattr(module, name), CompiledRMSNorm)
    return count
