#!/usr/bin/env bash
# How the default adapters shipped since 2026-12-04 (evening) were made: a record, with that
# session's paths (runs/soup-3 from git history, step 2 run by hand on the GPU). To train on
# over several GPU sessions: docs/runs/gpu-chain. Run from the repo root.
# Steps 2 needs a CUDA GPU with PyTorch (an H200 took 400 + 90 s of training); the rest runs here.
set -euo pipefail
PY=.venv/bin/python
RUN=docs/runs/2026-12-04-h200

# 1. the data, tokenised with clara's own prompt layout (about a minute on 2 cores)
$PY $RUN/prep.py --out .gpu/data.npz

# 2. on the GPU machine, with the base weights clara converted and the adapters shipped before
#    (runs/soup-3, made by docs/runs/2026-12-04-query-soup/ship.sh; the folder
#    clara/checkpoints/smollm2-135m-16x holds today's adapters, not those): phase A (compressor,
#    generator, memory tokens) then phase B (query adapter)
#    python3 $RUN/train_torch.py --model ~/.cache/clara/models/smollm2-135m/model.safetensors \
#        --init runs/soup-3/adapters.safetensors \
#        --data .gpu/data.npz --out runs/h200-raw --seconds-a 400 --seconds-b 90

# 3. back here: a clara checkpoint of the run, then 0.3 of it and 0.7 of the adapters shipped
#    before (every adapter and the memory rows averaged as low-rank updates, cut back to rank 16)
$PY $RUN/assemble.py runs/h200-raw runs/h200
$PY docs/runs/2026-12-04-query-soup/soup.py runs/h200-all30 runs/h200 \
    runs/soup-3 --weights 0.3,0.7 --adapters query,compressor,generator

# 4. held-out evaluation (about 12 minutes each), then install
$PY bench/bench_heldout.py --checkpoint runs/h200-all30 --tag h200-all30 --out runs/heldout-full \
    --questions 200 --top-k 2 --collection all
$PY -c "import clara; from pathlib import Path; from training.default_ckpt import install; \
install(Path('runs/h200-all30'), Path('clara/checkpoints/smollm2-135m-16x'))"
