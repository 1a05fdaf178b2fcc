"""clara: CLaRa compressed-memory RAG on MLX (the core library)."""

from clara import _blas

_blas.enable()  # before anything imports mlx.core

__version__ = "0.1.0"
