"""Structured output: answers held to JSON, or to a JSON schema, token by token.

A request's format becomes a grammar (`json_grammar`, checked where the request arrives);
each sequence decoding under it has a `Constraint` (an llguidance matcher) that reads every
token the sequence takes and says which tokens may come next (`allowed`): the decoder sets
the others' logits to -inf before sampling. End of sequence is allowed only once the value is
complete, so an answer that ends by itself is valid JSON; one cut by max_tokens is not (its
finish_reason says "length", as OpenAI's does).

JSON is written compactly (`", "` and `": "` between items, no other whitespace): a small
model allowed free whitespace may write newlines until max_tokens.
"""

from __future__ import annotations

import json
import threading
import weakref
from typing import Any

import mlx.core as mx
import numpy as np

from clara.errors import InvalidArgumentError

#: how the JSON is laid out (`whitespace_flexible` off: no runs of newlines)
LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
#: the schema of a JSON object without more said of it (`response_format: json_object`)
ANY_OBJECT: dict[str, Any] = {"type": "object"}

_tokenizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def json_grammar(schema: dict[str, Any] | None) -> str:
    """The grammar of JSON values valid under `schema` (None: any JSON object), or an
    `InvalidArgumentError` saying why the schema cannot be used."""
    from llguidance import LLMatcher

    try:
        grammar = LLMatcher.grammar_from_json_schema(
            json.dumps(ANY_OBJECT if schema is None else schema), overrides=LAYOUT
        )
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"the JSON schema cannot be used: {exc}") from None
    error = LLMatcher.validate_grammar(grammar)
    if error:
        raise InvalidArgumentError(f"the JSON schema cannot be used: {error}")
    return grammar


def _lltokenizer(tokenizer: Any) -> Any:
    """The llguidance view of an mlx-lm (or Hugging Face) tokenizer, made once per tokenizer
    (about 0.4 s for the default model's 49k tokens)."""
    import llguidance.hf

    hf = getattr(tokenizer, "_tokenizer", tokenizer)  # (mlx-lm's TokenizerWrapper)
    with _lock:
        found = _tokenizers.get(hf)
        if found is None:
            found = _tokenizers[hf] = llguidance.hf.from_tokenizer(hf)
        return found


class Constraint:
    """One sequence's grammar state: `consume` each token it takes, `allowed` the next."""

    def __init__(self, tokenizer: Any, grammar: str) -> None:
        from llguidance import LLMatcher

        self.matcher = LLMatcher(_lltokenizer(tokenizer), grammar, log_level=0)
        self.eos = getattr(tokenizer, "eos_token_id", None)
        if self.matcher.is_error():
            raise InvalidArgumentError(
                f"the JSON schema cannot be used: {self.matcher.get_error()}"
            )

    def consume(self, token: int) -> None:
        """Take the token the sequence sampled (allowed by the last `allowed`)."""
        self.matcher.consume_token(int(token))

    def allowed(self, width: int) -> mx.array:
        """(width,) bool: the tokens that may come next. A matcher in error (it cannot be,
        but for a token it never allowed) allows end of sequence only."""
        if self.matcher.is_error():
            keep = np.zeros(width, dtype=bool)
            if self.eos is not None and self.eos < width:
                keep[self.eos] = True
            return mx.array(keep)
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        keep = np.unpackbits(bits, bitorder="little")[:width].astype(bool)
        if keep.size < width:  # (rows of the output head past the tokenizer's vocabulary)
            keep = np.concatenate([keep, np.zeros(width - keep.size, dtype=bool)])
        return mx.array(keep)
