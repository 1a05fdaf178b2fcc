"""clara.loader on tiny random models, and the semantics of the HyperCLOVAX architecture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm.models import llama
from mlx_lm.models.cache import make_prompt_cache

from clara.errors import ModelNotFoundError
from clara.loader import fingerprint_weights, load_base
from clara.models import hyperclovax
from tests.tiny import TINY_HCX_EXTRAS

TOKENS = mx.array([[1, 40, 41, 200, 17, 300, 5, 77, 128, 9, 250, 2]])  # (1, 12)


def _np(x: mx.array) -> np.ndarray:
    return np.array(x.astype(mx.float32))


def _logits(model: nn.Module, **kwargs) -> np.ndarray:
    return _np(model(TOKENS, **kwargs))


def _split_logits(model: nn.Module, inputs: mx.array, embeddings: mx.array | None, split: int):
    """Logits of the last positions after prefilling `split` positions into a KV cache."""
    cache = make_prompt_cache(model)
    if embeddings is None:
        model(inputs[:, :split], cache=cache)
        return _np(model(inputs[:, split:], cache=cache))
    model(inputs[:, :split], cache=cache, input_embeddings=embeddings[:, :split])
    return _np(model(inputs[:, split:], cache=cache, input_embeddings=embeddings[:, split:]))


@pytest.fixture(params=["tiny_llama_dir", "tiny_llama_q4_dir", "tiny_hcx_dir"])
def any_tiny_dir(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(request.param)


def test_loads_every_tiny_architecture(any_tiny_dir: Path):
    base = load_base(any_tiny_dir, dtype=None)
    config = json.loads((any_tiny_dir / "config.json").read_text())
    assert base.path == any_tiny_dir.resolve()
    assert base.hidden_size == 64
    assert base.extras["dtype"] == "stored"
    assert isinstance(base.model.layers[0].self_attn.q_proj, nn.QuantizedLinear) == (
        "quantization" in config
    )
    out = base.model(TOKENS)
    assert out.shape == (1, TOKENS.shape[1], config["vocab_size"])
    assert np.isfinite(_np(out)).all()
    assert base.tokenizer.eos_token_ids == {config["eos_token_id"]}
    prompt = base.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    assert base.tokenizer.decode(base.tokenizer.encode("The river runs.")) == "The river runs."


def test_hidden_states_are_post_final_norm(any_tiny_dir: Path):
    model = load_base(any_tiny_dir, dtype=None).model
    h = model.model(TOKENS)  # (1, L, D)
    weight = model.model.norm.weight
    rms = mx.sqrt(mx.mean(mx.square(h / weight), axis=-1))
    np.testing.assert_allclose(_np(rms), 1.0, atol=1e-3)


def test_input_embeddings_match_tokens(any_tiny_dir: Path):
    model = load_base(any_tiny_dir, dtype=None).model
    raw = model.model.embed_tokens(TOKENS)  # (1, L, D): callers pass unscaled rows
    want = _logits(model)
    np.testing.assert_allclose(_logits(model, input_embeddings=raw), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        _np(model.model(TOKENS, input_embeddings=raw)), _np(model.model(TOKENS)), atol=1e-5
    )
    for split in (1, 7):
        tail = want[:, split:]
        np.testing.assert_allclose(_split_logits(model, TOKENS, None, split), tail, atol=1e-4)
        np.testing.assert_allclose(_split_logits(model, TOKENS, raw, split), tail, atol=1e-4)


# HyperCLOVAX semantics: each muP knob equals plain Llama with some weights rescaled, which
# pins down exactly where the multiplier acts (and that it multiplies, not divides).


def _llama_weights(tiny_llama_dir: Path) -> tuple[dict, dict[str, mx.array]]:
    config = json.loads((tiny_llama_dir / "config.json").read_text())
    weights = dict(tree_flatten(load_base(tiny_llama_dir, dtype=None).model.parameters()))
    return config, weights


def _build(module, config: dict, weights: dict[str, mx.array], strict: bool = True) -> nn.Module:
    model = module.Model(module.ModelArgs.from_dict(config))
    model.load_weights(list(weights.items()), strict=strict)
    return model


def _scaled(weights: dict[str, mx.array], suffixes: tuple[str, ...], factor: float) -> dict:
    out = {k: (v * factor if k.endswith(suffixes) else v) for k, v in weights.items()}
    assert out.keys() == weights.keys() and any(k.endswith(suffixes) for k in weights)
    return out


HEAD_DIM = 16  # tiny models: hidden 64 / 4 heads

EQUIVALENTS = {
    # knob -> (value, llama weights to scale, factor)
    "embedding_multiplier": (3.0, ("embed_tokens.weight",), 3.0),
    "residual_multiplier": (0.6, ("o_proj.weight", "down_proj.weight"), 0.6),
    "attention_multiplier": (0.3, ("q_proj.weight",), 0.3 * HEAD_DIM**0.5),
    "logits_scaling": (0.5, ("lm_head.weight",), 0.5),
}


@pytest.mark.parametrize("knob", sorted(EQUIVALENTS))
def test_hcx_multiplier_equals_rescaled_llama(tiny_llama_dir: Path, knob: str):
    config, weights = _llama_weights(tiny_llama_dir)
    assert not config["tie_word_embeddings"]  # lm_head must not move with embed_tokens
    value, suffixes, factor = EQUIVALENTS[knob]
    hcx_config = {**config, "model_type": "hyperclovax", knob: value}
    hcx = _build(hyperclovax, hcx_config, weights)
    plain = _logits(_build(llama, config, weights))
    want = _logits(_build(llama, config, _scaled(weights, suffixes, factor)))

    got = _logits(hcx)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.abs(got - plain).max() > 1e-2  # the knob is not a no-op
    if knob == "embedding_multiplier":  # passed-in embeddings are scaled too
        raw = hcx.model.embed_tokens(TOKENS)
        np.testing.assert_allclose(_logits(hcx, input_embeddings=raw), want, atol=1e-4)


def test_hcx_with_unit_multipliers_is_llama(tiny_llama_dir: Path):
    config, weights = _llama_weights(tiny_llama_dir)
    unit = {
        "embedding_multiplier": 1.0,
        "attention_multiplier": HEAD_DIM**-0.5,
        "residual_multiplier": 1.0,
        "logits_scaling": 1.0,
        "use_post_norm": False,
    }
    want = _logits(_build(llama, config, weights))
    for extra in ({}, unit):  # defaults, and the same values written out
        hcx = _build(hyperclovax, {**config, "model_type": "hyperclovax", **extra}, weights)
        np.testing.assert_allclose(_logits(hcx), want, rtol=1e-5, atol=1e-5)


def test_hcx_post_norms_sit_on_the_residual_branches(tiny_llama_dir: Path):
    config, weights = _llama_weights(tiny_llama_dir)
    hcx_config = {**config, "model_type": "hyperclovax", "use_post_norm": True}
    with_post = _build(hyperclovax, hcx_config, weights, strict=False)  # post norms = ones
    names = {k for k, _ in tree_flatten(with_post.parameters())}
    assert {"model.layers.0.post_norm1.weight", "model.layers.1.post_norm2.weight"} <= names
    assert np.abs(_logits(with_post) - _logits(_build(llama, config, weights))).max() > 1e-2

    # Zeroed post norms silence every branch: the output is the final norm of the embeddings.
    zeros = {
        k: mx.zeros_like(v) for k, v in tree_flatten(with_post.parameters()) if "post_norm" in k
    }
    with_post.load_weights(list(zeros.items()), strict=False)
    h = with_post.model.embed_tokens(TOKENS)
    want = with_post.lm_head(with_post.model.norm(h))
    np.testing.assert_allclose(_logits(with_post), _np(want), rtol=1e-4, atol=1e-4)


def test_tiny_hcx_fixture_uses_its_extras(tiny_hcx_dir: Path):
    model = load_base(tiny_hcx_dir, dtype=None).model
    for key, value in TINY_HCX_EXTRAS.items():
        assert getattr(model.args, key) == value
    assert model.layers[0].self_attn.scale == TINY_HCX_EXTRAS["attention_multiplier"]
    assert "lm_head" not in model  # tied: logits_scaling applies to as_linear too
    h = model.model(TOKENS)
    want = model.model.embed_tokens.as_linear(h) * TINY_HCX_EXTRAS["logits_scaling"]
    np.testing.assert_allclose(_logits(model), _np(want), rtol=1e-6, atol=1e-6)


def test_hcx_sanitize_drops_rotary_and_tied_head(tiny_hcx_dir: Path):
    model = load_base(tiny_hcx_dir, dtype=None).model
    weights = {
        "model.layers.0.self_attn.rotary_emb.inv_freq": mx.zeros(8),
        "lm_head.weight": mx.zeros((4, 4)),
        "model.norm.weight": mx.ones(64),
    }
    assert list(model.sanitize(weights)) == ["model.norm.weight"]


def test_hcx_rejects_unsupported_activation():
    with pytest.raises(ValueError, match="hidden_act"):
        hyperclovax.ModelArgs.from_dict(
            {
                "model_type": "hyperclovax",
                "hidden_size": 64,
                "num_hidden_layers": 1,
                "intermediate_size": 128,
                "num_attention_heads": 4,
                "rms_norm_eps": 1e-6,
                "vocab_size": 16,
                "hidden_act": "gelu",
                "unknown_key_is_ignored": 1,
            }
        )


# Loader behaviour a user would notice.


def test_missing_model_says_what_to_pass(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match="local mlx-lm directory"):
        load_base(tmp_path / "no-such-model", dtype=None)
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_base(tmp_path, dtype=None)


def test_damaged_model_weights_say_so(tiny_llama_dir: Path, tmp_path: Path):
    """An error audit: weights cut short or overwritten were MLX's traceback ("[load_
    safetensors] Invalid json header length") in every command."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama_dir, copy)
    (copy / "model.safetensors").write_bytes(b"\x07" * 64)
    with pytest.raises(ModelNotFoundError, match="damaged or incomplete.*convert it again"):
        load_base(copy, dtype=None)


