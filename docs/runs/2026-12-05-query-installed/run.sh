#!/bin/bash
# "The query adapter alone, beside the installed compressor" in docs/TRAINING_RUNS.md, from the
# checkout's root:   bash docs/runs/2026-12-05-query-installed/run.sh   # -> runs/qinst/joint
# The installed adapters' query adapter trains alone (`--query-only`) on the retrieval loss, each
# question of 720 training documents ranked by MaxSim against every training document
# (`--corpus-negatives`), one epoch at batch 16, checkpoints every 25 steps (check.py picks one
# on the 80 validation documents). The compressor and generator stay the installed ones, so an
# index compressed by them stays valid. Rerunning resumes.
# ALL=1 OUT=runs/qall SEED=6: the same on every training question (the 80 documents too).
set -e
cd "$(dirname "$0")/../../.."
here=docs/runs/2026-12-05-query-installed
out=${OUT:-runs/qinst}
[ -f $out/joint.jsonl ] || .venv/bin/python $here/data.py $out ${ALL:+all}
[ -d $out/init ] || .venv/bin/python -c "import sys; from pathlib import Path; \
from training.default_recipe import PACKAGED, float32_copy; float32_copy(PACKAGED, Path(sys.argv[1]))" $out/init
resume=""; ls $out/joint/step-* >/dev/null 2>&1 && resume="--resume"
exec .venv/bin/python -m training.cli joint --data $out/joint.jsonl --out $out/joint \
  --init-from $out/init --query-only --corpus-negatives --retrieval-weight 1 \
  --retrieval-score maxsim --top-k 2 --epochs 1 --batch-size ${BS:-16} --lr ${LR:-1e-4} \
  --log-every 10 --save-every 25 --dtype float32 --seed ${SEED:-5} --ranks ${RANKS:-1} \
  ${STOP:+--stop-after $STOP} $resume
