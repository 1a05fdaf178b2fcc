"""Stage-3 data for docs/TRAINING_RUNS.md ("A compressor trained with the retrieval loss"):
every question of the 800 training documents, each with its document and K-1 other training
documents, shuffled. The 200 held-out documents are never read. The other documents are
- `tfidf` (the default): the K-1 most similar by TF-IDF;
- `mined`: the K-1 that adapters (the shipped ones, or CHECKPOINT) rank highest (query
  adapter against the compressor's memories, MaxSim), the gold document left out: the
  model's own hardest ones. N: only N questions, drawn at random (SEED), are mined and written.

    .venv/bin/python docs/runs/2026-12-03-compressor-retrieval/data.py runs/cretr [K] \
        [tfidf | mined [CHECKPOINT [N SEED]]]
"""

import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)

from training.data import QARecord, qa_to_json, write_jsonl  # noqa: E402
from training.default_recipe import default_data, split_example, with_negatives  # noqa: E402


def mined(qs, docs, k: int, rng: random.Random, checkpoint=None) -> list[QARecord]:
    """Each `(question, answer, doc index)` with its doc + the k-1 the adapters at
    `checkpoint` (default: the shipped ones) rank highest among the others."""
    import mlx.core as mx
    import numpy as np

    from clara.retrieval import maxsim_scores
    from training.default_recipe import PACKAGED
    from training.pipeline import load_for_training

    cm = load_for_training("smollm2-135m", checkpoint or PACKAGED, dtype="float32")
    cm.pack_base_weights()
    t = time.perf_counter()
    mem = cm.compress(docs)
    mx.eval(mem)
    print(f"compressed {len(docs)} documents in {time.perf_counter() - t:.0f}s", flush=True)
    out, ranks = [], []
    for lo in range(0, len(qs), 200):
        part = qs[lo : lo + 200]
        scores = np.array(maxsim_scores(cm.encode_queries([q for q, _, _ in part]), mem))
        for (q, a, src), row in zip(part, scores):
            best = [int(j) for j in np.argsort(-row, kind="stable")]
            ranks.append(best.index(src))
            cands = [src] + [j for j in best if j != src][: k - 1]
            rng.shuffle(cands)
            out.append(QARecord(q, [docs[j] for j in cands], [a], [cands.index(src)]))
        print(f"  {lo + len(part)}/{len(qs)} questions ranked", flush=True)
    ranks = np.array(ranks)
    print(f"the adapters on these questions: R@1 {np.mean(ranks < 1):.3f}, R@5 "
          f"{np.mean(ranks < 5):.3f} among the {len(docs)} documents")  # fmt: skip
    return out


out = Path(sys.argv[1])
k = int(sys.argv[2]) if len(sys.argv) > 2 else 4
how = sys.argv[3] if len(sys.argv) > 3 else "tfidf"
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(0)
train, _, _ = split_example(default_data())
docs = [r["docs"][0] for r in train]
qs = [(q, a, i) for i, r in enumerate(train) for q, a in zip(r["question"], r["answers"])]
if how == "mined":
    if len(sys.argv) > 6:  # a random subset of the questions
        qs = random.Random(int(sys.argv[6])).sample(qs, int(sys.argv[5]))
    rows = mined(qs, docs, k, rng, sys.argv[4] if len(sys.argv) > 4 else None)
else:
    rows = with_negatives(qs, docs, k, rng)
rng.shuffle(rows)
write_jsonl(out / "joint.jsonl", map(qa_to_json, rows))
print(f"{len(rows)} questions over {len(docs)} documents, {k} candidates each ({how})")
