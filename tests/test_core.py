"""CLaRa core on tiny random models: shapes, padding, adapters, generation, checkpoints."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from clara.checkpoint import load_clara, save_checkpoint
from clara.errors import CheckpointError, ClaraError, ContextLengthError
from clara.generate import generate, stream_from_memory
from clara.loader import load_base
from clara.model import COMPRESSION_RATES, ClaraConfig, ClaraModel
from clara.prompt import Prompt, memory_prompt, text_prompt

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France and its largest city.",
    "A tiny model is enough to check shapes and numerics.",
]


def _randomize_adapters(cm: ClaraModel, scale: float = 0.5) -> None:
    """Fresh adapters are no-ops (B = 0); give every adapter a random, distinct B."""
    updates = []
    for i, (k, v) in enumerate(tree_flatten(cm.parameters())):
        if ".lora_" in k and k.endswith(".b"):
            updates.append((k, scale * mx.random.normal(v.shape, key=mx.random.key(i))))
    cm.load_weights(updates, strict=False)


@pytest.fixture
def cm(tiny_base) -> ClaraModel:
    model = ClaraModel(tiny_base, ClaraConfig(compression_rate=16, doc_max_tokens=64))
    _randomize_adapters(model)
    return model


@pytest.mark.parametrize("rate", COMPRESSION_RATES)
def test_memory_shape_for_every_rate(tiny_base, rate):
    cm = ClaraModel(tiny_base, ClaraConfig(compression_rate=rate, doc_max_tokens=256))
    mem = cm.compress(DOCS)
    assert mem.shape == (len(DOCS), 256 // rate, 64)
    assert cm.encode_queries(["where is paris?"]).shape == (1, 256 // rate, 64)


def test_bad_rate_is_refused():
    with pytest.raises(ClaraError, match="compression rate 5"):
        ClaraConfig(compression_rate=5)
    with pytest.raises(ClaraError, match="multiple"):
        ClaraConfig(compression_rate=16, doc_max_tokens=40)


def test_padded_batch_matches_alone(cm):
    batched = cm.compress(DOCS, batch_size=8)
    for i, doc in enumerate(DOCS):
        alone = cm.compress([doc], batch_size=1)[0]
        np.testing.assert_allclose(np.array(batched[i]), np.array(alone), atol=2e-5, rtol=1e-4)
    # explicit left padding of very different lengths
    ids = cm.tokenize(["x", DOCS[1] * 3])
    both = cm.encode_tokens(ids, "compressor").memory
    short = cm.encode_tokens(ids[:1], "compressor").memory
    np.testing.assert_allclose(np.array(both[0]), np.array(short[0]), atol=2e-5, rtol=1e-4)


def test_truncates_to_doc_max_tokens(cm):
    long_doc = " ".join(DOCS * 20)
    assert len(cm.tokenize([long_doc])[0]) == cm.config.doc_max_tokens
    a, b = cm.compress([long_doc, long_doc + " extra words beyond the limit"])
    np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)


def test_adapters_switch_and_restore(cm):
    ids = cm.tokenize(DOCS[:1])
    comp = cm.encode_tokens(ids, "compressor").memory
    query = cm.encode_tokens(ids, "query").memory
    gen = cm.encode_tokens(ids, "generator").memory
    assert float(mx.abs(comp - query).max()) > 1e-3
    assert float(mx.abs(comp - gen).max()) > 1e-3
    again = cm.encode_tokens(ids, "compressor").memory
    np.testing.assert_array_equal(np.array(comp), np.array(again))
    assert cm.switch.active is None  # encoding leaves no adapter switched on
    with pytest.raises(ClaraError):
        cm.use("decoder")


def test_fresh_adapters_leave_base_unchanged(tiny_base):
    tokens = mx.array([[5, 6, 7, 8]])
    before = tiny_base.model(tokens)
    cm = ClaraModel(tiny_base)
    for name in ("compressor", "query", "generator"):
        with cm.adapter(name):
            np.testing.assert_allclose(np.array(cm.lm(tokens)), np.array(before), atol=1e-5)


def test_quantized_base(tiny_llama_q4_dir):
    base = load_base(tiny_llama_q4_dir, dtype=None)
    cm = ClaraModel(base, ClaraConfig(compression_rate=32, doc_max_tokens=64))
    _randomize_adapters(cm)
    mem = cm.compress(DOCS)
    assert mem.shape == (3, 2, 64)
    assert bool(mx.all(mx.isfinite(mem)))


def test_hyperclovax_base(tiny_hcx_dir):
    cm = ClaraModel(load_base(tiny_hcx_dir, dtype=None), ClaraConfig(doc_max_tokens=64))
    batched = cm.compress(DOCS)
    alone = cm.compress(DOCS[2:])
    np.testing.assert_allclose(np.array(batched[2]), np.array(alone[0]), atol=2e-5, rtol=1e-4)


def test_trainable_selection(cm):
    cm.set_trainable(["query", "generator"], memory_tokens=False)
    names = [k for k, _ in tree_flatten(cm.trainable_parameters())]
    assert names and all(".lora_query." in k or ".lora_generator." in k for k in names)
    cm.set_trainable(["compressor"])
    names = [k for k, _ in tree_flatten(cm.trainable_parameters())]
    assert "mem_embeddings" in names and not any("lora_query" in k for k in names)


def _tokens(stream) -> list[int]:
    return [c.token for c in stream if c.token is not None]


def test_memory_equal_to_token_embeddings_generates_same_tokens(cm):
    prompt = text_prompt(cm, "What is the capital of France?", [DOCS[1]])
    as_text = _tokens(generate(cm, prompt, max_tokens=12))
    as_embeddings = Prompt([0] * prompt.positions, cm.embed(mx.array(prompt.tokens)))
    assert _tokens(generate(cm, as_embeddings, max_tokens=12)) == as_text
    assert len(as_text) == 12  # a random model never emits EOS this early, so both ran fully


def test_memory_prompt_layout(cm):
    mem = cm.compress(DOCS)
    prompt = memory_prompt(cm, "Where is Paris?", list(mem))
    plain = text_prompt(cm, "Where is Paris?", ["", "", ""])
    # three blocks of n_mem slots and two <SEP> slots replace the (empty) chunk texts
    assert prompt.positions > 3 * cm.n_mem + 2
    assert prompt.embeddings.shape == (prompt.positions, 64)
    assert abs(prompt.positions - (plain.positions + 3 * cm.n_mem + 2)) <= 4
    with pytest.raises(ClaraError, match="shape"):
        memory_prompt(cm, "q", [mx.zeros((3, 64))])


def test_the_prompts_read_as_written(cm):
    """Golden layout: every other prompt test compares one prompt builder with another, so a
    bug they share passed (the question dropped from the user turn passed 39 tests). The text
    prompt is pinned character for character, and the memory prompt is that text with its
    chunks replaced by two blocks of memory rows and one `<SEP>`."""
    from clara.prompt import MEM, SEP, SYSTEM_PROMPT, TEXT, layout, render_text_prompt

    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]

    def chatml(background: str) -> str:
        return (
            f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBackground:\n"
            f"{background}\n\nQuestion:Where is Paris?<|im_end|>\n<|im_start|>assistant\n"
        )

    got = render_text_prompt(cm.tokenizer, "Where is Paris?", ["doc A", "doc B"], history)
    assert got == chatml("doc A\ndoc B")
    mem = cm.compress(DOCS[:2])
    prompt = memory_prompt(cm, "Where is Paris?", list(mem), history)
    want = layout(cm.tokenizer, chatml(MEM + SEP + MEM), cm.n_mem, 2)
    assert prompt.tokens == want.tokens and want.n_blocks == 2
    text = [t for t, s in zip(want.tokens, want.slots, strict=True) if s == TEXT]
    assert cm.tokenizer.decode(text) == chatml("")  # every real token, in order
    rows = [i for i, s in enumerate(want.slots) if s >= 0]
    assert [want.slots[i] for i in rows] == list(range(2 * cm.n_mem))
    emb = np.array(prompt.embeddings.astype(mx.float32))[rows]
    dtype = prompt.embeddings.dtype
    assert np.allclose(emb, np.array(mem.astype(dtype).astype(mx.float32)).reshape(len(rows), -1))
    assert prompt.text_len == want.slots.index(0)


def test_mixed_prompt_layout(cm):
    """The best chunk's text, then the other memories after <SEP>, in one `Background:`: its
    tokens are the text prompt's up to the end of that text, its memory rows the blocks'."""
    from clara.prompt import mixed_prompt

    mem = cm.compress(DOCS)
    prompt = mixed_prompt(cm, "Where is Paris?", [DOCS[1]], list(mem[1:]))
    text = text_prompt(cm, "Where is Paris?", [DOCS[1]])
    blocks = memory_prompt(cm, "Where is Paris?", list(mem[1:]))
    lead = next(i for i, t in enumerate(text.tokens) if t != blocks.tokens[i])
    assert prompt.tokens[:lead] == text.tokens[:lead]  # the template up to the background
    assert prompt.positions > text.positions + 2 * cm.n_mem  # plus two blocks and two <SEP>
    emb = np.array(prompt.embeddings.astype(mx.float32))
    dtype = prompt.embeddings.dtype  # the memories as the prompt holds them
    rows = np.array(mem[1:].astype(dtype).astype(mx.float32)).reshape(-1, mem.shape[-1])
    found = [i for i in range(len(emb)) if np.allclose(emb[i], rows[0])]
    assert len(found) == 1
    n, at = cm.n_mem, found[0]  # block 1, <SEP>, block 2
    assert np.allclose(emb[at : at + n], rows[:n])
    assert np.allclose(emb[at + n + 1 : at + 2 * n + 1], rows[n:])
    sep = np.array(cm.sep_embedding.astype(dtype).astype(mx.float32)).reshape(-1)
    assert np.allclose(emb[at - 1], sep) and np.allclose(emb[at + n], sep)  # after the text
    # no memories: the text prompt's tokens, read by the generator
    assert mixed_prompt(cm, "Where is Paris?", [DOCS[1]], []).tokens == text.tokens


def test_stream_reports_lengths_and_finish(cm):
    mem = cm.compress(DOCS[:2])
    chunks = list(stream_from_memory(cm, "Where is Paris?", list(mem), max_tokens=5))
    last = chunks[-1]
    assert last.finish_reason == "length" and last.generation_tokens == 5
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert last.prompt_positions == memory_prompt(cm, "Where is Paris?", list(mem)).positions
    text = "".join(c.text for c in chunks)
    assert text == cm.tokenizer.decode(_tokens(chunks))


def test_sampling_seed_is_reproducible(cm):
    prompt = text_prompt(cm, "Tell me a story", None)
    a = _tokens(generate(cm, prompt, max_tokens=10, temperature=1.0, top_p=0.9, seed=7))
    b = _tokens(generate(cm, prompt, max_tokens=10, temperature=1.0, top_p=0.9, seed=7))
    c = _tokens(generate(cm, prompt, max_tokens=10, temperature=1.0, top_p=0.9, seed=8))
    assert a == b and a != c


def test_top_p_cuts_the_tempered_distribution():
    """Temperature first, then the nucleus (vLLM's and transformers' order). Before, the
    nucleus was cut from the untempered distribution: at temperature 2 and top_p 0.8 only
    the 2 tokens of the T=1 nucleus were ever drawn."""
    from clara.decode import draw
    from clara.stream import SamplingParams

    logits = mx.array([[4.0, 3.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.0, -1.0]])
    lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)

    def nucleus(t: float, p: float) -> set[int]:
        probs = np.exp(np.array(lp[0]) / t)
        probs /= probs.sum()
        order, total, keep = np.argsort(-probs), 0.0, set()
        for i in order:
            keep.add(int(i))
            total += probs[i]
            if total >= p:
                return keep
        return keep

    params = SamplingParams(temperature=2.0, top_p=0.8)
    keys = mx.random.split(mx.random.key(0), 300)
    drawn = {int(draw(lp, params, keys[i]).item()) for i in range(300)}
    assert len(nucleus(1.0, 0.8)) == 2 and drawn <= nucleus(2.0, 0.85)
    assert len(drawn) > 2, drawn


def test_stop_strings_cut_the_text(cm):
    prompt = text_prompt(cm, "Tell me a story", None)
    full = "".join(c.text for c in generate(cm, prompt, max_tokens=20))
    stop = full[5:8]
    assert stop.strip(), "need a non-trivial stop string from the greedy text"
    chunks = list(generate(cm, prompt, max_tokens=20, stop=[stop]))
    text = "".join(c.text for c in chunks)
    assert chunks[-1].finish_reason == "stop"
    assert text == full[: full.find(stop)]


def test_context_length_is_checked(cm):
    prompt = text_prompt(cm, "hello " * 50, None)
    with pytest.raises(ContextLengthError, match="context"):
        list(generate(cm, prompt, max_context=prompt.positions - 1))
    chunks = list(generate(cm, prompt, max_tokens=50, max_context=prompt.positions + 3))
    assert chunks[-1].generation_tokens == 3 and chunks[-1].finish_reason == "length"


def test_checkpoint_round_trip(cm, tiny_llama_dir, tmp_path):
    before = cm.compress(DOCS)
    path = save_checkpoint(cm, tmp_path / "ck")
    loaded = load_clara(tiny_llama_dir, path, dtype=None)
    assert loaded.config == cm.config
    assert loaded.fingerprint == cm.fingerprint
    np.testing.assert_array_equal(np.array(loaded.compress(DOCS)), np.array(before))
    q = "Where is Paris?"
    np.testing.assert_array_equal(
        np.array(loaded.encode_queries([q])), np.array(cm.encode_queries([q]))
    )
    # the same model name with other weights: it said to load the model already loaded
    import json

    from clara.checkpoint import CONFIG_FILE, WEIGHTS_FILE
    from clara.errors import CheckpointError

    config = json.loads((path / CONFIG_FILE).read_text())
    (path / CONFIG_FILE).write_text(json.dumps({**config, "base_fingerprint": "0" * 16}))
    with pytest.raises(CheckpointError, match="the model of that name here has other weights"):
        load_clara(tiny_llama_dir, path, dtype=None)
    (path / CONFIG_FILE).write_text(json.dumps(config))
    # cut short (an interrupted copy): one line saying so and what to do, not MLX's traceback

    weights = path / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="damaged or incomplete.*copy the checkpoint again"):
        load_clara(tiny_llama_dir, path, dtype=None)


def test_float16_checkpoint_runs_in_the_model_dtype(cm, tiny_llama_dir, tmp_path):
    """A checkpoint stored in float16 (as the shipped default is) loads into the model's own
    dtypes: no cast at every use, and the same numbers as the float16 values cast there."""
    from clara.checkpoint import WEIGHTS_FILE

    path = save_checkpoint(cm, tmp_path / "ck")
    stored = mx.load(str(path / WEIGHTS_FILE))
    half = {k: v.astype(mx.float16) for k, v in stored.items()}
    mx.save_safetensors(str(path / WEIGHTS_FILE), half)
    loaded = load_clara(tiny_llama_dir, path, dtype=None)
    params = dict(tree_flatten(loaded.parameters()))
    lora = [k for k in params if ".lora_" in k]
    assert lora and all(params[k].dtype == mx.float32 for k in lora)
    assert params["mem_embeddings"].dtype == cm.mem_embeddings.dtype
    cm.load_weights(list(half.items()), strict=False)  # float16 in place, cast at each use
    np.testing.assert_array_equal(np.array(loaded.compress(DOCS)), np.array(cm.compress(DOCS)))


def test_checkpoint_refuses_other_base(cm, tiny_hcx_dir, tmp_path):
    path = save_checkpoint(cm, tmp_path / "ck")
    with pytest.raises(CheckpointError) as err:
        load_clara(tiny_hcx_dir, path, dtype=None)
    msg = str(err.value)
    assert cm.info.fingerprint in msg and "fingerprint" in msg and str(tiny_hcx_dir) in msg


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a CLaRa checkpoint"):
        load_clara("unused", tmp_path)
    with pytest.raises(CheckpointError, match="nowhere: no such checkpoint folder"):
        load_clara("unused", tmp_path / "nowhere")
    (tmp_path / "final").mkdir()  # a clara-train run folder, given instead of its final/
    (tmp_path / "final" / "clara_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="a training run's checkpoint is its .*final"):
        load_clara("unused", tmp_path)


def test_default_checkpoint_resolution(tmp_path, monkeypatch):
    import clara.checkpoint as ck

    shipped = tmp_path / "shipped"
    monkeypatch.setattr(ck, "DEFAULT_CHECKPOINT", shipped)
    assert ck.resolve_checkpoint("smollm2-135m", None) is None  # nothing shipped yet
    shipped.mkdir()
    assert ck.resolve_checkpoint("smollm2-135m", None) == shipped
    assert ck.resolve_checkpoint("default", None) == shipped
    assert ck.resolve_checkpoint("smollm2-135m", "none") is None  # explicit opt-out
    assert ck.resolve_checkpoint("/some/other/model", None) is None  # only for the default
    assert ck.resolve_checkpoint("smollm2-135m", tmp_path / "x") == tmp_path / "x"


def test_checkpoint_fingerprint_without_loading(cm, tmp_path):
    from clara.checkpoint import checkpoint_fingerprint

    path = save_checkpoint(cm, tmp_path / "ck")
    assert checkpoint_fingerprint(path) == cm.fingerprint


def test_a_collection_outlives_a_new_query_or_generator_adapter(cm, tiny_llama_dir, tmp_path):
    """Collections record the memory fingerprint: a checkpoint that changes only its query or
    generator adapter (or the notes in its config) reads them; one whose compressor changed
    does not. Collections from before, which recorded the whole checkpoint's fingerprint, are
    read by that checkpoint and by later ones that list it (`index_compatible`)."""
    import json

    from clara.checkpoint import (
        COMPATIBLE_KEY,
        CONFIG_FILE,
        WEIGHTS_FILE,
        checkpoint_fingerprint,
        checkpoint_manifest,
        index_fingerprints,
    )
    from clara.errors import IndexMismatchError
    from indexing.store import Collection

    a = save_checkpoint(cm, tmp_path / "a")

    def variant(name: str, part: str, note: dict | None = None):
        path = tmp_path / name
        path.mkdir()
        weights = mx.load(str(a / WEIGHTS_FILE))
        key = next(k for k in sorted(weights) if part in k)
        weights[key] = weights[key] + 0.01
        mx.save_safetensors(str(path / WEIGHTS_FILE), weights)
        config = json.loads((a / CONFIG_FILE).read_text())
        (path / CONFIG_FILE).write_text(json.dumps({**config, **(note or {})}))
        return path

    query = variant("query", "lora_query", {"installed_from": "a query-only run"})
    generator = variant("generator", "lora_generator")
    compressor = variant("compressor", "lora_compressor")
    memory = index_fingerprints(a)[0]
    assert cm.memory_fingerprint == memory and cm.fingerprint == checkpoint_fingerprint(a)
    assert index_fingerprints(query)[0] == index_fingerprints(generator)[0] == memory
    assert index_fingerprints(compressor)[0] != memory
    assert len({checkpoint_fingerprint(p) for p in (a, query, generator, compressor)}) == 4

    Collection.open(tmp_path / "idx", "docs", manifest=cm.manifest(), create=True).close()
    stored = json.loads((tmp_path / "idx" / "docs" / "manifest.json").read_text())
    assert stored["fingerprint"] == memory and "accepts" not in stored
    for path in (query, generator):
        model = load_clara(tiny_llama_dir, path, dtype=None)
        assert checkpoint_manifest(path) == model.manifest()  # known without the model
        Collection.open(tmp_path / "idx", "docs", manifest=model.manifest(), readonly=True).close()
    other = load_clara(tiny_llama_dir, compressor, dtype=None)
    with pytest.raises(IndexMismatchError, match="rebuild --recompress"):
        Collection.open(tmp_path / "idx", "docs", manifest=other.manifest(), readonly=True)

    # A collection from before records the whole checkpoint's fingerprint.
    old = dict(cm.manifest(), fingerprint=checkpoint_fingerprint(a), accepts=[])
    Collection.open(tmp_path / "old", "docs", manifest=old, create=True).close()
    Collection.open(tmp_path / "old", "docs", manifest=cm.manifest(), readonly=True).close()
    later = load_clara(tiny_llama_dir, query, dtype=None)
    with pytest.raises(IndexMismatchError):
        Collection.open(tmp_path / "old", "docs", manifest=later.manifest(), readonly=True)
    config = json.loads((query / CONFIG_FILE).read_text())
    config[COMPATIBLE_KEY] = [checkpoint_fingerprint(a)]
    (query / CONFIG_FILE).write_text(json.dumps(config))
    later = load_clara(tiny_llama_dir, query, dtype=None)
    Collection.open(tmp_path / "old", "docs", manifest=later.manifest(), readonly=True).close()


def test_center_memory_fits_the_mean_and_round_trips(tiny_base, tiny_llama_dir, tmp_path):
    plain = ClaraModel(
        load_base(tiny_llama_dir, dtype=None), ClaraConfig(compression_rate=16, doc_max_tokens=64)
    )
    assert "memory_center" not in dict(tree_flatten(plain.parameters()))  # contract default
    centered = ClaraModel(
        tiny_base, ClaraConfig(compression_rate=16, doc_max_tokens=64, center_memory=True)
    )
    raw = np.array(centered.compress(DOCS))  # center still zero: the plain outputs
    np.testing.assert_allclose(raw, np.array(plain.compress(DOCS)), atol=1e-5)
    assert not centered.memory_centered and plain.memory_centered
    centered.fit_memory_center(centered.tokenize(DOCS))
    assert centered.memory_centered
    out = np.array(centered.compress(DOCS))
    np.testing.assert_allclose(out, raw - raw.mean(axis=(0, 1)), atol=1e-4)
    np.testing.assert_allclose(out.mean(axis=(0, 1)), 0, atol=1e-4)
    enc = centered.encode_tokens(centered.tokenize(DOCS[:1]), "compressor")
    np.testing.assert_allclose(  # every position moves by the same vector (MSE unchanged)
        np.array(enc.hidden[0, -1]), np.array(enc.memory[0, -1]), atol=1e-6
    )
    path = save_checkpoint(centered, tmp_path / "ck")
    loaded = load_clara(tiny_llama_dir, path, dtype=None)
    assert loaded.config.center_memory and loaded.fingerprint == centered.fingerprint
    np.testing.assert_array_equal(np.array(loaded.compress(DOCS)), out)
    with pytest.raises(ClaraError, match="without center_memory"):
        plain.fit_memory_center(plain.tokenize(DOCS))


@pytest.mark.parametrize("arch", ["tiny_llama_dir", "tiny_llama_q4_dir", "tiny_hcx_dir"])
def test_memory_only_passes_give_the_full_pass_memories(arch, request) -> None:
    """`encode_tokens(memory_only=True)`, what compression and query encodings run: the last
    block computes its queries, attention and MLP for the memory positions alone, and the
    memories are the full pass's to float32 rounding (llama plain and quantized, hyperclovax
    with its multipliers and post norms; left-padded rows of several lengths)."""
    from clara.last_positions import taken

    cm = ClaraModel(load_base(request.getfixturevalue(arch), dtype=None), ClaraConfig())
    _randomize_adapters(cm)
    assert taken(cm.lm.model)
    ids = cm.tokenize([DOCS[0], DOCS[1] * 3, DOCS[2]])
    for adapter in ("compressor", "query"):
        full = cm.encode_tokens(ids, adapter)
        short = cm.encode_tokens(ids, adapter, memory_only=True)
        assert short.hidden.shape == short.memory.shape == full.memory.shape
        want = np.array(full.memory)
        np.testing.assert_allclose(
            np.array(short.memory), want, rtol=0, atol=1e-5 * np.abs(want).max()
        )


def test_length_buckets_group_similar_lengths() -> None:
    from clara.model import length_buckets

    lengths = [250, 10, 12, 240, 200, 11]
    assert length_buckets(lengths, 2) == [[1, 5], [2], [4, 3], [0]]
    assert length_buckets(lengths, 8) == [[1, 5, 2], [4, 3, 0]]
    assert length_buckets([], 4) == []


def test_bucketed_compression_matches_one_at_a_time(cm) -> None:
    texts = [DOCS[0], DOCS[1] * 3, DOCS[2], DOCS[0] * 2]
    batched = cm.compress(texts, batch_size=4)
    for i, text in enumerate(texts):
        alone = cm.compress([text], batch_size=1)[0]
        np.testing.assert_allclose(np.array(batched[i]), np.array(alone), atol=2e-5, rtol=1e-4)


def _packed_for_this_test(cm, request) -> None:
    """`cm.pack_base_weights()`, undone when the test ends (other tests read OpenBLAS's)."""
    if cm.__dict__.get("_packed") is not None or not cm.pack_base_weights():
        return

    def undo() -> None:
        cm.__dict__.pop("_packed").close()

    request.addfinalizer(undo)


@pytest.mark.cpu_only
def test_compression_side_by_side_on_cpu_lanes_gives_the_same_bits(
    cm, monkeypatch, request
) -> None:
    """Passes evaluated on separate CPU streams (clara/lanes.py), one BLAS thread each, give
    exactly the memories of one pass after the other, and the BLAS thread counts come back.
    The base weights are packed, as the services and `clara-index` pack them: OpenBLAS's own
    products need not give the same bits on one thread and two (its AVX2 kernels on a Zen 5
    CPU did not)."""
    from clara import _blas, lanes

    _packed_for_this_test(cm, request)
    texts = [DOCS[i % 3] * (1 + i % 4) for i in range(7)]
    monkeypatch.setenv("CLARA_CPU_LANES", "1")
    alone = np.array(cm.compress(texts, batch_size=1))
    monkeypatch.setenv("CLARA_CPU_LANES", "2")
    monkeypatch.setattr(lanes, "MIN_ROWS", 1)  # the tiny model's passes are small
    assert lanes.worth(10**6) == 2
    before = _blas.current_threads()
    side_by_side = np.array(cm.compress(texts, batch_size=1))
    assert _blas.current_threads() == before
    if _blas.row_exact_products():
        np.testing.assert_array_equal(side_by_side, alone)
    else:  # no AVX-512: OpenBLAS's products, whose bits depend on their thread count
        np.testing.assert_allclose(side_by_side, alone, atol=2e-5, rtol=1e-4)
    queries = np.array(cm.encode_queries(texts))  # batches split to fill the lanes
    monkeypatch.setenv("CLARA_CPU_LANES", "1")
    np.testing.assert_allclose(queries, np.array(cm.encode_queries(texts)), atol=2e-5, rtol=1e-4)


def test_lanes_run_returns_results_in_order() -> None:
    from clara import lanes

    passes = [lambda i=i: mx.arange(4) * i for i in range(5)]
    for width in (1, 2, 3):
        out = lanes.run(passes, width)
        assert [a.tolist() for a in out] == [[0, i, 2 * i, 3 * i] for i in range(5)]
    assert lanes.run([], 2) == []


@pytest.mark.parametrize("arch", ["tiny_llama_dir", "tiny_llama_q4_dir", "tiny_hcx_dir"])
def test_output_head_is_the_forward_after_the_model(arch, request) -> None:
    """`ClaraModel.output_head` applied to `lm.model`'s states gives `lm`'s logits (untied and
    tied and quantized llama heads, hyperclovax's scaled logits)."""
    cm = ClaraModel(load_base(request.getfixturevalue(arch), dtype=None), ClaraConfig())
    head = cm.output_head()
    assert head is not None
    tokens = mx.array([[5, 17, 42, 99, 7]])
    want = cm.lm(tokens)[:, -1]
    got = head(cm.lm.model(tokens)[:, -1:])[:, 0]
    assert mx.allclose(got, want, rtol=1e-5, atol=1e-5).item()


def test_the_byte_level_table_is_mlx_lms():
    """clara.stream keeps its own copy of byte-level BPE's table (mlx-lm's is private)."""
    from mlx_lm.tokenizer_utils import _byte_decoder

    from clara.stream import _byte_level_decoder

    assert _byte_level_decoder() == _byte_decoder() and len(_byte_level_decoder()) == 256


def test_temp_folders_that_killed_runs_left_are_swept(tmp_path) -> None:
    """A crash audit: `clara-models prepare` killed three times left three ~100 MB temp
    folders beside the model, which nothing removed (a 7B import: gigabytes). Temp folders
    now carry their process's id, and those of dead processes go at the next run."""
    import os
    import subprocess
    import sys

    from clara.paths import temp_sibling

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    target = tmp_path / "smollm2-135m"
    names = {
        "killed": f".smollm2-135m.{dead}-ab12cd34.tmp",
        "running": f".smollm2-135m.{os.getpid()}-ef56gh78.tmp",  # a conversion running now
        "old unnamed": ".smollm2-135m.qw12er34.tmp",  # named before the pid: a day old
        "new unnamed": ".smollm2-135m.zx56cv78.tmp",
        "another model's": f".other.{dead}-ab12cd34.tmp",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
    os.utime(tmp_path / names["old unnamed"], (0, 0))
    made = temp_sibling(target)
    left = {p.name for p in tmp_path.iterdir()}
    assert made.name in left and made.name.startswith(f".smollm2-135m.{os.getpid()}-")
    assert left - {made.name} == {names[k] for k in ("running", "new unnamed", "another model's")}
