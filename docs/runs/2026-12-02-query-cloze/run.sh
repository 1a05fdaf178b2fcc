#!/bin/bash
# "Cloze questions for the query adapter" in docs/TRAINING_RUNS.md, from the checkout's root:
#   bash docs/runs/2026-12-02-query-cloze/run.sh            # flat cosine loss -> runs/qcloze
#   SCORE=maxsim bash docs/runs/2026-12-02-query-cloze/run.sh   # MaxSim loss -> runs/qcloze-maxsim
# The query adapter of the shipped checkpoint, trained on the retrieval loss alone against all
# 800 training documents (--corpus-negatives), on real + cloze questions. Rerunning resumes.
set -e
cd "$(dirname "$0")/../../.."
here=docs/runs/2026-12-02-query-cloze
data=runs/qcloze
score=${SCORE:-flat}
out=$data; [ "$score" = flat ] || out=$data-$score
[ -f $data/joint.jsonl ] || .venv/bin/python $here/data.py $data
[ -f $data/init/adapters.safetensors ] || .venv/bin/python -c "
from pathlib import Path
from training.default_recipe import PACKAGED, float32_copy
float32_copy(PACKAGED, Path('$data/init'))"
resume=""; ls $out/joint/step-* >/dev/null 2>&1 && resume="--resume"
exec .venv/bin/python -m training.cli joint --data $data/joint.jsonl --out $out/joint \
  --init-from $data/init --query-only --corpus-negatives --retrieval-weight 1 \
  --retrieval-score $score --max-steps ${STEPS:-150} --batch-size 16 --lr 2e-4 --top-k 2 \
  --dtype float32 --save-every 25 --log-every 10 --keep-last 8 --seed 0 --ranks 1 $resume
