"""The CLaRa model: one frozen base LM, three LoRA adapters, learned memory-token embeddings."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import create_causal_mask

from clara import _blas, attention, lanes
from clara.errors import ClaraError, InvalidArgumentError, many
from clara.last_positions import final_hidden
from clara.loader import BaseModel
from clara.lora import (
    AdapterSwitch,
    MultiLoRALinear,
    apply_lora,
    check_adapter,
    drop_merged,
    merge_adapter,
    merged,
    merged_weights,
)
from clara.reference import runtime as reference
from clara.retrieval import DENSE_SCORINGS, READING_MODES, RERANK_DEPTH
from clara.rope import same_positions

COMPRESSION_RATES = (4, 16, 32, 64, 128)
#: How query encodings run their base-weight products (`ClaraModel.set_query_precision`).
QUERY_PRECISIONS = ("float32", "bfloat16")
#: ClaraConfig fields of how a checkpoint is used, not of the memories it makes: an index stays
#: valid when they change, so fingerprints leave them out (`memory_settings`).
USE_SETTINGS = ("dense_scoring", "default_mode")


def memory_settings(config: dict) -> dict:
    """A ClaraConfig dict without its USE_SETTINGS: what a fingerprint hashes."""
    return {k: v for k, v in config.items() if k not in USE_SETTINGS}


#: mlx-lm architectures whose forward is `model` then the plain output projection
_PLAIN_HEADS = ("mlx_lm.models.llama", "mlx_lm.models.qwen2", "mlx_lm.models.qwen3")
FORMAT_VERSION = 1
#: "clara": this project's prompt; "apple-qa" / "apple-paraphrase": the reference's
#: question-answering (Instruct, E2E) and paraphrase (Base) prompts, for imported checkpoints.
PROMPT_TEMPLATES = ("clara", "apple-qa", "apple-paraphrase")


@dataclass
class ClaraConfig:
    """Everything that shapes a CLaRa checkpoint (saved as JSON beside the weights)."""

    compression_rate: int = 16
    doc_max_tokens: int = 256
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.1
    prompt_version: int = 1
    seed: int = 0
    # Deviation from the paper, off by default: subtract a fixed mean memory vector (fitted
    # once when training starts) from every encoder output. For base models whose final-norm
    # states share one dominant component (SmolLM2-135M: norm 50 of 54) it is what lets the
    # generator read memories at all on a small budget (BENCHMARKS.md).
    center_memory: bool = False
    # How retrieval scores chunks with this checkpoint's query adapter (clara.retrieval):
    # "flat" (the paper's flattened cosine; imported and older checkpoints) or "maxsim" (the
    # flattened cosine's nearest re-scored by late interaction: not in the paper).
    dense_scoring: str = "flat"
    # What clara-serve's generator reads when neither the request nor `clara-serve --mode`
    # says (one of READING_MODES): "memory" is CLaRa; adapters whose memories keep too few of
    # a document's names and numbers answer better "mixed" (the shipped small model's do).
    default_mode: str = "memory"
    # Checkpoints imported from Apple's reference (`clara-models import-clara`): its prompt,
    # the special tokens it appended to the base vocabulary (ids vocab_base, vocab_base+1, ...
    # in this order), its memory-token string per memory slot (`<MEM0>`.. or `<MEM>` repeated),
    # and whether its memory blocks sit n_mem+1 positions apart in the prompt (its `sep`).
    prompt_template: str = "clara"
    added_tokens: list[str] = field(default_factory=list)
    mem_tokens: list[str] = field(default_factory=list)
    vocab_base: int = 0
    reference_sep: bool = True

    def __post_init__(self) -> None:
        if self.prompt_template not in PROMPT_TEMPLATES:
            raise ClaraError(
                f"prompt template {self.prompt_template!r} unknown; use one of {PROMPT_TEMPLATES}"
            )
        if self.dense_scoring not in DENSE_SCORINGS:
            raise ClaraError(
                f"dense scoring {self.dense_scoring!r} unknown; use one of {DENSE_SCORINGS}"
            )
        if self.default_mode not in READING_MODES:
            raise ClaraError(
                f"default mode {self.default_mode!r} unknown; use one of {READING_MODES}"
            )
        if self.compression_rate not in COMPRESSION_RATES:
            raise ClaraError(
                f"compression rate {self.compression_rate} not supported; use one of "
                f"{', '.join(map(str, COMPRESSION_RATES))}"
            )
        if (
            self.doc_max_tokens % self.compression_rate
            or self.doc_max_tokens < self.compression_rate
        ):
            raise ClaraError(
                f"doc_max_tokens ({self.doc_max_tokens}) must be a positive multiple of the "
                f"compression rate ({self.compression_rate})"
            )
        if self.reference and self.default_mode == "mixed":
            raise ClaraError(
                "default mode 'mixed' needs clara's own prompt layout: use memory or text"
            )
        if self.reference and (len(self.mem_tokens) != self.n_mem or self.vocab_base <= 0):
            raise ClaraError(
                f"a reference checkpoint needs {self.n_mem} memory tokens and the base vocab size"
            )

    @property
    def dense_rerank(self) -> int:
        """Nearest chunks the index re-scores by MaxSim (0: the flattened cosine alone)."""
        return RERANK_DEPTH if self.dense_scoring == "maxsim" else 0

    @property
    def reference(self) -> bool:
        """True for checkpoints imported from Apple's reference code."""
        return self.prompt_template != "clara"

    @property
    def n_mem(self) -> int:
        return self.doc_max_tokens // self.compression_rate

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClaraConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class _Positions:
    """A stateless stand-in for a KV cache that gives left-padded rows correct positions.

    mlx-lm attention applies RoPE with `cache.offset` and asks the cache for the mask, so an
    offset of -pad per row makes every row's first real token position 0, and the mask hides
    the padding. Pad queries see themselves so no softmax row is empty (NaN).
    """

    #: its masks hide every key past a row's position too (`clara.attention` skips those)
    causal_mask = True

    def __init__(self, left_pad: mx.array) -> None:
        self.left_pad = left_pad  # (B,)
        self.offset = -left_pad

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        return keys, values

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None):
        mask = create_causal_mask(n, window_size=window_size, left_padding=self.left_pad)
        return mask | mx.eye(n, dtype=mx.bool_)  # (B, 1, n, n)


