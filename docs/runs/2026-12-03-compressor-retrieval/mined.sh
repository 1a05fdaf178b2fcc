#!/bin/bash
# "Negatives the model mines itself" in docs/TRAINING_RUNS.md, from the checkout's root:
#   bash docs/runs/2026-12-03-compressor-retrieval/mined.sh   # -> runs/cmine2/joint/final
# 1. run.sh's stage from the shipped adapters, each question's 3 negatives the training
#    documents the shipped adapters rank highest (not TF-IDF's): runs/cmine, 150 steps.
# 2. The negatives mined again, by step 1's adapters, for 800 other random questions, and
#    100 more steps on them from step 1's end: runs/cmine2.
# Rerunning resumes whichever step is unfinished. INIT=DIR starts step 1 from (and mines with)
# the adapters in DIR instead of the packaged ones (ship.sh in docs/runs/2026-12-04-query-soup).
set -e
cd "$(dirname "$0")/../../.."
here=docs/runs/2026-12-03-compressor-retrieval
[ -d runs/cmine/joint/final ] || OUT=runs/cmine NEG=mined STEPS=150 SEED=1 bash $here/run.sh
out=runs/cmine2
[ -f $out/joint.jsonl ] || .venv/bin/python $here/data.py $out 4 mined runs/cmine/joint/final 800 7
resume=""; ls $out/joint/step-* >/dev/null 2>&1 && resume="--resume"
exec .venv/bin/python -m training.cli joint --data $out/joint.jsonl --out $out/joint \
  --init-from runs/cmine/joint/final --keep-query --train-compressor --retrieval-weight 1 \
  --retrieval-score maxsim --corpus-negatives --top-k 3 --max-steps ${STEPS:-100} \
  --lr 1e-4 --batch-size 2 --pass-size 1 --log-every 5 --save-every 10 \
  --dtype float32 --seed 2 --ranks 2 ${STOP:+--stop-after $STOP} $resume
