"""A tiny Llama trained from scratch learns to pass a document through 16x-compressed memory,
and its query encoder learns to find the document a question is about.

Reduced version of `bench/bench_learning.py` that fits CI (about a minute on 2 CPU cores).
The paraphrase prompt is the same for every document, so the only document-specific input the
generator gets is the 4 memory vectors: writing back the document's invented name and values
from its own memory, and not from another document's, can only come from reading the memory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clara.model import ClaraConfig
from training.evaluate import retrieve
from training.pipeline import load_for_training, train
from training.proof import paraphrase_recall
from training.stages import StageConfig
from training.tinymodel import build_tiny_llama, build_word_tokenizer
from training.trainer import TrainConfig, read_metrics
from training.world import make_world


def _cfg(out: Path, stage: str, steps: int, lr: float, batch: int, full: bool) -> TrainConfig:
    return TrainConfig(stage=stage, out=str(out / stage), lr=lr, max_steps=steps,
                       batch_size=batch, full=full, quiet=True, log_every=25)  # fmt: skip


@pytest.fixture(scope="module")
def world():
    return make_world(n_people=50, n_towns=10, seed=1, test_fraction=0.0)


@pytest.fixture(scope="module")
def pretrained(world, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LM pretraining of a random tiny Llama, then CLaRa stage 1 (paraphrase)."""
    out = tmp_path_factory.mktemp("learning")
    model = build_word_tokenizer(out / "model", world.texts())
    build_tiny_llama(model, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = ClaraConfig(compression_rate=16, doc_max_tokens=64, lora_rank=8, lora_dropout=0.0)
    lm = train(world.docs, _cfg(out, "lm", 60, 3e-3, 32, True), model=str(model),
               clara_config=config, dtype="float32")  # fmt: skip
    return train(world.pretrain_records(qa=False), _cfg(out, "pretrain", 350, 3e-3, 16, True),
                 init_from=lm, dtype="float32")  # fmt: skip


def test_tiny_model_learns_to_read_compressed_memory(world, pretrained: Path):
    rows = read_metrics(pretrained.parent / "metrics.jsonl")
    assert rows[-1]["ce"] < 0.5 * rows[0]["ce"]
    cm = load_for_training(None, pretrained, dtype="float32")
    assert cm.n_mem == 4
    own, other = paraphrase_recall(cm, world, list(range(len(world.docs))))
    # name + values written back from the document's own memory vs. another document's
    print(f"recall own={own:.3f} other={other:.3f}")
    assert own >= 0.6, (own, other)
    assert other <= 0.25 and own >= 3 * other, (own, other)


def test_joint_stage_teaches_the_query_encoder_to_retrieve(world, pretrained: Path, tmp_path):
    """Stage 3 (differentiable top-k + the retrieval loss) over hard-negative candidates: the
    question's document is ranked first among the WHOLE collection far above chance."""
    questions = world.qa_records("train", n_docs=1)

    def recall_at_1(checkpoint: Path) -> float:
        cm = load_for_training(None, checkpoint, dtype="float32")
        got = retrieve(cm, questions, "collection", world.docs, top_k=1)
        return sum(r[0] in g for r, g in zip(got.ranked, got.gold)) / len(questions)

    before = recall_at_1(pretrained)  # stage 1 leaves the query adapter untrained
    records = world.qa_records("train", n_docs=8, all_templates=True, hard=0.75)
    ck = train(records, _cfg(tmp_path, "joint", 150, 3e-3, 16, False), init_from=pretrained,
               dtype="float32", stage_config=StageConfig(top_k=2, retrieval_weight=1.0))  # fmt: skip
    after = recall_at_1(ck)
    print(f"collection Recall@1 before={before:.3f} after={after:.3f} chance={1 / 60:.3f}")
    assert after >= 0.5 and after >= before + 0.3, (before, after)
