"""Fast float32 matmuls for MLX's Linux CPU backend.

The `mlx[cpu]` wheel links the netlib reference BLAS (~6 GFLOP/s). Loading OpenBLAS with
RTLD_GLOBAL before `mlx` is first imported makes MLX's cblas calls resolve to it (~50x faster,
same results to float rounding). This must run before anything imports `mlx.core`.

Decode steps multiply a few rows by each weight matrix, where OpenBLAS's sgemm spends most of
its time packing the weights. `clara/_thinmm.c`, compiled once with the machine's C compiler
into the cache directory and loaded ahead of OpenBLAS, takes those thin products (at most
`CLARA_THIN_ROWS` rows, default 16) and hands everything else to OpenBLAS. `CLARA_THIN=off`
leaves every product to OpenBLAS (the benchmarks compare the two).

On x86 CPUs with bfloat16 instructions, the same library runs the products against the
generator's decode-only weights (prefill and decode; never the base weights the compressor
and query adapters read) in bfloat16 with float32 sums, from bfloat16 copies packed when the
float16 decode copies are made: on the AMX tile unit (Intel Sapphire Rapids and later), else
with AVX-512 BF16 (AMD Zen 4 and 5, Intel Cooper Lake). `CLARA_BF16=off` keeps float32
prefill and the float16 decode kernel, `CLARA_BF16=avx512` skips the tiles (`CLARA_AMX=off`
is the older name of `off`); `CLARA_BF16_ROWS=N` puts only products of N rows or more in
bfloat16.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import sys
from pathlib import Path

from clara import _native

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
#: Path of the thin-matmul library in use, or None; `thin_reason` says why not.
thin: str | None = None
thin_reason: str | None = None
_thin: ctypes.CDLL | None = None
_thin_threads: int | None = None
#: True when products against decode copies run in bfloat16 (`bf16_engine`: on AMX tiles or
#: in AVX-512 BF16 registers); `bf16_reason` says why not.
bf16 = False
bf16_engine: str | None = None
bf16_reason: str | None = None
ENGINES = {1: "AMX tiles", 2: "AVX-512 BF16"}
#: CLARA_BF16 values that keep bfloat16 products on ("avx512": without AMX tiles); the "off"
#: values are `clara._native.off`'s
BF16_CHOICES = ("", "on", "1", "yes", "true", "auto", "avx512")
THIN_SOURCE = Path(__file__).with_name("_thinmm.c")
#: Built into the same library: fused attention for prompt passes (clara/attention.py)
SOURCES = (THIN_SOURCE, Path(__file__).with_name("_attention.c"))


def pack_budget() -> float:
    """Bytes of base weights a packed copy may take (`CLARA_PACK_GB`, default 2 GiB)."""
    return float(os.environ.get("CLARA_PACK_GB", "2") or 0) * 2**30


def fused_attention_default() -> bool:
    """Whether clara's fused attention kernels (clara/_attention.c) run by default: where the
    compiler built their vectors for the CPU's registers, 16 floats with AVX-512 or 8 with AVX2
    and FMA (`clara_attention_native`). On an AVX2-only AMD EPYC, with 8-float vectors, a
    1325-position causal prompt's attention (9 heads of 64) took 0.2x the time of MLX's ops and
    a decode step's 0.3-0.9x; with the 16-float vectors of AVX-512 4.5x and 2-3x (one-off,
    2026-12-04). Elsewhere (arm64) they were not measured. `CLARA_FUSED_ATTENTION=on` runs
    them anyway, `off` never."""
    choice = os.environ.get("CLARA_FUSED_ATTENTION", "").strip().lower()
    if _native.off("CLARA_FUSED_ATTENTION"):
        return False
    if choice in ("on", "1", "yes", "true"):
        return True
    return _thin is not None and bool(_thin.clara_attention_native())


def attention_lanes() -> int | None:
    """The floats in each vector of the fused attention kernels as built here (16 with AVX-512,
    8 with AVX2); None without clara's library."""
    return None if _thin is None else int(_thin.clara_attention_lanes())


