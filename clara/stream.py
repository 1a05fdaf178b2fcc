"""What one request sees of a generation: how it samples (`SamplingParams`), the chunks it
is sent (`GenerationChunk`), the text side of its stream (`TextStream`: a streaming
detokenizer, stop strings held back across token boundaries) and the context-length check.
`clara.decode.Decoder` drives these for every request in a batch; `clara.generate` builds the
one-request and many-prompt helpers on top of it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import mlx.core as mx

from clara.errors import ContextLengthError, InvalidArgumentError
from clara.model import ClaraModel
from clara.prompt import Prompt

#: temperatures below this decode greedily
GREEDY_BELOW = 1e-5


@dataclass
class GenerationChunk:
    """One step of a generation stream (one generated token, or the closing chunk)."""

    text: str  # new text since the previous chunk (may be "")
    token: int | None
    prompt_positions: int  # positions the generator read (memory slots count as one each)
    generation_tokens: int
    finish_reason: str | None = None  # "stop" | "length" on the last chunk
    prompt_seconds: float = 0.0  # time to first token
    logprob: float | None = None  # log-probability of `token` (when logprobs were asked)
    cached_positions: int = 0  # of prompt_positions, those the prefix cache held (earlier
    # requests') when it came: OpenAI's usage `cached_tokens`
    top_logprobs: list[tuple[int, float]] | None = None  # best (token, logprob), best first


@dataclass
class SamplingParams:
    """How one request samples and when it stops."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: Sequence[str] | None = None
    ignore_eos: bool = False  # decode to max_tokens (benchmarks compare equal lengths)
    logprobs: bool = False  # report each token's log-probability
    top_logprobs: int = 0  # and this many alternatives
    # OpenAI's: a token's logit is lowered by frequency_penalty times the times this answer
    # has generated it, and by presence_penalty once it has (negative values raise it)
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    #: the grammar the answer is held to (`clara.structured.json_grammar`); None: free text
    grammar: str | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 0:  # (it answered "" without a word)
            raise InvalidArgumentError(f"max_tokens must be >= 0, got {self.max_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise InvalidArgumentError("temperature must be >= 0 and top_p in (0, 1]")
        if self.top_logprobs < 0:
            raise InvalidArgumentError("top_logprobs must be >= 0")
        if not (abs(self.frequency_penalty) <= 2 and abs(self.presence_penalty) <= 2):
            raise InvalidArgumentError("frequency_penalty and presence_penalty must be in [-2, 2]")

    @property
    def greedy(self) -> bool:
        """Temperature 0, or one so small that its inverse overflows float32 (1e-40 drew
        uniformly at random, or always the last token; vLLM's bound too)."""
        return self.temperature < GREEDY_BELOW

    @property
    def penalized(self) -> bool:
        return bool(self.frequency_penalty or self.presence_penalty)

    def key(self) -> mx.array:
        """This request's own random key: sampling does not depend on the batch around it."""
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(4), "little")
        return mx.random.key(seed)


def context_limit(cm: ClaraModel, max_context: int | None = None) -> int:
    """Positions a prompt plus its answer may use: `max_context` or the model's window."""
    return max_context or int(cm.info.config.get("max_position_embeddings", 4096))


def check_context(
    prompt: Prompt, limit: int, advice: str = "shorten the conversation or retrieve fewer chunks"
) -> None:
    if prompt.positions >= limit:
        raise ContextLengthError(  # (OpenAI's first words: clients such as litellm tell a
            f"This model's maximum context length is {limit} tokens (the model's, or the "
            f"server's --max-context). However, the prompt needs {prompt.positions} positions "
            "(its tokens and memory vectors), and the answer at least one more: " + advice
        )  # context-length error by them)


def _whole_tail(tokenizer, tokens: Sequence[int], most: int = 8) -> list[int]:
    """The prompt's last tokens from the start of a character: its last token alone may be
    the end of one ("는" spans tokens), which a detokenizer would read as U+FFFD."""
    for n in range(1, min(most, len(tokens)) + 1):
        if "\ufffd" not in tokenizer.decode(list(tokens[-n:])):
            return list(tokens[-n:])
    return []


def _hold(text: str, stops: Sequence[str]) -> int:
    """How many trailing chars of `text` may be the start of a stop string."""
    hold = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:n]):
                hold = n
                break
    return hold


