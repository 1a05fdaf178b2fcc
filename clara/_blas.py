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
_lib: ctypes.CDLL | None = None
_threads: int | None = None


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
            lib = ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        global _lib
        loaded, _lib = name, lib
        return loaded
    reason = "OpenBLAS not found"
    if not os.environ.get("CLARA_QUIET_BLAS"):
        print(
            "clara: OpenBLAS not found, MLX CPU float32 matmuls use the slow reference BLAS "
            "(apt-get install libopenblas0-pthread; CLARA_BLAS=off hides this).",
            file=sys.stderr,
        )
    return None


def _env_threads(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def set_threads(n: int | None) -> None:
    """OpenBLAS threads for the next matmuls (None: leave as is); a no-op without OpenBLAS."""
    global _threads
    if n is None or n == _threads or _lib is None:
        return
    fn = getattr(_lib, "openblas_set_num_threads", None)
    if fn is not None:
        fn(int(n))
        _threads = n


def for_decode() -> None:
    """Thread count for decode steps (thin matrix-vector products): `CLARA_DECODE_THREADS`,
    else DECODE_THREADS (see bench/bench_server.py for how it was measured)."""
    set_threads(_env_threads("CLARA_DECODE_THREADS") or DECODE_THREADS)


def for_prefill() -> None:
    """Thread count for prefill and compression (matrix-matrix): `CLARA_PREFILL_THREADS`,
    else every core."""
    set_threads(_env_threads("CLARA_PREFILL_THREADS") or os.cpu_count())


DECODE_THREADS: int | None = 1  # measured: batch 8 decodes 2x faster than with 2 (BENCHMARKS.md)
