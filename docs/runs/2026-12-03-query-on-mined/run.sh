#!/bin/bash
# "The query adapter alone, on every training question" in docs/TRAINING_RUNS.md, from the
# checkout's root:   bash docs/runs/2026-12-03-query-on-mined/run.sh   # -> runs/qmine/joint/final
# Needs runs/cmine (docs/runs/2026-12-03-compressor-retrieval/mined.sh, step 1): its
# compressor stays frozen and its query adapter trains alone (`--query-only`) on the retrieval
# loss, each of the 6175 training questions ranked against all 800 training documents
# (`--corpus-negatives`, MaxSim), one epoch at batch 16. Rerunning resumes.
set -e
cd "$(dirname "$0")/../../.."
out=${OUT:-runs/qmine}
resume=""; ls $out/joint/step-* >/dev/null 2>&1 && resume="--resume"
exec .venv/bin/python -m training.cli joint --data runs/cmine/joint.jsonl --out $out/joint \
  --init-from runs/cmine/joint/final --query-only --corpus-negatives --retrieval-weight 1 \
  --retrieval-score maxsim --top-k 2 --epochs 1 --batch-size ${BS:-16} --lr ${LR:-1e-4} \
  --log-every 10 --save-every 25 --dtype float32 --seed ${SEED:-5} --ranks ${RANKS:-1} \
  ${STOP:+--stop-after $STOP} $resume
