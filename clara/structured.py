"""Structured output: answers held to JSON, or to a JSON schema, token by token.

A request's format becomes a grammar (`json_grammar`, checked where the request arrives, and
`check_grammar` against the model's tokens before its answer starts); each sequence decoding
under it has a `Constraint` (an llguidance matcher) that reads every token the sequence takes
and says which tokens may come next (`allowed`): the decoder sets the others' logits to -inf
before sampling. End of sequence is allowed only once the value is complete, so an answer
that ends by itself is valid JSON; one cut by max_tokens is not (its finish_reason says
"length", as OpenAI's does), nor one cut by a stop string.

JSON is written compactly (`", "` and `": "` between items, no other whitespace): a small
model allowed free whitespace may write newlines until max_tokens.

A schema is at most MAX_SCHEMA_CHARS of JSON, and its grammar is held to `_LIMITS`: a review
found a 10 MB enum that held the server 5.7 s, and a 52-byte pattern that took 1.1 s per token
for every answer in the batch. A grammar that runs past them mid-answer fails its answer
(`Constraint.error`), never a "stop" on invalid JSON.
"""

from __future__ import annotations

import json
import threading
import weakref
from typing import Any

import numpy as np

from clara.errors import ClaraError, GrammarError

__all__ = ["GrammarError", "Constraint", "check_grammar", "json_grammar"]

#: how the JSON is laid out (`whitespace_flexible` off: no runs of newlines)
LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
#: the schema of a JSON object without more said of it (`response_format: json_object`)
ANY_OBJECT: dict[str, Any] = {"type": "object"}
#: the longest schema taken, as JSON text
MAX_SCHEMA_CHARS = 64 * 1024
#: llguidance's limits, tighter than its defaults (lexer fuel: ~14k a ms of a token's mask)
_LIMITS = {
    "initial_lexer_fuel": 200_000, "step_lexer_fuel": 50_000, "step_max_items": 10_000,
    "max_lexer_states": 20_000, "max_grammar_size": 50_000, "verbose_errors": False,
}  # fmt: skip

_tokenizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


#: What a structured-output request says where llguidance is not installed (an upgrade audit:
#: code updated without `make install` answered them with a bare 500)
MISSING = (
    "structured output needs the llguidance package, which is not installed here: pip "
    "install 'llguidance>=1.2' (in clara's checkout, `make install` does it), then restart "
    "the server"
)


def available() -> bool:
    """Whether llguidance can be used: installed, and importable (a broken install is as
    good as none: a re-audit). clara-serve warns at its start when not."""
    try:
        _llguidance()
    except ClaraError:
        return False
    return True


def _llguidance() -> Any:
    """The llguidance package, or a `ClaraError` saying how to install it."""
    try:
        import llguidance
        import llguidance.hf
    except ImportError:
        raise ClaraError(MISSING) from None
    except Exception as exc:  # noqa: BLE001 - installed, broken (its native library)
        raise ClaraError(
            f"structured output needs the llguidance package, which is installed but cannot "
            f"be loaded ({exc}): pip install --force-reinstall 'llguidance>=1.2'"
        ) from None
    return llguidance


def _limits() -> Any:
    return _llguidance().LLParserLimits(**_LIMITS)


def json_grammar(schema: dict[str, Any] | None) -> str:
    """The grammar of JSON values valid under `schema` (None: any JSON object), or a
    `GrammarError` saying why the schema cannot be used."""
    LLMatcher = _llguidance().LLMatcher  # noqa: N806 (the class, as llguidance names it)

    text = json.dumps(ANY_OBJECT if schema is None else schema)
    if len(text) > MAX_SCHEMA_CHARS:
        raise GrammarError(
            f"the JSON schema is {len(text)} characters long: clara takes {MAX_SCHEMA_CHARS} "
            "at most (a small model fills a small schema best)"
        )
    try:
        grammar = LLMatcher.grammar_from_json_schema(text, overrides=LAYOUT)
    except (ValueError, TypeError) as exc:
        raise GrammarError(f"the JSON schema cannot be used: {exc}") from None
    error = LLMatcher.validate_grammar(grammar, limits=_limits())
    if error:
        raise GrammarError(f"the JSON schema cannot be used: {error}")
    return grammar


def check_grammar(tokenizer: Any, grammar: str) -> None:
    """A `GrammarError` for a grammar that cannot be followed with this model's tokens
    within its limits (which `json_grammar`, without them, cannot tell): a matcher made and
    dropped before the answer starts, so that it fails alone, not the requests prefilled
    with it; its first mask too."""
    first = Constraint(tokenizer, grammar)
    first.allowed(1)
    if first.error is not None:
        raise GrammarError(first.error)


def _lltokenizer(tokenizer: Any) -> Any:
    """The llguidance view of an mlx-lm tokenizer (its Hugging Face fast tokenizer), made
    once per tokenizer (about 0.4 s for the default model's 49k tokens)."""
    llguidance = _llguidance()
    hf = getattr(tokenizer, "_tokenizer", tokenizer)  # (mlx-lm's TokenizerWrapper)
    with _lock:
        found = _tokenizers.get(hf)
        if found is None:
            found = _tokenizers[hf] = llguidance.hf.from_tokenizer(hf)
        return found


class Constraint:
    """One sequence's grammar state: `consume` each token it takes, `allowed` the next. A
    grammar that runs past its limits sets `error`: its sequence must fail with it."""

    def __init__(self, tokenizer: Any, grammar: str) -> None:
        self.matcher = _llguidance().LLMatcher(
            _lltokenizer(tokenizer), grammar, log_level=0, limits=_limits()
        )
        self.eos = getattr(tokenizer, "eos_token_id", None)
        self.error: str | None = None
        if self._failed():
            raise GrammarError(self.error)

    def _failed(self) -> bool:
        if self.error is None and self.matcher.is_error():
            self.error = (
                "the answer's JSON schema could not be followed within clara's limits "
                f"({self.matcher.get_error()}): simplify it (fewer or shorter patterns)"
            )
        return self.error is not None

    def consume(self, token: int) -> None:
        """Take the token the sequence sampled (allowed by the last `allowed`)."""
        if not self._failed():
            self.matcher.consume_token(int(token))
            self._failed()

    def allowed(self, width: int) -> np.ndarray:
        """(width,) bool: the tokens that may come next (NumPy: the decoder masks every held
        row of a batch in one MLX op). A failed grammar (`error`) allows one token (end of
        sequence) for the row's place until its sequence is taken out."""
        keep = np.zeros(width, dtype=bool)
        if not self._failed():
            bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
            if not self._failed():  # (the mask itself may run past its fuel)
                found = np.unpackbits(bits, bitorder="little")[:width]
                keep[: found.size] = found  # (rows of the head past the vocabulary: out)
                return keep
        keep[self.eos if self.eos is not None and self.eos < width else 0] = True
        return keep
