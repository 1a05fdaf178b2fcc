"""Dense (the product's: flat cosine re-scored by MaxSim) and BM25 R@1/R@3/R@5 on the 80
validation documents' questions (data.py; training documents the run never trained on),
ranked against all 1000 documents, for each checkpoint given:

    .venv/bin/python docs/runs/2026-12-05-query-installed/check.py runs/qinst CKPT [CKPT ...]

Checkpoints that share the installed compressor reuse one compressed collection, kept in
runs/qinst/collection.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)
import bench_heldout as bh  # noqa: E402

from clara.retrieval import recall_precision_at_k  # noqa: E402
from training.data import QARecord  # noqa: E402
from training.pipeline import load_for_training  # noqa: E402


def main(run: Path, checkpoints: list[str]) -> None:
    rows = [json.loads(x) for x in bh.DATA.read_text(encoding="utf-8").splitlines()]
    docs = [r["docs"][0] for r in rows]
    val = json.loads((run / "val.json").read_text(encoding="utf-8"))
    recs = [QARecord(q, [docs[i]], [""], [0]) for q, i in val]
    gold = [[i] for _, i in val]
    for ckpt in checkpoints:
        cm = load_for_training("smollm2-135m", Path(ckpt), dtype="float32")
        cm.pack_base_weights(compressor=True)
        mem = bh.compressed(cm, docs, run / "collection")
        dense, lexical, hybrid = bh.rankings(cm, recs, docs, mem)
        line = [f"{ckpt:34s}"]
        for name, ranked in (("dense", dense), ("bm25", lexical), ("hybrid", hybrid)):
            r = recall_precision_at_k(ranked, gold, (1, 3, 5))
            line.append(
                f"{name} {100 * r['recall@1']:.1f}/{100 * r['recall@3']:.1f}/{100 * r['recall@5']:.1f}"
            )
        print("  ".join(line), flush=True)
        cm.release_packed()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