def _build_thin() -> Path | None:
    """The compiled thin-matmul library (built on first use, cached by source and CPU)."""
    global thin_reason
    source = b"".join(path.read_bytes() for path in SOURCES)
    key = hashlib.sha256(source + f"{_native.cpu_tag()} {_native.NATIVE}".encode()).hexdigest()[:16]
    target = _native.lib_cache() / f"thinmm-{key}.so"
    if _native.cached(target):
        return target
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        thin_reason = "no C compiler (install gcc for faster decoding)"
        return None
    cmd = [cc, "-O3", *_native.NATIVE, "-pthread", "-shared", "-fPIC", *map(str, SOURCES), "-lm"]
    thin_reason = _native.build_cached(cmd, target, THIN_SOURCE.name)
    return target if thin_reason is None else None


def _load_thin() -> None:
    """Load the thin-matmul library ahead of OpenBLAS so MLX's cblas_sgemm resolves to it."""
    global _thin, thin, thin_reason
    if _native.off("CLARA_THIN"):
        thin_reason = "disabled by CLARA_THIN"
        return
    path = _build_thin()
    if path is None:
        return
    try:
        _thin = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        thin_reason = f"could not load {path}: {e}"
        return
    thin = str(path)
    global bf16, bf16_engine, bf16_reason
    off = next((n for n in ("CLARA_BF16", "CLARA_AMX") if _native.off(n)), None)  # AMX: older name
    if off:
        bf16_reason = f"disabled by {off}"
    else:
        choice = os.environ.get("CLARA_BF16", "").strip().lower()
        if choice not in BF16_CHOICES:
            import warnings

            warnings.warn(
                f"CLARA_BF16={choice!r} is not a setting (off, on or avx512): left on",
                RuntimeWarning,
                stacklevel=2,
            )
        mode = _thin.clara_thinmm_bf16_init(int(choice == "avx512"))
        if mode:
            bf16, bf16_engine = True, ENGINES[mode]
            rows = _env_int("CLARA_BF16_ROWS") or _env_int("CLARA_AMX_ROWS")
            if rows is not None:  # fewest rows a product needs (default 1: all)
                _thin.clara_thinmm_set_bf16_rows(rows)
        else:
            bf16_reason = "no AMX tiles or AVX-512 BF16 on this CPU"
    rows = _env_int("CLARA_THIN_ROWS")
    if rows is not None:
        _thin.clara_thinmm_set_rows(rows)


#: AVX-512 sets OpenBLAS's SkylakeX kernels need
SKYLAKEX_FLAGS = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")


def _openblas_core() -> None:
    """Sets OPENBLAS_CORETYPE=SKYLAKEX on AMD CPUs with AVX-512 (Zen 4 and 5) unless it is
    set. OpenBLAS releases that predate a CPU pick kernels by its family: Debian 12's 0.3.21
    runs AVX2 Haswell kernels on Zen 5, whose sgemm took 1.25-1.3x the time of SkylakeX's on
    a memory prompt's prefill here and, with two threads, gave other bits than with one (the
    side-by-side compression test failed; one-off timings, 2026-12-03)."""
    if "OPENBLAS_CORETYPE" in os.environ or platform.machine() != "x86_64":
        return
    flags = _native.cpu_flags()
    if "AuthenticAMD" in _native.cpuinfo("vendor_id") and all(f in flags for f in SKYLAKEX_FLAGS):
        os.environ["OPENBLAS_CORETYPE"] = "SKYLAKEX"


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
        _late_notice(choice)
        return None
    _openblas_core()
    if (name := _findable(choice)) is not None:
        _load_thin()
        lib = ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        global _lib
        loaded, _lib = name, lib
        if _thin is not None:
            _thin.clara_thinmm_set_sgemm(ctypes.cast(lib.cblas_sgemm, ctypes.c_void_p))
        return loaded
    reason = "OpenBLAS not found"
    if not os.environ.get("CLARA_QUIET_BLAS"):
        print(
            "clara: OpenBLAS not found, MLX CPU float32 matmuls use the slow reference BLAS "
            "(apt-get install libopenblas0-pthread; CLARA_BLAS=off hides this).",
            file=sys.stderr,
        )
    return None


