"""Training inputs match inference prompts; every stage's loss is finite and trains what it should."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from clara.errors import ClaraError
from clara.model import ClaraConfig, ClaraModel
from clara.prompt import (
    SEP_SLOT,
    TEXT,
    memory_answer_messages,
    memory_prompt,
    paraphrase_messages,
    paraphrase_prompt,
)
from clara.retrieval import unit
from training.batches import (
    answer_logits,
    collate_generator,
    generator_embeddings,
    generator_example,
)
from training.data import PretrainRecord, QARecord
from training.grads import value_and_grad
from training.stages import StageConfig, copy_adapter, make_stage, reset_adapter, set_trainable

DOCS = [
    "The river runs past the old mill.",
    "The capital of France is Paris.",
    "The train leaves the station at seven.",
    "Water boils at one hundred degrees.",
]


@pytest.fixture
def cm(tiny_base) -> ClaraModel:
    return ClaraModel(tiny_base, ClaraConfig(compression_rate=16, doc_max_tokens=32))


def _grads(stage, examples):
    counts = [stage.counts(e) for e in examples]
    norm = {k: sum(c[k] for c in counts) for k in counts[0]}
    fn = value_and_grad(stage.cm, lambda: stage.loss(examples, norm)[0])
    loss, grads = fn()
    return loss, dict(tree_flatten(grads))


def test_generator_input_matches_inference_prompt(cm):
    mem = cm.compress(DOCS[:3])
    ex = generator_example(cm, memory_answer_messages("Where is Paris?", 3), "In France.", 3)
    prompt = memory_prompt(cm, "Where is Paris?", list(mem))
    assert ex.tokens[: ex.n_prompt] == prompt.tokens
    assert ex.slots.count(SEP_SLOT) == 2 and sum(s >= 0 for s in ex.slots) == 3 * cm.n_mem
    batch = collate_generator([ex], cm.n_mem, 3)
    emb = generator_embeddings(cm, batch, mem[None])[0, : ex.n_prompt]
    np.testing.assert_allclose(np.array(emb), np.array(prompt.embeddings), atol=1e-6)
    # the answer ends with the end-of-turn token that stops generation
    assert ex.tokens[-1] == cm.tokenizer.eos_token_id
    assert cm.tokenizer.decode(ex.tokens[ex.n_prompt : -1]) == "In France."
    # stage 1's paraphrase prompt, as the learning proof and bench_reconstruct ask it
    ex = generator_example(cm, paraphrase_messages(), None, 1)
    prompt = paraphrase_prompt(cm, mem[1])
    assert ex.tokens == prompt.tokens and ex.n_prompt == len(ex.tokens)
    emb = generator_embeddings(cm, collate_generator([ex], cm.n_mem, 1), mem[None, 1:2])[0]
    np.testing.assert_allclose(np.array(emb), np.array(prompt.embeddings), atol=1e-6)


def test_answer_logits_match_full_forward(cm):
    ex = generator_example(cm, memory_answer_messages("Where?", 1), "There.", 1)
    batch = collate_generator([ex], cm.n_mem, 1)
    emb = generator_embeddings(cm, batch, cm.compress(DOCS[:1])[None])
    full = cm.lm(None, input_embeddings=emb)  # (1, L, V)
    assert cm.output_head() is not None  # (the head at the answer's positions only)
    part = answer_logits(cm, emb, batch.loss_pos)
    np.testing.assert_allclose(
        np.array(part[0]), np.array(full[0, ex.n_prompt - 1 : len(ex.tokens) - 1]), atol=1e-5
    )
    # the targets are the answer tokens, and only they are counted
    assert np.array(batch.targets)[0].tolist() == ex.tokens[ex.n_prompt :]
    assert batch.n_tokens == ex.n_answer


def test_padding_does_not_change_the_loss(cm):
    stage = make_stage("instruct", cm)
    recs = [
        QARecord("Where is Paris?", DOCS[:2], ["France"]),
        QARecord("When does the train leave and from where?", DOCS[1:4], ["At seven."]),
    ]
    a, b = stage.build(recs)
    loss_a = stage.loss([a], stage.counts(a))[1]["ce"].item()
    loss_b = stage.loss([b], stage.counts(b))[1]["ce"].item()
    both = stage.loss([a, b], {"tokens": 1, "docs": 1, "queries": 1})[1]["ce"].item()
    assert both == pytest.approx(loss_a + loss_b, rel=1e-4)


def test_pretrain_trains_compressor_and_generator(cm):
    stage = make_stage("pretrain", cm, StageConfig(mse_weight=0.0))
    recs = [
        PretrainRecord("paraphrase", DOCS[0]),
        PretrainRecord("qa", DOCS[1], ["What is the capital of France?"], ["Paris"]),
    ]
    examples = stage.build(recs)
    set_trainable(cm, stage.adapters, stage.memory_tokens, full=False)
    loss, grads = _grads(stage, examples)
    assert np.isfinite(loss.item()) and loss.item() > 0
    assert any(".lora_compressor." in k for k in grads)
    assert any(".lora_generator." in k for k in grads)
    assert not any(".lora_query." in k for k in grads)
    assert float(mx.abs(grads["mem_embeddings"]).sum()) > 0
    norms = {k for k, v in grads.items() if ".lora_compressor.b" in k and float(mx.abs(v).sum())}
    assert norms, "the CE reaches the compressor through the memory vectors"


def test_full_finetuning_trains_base_weights(cm):
    stage = make_stage("pretrain", cm)
    set_trainable(cm, stage.adapters, stage.memory_tokens, full=True)
    names = {k for k, _ in tree_flatten(cm.trainable_parameters())}
    assert "lm.model.embed_tokens.weight" in names
    assert any(k.endswith("q_proj.base.weight") for k in names)
    assert not any(".lora_query." in k for k in names)


def test_instruct_resets_the_generator(cm):
    for layer in cm.lora_layers():
        layer.lora_generator["b"] = mx.ones_like(layer.lora_generator["b"])
    make_stage("instruct", cm, StageConfig(keep_generator=True)).initialize(cm, seed=0)
    assert all(float(mx.abs(la.lora_generator["b"]).min()) == 1 for la in cm.lora_layers())
    make_stage("instruct", cm).initialize(cm, seed=0)
    assert all(float(mx.abs(la.lora_generator["b"]).sum()) == 0 for la in cm.lora_layers())


def test_joint_trains_query_and_generator_only(cm):
    for layer in cm.lora_layers():  # a non-trivial compressor to copy
        layer.lora_compressor["b"] = 0.1 * mx.random.normal(layer.lora_compressor["b"].shape)
    stage = make_stage("joint", cm)
    recs = [
        QARecord("What is the capital of France?", DOCS, ["Paris"], [1]),
        QARecord("When does the train leave?", DOCS[::-1], ["At seven."], [1]),
    ]
    examples = stage.build(recs)
    assert len(stage.doc_texts) == 4 and examples[1].cands == [3, 2, 1, 0]
    stage.initialize(cm, seed=0)
    q = cm.lora_layers()[0]
    assert mx.array_equal(q.lora_query["b"], q.lora_compressor["b"])
    stage.prepare(examples)
    assert stage.doc_memory.shape == (4, cm.n_mem, 64)
    set_trainable(cm, stage.adapters, stage.memory_tokens, full=False)
    loss, grads = _grads(stage, examples)
    assert np.isfinite(loss.item())
    assert any(".lora_generator." in k for k in grads)
    assert not any(".lora_compressor." in k for k in grads)
    assert "mem_embeddings" not in grads
    qa = [v for k, v in grads.items() if ".lora_query." in k]
    assert qa and sum(float(mx.abs(v).sum()) for v in qa) > 0, "CE reaches the query encoder"
    _, aux = stage.loss(examples, {"tokens": 1, "docs": 0, "queries": 2})
    assert aux["ranking"].shape == (2, 4)


def test_joint_query_only_trains_the_loaded_query_adapter_on_retrieval(cm):
    with pytest.raises(ClaraError, match="retrieval-weight"):
        make_stage("joint", cm, StageConfig(query_only=True))
    stage = make_stage("joint", cm, StageConfig(query_only=True, retrieval_weight=1.0))
    examples = stage.build([QARecord("Capital of France?", DOCS, ["Paris"], [1])])
    q = cm.lora_layers()[0]
    q.lora_query["b"] = mx.ones_like(q.lora_query["b"])
    stage.initialize(cm, seed=0)  # keeps the loaded query adapter
    assert float(mx.abs(q.lora_query["b"]).min()) == 1
    stage.prepare(examples)
    set_trainable(cm, stage.adapters, stage.memory_tokens, full=False)
    loss, grads = _grads(stage, examples)
    assert np.isfinite(loss.item()) and loss.item() > 0 and stage.adapters == ("query",)
    assert any(".lora_query." in k for k in grads)
    assert not any(".lora_generator." in k or ".lora_compressor." in k for k in grads)
    aux = stage.loss(examples, {"tokens": 1, "docs": 0, "queries": 1})[1]
    assert "ce" not in aux and aux["nce"].item() > 0


def test_joint_corpus_negatives_rank_gold_against_every_document(cm):
    with pytest.raises(ClaraError, match="retrieval-weight"):
        make_stage("joint", cm, StageConfig(corpus_negatives=True))
    records = [
        QARecord("Capital of France?", DOCS[:2], ["Paris"], [1]),
        QARecord("When does the train leave?", DOCS[2:], ["At seven"], [0]),
    ]
    norm = {"tokens": 1, "docs": 0, "queries": 2}
    nce = {}
    for corpus in (False, True):
        config = StageConfig(query_only=True, retrieval_weight=1.0, corpus_negatives=corpus)
        stage = make_stage("joint", cm, config)
        examples = stage.build(records)
        stage.prepare(examples)
        nce[corpus] = stage.loss(examples, norm)[1]["nce"].item()
    # the same gold documents against a superset of negatives: a larger loss, never smaller
    assert np.isfinite(nce[True]) and nce[True] > nce[False] > 0
    set_trainable(cm, stage.adapters, stage.memory_tokens, full=False)
    loss, grads = _grads(stage, examples)
    assert np.isfinite(loss.item()) and any(".lora_query." in k for k in grads)


def test_joint_train_compressor_shapes_memories_through_both_losses(cm):
    """--train-compressor: the step's candidates are compressed with gradients, so the
    retrieval loss and the generator's reach the compressor; in eval mode (no dropout) the
    fresh memories score exactly as the ones compressed before training."""
    with pytest.raises(ClaraError, match="retrieval-weight"):
        make_stage("joint", cm, StageConfig(query_only=True, train_compressor=True))
    records = [
        QARecord("Capital of France?", DOCS[:2], ["Paris"], [1]),
        QARecord("When does the train leave?", DOCS[2:], ["At seven"], [0]),
    ]
    norm = {"tokens": 3, "docs": 0, "queries": 2}
    cm.eval()
    nce = {}
    for fresh in (False, True):
        config = StageConfig(retrieval_weight=1.0, corpus_negatives=True, train_compressor=fresh,
                             retrieval_score="maxsim", keep_query=True)  # fmt: skip
        stage = make_stage("joint", cm, config)
        examples = stage.build(records)
        stage.prepare(examples)
        nce[fresh] = stage.loss(examples, norm)[1]["nce"].item()
    assert stage.adapters == ("query", "generator", "compressor")
    assert nce[True] == pytest.approx(nce[False], rel=1e-4) and nce[True] > 0
    # the step's memories go into the corpus memories (a memory bank)
    before = np.array(stage._corpus)
    for layer in cm.lora_layers():  # another compressor: its memories differ
        layer.lora_compressor["b"] = mx.full(layer.lora_compressor["b"].shape, 0.02)
    stage.loss(examples, norm)
    stage.loss(examples, norm)
    mem = cm.encode_tokens([stage.doc_tokens[i] for i in range(4)], "compressor").memory
    after = np.array(stage._corpus)
    assert not np.allclose(after, before, atol=1e-3)
    np.testing.assert_allclose(after, np.array(unit(mem.astype(mx.float32))), atol=1e-4)
    set_trainable(cm, stage.adapters, stage.memory_tokens, full=False)
    loss, grads = _grads(stage, examples)
    assert np.isfinite(loss.item())
    for name in ("query", "generator", "compressor"):
        assert any(f".lora_{name}." in k and float(mx.abs(v).max()) > 0 for k, v in grads.items())
    # retrieval alone (--query-only): the compressor still learns from it
    config = StageConfig(query_only=True, retrieval_weight=1.0, train_compressor=True)
    stage = make_stage("joint", cm, config)
    examples = stage.build(records)
    stage.prepare(examples)
    set_trainable(cm, stage.adapters, stage.memory_tokens, full=False)
    grads = _grads(stage, examples)[1]
    assert stage.adapters == ("query", "compressor")
    assert any(".lora_compressor." in k and float(mx.abs(v).max()) > 0 for k, v in grads.items())


def test_joint_keep_query_continues_the_loaded_query_adapter(cm):
    q = cm.lora_layers()[0]
    for keep in (False, True):
        q.lora_query["b"] = mx.ones_like(q.lora_query["b"])
        make_stage("joint", cm, StageConfig(keep_query=keep)).initialize(cm, seed=0)
        same = mx.array_equal(q.lora_query["b"], cm.lora_layers()[0].lora_compressor["b"])
        assert bool(mx.all(q.lora_query["b"] == 1).item()) == keep and bool(same) != keep


def test_joint_retrieval_loss_is_optional(cm):
    stage = make_stage("joint", cm)
    examples = stage.build([QARecord("Capital of France?", DOCS, ["Paris"], [1])])
    stage.prepare(examples)
    norm = {"tokens": 3, "docs": 0, "queries": 1}
    assert "nce" not in stage.loss(examples, norm)[1]
    stage.config.retrieval_weight = 1.0
    assert stage.loss(examples, norm)[1]["nce"].item() > 0


def test_lm_stage_loss(cm):
    stage = make_stage("lm", cm)
    examples = stage.build(DOCS[:2])
    set_trainable(cm, (), False, full=True)
    loss, grads = _grads(stage, examples)
    assert np.isfinite(loss.item()) and "lm.model.embed_tokens.weight" in grads


def test_reset_and_copy_helpers(cm):
    reset_adapter(cm, "query", seed=1)
    copy_adapter(cm, "query", "generator")
    la = cm.lora_layers()[0]
    assert mx.array_equal(la.lora_generator["a"], la.lora_query["a"])
    assert TEXT == -1


def test_gradient_checkpointing_gives_the_same_gradients(cm):
    from training.trainer import disable_grad_checkpoint, enable_grad_checkpoint

    stage = make_stage("instruct", cm)
    examples = stage.build([QARecord("Where is Paris?", DOCS[:3], ["France"])])
    for layer in cm.lora_layers():
        layer.lora_compressor["b"] = 0.1 * mx.random.normal(layer.lora_compressor["b"].shape)
    set_trainable(cm, stage.adapters, stage.memory_tokens, full=False)
    mx.random.seed(5)
    loss_a, grads_a = _grads(stage, examples)
    enable_grad_checkpoint(cm)
    mx.random.seed(5)
    loss_b, grads_b = _grads(stage, examples)
    cm.train()  # with dropout the recompute must draw the forward's masks: finite, same loss
    mx.random.seed(7)
    loss_c, grads_c = _grads(stage, examples)
    mx.random.seed(7)
    loss_d, grads_d = _grads(stage, examples)
    disable_grad_checkpoint(cm)  # the class is patched; instances opt in
    cm.eval()
    assert loss_c.item() == loss_d.item() and loss_c.item() != loss_a.item()
    assert all(np.isfinite(np.array(v)).all() for v in grads_c.values())
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        np.testing.assert_allclose(np.array(grads_a[k]), np.array(grads_b[k]), atol=1e-6)


def test_checkpoint_recompute_uses_the_forward_dropout_masks(cm):
    from training.grads import value_and_grad as vag
    from training.trainer import disable_grad_checkpoint, enable_grad_checkpoint

    for la in cm.lora_layers():
        la.lora_generator["b"] = 0.1 * mx.random.normal(la.lora_generator["b"].shape)
    set_trainable(cm, ["generator"], False, full=False)
    cm.train()
    layer, x = cm.lm.model.layers[0], mx.random.normal((2, 5, 64), key=mx.random.key(1))

    def run():
        with cm.adapter("generator"):
            return layer(x, "causal").sum()

    mx.random.seed(3)  # reference: the seed the patched block draws, then a plain forward
    seed = int(mx.random.randint(0, 2**31 - 1, ()).item())
    mx.random.seed(seed)
    want = dict(tree_flatten(vag(cm, run)()[1]))
    enable_grad_checkpoint(cm)
    mx.random.seed(3)
    got = dict(tree_flatten(vag(cm, run)()[1]))
    disable_grad_checkpoint(cm)
    cm.eval()
    for k in want:
        np.testing.assert_allclose(np.array(got[k]), np.array(want[k]), atol=1e-6, err_msg=k)


def test_joint_maxsim_scores_documents_by_late_interaction(cm):
    """`--retrieval-score maxsim`: the candidates' scores and the corpus-negative loss use each
    query vector's best document vector (`clara.retrieval.maxsim_scores`), and train the query
    adapter."""
    from clara.retrieval import maxsim_scores

    records = [
        QARecord("Capital of France?", DOCS[:2], ["Paris"], [1]),
        QARecord("When does the train leave?", DOCS[2:], ["At seven"], [0]),
    ]
    norm = {"tokens": 1, "docs": 0, "queries": 2}
    config = StageConfig(query_only=True, retrieval_weight=1.0, corpus_negatives=True,
                         retrieval_score="maxsim")  # fmt: skip
    stage = make_stage("joint", cm, config)
    examples = stage.build(records)
    stage.prepare(examples)
    q = cm.encode_tokens([e.query for e in examples], "query").memory
    want = maxsim_scores(q, stage.doc_memory)  # (2, U) every document
    expected = float(
        sum(
            mx.logsumexp(want[b] / config.tau) - want[b, e.cands[e.pos[0]]] / config.tau
            for b, e in enumerate(examples)
        )
    )
    got = stage.loss(examples, norm)[1]["nce"].item()
    assert np.isclose(got, expected, rtol=1e-4)
    flat = make_stage("joint", cm, StageConfig(query_only=True, retrieval_weight=1.0,
                                               corpus_negatives=True))  # fmt: skip
    flat.build(records)
    flat.prepare(examples)
    assert not np.isclose(flat.loss(examples, norm)[1]["nce"].item(), got)
    set_trainable(cm, stage.adapters, stage.memory_tokens, full=False)
    loss, grads = _grads(stage, examples)
    assert np.isfinite(loss.item()) and any(".lora_query." in k for k in grads)


def test_checkpoint_says_how_its_query_adapter_scores(cm, tmp_path):
    """A stage-3 run with `--retrieval-score maxsim` saves `dense_scoring: maxsim`, which the
    index's rerank follows; the setting is left out of the fingerprint (same memories: an
    index built before stays valid)."""
    import json

    from clara.checkpoint import CONFIG_FILE, checkpoint_fingerprint, save_checkpoint

    before = cm.config.dense_scoring
    try:
        make_stage("joint", cm, StageConfig(retrieval_weight=1.0, retrieval_score="maxsim"))
        assert cm.config.dense_scoring == "maxsim" and cm.config.dense_rerank > 0
        save_checkpoint(cm, tmp_path / "maxsim")
        make_stage("joint", cm, StageConfig())
        assert cm.config.dense_scoring == "flat" and cm.config.dense_rerank == 0
        save_checkpoint(cm, tmp_path / "flat")
    finally:
        cm.config.dense_scoring = before
    saved = json.loads((tmp_path / "maxsim" / CONFIG_FILE).read_text())
    assert saved["clara"]["dense_scoring"] == "maxsim"
    assert checkpoint_fingerprint(tmp_path / "maxsim") == checkpoint_fingerprint(tmp_path / "flat")


def test_distillation_teacher_reads_the_documents_as_serving_text_mode_does(cm):
    from clara.prompt import text_prompt

    stage = make_stage("instruct", cm, StageConfig(distill_weight=1.0))
    (ex,) = stage.build([QARecord("Where is Paris?", DOCS[1:3], ["In France."])])
    texts = [cm.tokenizer.decode(ids) for ids in ex.docs]  # what the compressor reads
    want = text_prompt(cm, "Where is Paris?", texts).tokens
    assert ex.teacher.tokens[: ex.teacher.n_prompt] == want
    assert ex.teacher.tokens[ex.teacher.n_prompt :] == ex.gen.tokens[ex.gen.n_prompt :]
    assert all(s == TEXT for s in ex.teacher.slots)


def test_distillation_adds_the_kl_from_the_text_reading_generator(cm):
    cm.eval()  # no dropout: the KL below is recomputed by hand
    recs = [
        PretrainRecord("qa", DOCS[1], ["What is the capital of France?"], ["Paris"]),
        PretrainRecord("paraphrase", DOCS[2]),
    ]
    plain = make_stage("pretrain", cm, StageConfig(mse_weight=0.0))
    stage = make_stage("pretrain", cm, StageConfig(mse_weight=0.0, distill_weight=0.5))
    examples = stage.build(recs)
    norm = {"tokens": sum(e.gen.n_answer for e in examples), "docs": 2, "queries": 2}
    loss, aux = stage.loss(examples, norm)
    base, _ = plain.loss(plain.build(recs), norm)
    # by hand: the generator reading the text vs reading the memories, on the answer tokens
    kl = 0.0
    for e in examples:
        with cm.adapter("generator"):
            tb = collate_generator([e.teacher], cm.n_mem, 0)
            t = answer_logits(cm, generator_embeddings(cm, tb, None), tb.loss_pos)[0]
            sb = collate_generator([e.gen], cm.n_mem, 1)
            mem = cm.encode_tokens(e.docs, "compressor").memory[None]
            s = answer_logits(cm, generator_embeddings(cm, sb, mem), sb.loss_pos)[0]
        lt = np.array(t - mx.logsumexp(t, axis=-1, keepdims=True), np.float64)
        ls = np.array(s - mx.logsumexp(s, axis=-1, keepdims=True), np.float64)
        kl += (np.exp(lt) * (lt - ls)).sum(axis=-1)[: e.gen.n_answer].sum()
    assert kl > 0
    np.testing.assert_allclose(aux["kl"].item(), kl, rtol=1e-3)
    np.testing.assert_allclose(loss.item(), base.item() + 0.5 * kl / norm["tokens"], rtol=1e-4)
    # the KL trains the student (compressor and generator on memories), never the teacher's input
    set_trainable(cm, stage.adapters, stage.memory_tokens, full=False)
    _, grads = _grads(stage, examples)
    _, plain_grads = _grads(plain, plain.build(recs))
    key = next(k for k in grads if ".lora_compressor.b" in k)
    assert not np.allclose(np.array(grads[key]), np.array(plain_grads[key]))
