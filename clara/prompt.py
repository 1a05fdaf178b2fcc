"""The generator's prompt layout: one definition for training, evaluation and serving.

A prompt is the base model's chat template rendered over messages in which private-use marker
characters stand for memory blocks (`MEM`) and the learned separator (`SEP`). `layout` turns the
rendered text into token ids plus a slot per position: a real token (`TEXT`), the `<SEP>`
embedding (`SEP_SLOT`), or row `block * n_mem + j` of the memory blocks. `embed_layout` then
builds the input embeddings. Serving (`memory_prompt`) and training (`training.batches`) both go
through these two functions, so they agree token for token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mlx.core as mx
from jinja2.exceptions import TemplateError

from clara.errors import ClaraError, InvalidArgumentError, UnsupportedModeError

if TYPE_CHECKING:
    import numpy as np
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    from clara.model import ClaraModel

SYSTEM_PROMPT = "Answer the question as briefly as possible from the documents."
# The prompts of Apple's reference code, used by checkpoints imported from it (the config's
# `prompt_template`): question answering for Instruct/E2E, paraphrase for Base.
APPLE_QA_SYSTEM = (
    "You are a helpful assistant. Your task is to extract relevant information from provided "
    "documents and to answer to questions as briefly as possible."
)
APPLE_PARAPHRASE_SYSTEM = (
    "You are a helpful assistant. Your task is follow the instructions to paraphrase the "
    "background information."
)
# The paraphrase user turn: the first of the reference's 13 variants, used by clara's stage 1 too.
PARAPHRASE_USER = "Background: {docs} means the same as"
# clara's stage-1 system prompts (`paraphrase_messages`, `qa_pretrain_messages`).
PARAPHRASE_SYSTEM = "Paraphrase the background information."
QA_PRETRAIN_SYSTEM = (
    "Given a document, ask single questions that cover all its key information "
    "and answer them one after the other."
)
MEM = "\ue000"  # private-use characters mark where memory blocks and separators go
SEP = "\ue001"
TEXT, SEP_SLOT = -1, -2  # slot values that are not memory rows


@dataclass
class Prompt:
    """Token ids plus, for memory prompts, the input embeddings that replace them."""

    tokens: list[int]
    embeddings: mx.array | None  # (L, d) or None for a plain text prompt
    # Leading positions read through the token embedding, before the first memory slot or
    # separator (memory prompts; what a prefix cache may key on). An imported checkpoint's
    # memory slots carry its memory-token ids, so the token ids alone cannot say.
    text_len: int | None = None
    # A raw continuation (`/v1/completions`): the answer's text continues the prompt's, so
    # its first token keeps a leading space (a chat answer starts afresh and drops it).
    continues: bool = False

    @property
    def positions(self) -> int:
        return len(self.tokens)


@dataclass
class Layout:
    """A rendered prompt as token ids and, per position, what its input embedding is."""

    tokens: list[int]
    slots: list[int]  # TEXT, SEP_SLOT, or the memory row (block * n_mem + j)
    n_blocks: int


def background(n_blocks: int) -> str:
    """The marker string for `n_blocks` memory blocks, separated by `<SEP>`."""
    return SEP.join([MEM] * n_blocks)


def clean(text: str) -> str:
    """User text with any marker characters removed (they must never reach the template)."""
    return text.replace(MEM, "").replace(SEP, "")


def answer_messages(
    question: str,
    background_text: str | None = None,
    history: Sequence[dict] | None = None,
    system: str | None = None,
    default_system: str | None = SYSTEM_PROMPT,
) -> list[dict]:
    """The question-answering prompt: system, history, `Background: ... Question: ...`.
    Without a `system` of its own, `default_system`; none at all when that is None too (the
    chat template's own default)."""
    system = system or default_system
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [dict(m) for m in history or []]
    user = (
        question
        if background_text is None
        else f"Background:\n{background_text}\n\nQuestion:{question}"
    )
    msgs.append({"role": "user", "content": user})
    return msgs


def memory_answer_messages(question: str, n_blocks: int) -> list[dict]:
    """Training's question-answering prompt over `n_blocks` memory markers (none: no background)."""
    return answer_messages(question, background(n_blocks) if n_blocks else None)


def paraphrase_messages() -> list[dict]:
    """Stage-1 paraphrase prompt: `Background: {mem} means the same as` -> the document."""
    return [
        {"role": "system", "content": PARAPHRASE_SYSTEM},
        {"role": "user", "content": PARAPHRASE_USER.format(docs=background(1))},
    ]


def qa_pretrain_messages() -> list[dict]:
    """Stage-1 QA prompt (the reference's): the answer lists `Question: q\\nAnswer: a` lines."""
    return [
        {"role": "system", "content": QA_PRETRAIN_SYSTEM},
        {"role": "user", "content": f"Background:\n{background(1)}"},
    ]


def render(tokenizer: TokenizerWrapper, messages: list[dict]) -> str:
    """Messages through the chat template, ending with the assistant's generation prompt."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    parts = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(parts) + "\nassistant:"


def encode(tokenizer: TokenizerWrapper, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def layout(tokenizer: TokenizerWrapper, rendered: str, n_mem: int, n_blocks: int) -> Layout:
    """Tokenise `rendered` segment by segment between markers; each `MEM` takes `n_mem` slots.

    Markers beyond `n_blocks` memory blocks are dropped (a block count the caller fixes).
    """
    tokens: list[int] = []
    slots: list[int] = []
    block, text = 0, ""
    for ch in rendered + MEM:  # the sentinel flushes the tail
        if ch not in (MEM, SEP):
            text += ch
            continue
        ids = encode(tokenizer, text)
        text = ""
        tokens += ids
        slots += [TEXT] * len(ids)
        if ch == SEP:
            tokens.append(0)
            slots.append(SEP_SLOT)
        elif block < n_blocks:
            tokens += [0] * n_mem
            slots += [block * n_mem + j for j in range(n_mem)]
            block += 1
    return Layout(tokens, slots, block)


def embed_layout(
    cm: ClaraModel, tokens: mx.array, slots: mx.array, memory: mx.array | None
) -> mx.array:
    """Input embeddings `(..., L, d)`: token rows, `<SEP>`, and rows of `memory` `(M, d)`.

    `slots` has the shape of `tokens`; a slot `>= 0` indexes `memory` (differentiable).
    """
    emb = cm.embed(tokens)  # (..., L, d)
    if memory is not None:
        rows = mx.take(memory.astype(emb.dtype), mx.maximum(slots, 0), axis=0)  # (..., L, d)
        emb = mx.where((slots >= 0)[..., None], rows, emb)
    sep = cm.sep_embedding.reshape(-1).astype(emb.dtype)  # (d,)
    return mx.where((slots == SEP_SLOT)[..., None], sep, emb)


def memory_prompt(
    cm: ClaraModel,
    question: str,
    memories: Sequence[mx.array | np.ndarray],
    history: Sequence[dict] | None = None,
    system: str | None = None,
) -> Prompt:
    """The generator's prompt: memory blocks `(n_mem, d)` placed as input embeddings."""
    if len(memories) == 0:
        return text_prompt(cm, question, None, history, system)
    return _blocks_prompt(cm, question, [], memories, history, system)


def _blocks_prompt(cm: ClaraModel, question, texts, memories, history, system) -> Prompt:
    """`memory_prompt`'s and `mixed_prompt`'s layout: `Background:` the texts (one per line),
    `<SEP>`, then the memory blocks (at least one) as input embeddings: MLX arrays, or
    NumPy ones as a collection's search hits carry them."""
    memories = [m if isinstance(m, mx.array) else mx.array(m) for m in memories]
    for mem in memories:
        if mem.shape != (cm.n_mem, cm.hidden_size):
            raise InvalidArgumentError(
                f"memory block has shape {mem.shape}, expected ({cm.n_mem}, {cm.hidden_size})"
            )
    hist = [{**m, "content": clean(m["content"])} for m in history or []]
    if cm.config.reference:
        lay = reference_layout(cm, question, len(memories), hist, system)
    else:
        lead = "\n".join(clean(t) for t in texts)
        background_text = (lead + SEP if lead else "") + background(len(memories))
        msgs = answer_messages(clean(question), background_text, hist, system)
        lay = layout(cm.tokenizer, render(cm.tokenizer, msgs), cm.n_mem, len(memories))
    memory = mx.concatenate(list(memories), axis=0)  # (n_blocks * n_mem, d)
    emb = embed_layout(cm, mx.array(lay.tokens), mx.array(lay.slots), memory)
    text_len = next((i for i, s in enumerate(lay.slots) if s != TEXT), len(lay.slots))
    return Prompt(lay.tokens, emb, text_len)


def paraphrase_prompt(cm: ClaraModel, memory: mx.array | np.ndarray) -> Prompt:
    """Stage 1's paraphrase prompt over one memory block `(n_mem, d)`, as training lays it
    out: what the generator writes back of a document from its memory alone."""
    if cm.config.reference:
        raise UnsupportedModeError(
            "the paraphrase prompt is clara's own layout, and this checkpoint uses its "
            "reference's (imported)"
        )
    lay = layout(cm.tokenizer, render(cm.tokenizer, paraphrase_messages()), cm.n_mem, 1)
    memory = memory if isinstance(memory, mx.array) else mx.array(memory)
    emb = embed_layout(cm, mx.array(lay.tokens), mx.array(lay.slots), memory)
    return Prompt(lay.tokens, emb)


def mixed_prompt(
    cm: ClaraModel,
    question: str,
    texts: Sequence[str],
    memories: Sequence[mx.array | np.ndarray],
    history: Sequence[dict] | None = None,
    system: str | None = None,
) -> Prompt:
    """The generator's prompt with the best chunks as raw text and the rest as memory blocks:
    `Background:` the texts (one per line), then the blocks after `<SEP>` as in
    `memory_prompt`. Zero-shot for the generator (trained on memory prompts), which reads text
    as well as the bare model does (bench/bench_heldout.py)."""
    if cm.config.reference:
        raise UnsupportedModeError(
            "mode 'mixed' needs clara's own prompt layout, and this checkpoint uses its "
            "reference's (imported): use 'memory' or 'text'"
        )
    if len(memories) == 0:  # the generator reading text alone
        return text_prompt(cm, question, list(texts) or None, history, system)
    return _blocks_prompt(cm, question, texts, memories, history, system)


def reference_layout(
    cm: ClaraModel,
    question: str,
    n_blocks: int,
    history: Sequence[dict] | None = None,
    system: str | None = None,
) -> Layout:
    """The reference's prompt for an imported checkpoint, laid out as the reference does.

    Each block is the checkpoint's memory-token strings plus `<SEP>`; the rendered text is
    tokenized whole (the tokens are in the vocabulary) and block `b` is placed from the first
    memory token on, `n_mem` (+1 with the reference's `sep`) positions per block.
    """
    cfg = cm.config
    extra = set(cfg.added_tokens)

    def scrub(text: str) -> str:
        for t in extra:
            text = text.replace(t, "")
        return text

    docs = ("".join(cfg.mem_tokens) + "<SEP>") * n_blocks
    if cfg.prompt_template == "apple-paraphrase":
        default, user = APPLE_PARAPHRASE_SYSTEM, PARAPHRASE_USER.format(docs=docs)
    else:
        default, user = APPLE_QA_SYSTEM, f"Background:\n{docs}\n\nQuestion:{scrub(question)}"
    user = user.replace(":\\ ", ": ")  # as the reference does
    hist = [{**m, "content": scrub(m["content"])} for m in history or []]
    msgs = [{"role": "system", "content": system or default}, *hist]

    def render_ref(messages: list[dict]) -> str:
        return cm.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )

    try:
        rendered = render_ref([*msgs, {"role": "user", "content": user}])
    except TemplateError as exc:  # the reference's fallback: system text joins the user turn
        if "System role not supported" not in str(exc):
            raise
        rendered = render_ref([*hist, {"role": "user", "content": f"{msgs[0]['content']}\n{user}"}])
    tokens = encode(cm.tokenizer, rendered)
    first = cm.tokenizer.convert_tokens_to_ids(cfg.mem_tokens[0])
    start = tokens.index(first) if n_blocks else 0
    step = cm.n_mem + (1 if cfg.reference_sep else 0)
    slots = [TEXT] * len(tokens)
    for b in range(n_blocks):
        for j in range(cm.n_mem):
            slots[start + b * step + j] = b * cm.n_mem + j
    return Layout(tokens, slots, n_blocks)


