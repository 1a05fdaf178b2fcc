"""Fast float32 matmuls for MLX's Linux CPU backend.

The `mlx[cpu]` wheel links the netlib reference BLAS (~6 GFLOP/s). Loading OpenBLAS with
RTLD_GLOBAL before `mlx` is first imported makes MLX's cblas calls resolve to it (~50x faster,
same results to float rounding). This must run before anything imports `mlx.core`.
"""

from __future__ import annotations

import ctypes
import os
import sys

_CANDIDATES = (
    "libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "libopenblas.so",
)

#: Path of the BLAS library that was preloaded, or None (reference BLAS, or not Linux).
loaded: str | None = None
#: Why the fast path is off, when it is.
reason: str | None = None


def enable() -> str | None:
    """Preload OpenBLAS on Linux; print one notice line if it cannot be found.

    `CLARA_BLAS=off` keeps the reference BLAS (used by the benchmark to compare);
    `CLARA_BLAS=/path/libopenblas.so` picks a specific library.
    """
    global loaded, reason
    if loaded or not sys.platform.startswith("linux"):
        return loaded
    choice = os.environ.get("CLARA_BLAS", "").strip()
    if choice.lower() in ("off", "0", "reference", "none"):
        reason = "disabled by CLARA_BLAS"
        return None
    if "mlx.core" in sys.modules:
        reason = "mlx was imported before clara"
        return None
    for name in (choice,) if choice else _CANDIDATES:
        try:
            ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        loaded = name
        return loaded
    reason = "OpenBLAS not found"
    if not os.environ.get("CLARA_QUIET_BLAS"):
        print(
            "clara: OpenBLAS not found, MLX CPU float32 matmuls use the slow reference BLAS "
            "(apt-get install libopenblas0-pthread; CLARA_BLAS=off hides this).",
            file=sys.stderr,
        )
    return None


def set_threads(n: int) -> bool:
    """Set OpenBLAS's thread count at run time (False when no OpenBLAS is loaded)."""
    if not loaded:
        return False
    try:
        ctypes.CDLL(loaded, mode=ctypes.RTLD_GLOBAL).openblas_set_num_threads(int(n))
    except (OSError, AttributeError):
        return False
    return True
