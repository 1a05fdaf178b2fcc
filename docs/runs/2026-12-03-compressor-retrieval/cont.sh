#!/bin/bash
# The continuation in docs/TRAINING_RUNS.md ("A compressor trained with the retrieval loss"):
# run.sh's stage again from its final checkpoint, on questions it has not reached (another
# seed), from the checkout's root:
#   bash docs/runs/2026-12-03-compressor-retrieval/cont.sh   # -> runs/cretr2/joint/final
set -e
cd "$(dirname "$0")/../../.."
data=runs/cretr
out=runs/cretr2
[ -d $data/joint/final ] || { echo "run run.sh first" >&2; exit 1; }
resume=""; ls $out/joint/step-* >/dev/null 2>&1 && resume="--resume"
exec .venv/bin/python -m training.cli joint --data $data/joint.jsonl --out $out/joint \
  --init-from $data/joint/final --keep-query --train-compressor --retrieval-weight ${RW:-1} \
  --retrieval-score maxsim --corpus-negatives --top-k 3 --max-steps ${STEPS:-120} \
  --lr ${LR:-1e-4} --batch-size 2 --pass-size 1 --log-every 5 --save-every 10 \
  --dtype float32 --seed ${SEED:-2} --ranks 2 ${STOP:+--stop-after $STOP} $resume
