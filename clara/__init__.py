"""clara: CLaRa compressed-memory RAG on MLX (the core library)."""

from clara import _blas, _jit, _limits, _omp

_blas.enable()  # before anything imports mlx.core
_limits.enable()  # before anything imports mlx_lm
_jit.enable()  # before mlx compiles a kernel
_omp.enable()  # before anything imports faiss or torch

__version__ = "0.2.20"
