"""clara/rope.py and clara/norm.py: RoPE and RMSNorm on the CPU with fewer MLX ops.

Both must give the bits of `mx.fast.rope` / `mx.fast.rms_norm` (whose CPU path is MLX's
reference graph), for every argument form the architectures pass, inside and outside a
`same_positions` block, and through the gradients the training stages take; and the loaded
model must compute exactly what it computes without them.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from clara import norm, rope

pytestmark = pytest.mark.cpu_only  # clara's CPU paths: skipped on Metal


class _Cache:
    def __init__(self, offset) -> None:
        self.offset = offset


def _x(shape, seed=0, scale=3.0):
    return mx.array(np.random.default_rng(seed).normal(size=shape).astype(np.float32) * scale)


OFFSETS = {
    "0": 0,
    "int": 37,
    "one row": mx.array([12]),
    "rows": mx.array([0, 5, 300]),
    "negative (left padding)": mx.array([-3, 0, -1]),
}


@pytest.mark.parametrize("traditional", [False, True])
@pytest.mark.parametrize(
    "dims,D,base,scale", [(16, 16, 100000.0, 1.0), (8, 16, 10000.0, 0.25), (32, 32, 5e5, 1.0)]
)
def test_rope_gives_the_bits_of_mx_fast_rope(traditional, dims, D, base, scale):
    ref = nn.RoPE(dims, traditional=traditional, base=base, scale=scale)
    ours = rope.SharedRoPE(ref)
    for name, offset in OFFSETS.items():
        B = offset.size if isinstance(offset, mx.array) else 2
        for shape in [(B, 5, 7, D), (B, 3, 1, D), (B, 7, D)]:
            x = _x(shape)
            want = np.array(ref(x, offset=offset))
            assert np.array_equal(np.array(ours(x, offset=offset)), want), (name, shape)
            with rope.same_positions([_Cache(offset), _Cache(offset)]):
                first = np.array(ours(x, offset=offset))
                again = np.array(ours(x * 2, offset=offset))  # the shared tables
            assert np.array_equal(first, want), (name, shape)
            assert np.array_equal(again, np.array(ref(x * 2, offset=offset))), (name, shape)


def test_a_block_builds_the_tables_once_and_only_for_offsets_it_knows():
    ours = rope.SharedRoPE(nn.RoPE(16, base=10000.0))
    known, other = mx.array([4, 9]), mx.array([4, 9])  # equal values, another array
    x = _x((2, 3, 5, 16))
    with rope.same_positions([_Cache(known)] * 3):
        block = rope._local.block
        for _ in range(4):
            ours(x, offset=known)
        assert len(block.tables) == 1
        for offset in (other, mx.array([0, 1])):  # not this block's: their own tables
            got = ours(x, offset=offset)
            assert len(block.tables) == 1
            want = nn.RoPE(16, base=10000.0)(x, offset=offset)
            assert np.array_equal(np.array(got), np.array(want))
    assert getattr(rope._local, "block", None) is None
    with rope.same_positions(None):  # no cache: offset 0
        ours(x)
        assert len(rope._local.block.tables) == 1


def test_rope_gradient_matches():
    ref = nn.RoPE(16, base=10000.0)
    ours = rope.SharedRoPE(ref)
    x = _x((2, 3, 5, 16), seed=4)

    def loss(module):
        def f(x):
            with rope.same_positions(None):
                return (module(x, offset=3) ** 2 * mx.arange(16)).sum()

        return f

    got, want = mx.grad(loss(ours))(x), mx.grad(loss(ref))(x)
    assert np.array_equal(np.array(got), np.array(want))


def test_rms_norm_gives_the_bits_of_mx_fast_rms_norm():
    for eps in (1e-5, 1e-6):
        ref = nn.RMSNorm(48, eps=eps)
        ref.weight = _x((48,), seed=1, scale=1.0)
        ours = norm.CompiledRMSNorm(ref)
        for shape in [(1, 1, 48), (8, 1, 48), (2, 130, 48), (300, 48)]:
            x = _x(shape, seed=2, scale=5.0)
            assert np.array_equal(np.array(ours(x)), np.array(ref(x))), shape
        half = _x((2, 3, 48)).astype(mx.float16)  # other dtypes: mx.fast.rms_norm itself
        assert np.array_equal(np.array(ours(half)), np.array(ref(half)))


def test_rms_norm_gradient_matches():
    ref = nn.RMSNorm(48)
    ref.weight = _x((48,), seed=1, scale=1.0)
    ours = norm.CompiledRMSNorm(ref)
    x = _x((4, 48), seed=5)

    def loss(module):
        return lambda x: (module(x) ** 2 * mx.arange(48)).sum()

    got, want = mx.grad(loss(ours))(x), mx.grad(loss(ref))(x)
    assert float(mx.abs(got - want).max()) < 1e-5


def test_installed_in_the_loaded_model_with_the_same_outputs_and_names(tiny_llama_dir, monkeypatch):
    from clara.loader import load_base

    base = load_base(tiny_llama_dir, dtype="float32")
    layers = base.model.model.layers
    assert all(isinstance(layer.self_attn.rope, rope.SharedRoPE) for layer in layers)
    assert all(isinstance(layer.input_layernorm, norm.CompiledRMSNorm) for layer in layers)
    ids = mx.array([[5, 9, 3, 7, 11, 2, 8]])
    with rope.same_positions(None):
        ours = np.array(base.model(ids))
    names = sorted(k for k, _ in nn.utils.tree_flatten(base.model.parameters()))
    monkeypatch.setenv("CLARA_CPU_ROPE", "off")
    monkeypatch.setenv("CLARA_CPU_NORM", "off")
    assert rope.install(base.model) == 0 and norm.install(base.model) == 0
    assert type(layers[0].self_attn.rope) is nn.RoPE
    assert type(layers[0].input_layernorm) is nn.RMSNorm
    assert sorted(k for k, _ in nn.utils.tree_flatten(base.model.parameters())) == names
    assert np.array_equal(np.array(base.model(ids)), ours)
