#!/bin/bash
# "Stage 3 under MaxSim" in docs/TRAINING_RUNS.md, from the checkout's root:
#   bash docs/runs/2026-12-02-stage3-maxsim/run.sh     # -> runs/s3max/joint/final
# The recipe's third stage (query adapter and generator together: 40 training documents x 8
# candidates, the generator reads the top 3, retrieval loss weight 1), continued from the
# shipped adapters (whose stage-2 state is not kept) with the query scoring documents by
# MaxSim instead of the flattened cosine. Data: the recipe's own joint.jsonl. Rerunning resumes.
set -e
cd "$(dirname "$0")/../../.."
out=runs/s3max
[ -f $out/joint.jsonl ] || .venv/bin/python -c "
import argparse, random
from pathlib import Path
from training.default_recipe import build_data, default_data
a = argparse.Namespace(data=default_data(), pydoc=150, instruct_k=2, joint_docs=40, joint_k=8)
Path('$out').mkdir(parents=True, exist_ok=True)
build_data(Path('$out'), a)"
[ -f $out/init/adapters.safetensors ] || .venv/bin/python -c "
from pathlib import Path
from training.default_recipe import PACKAGED, float32_copy
float32_copy(PACKAGED, Path('$out/init'))"
resume=""; ls $out/joint/step-* >/dev/null 2>&1 && resume="--resume"
exec .venv/bin/python -m training.cli joint --data $out/joint.jsonl --out $out/joint \
  --init-from $out/init --retrieval-weight 1 --retrieval-score maxsim --top-k 3 \
  --max-steps ${STEPS:-30} --lr 2e-4 --batch-size 2 --pass-size 1 --log-every 5 \
  --save-every 10 --dtype float32 --seed ${SEED:-1} --ranks 2 $resume
