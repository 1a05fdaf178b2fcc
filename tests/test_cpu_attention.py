"""clara/attention.py (CPU attention with a fused softmax) and clara/_jit.py (native JIT flags).

The fused attention must be mlx-lm's attention to float rounding for every mask form the
models pass (none, "causal" with and without a cache offset, boolean and additive arrays, in
2-D and 4-D, one mask for all heads or one per head), with grouped-query heads, and through
the gradient the training stages take.
"""

from __future__ import annotations

import os
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

from clara import _jit, _native, cpu
from clara import attention as A

pytestmark = pytest.mark.cpu_only  # clara's CPU paths: skipped on Metal


@pytest.fixture(autouse=True)
def _fused_kernels_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels run here on any CPU: off by default without AVX-512 or AVX2 (unmeasured
    there, not wrong: `clara._blas.fused_attention_default`), their arithmetic is tested
    everywhere."""
    monkeypatch.setenv("CLARA_FUSED_ATTENTION", "on")


def _openblas_thread_invariant() -> bool:
    """Whether OpenBLAS's float32 products give the same bits on one thread and two: true of
    its AVX-512 kernels, not of the AVX2 ones on a Zen 5 CPU (OPENBLAS_CORETYPE=Haswell)."""
    from clara import _blas

    rng = np.random.default_rng(0)
    x = mx.array(rng.standard_normal((40, 576)).astype(np.float32))
    a = mx.array(rng.standard_normal((576, 24)).astype(np.float32))  # a LoRA A: x @ A
    before = _blas.current_threads()[0]
    try:
        out = []
        for n in (1, 2):
            _blas.set_threads(n)
            out.append(np.array(x @ a))
    finally:
        _blas.set_threads(before)
    return np.array_equal(*out)


def _qkv(B, H, Hk, T, S, D=16, dtype=mx.float32, seed=0):
    rng = np.random.default_rng(seed)
    q = mx.array(rng.normal(size=(B, H, T, D)).astype(np.float32)).astype(dtype)
    k = mx.array(rng.normal(size=(B, Hk, S, D)).astype(np.float32)).astype(dtype)
    v = mx.array(rng.normal(size=(B, Hk, S, D)).astype(np.float32)).astype(dtype)
    return q, k, v


def _masks(B, H, T, S, seed=1):
    rng = np.random.default_rng(seed)
    keep = rng.random((B, 1, T, S)) > 0.4
    keep |= np.eye(T, S, k=S - T, dtype=bool)  # no row fully masked
    per_head = np.broadcast_to(keep, (B, H, T, S)).copy()
    per_head[:, ::2] = np.eye(T, S, k=S - T, dtype=bool) | per_head[:, ::2]
    additive = np.where(keep, 0.0, -1e9).astype(np.float32)
    return {
        "none": None,
        "causal": "causal",
        "bool (B,1,T,S)": mx.array(keep),
        "bool (T,S)": mx.array(keep[0, 0]),
        "bool (B,H,T,S)": mx.array(per_head),
        "additive (B,1,T,S)": mx.array(additive),
    }


@pytest.mark.parametrize(
    "B,H,Hk,T,S",
    [(2, 9, 3, 6, 6), (1, 9, 3, 1, 7), (2, 4, 4, 3, 8), (3, 8, 2, 5, 9), (1, 6, 1, 4, 4)],
)
def test_matches_mlx_lm_for_every_mask_form(B, H, Hk, T, S):
    q, k, v = _qkv(B, H, Hk, T, S)
    for name, mask in _masks(B, H, T, S).items():
        got = A.attention(q, k, v, None, scale=0.25, mask=mask)
        want = A._original(q, k, v, None, scale=0.25, mask=mask)
        assert got.shape == want.shape == (B, H, T, 16)
        err = float(mx.abs(got - want).max())
        assert err < 1e-5, f"{name}: max difference {err}"


def test_half_precision_inputs_keep_their_dtype_and_values():
    q, k, v = _qkv(2, 9, 3, 5, 5, dtype=mx.float16)
    got = A.attention(q, k, v, None, scale=0.125, mask="causal")
    want = A._original(q, k, v, None, scale=0.125, mask="causal")
    assert got.dtype == mx.float16
    assert float(mx.abs(got.astype(mx.float32) - want.astype(mx.float32)).max()) < 5e-3


def test_gradients_match_mlx_lm():
    q, k, v = _qkv(2, 9, 3, 6, 6, seed=3)
    mask = _masks(2, 9, 6, 6)["bool (B,1,T,S)"]

    def loss(fn):
        return lambda q, k, v: (fn(q, k, v, None, scale=0.3, mask=mask) ** 2).sum()

    got = mx.grad(loss(A.attention), argnums=(0, 1, 2))(q, k, v)
    want = mx.grad(loss(A._original), argnums=(0, 1, 2))(q, k, v)
    for g, w in zip(got, want):
        assert float(mx.abs(g - w).max()) < 1e-4


def test_sinks_and_unknown_masks():
    q, k, v = _qkv(1, 4, 4, 3, 3)
    sinks = mx.zeros((4,))
    got = A.attention(q, k, v, None, scale=0.5, mask=None, sinks=sinks)  # handed to mlx-lm
    want = A._original(q, k, v, None, scale=0.5, mask=None, sinks=sinks)
    assert float(mx.abs(got - want).max()) == 0.0
    with pytest.raises(ValueError, match="unsupported attention mask"):
        A.attention(q, k, v, None, scale=0.5, mask="sliding")


def test_installed_in_the_loaded_model_and_same_hidden_states(tiny_llama_dir, monkeypatch):
    import mlx_lm.models.llama as llama

    from clara.loader import load_base

    base = load_base(tiny_llama_dir, dtype="float32")
    assert llama.scaled_dot_product_attention is A.attention
    ids = mx.array([[5, 9, 3, 7, 11, 2, 8]])
    ours = base.model(ids)
    monkeypatch.setattr(llama, "scaled_dot_product_attention", A._original)
    theirs = base.model(ids)
    assert float(mx.abs(ours - theirs).max()) < 1e-4
    monkeypatch.setenv("CLARA_CPU_ATTENTION", "off")
    monkeypatch.setattr(llama, "scaled_dot_product_attention", A.attention)
    assert A.install(base.model) is False
    assert llama.scaled_dot_product_attention is A._original


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the wrapper is for Linux")
def test_jit_wrapper_compiles_mlx_kernels_natively_and_nothing_else(tmp_path):
    if not _jit.native:
        pytest.skip(f"JIT wrapper off: {_jit.reason}")
    wrapper = _jit._cache_dir() / "g++"
    assert os.environ["PATH"].split(os.pathsep)[0] == str(wrapper.parent)
    # a command outside MLX's cache passes through untouched ...
    src = tmp_path / "t.cpp"
    src.write_text("#ifdef __AVX2__\n#error native\n#endif\nint main() { return 0; }\n")
    plain = subprocess.run([str(wrapper), str(src), "-o", str(tmp_path / "t")], capture_output=True)
    assert plain.returncode == 0, plain.stderr
    # ... and a fused kernel computes exp correctly, NaN and the overflow limits included
    x = mx.array([0.0, 1.0, -100.0, float("nan"), 100.0, -1.5])
    got = mx.compile(lambda x: mx.exp(x) * 2.0)(x)
    with np.errstate(over="ignore"):
        want = 2.0 * np.exp(np.array([0.0, 1.0, -100.0, np.nan, 100.0, -1.5], dtype=np.float32))
    # MLX's exp flushes results below e^-88 to 0 (numpy keeps a denormal there)
    np.testing.assert_allclose(np.array(got), want, rtol=1e-6, atol=1e-30, equal_nan=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the wrapper is for Linux")
def test_jit_wrapper_renames_a_kernel_into_place_only_when_it_is_built(tmp_path):
    """Before: MLX's g++ wrote the library straight into the shared cache, and a second
    training rank needing the same kernel could load the half-written file ("Could not load
    C++ shared library"). A stand-in compiler writes half a file and reports what it sees."""
    fake = tmp_path / "cc"
    fake.write_text(
        '#!/bin/sh\nfor a do [ "$prev" = -o ] && out=$a; prev=$a; done\n'
        'printf half > "$out"; ls "$(dirname "$out")"; exit ${FAIL:-0}\n'
    )
    fake.chmod(0o755)
    wrapper = tmp_path / "g++"
    wrapper.write_text(_jit._wrapper(str(fake)))
    wrapper.chmod(0o755)
    cache = tmp_path / "mlx" / "0.0" / "cpu"
    cache.mkdir(parents=True)
    lib = cache / "lib k 1.so"  # (a space: arguments are passed on intact)
    run = subprocess.run([str(wrapper), "-O3", str(cache / "k.cpp"), "-o", str(lib)],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    seen = run.stdout.split("\n")
    assert lib.name not in seen and any(n.startswith(lib.name + ".") for n in seen), seen
    assert sorted(p.name for p in cache.iterdir()) == [lib.name] and lib.read_text() == "half"
    failed = subprocess.run([str(wrapper), str(cache / "j.cpp"), "-o", str(cache / "libj.so")],
                            env={**os.environ, "FAIL": "3"}, capture_output=True)  # fmt: skip
    assert failed.returncode == 3  # the compiler's status, and nothing left behind
    assert sorted(p.name for p in cache.iterdir()) == [lib.name]
    # a source another process was rewriting: the first compile fails, the second is kept
    once = tmp_path / "failed-once"
    fake.write_text(
        '#!/bin/sh\nfor a do [ "$prev" = -o ] && out=$a; prev=$a; done\n'
        f'[ -e "{once}" ] || {{ touch "{once}"; exit 1; }}\nprintf whole > "$out"\n'
    )
    again = subprocess.run([str(wrapper), str(cache / "m.cpp"), "-o", str(cache / "libm.so")],
                           capture_output=True)  # fmt: skip
    assert again.returncode == 0 and (cache / "libm.so").read_text() == "whole"


_KERNELS = """
import sys, numpy as np
import clara
import mlx.core as mx
from clara.attention import _exp_shifted
from clara.norm import _rms_norm
from clara.rope import _rotate
from mlx_lm.models.activations import swiglu
rng = np.random.default_rng(0)
s = rng.standard_normal((3, 1000)).astype(np.float32) * 30
s[0, :5] = [np.inf, -np.inf, np.nan, -1e30, 100]
g = rng.standard_normal((3, 1000)).astype(np.float32) * 20
u = rng.standard_normal((3, 1000)).astype(np.float32)
s, g, u, z = mx.array(s), mx.array(g), mx.array(u), mx.zeros((3, 1))
out = [_exp_shifted(s, z), swiglu(g, u), _exp_shifted(s[:, ::2], z)]  # contiguous and strided
out += list(_rotate(g[:, :500], g[:, 500:], u[:, :500], u[:, 500:]))  # products and sums
out.append(_rms_norm(g, u[0], mx.array(1e-5)))
np.save(sys.argv[1], np.concatenate([np.array(o).ravel() for o in out]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the wrapper is for Linux")
def test_native_kernels_give_the_bits_of_mlx_own(tmp_path):
    """The wrapper's flags inline and vectorize MLX's exp in fused kernels (softmax, SwiGLU)
    and keep products and sums apart (no FMA: RoPE, RMSNorm): every value, inf and NaN
    included, must be bit for bit what MLX's own build computes."""
    if not _jit.native:
        pytest.skip(f"JIT wrapper off: {_jit.reason}")
    script = tmp_path / "kernels.py"
    script.write_text(_KERNELS)
    got = {}
    for name, switch in (("native", "on"), ("mlx", "off")):
        env = {**os.environ, "CLARA_JIT_NATIVE": switch, "TMPDIR": str(tmp_path / name)}
        (tmp_path / name).mkdir()
        out = tmp_path / f"{name}.npy"
        done = subprocess.run(
            [sys.executable, str(script), str(out)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        got[name] = np.load(out)
    assert np.array_equal(got["native"], got["mlx"], equal_nan=True)


# ---- the fused kernel for prompt passes (clara/_attention.c) --------------------------------

needs_kernel = pytest.mark.skipif(
    A._blas._thin is None, reason=f"clara's C library is not built: {A._blas.thin_reason}"
)


def _seen(mask, B, H, T, S) -> np.ndarray:
    """(B, H, T): rows that see at least one key (a row that sees none gets zeros, where
    MLX's finite mask value averages every value)."""
    if mask is None or isinstance(mask, str):
        return np.ones((B, H, T), bool)
    m = np.array(mask)
    m = m.reshape((1,) * (4 - m.ndim) + m.shape)
    return np.broadcast_to(m.any(-1), (B, H, T))


@needs_kernel
@pytest.mark.parametrize(
    "B,H,Hk,T,S,D",
    [(2, 9, 3, 70, 70, 64), (1, 9, 3, 40, 150, 64), (3, 8, 2, 5, 129, 128), (2, 4, 4, 65, 65, 64)],
)
def test_fused_kernel_matches_mlx_lm(B, H, Hk, T, S, D):
    """Every boolean mask form, "causal" with and without cached keys before the rows, key
    blocks cut off part way (S not a multiple of 64), grouped-query heads, head sizes 64/128."""
    q, k, v = _qkv(B, H, Hk, T, S, D=D)
    for name, mask in _masks(B, H, T, S).items():
        if name.startswith("additive"):
            assert A.fused(q, k, v, 0.125, mask) is None  # MLX's path takes it
            continue
        got = A.fused(q, k, v, 0.125, mask)
        want = A._original(q, k, v, None, scale=0.125, mask=mask)
        assert got is not None and got.shape == want.shape == (B, H, T, D)
        seen = _seen(mask, B, H, T, S)
        err = float(np.abs(np.array(got) - np.array(want))[seen].max())
        assert err < 1e-5, f"{name}: max difference {err}"


@needs_kernel
def test_a_causal_boolean_mask_lets_the_kernel_skip_the_upper_triangle():
    """An encoder pass's mask (`clara.model._Positions`: causal, left padding hidden, each
    pad row seeing itself) hides every key past its row anyway: with `causal=True` the kernel
    skips those key blocks and gives the mask's own result bit for bit. The flag is no
    no-op: beside a mask that hides nothing it gives plain causal attention."""
    from clara.model import _Positions

    B, H, Hk, T, D = 2, 9, 3, 150, 64
    q, k, v = _qkv(B, H, Hk, T, T, D=D, seed=7)
    mask = _Positions(mx.array([0, 37])).make_mask(T)
    assert _Positions.causal_mask
    full = np.array(A.fused(q, k, v, 0.125, mask))
    assert np.array_equal(np.array(A.fused(q, k, v, 0.125, mask, True)), full)
    everything = mx.ones((B, 1, T, T), dtype=mx.bool_)
    causal = np.array(A.fused(q, k, v, 0.125, "causal"))
    assert np.array_equal(np.array(A.fused(q, k, v, 0.125, everything, True)), causal)
    assert not np.array_equal(np.array(A.fused(q, k, v, 0.125, everything)), causal)


@needs_kernel
def test_fused_kernel_rows_do_not_depend_on_the_pass():
    """A prompt's rows get the same bits in one pass or cut into chunks after cached keys,
    alone or beside another prompt: what lets a prompt prefill the same alone or batched."""
    q, k, v = _qkv(2, 9, 3, 150, 150, D=64, seed=5)
    whole = np.array(A.fused(q, k, v, 0.125, "causal"))
    # rows 100..149 as a chunk after 100 cached positions (keys 0..149), batch element 0 alone
    part = A.fused(q[:1, :, 100:], k[:1], v[:1], 0.125, "causal")
    assert np.array_equal(np.array(part), whole[:1, :, 100:])
    # a transposed (non-contiguous) query, as mlx-lm's attention hands it over
    qt = mx.array(np.ascontiguousarray(np.array(q).transpose(0, 2, 1, 3))).transpose(0, 2, 1, 3)
    assert np.array_equal(np.array(A.fused(qt, k, v, 0.125, "causal")), whole)


@needs_kernel
def test_fused_kernel_only_for_rows_from_the_start_position(monkeypatch):
    """Through NumPy (the MLX op switched off), `attention` takes the kernel only inside
    `fused_passes(start)`, for passes whose rows start at `start` or later (keys minus rows),
    and never when switched off; the results agree with MLX's path either way."""
    monkeypatch.setenv("CLARA_ROWS_ATTENTION", "off")
    q, k, v = _qkv(1, 9, 3, 300, 400, D=64, seed=2)  # rows 100..399 after 100 cached keys
    calls = []
    real = A.fused
    monkeypatch.setattr(A, "fused", lambda *a: calls.append(1) or real(*a))
    want = A._original(q, k, v, None, scale=0.125, mask="causal")
    plain = A.attention(q, k, v, None, 0.125, "causal")  # a training step, say
    assert not calls
    with A.fused_passes(100):
        got = A.attention(q, k, v, None, 0.125, "causal")
        assert len(calls) == 1
    with A.fused_passes(101):  # the pass starts before the kernel's first row
        A.attention(q, k, v, None, 0.125, "causal")
        assert len(calls) == 1
    with A.fused_passes(0):
        monkeypatch.setenv("CLARA_FUSED_ATTENTION", "off")
        A.attention(q, k, v, None, 0.125, "causal")
        assert len(calls) == 1
    for out in (plain, got):
        assert float(mx.abs(out - want).max()) < 1e-5


def _greedy_answer(cm, adapter, prompt, max_tokens: int) -> list[int]:
    """One request's tokens through `clara.decode.Decoder`, alone."""
    from clara.decode import Decoder
    from clara.stream import SamplingParams

    decoder = Decoder(cm, adapter)
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    [(_, first)] = decoder.add_many([(prompt, params, None)])
    tokens = [first.token]
    while decoder.sequences:
        tokens += [chunk.token for _, chunk in decoder.step()]
    return tokens


@needs_kernel
def test_a_long_text_prompt_decodes_the_same_through_the_fused_kernel(monkeypatch):
    """The default model (head size 64) reading a text prompt of ~700 positions: the rows
    from position `prefill_step` (512) on take the kernel (every row, where it runs as an MLX
    op), cut in chunks that start there, and the answer is the one MLX's attention gives."""
    from pydoc_data.topics import topics

    from clara.checkpoint import load_clara
    from clara.prompt import text_prompt

    cm = load_clara("smollm2-135m")
    chunks = [topics["assert"], topics["while"], topics["for"]]
    prompt = text_prompt(cm, "What does the assert statement do?", chunks)
    assert prompt.positions > 600
    calls = []
    real = A.fused
    monkeypatch.setattr(A, "fused", lambda *a: calls.append(1) or real(*a))
    fused = _greedy_answer(cm, None, prompt, 8)
    from clara import _mlxext

    # every layer of the chunk from position 512; as an MLX op, of the first chunk too
    assert len(calls) == (60 if _mlxext.module() is not None else 30)
    monkeypatch.setenv("CLARA_FUSED_ATTENTION", "off")
    calls.clear()
    assert _greedy_answer(cm, None, prompt, 8) == fused and not calls


@needs_kernel
def test_fused_kernel_as_an_mlx_op_takes_every_prompt_row(monkeypatch):
    """As an MLX op (clara/_mlx_attention.cpp) the kernel waits for nothing: inside
    `fused_passes` every prompt row takes it, whatever the start, also while `lanes` builds
    passes side by side; the same bits as through NumPy, and MLX's results to rounding."""
    _rows_ext()
    q, k, v = _qkv(2, 9, 3, 120, 220, D=64, seed=4)  # rows 100..219 after 100 cached keys
    keep = np.ones((2, 1, 120, 220), bool)
    keep[1, ..., :30] = False  # left padding of the second prompt
    mask = mx.array(keep & (np.arange(220) <= np.arange(100, 220)[:, None]))
    want = A._original(q, k, v, None, scale=0.125, mask=mask)
    with A.fused_passes(512):
        assert A.fused_from() == 0
        got = A.attention(q, k, v, None, 0.125, mask)
    monkeypatch.setenv("CLARA_ROWS_ATTENTION", "off")
    numpy_path = A.fused(q, k, v, 0.125, mask)
    assert np.array_equal(np.array(got), np.array(numpy_path))
    assert float(mx.abs(got - want)[0].max()) < 1e-5
    assert float(mx.abs(got - want)[1, :, :, :].max()) < 1e-5


# ---- decode steps' attention as one MLX op (clara/_mlx_attention.cpp) -----------------------
def _rows_ext():
    from clara import _mlxext

    ext = _mlxext.module()
    if ext is None:
        pytest.skip(f"the attention primitive is not built here: {_mlxext.reason}")
    return ext


@pytest.mark.parametrize(
    "B,H,Hk,T,S,D",
    [(1, 9, 3, 1, 7, 64), (8, 9, 3, 1, 161, 64), (2, 4, 4, 3, 40, 16), (3, 8, 2, 1, 129, 128),
     (2, 6, 1, 5, 33, 32)],
)  # fmt: skip
def test_rows_primitive_matches_mlx_lm(B, H, Hk, T, S, D):
    """Every boolean mask form and "causal" (with cached keys before the rows), grouped-query
    heads, head sizes 16-128, key counts that are not multiples of 16, transposed queries."""
    _rows_ext()
    q, k, v = _qkv(B, H, Hk, T, S, D=D, seed=B + S)
    qt = mx.array(np.ascontiguousarray(np.array(q).transpose(0, 2, 1, 3))).transpose(0, 2, 1, 3)
    for name, mask in _masks(B, H, T, S).items():
        got = A.rows(qt, k, v, 0.125, mask)
        if name.startswith("additive"):
            assert got is None  # MLX's path takes it
            continue
        want = A._original(q, k, v, None, scale=0.125, mask=mask)
        assert got is not None and got.shape == want.shape == (B, H, T, D)
        seen = _seen(mask, B, H, T, S)
        err = float(np.abs(np.array(got) - np.array(want))[seen].max())
        assert err < 1e-5, f"{name}: max difference {err}"


def test_rows_primitive_gives_a_row_the_same_bits_in_any_batch():
    """A sequence's row alone and left-padded beside others in a batch (the decoder's batch
    caches): the same bits, for any padding, so batched decoding gives each request its own
    tokens."""
    _rows_ext()
    q, k, v = _qkv(1, 9, 3, 1, 150, D=64, seed=7)
    alone = np.array(A.rows(q, k, v, 0.125, None))
    for pad in (1, 10, 16, 37):
        other_q, other_k, other_v = _qkv(2, 9, 3, 1, 150 + pad, D=64, seed=pad)
        kp = mx.concatenate([other_k[:1], mx.concatenate([other_k[1:, :, :pad], k], 2)])
        vp = mx.concatenate([other_v[:1], mx.concatenate([other_v[1:, :, :pad], v], 2)])
        keep = np.ones((2, 1, 1, 150 + pad), bool)
        keep[1, ..., :pad] = False
        batch = A.rows(mx.concatenate([other_q[:1], q]), kp, vp, 0.125, mx.array(keep))
        assert np.array_equal(np.array(batch)[1:], alone), pad


def test_decode_steps_take_the_primitive_and_answer_as_mlx_ops_do(monkeypatch):
    """The default model decoding a memory prompt: inside `decode_steps` every layer's
    attention is the primitive (never a prompt's rows), and the greedy answer is the one MLX's
    ops give."""
    _rows_ext()
    from pydoc_data.topics import topics

    from clara.checkpoint import load_clara
    from clara.prompt import memory_prompt

    cm = load_clara("smollm2-135m")
    memories = cm.compress([topics["assert"], topics["while"]])
    prompt = memory_prompt(cm, "What does the assert statement do?", list(memories))
    calls = []
    real = A.rows
    monkeypatch.setattr(A, "rows", lambda *a: calls.append(a[0].shape[2]) or real(*a))
    primitive = _greedy_answer(cm, "generator", prompt, 12)
    assert len(calls) == 30 * 11 and set(calls) == {1}  # a forward for tokens 2-12
    monkeypatch.setattr(A, "rows", lambda *a: None)  # MLX's ops
    assert _greedy_answer(cm, "generator", prompt, 12) == primitive


def test_rows_primitive_reads_views_whose_last_axis_is_strided():
    """Keys and values handed over as transposed views (last axis not contiguous): the
    primitive copies them when it runs and gives what MLX's ops give."""
    _rows_ext()
    q, k, v = _qkv(2, 9, 3, 1, 37, D=64, seed=11)
    kt = mx.array(np.ascontiguousarray(np.array(k).swapaxes(-1, -2))).swapaxes(-1, -2)
    vt = mx.array(np.ascontiguousarray(np.array(v).swapaxes(-1, -2))).swapaxes(-1, -2)
    want = A._original(q, k, v, None, scale=0.125, mask=None)
    got = A.rows(q, kt, vt, 0.125, None)
    assert float(mx.abs(got - want).max()) < 1e-5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="built on Linux")
def test_rows_primitive_that_cannot_build_leaves_mlx_ops_with_the_reason(tmp_path):
    """No usable C++ compiler: nothing is built, decode steps keep MLX's ops, and the startup
    line says why."""
    code = (
        "import clara, mlx.core as mx\n"
        "from clara import _mlxext, cpu, attention as A\n"
        "print(_mlxext.module() is None, '|', cpu.describe())\n"
        "q = mx.ones((1, 2, 1, 16)); k = mx.ones((1, 2, 3, 16))\n"
        "with A.decode_steps(): print(A.attention(q, k, k, None, 0.25, None).shape)\n"
    )
    env = {**os.environ, "CXX": "false", "XDG_CACHE_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    first, shape = out.stdout.strip().splitlines()
    if "thin-matmul kernel off" in first:
        pytest.skip("no thin-matmul library here either")
    assert first.startswith("True |") and "attention MLX ops off (compiling" in first
    assert shape == "(1, 2, 1, 16)"


def test_compression_and_query_encodings_take_the_op_to_rounding(monkeypatch):
    """The default model's compressor and query adapter (`ClaraModel.compress`,
    `encode_queries`): every layer's attention is the fused kernel as an MLX op, the memories
    and query encodings are MLX's ops' to float rounding and rank the documents the same, a
    chunk gets the same bits alone or side by side in the CPU's lanes, and
    `CLARA_ROWS_ATTENTION=off` gives MLX's ops back."""
    _rows_ext()
    from pydoc_data.topics import topics

    from clara.checkpoint import load_clara
    from clara.retrieval import flatten_normalize

    cm = load_clara("smollm2-135m")
    cm.pack_base_weights(compressor=True)  # as clara-index add does
    docs = [topics[n] for n in ("assert", "while", "for", "import", "try")]
    questions = ["What does the assert statement do?", "How does a for loop end?"]
    calls = []
    real = A.fused
    monkeypatch.setattr(A, "fused", lambda *a: calls.append(a[0].shape[2:] + a[5:]) or real(*a))
    memories = np.array(cm.compress(docs))
    assert len(calls) == 30 * len(docs)  # batch 1 on the CPU: a pass per chunk
    # every pass's key blocks past the causal limit skipped; the last block's rows are the
    # memory positions alone (clara.last_positions)
    assert all(c[-1] is True for c in calls)
    assert sorted({c[0] for c in calls})[0] == cm.n_mem
    assert sum(c[0] == cm.n_mem for c in calls) == len(docs)
    queries = np.array(cm.encode_queries(questions))
    assert len(calls) == 30 * (len(docs) + 1)  # both questions in one pass
    monkeypatch.setenv("CLARA_CPU_LANES", "1")
    one_pass = np.array(cm.compress(docs))
    if _openblas_thread_invariant():  # lanes: the same bits
        assert np.array_equal(one_pass, memories)
    else:  # the adapters' low-rank products (OpenBLAS) vary in their last bits
        np.testing.assert_allclose(one_pass, memories, rtol=0, atol=1e-5 * np.abs(memories).max())
    monkeypatch.setenv("CLARA_ROWS_ATTENTION", "off")
    calls.clear()
    mlx_memories = np.array(cm.compress(docs))
    mlx_queries = np.array(cm.encode_queries(questions))
    assert not calls
    for got, want in ((memories, mlx_memories), (queries, mlx_queries)):
        assert not np.array_equal(got, want)
        assert np.abs(got - want).max() < 1e-5 * np.abs(want).max()
    scores = flatten_normalize(queries) @ flatten_normalize(memories).T
    want = flatten_normalize(mlx_queries) @ flatten_normalize(mlx_memories).T
    assert (scores.argsort(axis=1) == want.argsort(axis=1)).all()


@needs_kernel
def test_kernels_take_the_cpus_vector_width(monkeypatch):
    """The kernels' vectors are as wide as the CPU's registers: 8 floats with AVX2 alone (16,
    written for AVX-512, spilled there and made a long prompt's attention 4.5x slower than
    MLX's ops), 16 with AVX-512; on by default with either."""
    flags = _native.cpu_flags()
    if "avx512f" in flags:
        want = 16
    elif "avx2" in flags and "fma" in flags:
        want = 8
    else:
        pytest.skip("an x86 CPU with AVX2 or AVX-512 sets the width")
    assert A._blas.attention_lanes() == want
    monkeypatch.delenv("CLARA_FUSED_ATTENTION")  # "on" from the autouse fixture
    assert A._blas.fused_attention_default()
    assert f"fused attention {want}-float vectors" in cpu.describe()


def _rows_call(lib, q, k, v, keep, scale):
    """clara_attention_rows of `lib` on float32 arrays q (B, H, T, D), k and v (B, Hk, S, D);
    keep: None (causal) or a boolean (B, 1, T, S) mask. Returns (B, H, T, D)."""
    import ctypes

    B, H, T, D = q.shape
    Hk, S = k.shape[1], k.shape[2]
    q, k, v = (np.ascontiguousarray(x, np.float32) for x in (q, k, v))
    out = np.empty((B, H, T, D), np.float32)
    L, P = ctypes.c_long, ctypes.c_void_p
    st = [[s // 4 for s in x.strides[:3]] for x in (q, k, v)]
    m = None if keep is None else np.ascontiguousarray(keep, np.uint8)
    mst = (0, 0, 0, 0) if m is None else (T * S, 0, S, 1)
    done = lib.clara_attention_rows(
        B, H, Hk, T, S, D, P(q.ctypes.data), *map(L, st[0]), P(k.ctypes.data), *map(L, st[1]),
        P(v.ctypes.data), *map(L, st[2]), P(None if m is None else m.ctypes.data), *map(L, mst),
        int(keep is None), S - T, ctypes.c_float(scale), P(out.ctypes.data),
    )  # fmt: skip
    assert done == 1
    return out


@needs_kernel
def test_the_other_vector_width_gives_mlx_lm_attention_and_batch_invariant_rows(
    tmp_path, monkeypatch
):
    """Both widths are tested on any CPU that builds one: clara's library built with the other
    (16 floats where the CPU gives 8, 8 where it gives 16) computes prompt rows (every boolean
    mask form, causal after cached keys, part key blocks, grouped heads, head sizes 64/128; the
    same bits whether cut into passes or not) and decode rows (head sizes 16-256) as MLX's ops
    do, to rounding; a decode row alone and left-padded in a batch gets the same bits, and a
    row that sees no key zeros."""
    import ctypes
    import shutil

    from clara import _blas

    other = 16 if _blas.attention_lanes() == 8 else 8
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    lib_path = tmp_path / "other.so"
    subprocess.run(
        [cc, "-O3", *_native.NATIVE, "-pthread", "-shared", "-fPIC", f"-DCLARA_VW={other}",
         *map(str, _blas.SOURCES), "-lm", "-o", str(lib_path)],
        check=True, capture_output=True,
    )  # fmt: skip
    lib = ctypes.CDLL(str(lib_path))
    assert lib.clara_attention_lanes() == other
    monkeypatch.setattr(_blas, "_thin", lib)
    monkeypatch.setenv("CLARA_ROWS_ATTENTION", "off")  # A.fused through NumPy: `lib`'s kernel
    for B, H, Hk, T, S, D in [
        (2, 9, 3, 70, 70, 64),
        (1, 9, 3, 40, 150, 64),
        (3, 8, 2, 5, 129, 128),
    ]:
        q, k, v = _qkv(B, H, Hk, T, S, D=D, seed=S)
        for name, mask in _masks(B, H, T, S).items():
            if name.startswith("additive"):
                continue
            got = A.fused(q, k, v, 0.125, mask)
            want = A._original(q, k, v, None, scale=0.125, mask=mask)
            seen = _seen(mask, B, H, T, S)
            err = float(np.abs(np.array(got) - np.array(want))[seen].max())
            assert err < 1e-5, f"prompt rows {(B, H, Hk, T, S, D)} {name}: {err}"
    whole = np.array(A.fused(*_qkv(2, 9, 3, 150, 150, D=64, seed=5), 0.125, "causal"))
    q, k, v = _qkv(2, 9, 3, 150, 150, D=64, seed=5)  # rows 100.. after 100 cached keys, alone
    part = np.array(A.fused(q[:1, :, 100:], k[:1], v[:1], 0.125, "causal"))
    assert np.array_equal(part, whole[:1, :, 100:])
    shapes = [(8, 9, 3, 1, 161, 64), (2, 6, 1, 5, 33, 32), (3, 8, 2, 1, 129, 128),
              (2, 4, 4, 1, 40, 256), (1, 4, 2, 3, 23, 16)]  # fmt: skip
    for B, H, Hk, T, S, D in shapes:
        q, k, v = _qkv(B, H, Hk, T, S, D=D, seed=S)
        keep = _masks(B, H, T, S)["bool (B,1,T,S)"]
        for mask in ("causal", keep):
            causal = isinstance(mask, str)
            got = _rows_call(
                lib, *map(np.array, (q, k, v)), None if causal else np.array(mask), 0.125
            )
            want = np.array(A._original(q, k, v, None, scale=0.125, mask=mask))
            seen = _seen(mask, B, H, T, S)
            assert float(np.abs(got - want)[seen].max()) < 1e-5, (B, H, Hk, T, S, D)
    q, k, v = (np.array(x) for x in _qkv(1, 9, 3, 1, 150, D=64, seed=7))
    alone = _rows_call(lib, q, k, v, np.ones((1, 1, 1, 150), bool), 0.125)
    for pad in (1, 10, 16, 37):
        oq, ok, ov = (np.array(x) for x in _qkv(2, 9, 3, 1, 150 + pad, D=64, seed=pad))
        kp = np.concatenate([ok[:1], np.concatenate([ok[1:, :, :pad], k], 2)])
        vp = np.concatenate([ov[:1], np.concatenate([ov[1:, :, :pad], v], 2)])
        keep = np.ones((2, 1, 1, 150 + pad), bool)
        keep[1, ..., :pad] = False
        batch = _rows_call(lib, np.concatenate([oq[:1], q]), kp, vp, keep, 0.125)
        assert np.array_equal(batch[1:], alone), pad
    none_seen = np.zeros((1, 1, 1, 150), bool)  # a row that sees no key gets zeros
    assert not _rows_call(lib, q, k, v, none_seen, 0.125).any()
