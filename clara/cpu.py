"""One line on what clara's CPU paths do here, for startup logs and benchmark headers."""

from __future__ import annotations

import sys

from clara import _blas, _jit, _mlxext
from clara._native import off


def describe() -> str:
    """One line on the CPU matmul path, for logs and benchmark headers."""
    if not sys.platform.startswith("linux"):
        return "BLAS: the platform's own"
    blas = _blas.loaded or f"reference ({_blas.reason})"
    thin_kernel = "on" if _blas.thin else f"off ({_blas.thin_reason})"
    rows = _mlxext.describe()
    if not _blas.fused_attention_default():
        rows = "fused attention off" + (
            "" if off("CLARA_FUSED_ATTENTION") else " (not built for AVX2 or AVX-512)"
        )
    elif _blas.attention_lanes():
        rows = ", ".join(
            filter(None, (f"fused attention {_blas.attention_lanes()}-float vectors", rows))
        )
    return (
        f"BLAS {blas}, thin-matmul kernel {thin_kernel}, decode weights {_blas.decode_weights()}, "
        f"{f'generator products bfloat16 ({_blas.bf16_engine}), ' if _blas.bf16 else ''}{_jit.describe()}"
        f"{', ' + rows if rows else ''}"
    )
