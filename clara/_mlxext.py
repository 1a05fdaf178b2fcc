"""clara's attention ops for MLX's CPU backend (clara/_mlx_attention.cpp).

Two MLX primitives, each one op in the graph where MLX's own attention is ~15: one for a
decode step's rows against the KV caches as they are kept (`clara_attention_rows`), one for a
prompt's rows (`clara_attention`, the tiled kernel with the causal triangle skipped); both
kernels live in the thin-matmul library (clara/_attention.c), which hands their addresses over.
Built on first use, like that library (clara/_blas.py): the C++ source and nanobind's are
compiled with the machine's C++ compiler against the MLX wheel's headers and libmlx, cached
under ~/.cache/clara/lib by source, command, MLX and nanobind versions and CPU. Before use,
`module()` checks both ops on small cases against plain NumPy: an MLX whose bindings speak
another nanobind ABI, or any other mismatch, leaves MLX's ops in place with the reason in
`reason`. Linux CPU only; `CLARA_ROWS_ATTENTION=off` turns both off (clara/attention.py reads
it at every call).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

from clara import _blas, _native

SOURCE = Path(__file__).with_name("_mlx_attention.cpp")
NAME = "_mlx_attention"
_module: ModuleType | None = None
_tried = False
#: Why the primitive is not in use, when it is not.
reason: str | None = None


def _paths():
    import mlx
    import nanobind

    root = Path(mlx.__path__[0])
    return root / "include", root / "lib", Path(nanobind.include_dir()), Path(nanobind.source_dir())


def _build() -> Path | None:
    global reason
    import mlx.core as mx
    import nanobind

    mlx_inc, mlx_lib, nb_inc, nb_src = _paths()
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not SOURCE.is_file():  # an install without the source: MLX's ops stay
        reason = f"{SOURCE.name} is missing from this install"
        return None
    if cxx is None:
        reason = "no C++ compiler (install g++)"
        return None
    cmd = [
        cxx, "-O2", *_native.NATIVE, "-std=c++20", "-shared", "-fPIC", "-fvisibility=hidden",
        "-DNDEBUG", "-DNB_DOMAIN=mlx", f"-I{sysconfig.get_paths()['include']}", f"-I{nb_inc}",
        f"-I{nb_src.parent / 'ext' / 'robin_map' / 'include'}", f"-I{mlx_inc}",
        str(SOURCE), str(nb_src / "nb_combined.cpp"),
        f"-L{mlx_lib}", "-lmlx", f"-Wl,-rpath,{mlx_lib}",
    ]  # fmt: skip
    tag = f"{mx.__version__} {nanobind.__version__} {sys.version_info[:2]} {_native.cpu_tag()}"
    key = hashlib.sha256(SOURCE.read_bytes() + f"{tag} {cmd}".encode()).hexdigest()[:16]
    target = _native.lib_cache() / f"mlxattn-{key}{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    if _native.cached(target):
        return target
    reason = _native.build_cached(cmd, target, SOURCE.name, timeout=600)
    return target if reason is None else None


def _check(ext: ModuleType) -> str | None:
    """None if both ops compute small masked and causal GQA cases as NumPy does, else why
    not."""
    import mlx.core as mx
    import numpy as np

    rng = np.random.default_rng(0)
    for op, T, D in ((ext.attention_rows, 1, 32), (ext.attention_blocks, 9, 64)):
        q, k, v = (rng.standard_normal(s).astype(np.float32) for s in
                   ((2, 4, T, D), (2, 2, 21, D), (2, 2, 21, D)))  # fmt: skip
        mask = np.ones((2, 1, 1, 21), bool)
        mask[0, ..., :5] = False  # left padding of the first row
        got = np.array(op(mx.array(q), mx.array(k), mx.array(v), mx.array(mask), 0.25, True))
        seen = mask & (np.arange(21) <= np.arange(21 - T, 21)[:, None])  # (2, 1, T, 21)
        kk, vv = np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1)
        s = np.where(seen, q @ kk.swapaxes(-1, -2) * 0.25, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        err = float(np.abs(got - (p / p.sum(-1, keepdims=True)) @ vv).max())
        if not err < 1e-4:
            return f"self-check of {op.__name__} off by {err:.2g}"
    return None


def module() -> ModuleType | None:
    """The built and checked extension, or None (`reason` says why)."""
    global _module, _tried, reason
    if _tried:
        return _module
    _tried = True
    if _blas._thin is None:
        reason = f"no thin-matmul library ({_blas.thin_reason})"
        return None
    try:
        import nanobind  # noqa: F401
    except ImportError:
        reason = "nanobind not installed"
        return None
    path = _build()
    if path is None:
        return None
    try:
        spec = importlib.util.spec_from_file_location(NAME, path)
        ext = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ext)
        ext.init(
            *(
                ctypes.cast(fn, ctypes.c_void_p).value
                for fn in (_blas._thin.clara_attention_rows, _blas._thin.clara_attention)
            )
        )
        reason = _check(ext)
    except Exception as e:  # noqa: BLE001 - any failure keeps MLX's ops
        reason = f"{NAME} unusable: {type(e).__name__}: {e}"
    if reason is None:
        _module = ext
    return _module


def describe() -> str:
    """For startup logs and benchmark headers: whether attention runs as clara's MLX ops."""
    if not _tried:
        return ""
    return "attention MLX ops on" if _module is not None else f"attention MLX ops off ({reason})"
