"""Evaluation: the reference's answer metrics, retrieval metrics, and the comparison rows.

Answers are normalised as in the reference (`evaluation/evaluate.py`): lowercase, punctuation
and the articles a/an/the removed, whitespace collapsed; "True"/"False" map to yes/no.
- `em`: normalised prediction == normalised gold.
- `f1`: token-level F1 (0 when either side is yes/no/noanswer and they differ).
- `acc` (cover-EM): every gold token appears among the prediction's tokens.
With several gold answers a question takes its best score over them.
"""

from __future__ import annotations

import re
import string
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import mlx.core as mx
import numpy as np

from clara.generate import Answer, batch_generate
from clara.model import ClaraModel
from clara.prompt import Prompt, memory_prompt, mixed_prompt, text_prompt
from clara.retrieval import cosine_scores, maxsim_numpy, maxsim_rerank, recall_precision_at_k
from training.data import QARecord

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
RECALL_KS = (1, 3, 5)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _bool_map(text: str) -> str:
    return {"True": "yes", "False": "no"}.get(text, text)


def _normalized(prediction: str, gold: str) -> tuple[str, str]:
    """Both answers normalised as the reference does; a gold answer that normalises to
    nothing ("A (-)": an article and punctuation) is compared in lower case, punctuation kept
    (it matched every prediction, and an empty one exactly; an evaluation audit)."""
    pred, ref = normalize_answer(_bool_map(prediction)), normalize_answer(_bool_map(gold))
    if not ref and gold.strip():  # words and punctuation marks, each a token: "a ( - )"
        pred, ref = (" ".join(re.findall(r"\w+|[^\w\s]", t.lower())) for t in (prediction, gold))
    return pred, ref


def exact_match(prediction: str, gold: str) -> float:
    pred, ref = _normalized(prediction, gold)
    return float(pred == ref)


def cover_match(prediction: str, gold: str) -> float:
    pred, ref = _normalized(prediction, gold)
    return float(all(t in pred.split() for t in ref.split()))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = _normalized(prediction, gold)
    special = ("yes", "no", "noanswer")
    if (pred in special or ref in special) and pred != ref:
        return 0.0
    common = Counter(pred.split()) & Counter(ref.split())
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred.split()), same / len(ref.split())
    return 2 * precision * recall / (precision + recall)


def answer_scores(prediction: str, golds: Sequence[str]) -> dict[str, float]:
    """{"em", "f1", "acc"} of one prediction, best over the gold answers."""
    return {
        "em": max(exact_match(prediction, g) for g in golds),
        "f1": max(token_f1(prediction, g) for g in golds),
        "acc": max(cover_match(prediction, g) for g in golds),
    }


@dataclass
class Row:
    """One line of the comparison table."""

    name: str
    method: str  # "none" | "text" | "clara" | "clara-none"
    checkpoint: str | None = None
    compression_rate: int | None = None
    n: int = 0
    em: float = 0.0
    f1: float = 0.0
    acc: float = 0.0
    positions: float = 0.0  # mean prompt positions the generator read
    seconds: float = 0.0
    retrieval: dict[str, float] = field(default_factory=dict)  # recall@k / precision@k
    predictions: list[str] = field(default_factory=list, repr=False)

    def to_dict(self, with_predictions: bool = False) -> dict:
        d = asdict(self)
        if not with_predictions:
            d.pop("predictions")
        return d


def score_rows(
    cm: ClaraModel,
    name: str,
    method: str,
    records: Sequence[QARecord],
    prompts: Sequence[Prompt],
    adapter: str | None,
    max_tokens: int = 64,
    progress: Callable | None = None,
    **extra,
) -> Row:
    """Answer every record's prompt (greedy, decoded in batches: `batch_generate`, the same
    tokens as one at a time) and average the scores."""
    start = time.perf_counter()
    answers: list[Answer | None] = [None] * len(records)
    done = batch_generate(cm, prompts, adapter=adapter, max_tokens=max_tokens)
    for i, answer in progress(done, len(records), name) if progress else done:
        answers[i] = answer
    preds, totals, pos = [], Counter(), 0
    for record, answer in zip(records, answers):
        text = answer.text.strip()
        preds.append(text)
        pos += answer.prompt_positions
        totals.update(answer_scores(text, record.answers))
    n = max(len(records), 1)
    return Row(
        name,
        method,
        n=len(records),
        em=totals["em"] / n,
        f1=totals["f1"] / n,
        acc=totals["acc"] / n,
        positions=pos / n,
        seconds=time.perf_counter() - start,
        predictions=preds,
        **extra,
    )


