"""A tiny Llama trained from scratch learns to pass a document through 16x-compressed memory.

Reduced version of `bench/bench_learning.py` that fits CI (about a minute on 2 CPU cores).
The paraphrase prompt is the same for every document, so the only document-specific input the
generator gets is the 4 memory vectors: writing back the document's invented name and values
from its own memory, and not from another document's, can only come from reading the memory.
"""

from __future__ import annotations

from clara.model import ClaraConfig
from training.pipeline import load_for_training, train
from training.proof import paraphrase_recall
from training.tinymodel import build_tiny_llama, build_word_tokenizer
from training.trainer import TrainConfig, read_metrics
from training.world import make_world


def test_tiny_model_learns_to_read_compressed_memory(tmp_path):
    world = make_world(n_people=50, n_towns=10, seed=1, test_fraction=0.0)
    model = build_word_tokenizer(tmp_path / "model", world.texts())
    build_tiny_llama(model, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = ClaraConfig(compression_rate=16, doc_max_tokens=64, lora_rank=8, lora_dropout=0.0)

    def cfg(stage: str, steps: int, lr: float, batch: int) -> TrainConfig:
        return TrainConfig(stage=stage, out=str(tmp_path / stage), lr=lr, max_steps=steps,
                           batch_size=batch, full=True, quiet=True, log_every=25)  # fmt: skip

    lm = train(world.docs, cfg("lm", 60, 3e-3, 32), model=str(model), clara_config=config,
               dtype="float32")  # fmt: skip
    ck = train(world.pretrain_records(qa=False), cfg("pretrain", 350, 3e-3, 16), init_from=lm,
               dtype="float32")  # fmt: skip
    rows = read_metrics(tmp_path / "pretrain" / "metrics.jsonl")
    assert rows[-1]["ce"] < 0.5 * rows[0]["ce"]
    cm = load_for_training(None, ck, dtype="float32")
    assert cm.n_mem == 4
    own, other = paraphrase_recall(cm, world, list(range(len(world.docs))))
    # name + values written back from the document's own memory vs. another document's
    print(f"recall own={own:.3f} other={other:.3f}")
    assert own >= 0.6, (own, other)
    assert other <= 0.25 and own >= 3 * other, (own, other)