def test_fingerprint_follows_the_weights(tiny_llama_dir: Path, tmp_path: Path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama_dir, copy)
    assert fingerprint_weights(copy) == fingerprint_weights(tiny_llama_dir)
    assert load_base(copy, dtype=None).fingerprint == fingerprint_weights(tiny_llama_dir)

    weights = mx.load(str(copy / "model.safetensors"))
    key = "model.layers.1.mlp.down_proj.weight"
    weights[key] = weights[key] + 1e-3
    mx.save_safetensors(str(copy / "model.safetensors"), weights, metadata={"format": "mlx"})
    assert fingerprint_weights(copy) != fingerprint_weights(tiny_llama_dir)


def test_float32_dequantizes_the_4bit_model(tiny_llama_q4_dir: Path):
    quant = load_base(tiny_llama_q4_dir, dtype=None)
    full = load_base(tiny_llama_q4_dir, dtype="float32")
    assert full.extras["dtype"] == "float32"
    kinds = {type(m) for _, m in full.model.named_modules()}
    assert not kinds & {nn.QuantizedLinear, nn.QuantizedEmbedding}
    assert {p.dtype for _, p in tree_flatten(full.model.parameters())} == {mx.float32}
    np.testing.assert_allclose(_logits(full.model), _logits(quant.model), rtol=1e-3, atol=1e-3)
