"""What an imported reference checkpoint changes at run time.

The reference (apple/ml-clara `modeling_clara.py`) appends special tokens (`<MEM…>`, `<AE>`,
`<ENC>`, `<SEP>`) to the base tokenizer, resizes the embedding and output matrices to match,
and tokenizes whole strings such as `<ENC><s>{document}</s>` with them. Here the base model's
tokenizer gets the same tokens (so ids and splitting agree), and its embedding and output head
get the reference's rows for them (`added_rows`), leaving the base rows untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import mlx.core as mx
import mlx.nn as nn
from tokenizers import AddedToken

from clara.errors import CheckpointError

if TYPE_CHECKING:  # clara.model imports this module
    from clara.model import ClaraModel

ENC_TOKEN, SEP_TOKEN = "<ENC>", "<SEP>"


class AddedEmbedding(nn.Module):
    """The base embedding for ids < `n_base`, `added_rows` for the reference's added tokens."""

    def __init__(self, base: nn.Module, n_base: int, n_added: int, dims: int) -> None:
        super().__init__()
        self.base = base
        self.n_base = n_base
        self.added_rows = mx.zeros((n_added, dims))

    def __call__(self, ids: mx.array) -> mx.array:
        rows = self.base(mx.minimum(ids, self.n_base - 1))  # (..., d)
        k = self.added_rows.shape[0]
        added = self.added_rows.astype(rows.dtype)[mx.clip(ids - self.n_base, 0, k - 1)]
        return mx.where((ids >= self.n_base)[..., None], added, rows)

    def as_linear(self, x: mx.array) -> mx.array:
        """Tied output head: logits over the base rows, then the added rows (the resized vocab)."""
        logits = self.base.as_linear(x)[..., : self.n_base]
        return mx.concatenate([logits, x @ self.added_rows.astype(x.dtype).T], axis=-1)


class AddedHead(nn.Module):
    """An untied output head with the reference's rows for its added tokens appended."""

    def __init__(self, base: nn.Module, n_base: int, n_added: int, dims: int) -> None:
        super().__init__()
        self.base = base
        self.n_base = n_base
        self.added_rows = mx.zeros((n_added, dims))

    def __call__(self, x: mx.array) -> mx.array:
        logits = self.base(x)[..., : self.n_base]
        return mx.concatenate([logits, x @ self.added_rows.astype(x.dtype).T], axis=-1)


def hf_tokenizer(tokenizer: Any) -> Any:
    """The Hugging Face tokenizer inside mlx-lm's `TokenizerWrapper` (or the tokenizer itself)."""
    return getattr(tokenizer, "_tokenizer", tokenizer)


def add_tokens(tokenizer: Any, added: Sequence[str], vocab_base: int) -> list[int]:
    """Give `tokenizer` the reference's special tokens with ids `vocab_base, vocab_base+1, …`.

    Idempotent: a tokenizer that already has them (same ids) is left as it is.
    """
    hf = hf_tokenizer(tokenizer)
    want = list(range(vocab_base, vocab_base + len(added)))
    vocab = hf.get_vocab()
    if all(t in vocab for t in added):
        ids = [vocab[t] for t in added]
    else:
        if len(hf) != vocab_base:
            raise CheckpointError(
                f"the base tokenizer has {len(hf)} tokens but the checkpoint was made for one "
                f"with {vocab_base}: load it with the base model it was imported for"
            )
        tokens = [AddedToken(t, special=True, normalized=False) for t in added]
        hf.add_tokens(tokens, special_tokens=True)
        ids = [int(i) for i in hf.convert_tokens_to_ids(list(added))]
    if ids != want:
        raise CheckpointError(f"reference tokens got ids {ids}, expected {want}")
    return ids


def attach(cm: ClaraModel) -> None:
    """Extend `cm`'s tokenizer, embedding and output head with the checkpoint's added tokens.

    The rows start at zero; `load_checkpoint` fills them (`added_rows` in the weights file).
    """
    cfg = cm.config
    add_tokens(cm.tokenizer, cfg.added_tokens, cfg.vocab_base)
    inner = cm.lm.model
    n, d = len(cfg.added_tokens), cm.hidden_size
    if not isinstance(inner.embed_tokens, AddedEmbedding):
        inner.embed_tokens = AddedEmbedding(inner.embed_tokens, cfg.vocab_base, n, d)
    head = getattr(cm.lm, "lm_head", None)
    if head is not None and not isinstance(head, AddedHead):
        cm.lm.lm_head = AddedHead(head, cfg.vocab_base, n, d)


def document_tokens(tokenizer: Any, texts: Sequence[str], doc_max_tokens: int) -> list[list[int]]:
    """The reference's document tokens, without its `<ENC> BOS` head and `EOS` tail.

    The reference tokenizes `<ENC>{bos}{text}{eos}` as one string and keeps its first
    `doc_max_tokens + 3` tokens, so a text keeps up to `doc_max_tokens + 1` tokens and loses its
    EOS when longer than `doc_max_tokens` (`ClaraModel.encode_tokens` adds EOS back only then).
    """
    hf = hf_tokenizer(tokenizer)
    bos, eos = hf.bos_token, hf.eos_token
    if bos is None or eos is None:
        raise CheckpointError("the reference layout needs a tokenizer with BOS and EOS tokens")
    head = hf.convert_tokens_to_ids([ENC_TOKEN, bos])
    eos_id = hf.convert_tokens_to_ids(eos)
    out = []
    for text in texts:
        ids = list(hf.encode(f"{ENC_TOKEN}{bos}{text}{eos}", add_special_tokens=False))
        if ids[:2] != head or ids[-1] != eos_id:
            raise CheckpointError(f"unexpected reference tokenization of {text[:40]!r}")
        out.append(ids[2:-1][: doc_max_tokens + 1])
    return out
