"""Data for "The query adapter alone, beside the installed compressor" in docs/TRAINING_RUNS.md.

The 800 training documents of the example data's fixed split (the 200 held-out ones are never
read) are split again: every 10th (80 documents) is kept for validation, so a checkpoint of the
run can be chosen without looking at the held-out questions. Writes, under OUT:
- joint.jsonl: every question of the other 720 documents, with its document and the most
  similar other training document (TF-IDF), for `clara-train joint --query-only
  --corpus-negatives` (which ranks each question against every document of the data);
- val.json: the validation documents' questions, as (question, index of its document among all
  1000 documents), for check.py.

With `all`, joint.jsonl has the validation documents' questions too (every training question).

    .venv/bin/python docs/runs/2026-12-05-query-installed/data.py runs/qinst [all]
"""

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)

from training.data import qa_to_json, write_jsonl  # noqa: E402
from training.default_recipe import default_data, split_example, with_negatives  # noqa: E402

out = Path(sys.argv[1])
every = sys.argv[2:] == ["all"]
out.mkdir(parents=True, exist_ok=True)
train, _, every_doc = split_example(default_data())
docs = [r["docs"][0] for r in train]
val_docs = set(range(0, len(train), 10))
qs = [
    (q, a, i)
    for i, r in enumerate(train)
    if every or i not in val_docs
    for q, a in zip(r["question"], r["answers"])
]
rng = random.Random(0)
rows = with_negatives(qs, docs, 2, rng)
rng.shuffle(rows)
write_jsonl(out / "joint.jsonl", map(qa_to_json, rows))
where = {d: j for j, d in enumerate(every_doc)}
val = [[q, where[docs[i]]] for i in sorted(val_docs) for q in train[i]["question"]]
(out / "val.json").write_text(json.dumps(val), encoding="utf-8")
print(f"{len(rows)} training questions over {len(docs) - (0 if every else len(val_docs))} documents; "
      f"{len(val)} validation questions of {len(val_docs)} documents")  # fmt: skip
