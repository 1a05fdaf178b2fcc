#!/bin/bash
# The three stage-1 pilots of docs/TRAINING_RUNS.md ("Memory budget or adapter size?"), from
# the checkout's root, after the long run (runs/long2) reached stage-1 step 400:
#   bash docs/runs/2026-12-02-pilots/run.sh control|rank64|rate4
# Rerunning resumes from the newest checkpoint.
set -e
cd "$(dirname "$0")/../../.."
here=docs/runs/2026-12-02-pilots
case "$1" in
  control) init=runs/long2/pretrain/step-000400; out=runs/r16ctl ;;
  rank64) out=runs/rank64; init=$out/init; mkdir -p $init; [ -f $init/adapters.safetensors ] || .venv/bin/python $here/rank64_init.py ;;
  rate4) out=runs/rate4; init=$out/init; mkdir -p $init; [ -f $init/adapters.safetensors ] || .venv/bin/python $here/rate4_init.py ;;
  *) echo "usage: $0 control|rank64|rate4" >&2; exit 2 ;;
esac
resume=""; ls $out/pretrain/step-* >/dev/null 2>&1 && resume="--resume"
exec .venv/bin/python -m training.cli pretrain --data runs/long2/pretrain.jsonl \
  --out $out/pretrain --init-from $init --max-steps 600 --stop-after 200 --lr 3e-4 \
  --batch-size 2 --pass-size 1 --log-every 5 --save-every 10 --keep-last 3 --dtype float32 \
  --seed 3 --ranks 2 -q $resume
