"""Generation from memory vectors (and the uncompressed-text baseline) as a token stream.

Prompts are built by `clara.prompt` (the one layout training and serving share); the token
loop is `clara.decode.Decoder` (mlx-lm style: the next forward is queued before the current
token is read; several requests decode as one batch); what one request sees of it (sampling
parameters, chunks, the text stream) is `clara.stream`. This module holds `generate`, a
decoder of one, and `batch_generate`, greedy answers to many prompts decoded together. The
CLI, the evaluation and the server consume the same `GenerationChunk` stream.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from clara.decode import Decoder, SequencesFailed
from clara.kv import PREFILL_STEP
from clara.model import ClaraModel
from clara.prompt import Prompt, memory_prompt, text_prompt
from clara.stream import GenerationChunk, SamplingParams


def generate(
    cm: ClaraModel,
    prompt: Prompt,
    *,
    adapter: str | None = "generator",
    max_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: Sequence[str] | None = None,
    max_context: int | None = None,
    prefill_step: int = PREFILL_STEP,
    ignore_eos: bool = False,
    logprobs: bool = False,
    top_logprobs: int = 0,
    grammar: str | None = None,
) -> Iterator[GenerationChunk]:
    """Stream tokens for `prompt`; the last chunk carries `finish_reason`.

    `ignore_eos` keeps decoding to `max_tokens` (benchmarks compare equal lengths);
    `grammar` holds the answer to JSON (`clara.structured.json_grammar(schema)`).
    """
    params = SamplingParams(
        max_tokens, temperature, top_p, seed, stop, ignore_eos, logprobs, top_logprobs,
        grammar=grammar,
    )  # fmt: skip
    decoder = Decoder(cm, adapter, max_context=max_context, prefill_step=prefill_step)
    seq, first = decoder.add(prompt, params)
    yield first
    try:
        while first.finish_reason is None:
            for _, chunk in _step(decoder):
                yield chunk
                if chunk.finish_reason is not None:
                    return
    finally:
        decoder.remove(seq)


@dataclass
class Answer:
    """A finished generation of `batch_generate`."""

    text: str
    prompt_positions: int
    tokens: int
    finish_reason: str


def batch_generate(
    cm: ClaraModel,
    prompts: Sequence[Prompt],
    *,
    adapter: str | None = "generator",
    max_tokens: int = 256,
    max_batch: int = 8,
    max_context: int | None = None,
) -> Iterator[tuple[int, Answer]]:
    """Greedy answers to many prompts, decoded together: up to `max_batch` at a time, and a
    finished answer's place goes to the next prompt (continuous batching, as in clara-serve).
    Yields `(index, answer)` as each finishes. Prompts that start together are prefilled as
    one batch (`Decoder.add_many`); every answer is token for token the one `generate` gives
    it alone (tests/test_batching.py)."""
    decoder = Decoder(cm, adapter, max_context=max_context)
    params = SamplingParams(max_tokens=max_tokens)
    texts: dict[int, list[str]] = {}
    todo = iter(enumerate(prompts))

    def finish(i: int, chunk: GenerationChunk) -> tuple[int, Answer]:
        text = "".join(texts.pop(i))
        return i, Answer(text, chunk.prompt_positions, chunk.generation_tokens, chunk.finish_reason)

    try:
        while True:
            room = max_batch - len(decoder.sequences)
            group = [(prompt, params, i) for i, prompt in itertools.islice(todo, room)]
            for seq, first in decoder.add_many(group) if group else []:
                texts[seq.tag] = [first.text]
                if first.finish_reason is not None:
                    yield finish(seq.tag, first)
            if not decoder.sequences:
                if not group:
                    return
                continue  # all finished at their first token: admit the next ones
            for seq, chunk in _step(decoder):
                texts[seq.tag].append(chunk.text)
                if chunk.finish_reason is not None:
                    yield finish(seq.tag, chunk)
    finally:
        for seq in list(decoder.sequences):
            decoder.remove(seq)


def stream_from_memory(
    cm: ClaraModel,
    question: str,
    memories: Sequence[mx.array | np.ndarray],
    *,
    history: Sequence[dict] | None = None,
    system: str | None = None,
    **kwargs,
) -> Iterator[GenerationChunk]:
    """Answer `question` from retrieved memory blocks with the generator adapter."""
    return generate(cm, memory_prompt(cm, question, memories, history, system), **kwargs)


def stream_from_text(
    cm: ClaraModel,
    question: str,
    chunks: Sequence[str] | None,
    *,
    history: Sequence[dict] | None = None,
    system: str | None = None,
    adapter: str | None = None,
    **kwargs,
) -> Iterator[GenerationChunk]:
    """Uncompressed baseline (or no retrieval with `chunks=None`) on the bare base model."""
    prompt = text_prompt(cm, question, chunks, history, system)
    return generate(cm, prompt, adapter=adapter, **kwargs)


def _step(decoder: Decoder) -> list:
    """`decoder.step()`, a request's own error raised as it is (not as the server's
    `SequencesFailed`, which lets the others go on)."""
    try:
        return decoder.step()
    except SequencesFailed as part:
        raise part.errors[0][1] from None
