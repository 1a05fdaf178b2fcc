"""Generation from memory vectors (and the uncompressed-text baseline) as a token stream.

Prompts are built by `clara.prompt` (the one layout training and serving share); this module
runs the token loop over them. The CLI and the server consume the same stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.sample_utils import make_sampler

from clara.errors import ContextLengthError
from clara.model import ClaraModel
from clara.prompt import Prompt, memory_prompt, text_prompt


@dataclass
class GenerationChunk:
    """One step of a generation stream."""

    text: str  # new text since the previous chunk (may be "")
    token: int | None
    prompt_positions: int  # positions the generator read (memory slots count as one each)
    generation_tokens: int
    finish_reason: str | None = None  # "stop" | "length" on the last chunk
    prompt_seconds: float = 0.0  # time to first token


def _stop_cut(text: str, stops: Sequence[str]) -> tuple[int | None, int]:
    """(index where a stop string starts, or None; how many trailing chars may start one)."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    if found:
        return min(found), 0
    hold = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                hold = max(hold, n)
                break
    return None, hold


def context_limit(cm: ClaraModel, max_context: int | None = None) -> int:
    """Positions a prompt plus its answer may use: `max_context` or the model's window."""
    return max_context or int(cm.info.config.get("max_position_embeddings", 4096))


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
    prefill_step: int = 512,
    ignore_eos: bool = False,
) -> Iterator[GenerationChunk]:
    """Stream tokens for `prompt`; the last chunk carries `finish_reason`.

    `ignore_eos` keeps decoding to `max_tokens` (benchmarks compare equal lengths).
    """
    limit = context_limit(cm, max_context)
    if prompt.positions >= limit:
        raise ContextLengthError(
            f"prompt needs {prompt.positions} positions but the model's context is {limit}; "
            "shorten the conversation or retrieve fewer chunks"
        )
    max_tokens = max(0, min(max_tokens, limit - prompt.positions))
    stops = [s for s in stop or [] if s]
    eos = set(getattr(cm.tokenizer, "eos_token_ids", None) or [cm.tokenizer.eos_token_id])
    if ignore_eos:
        eos = set()
    sampler = make_sampler(temp=temperature, top_p=top_p)
    if seed is not None:
        mx.random.seed(seed)
    cache = make_prompt_cache(cm.lm)
    tokens = mx.array(prompt.tokens)
    emb = prompt.embeddings

    def forward(lo: int, hi: int) -> mx.array:
        with cm.adapter(adapter):
            return cm.lm(
                tokens[None, lo:hi],
                cache=cache,
                input_embeddings=None if emb is None else emb[None, lo:hi],
            )

    start = time.perf_counter()
    n = prompt.positions
    for lo in range(0, n - 1, prefill_step):
        forward(lo, min(lo + prefill_step, n - 1))
        mx.eval([c.state for c in cache])
    logits = forward(n - 1, n)[:, -1, :]
    generated: list[int] = []
    emitted = 0  # chars of the decoded text already sent
    prompt_seconds = 0.0
    while len(generated) < max_tokens:
        logprobs = logits - mx.logsumexp(logits, keepdims=True)
        token = int(sampler(logprobs).item())
        if not generated:
            prompt_seconds = time.perf_counter() - start
        if token in eos:
            break
        generated.append(token)
        text = cm.tokenizer.decode(generated)
        final = len(generated) == max_tokens
        if not final and text.endswith("\ufffd"):  # incomplete multi-byte character: wait
            text = text[:-1]
        cut, hold = _stop_cut(text, stops) if stops else (None, 0)
        if cut is not None or final:
            reason = "stop" if cut is not None else "length"
            end = cut if cut is not None else len(text)
            yield GenerationChunk(
                text[emitted:end], token, n, len(generated), reason, prompt_seconds
            )
            return
        safe = max(emitted, len(text) - hold)
        yield GenerationChunk(text[emitted:safe], token, n, len(generated), None, prompt_seconds)
        emitted = safe
        with cm.adapter(adapter):
            logits = cm.lm(mx.array([[token]]), cache=cache)[:, -1, :]
    tail = cm.tokenizer.decode(generated)[emitted:] if generated else ""
    reason = "length" if max_tokens == 0 else "stop"
    yield GenerationChunk(tail, None, n, len(generated), reason, prompt_seconds)


def stream_from_memory(
    cm: ClaraModel,
    question: str,
    memories: Sequence[mx.array],
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
