"""The thin-matmul kernel (clara/_thinmm.c) that MLX's float32 decode products run through.

These run MLX matmuls for real: on Linux with OpenBLAS and a C compiler the kernel is in the
path (`clara._blas.thin`); elsewhere they check plain MLX, which must pass the same checks.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from clara import (  # conftest imported clara first: the kernel is loaded before mlx
    _blas,
    _native,
    cpu,
)

pytestmark = pytest.mark.cpu_only  # clara's CPU paths: skipped on Metal

LINUX_FAST = sys.platform.startswith("linux") and _blas.loaded is not None


def _rand(*shape: int, seed: int) -> mx.array:
    return mx.array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def test_kernel_is_built_and_loaded_on_linux():
    if not LINUX_FAST:
        pytest.skip(f"no OpenBLAS here ({_blas.reason}); the kernel only rides on it")
    assert _blas.thin is not None, _blas.thin_reason
    assert "thin-matmul kernel on, decode weights float16" in cpu.describe()
    assert _blas._thin.clara_thinmm_rows() == int(os.environ.get("CLARA_THIN_ROWS", 16))


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 15, 16, 17, 33])
@pytest.mark.parametrize("n,k", [(1, 1), (3, 5), (4, 8), (7, 9), (130, 64), (1031, 577)])
def test_products_match_numpy(m, n, k):
    x, w = _rand(m, k, seed=m), _rand(n, k, seed=n + k)
    got = np.array(x @ w.T)
    want = np.array(x, dtype=np.float64) @ np.array(w, dtype=np.float64).T
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(k))


def test_addmm_alpha_beta_and_untransposed_weights():
    x, w, c = _rand(3, 70, seed=1), _rand(50, 70, seed=2), _rand(3, 50, seed=3)
    got = np.array(mx.addmm(c, x, w.T, alpha=0.5, beta=2.0))
    want = 2.0 * np.array(c, np.float64) + 0.5 * (np.array(x, np.float64) @ np.array(w).T)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    wt = mx.contiguous(w.T)  # (k, n) row-major: not the kernel's layout, OpenBLAS's job
    np.testing.assert_allclose(np.array(x @ wt), np.array(x) @ np.array(w).T, rtol=1e-4, atol=1e-3)


def test_a_row_gives_the_same_bits_in_any_batch():
    """Decode batching must not change a sequence's logits: each output element is the same
    arithmetic whatever the batch size and the row's place in it."""
    w = _rand(4099, 576, seed=7)  # a leftover column past the 4-wide tiles
    x = _rand(16, 576, seed=8)
    alone = [np.array(x[i : i + 1] @ w.T) for i in range(16)]
    for m in (2, 3, 5, 8, 13, 16):
        batch = np.array(x[:m] @ w.T)
        for i in range(m):
            assert np.array_equal(batch[i : i + 1], alone[i]), (m, i)
    batched = np.array(x[:, None, :] @ w.T)  # (B, 1, d) as a decode step shapes it
    assert np.array_equal(batched[3], alone[3])


def test_thread_count_does_not_change_results():
    if _blas.thin is None:
        pytest.skip(f"thin kernel not in use: {_blas.thin_reason or _blas.reason}")
    w, x = _rand(20000, 576, seed=9), _rand(4, 576, seed=10)
    _blas.set_thin_threads(1)
    one = np.array(x @ w.T)
    _blas.set_thin_threads(2)
    two = np.array(x @ w.T)
    assert np.array_equal(one, two)


def test_helpers_oversubscribed_give_the_same_bits_product_after_product():
    """More helper threads than cores: some are not scheduled while a product is on offer,
    and the caller takes their share. Hundreds of products back to back (as in a decode
    step), of changing shapes, must each come out exactly as with one thread."""
    if _blas.thin is None:
        pytest.skip(f"thin kernel not in use: {_blas.thin_reason or _blas.reason}")
    ws = [_rand(n, k, seed=n) for n, k in ((576, 576), (1536, 576), (576, 1536), (4099, 576))]
    xs = {k: _rand(3, k, seed=k) for k in (576, 1536)}

    def products():
        return [np.array(xs[w.shape[1]] @ w.T) for _ in range(40) for w in ws]

    _blas.set_thin_threads(1)
    one = products()
    _blas.set_thin_threads(4)
    try:
        many = products()
    finally:
        _blas.set_thin_threads(2)
    assert all(np.array_equal(a, b) for a, b in zip(one, many))


