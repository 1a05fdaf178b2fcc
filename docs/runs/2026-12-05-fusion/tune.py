"""Reciprocal-rank-fusion settings (k, dense weight; lexical weight 1) for the installed
adapters, chosen on the 636 questions of the 80 training documents the installed query adapter
never trained on (docs/runs/2026-12-05-query-installed/data.py wrote them to runs/qinst/val.json),
ranked against all 1000 documents as bench_heldout.py ranks the held-out ones:

    .venv/bin/python docs/runs/2026-12-05-fusion/tune.py [runs/qinst] [CHECKPOINT]

Prints R@1/R@3/R@5 of every setting on the grid, best first by R@1 (the chunk "mixed" mode
reads as text), then R@3, then R@5.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)
import bench_heldout as bh  # noqa: E402

from clara.retrieval import Fusion, recall_precision_at_k, reciprocal_rank_fusion  # noqa: E402
from training.data import QARecord  # noqa: E402
from training.pipeline import load_for_training  # noqa: E402

KS = (1, 2, 5, 10, 20, 30, 60, 100)
DENSE_WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def main(run: Path, checkpoint: Path) -> None:
    rows = [json.loads(x) for x in bh.DATA.read_text(encoding="utf-8").splitlines()]
    docs = [r["docs"][0] for r in rows]
    val = json.loads((run / "val.json").read_text(encoding="utf-8"))
    recs = [QARecord(q, [docs[i]], [""], [0]) for q, i in val]
    gold = [[i] for _, i in val]
    cm = load_for_training("smollm2-135m", checkpoint, dtype="float32")
    cm.pack_base_weights(compressor=True)
    mem = bh.compressed(cm, docs, run / "collection")
    dense, lexical, hybrid = bh.rankings(cm, recs, docs, mem)
    cuts = (1, 3, 5)

    def fmt(r):
        return "/".join(f"{100 * r[f'recall@{c}']:.1f}" for c in cuts)

    print(f"{len(recs)} validation questions; shipped fusion {Fusion()}")
    print(f"dense {fmt(recall_precision_at_k(dense, gold, cuts))}")
    print(f"bm25  {fmt(recall_precision_at_k(lexical, gold, cuts))}")
    print(f"shipped hybrid {fmt(recall_precision_at_k(hybrid, gold, cuts))}")
    results = []
    for k in KS:
        for w in DENSE_WEIGHTS:
            fused = [
                [f.id for f in reciprocal_rank_fusion({"dense": d, "lexical": x}, k,
                                                      {"dense": w, "lexical": 1.0})]
                for d, x in zip(dense, lexical)
            ]  # fmt: skip
            r = recall_precision_at_k(fused, gold, cuts)
            results.append((tuple(round(r[f"recall@{c}"], 6) for c in cuts), k, w, r))
    results.sort(key=lambda x: x[0], reverse=True)
    for _, k, w, r in results:
        print(f"k {k:>5}  dense weight {w:<5}  R@1/3/5 {fmt(r)}")


if __name__ == "__main__":
    args = sys.argv[1:]
    run = Path(args[0]) if args else ROOT / "runs/qinst"
    ckpt = Path(args[1]) if len(args) > 1 else ROOT / "clara/checkpoints/smollm2-135m-16x"
    main(run, ckpt)
