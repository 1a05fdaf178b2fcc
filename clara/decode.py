"""The token loop: continuous batching of requests that share one adapter.

    decoder = Decoder(cm, "generator")
    seq, first = decoder.add(prompt, SamplingParams(max_tokens=32))   # prefill, first token
    pairs = decoder.add_many([(prompt, params, tag), ...])            # several, one batch
    while decoder.sequences:
        for seq, chunk in decoder.step(): ...                        # one batched forward

New requests are prefilled together (their own input embeddings; the shared prompt prefix
computed once or taken from a `PrefixCache`, the rest right-padded into one batched forward),
each samples and sends its first token, then their KV caches join the running batch
before the next decode step (`join_caches`: all rows prefilled since the last step are
copied in at once). As in mlx-lm's `generate_step`, the next forward is queued
(`mx.async_eval`) before the current tokens are read, so detokenizing and streaming overlap
the model. Each request samples with its own random key, so no neighbour
draws from a seeded request's random numbers. Its logits are the same to float rounding alone
or in a batch, not always bit for bit: a prefill product of at most `CLARA_THIN_ROWS` rows
reads the merged weights' float16 copies, a wider one their float32 panels, and the prefix
cache and neighbours change how wide a prompt's last products are; a sampled token near a tie
can then differ (seen with temperature 1.5; greedy tokens did not in an engine review's 12
prompts of 48 tokens). Decoding uses the adapter merged into
a copy of the base weights (`clara.lora.merged`): no LoRA matmuls per token. On Linux CPUs
the decode products run through clara's thin-matmul kernel (`clara._blas`), which reads
float16 (or int8: `CLARA_DECODE_WEIGHTS`) copies of those decode-only weights.

Why not mlx-lm's `BatchGenerator`: its requests are token lists (`insert` takes prompts as
token ids, or caches already filled), and a CLaRa prompt is input embeddings with memory
vectors in place of tokens, prefilled in one batched pass with the others; each request here
samples with its own random key, which one batch-wide sampler does not give; and the prompt
prefix cache and merged-adapter weights above sit inside the loop. mlx-lm's KV caches
(`BatchKVCache`), its top-p and its async-eval pattern are used as they are.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import BatchKVCache, KVCache, make_prompt_cache
from mlx_lm.sample_utils import apply_top_p

from clara import _blas, lanes
from clara.attention import decode_steps, fused_from, fused_passes, fused_takes
from clara.attention import usable as attention_usable
from clara.kv import MIN_PREFIX, PREFILL_STEP, PrefixCache, join_caches, shared_text, text_prefix
from clara.lora import check_adapter, merge_adapter, merged, merged_weights
from clara.model import ClaraModel
from clara.prompt import Prompt
from clara.rope import same_positions
from clara.stream import (
    GenerationChunk,
    SamplingParams,
    TextStream,
    check_context,
    context_limit,
)
from clara.structured import Constraint, GrammarError

#: On the CPU a prefill chunk holds at most this many attention scores per prompt (heads x
#: chunk rows x positions so far, float32: 4 MB), down to MIN_CHUNK rows: the softmax makes
#: several passes over them on one core, from cache below a few MB and from memory above. A
#: text prompt of five chunks (1325 positions) on the default model prefilled in 2.7-3.4 s in
#: chunks of 512 rows, 2.4 s of 256, 2.2-2.3 s of 128 and 2.2-2.3 s under this budget (2^21:
#: 2.4-2.6 s, 2^18: 2.4 s); one-off timings, 2026-12-02.
PREFILL_SCORES = 1 << 20
MIN_CHUNK = 64


def draw(logprobs: mx.array, params: SamplingParams, key: mx.array) -> mx.array:
    """Sample one token from a (1, V) row of log-probabilities: temperature first, then the
    top_p nucleus of the tempered distribution (vLLM's and transformers' order; mlx-lm's
    sampler cuts the nucleus before tempering, so temperature 2 with top_p 0.8 drew only
    from the few tokens of the untempered nucleus)."""
    # float32: in float16 logits, 1 / 2e-5 times a log-probability below -1.3 overflows
    scaled = logprobs.astype(mx.float32) * (1 / params.temperature)
    if params.top_p < 1.0:
        scaled = apply_top_p(scaled - mx.logsumexp(scaled, axis=-1, keepdims=True), params.top_p)
    return mx.random.categorical(scaled, key=key)


class SequencesFailed(Exception):
    """A decode step in which some sequences' own work (their text, their logprobs) raised:
    those left the batch, the others went on. `chunks` is what `step` returns for the others,
    `errors` the failed sequences with their errors."""

    def __init__(self, chunks: list, errors: list) -> None:
        super().__init__(f"{len(errors)} of the batch's sequences failed: {errors[0][1]!r}")
        self.chunks = chunks
        self.errors = errors


@dataclass(eq=False)
class Sequence:
    """One request in the batch."""

    params: SamplingParams
    text: TextStream
    key: mx.array
    fresh: bool = True  # its current token was sent at prefill, not by a step
    lp: tuple = ()  # logprob info of its current token (lazy), when it asked for it
    counts: mx.array | None = None  # (V,) times each token was generated, if penalized
    constraint: Constraint | None = None  # the grammar its answer is held to, if any
    done: bool = False
    tag: object = field(default=None, repr=False)  # the caller's (e.g. the server's job)


def _penalty(s: Sequence) -> mx.array:
    """What a penalized sequence's logits lose, from the tokens it has generated: OpenAI's
    presence and frequency penalties count the whole answer so far (mlx-lm's logits
    processors count its last 20 tokens by default), so they are computed here."""
    p = s.params
    return p.frequency_penalty * s.counts + p.presence_penalty * (s.counts > 0)  # (float32)


def _runs(n: int, parts: int) -> list[list[int]]:
    """Indices 0..n-1 cut into `parts` consecutive runs whose lengths differ by at most 1."""
    return [list(range(g * n // parts, (g + 1) * n // parts)) for g in range(parts)]


class Decoder:
    """Requests decoding together through one adapter (None: the bare base model)."""

    def __init__(
        self,
        cm: ClaraModel,
        adapter: str | None,
        *,
        max_context: int | None = None,
        prefill_step: int = PREFILL_STEP,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        check_adapter(adapter)
        cm.switch.check_thread()
        self.cm = cm
        self.adapter = adapter
        self.limit = context_limit(cm, max_context)
        self.prefill_step = prefill_step
        self.prefix_cache = prefix_cache
        self.sequences: list[Sequence] = []
        self._cache: list[BatchKVCache] | None = None
        self._y: mx.array | None = None  # (B,) each sequence's current token
        self._joining: list[tuple[list[BatchKVCache], mx.array]] = []  # prefilled, not joined
        self._copies = _blas.DecodeCopies()

    def _decode_weights(self) -> list[mx.array]:
        """The weights only decoding reads: the merged adapter copies (for the bare model, its
        own copies of the base weights) and the output embedding; never the base weights
        themselves, which the compressor and query adapters read."""
        head = self.cm.head_weight()
        weights = [head] if head is not None else []  # other heads keep float32
        return weights + merged_weights(self.cm, self.adapter)

    # ---- the model -----------------------------------------------------------------------------
    def _forward(self, tokens: mx.array, cache: list, embeddings: mx.array | None = None):
        with merged(self.cm, self.adapter), same_positions(cache):
            return self.cm.lm(tokens, cache=cache, input_embeddings=embeddings)

    def _hidden(self, tokens: mx.array, cache: list, embeddings: mx.array | None = None):
        """The final hidden states of a forward (`lm.model`), without the output head."""
        with merged(self.cm, self.adapter), same_positions(cache):
            return self.cm.lm.model(tokens, cache, embeddings)

    def _sample(self, logits: mx.array, seqs: list[Sequence]) -> tuple[mx.array, tuple]:
        """Next token per row of `logits` (B, V), and (logprob, top ids, top logprobs).
        Each sampled row draws with its request's own key, so a seeded request draws the same
        random numbers alone or in any batch (mlx-lm's samplers draw from the global key); its
        logits are the same to rounding (the module's docstring says when not bit for bit)."""
        if any(s.counts is not None for s in seqs):  # frequency and presence penalties
            # in the logits' own dtype: a float32 row would promote the whole batch, and a
            # seeded neighbour (bfloat16 logits) would sample otherwise than alone
            own = [
                row if s.counts is None else row - _penalty(s).astype(row.dtype)
                for row, s in zip(logits, seqs)
            ]
            logits = mx.stack(own)
        if any(s.constraint is not None for s in seqs):  # structured output: the tokens its
            keep = np.ones(logits.shape, dtype=bool)  # grammar does not allow next are out,
            for i, s in enumerate(seqs):  # each held row's, in one op (a per-row op cost
                if s.constraint is not None:  # the batch's step more: per-op overhead)
                    keep[i] = s.constraint.allowed(logits.shape[-1])
            logits = mx.where(mx.array(keep), logits, mx.array(-mx.inf, dtype=logits.dtype))
        wants_lp = any(s.params.logprobs or s.params.top_logprobs for s in seqs)
        # Greedy rows take the argmax of the logits: no normalizing (the vocabulary-wide
        # logsumexp, MLX's scalar exp per logit, was ~9% of a batch-8 decode step), and the
        # same token alone or beside sampled rows.
        y = mx.argmax(logits, axis=-1)
        if not wants_lp and all(s.params.greedy for s in seqs):
            return y, ()
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        if not all(s.params.greedy for s in seqs):
            rows = []
            for i, s in enumerate(seqs):
                if s.params.greedy:
                    rows.append(y[i : i + 1])
                    continue
                s.key, sub = mx.random.split(s.key)
                rows.append(draw(logprobs[i : i + 1], s.params, sub))
            y = mx.concatenate(rows)
        if not wants_lp:
            return y, ()
        chosen = mx.take_along_axis(logprobs, y[:, None], axis=-1)[:, 0]
        k = max(s.params.top_logprobs for s in seqs)
        if k == 0:
            return y, (chosen,)
        top = mx.argpartition(-logprobs, kth=k - 1, axis=-1)[:, :k]
        return y, (chosen, top, mx.take_along_axis(logprobs, top, axis=-1))

    @staticmethod
    def _annotate(chunk: GenerationChunk, s: Sequence) -> None:
        """Put the logprobs of the chunk's token on it (for requests that asked)."""
        lp, s.lp = s.lp, ()
        if not lp or chunk.token is None:
            return
        chunk.logprob = float(lp[0].item())
        if s.params.top_logprobs and len(lp) == 3:
            pairs = sorted(zip(lp[1].tolist(), lp[2].tolist()), key=lambda p: -p[1])
            chunk.top_logprobs = [(int(t), float(v)) for t, v in pairs[: s.params.top_logprobs]]

    @staticmethod
    def _keep_lp(seqs: list[Sequence], lp: tuple) -> None:
        """Hand each sequence that asked its row of the (lazy) logprob arrays."""
        if lp:
            for i, s in enumerate(seqs):
                if s.params.logprobs or s.params.top_logprobs:
                    s.lp = tuple(a[i] for a in lp)

    # ---- requests --------------------------------------------------------------------------
    def add(
        self, prompt: Prompt, params: SamplingParams, tag: object = None
    ) -> tuple[Sequence, GenerationChunk]:
        """Prefill `prompt`, sample and send its first token, join the batch.

        Returns (sequence, first chunk); a first chunk with a finish_reason never joins.
        """
        return self.add_many([(prompt, params, tag)])[0]

    def add_many(
        self, requests: list[tuple[Prompt, SamplingParams, object]]
    ) -> list[tuple[Sequence, GenerationChunk]]:
        """Prefill requests together, sample and send each its first token, join the batch.

        `requests` are (prompt, params, tag). Their prompts run as one batched forward: the
        text prefix they share is prefilled once (or taken from the prefix cache) and copied
        to every row, the rest is right-padded to the longest and then moved to the left
        (`join_caches`, when they join the batch), and each row's last position gives its
        first logits. On a multi-core CPU they are split into parts prefilled side by side
        (`_prefill_parts`): on 2 cores 8 memory prompts of ~125 positions prefill in 0.81x the
        time of one batched pass (bench/bench_burst.py; clara-serve cuts its passes at
        `--prefill-tokens`).
        Returns [(sequence, first chunk)] in the order given.
        """
        for prompt, _, _ in requests:
            check_context(prompt, self.limit)
        start = time.perf_counter()
        out: list = [None] * len(requests)
        todo: list[tuple[int, Prompt, Sequence]] = []
        for i, (prompt, params, tag) in enumerate(requests):
            text = TextStream.create(self.cm, params, prompt, self.limit)
            if self.prefix_cache is not None:  # (what earlier requests left: before any of
                text.cached_positions = self.prefix_cache.held(text_prefix(prompt))  # these)
            seq = Sequence(params, text, params.key(), tag=tag)
            if params.grammar is not None:
                seq.constraint = Constraint(self.cm.tokenizer, params.grammar)
            if text.max_tokens == 0:
                seq.done = True
                out[i] = (seq, text.empty())
            else:
                todo.append((i, prompt, seq))
        if not todo:
            return out
        _blas.for_prefill()
        merge_adapter(self.cm, self.adapter)  # no-op unless the adapter changed
        weights = self._decode_weights()
        self._copies.update(weights)  # int8/float16 copies the thin kernel reads
        # prefill: packed panels, not OpenBLAS; not the output embedding, which a prefill reads
        # for each prompt's last position only
        head = self.cm.head_weight()
        self._copies.add_panels([w for w in weights if w is not head])
        with self._attention():
            parts = self._prefill_parts([p for _, p, _ in todo], [s for _, _, s in todo])
        took = time.perf_counter() - start
        joins = []  # joined once every part is through: a part that raises leaves none in
        # the batch (before, the parts before it stayed, decoding for requests told they failed)
        for rows, cache, y, lp in parts:
            self._remember([todo[r][1] for r in rows], cache)  # copies queued, not waited for
            seqs = [todo[r][2] for r in rows]
            # a pass takes from the cache only the text all its rows share: of what the cache
            # held of a row, what its pass took (more was counted for a row beside others)
            shared = shared_text([todo[r][1] for r in rows])
            for seq in seqs:
                seq.text.cached_positions = min(seq.text.cached_positions, shared)
            self._keep_lp(seqs, lp)
            joined = []
            for row, (seq, token) in enumerate(zip(seqs, y.tolist())):
                if seq.constraint is not None and seq.constraint.error is not None:
                    raise GrammarError(seq.constraint.error)  # (`check_grammar` makes it rare)
                seq.text.prompt_seconds = took
                chunk = seq.text.accept(int(token))
                self._annotate(chunk, seq)
                out[todo[rows[row]][0]] = (seq, chunk)
                if chunk.finish_reason is not None:
                    seq.done = True
                else:
                    joined.append(row)
            if not joined:
                continue
            if len(joined) < len(rows):
                keep = mx.array(joined)
                for c in cache:
                    c.filter(keep)
                    if c._right_padding is not None:
                        c._right_padding = c._right_padding[keep]
                y = y[keep]
            joins.append(([seqs[r] for r in joined], cache, y))
        for seqs, cache, y in joins:
            self._join(seqs, cache, y)
        return out

    def _remember(self, prompts: list[Prompt], cache: list[BatchKVCache]) -> None:
        """Each prompt's leading text into the prefix cache, from its row of a prefilled batch
        (the rows of passes prefilled side by side get there this way too)."""
        if self.prefix_cache is None:
            return
        lefts = cache[0].left_padding.tolist()
        for i, (prompt, lo) in enumerate(zip(prompts, lefts)):
            rows = []
            for c in cache:
                row = KVCache()
                row.keys, row.values = c.keys[i : i + 1, :, lo:], c.values[i : i + 1, :, lo:]
                rows.append(row)
            self.prefix_cache.store(text_prefix(prompt), rows)

    def _attention(self) -> contextlib.AbstractContextManager:
        """Where clara's fused attention kernel runs (clara/attention.py), prompt rows at
        positions `prefill_step` and on take it: the rows of long prompts, whose attention is
        most of their prefill (prompts that long are never split across lanes, whose waits it
        would serialize). A row's attention path depends on its position only, alone or beside
        others, from the prefix cache or not (its products' width may not: the module's
        docstring)."""
        config = self.cm.info.config
        heads = int(config.get("num_attention_heads") or 1)
        head_dim = int(config.get("head_dim") or int(config.get("hidden_size") or 0) // heads)
        if not (attention_usable() and fused_takes(head_dim)):
            return contextlib.nullcontext()
        return fused_passes(self.prefill_step)

    def _prefill_parts(self, prompts: list[Prompt], seqs: list[Sequence]) -> list[tuple]:
        """Prefill `prompts` and sample each its first token: [(rows, cache, tokens, logprobs)]
        of consecutive parts, evaluated. On a multi-core CPU the prompts are split into parts
        prefilled side by side, one lane each (`clara.lanes`: every op of a pass but the
        matmuls runs on one core, so one batched pass leaves the others idle much of the
        time); each row gets the same bits either way (the batched-vs-alone tests)."""
        width = min(len(prompts), lanes.worth(sum(p.positions for p in prompts)))
        if width > 1 and any(p.positions > self.prefill_step for p in prompts):
            width = 1  # long prompts prefill in several evaluated chunks: one pass
        if width <= 1:
            cache, logits = self._prefill(prompts)
            y, lp = self._sample(logits, seqs)
            mx.eval(y, *lp)
            return [(list(range(len(prompts))), cache, y, lp)]
        self._shared_prefix(prompts, count=False)  # computed (and cached) once, before the lanes
        groups = _runs(len(prompts), width)
        caches: dict[int, list[BatchKVCache]] = {}

        def build(g: int) -> list:
            rows = groups[g]
            cache, logits = self._prefill([prompts[r] for r in rows], evaluate=False)
            y, lp = self._sample(logits, [seqs[r] for r in rows])
            caches[g] = cache
            return [y, list(lp)]

        # Only the sampled tokens are evaluated side by side: every cache array is computed on
        # the way (asking for the caches too made MLX's evaluation of the two lanes take 1.7x
        # as long), so the check below evaluates nothing new.
        done = lanes.run([lambda g=g: build(g) for g in range(width)], width)
        mx.eval([[c.state[:2] for c in cache] for cache in caches.values()])
        return [(groups[g], caches[g], y, tuple(lp)) for g, (y, lp) in enumerate(done)]

    def _shared_prefix(
        self, prompts: list[Prompt], extend: bool = True, count: bool = True
    ) -> tuple[int, list[KVCache] | None]:
        """(positions, KV of one row) of the leading text all `prompts` share: what the prefix
        cache holds of it, the rest prefilled here once (`extend`; else only the cached part)
        and stored; (0, None) without a prefix cache or when they share fewer than MIN_PREFIX
        positions. `count`: the positions taken from the cache count as reused, once a row."""
        if self.prefix_cache is None:
            return 0, None
        first, shared = text_prefix(prompts[0]), shared_text(prompts, at_least=0)
        reused, cache = self.prefix_cache.lookup(first[:shared])
        if count:
            self.prefix_cache.count(reused, len(prompts))
        if not extend or reused == shared or shared < MIN_PREFIX:
            return reused, cache
        cache = cache or make_prompt_cache(self.cm.lm)
        tokens = mx.array(first[reused:shared])[None]
        emb = prompts[0].embeddings
        for lo, hi in self._chunks(reused, shared - reused):
            part = None if emb is None else emb[None, reused + lo : reused + hi]
            self._forward(tokens[:, lo:hi], cache, part)
            mx.eval([c.state for c in cache])
        self.prefix_cache.store(first[:shared], cache)
        return shared, cache

    def _chunks(self, start: int, width: int) -> list[tuple[int, int]]:
        """`[lo, hi)` prefill chunks of `width` positions after `start` cached ones: at most
        `prefill_step` rows each, and on the CPU fewer where a prompt's attention scores would
        pass PREFILL_SCORES. The cuts depend on the positions only, never on the batch: a
        prompt is cut the same way alone and beside others."""
        heads = int(self.cm.info.config.get("num_attention_heads") or 1)
        room = PREFILL_SCORES / heads if mx.default_device() == mx.cpu else math.inf
        fused = fused_from()  # rows from here on take the fused kernel: it holds no scores
        out, lo = [], 0
        while lo < width:
            seen = start + lo  # positions before the chunk: rows * (seen + rows) <= room
            if room == math.inf or (fused is not None and seen >= fused):
                rows = width
            else:
                rows = int((math.sqrt(seen * seen + 4 * room) - seen) / 2)
            hi = min(width, lo + max(MIN_CHUNK, min(self.prefill_step, rows)))
            if fused is not None and seen < fused:
                hi = min(hi, fused - start)  # no chunk straddles the kernel's first row
            out.append((lo, hi))
            lo = hi
        return out

    def _prefill(
        self, prompts: list[Prompt], evaluate: bool = True
    ) -> tuple[list[BatchKVCache], mx.array]:
        """The batch cache of `prompts` up to their last positions, and the logits there (B, V).
        `evaluate=False` (prompts of at most `prefill_step` positions) leaves it all to the
        caller to evaluate: one graph, built on the caller's stream."""
        B = len(prompts)
        # a pass on a lane takes what is cached (`_prefill_parts` prefilled the prompts' shared
        # prefix before the lanes): extending it would evaluate in the middle of a lane's graph
        reused, prefix = self._shared_prefix(prompts, extend=evaluate)
        layers = len(self.cm.lm.layers)
        cache = [BatchKVCache([0] * B) for _ in range(layers)]
        if prefix is not None:
            for c, p in zip(cache, prefix):
                c.keys = mx.repeat(p.keys[..., :reused, :], B, axis=0)
                c.values = mx.repeat(p.values[..., :reused, :], B, axis=0)
                c.offset = mx.full((B,), reused, dtype=mx.int32)
                c._idx = reused
        # Everything after the shared prefix, right-padded. Where the architecture's output
        # head can be called apart (`ClaraModel.output_head`), the last positions are part of
        # it and their logits come from their hidden states alone; otherwise they run as one
        # more (B, 1) forward afterwards (the logits of every position would cost a
        # vocabulary-wide product per position).
        head = self.cm.output_head()
        tail = 0 if head is not None else 1
        lengths = [p.positions - tail - reused for p in prompts]  # >= 1 with a head
        width = max(lengths)
        use_emb = any(p.embeddings is not None for p in prompts)

        def rows(p: Prompt, lo: int, hi: int, pad: int) -> tuple[list[int], mx.array | None]:
            toks = p.tokens[lo:hi] + [0] * pad
            if not use_emb:
                return toks, None
            emb = (
                p.embeddings[lo:hi]
                if p.embeddings is not None
                else self.cm.embed(mx.array(p.tokens[lo:hi]))
            )
            if pad:
                emb = mx.concatenate([emb, mx.zeros((pad, emb.shape[-1]), emb.dtype)])
            return toks, emb

        lasts: list[mx.array | None] = [None] * B  # each row's final hidden state (with a head)
        if width > 0:
            for c in cache:
                c.prepare(right_padding=[width - n for n in lengths])
            built = [rows(p, reused, reused + n, width - n) for p, n in zip(prompts, lengths)]
            tokens = mx.array([t for t, _ in built])  # (B, width)
            emb = mx.stack([e for _, e in built]) if use_emb else None  # (B, width, d)
            for lo, hi in self._chunks(reused, width):
                part = None if emb is None else emb[:, lo:hi]
                if head is None:  # the logits are never evaluated, so never computed
                    self._forward(tokens[:, lo:hi], cache, part)
                    if evaluate:
                        mx.eval([c.state for c in cache])
                    continue
                h = self._hidden(tokens[:, lo:hi], cache, part)
                for i, n in enumerate(lengths):
                    if lo <= n - 1 < hi:
                        lasts[i] = h[i, n - 1 - lo]
                if evaluate:
                    mx.eval([c.state for c in cache], [x for x in lasts if x is not None])
        # The right padding stays where it is until the rows join the batch (`join_caches`
        # moves it to the left as it copies them in).
        if head is not None:  # (B, 1, d) as in a decode step: MLX sends a single 2-D row to
            # gemv, past the thin kernel, so one prompt would get other logits than a batch
            with merged(self.cm, self.adapter):
                return cache, head(mx.stack(lasts)[:, None])[:, 0]
        # the last positions go at the same index
        cache = [c if c._right_padding is None else join_caches([c]) for c in cache]
        last = [rows(p, p.positions - 1, p.positions, 0) for p in prompts]
        tokens = mx.array([t for t, _ in last])  # (B, 1)
        emb = mx.stack([e for _, e in last]) if use_emb else None
        logits = self._forward(tokens, cache, emb)
        return cache, logits[:, -1, :]

    def _join(self, seqs: list[Sequence], cache: list[BatchKVCache], y: mx.array) -> None:
        """Queue prefilled rows to join the batch: they are copied in at the next step (or
        removal), together with any others prefilled meanwhile (`join_caches`)."""
        self._joining.append((cache, y))
        self.sequences.extend(seqs)

    def _merge(self) -> None:
        """Join the queued rows to the running batch, in the order they were added."""
        if not self._joining:
            return
        parts = ([(self._cache, self._y)] if self._cache is not None else []) + self._joining
        self._joining = []
        self._cache = [join_caches(list(layer)) for layer in zip(*(c for c, _ in parts))]
        self._y = mx.concatenate([y for _, y in parts]) if len(parts) > 1 else parts[0][1]

    def clear(self) -> list[Sequence]:
        """Take every sequence out and drop the batch's caches, computing nothing (after a
        step that raised, when how far each got is not known); returns them."""
        left, self.sequences = self.sequences, []
        for seq in left:
            seq.done = True
        self._cache, self._y, self._joining = None, None, []
        return left

    def remove(self, seq: Sequence) -> None:
        """Take `seq` out of the batch (finished, cancelled, or its client left)."""
        self.remove_many([seq])

    def remove_many(self, seqs: list[Sequence]) -> None:
        """Take `seqs` out of the batch with one filter of its caches (requests that end at
        the same step: a burst's all do), or none when the batch empties."""
        for seq in seqs:
            seq.done = True
        gone = {id(seq) for seq in seqs}
        if not any(id(s) in gone for s in self.sequences):
            return
        self._merge()
        keep = [j for j, s in enumerate(self.sequences) if id(s) not in gone]
        self.sequences = [self.sequences[j] for j in keep]
        if not self.sequences:
            self._cache, self._y = None, None
            return
        rows = mx.array(keep)
        for c in self._cache:
            c.filter(rows)
        self._y = self._y[rows]

    # ---- one decode step -------------------------------------------------------------------
    def step(self) -> list[tuple[Sequence, GenerationChunk]]:
        """One batched forward; returns a chunk for each sequence whose token it read.

        Finished sequences leave the batch here."""
        if not self.sequences:
            return []
        self._merge()
        _blas.for_decode()
        seqs = list(self.sequences)
        tokens = None  # the current tokens, once read
        if all(not s.fresh and s.text.tokens + 1 >= s.text.max_tokens for s in seqs):
            y, lp = self._y, ()  # every current token is its sequence's last: no next forward
        else:
            with decode_steps():
                logits = self._forward(self._y[:, None], self._cache)[:, -1, :]  # (B, V)
            for i, s in enumerate(seqs):  # the current tokens count (still lazy: no wait)
                if s.params.penalized:
                    counts = mx.zeros(logits.shape[-1]) if s.counts is None else s.counts
                    s.counts = counts.at[self._y[i]].add(1.0)
            if any(s.constraint is not None for s in seqs):
                # each grammar reads its current token before it says what may follow: the
                # forward starts first, so that they read and build their masks meanwhile
                mx.async_eval(logits)
                tokens = self._y.tolist()
                for s, token in zip(seqs, tokens):
                    if s.constraint is not None:
                        s.constraint.consume(token)
            y, lp = self._sample(logits, seqs)
            mx.async_eval(y, *lp)  # runs while the current tokens are detokenized and sent
        if tokens is None:  # (a batch holding grammars read them already)
            mx.eval(self._y)  # waits with the GIL released (the server's event loop runs)
            tokens = self._y.tolist()
        self._y = y
        out, errors = [], []
        for i, s in enumerate(seqs):
            if s.fresh:  # its token was sent when it was prefilled
                s.fresh = False
                continue
            if s.constraint is not None and s.constraint.error is not None:
                errors.append((s, GrammarError(s.constraint.error)))  # (its answer, cut: not
                continue  # a "stop" on invalid JSON)
            try:  # (its own text and logprobs: an error there is its request's alone)
                chunk = s.text.accept(tokens[i])
                self._annotate(chunk, s)
            except Exception as exc:  # noqa: BLE001 - handed over in SequencesFailed
                errors.append((s, exc))
                continue
            out.append((s, chunk))
        self._keep_lp(seqs, lp)
        self.remove_many(
            [s for s, chunk in out if chunk.finish_reason is not None] + [s for s, _ in errors]
        )
        if errors:
            raise SequencesFailed(out, errors)
        return out
