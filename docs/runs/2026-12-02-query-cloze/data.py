"""Query-adapter training data for docs/TRAINING_RUNS.md ("Cloze questions for the query
adapter"): every question of the 800 training documents, plus teacher-free cloze questions
(`clara-train synth --cloze`) over the same documents, each with its document and the 7 most
similar others. The 200 held-out documents are never read.

    .venv/bin/python docs/runs/2026-12-02-query-cloze/data.py runs/qcloze
"""

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from training.data import qa_to_json, write_jsonl  # noqa: E402
from training.default_recipe import (  # noqa: E402
    default_data,
    split_example,
    synth_cloze,
    with_negatives,
)

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(0)
train, _, _ = split_example(default_data())
docs = [r["docs"][0] for r in train]
real = [(q, a, i) for i, r in enumerate(train) for q, a in zip(r["question"], r["answers"])]
_, cloze_rows = synth_cloze({f"doc{i:04d}": d for i, d in enumerate(docs)}, out / "synth")
flat = [" ".join(d.split()) for d in docs]  # synth may re-space or chunk a document
cloze = []
for row in cloze_rows:
    probe = " ".join(row["docs"][0].split())[:120]
    i = next((j for j, d in enumerate(flat) if probe in d), None)
    if i is None:
        continue
    cloze += [(q, a, i) for q, a in zip(row["question"], row["answers"])]
print(f"{len(real)} real questions, {len(cloze)} cloze questions over {len(docs)} documents")
both = with_negatives(real + cloze, docs, 8, rng)
rng.shuffle(both)
write_jsonl(out / "joint.jsonl", map(qa_to_json, both))
(out / "counts.json").write_text(json.dumps({"real": len(real), "cloze": len(cloze)}))