@dataclass
class TextStream:
    """The text side of one request: tokens in, `GenerationChunk`s out.

    A streaming detokenizer adds each token in O(1) (no re-decoding of the whole answer);
    text that may be the start of a stop string is held back until the next tokens decide.
    """

    detokenizer: object
    eos: set[int]
    stops: list[str]
    max_tokens: int
    prompt_positions: int
    prompt_seconds: float = 0.0
    cached_positions: int = 0
    text: str = ""
    emitted: int = 0  # chars of `text` already sent
    tokens: int = 0
    finish_reason: str | None = None
    _longest: int = field(default=0, repr=False)

    @classmethod
    def create(cls, cm: ClaraModel, params: SamplingParams, prompt: Prompt, limit: int):
        eos = set(getattr(cm.tokenizer, "eos_token_ids", None) or [cm.tokenizer.eos_token_id])
        detok = cm.tokenizer.detokenizer
        detok.reset()
        if prompt.continues:
            # mlx-lm's detokenizers drop the first segment's leading space (right for a chat
            # turn); primed with the prompt's end, " Paris" after "is" keeps its space
            for token in _whole_tail(cm.tokenizer, prompt.tokens):
                detok.add_token(token)
            detok.last_segment  # noqa: B018 (consumes the primer's text)
        stops = [s for s in params.stop or [] if s]
        max_tokens = max(0, min(params.max_tokens, limit - prompt.positions))
        stream = cls(
            detok, set() if params.ignore_eos else eos, stops, max_tokens, prompt.positions
        )
        stream._longest = max((len(s) for s in stops), default=0)
        return stream

    def _chunk(self, text: str, token: int | None, reason: str | None = None) -> GenerationChunk:
        self.finish_reason = reason
        return GenerationChunk(
            text, token, self.prompt_positions, self.tokens, reason, self.prompt_seconds,
            cached_positions=self.cached_positions,
        )  # fmt: skip

    def _finalize(self) -> str:
        """The last text: a character whose bytes the answer did not finish (it ran out of
        tokens inside "한") is dropped, not sent as U+FFFD."""
        held = self.detokenizer.last_segment  # what was complete before
        self.detokenizer.finalize()
        return held + self.detokenizer.last_segment.rstrip("\ufffd")

    def empty(self) -> GenerationChunk:
        """The closing chunk of a request allowed no tokens at all."""
        return self._chunk("", None, "length")

    def accept(self, token: int) -> GenerationChunk:
        """Add one sampled token; the chunk's `finish_reason` says whether the stream ended."""
        if token in self.eos:
            self.text += self._finalize()
            return self._chunk(self.text[self.emitted :], None, "stop")
        self.tokens += 1
        self.detokenizer.add_token(token)
        final = self.tokens >= self.max_tokens
        before = len(self.text)
        self.text += self._finalize() if final else self.detokenizer.last_segment
        if self.stops:  # only the new text and what a stop string may straddle
            start = max(0, before - self._longest + 1)
            found = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
            if found:
                return self._chunk(self.text[self.emitted : min(found)], token, "stop")
        if final:
            return self._chunk(self.text[self.emitted :], token, "length")
        tail = self.text[max(0, len(self.text) - self._longest) :]
        safe = max(self.emitted, len(self.text) - _hold(tail, self.stops))
        chunk = self._chunk(self.text[self.emitted : safe], token)
        self.emitted = safe
        return chunk


def token_bytes(tokenizer, token_id: int) -> bytes:
    """The raw bytes token `token_id` stands for, so that a client joining them gets the text
    back even where a character spans tokens (OpenAI's logprob `bytes`). Byte-level BPE
    vocabularies (GPT-2 style, SmolLM2's) spell each byte as one printable character;
    SentencePiece ones write a space as U+2581 and carry lone bytes as `<0xNN>`; any other
    tokenizer falls back to the token's decoded text."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    kind = type(getattr(tokenizer, "detokenizer", None)).__name__
    if isinstance(piece, str) and kind == "BPEStreamingDetokenizer":
        table = _byte_level_decoder()
        if all(c in table for c in piece):
            return bytes(table[c] for c in piece)
    if isinstance(piece, str) and kind == "SPMStreamingDetokenizer":
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return bytes([int(piece[3:5], 16)])
        return piece.replace("\u2581", " ").encode()
    return tokenizer.decode([int(token_id)]).encode()


def token_text(raw: bytes) -> str:
    """A token's text for a logprobs entry: its bytes as UTF-8, or, for part of a character,
    OpenAI's spelling of them ("bytes:\\xe2\\x98")."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


@functools.cache
def _byte_level_decoder() -> dict[str, int]:
    """Byte-level BPE's character -> byte table: printable Latin-1 bytes stand for
    themselves, the other 68 bytes for the code points from U+0100 up, in byte order.
    (mlx-lm's own is private, `tokenizer_utils._byte_decoder`; tests/test_core.py checks
    they agree.)"""
    printable = set(range(ord("!"), ord("~") + 1))
    printable |= set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table
