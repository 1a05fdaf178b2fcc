"""Tokenised training inputs: generator prompts with memory slots, padded into batches.

A generator example is the prompt laid out by `clara.prompt.layout`, the function serving's
`memory_prompt` uses too (same segments, same tokenisation), followed by the answer tokens.
Every position is a real token (`slot == TEXT`), the `<SEP>` embedding (`slot == SEP_SLOT`) or
memory row `slot >= 0` of the example's own memory blocks. Loss is on the answer tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from clara import prompt
from clara.model import ClaraModel
from clara.prompt import TEXT
from clara.rope import same_positions


@dataclass
class GenExample:
    """One generator input: `tokens[:n_prompt]` is the prompt, the rest the answer."""

    tokens: list[int]
    slots: list[int]  # TEXT, SEP_SLOT, or the memory row (block * n_mem + j) per position
    n_prompt: int
    n_blocks: int

    @property
    def n_answer(self) -> int:
        return len(self.tokens) - self.n_prompt


def qa_pretrain_target(questions: Sequence[str], answers: Sequence[str]) -> str:
    return "\n".join(f"Question: {q}\nAnswer: {a}" for q, a in zip(questions, answers))


def _answer_text(tokenizer, messages: list[dict], prompt: str, answer: str) -> str:
    """What the chat template puts after the generation prompt for `answer` (end marker incl.)."""
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": answer}],
            tokenize=False,
            add_generation_prompt=False,
        )
        if full.startswith(prompt):
            return full[len(prompt) :]
    return answer


def _answer_ids(tokenizer, text: str) -> list[int]:
    """Answer token ids, ending with exactly one end-of-sequence token (what stops generation)."""
    ids = prompt.encode(tokenizer, text)
    eos = set(getattr(tokenizer, "eos_token_ids", None) or [tokenizer.eos_token_id])
    for i, t in enumerate(ids):
        if t in eos:
            return ids[: i + 1]
    return ids + [tokenizer.eos_token_id]


def generator_example(
    cm: ClaraModel, messages: list[dict], answer: str | None, n_blocks: int
) -> GenExample:
    """Tokenise `messages` (memory markers included) like `memory_prompt`, then `answer`."""
    tok = cm.tokenizer
    rendered = prompt.render(tok, messages)
    lay = prompt.layout(tok, rendered, cm.n_mem, n_blocks)
    tokens, slots = list(lay.tokens), list(lay.slots)
    n_prompt = len(tokens)
    if answer is not None:
        ids = _answer_ids(tok, _answer_text(tok, messages, rendered, answer))
        tokens += ids
        slots += [TEXT] * len(ids)
    return GenExample(tokens, slots, n_prompt, n_blocks)


@dataclass
class GenBatch:
    """Right-padded generator inputs and the answer positions the loss reads."""

    tokens: mx.array  # (B, L) int32, padding 0
    slots: mx.array  # (B, L) int32: -1 text, -2 <SEP>, else row of the flat (B*K*n_mem) memory
    loss_pos: mx.array  # (B, A) int32: positions whose logits predict the answer tokens
    targets: mx.array  # (B, A) int32
    loss_mask: mx.array  # (B, A) float32: 1 on real answer tokens
    n_tokens: int  # answer tokens in the batch
    blocks: int  # K: memory blocks per example the flat memory is laid out for


def collate_generator(examples: Sequence[GenExample], n_mem: int, blocks: int) -> GenBatch:
    """Pad examples to one batch; memory slots are offset to `b * blocks * n_mem + slot`."""
    B = len(examples)
    L = max(len(e.tokens) for e in examples)
    A = max(max(e.n_answer for e in examples), 1)
    tokens = np.zeros((B, L), np.int32)
    slots = np.full((B, L), TEXT, np.int32)
    loss_pos = np.zeros((B, A), np.int32)
    targets = np.zeros((B, A), np.int32)
    mask = np.zeros((B, A), np.float32)
    for b, e in enumerate(examples):
        n = len(e.tokens)
        tokens[b, :n] = e.tokens
        s = np.asarray(e.slots, np.int32)
        slots[b, :n] = np.where(s >= 0, s + b * blocks * n_mem, s)
        a = e.n_answer
        loss_pos[b, :a] = np.arange(e.n_prompt - 1, n - 1)
        targets[b, :a] = e.tokens[e.n_prompt :]
        mask[b, :a] = 1.0
    return GenBatch(
        mx.array(tokens),
        mx.array(slots),
        mx.array(loss_pos),
        mx.array(targets),
        mx.array(mask),
        int(mask.sum()),
        blocks,
    )


def generator_embeddings(cm: ClaraModel, batch: GenBatch, memory: mx.array | None) -> mx.array:
    """Input embeddings `(B, L, d)`: token rows, `<SEP>`, and memory rows (differentiable).

    `memory` is `(B, K, n_mem, d)` with `K == batch.blocks` (or None when no example has any).
    """
    flat = None if memory is None else memory.reshape(-1, memory.shape[-1])  # (B*K*n_mem, d)
    return prompt.embed_layout(cm, batch.tokens, batch.slots, flat)


def answer_logits(cm: ClaraModel, emb: mx.array, loss_pos: mx.array) -> mx.array:
    """Logits `(B, A, V)` at `loss_pos` for input embeddings `emb` (the active adapter's):
    the head applied at those positions only where the architecture allows it."""
    lm, head = cm.lm, cm.output_head()
    if head is not None:
        with same_positions(None):
            h = lm.model(None, None, emb)  # (B, L, d) post-norm
        return head(mx.take_along_axis(h, loss_pos[..., None], axis=1))  # (B, A, V)
    with same_positions(None):
        logits = lm(None, input_embeddings=emb)  # (B, L, V): any other architecture
    return mx.take_along_axis(logits, loss_pos[..., None], axis=1)


__all__ = [
    "GenBatch",
    "GenExample",
    "answer_logits",
    "collate_generator",
    "generator_embeddings",
    "generator_example",
    "qa_pretrain_target",
]