def _late_notice(choice: str) -> None:
    """One line when mlx came first on a CPU where OpenBLAS was there to load: every float32
    matmul then takes the reference BLAS (26x slower for the default model's compression)."""
    try:
        core = sys.modules["mlx.core"]
        if core.is_available(core.gpu) or os.environ.get("CLARA_QUIET_BLAS"):
            return
    except Exception:  # noqa: BLE001  (an MLX without is_available: say nothing)
        return
    if _findable(choice) is not None:
        print(
            "clara: mlx was imported before clara, so MLX CPU float32 matmuls use the slow "
            "reference BLAS: import clara first (CLARA_BLAS=off hides this).",
            file=sys.stderr,
        )


def _findable(choice: str) -> str | None:
    """The first OpenBLAS that loads: `choice` (CLARA_BLAS) or one of `_CANDIDATES`. Loaded
    locally only: global symbols come after the thin kernel (`enable`)."""
    for name in (choice,) if choice else _CANDIDATES:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return name
    return None


def _env_int(name: str) -> int | None:
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


def current_threads() -> tuple[int | None, int | None]:
    """The (OpenBLAS, thin-kernel) thread counts last set (None: never set)."""
    return _threads, _thin_threads


def set_thin_threads(n: int | None) -> None:
    """Threads of the thin-matmul kernel (None: leave as is); a no-op without it."""
    global _thin_threads
    if n is None or n == _thin_threads or _thin is None:
        return
    _thin.clara_thinmm_set_threads(int(n))
    _thin_threads = n


def keep_float16_copies(keep: bool = True) -> None:
    """Whether float16 decode copies made from now on are kept beside their bfloat16 copies on
    CPUs with bfloat16 products. By default they are not (the bfloat16 products never read
    them: ~0.27 GB less per merged adapter of the default model), and products inside
    `float32_products()` read the float32 weights instead; benchmarks that compare with CPUs
    without bfloat16 products keep them."""
    if _thin is not None:
        _thin.clara_thinmm_keep_f16(int(keep))


@contextlib.contextmanager
def float32_products():
    """No bfloat16 products inside the block: every product as without them (float32 prefill;
    decode from the float16 copies where `keep_float16_copies`, else from the float32
    weights), for comparisons with float32 references."""
    if not bf16:
        yield
        return
    _thin.clara_thinmm_use_bf16(0)
    try:
        yield
    finally:
        _thin.clara_thinmm_use_bf16(1)


@contextlib.contextmanager
def bfloat16_base_products():
    """Inside the block, products against packed base weights that also have bfloat16 tiles
    (`add_base_tiles`) run in bfloat16 instead of on their float32 panels: the query
    encoder's `--query-precision bfloat16`. Everything the block queues must be evaluated
    inside it, and nothing else may be in flight (the caller synchronizes first)."""
    if not bf16:
        yield
        return
    _thin.clara_thinmm_use_base_tiles(1)
    try:
        yield
    finally:
        _thin.clara_thinmm_use_base_tiles(0)


def add_base_tiles(weights) -> int:
    """bfloat16 tiles beside the float32 panels of weights already packed by a "f32pack"
    `DecodeCopies` (CPUs with bfloat16 products only); returns how many have them."""
    if not bf16:
        return 0
    return sum(bool(_thin.clara_thinmm_add_tiles(ctypes.c_void_p(_address(w)))) for w in weights)


def row_exact_products() -> bool:
    """Whether a prompt's float32 products give bits that depend neither on the rows beside
    it nor on the thread count: on CPUs with AVX-512, where both clara's packed kernel (base
    weights) and OpenBLAS's SkylakeX kernels (the rest: adapters, the output head) do. With
    AVX2 OpenBLAS's kernels do not, though clara's packed one does: a prompt prefilled beside
    others, or on one thread of two lanes, gets the same arithmetic up to float32 rounding,
    not bit for bit."""
    return (
        _thin is not None
        and bool(_thin.clara_thinmm_f32p_available())
        and "avx512f" in _native.cpu_flags()
    )