def test_clara_thin_off_leaves_products_to_openblas():
    code = "import clara; from clara import _blas; print(_blas.thin, '|', _blas.thin_reason)"
    env = {**os.environ, "CLARA_THIN": "off"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    if LINUX_FAST:
        assert out.stdout.strip() == "None | disabled by CLARA_THIN"


def test_without_a_compiler_clara_still_imports_and_says_why(tmp_path):
    if not LINUX_FAST:
        pytest.skip("the kernel is only built on Linux with OpenBLAS")
    code = "import clara; from clara import _blas; print(_blas.thin, '|', _blas.thin_reason)"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "CC": str(tmp_path / "no-such-cc")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("None | could not build _thinmm.c"), out.stdout


def test_built_libraries_unused_for_a_month_go_when_a_new_one_is_built(tmp_path):
    if not LINUX_FAST:
        pytest.skip("the kernel is only built on Linux with OpenBLAS")
    lib = tmp_path / "clara" / "lib"
    lib.mkdir(parents=True)
    day = 86400
    now = time.time()
    for name, age in [("thinmm-old.so", 40), ("thinmm-recent.so", 5), ("mlxattn-old.so", 40)]:
        (lib / name).write_bytes(b"x")
        os.utime(lib / name, (now - age * day, now - age * day))
    code = "import clara; from clara import _blas; print(_blas.thin_reason)"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "None", out.stderr + out.stdout
    built = [p.name for p in lib.glob("thinmm-*") if p.name != "thinmm-recent.so"]
    # the old thin kernel went; the recent one and another library's stay
    assert sorted(p.name for p in lib.iterdir()) == sorted([*built, "thinmm-recent.so",
                                                            "mlxattn-old.so"])  # fmt: skip
    assert len(built) == 1
    # a library in use is marked used: a month-old mtime is refreshed when it is loaded
    os.utime(lib / built[0], (now - 40 * day, now - 40 * day))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "None", out.stderr + out.stdout
    assert (lib / built[0]).stat().st_mtime > now - day


def _needs_kernel():
    if _blas.thin is None:
        pytest.skip(f"thin kernel not in use: {_blas.thin_reason or _blas.reason}")


def test_float16_copy_is_read_instead_of_the_float32_weight_and_dropped_on_close():
    _needs_kernel()
    w, x = _rand(2051, 576, seed=11), _rand(5, 576, seed=12)
    exact = np.array(x @ w.T)
    rounded = w.astype(mx.float16).astype(mx.float32)  # what the copy holds, as float32
    copies = _blas.DecodeCopies("float16")
    gc.collect()  # earlier tests' copies freed now, not by a collection inside the window
    before = _blas._thin.clara_thinmm_copies()
    assert copies.update([w]) == 1
    assert _blas._thin.clara_thinmm_copies() == before + 1
    got = np.array(x @ w.T)
    # the product of the float16-rounded weights (to float32 rounding of the sums), not the
    # float32 weights' product
    on_rounded = np.array(x, np.float64) @ np.array(rounded, np.float64).T
    assert np.abs(got - on_rounded).max() < 1e-3
    assert np.abs(got - exact).max() > 1e-2
    np.testing.assert_allclose(got, exact, rtol=0, atol=0.05)
    # every row count the decode kernel's tiles take (1-2 rows on two panels, 1-6 on one, 8 on
    # half panels, and mixes): each row gets the same bits as alone
    xs = _rand(16, 576, seed=14)
    alone = [np.array(xs[i : i + 1] @ w.T) for i in range(16)]
    for m in (2, 3, 5, 6, 7, 8, 9, 14, 16):
        batch = np.array(xs[:m] @ w.T)
        for i in range(m):
            assert np.array_equal(batch[i : i + 1], alone[i]), (m, i)
    wide = _rand(40, 576, seed=13)  # prefill-sized products keep float32 (OpenBLAS)
    np.testing.assert_allclose(
        np.array(wide @ w.T), np.array(wide) @ np.array(w).T, rtol=1e-4, atol=1e-3
    )
    held = _blas._thin.clara_thinmm_copies()
    copies.close()
    assert _blas._thin.clara_thinmm_copies() == held - 1
    assert np.array_equal(np.array(x @ w.T), exact)


def test_int8_copy_is_close_to_float32_and_batch_invariant():
    _needs_kernel()
    w, x = _rand(1027, 577, seed=17), _rand(16, 577, seed=18)  # tails in both dimensions
    exact = np.array(x, np.float64) @ np.array(w, np.float64).T
    copies = _blas.DecodeCopies("int8")
    assert copies.update([w]) == 1
    got = np.array(x @ w.T)
    # per-row absmax int8: each weight within half a step (amax / 254) of its value
    amax = np.abs(np.array(w)).max(axis=1)
    bound = (np.abs(np.array(x)) @ np.ones(577))[:, None] * (amax / 254)[None, :]
    assert np.all(np.abs(got - exact) <= bound + 1e-3)
    assert np.abs(got - exact).mean() > 1e-4  # the copy really was read
    for m in (1, 3, 7):
        for i in range(m):
            assert np.array_equal(np.array(x[i : i + 1] @ w.T), got[i : i + 1])
    copies.close()


def test_packed_float32_weights_are_read_exactly_and_batch_invariant():
    """Kind "f32pack": float32 panels packed once for products wider than the thin kernel
    takes (a query encoding, a compressor pass). float32 products and sums: as close to
    float64 as OpenBLAS; a row gets the same bits in any batch; dropped on close."""
    _needs_kernel()
    if not _blas._thin.clara_thinmm_f32p_available():
        pytest.skip("no AVX-512 or AVX2: products keep OpenBLAS")
    w, x = _rand(1536, 576, seed=21), _rand(75, 576, seed=22)
    exact = np.array(x, np.float64) @ np.array(w, np.float64).T
    openblas = np.array(x @ w.T)
    copies = _blas.DecodeCopies("f32pack")
    assert copies.update([w]) == 1
    got = np.array(x @ w.T)
    assert not np.array_equal(got, openblas)  # the panels really were read
    err = np.abs(got - exact).max()
    assert err <= 2 * max(np.abs(openblas - exact).max(), 1e-6), err
    for lo, hi in ((0, 17), (17, 50), (3, 75)):  # other batches, other tiles and tails
        assert np.array_equal(np.array(x[lo:hi] @ w.T), got[lo:hi])
    assert not copies.update([_rand(40, 64, seed=23)])  # 40 outputs: not 32-wide panels
    copies.close()
    assert np.array_equal(np.array(x @ w.T), openblas)


def test_packed_float32_products_on_every_x86_cpu_with_avx2_and_the_same_bits():
    """The packed float32 kernel is built for AVX2 too (8-float registers, 6 rows x 16 columns
    of accumulators) and computes each output as the same chain of fused multiply-adds as the
    AVX-512 one: where this CPU has AVX-512, the library built without it (-mno-avx512f) gives
    the very bits of the native one."""
    _needs_kernel()
    flags = _native.cpu_flags()
    if "avx2" not in flags or "fma" not in flags:
        pytest.skip("not an x86 CPU with AVX2")
    assert _blas._thin.clara_thinmm_f32p_available()
    import ctypes
    import shutil
    import tempfile

    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    w = np.asarray(_rand(1536, 576, seed=41))
    x = np.asarray(_rand(75, 576, seed=42))
    outs = []
    with tempfile.TemporaryDirectory() as tmp:
        for extra in ([], ["-mno-avx512f"])[: 2 if "avx512f" in flags else 1]:
            path = f"{tmp}/lib{len(outs)}.so"
            cmd = [cc, "-O3", *_native.NATIVE, *extra, "-pthread", "-shared", "-fPIC"]
            subprocess.run([*cmd, *map(str, _blas.SOURCES), "-lm", "-o", path], check=True)
            lib = ctypes.CDLL(path)
            assert lib.clara_thinmm_f32p_available()
            P = ctypes.c_void_p
            assert lib.clara_thinmm_add_copy(P(w.ctypes.data), 1536, 576, _blas._KINDS["f32pack"])
            out = np.zeros((75, 1536), np.float32)
            lib.cblas_sgemm(101, 111, 112, 75, 1536, 576, ctypes.c_float(1.0), P(x.ctypes.data),
                            576, P(w.ctypes.data), 576, ctypes.c_float(0.0), P(out.ctypes.data),
                            1536)  # fmt: skip
            lib.clara_thinmm_drop_copy(P(w.ctypes.data))
            outs.append(out)
    np.testing.assert_allclose(outs[0], x.astype(np.float64) @ w.T.astype(np.float64), atol=1e-3)
    assert all(np.array_equal(outs[0], out) for out in outs[1:])  # AVX-512 and AVX2 alike


def test_decode_copies_get_float32_panels_for_prefill_products(monkeypatch):
    """`DecodeCopies.add_panels`: a float16 decode copy (a merged adapter weight) also gets
    float32 panels; products of more rows than the thin kernel takes (a prefill) read them,
    exactly as the base weights' packed copy gives (float32, the same bits in any batch), and
    a few rows (a decode step) still read the float16 copy. Not for weights without a copy,
    nor with `CLARA_PREFILL_PANELS=off` or past `CLARA_PACK_GB`; dropped with the copy."""
    _needs_kernel()
    if not _blas._thin.clara_thinmm_f32p_available():
        pytest.skip("no AVX-512 or AVX2: products keep OpenBLAS")
    if _blas.bf16:
        pytest.skip("bfloat16 products take prefill products here (their own tiles)")
    w, other = _rand(1536, 576, seed=51), _rand(576, 576, seed=52)
    x = _rand(75, 576, seed=53)
    openblas = np.array(x @ w.T)
    packed = _blas.DecodeCopies("f32pack")
    packed.update([w])
    want = np.array(x @ w.T)  # the packed kernel's float32 products
    packed.close()
    assert not np.array_equal(want, openblas)  # so `got == want` shows the panels were read
    copies = _blas.DecodeCopies("float16")
    assert copies.update([w]) == 1
    few = np.array(x[:3] @ w.T)  # the thin kernel, from the float16 copy
    assert not np.array_equal(few, openblas[:3])
    assert np.array_equal(np.array(x @ w.T), openblas)  # no panels yet: OpenBLAS
    monkeypatch.setenv("CLARA_PREFILL_PANELS", "off")
    assert copies.add_panels([w]) == 0
    monkeypatch.delenv("CLARA_PREFILL_PANELS")
    monkeypatch.setenv("CLARA_PACK_GB", "0.001")
    assert copies.add_panels([w]) == 0
    monkeypatch.delenv("CLARA_PACK_GB")
    assert copies.add_panels([w, other]) == 1  # `other` has no copy of this set
    got = np.array(x @ w.T)
    assert np.array_equal(got, want)
    for lo, hi in ((0, 17), (17, 50), (3, 75)):
        assert np.array_equal(np.array(x[lo:hi] @ w.T), got[lo:hi])
    assert np.array_equal(np.array(x[:3] @ w.T), few)  # decode rows: still the copy
    copies.close()
    assert np.array_equal(np.array(x @ w.T), openblas)


def test_model_packs_its_base_weights_within_the_budget(tiny_llama_dir, monkeypatch):
    """`ClaraModel.pack_base_weights` (clara-serve, clara-index): the query encoding of a
    question stays within float32 rounding of the unpacked one; `CLARA_PACK_GB=0` packs none."""
    _needs_kernel()
    if not _blas._thin.clara_thinmm_f32p_available():
        pytest.skip("no AVX-512 or AVX2: products keep OpenBLAS")
    from clara.checkpoint import load_clara

    cm = load_clara(tiny_llama_dir, None, dtype=None)
    question = ["Which river runs past the old mill, and how far is it from the sea?"]
    before = np.array(cm.encode_queries(question))
    monkeypatch.setenv("CLARA_PACK_GB", "0")
    assert cm.pack_base_weights() == 0
    monkeypatch.delenv("CLARA_PACK_GB")
    packable = [m for m in cm.lora_layers() if m.base.weight.shape[0] % 32 == 0]
    assert cm.pack_base_weights() == len(packable) > 0
    np.testing.assert_allclose(np.array(cm.encode_queries(question)), before, atol=1e-4)


def test_compression_reads_the_packed_merged_compressor(tiny_llama_dir, monkeypatch):
    """`pack_base_weights(compressor=True)` (clara-index add and rebuild, the indexing
    service; not clara-serve) also merges the compressor adapter into float32 copies and packs
    them: compressions (not query encodings) run one product per linear, within float32
    rounding of the adapter's path; an adapter changed afterwards is merged again before the
    next compression; without room in `CLARA_PACK_GB` none is made, and `release_packed`
    lets it go."""
    _needs_kernel()
    if not _blas._thin.clara_thinmm_f32p_available():
        pytest.skip("no AVX-512 or AVX2: products keep OpenBLAS")
    from mlx.utils import tree_flatten

    from clara.checkpoint import load_clara
    from clara.lora import merged_weights

    cm = load_clara(tiny_llama_dir, None, dtype=None)
    cm.load_weights(
        [(k, 0.3 * mx.random.normal(v.shape, key=mx.random.key(i)))
         for i, (k, v) in enumerate(tree_flatten(cm.parameters()))
         if ".lora_compressor" in k and k.endswith(".b")],
        strict=False,
    )  # fmt: skip
    docs = ["The old mill stands by the river.", "Salt comes from the sea, two days away." * 3]
    adapter_path = np.array(cm.compress(docs))
    budget = sum(w.nbytes for w in cm._base_weights()) / 2**30
    assert cm.pack_base_weights() > 0 and not cm.__dict__.get("_packed_compressor")  # serving
    monkeypatch.setenv("CLARA_PACK_GB", f"{1.5 * budget}")  # room for the base weights only
    assert cm.pack_base_weights(compressor=True) > 0
    assert not cm.__dict__.get("_packed_compressor") and not merged_weights(cm, "compressor")
    monkeypatch.setenv("CLARA_PACK_GB", f"{2.5 * budget}")
    assert cm.pack_base_weights(compressor=True) > 0 and cm.__dict__["_packed_compressor"]
    packed = np.array(cm.compress(docs))
    assert not np.array_equal(packed, adapter_path)  # not the adapter's products ...
    np.testing.assert_allclose(packed, adapter_path, rtol=0, atol=1e-5 * np.abs(packed).max())
    assert cm.switch.merged is False  # ... and the switch is back as it was
    layer = cm.lora_layers()[0]
    layer.lora_compressor = {**layer.lora_compressor, "b": layer.lora_compressor["b"] + 0.5}
    changed = np.array(cm.compress(docs))
    cm.release_packed()
    np.testing.assert_allclose(
        changed, np.array(cm.compress(docs)), rtol=0, atol=1e-5 * np.abs(changed).max()
    )
    assert not np.allclose(changed, packed, atol=1e-3)
    assert not cm.__dict__["_packed_compressor"] and not merged_weights(cm, "compressor")


def test_packed_passes_leave_openblas_one_thread(tiny_llama_dir, monkeypatch):
    """Beside packed base weights OpenBLAS computes only the adapters' rank-16 products: a
    query encoding gives it one thread (its idle threads spun on the kernel's cores), and
    every core again once nothing is packed."""
    _needs_kernel()
    if not _blas._thin.clara_thinmm_f32p_available() or _blas.loaded is None:
        pytest.skip("no packed kernel or no OpenBLAS here")
    monkeypatch.delenv("CLARA_PREFILL_THREADS", raising=False)
    from clara.checkpoint import load_clara

    cm = load_clara(tiny_llama_dir, None, dtype=None)
    question = ["Which river runs past the old mill?"]
    cm.encode_queries(question)
    assert _blas.current_threads()[0] == os.cpu_count()
    assert cm.pack_base_weights() > 0
    cm.encode_queries(question)
    assert _blas.current_threads() == (1, os.cpu_count())
    cm.release_packed()  # nothing packed: OpenBLAS takes the base products again
    cm.compress(["The old mill stands by the river."])
    assert _blas.current_threads()[0] == os.cpu_count()


def test_base_tiles_run_only_inside_their_block():
    """`--query-precision bfloat16`: a packed base weight gets bfloat16 tiles beside its float32
    panels. Inside `bfloat16_base_products` its products run on the tiles (bfloat16 inputs,
    float32 sums, the same bits in any batch); outside (the compressor) they read the panels
    exactly as before; a decode copy of another weight is unaffected either way."""
    _needs_kernel()
    if not _blas._thin.clara_thinmm_f32p_available():
        pytest.skip("no AVX-512 or AVX2: products keep OpenBLAS")
    w, x = _rand(1536, 576, seed=31), _rand(75, 576, seed=32)
    panels = _blas.DecodeCopies("f32pack")
    assert panels.update([w]) == 1
    float32 = np.array(x @ w.T)
    if not _blas.bf16:
        assert _blas.add_base_tiles([w]) == 0
        pytest.skip(f"no bfloat16 products here: {_blas.bf16_reason}")
    assert _blas.add_base_tiles([w, _rand(64, 64, seed=33)]) == 1  # only packed weights
    assert np.array_equal(np.array(x @ w.T), float32)  # outside the block: the panels
    with _blas.bfloat16_base_products():
        got = np.array(x @ w.T)
        for lo, hi in ((0, 1), (0, 16), (17, 50), (3, 75)):
            assert np.array_equal(np.array(x[lo:hi] @ w.T), got[lo:hi])
    np.testing.assert_allclose(got, _bf16(x) @ _bf16(w).T, rtol=0, atol=1e-3)
    assert np.abs(got - float32).max() > 1e-3  # the tiles really ran
    assert np.array_equal(np.array(x @ w.T), float32)  # and the block is over
    panels.close()


def test_query_precision_bfloat16_changes_queries_only(tiny_llama_dir):
    """`ClaraModel.set_query_precision`: bfloat16 query encodings stay within bfloat16 rounding
    of the float32 ones and are batch invariant; compression stays bit for bit float32; back
    to float32, queries are bit for bit what they were. Where it cannot run: float32."""
    _needs_kernel()
    from clara.checkpoint import load_clara

    cm = load_clara(tiny_llama_dir, None, dtype=None)
    questions = ["Which river runs past the old mill?", "How far is it from the sea, in miles?"]
    doc = ["The old mill stands by the river Wen, eleven miles from the sea. " * 6]
    with pytest.raises(ValueError, match="query precision"):
        cm.set_query_precision("float16")
    assert cm.set_query_precision("bfloat16") == "float32"  # not packed yet
    if not cm.pack_base_weights():
        pytest.skip("no AVX-512 or AVX2: the base weights are not packed")
    q32, mem32 = np.array(cm.encode_queries(questions)), np.array(cm.compress(doc))
    got = cm.set_query_precision("bfloat16")
    assert got == cm.query_precision == ("bfloat16" if _blas.bf16 else "float32")
    if not _blas.bf16:
        pytest.skip(f"no bfloat16 products here: {_blas.bf16_reason}")
    q16 = np.array(cm.encode_queries(questions))
    assert not np.array_equal(q16, q32)
    np.testing.assert_allclose(q16, q32, rtol=0, atol=0.05 * np.abs(q32).max())
    assert np.array_equal(np.array(cm.encode_queries(questions[1:])), q16[1:])
    assert np.array_equal(np.array(cm.compress(doc)), mem32)
    assert cm.set_query_precision("float32") == "float32"
    assert np.array_equal(np.array(cm.encode_queries(questions)), q32)


def test_services_load_with_the_query_precision_they_are_given(tiny_llama_dir):
    """`--query-precision` reaches the model both HTTP services load (`ModelSettings.load`)."""
    from clara.settings import ModelSettings

    cm = ModelSettings(model=str(tiny_llama_dir), query_precision="bfloat16").load()
    usable = _blas.bf16 and cm.__dict__.get("_packed") is not None
    assert cm.query_precision == ("bfloat16" if usable else "float32")
    assert ModelSettings(model=str(tiny_llama_dir)).load().query_precision == "float32"


def test_copies_shared_by_two_owners_live_until_both_let_go():
    _needs_kernel()
    w, x = _rand(300, 64, seed=14), _rand(1, 64, seed=15)
    exact = np.array(x @ w.T)
    a, b = _blas.DecodeCopies("float16"), _blas.DecodeCopies("float16")
    a.update([w])
    b.update([w, _rand(3, 3, seed=16).astype(mx.float16)])  # non-float32 arrays are ignored
    a.close()
    assert not np.array_equal(np.array(x @ w.T), exact)  # b still holds the copy
    b.update([])
    assert np.array_equal(np.array(x @ w.T), exact)


def test_decode_weights_setting(monkeypatch):
    _needs_kernel()
    monkeypatch.delenv("CLARA_DECODE_WEIGHTS", raising=False)
    assert _blas.decode_weights() == "float16"
    monkeypatch.setenv("CLARA_DECODE_WEIGHTS", "float32")
    assert _blas.DecodeCopies().update([_rand(8, 8, seed=19)]) == 0  # float32: no copies
    monkeypatch.setenv("CLARA_DECODE_WEIGHTS", "int4")
    with pytest.raises(
        ValueError, match="CLARA_DECODE_WEIGHTS='int4': choose one of float16, int8"
    ):
        _blas.decode_weights()


def test_helper_pool_survives_products_of_changing_width_back_to_back(tmp_path):
    """A C driver (tests/data/thinmm_stress.c) runs products of three widths back to back with
    3 helpers on this machine's cores. A helper that read the previous product's claim word
    could once claim against the next product's fields: blocks ran twice and the caller waited
    forever (it hung every time within seconds, and once in a held-out evaluation)."""
    import shutil

    if _blas.thin is None:
        pytest.skip(f"thin kernel not in use: {_blas.thin_reason or _blas.reason}")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    lib = Path(_blas.thin)
    driver = tmp_path / "stress"
    source = Path(__file__).with_name("data") / "thinmm_stress.c"
    subprocess.run(
        [cc, "-O2", "-o", str(driver), str(source), str(lib), f"-Wl,-rpath,{lib.parent}", "-lm"],
        check=True,
    )
    try:
        done = subprocess.run([str(driver), "3", "4"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the thin kernel's helper pool hung")
    assert done.returncode == 0, done.stdout + done.stderr
    assert int(done.stdout.split()[0]) > 50  # (a hang is the timeout; this is no speed check)


def _bf16(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.bfloat16).astype(mx.float32), dtype=np.float64)


def test_bf16_products_read_the_bfloat16_copy_and_are_batch_invariant():
    """On CPUs with AMX tiles or AVX-512 BF16, products against a registered decode weight (a
    decode step's rows or a prefill's) run in bfloat16 with float32 sums; unregistered weights
    do not."""
    _needs_kernel()
    if not _blas.bf16:
        pytest.skip(f"no bfloat16 products here: {_blas.bf16_reason}")
    # 49 blocks of 32 outputs: few rows take two blocks at a time, and one is left alone
    w, x = _rand(1568, 576, seed=21), _rand(139, 576, seed=22)
    other = _rand(192, 576, seed=23)
    exact = np.array(x @ w.T)
    copies = _blas.DecodeCopies("float16")
    assert copies.update([w]) == 1
    got = np.array(x @ w.T)
    want = _bf16(x) @ _bf16(w).T  # bfloat16 inputs, sums in float64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
    assert np.abs(got - exact).max() > 1e-3  # the tiles really ran (float32 would be closer)
    for m in (1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 100):  # a row: the same bits in any batch
        assert np.array_equal(np.array(x[:m] @ w.T), got[:m])
    before = _blas.current_threads()[1]
    for threads in (1, 2):  # and however the blocks are shared out
        _blas.set_thin_threads(threads)
        assert np.array_equal(np.array(x[:3] @ w.T), got[:3])
        assert np.array_equal(np.array(x[:40] @ w.T), got[:40])
    _blas.set_thin_threads(before)
    assert np.array_equal(np.array(x[5:77] @ w.T), got[5:77])
    np.testing.assert_allclose(  # a weight without a copy: float32 (OpenBLAS)
        np.array(x @ other.T), np.array(x, np.float64) @ np.array(other, np.float64).T, atol=1e-3
    )
    copies.close()
    assert np.array_equal(np.array(x @ w.T), exact)


def test_float16_copies_are_spared_where_bfloat16_products_take_the_weight():
    """With bfloat16 products, a float16 decode copy would be read only with them off: it is
    not made (decode rows then read the float32 weight), unless kept for comparisons."""
    _needs_kernel()
    if not _blas.bf16:
        pytest.skip(f"no bfloat16 products here: {_blas.bf16_reason}")
    w, x = _rand(256, 576, seed=31), _rand(4, 576, seed=32)
    exact = np.array(x @ w.T)  # float32, the thin kernel (no copy yet)
    half = np.array(x, np.float64) @ np.array(w.astype(mx.float16), np.float64).T
    copies = _blas.DecodeCopies("float16")
    assert copies.update([w]) == 1
    with _blas.float32_products():
        assert np.array_equal(np.array(x @ w.T), exact)  # no float16 copy: float32 weights
    copies.close()
    _blas.keep_float16_copies()
    try:
        copies = _blas.DecodeCopies("float16")
        assert copies.update([w]) == 1
        with _blas.float32_products():
            got = np.array(x @ w.T)
        np.testing.assert_allclose(got, half, rtol=0, atol=1e-4)  # the float16 copy's values
        assert not np.array_equal(got, exact)
        copies.close()
    finally:
        _blas.keep_float16_copies(False)


def test_clara_bf16_setting_picks_the_engine_or_float32():
    """CLARA_BF16=off (or the older CLARA_AMX=off) keeps float32 prefill; CLARA_BF16=avx512
    skips the AMX tiles for AVX-512 BF16 where the CPU has bfloat16 products."""
    _needs_kernel()
    code = "import clara; from clara import _blas; print(_blas.bf16, _blas.bf16_engine, _blas.bf16_reason)"

    def proc(**env):
        return subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True
        )

    def run(**env):
        out = proc(**env)
        return out.stdout.strip() or out.stderr

    assert run(CLARA_BF16="off") == "False None disabled by CLARA_BF16"
    assert run(CLARA_AMX="off") == "False None disabled by CLARA_AMX"
    if _blas.bf16:
        assert run(CLARA_BF16="avx512") == "True AVX-512 BF16 None"
    # a value that is no setting is said aloud, and changes nothing
    out = proc(CLARA_BF16="avx2")
    assert "CLARA_BF16='avx2' is not a setting" in out.stderr
    assert out.stdout.split()[0] == str(_blas.bf16)


def test_bf16_training_copies_take_forward_and_backward_products():
    """Kind "bfloat16" (training): x @ W^T and the backward g @ W through a frozen weight both
    run in bfloat16 with float32 sums; dropping the copy brings float32 back."""
    _needs_kernel()
    if not _blas.bf16:
        pytest.skip(f"no bfloat16 products here: {_blas.bf16_reason}")
    w, x, g = _rand(192, 576, seed=31), _rand(70, 576, seed=32), _rand(70, 192, seed=33)
    exact = np.array(x @ w.T)
    copies = _blas.DecodeCopies("bfloat16")
    assert copies.update([w]) == 1
    forward, backward = np.array(x @ w.T), np.array(g @ w)
    np.testing.assert_allclose(forward, _bf16(x) @ _bf16(w).T, rtol=0, atol=1e-3)
    np.testing.assert_allclose(backward, _bf16(g) @ _bf16(w), rtol=0, atol=1e-3)
    assert np.abs(forward - exact).max() > 1e-3  # the tiles really ran
    grad = mx.grad(lambda v: ((v @ w.T) * g).sum())(x)  # the vjp's product is g @ W
    np.testing.assert_array_equal(np.array(grad), backward)
    copies.close()
    assert np.array_equal(np.array(x @ w.T), exact)


def test_kernels_are_cached_where_they_can_be_written(tmp_path, monkeypatch):
    """A container audit: run as another user with a read-only home, nothing could be
    cached, every kernel was off and decoding 2-3x slower. The cache goes to
    $CLARA_HOME/cache, then a folder of this user's in the temporary folder; a folder others
    may write is never used (what is loaded from it runs in this process)."""
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    monkeypatch.setenv("CLARA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(_native.tempfile, "tempdir", str(tmp_path / "tmp"))
    _native.cache_home.cache_clear()
    try:
        assert _native.cache_home() == tmp_path / "home" / "cache"
        assert _native.lib_cache() == tmp_path / "home" / "cache" / "lib"
        (tmp_path / "home" / "cache").rmdir()  # (a file where the folder would be: unusable
        (tmp_path / "home" / "cache").write_text("")  # even for root, who writes anywhere)
        (tmp_path / "tmp").mkdir()
        shared = tmp_path / "tmp" / f"clara-cache-{os.getuid()}"
        shared.mkdir(mode=0o777)
        shared.chmod(0o777)  # made by someone else, writable by all: not used
        _native.cache_home.cache_clear()
        assert _native.cache_home() == blocked / "clara"  # (none usable: as before)
        shared.chmod(0o770)  # (its group may write it: a umask of 002, an fsGroup)
        _native.cache_home.cache_clear()
        assert _native.cache_home() == shared
    finally:
        _native.cache_home.cache_clear()
