"""clara: CLaRa compressed-memory RAG on MLX (the core library)."""

from clara import _blas, _jit

_blas.enable()  # before anything imports mlx.core
_jit.enable()  # before mlx compiles a kernel

__version__ = "0.2.0"
