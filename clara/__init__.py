"""clara: CLaRa compressed-memory RAG on MLX (the core library)."""

from clara import _blas, _jit, _omp

_blas.enable()  # before anything imports mlx.core
_jit.enable()  # before mlx compiles a kernel
_omp.enable()  # before anything imports faiss or torch

__version__ = "0.2.5"