def no_retrieval_row(
    cm: ClaraModel,
    records: Sequence[QARecord],
    max_tokens: int = 64,
    progress: Callable | None = None,
) -> Row:
    """The bare base model answering from its own knowledge."""
    prompts = [text_prompt(cm, r.question, None) for r in records]
    return score_rows(cm, "no retrieval", "none", records, prompts, None, max_tokens, progress)


def text_rag_row(
    cm: ClaraModel,
    records: Sequence[QARecord],
    contexts: Sequence[Sequence[str]],
    max_tokens: int = 64,
    progress: Callable | None = None,
    name: str = "text RAG (uncompressed)",
) -> Row:
    """The bare base model reading the retrieved documents' raw text."""
    prompts = [text_prompt(cm, r.question, list(c)) for r, c in zip(records, contexts)]
    return score_rows(cm, name, "text", records, prompts, None, max_tokens, progress)


@dataclass
class Retrieved:
    """Per question: the memory blocks and texts handed to the generator, and the ranking."""

    memories: list[list[mx.array]]
    texts: list[list[str]]
    ranked: list[list[int]]  # document ids, best first (for recall@k)
    gold: list[list[int]]


def retrieve(
    cm: ClaraModel,
    records: Sequence[QARecord],
    mode: str = "candidates",
    collection: Sequence[str] | None = None,
    top_k: int = 5,
    batch_size: int | None = None,
) -> Retrieved:
    """Compress documents and pick each question's top-k with the query adapter.

    mode "candidates": among the record's own docs; "collection": among `collection` (gold =
    the record's pos_index docs; one not there counts as missed); "gold": the record's gold
    docs, no ranking. A checkpoint that scores by MaxSim re-scores the nearest by it.
    `batch_size`: chunks per compressor pass (default: `clara-index add`'s, the measured best
    for the device) and questions per query-adapter pass (default 16).
    """
    questions = [r.question for r in records]
    if mode == "gold":
        texts = [[r.docs[j] for j in r.pos_index] or r.docs[:1] for r in records]
        table = list(dict.fromkeys(t for ts in texts for t in ts))
        mem = cm.compress(table, batch_size=batch_size)
        where = {t: i for i, t in enumerate(table)}
        return Retrieved([[mem[where[t]] for t in ts] for ts in texts], texts, [], [])
    q = cm.encode_queries(questions, batch_size=batch_size or 16)  # (Q, n_mem, d)
    depth = cm.config.dense_rerank  # the checkpoint's MaxSim re-score, as the index applies
    if mode == "collection":  # (documents alike but for their whitespace: one)
        table = list({_same(t): t for t in reversed(collection or [])}.values())[::-1]
        where = {_same(t): i for i, t in enumerate(table)}  # (by text, whitespace aside)
        mem = cm.compress(table, batch_size=batch_size)  # (N, n_mem, d)
        scores = np.array(cosine_scores(q, mem))  # (Q, N)
        keep = max(top_k, max(RECALL_KS))
        order = np.argsort(-scores, axis=1, kind="stable")[:, : max(keep, depth)]
        if depth:  # the nearest re-scored by MaxSim, as the index ranks (it ranked by the
            qs, ms = _float32(q), _float32(mem)  # flattened cosine only)
            order = [maxsim_rerank(qs[i], row, ms[row])[1] for i, row in enumerate(order)]
        ranked = [[int(j) for j in row[:keep]] for row in order]
        # a gold document not in the collection cannot be found: it counts as missed (MISSING)
        gold = [[where.get(_same(r.docs[j]), MISSING) for j in r.pos_index] for r in records]
    elif mode == "candidates":
        table = list(dict.fromkeys(d for r in records for d in r.docs))
        where = {t: i for i, t in enumerate(table)}
        mem = cm.compress(table, batch_size=batch_size)
        ranked, gold = [], []
        for i, r in enumerate(records):
            ids = [where[d] for d in r.docs]
            if depth:
                s = maxsim_numpy(_float32(q[i])[None], _float32(mem[mx.array(ids)]))[0]
            else:
                s = np.array(cosine_scores(q[i : i + 1], mem[mx.array(ids)]))[0]
            ranked.append([ids[j] for j in np.argsort(-s, kind="stable")])
            gold.append([ids[j] for j in r.pos_index])
    else:
        raise ValueError(f"unknown retrieval mode {mode!r}")
    picks = [row[:top_k] for row in ranked]
    return Retrieved(
        [[mem[j] for j in p] for p in picks], [[table[j] for j in p] for p in picks], ranked, gold
    )