def for_decode() -> None:
    """Threads for decode steps: `CLARA_DECODE_THREADS`, else every core for the thin kernel
    (it streams the weights, and two cores read memory faster than one) and DECODE_THREADS
    for OpenBLAS, which only sees batches wider than the thin kernel takes."""
    chosen = _env_int("CLARA_DECODE_THREADS")
    set_thin_threads(chosen or os.cpu_count())
    set_threads(chosen or DECODE_THREADS)


def for_prefill(packed: bool = False) -> None:
    """Thread count for prefill and compression (matrix-matrix): `CLARA_PREFILL_THREADS` for
    both OpenBLAS and clara's kernel, else every core. `packed`: the pass's base products read
    weights packed for clara's kernel (`ClaraModel.pack_base_weights`), so OpenBLAS sees only
    the adapters' rank-16 products: those get one thread, as OpenBLAS's idle threads spin in
    sched_yield on the cores the kernel's helpers need (on a 2-core AVX2 EPYC, one question encoded in 0.94x the time and 8
    in 0.87x, compression unchanged; BENCHMARKS.md, 2026-12-04 21:59)."""
    chosen = _env_int("CLARA_PREFILL_THREADS")
    set_threads(chosen or (1 if packed else os.cpu_count()))
    set_thin_threads(chosen or os.cpu_count())