@dataclass
class Encoded:
    """One batched encoder pass: memory states plus what the training losses need."""

    memory: mx.array  # (B, n_mem, d) post-norm last-layer states at the memory positions
    hidden: mx.array  # (B, L, d) all post-norm last-layer states
    text_mask: mx.array  # (B, L) True at the document/query token positions


class ClaraModel(nn.Module):
    """Frozen base LM + `compressor` / `query` / `generator` LoRA adapters + memory tokens."""

    def __init__(self, base: BaseModel, config: ClaraConfig | None = None) -> None:
        super().__init__()
        self.config = config or ClaraConfig()
        self.info = base  # not a child module: parameters live in self.lm
        self.lm = base.model
        self.tokenizer = base.tokenizer
        self.switch = AdapterSwitch()
        mx.random.seed(self.config.seed)
        apply_lora(
            self.lm,
            self.switch,
            self.config.lora_rank,
            self.config.lora_alpha,
            self.config.lora_dropout,
        )
        d = base.hidden_size
        mean, std = self._embedding_stats()
        noise = mx.random.normal((self.config.n_mem + 2, d))
        init = mean + std * noise  # distinct rows near the embedding distribution
        self.mem_embeddings = init[: self.config.n_mem]  # (n_mem, d)
        self.enc_embedding = init[-2:-1]  # (1, d)
        self.sep_embedding = init[-1:]  # (1, d)
        if self.config.center_memory:
            self.memory_center = mx.zeros((d,))  # fitted by fit_memory_center(); never trained
        if self.config.reference:  # the reference's added tokens: tokenizer + vocab rows
            reference.attach(self)
        mx.eval(self.parameters())
        self.freeze()
        self.eval()
        self._fingerprint = self._fresh_fingerprint()
        self._index_fingerprints = (self._fingerprint,)

    def __repr__(self) -> str:  # (nn.Module's lists every layer: a thousand lines)
        c = self.config
        return (
            f"ClaraModel({self.info.model_id!r}, compression_rate={c.compression_rate}, "
            f"n_mem={self.n_mem}, hidden_size={self.hidden_size}, "
            f"fingerprint={self.fingerprint!r})"
        )

    # ---- identity -------------------------------------------------------------------------
    @property
    def n_mem(self) -> int:
        return self.config.n_mem

    @property
    def hidden_size(self) -> int:
        return self.info.hidden_size

    @property
    def fingerprint(self) -> str:
        """Identifies base weights + adapters + memory tokens (the replies' system_fingerprint)."""
        return self._fingerprint

    @property
    def memory_fingerprint(self) -> str:
        """Identifies what the memories depend on: base weights, the compressor and memory
        tokens, the memory settings. A collection records it; a checkpoint that changes only
        its query or generator adapter keeps it, and reads the collections of the one before."""
        return self._index_fingerprints[0]

    def _fresh_fingerprint(self) -> str:
        config = memory_settings(self.config.to_dict())
        blob = json.dumps([self.info.fingerprint, config, "fresh"], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def manifest(self) -> dict:
        """What a collection of this model's memories records (`accepts`: the older
        fingerprints it also reads, never stored)."""
        return {
            "fingerprint": self.memory_fingerprint,
            "accepts": list(self._index_fingerprints[1:]),
            "base_model": self.info.model_id,
            "base_fingerprint": self.info.fingerprint,
            "compression_rate": self.config.compression_rate,
            "doc_max_tokens": self.config.doc_max_tokens,
            "n_mem": self.n_mem,
            "hidden_size": self.hidden_size,
        }

    # ---- adapters -------------------------------------------------------------------------
    def use(self, adapter: str | None) -> None:
        """Make `adapter` (or None: the bare base model) active for the next forward passes."""
        check_adapter(adapter)
        self.switch.check_thread()
        self.switch.active = adapter

    @contextmanager
    def adapter(self, adapter: str | None) -> Iterator[None]:
        previous = self.switch.active
        self.use(adapter)
        try:
            yield
        finally:
            self.switch.active = previous

    def lora_layers(self) -> list[MultiLoRALinear]:
        """Every adapter-wrapped linear layer. Found once (the wrappers are made in `__init__`
        and never replaced): walking the module tree took 3 ms, once per prefill pass."""
        layers = self.__dict__.get("_lora_layers")
        if layers is None:  # a plain attribute, not a child module (nn.Module's __setattr__)
            layers = [m for _, m in self.lm.named_modules() if isinstance(m, MultiLoRALinear)]
            object.__setattr__(self, "_lora_layers", layers)
        return list(layers)

    def pack_base_weights(self, compressor: bool = False) -> int:
        """Pack the frozen float32 base weights of the adapter layers once, for the
        compressor's and query adapter's products (`clara._blas`, kind "f32pack": OpenBLAS
        packed them again on every call, as long as the products of a query encoding took).
        For serving and indexing: training tiles or updates these weights. Skipped where the
        copy would pass `CLARA_PACK_GB` (default 2 GiB) or the CPU lacks AVX-512 and AVX2.
        `compressor`: also the compressor merged into float32 copies of them, packed, where
        room is left (`_pack_compressor`), for processes whose work is compressing
        (clara-index add and rebuild, the indexing service). Returns how many base weights
        are packed."""
        self.switch.check_thread()
        weights = self._base_weights()
        budget = _blas.pack_budget()
        if not weights or sum(w.nbytes for w in weights) > budget:
            return 0
        holder = self.__dict__.get("_packed")
        if holder is None:  # a plain attribute, as in lora_layers
            holder = _blas.DecodeCopies("f32pack")
            object.__setattr__(self, "_packed", holder)
        done = holder.update(weights)
        if done and compressor:
            self._pack_compressor(budget - sum(w.nbytes for w in weights))
        return done

    def _pack_compressor(self, budget: float) -> int:
        """The compressor adapter merged into float32 copies of the base weights it adapts
        (`clara.lora.merge_adapter`, within `CLARA_MERGE_GB`), packed within what is left of
        `CLARA_PACK_GB`: a compression then runs one product per linear instead of the base
        product and the adapter's two (on a 2-core AVX2 EPYC 0.94x the time; BENCHMARKS.md).
        The same function in float32: memories agree with the adapter's path to float32
        rounding (~5e-6 of their largest value), as a batched pass does with a single one.
        Costs the copy and its panels: the loaded default model's resident memory went from
        1.39 to 2.25 GB (2026-12-05). Returns how many
        merged weights it packed (0: compression keeps the adapter's path)."""
        holder = self.__dict__.get("_packed_compressor")
        # the merged copies have the base weights' shapes: checked before any is made
        if sum(w.nbytes for w in self._base_weights()) > budget:
            drop_merged(self, "compressor")
            if holder is not None:
                holder.close()
            return 0
        if merge_adapter(self, "compressor") == 0:
            return 0
        weights = merged_weights(self, "compressor")
        if holder is None:
            holder = _blas.DecodeCopies("f32pack")
            object.__setattr__(self, "_packed_compressor", holder)
        if holder.update(weights) == 0:  # the kernel takes none of these shapes
            drop_merged(self, "compressor")
            return 0
        return len(weights)

    def release_packed(self) -> None:
        """Drop every packed copy (`pack_base_weights`): products take OpenBLAS again."""
        self.switch.check_thread()
        for name in ("_packed", "_packed_compressor"):
            holder = self.__dict__.get(name)
            if holder is not None:
                holder.close()
        drop_merged(self, "compressor")

    @contextmanager
    def _compressor_products(self) -> Iterator[None]:
        """Compressor passes through its packed merged copy where `pack_base_weights` made one,
        refreshed first if the adapter changed since; else the adapter's path."""
        holder = self.__dict__.get("_packed_compressor")
        if not holder:
            yield
            return
        merge_adapter(self, "compressor")  # no-op unless the adapter changed
        if holder.update(merged_weights(self, "compressor")) == 0:
            yield
            return
        with merged(self, "compressor"):
            yield

    def _base_weights(self) -> list[mx.array]:
        """The frozen float32 base weights of the adapter layers (what `pack_base_weights`
        packs)."""
        return [
            m.base.weight
            for m in self.lora_layers()
            if type(m.base) is nn.Linear and m.base.weight.dtype == mx.float32
        ]

    def set_query_precision(self, precision: str) -> str:
        """How the query adapter's products through the base weights run: "float32" (the
        default: exact, like the compressor's) or "bfloat16" (on CPUs with AMX tiles or AVX-512
        BF16: the packed base weights get bfloat16 tiles beside their float32 panels, 2 bytes a
        weight more, and only query encodings read them; measured here, 8 questions encode in 0.56x
        the time, with the same held-out recall: BENCHMARKS.md). Returns the precision in
        effect: "float32" where bfloat16 cannot run (neither, or weights not packed: call
        `pack_base_weights` first)."""
        self.switch.check_thread()
        if precision not in QUERY_PRECISIONS:
            raise InvalidArgumentError(
                f"query precision {precision!r}: choose {' or '.join(QUERY_PRECISIONS)}"
            )
        holder = self.__dict__.get("_packed")
        tiled = False
        if precision == "bfloat16" and holder is not None:
            tiled = _blas.add_base_tiles(self._base_weights()) > 0
        object.__setattr__(self, "_query_tiles", tiled)
        return "bfloat16" if tiled else "float32"

    @property
    def query_precision(self) -> str:
        return "bfloat16" if self.__dict__.get("_query_tiles") else "float32"

    def head_weight(self) -> mx.array | None:
        """The output projection's weight matrix (the input embedding's when they are tied);
        None for a head without one plain array (e.g. quantized or extended heads)."""
        head = getattr(self.lm, "lm_head", None)
        head = getattr(head if head is not None else self.lm.model.embed_tokens, "weight", None)
        return head if isinstance(head, mx.array) else None

    def output_head(self) -> Callable[[mx.array], mx.array] | None:
        """The function from final hidden states (`lm.model`'s output) to logits, where the
        architecture's forward is `lm.model` then that head (clara's own architectures expose
        it as `lm.head`); None otherwise. Prefill uses it to take the logits of each prompt's
        last position only."""
        lm = self.lm
        if type(lm).__module__.startswith("clara.models.") and callable(getattr(lm, "head", None)):
            return lm.head
        if type(lm).__module__ not in _PLAIN_HEADS:
            return None
        if getattr(lm.args, "tie_word_embeddings", False):
            return lm.model.embed_tokens.as_linear
        return getattr(lm, "lm_head", None)

    def set_trainable(self, adapters: Sequence[str], memory_tokens: bool = True) -> None:
        """Freeze everything, then unfreeze the given adapters (and the memory-token rows)."""
        self.freeze()
        keys = [f"lora_{name}.{ab}" for name in adapters for ab in "ab"]
        for layer in self.lora_layers():
            layer.unfreeze(keys=keys, recurse=False)
        if memory_tokens:
            self.unfreeze(keys=["mem_embeddings", "enc_embedding", "sep_embedding"], recurse=False)

    # ---- embeddings -----------------------------------------------------------------------
    def embed(self, tokens: mx.array) -> mx.array:
        """Raw input-embedding rows of the base model (any multiplier is applied inside)."""
        return self.lm.model.embed_tokens(tokens)

    def _embedding_stats(self) -> tuple[mx.array, mx.array]:
        vocab = self.info.config.get("vocab_size", 0) or 1
        ids = mx.random.randint(0, vocab, (min(vocab, 4096),), key=mx.random.key(0))
        rows = self.embed(ids).astype(mx.float32)
        return rows.mean(axis=0), rows.std()

    # ---- encoding -------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], cut: bool = True) -> list[list[int]]:
        """Document/query token ids, truncated to `doc_max_tokens` (`cut=False`: whole, to
        count them first; the reference layout always truncates its own way)."""
        if self.config.reference:  # its own string layout and truncation
            return reference.document_tokens(self.tokenizer, texts, self.config.doc_max_tokens)
        enc = self.tokenizer._tokenizer if hasattr(self.tokenizer, "_tokenizer") else self.tokenizer
        out = enc(list(texts), add_special_tokens=False)["input_ids"]
        return [ids[: self.config.doc_max_tokens] if cut else ids for ids in out]

    def encode_tokens(
        self, token_lists: Sequence[Sequence[int]], adapter: str, memory_only: bool = False
    ) -> Encoded:
        """`<ENC> BOS tokens EOS <MEM0..n-1>` per row, left-padded, through `adapter`.
        `memory_only` (inference): the last block runs for the memory positions alone
        (`clara.last_positions`), and `hidden` is then `memory`."""
        self.switch.check_thread()
        tok = self.tokenizer
        bos = [tok.bos_token_id] if getattr(tok, "bos_token_id", None) is not None else []
        eos = [tok.eos_token_id] if getattr(tok, "eos_token_id", None) is not None else []
        n_mem, head = self.n_mem, 1 + len(bos)
        cut = self.config.doc_max_tokens if self.config.reference else None  # EOS truncated away
        bodies = [  # 0: <ENC> placeholder
            [0] + bos + list(ids) + (eos if cut is None or len(ids) <= cut else [])
            for ids in token_lists
        ]
        width = max(len(b) for b in bodies) + n_mem
        pads = [width - n_mem - len(b) for b in bodies]
        tokens = mx.array([[0] * p + b + [0] * n_mem for p, b in zip(pads, bodies)])  # (B, L)
        left_pad = mx.array(pads)
        pos = mx.arange(width)[None]  # (1, L)
        lengths = mx.array([len(ids) for ids in token_lists])[:, None]
        is_enc = pos == left_pad[:, None]  # (B, L)
        text_mask = (pos >= left_pad[:, None] + head) & (pos < left_pad[:, None] + head + lengths)

        emb = self.embed(tokens)  # (B, L, d)
        enc = self.enc_embedding.astype(emb.dtype)
        emb = mx.where(is_enc[..., None], enc[None], emb)
        mem = mx.broadcast_to(
            self.mem_embeddings.astype(emb.dtype)[None], (len(bodies), n_mem, emb.shape[-1])
        )
        emb = mx.concatenate([emb[:, :-n_mem], mem], axis=1)

        cache = [_Positions(left_pad)] * len(self.lm.layers)
        with self.adapter(adapter), same_positions(cache):
            if memory_only:
                hidden = final_hidden(self.lm.model, emb, cache, n_mem)  # (B, n_mem, d)
            else:
                hidden = self.lm.model(None, cache=cache, input_embeddings=emb)  # (B, L, d)
        if self.config.center_memory:  # every position, so the memory MSE is unchanged
            hidden = hidden - self.memory_center.astype(hidden.dtype)
        return Encoded(memory=hidden[:, -n_mem:], hidden=hidden, text_mask=text_mask)

    @property
    def memory_centered(self) -> bool:
        """True once a `center_memory` model has its center (always True without centering)."""
        return not self.config.center_memory or bool(mx.any(self.memory_center != 0).item())

    def fit_memory_center(self, token_lists: Sequence[Sequence[int]], batch_size: int = 8) -> None:
        """Set the center to the mean compressor output over these documents and positions."""
        self.switch.check_thread()
        if not self.config.center_memory:
            raise ClaraError("fit_memory_center: this model was built without center_memory")
        if not token_lists:
            raise ClaraError("fit_memory_center needs at least one document")
        self.memory_center = mx.zeros_like(self.memory_center)
        total = mx.zeros_like(self.memory_center, dtype=mx.float32)
        for start in range(0, len(token_lists), batch_size):
            mem = self.encode_tokens(token_lists[start : start + batch_size], "compressor").memory
            total = total + mem.astype(mx.float32).sum(axis=(0, 1))
            mx.eval(total)
        center = total / (len(token_lists) * self.n_mem)
        self.memory_center = center.astype(self.mem_embeddings.dtype)
        mx.eval(self.memory_center)

    def _encode_texts(
        self,
        texts: Sequence[str],
        adapter: str,
        batch_size: int,
        ids: Sequence[Sequence[int]] | None = None,
    ) -> mx.array:
        if not texts:
            return mx.zeros((0, self.n_mem, self.hidden_size))
        # all cores (a decode step on this thread may have set one); OpenBLAS gets one where
        # it sees only the adapters' products (or none: the packed compressor is only made
        # beside the packed base weights)
        _blas.for_prefill(packed=bool(self.__dict__.get("_packed")))
        ids = self.tokenize(texts) if ids is None else ids
        # passes side by side on the CPU's cores when they are big enough (clara/lanes.py)
        width = lanes.worth(sum(len(t) + self.n_mem for t in ids))
        batch_size = max(1, min(batch_size, -(-len(ids) // width)))
        batches = length_buckets([len(t) for t in ids], batch_size)
        passes = [
            lambda b=b: self.encode_tokens([ids[i] for i in b], adapter, memory_only=True).memory
            for b in batches
        ]
        out: list[mx.array | None] = [None] * len(ids)
        with attention.encoder_passes():
            results = lanes.run(passes, width)
        for batch, mem in zip(batches, results):
            for j, i in enumerate(batch):
                out[i] = mem[j]
        return mx.stack(out)

    def compress(self, texts: Sequence[str], batch_size: int | None = None) -> mx.array:
        """Documents -> memory vectors `(N, n_mem, d)` with the compressor adapter, in
        length-bucketed forward passes of `batch_size` (default: `compress_batch()`).

        Each text is read up to `config.doc_max_tokens` tokens (what one memory holds: the
        indexer cuts documents into chunks of that size first); the rest is not read. The
        result is computed, so other threads may read it (`np.array(...)`)."""
        self.switch.check_thread()
        many(texts, "texts")
        with self._compressor_products():
            out = self._encode_texts(texts, "compressor", batch_size or compress_batch())
            mx.eval(out)  # (lazy, it could only be computed on this thread)
        return out

    def encode_queries(
        self,
        texts: Sequence[str],
        batch_size: int = 8,
        ids: Sequence[Sequence[int]] | None = None,
    ) -> mx.array:
        """Questions -> query memory vectors `(N, n_mem, d)` with the query adapter (its base
        products in `query_precision`). `ids`: their `tokenize(texts)`, when already made.
        Each question is read up to `config.doc_max_tokens` tokens; the result is computed,
        so other threads may read it."""
        self.switch.check_thread()
        many(texts, "texts")
        if not self.__dict__.get("_query_tiles"):
            out = self._encode_texts(texts, "query", batch_size, ids)
            mx.eval(out)
            return out
        mx.synchronize()  # nothing else in flight reads the base weights on the tiles
        with _blas.bfloat16_base_products():
            out = self._encode_texts(texts, "query", batch_size, ids)
            mx.eval(out)
        return out


def compress_batch() -> int:
    """Chunks per compressor forward pass: measured best is 1 on the CPU (float32 gemms with
    ~2k rows run at half the speed per row of ~270 rows here: BENCHMARKS.md), 8 on a GPU.
    `CLARA_COMPRESS_BATCH` overrides."""
    value = os.environ.get("CLARA_COMPRESS_BATCH", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return 1 if mx.default_device() == mx.cpu else 8


def length_buckets(lengths: Sequence[int], batch_size: int, slack: float = 1.25) -> list[list[int]]:
    """Indices grouped into batches of at most `batch_size` whose longest row is at most
    `slack` x (+8 tokens) the shortest, shortest first: left padding wastes little work."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches:
            last = batches[-1]
            if len(last) < batch_size and lengths[i] <= slack * lengths[last[0]] + 8:
                last.append(i)
                continue
        batches.append([i])
    return batches