def clara_row(
    cm: ClaraModel,
    records: Sequence[QARecord],
    retrieved: Retrieved,
    name: str,
    checkpoint: str | None,
    max_tokens: int = 64,
    progress: Callable | None = None,
) -> Row:
    """The generator adapter answering from the retrieved memory vectors."""
    prompts = [memory_prompt(cm, r.question, m) for r, m in zip(records, retrieved.memories)]
    return _generator_row(cm, records, retrieved, prompts, name, "clara", checkpoint,
                          max_tokens, progress)  # fmt: skip


def _generator_row(cm, records, retrieved, prompts, name, method, checkpoint, max_tokens, progress):
    """`prompts` answered by the generator adapter, with the retrieval's recall."""
    row = score_rows(
        cm,
        name,
        method,
        records,
        prompts,
        "generator",
        max_tokens,
        progress,
        checkpoint=checkpoint,
        compression_rate=cm.config.compression_rate,
    )
    if retrieved.ranked and any(retrieved.gold):
        row.retrieval = recall_precision_at_k(retrieved.ranked, retrieved.gold, RECALL_KS)
    return row


def mixed_row(
    cm: ClaraModel,
    records: Sequence[QARecord],
    retrieved: Retrieved,
    name: str,
    checkpoint: str | None,
    max_tokens: int = 64,
    progress: Callable | None = None,
) -> Row:
    """clara-serve's "mixed" mode: the generator adapter reading each question's best
    retrieved document as text and the others as memory vectors."""
    prompts = [
        mixed_prompt(cm, r.question, t[:1], m[1:])
        for r, t, m in zip(records, retrieved.texts, retrieved.memories)
    ]
    return _generator_row(cm, records, retrieved, prompts, name, "mixed", checkpoint,
                          max_tokens, progress)  # fmt: skip


def generator_only_row(
    cm: ClaraModel,
    records: Sequence[QARecord],
    name: str,
    checkpoint: str | None,
    max_tokens: int = 64,
    progress: Callable | None = None,
) -> Row:
    """The trained generator with no documents at all (what retrieval adds)."""
    prompts = [memory_prompt(cm, r.question, []) for r in records]
    return score_rows(
        cm,
        name,
        "clara-none",
        records,
        prompts,
        "generator",
        max_tokens,
        progress,
        checkpoint=checkpoint,
        compression_rate=cm.config.compression_rate,
    )


def retrieve_from_index(
    cm: ClaraModel,
    records: Sequence[QARecord],
    name: str,
    root: str | None = None,
    top_k: int = 5,
    batch_size: int = 16,
    mode: str = "hybrid",
    checkpoint: str | None = None,
) -> Retrieved:
    """Top-k from a `clara-index` collection (its stored memory vectors and chunk texts),
    searched `mode` ("hybrid", "dense" or "lexical", as everywhere else).

    The collection must have been built with this checkpoint (its manifest is checked: the
    message names `checkpoint` in the command that recompresses it); a hit counts as gold
    when its chunk text is a piece of one of the record's gold documents (the first one is
    the question's gold: Recall@k says whether its document is in the top k).
    """
    from indexing.pipeline import model_manifest
    from indexing.store import Collection

    q = _float32(cm.encode_queries([r.question for r in records], batch_size=batch_size))
    manifest = model_manifest(cm, checkpoint)
    with Collection.open(root, name, manifest=manifest, readonly=True) as col:
        memories, texts, ranked, gold = [], [], [], []
        for r, vector in zip(records, q):
            hits = col.retrieve(
                r.question, vector, max(top_k, max(RECALL_KS)), mode,
                rerank=cm.config.dense_rerank, memories=True,
            )  # fmt: skip
            ids = [h.chunk_id for h in hits]
            memories.append([mx.array(h.memory) for h in hits[:top_k]])
            texts.append([h.contextual_text for h in hits[:top_k]])
            ranked.append(ids)
            # a hit is gold when its chunk is a piece of a gold document (the index cuts
            # documents its own way), and a question is found at its first gold chunk (Recall@k:
            # a gold document in the top k, however many of its chunks are); none in the top
            # hits: missed (such a question left the denominator)
            golds = [_same(r.docs[j]) for j in r.pos_index]
            found = [h.chunk_id for h in hits if any(_same(h.text) in g for g in golds)]
            gold.append(found[:1] or ([MISSING] if golds else []))
    return Retrieved(memories, texts, ranked, gold)


#: the gold id of a question whose gold document is not among those searched or retrieved:
#: never ranked, so its Recall@k is 0 (skipping it made Recall@5 100% by construction)
MISSING = -1


def _float32(a: mx.array) -> np.ndarray:
    """An MLX array as float32 numpy (numpy takes no bfloat16 buffer)."""
    return np.array(a.astype(mx.float32))


def _same(text: str) -> str:
    """A document's text with its whitespace normalised, to match it across files that
    store it differently (the recipe's collection.txt joins lines)."""
    return " ".join(text.split())