def text_twin(messages: Sequence[dict], texts: Sequence[str]) -> list[dict]:
    """`messages` with their memory markers replaced, in order, by `texts` and their `<SEP>`
    markers by newlines: the layout `text_prompt` gives the same documents as raw text."""
    it = iter(texts)

    def fill(content: str) -> str:
        parts = content.replace(SEP, "\n").split(MEM)
        out = parts[0]
        for part in parts[1:]:
            nxt = next(it, None)
            if nxt is None:
                raise ClaraError("text_twin: more memory markers than texts")
            out += clean(nxt) + part
        return out

    out = [{**m, "content": fill(m["content"])} for m in messages]
    if next(it, None) is not None:
        raise ClaraError("text_twin: more texts than memory markers")
    return out


def text_prompt(
    cm: ClaraModel,
    question: str,
    chunks: Sequence[str] | None,
    history: Sequence[dict] | None = None,
    system: str | None = None,
    default_system: str | None = SYSTEM_PROMPT,
) -> Prompt:
    """The same prompt with the chunks' raw text (uncompressed RAG), or no background at all
    (`default_system`: see `answer_messages`)."""
    text = render_text_prompt(cm.tokenizer, question, chunks, history, system, default_system)
    return Prompt(encode(cm.tokenizer, text), None)


def render_text_prompt(
    tokenizer: TokenizerWrapper,
    question: str,
    chunks: Sequence[str] | None,
    history: Sequence[dict] | None = None,
    system: str | None = None,
    default_system: str | None = SYSTEM_PROMPT,
) -> str:
    """`text_prompt`'s rendered text, before tokenisation."""
    background_text = "\n".join(chunks) if chunks else None
    msgs = answer_messages(question, background_text, history, system, default_system)
    return render(tokenizer, msgs)
