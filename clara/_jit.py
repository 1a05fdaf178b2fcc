"""Native code for MLX's CPU JIT: fused elementwise kernels built for this CPU.

`mx.compile` (mlx-lm's SwiGLU, clara's CPU attention softmax) fuses elementwise ops into C++
that MLX compiles at run time with `g++ -O3` into `<tmp>/mlx/<version>/cpu/`: a scalar loop
calling MLX's `simd::exp` per value. GCC at -O3 does not inline that function (too large for
its default limits), so every value calls libmlx's copy, built for baseline x86-64 (no FMA:
each `fma` of the polynomial is a libm call), about 19 ns per value. `FLAGS` let GCC inline it
(higher inline limits), build it for this CPU (`-march=native`, FMA) and vectorize the loop
(`-fno-trapping-math` allows the if-conversion of its NaN/overflow selects; `-fno-math-errno`
the same for libm calls), and `-ffp-contract=off` keeps each product and sum apart (with FMA
available GCC would fuse `a * b - c * d`, and RoPE's and RMSNorm's kernels would round
differently from MLX's own ops). The results are bit for bit MLX's own (tested); measured on
(4, 3, 825, 275) scores and a (4, 275, 1536) SwiGLU (one-off timing while another job ran):
exp 19 -> 8 ms, SwiGLU 14 -> 2.4 ms.
`CLARA_JIT_NATIVE=off` turns this off.

MLX finds the compiler as `g++` on PATH. `enable()` puts a small wrapper first on PATH: it
adds `FLAGS` when the command compiles a source file in MLX's JIT cache, and writes that
library under a temporary name, renamed into place when complete (MLX writes it in place, and
two processes compiling the same kernel could load each other's half-written file); it is
`exec g++ "$@"` for anything else. Kernels compiled before (other flags or another CPU) are
removed once, so every kernel in the cache is built the same way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from clara import _native
from clara.paths import make_private_dirs

FLAGS = (
    "-march=native -ffp-contract=off -fno-math-errno -fno-trapping-math "
    "--param max-inline-insns-auto=400 --param max-inline-insns-single=800"
)
MARK = ".clara-jit"

#: True when the wrapper is in place; `reason` says why not otherwise.
native = False
reason: str | None = None


def _cache_dir() -> Path:
    return _native.cache_home() / "jit-bin"


def _mlx_kernels() -> Path | None:
    """MLX's CPU JIT cache (`<tmp>/mlx/<version>/cpu`), without importing mlx."""
    try:
        from importlib.metadata import version

        return Path(tempfile.gettempdir()) / "mlx" / version("mlx") / "cpu"
    except Exception:  # noqa: BLE001  (no mlx metadata: nothing to clean)
        return None


def _wrapper(real: str) -> str:
    return f"""#!/bin/sh
# Written by clara (clara/_jit.py): MLX's CPU JIT kernels are compiled for this CPU.
case "$*" in
  */mlx/*/cpu/*) ;;
  *) exec "{real}" "$@" ;;
esac
# MLX compiles into its cache, where another process needing the same kernel (a second
# training rank) loads whatever file is there: build beside it, then rename it into place.
out= next=
for a do
  shift
  if [ -n "$next" ]; then out=$a; a="$a.$$.tmp"; next=; elif [ "$a" = -o ]; then next=1; fi
  set -- "$@" "$a"
done
[ -n "$out" ] || exec "{real}" "$@" {FLAGS}
# MLX writes the source in place too: one written again meanwhile by another process can read
# as cut short, so a failed compile is tried once more, after that write is done
"{real}" "$@" {FLAGS} || {{ sleep 1; "{real}" "$@" {FLAGS}; }} || {{ code=$?; rm -f "$out.$$.tmp"; exit $code; }}
exec mv -f "$out.$$.tmp" "$out"
"""


def _clear_stale(kernels: Path, tag: str) -> None:
    """Remove JIT kernels built with other flags or on another CPU (rebuilt on first use)."""
    mark = kernels / MARK
    try:
        if mark.read_text() == tag:
            return
    except OSError:
        pass
    try:
        make_private_dirs(kernels)
        for lib in kernels.glob("lib*.so"):
            lib.unlink(missing_ok=True)
        mark.write_text(tag)
    except OSError:
        pass


def enable() -> bool:
    """Put the compiler wrapper first on PATH (Linux CPU only; before mlx compiles anything)."""
    global native, reason
    if native:
        return True
    if not sys.platform.startswith("linux"):
        reason = "not Linux"
        return False
    from clara._native import cpu_tag, off

    bindir = _cache_dir()
    path = os.environ.get("PATH", "")
    rest = os.pathsep.join(p for p in path.split(os.pathsep) if p and Path(p) != bindir)
    if off("CLARA_JIT_NATIVE"):
        # a parent process may have put the wrapper on the PATH this one inherited
        os.environ["PATH"] = rest
        reason = "disabled by CLARA_JIT_NATIVE"
        return False
    real = shutil.which("g++", path=rest)
    if real is None:
        reason = "no g++ on PATH (MLX's JIT then runs its kernels unfused)"
        return False
    tag = hashlib.sha256(f"{FLAGS}\n{real}\n{cpu_tag()}".encode()).hexdigest()[:16]
    try:
        make_private_dirs(bindir)
        script = bindir / "g++"
        text = _wrapper(real)
        if not script.exists() or script.read_text() != text:
            tmp = bindir / f".g++-{os.getpid()}"
            tmp.write_text(text)
            tmp.chmod(0o755)
            os.replace(tmp, script)
    except OSError as exc:
        reason = f"cannot write {bindir}: {exc}"
        return False
    kernels = _mlx_kernels()
    if kernels is not None:
        _clear_stale(kernels, tag)
    os.environ["PATH"] = os.pathsep.join([str(bindir), rest]) if rest else str(bindir)
    native = True
    return True


def describe() -> str:
    return "JIT kernels native" if native else f"JIT kernels baseline ({reason})"
