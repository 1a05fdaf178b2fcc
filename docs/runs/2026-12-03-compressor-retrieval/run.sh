#!/bin/bash
# "A compressor trained with the retrieval loss" in docs/TRAINING_RUNS.md, from the checkout's
# root:   bash docs/runs/2026-12-03-compressor-retrieval/run.sh   # -> runs/cretr/joint/final
# The recipe's third stage continued from the shipped adapters with the compressor trained
# too (`--train-compressor`): every training question with its document and 3 TF-IDF
# neighbours, compressed with gradients each step; the query ranks them and every other
# training document (`--corpus-negatives`: memories compressed when the stage starts, each
# step's candidates written back as it compresses them) by MaxSim; the generator reads the top
# 3 (its loss reaches the compressor through them). Rerunning resumes. The recorded run
# (2026-12-03) wrote nothing back for its first 50 steps (the code then); it was resumed from
# step 50 with the write-back, which also recompressed the corpus with the step-50 compressor.
set -e
cd "$(dirname "$0")/../../.."
out=${OUT:-runs/cretr}  # K candidates per question (the recorded run: 4); NEG=mined: the
# shipped adapters' own hardest negatives instead of TF-IDF's (data.py). INIT=DIR: start from
# (and mine with) the adapters in DIR instead of the shipped ones (ship.sh in
# docs/runs/2026-12-04-query-soup passes the ones shipped before 2026-12-04).
[ -f $out/joint.jsonl ] || .venv/bin/python docs/runs/2026-12-03-compressor-retrieval/data.py $out ${K:-4} ${NEG:-tfidf} $INIT
[ -f $out/init/adapters.safetensors ] || .venv/bin/python -c "
from pathlib import Path
from training.default_recipe import PACKAGED, float32_copy
float32_copy(Path('${INIT}') if '${INIT}' else PACKAGED, Path('$out/init'))"
resume=""; ls $out/joint/step-* >/dev/null 2>&1 && resume="--resume"
exec .venv/bin/python -m training.cli joint --data $out/joint.jsonl --out $out/joint \
  --init-from $out/init --keep-query --train-compressor --retrieval-weight ${RW:-1} --retrieval-score maxsim \
  --corpus-negatives --top-k 3 --max-steps ${STEPS:-150} --lr ${LR:-1e-4} --batch-size 2 \
  --pass-size 1 --log-every 5 --save-every 10 --dtype float32 --seed ${SEED:-1} --ranks 2 \
  ${STOP:+--stop-after $STOP} $resume
