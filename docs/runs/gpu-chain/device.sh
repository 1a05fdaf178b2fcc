#!/usr/bin/env bash
# One call of a chain of GPU sessions (README.md beside this file), run in the repo root on the
# device. What a call carries arrives under .gpu/; it is kept in /tmp/g, which outlives the call
# while the machine stays warm (30 s between calls).
#   bash docs/runs/gpu-chain/device.sh keep            a transfer call: keep what it carried
#   bash docs/runs/gpu-chain/device.sh train SECONDS   the training call (writes to $OUT)
set -uo pipefail
G=/tmp/g HERE=docs/runs/gpu-chain RUN=docs/runs/2026-12-04-h200
mkdir -p "$G"
[ -d .gpu ] && cp -r .gpu/. "$G"/
ls -lR "$G" | grep -v '^total'
[ "${1:-}" = keep ] && exit 0
[ "${1:-}" = train ] || { echo "usage: device.sh keep | train SECONDS"; exit 2; }
SECONDS_A=${2:?how many seconds of phase A}
chain() { python3 -c "import json,sys; print(json.load(open('$HERE/chain.json'))[sys.argv[1]])" "$1"; }
PARTS=$(chain parts) SEED=$(chain seed) BATCH=$(chain batch) TOTAL=$(chain total_seconds_a)
MODEL=""
for i in $(seq 0 $((PARTS - 1))); do
  f="$G/m/model.xz.$i"
  [ -f "$f" ] || { echo "MISSING $f: carry it again (the machine went cold between calls?)"; exit 3; }
  MODEL="$MODEL${MODEL:+,}$f"
done
INIT=$(chain init)
echo "$(chain init_sha256)  $INIT" | sha256sum -c --quiet || { echo "$INIT is not the chain's"; exit 3; }
RESUME=()
if [ -f "$G/prev/state.json" ]; then RESUME=(--resume "$G/prev"); fi
python3 -c "import torch, safetensors" || { echo "this python3 has no PyTorch (or safetensors)"; exit 3; }
GIB=$(python3 -c "import torch; c = torch.cuda; print(c.get_device_properties(0).total_memory >> 30 if c.is_available() else 0)")
ACCUM=1; [ "$GIB" -lt 120 ] && ACCUM=2  # batch 64 peaks near 105 GiB: halves on an H100
CPU=()
if [ "$GIB" = 0 ]; then  # a rehearsal here (README.md): a few CPU steps of batch 4
  CPU=(--cpu) BATCH=4
else
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
fi
echo "batch $BATCH in $ACCUM, seed $SEED, ${RESUME[*]:-from $INIT}"
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
timeout -s INT $((SECONDS_A + 120)) python3 $RUN/train_torch.py --model "$MODEL" --init "$INIT" \
  "${RESUME[@]}" --data $HERE/data.npz.xz --out "$OUT" --seconds-a "$SECONDS_A" --seconds-b 0 \
  --total-seconds-a "$TOTAL" --batch "$BATCH" --accum "$ACCUM" --seed "$SEED" --save-every 60 "${CPU[@]}" \
  2>&1 | tee "$OUT/train.txt"