def for_training(local_ranks: int = 1) -> None:
    """Threads for training steps: `CLARA_TRAIN_THREADS`, else the cores shared out between the
    ranks on this machine. Measured (BENCHMARKS.md, training speed): MLX's elementwise ops are
    single-threaded on the CPU, so one process leaves a core idle between matmuls; two ranks of
    one thread each trained 1.55x the tokens/s of one rank with two threads on 2 cores."""
    n = _env_int("CLARA_TRAIN_THREADS") or max(1, (os.cpu_count() or 1) // max(1, local_ranks))
    set_threads(n)
    set_thin_threads(n)


DECODE_THREADS: int | None = 1  # measured: batch 8 decodes 2x faster than with 2 (BENCHMARKS.md)


# ---- compact copies of decode weights --------------------------------------------------
DECODE_WEIGHTS = ("float16", "int8", "float32")
_KINDS = {"float16": 1, "int8": 2, "bfloat16": 3, "f32pack": 4}  # bfloat16: the packed copy only
# (training copies); f32pack: float32 panels (the compressor and query adapter: `packed`)
_copy_refs: dict[tuple[int, int], list] = {}  # (address, kind) -> [float32 array (held), owners]


def decode_weights() -> str:
    """What decode steps read the decode-only weights as: `CLARA_DECODE_WEIGHTS` = float16
    (the default: half of float32's memory traffic; greedy answers matched float32's token for
    token in our checks), int8 (a quarter, one float32 scale per row: faster again, but greedy
    answers drift from float32's after some tokens) or float32; float32 wherever the thin
    kernel is not in use."""
    if _thin is None:
        return "float32"
    chosen = os.environ.get("CLARA_DECODE_WEIGHTS", "").strip().lower() or DECODE_WEIGHTS[0]
    if chosen not in DECODE_WEIGHTS:
        raise ValueError(
            f"CLARA_DECODE_WEIGHTS={chosen!r}: choose one of {', '.join(DECODE_WEIGHTS)}"
        )
    return chosen


def _address(array) -> int:
    import numpy as np

    return np.asarray(array).ctypes.data  # MLX's buffer protocol: the array's own memory


def _float32_matrices(weights) -> list:
    """The 2-D float32 arrays of `weights`: the only ones copies are made of. A model loaded
    as bfloat16 or float16 has none, and numpy cannot take a bfloat16 array's address (its
    panels crashed every bfloat16 prefill: `clara-eval --dtype bfloat16`)."""
    import mlx.core as mx

    return [w for w in weights if w.ndim == 2 and w.dtype == mx.float32]


class DecodeCopies:
    """Compact copies (int8 with a scale per row, or float16) of weights only decoding reads:
    the merged adapter weights and the output embedding. The thin kernel streams them instead
    of the float32 arrays; products and sums stay float32. One owner (a Decoder) updates its set
    as weights change; each float32 array is held while a copy of it lives, so its address
    cannot be reused under a live entry. Kind "bfloat16" (where `bf16`): the packed bfloat16 copy of
    frozen weights for a training step's products, forward and backward (`Trainer`). Kind
    "f32pack" (x86 CPUs with AVX-512 or AVX2): the frozen float32 base weights packed once for the
    compressor's and query adapter's products (`ClaraModel.pack_base_weights`)."""

    def __init__(self, kind: str | None = None) -> None:
        self.kind = kind or decode_weights()
        self._mine: set[tuple[int, int]] = set()
        self._panels: set[tuple[int, int]] = set()  # of `_mine`: float32 panels added

    def __len__(self) -> int:
        """How many copies this owner holds."""
        return len(self._mine)

    def update(self, weights) -> int:
        """Own copies of exactly `weights` (2-D row-contiguous float32); returns how many."""
        import mlx.core as mx

        if _thin is None or self.kind not in _KINDS or (self.kind == "bfloat16" and not bf16):
            return 0
        if self.kind == "f32pack" and not _thin.clara_thinmm_f32p_available():
            return 0
        kind = _KINDS[self.kind]
        wanted: dict[tuple[int, int], object] = {}
        for w in _float32_matrices(weights):
            mx.eval(w)
            wanted[(_address(w), kind)] = w
        for key in self._mine - set(wanted):
            self._release(key)
        for key, w in wanted.items():
            if key in self._mine:
                continue
            ref = _copy_refs.get(key)
            if ref is None:
                n, k = w.shape
                if not _thin.clara_thinmm_add_copy(ctypes.c_void_p(key[0]), n, k, kind):
                    continue
                ref = _copy_refs[key] = [w, 0]
            ref[1] += 1
            self._mine.add(key)
        return len(self._mine)

    def add_panels(self, weights) -> int:
        """Float32 panels beside this set's float16 or int8 copies of `weights` (a subset of
        the last `update`'s), read by products of more rows than the thin kernel takes: a
        prefill through the merged decode weights then runs on the packed kernel instead of
        OpenBLAS packing each weight on every call. Only where it pays: the packed kernel
        built (x86 with AVX-512 or AVX2), no bfloat16 products (their tiles take those
        products), all of `weights` within `CLARA_PACK_GB` (default 2 GiB), not switched off
        (`CLARA_PREFILL_PANELS=off`). One prompt of five memories prefilled in ~0.91x the time
        on an AVX2-only AMD EPYC (one-off, 2026-12-04). Packing them takes the first prefill
        after each merge a moment longer. Returns how many have panels."""
        if (
            _thin is None
            or self.kind not in ("float16", "int8")
            or bf16
            or _native.off("CLARA_PREFILL_PANELS")
            or not _thin.clara_thinmm_f32p_available()
        ):
            return 0
        kind = _KINDS[self.kind]
        keyed = [
            (k, w) for w in _float32_matrices(weights) if (k := (_address(w), kind)) in self._mine
        ]
        if sum(w.nbytes for _, w in keyed) > pack_budget():
            return 0
        for key, _ in keyed:  # once per copy: later prefills only look them up here
            if key not in self._panels and _thin.clara_thinmm_add_panels(ctypes.c_void_p(key[0])):
                self._panels.add(key)
        return sum(key in self._panels for key, _ in keyed)

    def _release(self, key: tuple[int, int]) -> None:
        self._mine.discard(key)
        self._panels.discard(key)
        ref = _copy_refs.get(key)
        if ref is None:
            return
        ref[1] -= 1
        if ref[1] == 0:
            _thin.clara_thinmm_drop_copy(ctypes.c_void_p(key[0]))
            del _copy_refs[key]

    def close(self) -> None:
        for key in list(self._mine):
            self._release(key)

    def __del__(self) -> None:
        if _thin is not None:
            self.close()
