#!/bin/bash
# The default adapters shipped since 2026-12-04 (clara/checkpoints/smollm2-135m-16x), rebuilt
# from the ones shipped before them, from the checkout's root:
#   bash docs/runs/2026-12-04-query-soup/ship.sh   # ~2 h 10 min on 2 cores; rerun resumes
# 1. runs/cmine, runs/cmine2: the compressor and query adapter trained with the retrieval loss
#    on negatives the adapters mine themselves (docs/runs/2026-12-03-compressor-retrieval/
#    mined.sh: 43 + 4 + 40 min), starting from the adapters shipped before (commit 3e789d7,
#    what `make model` and `training.default_recipe --install` gave until then: ~85 min more
#    from scratch);
# 2. runs/qmine: runs/cmine's query adapter alone on every training question (37 min);
# 3. runs/soup-3: the three runs' query adapters and compressors averaged with equal weights
#    (soup.py), the generator runs/qmine's (= runs/cmine's);
# 4. installed as float16 (training/default_ckpt.py). Set INSTALL=0 to stop before that.
set -e
cd "$(dirname "$0")/../../.."
here=docs/runs/2026-12-04-query-soup
prev=runs/shipped-3e789d7
if [ ! -f $prev/adapters.safetensors ]; then
  mkdir -p $prev
  for f in adapters.safetensors clara_config.json; do
    git show 3e789d7:clara/checkpoints/smollm2-135m-16x/$f > $prev/$f
  done
fi
[ -d runs/cmine2/joint/final ] || INIT=$prev bash docs/runs/2026-12-03-compressor-retrieval/mined.sh
[ -d runs/qmine/joint/final ] || bash docs/runs/2026-12-03-query-on-mined/run.sh
[ -f runs/soup-3/adapters.safetensors ] || .venv/bin/python $here/soup.py runs/soup-3 \
  runs/qmine/joint/final runs/cmine/joint/final runs/cmine2/joint/final --adapters query,compressor
[ "${INSTALL:-1}" = 0 ] && exit 0
exec .venv/bin/python -c "
import clara  # noqa: F401  (the BLAS path before mlx loads)
from pathlib import Path
from training.default_ckpt import install
from training.default_recipe import PACKAGED
print(install(Path('runs/soup-3'), PACKAGED))"
