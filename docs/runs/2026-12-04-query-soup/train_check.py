"""Dense and BM25 R@1/R@5 on training questions (not held out), all 1000 documents, for
checkpoints whose compressed collection bench_heldout.py cached in runs/heldout-cmine:

    .venv/bin/python docs/runs/2026-12-04-query-soup/train_check.py N CKPT [CKPT ...]

A check that a soup chosen among several on held-out questions also ranks well on others
(the components were trained on these questions, so all figures here run high).
"""

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)
import bench_heldout as bh  # noqa: E402

from clara.retrieval import recall_precision_at_k  # noqa: E402
from training.data import QARecord  # noqa: E402
from training.pipeline import load_for_training  # noqa: E402


def main(n: int, checkpoints: list[str]) -> None:
    rows = [json.loads(x) for x in bh.DATA.read_text(encoding="utf-8").splitlines()]
    docs = [r["docs"][0] for r in rows]
    pool = [(q, i) for i, r in enumerate(rows) if i % 5 for q in r["question"]]
    picked = random.Random(0).sample(pool, n)
    recs = [QARecord(q, [docs[i]], [""], [0]) for q, i in picked]
    gold = [[i] for _, i in picked]
    for ckpt in checkpoints:
        cm = load_for_training("smollm2-135m", Path(ckpt), dtype="float32")
        mem = bh.compressed(cm, docs, ROOT / "runs" / "heldout-cmine")
        dense, lexical, _ = bh.rankings(cm, recs, docs, mem)
        for name, ranked in (("dense", dense), ("bm25", lexical)):
            r = recall_precision_at_k(ranked, gold, (1, 5))
            print(
                f"{ckpt:32s} {name:6s} R@1 {100 * r['recall@1']:.1f} R@5 {100 * r['recall@5']:.1f}"
            )


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
