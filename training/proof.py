"""Proof that learning works: a tiny model trained FROM SCRATCH on a synthetic world, through
the three CLaRa stages (optionally after language-model pretraining of the base), answers held-out questions from
compressed memory retrieved over the whole collection (and cannot without retrieval).

Used by `bench/bench_learning.py` (full size) and the CI test (reduced size).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from clara.model import ClaraConfig
from training.data import QARecord
from training.evaluate import (
    clara_row,
    generator_only_row,
    no_retrieval_row,
    retrieve,
    text_rag_row,
)
from training.pipeline import load_for_training, train
from training.stages import StageConfig
from training.tinymodel import build_tiny_llama, build_word_tokenizer
from training.trainer import TrainConfig
from training.world import World, make_world


@dataclass
class ProofConfig:
    # world
    n_people: int = 1700
    n_towns: int = 300
    max_facts: int = 3
    test_fraction: float = 0.15
    seed: int = 0
    # model
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    doc_max_tokens: int = 64
    compression_rate: int = 16
    lora_rank: int = 16
    # stages: optimiser steps and learning rates
    batch_size: int = 16
    lm_batch_size: int = 32
    lm_steps: int = 0  # optional LM pretraining of the base (0: the CLaRa stages start from random)
    lm_lr: float = 3e-3
    lm_qa_docs: int = 3  # documents per in-context QA text of the LM pretraining
    # fresh synthetic documents (random facts over the world's names) per stage: what makes
    # memorising useless and reading the only way to lower the loss
    lm_synthetic: int = 6000
    pretrain_synthetic: int = 14000
    instruct_synthetic: int = 5000
    joint_synthetic: int = 40000
    pretrain_steps: int = 2000
    # 5e-4, not 2e-3: at 2e-3 the model settles on copying the sentence template and the name
    # and never learns to pass the values (measured; see BENCHMARKS.md)
    pretrain_lr: float = 5e-4
    pretrain_qa: bool = False  # stage-1 QA records as well as paraphrase (slower to learn here)
    instruct_steps: int = 600
    instruct_lr: float = 5e-4
    instruct_docs: int = 5
    joint_steps: int = 2000
    joint_lr: float = 1e-3
    joint_candidates: int = 32
    # share of a question's other candidates that state the same attribute: only the name
    # tells them from the gold document, which is what retrieval over a collection needs
    joint_hard: float = 0.75
    joint_top_k: int = 5
    tau: float = 0.02
    # the reference code's InfoNCE retrieval loss on the query scores, added to the generator
    # CE. The paper's stage 3 is CE only; on this model CE only reached Recall@1 0.04-0.12
    # over the collection, vs 0.90+ with it (measured side by side; see BENCHMARKS.md)
    retrieval_weight: float = 1.0
    # evaluation
    top_k: int = 5
    eval_limit: int | None = 300
    max_tokens: int = 8
    diagnostics: bool = True

    def override(self, pairs: Sequence[str]) -> ProofConfig:
        """A copy with `KEY=VALUE` pairs (JSON values, cast to the field's type) applied."""
        cfg = self
        for kv in pairs:
            key, _, value = kv.partition("=")
            cfg = replace(cfg, **{key: type(getattr(cfg, key) or 0)(json.loads(value))})
        return cfg

    def world(self) -> World:
        return make_world(
            self.n_people,
            self.n_towns,
            max_facts=self.max_facts,
            test_fraction=self.test_fraction,
            seed=self.seed,
        )

    def joint_records(self, world: World) -> list[QARecord]:
        """Stage-3 questions: fresh synthetic documents' and the training documents'."""
        n, hard = self.joint_candidates, self.joint_hard
        synthetic = world.synthetic(self.joint_synthetic, 4).qa_records("train", n, hard=hard)
        return synthetic + world.qa_records("train", n, all_templates=True, seed=1, hard=hard)

    def joint_stage(self) -> StageConfig:
        return StageConfig(
            top_k=self.joint_top_k, tau=self.tau, retrieval_weight=self.retrieval_weight
        )


@dataclass
class ProofResult:
    config: dict
    n_docs: int
    n_train_facts: int
    n_test_questions: int
    mean_doc_tokens: float
    n_mem: int
    vocab_size: int
    parameters: int
    stage_seconds: dict[str, float] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    total_seconds: float = 0.0
    diagnostics: dict = field(default_factory=dict)

    def row(self, method: str) -> dict:
        return next(r for r in self.rows if r["method"] == method)


def run_proof(
    cfg: ProofConfig, workdir: str | Path, log: Callable[[str], None] = print, quiet: bool = True
) -> ProofResult:
    """World -> tokenizer + random Llama -> [lm] -> pretrain -> instruct -> joint -> eval."""
    start = time.perf_counter()
    work = Path(workdir)
    world = cfg.world()
    model_dir = build_word_tokenizer(work / "model", world.texts())
    build_tiny_llama(
        model_dir,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        seed=cfg.seed,
    )
    clara_cfg = ClaraConfig(
        compression_rate=cfg.compression_rate,
        doc_max_tokens=cfg.doc_max_tokens,
        lora_rank=cfg.lora_rank,
        lora_alpha=2.0 * cfg.lora_rank,
        lora_dropout=0.0,
        seed=cfg.seed,
    )
    test = world.qa_records("test", n_docs=1)
    if cfg.eval_limit:
        test = test[: cfg.eval_limit]

    def tc(stage: str, steps: int, lr: float, full: bool) -> TrainConfig:
        return TrainConfig(
            stage=stage,
            out=str(work / stage),
            lr=lr,
            max_steps=steps,
            batch_size=cfg.lm_batch_size if stage == "lm" else cfg.batch_size,
            full=full,
            seed=cfg.seed,
            quiet=quiet,
            log_every=20,
        )

    times: dict[str, float] = {}

    def timed(name: str, fn):
        t = time.perf_counter()
        out = fn()
        times[name] = round(time.perf_counter() - t, 1)
        log(f"{name}: {times[name]:.0f}s")
        return out

    init: dict = {"model": str(model_dir), "clara_config": clara_cfg}
    lm = None  # the LM-pretrained base, when there is one
    if cfg.lm_steps:
        lm = timed(
            "lm",
            lambda: train(
                lm_texts(world, world.synthetic(cfg.lm_synthetic, 1), model_dir, cfg.lm_qa_docs),
                tc("lm", cfg.lm_steps, cfg.lm_lr, True),
                dtype="float32", **init,
            ),
        )  # fmt: skip
        init = {"init_from": lm}
    ck = timed(
        "pretrain",
        lambda: train(
            world.synthetic(cfg.pretrain_synthetic, 2).pretrain_records(qa=cfg.pretrain_qa)
            + world.pretrain_records(qa=cfg.pretrain_qa),
            tc("pretrain", cfg.pretrain_steps, cfg.pretrain_lr, True),
            dtype="float32", **init,
        ),
    )  # fmt: skip
    ck = timed(
        "instruct",
        lambda: train(
            world.synthetic(cfg.instruct_synthetic, 3).qa_records("train", cfg.instruct_docs)
            + world.qa_records("train", n_docs=cfg.instruct_docs, all_templates=True),
            tc("instruct", cfg.instruct_steps, cfg.instruct_lr, True),
            init_from=ck, dtype="float32", stage_config=StageConfig(top_k=cfg.instruct_docs),
        ),
    )  # fmt: skip
    diagnostics: dict[str, float] = {}
    if cfg.diagnostics:  # can the stage-2 generator read? (gold document, held-out questions)
        probe = load_for_training(None, ck, dtype="float32")
        sample = test[:200]
        got = retrieve(probe, sample, "gold", None, 1)
        row = clara_row(probe, sample, got, "instruct, gold doc", str(ck), cfg.max_tokens)
        diagnostics["instruct_gold_em"] = row.em
        log(f"instruct, gold document, held-out EM: {row.em:.3f}")
        del probe
    ck = timed(
        "joint",
        lambda: train(
            cfg.joint_records(world),
            tc("joint", cfg.joint_steps, cfg.joint_lr, False),
            init_from=ck, dtype="float32", stage_config=cfg.joint_stage(),
        ),
    )  # fmt: skip

    def evaluate():
        cm = load_for_training(None, ck, dtype="float32")
        got = retrieve(cm, test, "collection", world.docs, cfg.top_k)
        rows = [
            clara_row(cm, test, got, f"CLaRa {cfg.compression_rate}x", str(ck), cfg.max_tokens),
            generator_only_row(cm, test, "CLaRa, no retrieval", str(ck), cfg.max_tokens),
        ]
        if lm is not None:  # a base LM that reads text exists only after LM pretraining
            base = load_for_training(None, lm, dtype="float32")
            name = "base LM, uncompressed text of the same top docs"
            rows.append(text_rag_row(base, test, got.texts, cfg.max_tokens, name=name))
            rows.append(no_retrieval_row(base, test, cfg.max_tokens))
            rows[-1].name = "base LM, no retrieval"
        return cm, rows

    cm, rows = timed("eval", evaluate)
    probe = load_for_training(None, work / "pretrain" / "final", dtype="float32")
    held = sorted(world.held_out)[:100]
    own, other = paraphrase_recall(probe, world, held)
    diagnostics["paraphrase_recall_own_memory"] = own
    diagnostics["paraphrase_recall_other_memory"] = other
    log(
        f"stage-1 paraphrase of held-out docs, name+values recalled: {own:.3f} (control {other:.3f})"
    )
    tok = cm.tokenizer
    lengths = [len(tok.encode(d, add_special_tokens=False)) for d in world.docs]
    n_params = sum(v.size for k, v in _flat(cm.lm.parameters()) if ".lora_" not in k)
    result = ProofResult(
        config=asdict(cfg),
        n_docs=len(world.docs),
        n_train_facts=len(world.split("train")),
        n_test_questions=len(test),
        mean_doc_tokens=round(float(np.mean(lengths)), 2),
        n_mem=cm.n_mem,
        vocab_size=int(cm.info.config["vocab_size"]),
        parameters=int(n_params),
        stage_seconds=times,
        rows=[r.to_dict() for r in rows],
        total_seconds=round(time.perf_counter() - start, 1),
        diagnostics=diagnostics,
    )
    (work / "result.json").write_text(json.dumps(asdict(result), indent=2))
    return result


def paraphrase_recall(cm, world, doc_ids, max_tokens: int = 24) -> tuple[float, float]:
    """Share of documents whose entity name and values the generator writes back from their
    memory (paraphrase prompt), and the same with the NEXT document's memory (a control:
    what the generator would guess without this document)."""
    import mlx.core as mx

    from clara.generate import generate
    from clara.prompt import paraphrase_prompt

    mem = cm.compress([world.docs[i] for i in doc_ids])

    def hits(memory: mx.array, i: int) -> float:
        prompt = paraphrase_prompt(cm, memory)
        text = "".join(c.text for c in generate(cm, prompt, max_tokens=max_tokens))
        words = set(text.replace(".", " ").split())
        wanted = [world.facts[world.doc_facts[i][0]].entity]
        wanted += [world.facts[f].value for f in world.doc_facts[i]]
        return sum(w in words for w in wanted) / len(wanted)

    own = [hits(mem[j], i) for j, i in enumerate(doc_ids)]
    other = [hits(mem[(j + 1) % len(doc_ids)], i) for j, i in enumerate(doc_ids)]
    return float(np.mean(own)), float(np.mean(other))


def lm_texts(world, synthetic, model_dir: Path, n_docs: int) -> list[str]:
    """The base LM's pretraining text: training and synthetic documents, the name registry,
    and chat-format reading-comprehension examples (their document among `n_docs`), so the base
    model can read text in context like a pretrained LLM (held-out documents: never)."""
    from clara.loader import load_base
    from clara.prompt import render_text_prompt

    tok = load_base(model_dir, dtype=None).tokenizer
    texts = [world.docs[i] for i in world.train_docs] + synthetic.docs + world.registry()
    qa = world.qa_records("train", n_docs=n_docs, seed=2) + synthetic.qa_records("train", n_docs)
    for r in qa:
        prompt = render_text_prompt(tok, r.question, r.docs)  # r.docs: never empty
        texts.append(prompt + r.answer + tok.eos_token)
    return texts


def _flat(tree):
    from mlx.utils import tree_flatten

    return tree_flatten(tree)
