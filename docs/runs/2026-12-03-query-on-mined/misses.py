"""Where dense ranking and BM25 part ways on the held-out questions ("The query adapter alone,
on every training question" in docs/TRAINING_RUNS.md), from the checkout's root:

    .venv/bin/python docs/runs/2026-12-03-query-on-mined/misses.py runs/qmine/joint/final

Ranks every held-out question over all 1000 documents as bench/bench_heldout.py does (the
compressed collection cached in runs/heldout-cmine), then prints R@1/R@5 of the flat cosine,
MaxSim re-scoring of its top 100, 200 and 1000, how many top-5 hits each of dense and BM25 has
that the other misses, and the first of dense's misses.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)
import bench_heldout as bh  # noqa: E402
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from clara.retrieval import cosine_scores, maxsim_rerank  # noqa: E402
from training.pipeline import load_for_training  # noqa: E402


def ranks(orders: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Each question's gold document's place in its ordering (10**6: absent)."""
    return np.array([list(o).index(g) if g in o else 10**6 for o, g in zip(orders, gold)])


def main(checkpoint: str) -> None:
    recs, docs = bh.heldout(200, every=True)
    where = {d: i for i, d in enumerate(docs)}
    gold = np.array([where[r.docs[0]] for r in recs])
    cm = load_for_training("smollm2-135m", Path(checkpoint), dtype="float32")
    mem = bh.compressed(cm, docs, ROOT / "runs" / "heldout-cmine")
    q = cm.encode_queries([r.question for r in recs])
    flat = np.argsort(-np.array(cosine_scores(q, mem)), axis=1, kind="stable")
    qn, mn = np.array(q.astype(mx.float32)), np.array(mem.astype(mx.float32))
    rf = ranks(flat, gold)
    print(f"flat cosine R@1/R@5 {(rf < 1).mean():.3f}/{(rf < 5).mean():.3f}, "
          f"gold outside its top 100: {(rf >= 100).sum()}")  # fmt: skip
    dense = {}
    for depth in (100, 200, 1000):
        order = np.stack(
            [maxsim_rerank(qn[i], row, mn[row])[1] for i, row in enumerate(flat[:, :depth])]
        )
        dense[depth] = ranks(order, gold)
        r = dense[depth]
        print(f"MaxSim of the top {depth}: R@1/R@3/R@5 "
              f"{(r < 1).mean():.3f}/{(r < 3).mean():.3f}/{(r < 5).mean():.3f}")  # fmt: skip
    rd = dense[100]  # what the index does
    rl = ranks(np.argsort(-bh.bm25([r.question for r in recs], docs), axis=1, kind="stable"), gold)
    miss = np.where((rd >= 5) & (rl < 5))[0]
    print(f"top-5 hits BM25 has and dense misses: {len(miss)}; the reverse: "
          f"{((rl >= 5) & (rd < 5)).sum()}")  # fmt: skip
    for i in miss[:12]:
        place = f"#{rd[i] + 1}" if rd[i] < 100 else "past 100"
        print(f"  dense {place}, BM25 #{rl[i] + 1}: {recs[i].question}")


if __name__ == "__main__":
    main(sys.argv[1])
