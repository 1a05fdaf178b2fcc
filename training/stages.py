"""The training stages: what each one tokenises, trains and computes as its loss.

- `pretrain` (stage 1, salient compressor pretraining): compressor + generator on single
  documents (QA and paraphrase targets); CE + 0.1 x MSE(mean memory, mean document states).
- `instruct` (stage 2, compression instruction tuning): the top-k documents of each question
  compressed with gradient, fresh generator; CE + 0.1 x MSE.
- `joint` (stage 3, end to end): compressor frozen (documents compressed once, without
  gradient); query + generator trained through the straight-through differentiable top-k over
  each question's candidates; generator CE only. Recall/precision@1/3/5 logged.
- `lm`: plain language-model pretraining of the base weights on text (for tiny models trained
  from scratch before the CLaRa stages).

Each loss returns SUMS divided by the counts of the whole optimiser step (`norm`), so gradient
accumulation and data parallelism add gradients exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from clara import prompt
from clara.errors import ClaraError
from clara.lora import ADAPTERS
from clara.model import ClaraModel
from clara.prompt import memory_answer_messages, paraphrase_messages, qa_pretrain_messages
from clara.retrieval import differentiable_topk, maxsim_scores, unit
from clara.rope import same_positions
from training.batches import (
    GenExample,
    answer_logits,
    collate_generator,
    generator_embeddings,
    generator_example,
    qa_pretrain_target,
)
from training.data import PretrainRecord, QARecord
from training.losses import lm_ce_sum, masked_ce_sum, memory_mse

STAGES = ("pretrain", "instruct", "joint", "lm")
RECALL_KS = (1, 3, 5)


@dataclass
class StageConfig:
    """Knobs of the stage losses (reference values as defaults)."""

    top_k: int = 5  # documents per question given to the generator (stages 2-3)
    tau: float = 0.02  # differentiable top-k temperature (stage 3)
    mse_weight: float = 0.1  # weight of the memory MSE (stages 1-2)
    retrieval_weight: float = 0.0  # optional InfoNCE on the query scores (stage 3; off = paper)
    max_lm_tokens: int = 256  # `lm` stage sequence length
    keep_generator: bool = False  # stage 2 continues the loaded generator (paper: re-initialise)
    query_only: bool = False  # stage 3 trains the loaded query adapter on the retrieval loss alone
    corpus_negatives: bool = False  # the retrieval loss ranks every document of the data
    train_compressor: bool = False  # stage 3 compresses its candidates with gradients
    keep_query: bool = False  # stage 3 continues the loaded query adapter
    retrieval_score: str = "flat"  # how the query scores documents: flat cosine or maxsim
    distill_weight: float = 0.0  # stages 1-2: KL to the generator reading the documents as text


@dataclass
class Example:
    """One training example of any stage (fields a stage does not use stay empty)."""

    gen: GenExample | None = None
    docs: list[list[int]] = field(default_factory=list)  # compressor inputs (stages 1-2)
    query: list[int] = field(default_factory=list)  # query-encoder input (stage 3)
    cands: list[int] = field(default_factory=list)  # candidate rows of the doc table (stage 3)
    pos: list[int] = field(default_factory=list)  # gold candidates (positions in `cands`)
    text: list[int] = field(default_factory=list)  # `lm` stage tokens
    teacher: GenExample | None = None  # `gen` with the documents as text (`distill_weight`)


def reset_adapter(cm: ClaraModel, name: str, seed: int = 0) -> None:
    """Re-initialise adapter `name` like a fresh one (A uniform, B zero: a no-op)."""
    keys = mx.random.split(mx.random.key(seed), len(cm.lora_layers()))
    for i, layer in enumerate(cm.lora_layers()):
        a = layer[f"lora_{name}"]["a"]
        bound = 1.0 / math.sqrt(a.shape[0])
        new_a = mx.random.uniform(-bound, bound, a.shape, key=keys[i])
        setattr(layer, f"lora_{name}", {"a": new_a, "b": mx.zeros_like(layer[f"lora_{name}"]["b"])})
    mx.eval(cm.parameters())


def copy_adapter(cm: ClaraModel, src: str, dst: str) -> None:
    """Adapter `dst` becomes a copy of `src` (the query reasoner starts as the compressor)."""
    for layer in cm.lora_layers():
        setattr(layer, f"lora_{dst}", {k: mx.array(v) for k, v in layer[f"lora_{src}"].items()})
    mx.eval(cm.parameters())


def set_trainable(cm: ClaraModel, adapters: Sequence[str], memory_tokens: bool, full: bool) -> None:
    """Unfreeze `adapters` (+ memory-token embeddings); `full` also trains every base weight."""
    cm.set_trainable(list(adapters), memory_tokens=memory_tokens)
    if full:
        cm.lm.unfreeze()
        others = [f"lora_{n}.{ab}" for n in ADAPTERS if n not in adapters for ab in "ab"]
        for layer in cm.lora_layers():
            layer.freeze(keys=others, recurse=False)


class Stage:
    """Base: a stage turns records into examples and a batch of examples into a loss."""

    name = ""
    adapters: tuple[str, ...] = ()
    memory_tokens = True
    allows_lora = True
    allows_full = True

    def __init__(self, cm: ClaraModel, config: StageConfig | None = None) -> None:
        self.cm = cm
        self.config = config or StageConfig()

    def build(self, records: Sequence) -> list[Example]:
        raise NotImplementedError

    def initialize(self, cm: ClaraModel, seed: int) -> None:
        """Adapter surgery at the start of a fresh (not resumed) run."""

    def prepare(self, examples: Sequence[Example], progress: Callable | None = None) -> None:
        """Work done once before training (stage 3 compresses its documents here)."""

    def counts(self, ex: Example) -> dict[str, int]:
        return {"tokens": ex.gen.n_answer if ex.gen else 0, "docs": len(ex.docs), "queries": 1}

    def loss(
        self, examples: Sequence[Example], norm: dict[str, int]
    ) -> tuple[mx.array, dict[str, mx.array]]:
        raise NotImplementedError

    def _tokenize_docs(self, docs: Sequence[str]) -> list[list[int]]:
        """Compressor inputs (an empty document becomes EOS alone)."""
        return [ids if ids else [self.cm.tokenizer.eos_token_id] for ids in self.cm.tokenize(docs)]


class CompressionStage(Stage):
    """Stages 1 and 2: documents compressed WITH gradient, CE + mse_weight x MSE (+
    distill_weight x KL from the generator reading the same documents as text: not in the
    paper)."""

    adapters = ("compressor", "generator")

    def _example(self, messages: list[dict], answer: str, docs: list[list[int]]) -> Example:
        """The example for `messages` (memory markers for `docs`) and `answer`; with
        `distill_weight`, also its teacher: the same prompt with each memory block replaced by
        the text the compressor reads (its `doc_max_tokens`), and the same answer tokens."""
        gen = generator_example(self.cm, messages, answer, len(docs))
        if not self.config.distill_weight:
            return Example(gen=gen, docs=docs)
        texts = [prompt.clean(self.cm.tokenizer.decode(ids)) for ids in docs]
        twin = prompt.text_twin(messages, texts)
        teacher = generator_example(self.cm, twin, answer, 0)
        if teacher.tokens[teacher.n_prompt :] != gen.tokens[gen.n_prompt :]:
            raise ClaraError("distillation: the text prompt changed the answer's tokens")
        return Example(gen=gen, docs=docs, teacher=teacher)

    def _distill(self, examples, batch, logits) -> mx.array:
        """Summed KL(teacher || student) over the answer tokens: the teacher is the generator
        adapter reading the documents as text, without gradient."""
        cm = self.cm
        tb = collate_generator([e.teacher for e in examples], cm.n_mem, 0)
        training = cm.training
        cm.eval()  # the teacher without dropout
        try:
            with cm.adapter("generator"):
                teacher = mx.stop_gradient(
                    answer_logits(cm, generator_embeddings(cm, tb, None), tb.loss_pos)
                )
        finally:
            cm.train(training)
        log_t = teacher - mx.logsumexp(teacher, axis=-1, keepdims=True)
        log_s = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        kl = (mx.exp(log_t) * (log_t - log_s)).sum(axis=-1)  # (B, A)
        return (kl * batch.loss_mask).sum()

    def loss(
        self, examples: Sequence[Example], norm: dict[str, int]
    ) -> tuple[mx.array, dict[str, mx.array]]:
        cm, cfg = self.cm, self.config
        flat = [d for e in examples for d in e.docs]
        enc = cm.encode_tokens(flat, "compressor")  # memory (D, n_mem, d)
        mse = memory_mse(enc.memory, enc.hidden, enc.text_mask).sum()
        K = max(len(e.docs) for e in examples)
        idx, start = [], 0  # (B*K) rows of `flat`; unused blocks point at row 0, never read
        for e in examples:
            n = len(e.docs)
            idx += list(range(start, start + n)) + [0] * (K - n)
            start += n
        memory = mx.take(enc.memory, mx.array(idx), axis=0)  # (B*K, n_mem, d)
        memory = memory.reshape(len(examples), K, cm.n_mem, -1)  # (B, K, n_mem, d)
        batch = collate_generator([e.gen for e in examples], cm.n_mem, K)
        emb = generator_embeddings(cm, batch, memory)
        with cm.adapter("generator"):
            logits = answer_logits(cm, emb, batch.loss_pos)  # (B, A, V)
        ce = masked_ce_sum(logits, batch.targets, batch.loss_mask)
        loss = ce / max(norm["tokens"], 1) + cfg.mse_weight * mse / max(norm["docs"], 1)
        if not cfg.distill_weight:
            return loss, {"ce": ce, "mse": mse}
        kl = self._distill(examples, batch, logits)
        loss = loss + cfg.distill_weight * kl / max(norm["tokens"], 1)
        return loss, {"ce": ce, "mse": mse, "kl": kl}


class PretrainStage(CompressionStage):
    """Stage 1: single documents with QA or paraphrase targets."""

    name = "pretrain"

    def build(self, records: Sequence[PretrainRecord]) -> list[Example]:
        docs = self._tokenize_docs([r.doc for r in records])
        para = qa = None
        out = []
        for r, ids in zip(records, docs):
            if r.kind == "paraphrase":
                para = para or paraphrase_messages()
                out.append(self._example(para, r.doc, [ids]))
            else:
                qa = qa or qa_pretrain_messages()
                out.append(self._example(qa, qa_pretrain_target(r.questions, r.answers), [ids]))
        return out


class InstructStage(CompressionStage):
    """Stage 2: each question with its top-k documents; the generator starts fresh."""

    name = "instruct"

    def build(self, records: Sequence[QARecord]) -> list[Example]:
        k = self.config.top_k
        out = []
        for r in records:
            docs = self._tokenize_docs(r.docs[:k])
            out.append(self._example(memory_answer_messages(r.question, len(docs)), r.answer, docs))
        return out

    def initialize(self, cm: ClaraModel, seed: int) -> None:
        if not self.config.keep_generator:
            reset_adapter(cm, "generator", seed)


class JointStage(Stage):
    """Stage 3: query + generator through the differentiable top-k; compressor frozen (or,
    with `train_compressor`, trained too on the candidates it compresses each step)."""

    name = "joint"
    adapters = ("query", "generator")
    memory_tokens = False  # the frozen compressor reads them too
    allows_full = False  # base weights are the compressor's as well

    def __init__(self, cm: ClaraModel, config: StageConfig | None = None) -> None:
        super().__init__(cm, config)
        if self.config.query_only:
            if not self.config.retrieval_weight:
                raise ClaraError("joint --query-only trains on the retrieval loss: give "
                                 "--retrieval-weight > 0")  # fmt: skip
            self.adapters = ("query",)
        if self.config.train_compressor:
            self.adapters = (*self.adapters, "compressor")
        if self.config.corpus_negatives and not self.config.retrieval_weight:
            raise ClaraError("joint --corpus-negatives shapes the retrieval loss: give "
                             "--retrieval-weight > 0")  # fmt: skip
        # the checkpoint says how its query adapter was trained to score, so the index ranks so
        cm.config.dense_scoring = self.config.retrieval_score
        self.doc_texts: list[str] = []
        self.doc_memory: mx.array | None = None  # (U, n_mem, d), computed once in prepare()
        self._corpus: mx.array | None = None  # (U, n_mem*d) unit rows, for corpus negatives
        self.doc_tokens: list[list[int]] = []  # compressor inputs (train_compressor)

    def build(self, records: Sequence[QARecord]) -> list[Example]:
        table: dict[str, int] = {t: i for i, t in enumerate(self.doc_texts)}
        queries = self.cm.tokenize([r.question for r in records])
        out = []
        for r, q in zip(records, queries):
            cands = [table.setdefault(d, len(table)) for d in r.docs]
            n = min(self.config.top_k, len(cands))
            gen = generator_example(self.cm, memory_answer_messages(r.question, n), r.answer, n)
            out.append(Example(gen=gen, query=q or [0], cands=cands, pos=list(r.pos_index)))
        self.doc_texts = list(table)
        return out

    def initialize(self, cm: ClaraModel, seed: int) -> None:
        if not (self.config.query_only or self.config.keep_query):  # else: continue the loaded one
            copy_adapter(cm, "compressor", "query")

    def prepare(
        self, examples: Sequence[Example], progress: Callable | None = None, batch_size: int = 32
    ) -> None:
        """Compress every candidate document once (eval mode, no gradient, fixed order), as
        `clara-index` does (`ClaraModel.compress`: length buckets, the CPU's lanes), in
        groups of `batch_size` for the progress bar."""
        cm = self.cm
        was_training = cm.training
        cm.eval()
        texts = self.doc_texts
        starts = range(0, len(texts), batch_size)
        chunks = []
        for s in progress(starts, len(starts)) if progress else starts:
            mem = cm.compress(texts[s : s + batch_size])
            mx.eval(mem)
            chunks.append(mem)
        self.doc_memory = mx.concatenate(chunks, axis=0) if chunks else None
        if self.config.train_compressor:
            self.doc_tokens = self._tokenize_docs(texts)
        self._corpus = None
        if self.doc_memory is not None and self.config.corpus_negatives:
            mem = self.doc_memory.astype(mx.float32)
            if self.config.retrieval_score == "maxsim":  # unit vectors, (U, n_mem, d)
                self._corpus = unit(mem)
            else:  # unit flattened rows, (U, n_mem*d)
                self._corpus = unit(mem.reshape(mem.shape[0], -1))
            mx.eval(self._corpus)
        if was_training:
            cm.train()

    def counts(self, ex: Example) -> dict[str, int]:
        return {"tokens": ex.gen.n_answer, "docs": 0, "queries": 1 if ex.pos else 0}

    def loss(
        self, examples: Sequence[Example], norm: dict[str, int]
    ) -> tuple[mx.array, dict[str, mx.array]]:
        cm, cfg = self.cm, self.config
        if self.doc_memory is None:
            raise ClaraError("joint stage: prepare() must compress the documents first")
        B = len(examples)
        q = cm.encode_tokens([e.query for e in examples], "query").memory  # (B, n_mem, d)
        N = max(len(e.cands) for e in examples)
        idx = np.zeros((B, N), np.int32)
        valid = np.zeros((B, N), bool)
        for b, e in enumerate(examples):
            idx[b, : len(e.cands)] = e.cands
            valid[b, : len(e.cands)] = True
        if cfg.train_compressor:  # this step's candidates, compressed with gradients
            rows = sorted({c for e in examples for c in e.cands})
            at = {c: i for i, c in enumerate(rows)}
            fresh = cm.encode_tokens([self.doc_tokens[c] for c in rows], "compressor").memory
            self._refresh_corpus(rows, fresh)
            local = np.vectorize(at.get)(np.where(valid, idx, rows[0]))
            docs = mx.take(fresh, mx.array(local), axis=0)  # (B, N, n_mem, d)
        else:
            docs = mx.stop_gradient(mx.take(self.doc_memory, mx.array(idx), axis=0))
        flat = docs.reshape(B, N, -1).astype(mx.float32)  # (B, N, n_mem*d)
        if cfg.retrieval_score == "maxsim":
            qf = unit(q.astype(mx.float32))  # (B, n_mem, d) unit vectors
            scores = maxsim_scores(qf, docs)  # (B, N) over each question's own candidates
        else:
            qf = unit(q.reshape(B, -1).astype(mx.float32))  # (B, n_mem*d)
            scores = (unit(flat) @ qf[..., None]).squeeze(-1)  # (B, N) cosine of flat vectors
        scores = mx.where(mx.array(valid), scores, -1e4)
        ranking = mx.stop_gradient(mx.argsort(-scores, axis=-1))
        if cfg.query_only:  # no generator pass
            nce = self._retrieval_nce(scores, qf, examples, N)
            loss = cfg.retrieval_weight * nce / max(norm["queries"], 1)
            return loss, {"nce": nce, "ranking": ranking}
        K = max(e.gen.n_blocks for e in examples)
        W = differentiable_topk(scores, K, cfg.tau)  # (B, K, N): hard forward, soft backward
        selected = (W @ flat).reshape(B, K, cm.n_mem, -1)  # (B, K, n_mem, d)
        batch = collate_generator([e.gen for e in examples], cm.n_mem, K)
        emb = generator_embeddings(cm, batch, selected.astype(docs.dtype))
        with cm.adapter("generator"):
            logits = answer_logits(cm, emb, batch.loss_pos)
        ce = masked_ce_sum(logits, batch.targets, batch.loss_mask)
        loss = ce / max(norm["tokens"], 1)
        aux = {"ce": ce, "ranking": ranking}
        if cfg.retrieval_weight:
            nce = self._retrieval_nce(scores, qf, examples, N)
            loss = loss + cfg.retrieval_weight * nce / max(norm["queries"], 1)
            aux["nce"] = nce
        return loss, aux

    def _refresh_corpus(self, rows: list[int], fresh: mx.array) -> None:
        """With corpus negatives, the step's candidates as compressed now replace their rows of
        the corpus memories (a memory bank; this step reads its own candidates fresh, with
        gradients, and masks those rows): otherwise every other document stays as compressed
        before training, and the loss could be lowered by making anything the current
        compressor writes score above anything the old one wrote."""
        if self._corpus is None:
            return
        mem = mx.stop_gradient(fresh).astype(mx.float32)
        if self.config.retrieval_score != "maxsim":
            mem = mem.reshape(mem.shape[0], -1)
        self._corpus[mx.array(rows)] = unit(mem)

    def _retrieval_nce(self, scores, qf, examples, N) -> mx.array:
        """The InfoNCE sum over each question's candidates, or with `corpus_negatives` over
        every document of the data (as retrieval ranks a whole collection)."""
        if self._corpus is None:
            return _info_nce_sum(scores / self.config.tau, examples, N)
        if self.config.retrieval_score == "maxsim":
            every = maxsim_scores(qf, self._corpus)  # (B, U), inputs unit already
        else:
            every = qf @ self._corpus.T  # (B, U) cosine against every document
        if self.config.train_compressor:
            # the candidates as compressed this step (with gradients), then every other
            # document of the data from the memory bank (`_refresh_corpus`)
            own = np.zeros(every.shape, bool)
            pos = np.zeros((len(examples), N + every.shape[1]), bool)
            for b, e in enumerate(examples):
                own[b, e.cands] = True
                pos[b, e.pos] = True
            every = mx.where(mx.array(own), -1e4, every)
            logits = mx.concatenate([scores, every], axis=-1) / self.config.tau
            return _nce_from_mask(logits, pos)
        gold = np.zeros(every.shape, bool)
        for b, e in enumerate(examples):
            gold[b, [e.cands[p] for p in e.pos]] = True
        return _nce_from_mask(every / self.config.tau, gold)


def _info_nce_sum(logits: mx.array, examples: Sequence[Example], N: int) -> mx.array:
    """-log(sum_pos softmax) per question with gold documents (the reference's retrieval loss)."""
    pos = np.zeros((len(examples), N), bool)
    for b, e in enumerate(examples):
        pos[b, e.pos] = True
    return _nce_from_mask(logits, pos)


def _nce_from_mask(logits: mx.array, pos: np.ndarray) -> mx.array:
    """-log(sum over `pos` columns of softmax(logits)), summed over rows that have any."""
    has = mx.array(pos.any(axis=1).astype(np.float32))
    num = mx.logsumexp(mx.where(mx.array(pos), logits, -1e9), axis=-1)
    den = mx.logsumexp(logits, axis=-1)
    return ((den - num) * has).sum()


class LMStage(Stage):
    """Language-model pretraining of the base weights (no adapter) on plain text."""

    name = "lm"
    adapters = ()
    memory_tokens = False
    allows_lora = False

    def build(self, texts: Sequence[str]) -> list[Example]:
        tok = self.cm.tokenizer
        enc = tok._tokenizer if hasattr(tok, "_tokenizer") else tok
        ids = enc(list(texts), add_special_tokens=False)["input_ids"]
        bos = [tok.bos_token_id] if getattr(tok, "bos_token_id", None) is not None else []
        n = self.config.max_lm_tokens
        return [Example(text=(bos + list(i) + [tok.eos_token_id])[:n]) for i in ids]

    def counts(self, ex: Example) -> dict[str, int]:
        return {"tokens": len(ex.text) - 1, "docs": 0, "queries": 0}

    def loss(
        self, examples: Sequence[Example], norm: dict[str, int]
    ) -> tuple[mx.array, dict[str, mx.array]]:
        L = max(len(e.text) for e in examples)
        tokens = np.zeros((len(examples), L), np.int32)
        mask = np.zeros((len(examples), L), np.float32)
        for b, e in enumerate(examples):
            tokens[b, : len(e.text)] = e.text
            mask[b, : len(e.text)] = 1
        tokens = mx.array(tokens)
        with self.cm.adapter(None), same_positions(None):
            logits = self.cm.lm(tokens)
        ce = lm_ce_sum(logits, tokens, mx.array(mask))
        return ce / max(norm["tokens"], 1), {"ce": ce}


STAGE_CLASSES: dict[str, type[Stage]] = {
    "pretrain": PretrainStage,
    "instruct": InstructStage,
    "joint": JointStage,
    "lm": LMStage,
}


def make_stage(name: str, cm: ClaraModel, config: StageConfig | None = None) -> Stage:
    if name not in STAGE_CLASSES:
        raise ClaraError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}")
    return STAGE_CLASSES[name](cm, config)
