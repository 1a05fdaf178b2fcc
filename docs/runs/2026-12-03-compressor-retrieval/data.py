"""Stage-3 data for docs/TRAINING_RUNS.md ("A compressor trained with the retrieval loss"):
every question of the 800 training documents, each with its document and the K-1 most
similar other training documents (TF-IDF), shuffled. The 200 held-out documents are never read.

    .venv/bin/python docs/runs/2026-12-03-compressor-retrieval/data.py runs/cretr [K]
"""

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from training.data import qa_to_json, write_jsonl  # noqa: E402
from training.default_recipe import default_data, split_example, with_negatives  # noqa: E402

out = Path(sys.argv[1])
k = int(sys.argv[2]) if len(sys.argv) > 2 else 4
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(0)
train, _, _ = split_example(default_data())
docs = [r["docs"][0] for r in train]
qs = [(q, a, i) for i, r in enumerate(train) for q, a in zip(r["question"], r["answers"])]
rows = with_negatives(qs, docs, k, rng)
rng.shuffle(rows)
write_jsonl(out / "joint.jsonl", map(qa_to_json, rows))
print(f"{len(rows)} questions over {len(docs)} documents, {k} candidates each")
