#!/bin/bash
# full fine-tuning pilot (base weights trained too), otherwise as run.sh control; from the checkout root
cd "$(dirname "$0")/../../.."
resume=""; ls runs/full/pretrain/step-* >/dev/null 2>&1 && resume="--resume"
exec .venv/bin/python -m training.cli pretrain --data runs/long2/pretrain.jsonl \
  --out runs/full/pretrain --init-from runs/long2/pretrain/step-000400 --max-steps 600 --stop-after 100 --lr 1e-4 \
  --batch-size 2 --pass-size 1 --log-every 5 --save-every 20 --keep-last 2 --dtype float32 \
  --seed 3 --ranks 2 -q --full $resume
