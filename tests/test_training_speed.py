"""The training fast path computes what the original path computes; bucketed batches are a
permutation of the same examples with less padding."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from clara.model import ClaraConfig, ClaraModel
from training.data import PretrainRecord
from training.grads import value_and_grad
from training.stages import make_stage, set_trainable
from training.trainer import TrainConfig, Trainer

WORDS = "the river runs past the old mill while water boils at one hundred degrees".split()


def _records(n: int) -> list[PretrainRecord]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        doc = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 28))))
        out.append(PretrainRecord("qa", doc, [f"What is item {i}?"], [str(doc.split()[0])]))
    return out


@pytest.fixture
def cm(tiny_base) -> ClaraModel:
    cm = ClaraModel(tiny_base, ClaraConfig(compression_rate=16, doc_max_tokens=32))
    for layer in cm.lora_layers():  # non-zero B so the adapters change the output
        for name in ("compressor", "generator"):
            p = layer[f"lora_{name}"]
            p["b"] = mx.random.normal(p["b"].shape) * 0.05
    return cm


def _loss_and_grads(cm, stage, examples, fast: bool):
    cm.switch.fast = fast
    norm = {"tokens": sum(e.gen.n_answer for e in examples), "docs": len(examples), "queries": 1}
    (loss, _), grads = value_and_grad(cm, stage.loss)(examples, norm)
    mx.eval(loss, grads)
    return loss.item(), grads


def test_fast_path_matches_original_without_dropout(cm):
    stage = make_stage("pretrain", cm)
    examples = stage.build(_records(4))
    set_trainable(cm, stage.adapters, True, False)
    cm.eval()  # no dropout: both paths are the same function
    old, g_old = _loss_and_grads(cm, stage, examples, fast=False)
    new, g_new = _loss_and_grads(cm, stage, examples, fast=True)
    assert new == pytest.approx(old, rel=1e-5)
    a = g_old["lm"]["model"]["layers"][0]["self_attn"]["q_proj"]["lora_generator"]["b"]
    b = g_new["lm"]["model"]["layers"][0]["self_attn"]["q_proj"]["lora_generator"]["b"]
    assert float(mx.abs(a).max()) > 0
    assert np.allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-6)


def test_fast_dropout_shares_one_mask_per_input_at_the_rate(cm):
    layer = cm.lm.model.layers[0].self_attn
    cm.train()
    cm.use("compressor")
    x = mx.ones((2, 64, layer.q_proj.base.weight.shape[1]))
    dropped = cm.switch.dropped(x, 0.1)
    assert cm.switch.dropped(x, 0.1) is dropped  # q, k and v read the same x: one mask
    assert cm.switch.dropped(mx.ones_like(x), 0.1) is not dropped
    kept = np.array(dropped != 0)
    assert abs(kept.mean() - 0.9) < 0.01
    assert np.allclose(np.array(dropped)[kept], 1 / 0.9, rtol=1e-4)  # inverted dropout
    cm.use(None)


def test_length_buckets_permute_the_same_examples_with_less_padding(cm, tmp_path):
    stage = make_stage("pretrain", cm)
    examples = stage.build(_records(70))
    cfg = dict(stage="pretrain", out=str(tmp_path), batch_size=4, max_steps=17, quiet=True)
    plain = Trainer(cm, stage, examples, TrainConfig(**cfg))
    bucketed = Trainer(cm, stage, examples, TrainConfig(**cfg, length_buckets=True))
    a, b = plain._order(0), bucketed._order(0)
    assert sorted(a) == sorted(b) == list(range(70))
    assert list(b[68:]) == list(a[68:])  # the partial last batch stays last
    assert list(bucketed._order(0)) == list(b)  # deterministic
    lengths = bucketed._lengths

    def padding(order):
        batches = [order[i : i + 4] for i in range(0, 68, 4)]
        return sum(len(x) * lengths[x].max() - lengths[x].sum() for x in batches)

    assert padding(b) < padding(a) / 2


def test_one_example_per_pass_gives_the_batch_gradient(cm, tmp_path):
    from mlx.utils import tree_flatten

    stage = make_stage("pretrain", cm)
    examples = stage.build(_records(4))
    set_trainable(cm, stage.adapters, True, False)
    cm.eval()
    norm = {"tokens": sum(e.gen.n_answer for e in examples), "docs": 4, "queries": 4}
    vg = value_and_grad(cm, stage.loss)
    (whole, _), g_whole = vg(examples, norm)
    parts = [vg([e], norm) for e in examples]
    total = sum(p[0][0].item() for p in parts)
    assert total == pytest.approx(whole.item(), rel=1e-5)
    a = dict(tree_flatten(g_whole))
    b = {}
    for _, g in parts:
        for k, v in tree_flatten(g):
            b[k] = b[k] + v if k in b else v
    for k in a:
        assert np.allclose(np.array(a[k]), np.array(b[k]), rtol=1e-3, atol=1e-6), k
    cfg = TrainConfig(stage="pretrain", out=str(tmp_path), batch_size=4, max_steps=2, quiet=True,
                      pass_size=1)  # fmt: skip
    m = Trainer(cm, stage, examples, cfg).train_step()
    assert m["work"] == sum(
        len(e.gen.tokens) + len(e.docs[0]) + 3 + cm.n_mem for e in examples
    ) and np.isfinite(m["loss"])


def test_bf16_trainer_runs_frozen_products_in_bfloat16_close_to_float32(cm, tmp_path):
    """On CPUs with bfloat16 products (AMX tiles or AVX-512 BF16) a Trainer registers bfloat16
    copies of the frozen weights (`TrainConfig.bf16_products`): the loss and gradients move by
    bfloat16 rounding, no more."""
    from mlx.utils import tree_flatten

    from clara import _blas
    from training.trainer import frozen_matrices

    if not _blas.bf16:
        pytest.skip(f"no bfloat16 products here: {_blas.bf16_reason}")
    stage = make_stage("pretrain", cm)
    examples = stage.build(_records(4))
    set_trainable(cm, stage.adapters, True, False)
    cm.eval()
    exact, g_exact = _loss_and_grads(cm, stage, examples, True)
    import gc

    gc.collect()  # earlier tests' copies freed now, not by a collection inside the window
    before = _blas._thin.clara_thinmm_copies()
    cfg = TrainConfig(stage="pretrain", out=str(tmp_path), batch_size=4, max_steps=2, quiet=True)
    trainer = Trainer(cm, stage, examples, cfg)
    eligible = [w for w in frozen_matrices(cm) if w.shape[0] % 32 == 0 and w.shape[1] % 32 == 0]
    with_ours = _blas._thin.clara_thinmm_copies()
    assert len(eligible) >= 4 and with_ours == before + len(eligible)
    tiles, g_tiles = _loss_and_grads(cm, stage, examples, True)
    assert tiles != exact and tiles == pytest.approx(exact, rel=1e-2)
    a, b = dict(tree_flatten(g_exact)), dict(tree_flatten(g_tiles))
    for k in a:
        scale = float(np.abs(np.array(a[k])).max()) + 1e-6
        assert np.abs(np.array(a[k]) - np.array(b[k])).max() <= 0.05 * scale, k
    del trainer
    gc.collect()  # (other tests' decoders may go too)
    assert _blas._thin.clara_thinmm_copies() <= with_ours - len(eligible)
