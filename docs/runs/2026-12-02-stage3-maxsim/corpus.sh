#!/bin/bash
# Stage 3 under MaxSim with every training document as a negative (docs/TRAINING_RUNS.md,
# "Stage 3 under MaxSim"), from the checkout's root; needs the data of
# docs/runs/2026-12-02-query-cloze (runs/qcloze/joint.jsonl: every training question + cloze
# questions, each with its document and 7 TF-IDF neighbours). Rerunning resumes.
set -e
cd "$(dirname "$0")/../../.."
data=runs/qcloze
out=runs/s3max-corpus
[ -f $data/joint.jsonl ] || .venv/bin/python docs/runs/2026-12-02-query-cloze/data.py $data
[ -f $out/init/adapters.safetensors ] || .venv/bin/python -c "
from pathlib import Path
from training.default_recipe import PACKAGED, float32_copy
float32_copy(PACKAGED, Path('$out/init'))"
resume=""; ls $out/joint/step-* >/dev/null 2>&1 && resume="--resume"
exec .venv/bin/python -m training.cli joint --data $data/joint.jsonl --out $out/joint \
  --init-from $out/init --retrieval-weight 1 --retrieval-score maxsim --corpus-negatives \
  --top-k 3 --max-steps ${STEPS:-40} --lr 2e-4 --batch-size 2 --pass-size 1 --log-every 5 \
  --save-every 10 --dtype float32 --seed ${SEED:-1} --ranks 2 $resume
