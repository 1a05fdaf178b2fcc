#!/bin/bash
# "Distilling text reading into memory reading" in docs/TRAINING_RUNS.md, from the checkout's
# root:   bash docs/runs/2026-12-04-distill/run.sh control|distill   # -> runs/distill/<arm>
# Stage 1 from the shipped adapters on the default recipe's stage-1 data (800 training
# documents: QA groups and paraphrases, plus Python doc topics), the same batches in both arms;
# `distill` adds --distill-weight (default 1): the KL from the generator reading each document
# as text to the generator reading its memory. Rerunning resumes.
set -e
cd "$(dirname "$0")/../../.."
base=runs/distill
if [ ! -f $base/pretrain.jsonl ]; then
  .venv/bin/python - <<'PY'
import argparse
from pathlib import Path
from training.default_recipe import PACKAGED, build_data, default_data, float32_copy
out = Path("runs/distill")
out.mkdir(parents=True, exist_ok=True)
build_data(out, argparse.Namespace(data=default_data(), pydoc=150, instruct_k=2, joint_docs=40, joint_k=8))
float32_copy(Path(PACKAGED), out / "init")
PY
fi
case "$1" in
  control) extra="" ;;
  distill) extra="--distill-weight ${W:-1}" ;;
  *) echo "usage: $0 control|distill" >&2; exit 2 ;;
esac
out=$base/$1
resume=""; ls $out/step-* >/dev/null 2>&1 && resume="--resume"
exec .venv/bin/python -m training.cli pretrain --data $base/pretrain.jsonl --out $out \
  --init-from $base/init --max-steps ${STEPS:-100} --lr 3e-4 --batch-size 2 --pass-size 1 \
  --log-every 5 --save-every 10 --keep-last 2 --dtype float32 --seed 3 --ranks 2 -q \
  $extra $resume
