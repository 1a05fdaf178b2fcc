"""The token loop (clara.decode): continuous batching gives each request the tokens it would get
alone (greedy and seeded sampling, memory and text prompts, mixed lengths, joining mid-decode,
leaving early), the prefix cache and the merged generator adapter change no token, and
logprobs come with each token."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import make_prompt_cache

from clara import _blas, lanes
from clara.decode import MIN_PREFIX, Decoder, PrefixCache, draw
from clara.generate import generate
from clara.lora import merge_adapter, merged
from clara.model import ClaraConfig, ClaraModel
from clara.prompt import Prompt, memory_prompt, text_prompt
from clara.stream import SamplingParams
from tests.test_core import DOCS, _randomize_adapters


@pytest.fixture(scope="module")
def cm(tiny_llama_dir) -> ClaraModel:
    from clara.loader import load_base

    model = ClaraModel(load_base(tiny_llama_dir, dtype=None), ClaraConfig(doc_max_tokens=64))
    _randomize_adapters(model)  # the generator must differ from the base model
    return model


def tokens_alone(cm, prompt, adapter, **kw) -> list[int]:
    return [c.token for c in generate(cm, prompt, adapter=adapter, **kw) if c.token is not None]


def run_batch(decoder: Decoder, schedule: dict[int, list], cancel: dict[int, int]):
    """Step `decoder`; at step i add the (name, prompt, params) of schedule[i]; cancel the
    named request once it has cancel[name] tokens. Returns name -> tokens."""
    out: dict[str, list[int]] = {}
    seqs = {}
    step = widest = 0
    while step <= max(schedule) or decoder.sequences:
        widest = max(widest, len(decoder.sequences))
        for name, prompt, params in schedule.get(step, []):
            seq, first = decoder.add(prompt, params)
            seqs[name] = seq
            out[name] = [first.token] if first.token is not None else []
        for seq, chunk in decoder.step():
            name = next(n for n, s in seqs.items() if s is seq)
            if chunk.token is not None:
                out[name].append(chunk.token)
        for name, n in cancel.items():
            if name in seqs and len(out[name]) >= n and not seqs[name].done:
                decoder.remove(seqs[name])
        step += 1
    assert widest >= 2  # they really did decode together
    return out


def test_batched_greedy_equals_alone_memory_prompts(cm) -> None:
    mem = cm.compress(DOCS)
    prompts = {
        "one": memory_prompt(cm, "Where is Paris?", [mem[0]]),
        "three": memory_prompt(cm, "Which river runs past the mill?", list(mem)),
        "two": memory_prompt(cm, "Who?", list(mem[1:])),
        "leaves": memory_prompt(cm, "What is the capital of France?", list(mem[:2])),
    }
    lengths = {"one": 12, "three": 7, "two": 10, "leaves": 12}
    p = {k: SamplingParams(max_tokens=n, ignore_eos=True) for k, n in lengths.items()}
    schedule = {
        0: [("one", prompts["one"], p["one"]), ("leaves", prompts["leaves"], p["leaves"])],
        3: [("three", prompts["three"], p["three"])],  # joins mid-decode
        5: [("two", prompts["two"], p["two"])],
    }
    decoder = Decoder(cm, "generator", prefix_cache=PrefixCache())
    got = run_batch(decoder, schedule, cancel={"leaves": 4})  # one leaves early
    for name, prompt in prompts.items():
        alone = tokens_alone(cm, prompt, "generator", max_tokens=lengths[name], ignore_eos=True)
        if name == "leaves":
            assert 4 <= len(got[name]) < lengths[name] and got[name] == alone[: len(got[name])]
        else:
            assert got[name] == alone, name
    assert decoder.sequences == [] and decoder.prefix_cache.hits >= 2


def test_requests_ending_at_one_step_leave_together(cm) -> None:
    """Two of four requests end at the same step and two are removed together mid-batch
    (`Decoder.remove_many`: one filter of the caches); the others keep their own tokens."""
    prompts = [
        text_prompt(cm, q, [DOCS[i % len(DOCS)]])
        for i, q in enumerate(["Where is Paris?", "Who?", "Which river?", "What is the capital?"])
    ]
    lengths = [5, 5, 11, 9]  # the first two end at the same step
    decoder = Decoder(cm, None)
    started = decoder.add_many(
        [(p, SamplingParams(max_tokens=n, ignore_eos=True), None) for p, n in zip(prompts, lengths)]
    )
    seqs = [seq for seq, _ in started]
    got = {i: [first.token] for i, (_, first) in enumerate(started)}
    while decoder.sequences:
        for seq, chunk in decoder.step():
            got[seqs.index(seq)].append(chunk.token)
        if len(decoder.sequences) == 2 and len(got[2]) >= 7:  # both survivors at once
            decoder.remove_many(list(decoder.sequences))
    assert decoder.sequences == [] and all(s.done for s in seqs)
    for i, (p, n) in enumerate(zip(prompts, lengths)):
        alone = tokens_alone(cm, p, None, max_tokens=n, ignore_eos=True)
        assert got[i] == alone[: len(got[i])] and len(got[i]) == (n if i < 2 else 7), i


def test_batched_greedy_equals_alone_text_prompts(cm) -> None:
    prompts = [
        text_prompt(cm, "Tell me a story", None),
        text_prompt(cm, "What is the capital of France?", DOCS),
        text_prompt(cm, "hi", [DOCS[0]]),
    ]
    params = SamplingParams(max_tokens=9, ignore_eos=True)
    schedule = {i * 2: [(f"p{i}", p, params)] for i, p in enumerate(prompts)}
    got = run_batch(Decoder(cm, None), schedule, cancel={})
    for i, p in enumerate(prompts):
        assert got[f"p{i}"] == tokens_alone(cm, p, None, max_tokens=9, ignore_eos=True)


def test_seeded_sampling_is_the_same_alone_and_in_a_batch(cm) -> None:
    prompt = text_prompt(cm, "Tell me a story", None)
    kw = dict(max_tokens=10, temperature=1.0, top_p=0.9, ignore_eos=True)
    alone = tokens_alone(cm, prompt, None, seed=7, **kw)
    others = text_prompt(cm, "What is the capital of France?", DOCS)
    schedule = {
        0: [("greedy", others, SamplingParams(max_tokens=12, ignore_eos=True))],
        1: [("seeded", prompt, SamplingParams(seed=7, **kw))],
        2: [("other seed", prompt, SamplingParams(seed=8, **kw))],
    }
    got = run_batch(Decoder(cm, None), schedule, cancel={})
    assert got["seeded"] == alone and got["other seed"] != alone


def test_a_temperature_too_small_to_invert_decodes_greedily(cm) -> None:
    """1 / 1e-40 overflows float32: such a temperature drew tokens uniformly at random (top_p
    1) or always the last one (an engine review)."""
    prompt = text_prompt(cm, "Tell me a story", None)
    greedy = tokens_alone(cm, prompt, None, max_tokens=8, ignore_eos=True)
    for top_p in (1.0, 0.9):
        tiny = tokens_alone(
            cm, prompt, None, max_tokens=8, ignore_eos=True, temperature=1e-40, top_p=top_p, seed=1
        )
        assert tiny == greedy, top_p
    # tempered in float32 whatever the logits' type: 1 / 2e-5 times float16 log-probabilities
    # below about -1.3 overflowed, and the draw was uniform (a review)
    row = mx.full((1, 1000), -6.9, dtype=mx.float16).at[0, 0].add(2.0)
    params = SamplingParams(temperature=2e-5, top_p=1.0)
    assert [draw(row, params, mx.random.key(i)).item() for i in range(5)] == [0] * 5


def test_prefix_cache_changes_no_token(cm) -> None:
    mem = cm.compress(DOCS)
    cache = PrefixCache()
    decoder = Decoder(cm, "generator", prefix_cache=cache)
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    for question in ("Where is Paris?", "Which river?", "Who wrote it?"):
        prompt = memory_prompt(cm, question, list(mem[:2]))
        seq, first = decoder.add(prompt, params)
        got = [first.token]
        while decoder.sequences:
            got += [c.token for _, c in decoder.step() if c.token is not None]
        assert got == tokens_alone(cm, prompt, "generator", max_tokens=6, ignore_eos=True)
    assert cache.hits == 2 and cache.reused_positions >= 2 * 8


def test_prefix_cache_reuses_a_repeated_best_chunk(cm) -> None:
    """ "mixed" prompts whose best chunk repeats reuse its KV, not just the system prompt's,
    and every answer is still the one the prompt gets alone."""
    from clara.decode import text_prefix
    from clara.prompt import mixed_prompt

    mem = cm.compress(DOCS)
    cache = PrefixCache()
    decoder = Decoder(cm, "generator", prefix_cache=cache)
    params = SamplingParams(max_tokens=5, ignore_eos=True)
    asked = [("Where is Paris?", 0), ("Which river?", 0), ("Who wrote it?", 1), ("When?", 0)]
    reused = []
    for question, best in asked:
        prompt = mixed_prompt(cm, question, [DOCS[best]], [mem[2]])
        before = cache.reused_positions
        seq, first = decoder.add(prompt, params)
        got = [first.token]
        while decoder.sequences:
            got += [c.token for _, c in decoder.step() if c.token is not None]
        assert got == tokens_alone(cm, prompt, "generator", max_tokens=5, ignore_eos=True)
        reused.append((cache.reused_positions - before, len(text_prefix(prompt))))
    assert reused[0][0] == 0  # nothing cached yet
    assert reused[1][0] == reused[1][1] > 20  # the chunk's text, not just the template
    assert MIN_PREFIX <= reused[2][0] < reused[2][1] - 10  # another chunk: the template only
    assert reused[3][0] == reused[3][1]  # the first chunk's entry survived the second's

    # prompts prefilled together (side by side on a multi-core CPU) leave their entries too
    cache = PrefixCache()
    decoder = Decoder(cm, "generator", prefix_cache=cache)
    pair = [mixed_prompt(cm, "Where?", [DOCS[i]], [mem[2]]) for i in (0, 1)]
    decoder.add_many([(p, params, None) for p in pair])
    decoder.remove_many(list(decoder.sequences))
    for i in (0, 1):
        prompt = mixed_prompt(cm, "Why?", [DOCS[i]], [mem[2]])
        before = cache.reused_positions
        seq, first = decoder.add(prompt, params)
        decoder.remove(seq)
        assert cache.reused_positions - before == len(text_prefix(prompt))
        assert first.token == tokens_alone(cm, prompt, "generator", max_tokens=1)[0]
        assert first.cached_positions == len(text_prefix(prompt))  # (usage's cached_tokens)


@pytest.mark.cpu_only
@pytest.mark.parametrize("side_by_side", [False, True], ids=["one-pass", "lanes"])
def test_cached_positions_are_what_each_prompt_took_from_the_cache(
    cm, monkeypatch, side_by_side
) -> None:
    """Usage's `cached_tokens`: a prompt whose whole text the cache held, prefilled in one
    pass beside a prompt sharing only the template, took the template from the cache (it
    was counted whole, a review); on lanes of one row each, it took its whole text."""
    from clara.decode import text_prefix
    from clara.kv import shared_text
    from clara.prompt import mixed_prompt

    monkeypatch.setenv("CLARA_CPU_LANES", "2" if side_by_side else "1")
    monkeypatch.setattr(lanes, "MIN_ROWS", 1)
    mem = cm.compress(DOCS)
    cache = PrefixCache()
    decoder = Decoder(cm, "generator", prefix_cache=cache)
    params = SamplingParams(max_tokens=1)
    seq, _ = decoder.add(mixed_prompt(cm, "Where?", [DOCS[0]], [mem[2]]), params)
    decoder.remove(seq)
    pair = [mixed_prompt(cm, "Why?", [DOCS[i]], [mem[2]]) for i in (0, 1)]
    before = cache.reused_positions
    got = [
        chunk.cached_positions for _, chunk in decoder.add_many([(p, params, None) for p in pair])
    ]
    template = shared_text(pair)
    assert MIN_PREFIX <= template < len(text_prefix(pair[0])) - 10
    assert got == ([len(text_prefix(pair[0])), template] if side_by_side else [template] * 2)
    if not side_by_side:
        assert cache.reused_positions - before == 2 * template


def test_prefix_cache_text_prompts_in_chunks(cm) -> None:
    """Text prompts (the bare model's) sharing their first document, prefilled in chunks of
    a few rows: the second takes the shared text from the cache, past a chunk boundary, and
    both answer as alone."""
    cache = PrefixCache()
    decoder = Decoder(cm, None, prefix_cache=cache, prefill_step=16)
    params = SamplingParams(max_tokens=5, ignore_eos=True)
    prompts = [text_prompt(cm, q, [DOCS[0], DOCS[i]]) for i, q in ((1, "Who?"), (2, "Where?"))]
    for prompt in prompts:
        before = cache.reused_positions
        seq, first = decoder.add(prompt, params)
        got = [first.token]
        while decoder.sequences:
            got += [c.token for _, c in decoder.step()]
        assert got == tokens_alone(cm, prompt, None, max_tokens=5, ignore_eos=True)
    common = PrefixCache._common(tuple(prompts[0].tokens), prompts[1].tokens)
    assert cache.reused_positions - before == common > 16


def test_prefix_cache_entries_and_budget() -> None:
    from mlx_lm.models.cache import KVCache

    def kv(n: int) -> list[KVCache]:
        c = KVCache()
        c.keys, c.values = mx.ones((1, 1, n, 4)), mx.zeros((1, 1, n, 4))
        return [c]

    cache = PrefixCache(entries=3, max_bytes=4 * 4 * 2 * 60, max_positions=40)
    a = list(range(20))
    cache.store(a, kv(20))
    cache.store(a + [7] * 10, kv(30))  # extends `a`: replaces it
    assert list(cache._items) == [tuple(a + [7] * 10)]
    cache.store(a[:12], kv(12))  # held by the entry already
    assert len(cache._items) == 1
    n, caches = cache.lookup(a[:15] + [99])
    assert n == 15 and caches[0].offset == 15 and caches[0].keys.shape[2] == 15
    assert cache.lookup([99] * 20) == (0, None)
    b = [50 + i for i in range(50)]
    cache.store(b, kv(50))  # capped at max_positions; over budget with the other: LRU goes
    assert [len(k) for k in cache._items] == [40] and cache.nbytes <= cache.max_bytes
    assert cache.lookup(b)[0] == 40


def test_merged_generator_matches_the_lora_path(cm) -> None:
    prompt = text_prompt(cm, "What is the capital of France?", DOCS)
    tokens = mx.array(prompt.tokens)[None]
    with cm.adapter("generator"):
        exact = cm.lm(tokens, cache=make_prompt_cache(cm.lm))
    merge_adapter(cm, "generator")
    with merged(cm, "generator"):
        fast = cm.lm(tokens, cache=make_prompt_cache(cm.lm))
    with cm.adapter(None):
        base = cm.lm(tokens, cache=make_prompt_cache(cm.lm))
    np.testing.assert_allclose(np.array(fast), np.array(exact), atol=1e-4, rtol=1e-4)
    assert float(mx.abs(exact - base).max()) > 1e-2  # the adapter does change the output
    assert cm.switch.active is None and not cm.switch.merged
    # training replaces the adapter's arrays: the merged copy follows
    _randomize_adapters(cm, scale=0.3)
    merge_adapter(cm, "generator")
    with cm.adapter("generator"):
        exact = cm.lm(tokens, cache=make_prompt_cache(cm.lm))
    with merged(cm, "generator"):
        fast = cm.lm(tokens, cache=make_prompt_cache(cm.lm))
    np.testing.assert_allclose(np.array(fast), np.array(exact), atol=1e-4, rtol=1e-4)
    assert not any("_decode" in k or "merged" in k for k in dict(cm.parameters()))


def test_stacked_qkv_product_changes_nothing(cm, monkeypatch) -> None:
    """q/k/v read one input: with the merged adapter their weights are one stacked product
    per block (`clara.lora._Fused`). The same logits as one product per linear, each block's
    product let go after its three slices, and a trained adapter is stacked again."""
    from clara.lora import fusable

    prompt = text_prompt(cm, "What is the capital of France?", DOCS)
    tokens = mx.array(prompt.tokens)[None]

    def logits(fuse: str):
        monkeypatch.setenv("CLARA_FUSE", fuse)
        merge_adapter(cm, "generator")
        with merged(cm, "generator"):
            out = cm.lm(tokens, cache=make_prompt_cache(cm.lm))
            mx.eval(out)
        return out

    from clara._blas import _address as address

    logits("on")
    starts = {address(m._decode["generator"].fused[0].weight) for g in fusable(cm) for m in g}
    apart = logits("off")  # after stacking: each projection in its own memory again (decode
    held = [m._decode["generator"] for g in fusable(cm) for m in g]  # copies go by address)
    assert all(h.fused is None for h in held)
    assert not starts & {address(h.weight) for h in held}
    stacked = logits("on")
    groups = fusable(cm)
    assert len(groups) == len(cm.lm.layers)
    fused = {id(m._decode["generator"].fused[0]) for g in groups for m in g}
    assert len(fused) == len(groups)  # one stacked product per block
    assert all(m._decode["generator"].fused[0]._last is None for g in groups for m in g)
    np.testing.assert_allclose(np.array(stacked), np.array(apart), atol=1e-5, rtol=1e-5)
    decoder = Decoder(cm, "generator")  # the decode copies: the stacked weights, not the parts
    weights = decoder._decode_weights()
    assert len(weights) == len(cm.lora_layers()) - 2 * len(groups) + (cm.head_weight() is not None)
    _randomize_adapters(cm, scale=0.3)  # training replaced the arrays: stacked again
    stale = {id(m._decode["generator"].fused[0]) for g in groups for m in g}
    with cm.adapter("generator"):
        exact = cm.lm(tokens, cache=make_prompt_cache(cm.lm))
    again = logits("on")
    assert not stale & {id(m._decode["generator"].fused[0]) for g in groups for m in g}
    np.testing.assert_allclose(np.array(again), np.array(exact), atol=1e-4, rtol=1e-4)


def test_bare_model_decodes_from_its_own_copies(cm) -> None:
    """Text prompts decode through the bare model from copies of its weights (`merge_adapter`
    with None: the thin kernel's decode copies attach to them), never from the base weights
    the compressor and query adapter read exactly. Same logits as the base path."""
    from clara import _blas
    from clara.lora import fusable

    if _blas.thin is None:  # no thin kernel (no C compiler, or not Linux): nothing would read it
        assert merge_adapter(cm, None) == 0
        return
    prompt = text_prompt(cm, "What is the capital of France?", DOCS)
    tokens = mx.array(prompt.tokens)[None]
    with cm.adapter(None):
        exact = cm.lm(tokens, cache=make_prompt_cache(cm.lm))
    assert merge_adapter(cm, None) == len(cm.lora_layers())
    with merged(cm, None):
        fast = cm.lm(tokens, cache=make_prompt_cache(cm.lm))
    np.testing.assert_allclose(np.array(fast), np.array(exact), atol=1e-5, rtol=1e-5)
    copies = Decoder(cm, None)._decode_weights()
    stacked = len(fusable(cm))
    assert len(copies) == len(cm.lora_layers()) - 2 * stacked + (cm.head_weight() is not None)
    address = _blas._address
    assert not {address(m.base.weight) for m in cm.lora_layers()} & {address(w) for w in copies}


def test_long_prompts_prefill_in_chunks_under_the_score_budget(cm, monkeypatch) -> None:
    """On the CPU a prefill chunk keeps a prompt's attention scores under PREFILL_SCORES:
    cuts that depend on positions only (the same alone and in a batch), within
    [MIN_CHUNK, prefill_step] rows, and the same first-token logits as one chunk."""
    import clara.decode as decode

    prompt = text_prompt(cm, "Tell me everything about Paris and France.", DOCS * 3)
    decoder = Decoder(cm, None, prefill_step=512)
    heads = int(cm.info.config["num_attention_heads"])
    monkeypatch.setattr(decode, "PREFILL_SCORES", heads * 48 * 64)
    cuts = decoder._chunks(0, prompt.positions)
    assert len(cuts) > 2 and cuts[0][0] == 0 and cuts[-1][1] == prompt.positions
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))
    assert all(decode.MIN_CHUNK <= hi - lo <= 512 for lo, hi in cuts[:-1])
    assert decoder._chunks(0, cuts[1][1]) == cuts[:2]  # a shorter prompt: the same first cuts
    _, chunked = decoder._prefill([prompt])
    monkeypatch.setattr(decode, "PREFILL_SCORES", 1 << 40)
    assert decoder._chunks(0, prompt.positions) == [(0, prompt.positions)]
    _, whole = decoder._prefill([prompt])
    np.testing.assert_allclose(np.array(chunked), np.array(whole), atol=1e-4, rtol=1e-4)


def test_logprobs_come_with_each_token(cm) -> None:
    prompt = text_prompt(cm, "Tell me a story", None)
    chunks = [
        c
        for c in generate(cm, prompt, adapter=None, max_tokens=5, top_logprobs=3, logprobs=True)
        if c.token is not None
    ]
    assert len(chunks) == 5
    for c in chunks:
        assert c.logprob is not None and c.logprob <= 0
        assert len(c.top_logprobs) == 3 and c.top_logprobs[0][0] == c.token  # greedy: the best
        assert math.isclose(c.top_logprobs[0][1], c.logprob, rel_tol=1e-6)
        values = [v for _, v in c.top_logprobs]
        assert values == sorted(values, reverse=True)
    plain = list(generate(cm, prompt, adapter=None, max_tokens=3))
    assert all(c.logprob is None and c.top_logprobs is None for c in plain)


def test_no_decode_copy_past_the_memory_budget(cm, monkeypatch) -> None:
    monkeypatch.setenv("CLARA_MERGE_GB", "0")
    _randomize_adapters(cm, scale=0.2)  # new adapter arrays: any old copy is stale
    assert merge_adapter(cm, "generator") == 0
    prompt = text_prompt(cm, "Tell me a story", None)
    tokens = mx.array(prompt.tokens)[None]
    with cm.adapter("generator"):
        exact = cm.lm(tokens, cache=make_prompt_cache(cm.lm))
    with merged(cm, "generator"):  # stale copies are not used: the LoRA path answers
        fast = cm.lm(tokens, cache=make_prompt_cache(cm.lm))
    np.testing.assert_array_equal(np.array(fast), np.array(exact))


def test_batch_generate_gives_each_prompt_its_answer_alone(cm) -> None:
    """The evaluation's batched greedy answers (clara.generate.batch_generate): more prompts
    than places, so finished answers hand their place on; each answer is the text and token
    count `generate` gives that prompt alone, and every index comes back once."""
    from clara.generate import batch_generate

    mem = cm.compress(DOCS)
    prompts = [
        memory_prompt(cm, "Where is Paris?", [mem[0]]),
        text_prompt(cm, "Which river runs past the mill?", DOCS[:2]),
        memory_prompt(cm, "Who?", list(mem)),
        memory_prompt(cm, "No documents at all?", []),
        memory_prompt(cm, "What is the capital of France?", list(mem[1:])),
    ]
    got = list(batch_generate(cm, prompts, adapter="generator", max_tokens=9, max_batch=2))
    assert sorted(i for i, _ in got) == list(range(len(prompts)))
    for i, answer in got:
        chunks = list(generate(cm, prompts[i], adapter="generator", max_tokens=9))
        assert answer.text == "".join(c.text for c in chunks)
        assert answer.tokens == chunks[-1].generation_tokens
        assert answer.finish_reason == chunks[-1].finish_reason
        assert answer.prompt_positions == prompts[i].positions
    # every answer done at its first token: the next prompts are still admitted
    got = list(batch_generate(cm, prompts, adapter="generator", max_tokens=1, max_batch=2))
    assert sorted(i for i, _ in got) == list(range(len(prompts)))
    assert all(a.tokens == 1 and a.finish_reason in ("length", "stop") for _, a in got)


def test_a_bfloat16_model_answers_from_memory(tiny_llama_dir) -> None:
    """A model loaded as bfloat16 (`--dtype bfloat16`) prefills and decodes. Before, its
    prefill asked numpy for the address of each bfloat16 decode weight, to pack float32
    panels of it, and every answer crashed ("'bfloat16' is not a valid PEP 3118 buffer
    format string": `clara-eval --dtype bfloat16`)."""
    from clara.generate import batch_generate
    from clara.loader import load_base

    model = ClaraModel(load_base(tiny_llama_dir, dtype="bfloat16"), ClaraConfig(doc_max_tokens=64))
    _randomize_adapters(model)
    mem = model.compress(DOCS[:2])
    prompts = [
        memory_prompt(model, "Where is Paris?", list(mem)),
        text_prompt(model, "Who?", DOCS[:1]),
    ]
    got = dict(batch_generate(model, prompts, adapter="generator", max_tokens=4, max_batch=2))
    assert sorted(got) == [0, 1] and all(a.tokens >= 1 for a in got.values())


@pytest.mark.cpu_only
@pytest.mark.parametrize("side_by_side", [False, True], ids=["one-pass", "lanes"])
def test_prefilled_together_equals_alone(cm, monkeypatch, side_by_side) -> None:
    """`Decoder.add_many`: prompts of mixed lengths prefilled as one right-padded batch (memory
    and text prompts, one finished by its first token, a group joining a running batch) get
    the greedy tokens and the seeded samples each gets alone; also when the group is split
    into parts prefilled side by side on two lanes (`clara.lanes`)."""
    passes: list[int] = []
    real_run = lanes.run

    def counted(builders, width=None):
        passes.append(len(builders))
        return real_run(builders, width)

    monkeypatch.setattr(lanes, "run", counted)
    monkeypatch.setenv("CLARA_CPU_LANES", "2" if side_by_side else "1")
    monkeypatch.setattr(lanes, "MIN_ROWS", 1)  # these small prompts: lanes all the same
    mem = cm.compress(DOCS)
    passes.clear()  # compressing may use lanes too: count the prefills only
    memory = [
        memory_prompt(cm, "Where is Paris?", [mem[0]]),
        memory_prompt(cm, "Which river runs past the old mill in the story?", list(mem)),
        memory_prompt(cm, "Who?", list(mem[1:])),
    ]
    text = [
        text_prompt(cm, "Tell me a story", None),
        text_prompt(cm, "What is the capital of France?", DOCS),
    ]
    assert len({p.positions for p in memory}) > 1  # right padding is really used
    for adapter, prompts in (("generator", memory), (None, text)):
        decoder = Decoder(cm, adapter, prefix_cache=PrefixCache())
        early = decoder.add(prompts[0], SamplingParams(max_tokens=12, ignore_eos=True))[0]
        decoder.step()  # a running batch the group joins
        lengths = [9, 1, 7][: len(prompts)]  # max_tokens=1: done at its first token
        group = [
            (p, SamplingParams(max_tokens=n, ignore_eos=True), k)
            for k, (p, n) in enumerate(zip(prompts, lengths))
        ]
        got = {}
        for seq, first in decoder.add_many(group):
            got[seq.tag] = [first.token]
            assert (first.finish_reason is not None) == (lengths[seq.tag] == 1)
        while decoder.sequences:
            for seq, chunk in decoder.step():
                if seq is not early and chunk.token is not None:
                    got[seq.tag].append(chunk.token)
        for k, (p, n) in enumerate(zip(prompts, lengths)):
            assert got[k] == tokens_alone(cm, p, adapter, max_tokens=n, ignore_eos=True), k
    # seeded sampling: the same tokens prefilled with others as alone
    kw = dict(max_tokens=8, temperature=1.0, top_p=0.9, ignore_eos=True)
    decoder = Decoder(cm, None)
    group = [
        (text[1], SamplingParams(seed=3, **kw), "a"),
        (text[0], SamplingParams(seed=7, **kw), "b"),
    ]
    got = {}
    for seq, first in decoder.add_many(group):
        got[seq.tag] = [first.token]
    while decoder.sequences:
        for seq, chunk in decoder.step():
            got[seq.tag].append(chunk.token)
    assert got["b"] == tokens_alone(cm, text[0], None, seed=7, **kw)
    assert got["a"] == tokens_alone(cm, text[1], None, seed=3, **kw)
    assert (2 in passes) == side_by_side  # the groups really were split, or not


def test_first_logits_are_the_same_alone_and_in_a_batch(cm) -> None:
    """The first token's logits (each prompt's last position, through the output head) are
    bit for bit the same for a prompt prefilled alone and beside a shorter one: greedy
    argmax on a random model sits on near-ties, so any other arithmetic shows up here."""
    rng = np.random.default_rng(0)
    shared = rng.integers(5, 400, 36).tolist()  # a prefix the prefix cache keeps
    short = Prompt(shared + rng.integers(5, 400, 120).tolist(), None)
    long = Prompt(shared + rng.integers(5, 400, 171).tolist(), None)
    for adapter in (None, "generator"):
        decoder = Decoder(cm, adapter, prefix_cache=PrefixCache())
        decoder.add(long, SamplingParams(max_tokens=1))  # fills the prefix cache
        alone = decoder._prefill([long])[1]
        both = decoder._prefill([short, long])[1]
        if _blas.row_exact_products():
            assert mx.array_equal(alone[0], both[1]), adapter
        else:  # no AVX-512: OpenBLAS's products, whose bits depend on the rows beside them
            assert mx.allclose(alone[0], both[1], rtol=1e-4, atol=2e-3).item(), adapter


def test_prefill_in_chunks_gives_the_same_tokens(cm) -> None:
    """Prompts longer than `prefill_step` prefill chunk by chunk (each row's last position may
    fall in any chunk): the same greedy tokens as one pass."""
    rng = np.random.default_rng(1)
    prompts = [Prompt(rng.integers(5, 400, n).tolist(), None) for n in (23, 50, 37)]
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    got = {}
    for step in (512, 16):
        decoder = Decoder(cm, None, prefill_step=step)
        out = {seq.tag: [first.token] for seq, first in decoder.add_many(
            [(p, params, k) for k, p in enumerate(prompts)])}  # fmt: skip
        while decoder.sequences:
            for seq, chunk in decoder.step():
                out[seq.tag].append(chunk.token)
        got[step] = out
    assert got[16] == got[512]
    for k, p in enumerate(prompts):
        assert got[16][k] == tokens_alone(cm, p, None, max_tokens=6, ignore_eos=True)


def test_groups_prefilled_between_two_steps_join_at_once(cm) -> None:
    """Several prefill passes between two decode steps (as clara-serve admits a burst) join
    the running batch together at the next step (`join_caches`), one of them removed before
    it ever decoded: every other request still gets the greedy tokens it gets alone."""
    mem = cm.compress(DOCS)
    prompts = [
        memory_prompt(cm, "Where is Paris?", [mem[0]]),
        memory_prompt(cm, "Which river runs past the old mill in the story?", list(mem)),
        memory_prompt(cm, "Who?", list(mem[1:])),
        memory_prompt(cm, "What is the capital of France, and why?", list(mem[:2])),
        memory_prompt(cm, "Name it.", [mem[2]]),
    ]
    lengths = [11, 6, 9, 8, 7]
    params = [SamplingParams(max_tokens=n, ignore_eos=True) for n in lengths]
    decoder = Decoder(cm, "generator", prefix_cache=PrefixCache())
    got = {0: [decoder.add(prompts[0], params[0], 0)[1].token]}
    decoder.step()  # a running batch with one position decoded
    for group in ([1, 2], [3], [4]):  # three passes, queued to join
        for seq, first in decoder.add_many([(prompts[k], params[k], k) for k in group]):
            got[seq.tag] = [first.token]
            if seq.tag == 3:
                gone = seq
    assert len(decoder._joining) == 3
    decoder.remove(gone)  # leaves before its first decode step
    assert not decoder._joining and len(decoder.sequences) == 4
    while decoder.sequences:
        for seq, chunk in decoder.step():
            got[seq.tag].append(chunk.token)
    for k in (0, 1, 2, 4):
        alone = tokens_alone(cm, prompts[k], "generator", max_tokens=lengths[k], ignore_eos=True)
        assert got[k] == alone, k
    assert got[3] == tokens_alone(cm, prompts[3], "generator", max_tokens=1)


def test_prefill_without_a_separate_head_joins_the_same(cm, monkeypatch) -> None:
    """Architectures whose output head cannot be called apart prefill all but the last position,
    align the rows (`join_caches`), then run the last positions as one (B, 1) forward: the
    same greedy tokens as each prompt alone."""
    monkeypatch.setattr(cm, "output_head", lambda: None)
    mem = cm.compress(DOCS)
    prompts = [
        memory_prompt(cm, "Where is Paris?", [mem[0]]),
        memory_prompt(cm, "Which river runs past the old mill in the story?", list(mem)),
        text_prompt(cm, "hi", None),
    ]
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    decoder = Decoder(cm, "generator")
    got = {seq.tag: [first.token] for seq, first in decoder.add_many(
        [(p, params, k) for k, p in enumerate(prompts[:2])])}  # fmt: skip
    decoder.step()
    seq, first = decoder.add(prompts[2], params, 2)  # a single row: nothing to align
    got[2] = [first.token]
    while decoder.sequences:
        for seq, chunk in decoder.step():
            got[seq.tag].append(chunk.token)
    for k, p in enumerate(prompts):
        assert got[k] == tokens_alone(cm, p, "generator", max_tokens=6, ignore_eos=True), k


def test_rows_aligned_without_a_separate_head_leave_their_prefixes(cm, monkeypatch) -> None:
    """Without a separate output head the prefilled rows are aligned to end together (left
    padding) before `Decoder._remember` stores their leading text: a later prompt with the
    same best chunk takes all of it from the cache and answers as alone."""
    from clara.decode import text_prefix
    from clara.prompt import mixed_prompt

    monkeypatch.setattr(cm, "output_head", lambda: None)
    mem = cm.compress(DOCS)
    cache = PrefixCache()
    decoder = Decoder(cm, "generator", prefix_cache=cache)
    params = SamplingParams(max_tokens=4, ignore_eos=True)
    pair = [  # best chunks of different lengths: the shorter row is left-padded
        mixed_prompt(cm, "Where?", [DOCS[0]], [mem[2]]),
        mixed_prompt(cm, "Where?", [DOCS[1] + " " + DOCS[1]], [mem[2]]),
    ]
    assert len(text_prefix(pair[0])) != len(text_prefix(pair[1]))
    decoder.add_many([(p, params, None) for p in pair])
    decoder.remove_many(list(decoder.sequences))
    for lead in (DOCS[0], DOCS[1] + " " + DOCS[1]):
        prompt = mixed_prompt(cm, "Which river runs past the mill?", [lead], [mem[1]])
        before = cache.reused_positions
        seq, first = decoder.add(prompt, params)
        got = [first.token]
        while decoder.sequences:
            got += [c.token for _, c in decoder.step()]
        assert cache.reused_positions - before == len(text_prefix(prompt))
        assert got == tokens_alone(cm, prompt, "generator", max_tokens=4, ignore_eos=True)


def test_no_forward_after_every_last_token(cm, monkeypatch) -> None:
    """A step whose current tokens all end their sequences by length queues no forward for
    tokens nobody will read: an answer of n tokens costs its prefill and n - 1 forwards, and
    its tokens are the ones it gets alone through `generate`."""
    prompt = text_prompt(cm, "Where is Paris?", DOCS[:1])
    decoder = Decoder(cm, None)
    params = SamplingParams(max_tokens=5, ignore_eos=True)
    seq, first = decoder.add(prompt, params)
    forwards = []
    real = decoder._forward
    monkeypatch.setattr(decoder, "_forward", lambda *a, **k: forwards.append(1) or real(*a, **k))
    tokens = [first.token]
    while decoder.sequences:
        tokens += [chunk.token for _, chunk in decoder.step()]
    assert len(tokens) == 5 and len(forwards) == 4
    assert tokens == tokens_alone(cm, prompt, None, max_tokens=5, ignore_eos=True)


def test_penalties_lower_the_logits_of_generated_tokens_as_openai_does() -> None:
    """logit - frequency_penalty * count - presence_penalty * (count > 0), per row; rows
    without penalties are untouched (one greedy batch)."""
    from clara.decode import Sequence

    logits = mx.array([[3.0, 2.9, 2.0, 0.0], [3.0, 2.9, 2.0, 0.0]])
    pen = Sequence(
        SamplingParams(frequency_penalty=0.5, presence_penalty=0.2), None, mx.random.key(0)
    )
    pen.counts = mx.array([1.0, 0.0, 0.0, 0.0])  # token 0 once: 3.0 - 0.5 - 0.2 = 2.3 < 2.9
    plain = Sequence(SamplingParams(), None, mx.random.key(0))
    y, _ = Decoder._sample(None, logits, [pen, plain])
    assert y.tolist() == [1, 0]
    pen.counts = mx.array([0.0, 3.0, 0.0, 0.0])  # token 1 thrice: 2.9 - 1.5 - 0.2; 0 is best
    y, lp = Decoder._sample(None, logits, [pen])
    assert y.tolist() == [0]
    pen.params.presence_penalty, pen.counts = -2.0, mx.array([0.0, 0.0, 1.0, 0.0])  # raises 2
    y, _ = Decoder._sample(None, logits, [pen])
    assert y.tolist() == [2]  # 2.0 - 0.5 + 2.0 = 3.5


def test_penalized_requests_count_every_token_they_generated(cm) -> None:
    """The tiny random model repeats itself greedily; a presence penalty counts each token as
    it is generated (the first too), so the answer repeats less, and is the same alone and
    beside others in a batch."""
    prompt = text_prompt(cm, "Tell me a story", None)
    plain = tokens_alone(cm, prompt, None, max_tokens=24, ignore_eos=True)
    assert len(set(plain)) < len(plain)  # (it does repeat)
    params = SamplingParams(max_tokens=24, ignore_eos=True, presence_penalty=2.0)
    others = text_prompt(cm, "What is the capital of France?", DOCS)
    schedule = {0: [("other", others, SamplingParams(max_tokens=30, ignore_eos=True))],
                1: [("pen", prompt, params)]}  # fmt: skip
    batched = run_batch(Decoder(cm, None), schedule, cancel={})["pen"]
    decoder = Decoder(cm, None)
    seq, first = decoder.add(prompt, params)
    alone = [first.token]
    while not seq.done:
        alone += [c.token for _, c in decoder.step() if c.token is not None]
    assert alone == batched and alone[0] == plain[0]  # nothing generated yet at the first
    assert len(set(alone)) > len(set(plain))


def test_a_penalized_row_leaves_its_neighbours_logits_as_they_are() -> None:
    """Before: the penalty (float32) promoted a bfloat16 batch's logits to float32, so a seeded
    request beside a penalized one got other log-probabilities (and at times another token)
    than alone (a review)."""
    from clara.decode import Sequence

    logits = (mx.random.normal((2, 4096), key=mx.random.key(1)) * 4).astype(mx.bfloat16)
    pen = Sequence(SamplingParams(presence_penalty=1.0), None, mx.random.key(0))
    pen.counts = mx.zeros(4096).at[mx.array([5, 9])].add(1.0)
    for seed in range(20):
        params = SamplingParams(temperature=1.0, seed=seed, logprobs=True)
        alone = Decoder._sample(None, logits[1:], [Sequence(params, None, params.key())])
        beside = Decoder._sample(None, logits, [pen, Sequence(params, None, params.key())])
        assert alone[0].item() == beside[0][1].item()
        assert alone[1][0].item() == beside[1][0][1].item()


def test_json_answers_joining_mid_batch_are_what_they_are_alone(cm) -> None:
    """A grammar reads each token its sequence takes, once and in order, whatever step it
    joined at and whatever its neighbours (free, sampled text): the decode step builds the
    masks while its forward pass runs (a review asked for this check of that order)."""
    from clara.structured import json_grammar

    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}},
              "required": ["n", "ok"], "additionalProperties": False}  # fmt: skip
    grammar = json_grammar(schema)
    prompts = [text_prompt(cm, q, [DOCS[k]]) for k, q in enumerate(["One?", "Two?", "Three?"])]
    kinds = [
        {"max_tokens": 24, "grammar": grammar},
        {"max_tokens": 9, "temperature": 0.8, "seed": 3, "ignore_eos": True},
        {"max_tokens": 24, "grammar": grammar},
    ]
    schedule = {step: [(f"p{i}", prompts[i], SamplingParams(**kinds[i]))]
                for i, step in enumerate((0, 1, 3))}  # fmt: skip
    got = run_batch(Decoder(cm, None), schedule, cancel={})
    for i, p in enumerate(prompts):
        assert got[f"p{i}"] == tokens_alone(cm, p, None, **kinds[i]), i
    for i in (0, 2):  # (held to the schema; a tiny random model may be cut mid-number)
        answer = cm.tokenizer.decode([t for t in got[f"p{i}"] if t != cm.tokenizer.eos_token_id])
        assert answer.replace(" ", "").startswith('{"n":'), answer
