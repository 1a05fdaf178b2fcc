# isort: skip_file
"""Helper for test_training_ddp.py: train a few steps (alone or as one rank of
`mlx.launch -n 2`) and dump this rank's CLaRa weights. Not a test module itself."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clara  # noqa: E402,F401
import mlx.core as mx  # noqa: E402

from clara.checkpoint import _clara_weights  # noqa: E402
from clara.model import ClaraConfig  # noqa: E402
from training.data import PretrainRecord  # noqa: E402
from training.pipeline import build_trainer  # noqa: E402
from training.trainer import TrainConfig  # noqa: E402

DOCS = [
    "The river runs past the old mill.",
    "The capital of France is Paris.",
    "The train leaves the station at seven.",
    "Water boils at one hundred degrees.",
    "The cat sat on the mat by the fire.",
    "She bought bread, apples and cheese.",
    "A library is a quiet place to read.",
    "The museum opened in 1902.",
]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    records = [PretrainRecord("paraphrase", d) for d in DOCS]
    cfg = TrainConfig(
        stage="pretrain",
        out=args.out,
        lr=3e-3,
        batch_size=args.batch_size,
        max_steps=args.steps,
        quiet=True,
        log_every=1,
    )
    config = ClaraConfig(compression_rate=16, doc_max_tokens=32, lora_rank=4, lora_dropout=0.0)
    trainer, _ = build_trainer(records, cfg, model=args.model, clara_config=config, dtype=None)
    trainer.run()
    rank = trainer.rank
    mx.save_safetensors(str(Path(args.out) / f"rank{rank}.safetensors"), _clara_weights(trainer.cm))


if __name__ == "__main__":
    main()
