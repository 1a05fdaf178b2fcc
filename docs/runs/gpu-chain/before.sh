#!/usr/bin/env bash
# Before a chain session's device calls, here (README.md beside this file). From the repo root:
#   bash docs/runs/gpu-chain/before.sh          the base weights in parts, the last state, the calls
#   bash docs/runs/gpu-chain/before.sh data     once, at the chain's start: its data file
set -euo pipefail
HERE=docs/runs/gpu-chain RUN=docs/runs/2026-12-04-h200 PY=.venv/bin/python
MODEL=${CLARA_HOME:-$HOME/.cache/clara}/models/smollm2-135m/model.safetensors
chain() { $PY -c "import json,sys; print(json.load(open('$HERE/chain.json'))[sys.argv[1]])" "$1"; }
set_chain() { $PY -c "import json,sys; p='$HERE/chain.json'; c=json.load(open(p)); c[sys.argv[1]]=json.loads(sys.argv[2]); open(p,'w').write(json.dumps(c, indent=1)+'\n')" "$1" "$2"; }
git check-ignore -q .gpu/x || { echo ".gpu/ is not ignored: it would travel with every call"; exit 1; }

if [ "${1:-}" = data ]; then  # one data file for the whole chain: prep.py's depends on the machine
  $PY $RUN/prep.py --out .gpu/data.npz
  xz -6 -T0 -c .gpu/data.npz > $HERE/data.npz.xz
  set_chain data_sha256 "\"$(sha256sum $HERE/data.npz.xz | cut -d' ' -f1)\""
  echo "$HERE/data.npz.xz written: commit it with chain.json"; exit 0
fi
echo "$(chain data_sha256)  $HERE/data.npz.xz" | sha256sum -c --quiet
echo "$(chain init_sha256)  $(chain init)" | sha256sum -c --quiet \
  || { echo "$(chain init) changed since the chain began: restore it from git history"; exit 1; }
[ -f "$MODEL" ] || make model
echo "$(chain model_sha256)  $MODEL" | sha256sum -c --quiet

# the base weights, xz'd, in parts that fit a call beside the working tree (64 MiB in all)
PARTS=$(chain parts)
mkdir -p .gpu/m
if [ ! -f .gpu/m/model.xz.$((PARTS - 1)) ]; then
  echo "compressing the base weights (about 3 minutes)"
  xz -9 -T0 -c "$MODEL" > .gpu/model.xz
  split -n "$PARTS" -d -a 1 .gpu/model.xz .gpu/m/model.xz. && rm .gpu/model.xz
fi
TREE=$(git ls-files -z --cached --others --exclude-standard \
  | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}' || true)
BIG=$(stat -c %s .gpu/m/model.xz.0)
echo "working tree $((TREE >> 20)) MiB + a part $((BIG >> 20)) MiB (64 at most a call)"
[ $((TREE + BIG)) -le $((60 << 20)) ] \
  || { echo "a call would carry too much: raise \"parts\" in chain.json, rm -r .gpu/m, rerun"; exit 1; }

# the state the last session left, kept in git history (the tree stays small)
rm -rf .gpu/prev
if [ "$(chain state_commit)" != None ]; then
  git cat-file -e "$(chain state_commit)^{commit}" 2>/dev/null || {
    echo "the last state's commit $(chain state_commit) is not in this clone's history"
    echo "(fetch it, or unshallow: git fetch --unshallow); nothing restored"; exit 1; }
  mkdir -p .gpu/prev
  for f in compressor generator tokens; do
    git show "$(chain state_commit):$HERE/state/$f.safetensors" > .gpu/prev/$f.safetensors
  done
  git show "$(chain state_commit):$HERE/state/state.json" > .gpu/prev/state.json
  echo "resuming from $(chain state_commit): $(tr -d '\n ' < .gpu/prev/state.json)"
fi

SECS=$(chain seconds_per_session)
echo
echo "device calls, back to back (a machine idle 30 s goes back, and /tmp/g with it):"
for i in $(seq 0 $((PARTS - 2))); do
  echo "  run carry=[\".gpu/m/model.xz.$i\"] timeout_s=120 command='bash $HERE/device.sh keep'"
done
[ -d .gpu/prev ] && echo "  run carry=[\".gpu/prev\"] timeout_s=120 command='bash $HERE/device.sh keep'"
echo "  run carry=[\".gpu/m/model.xz.$((PARTS - 1))\"] timeout_s=$((SECS + 180)) command='bash $HERE/device.sh train $SECS'"
echo "then give_back, and: bash $HERE/after.sh <files_at of the training call>"
