#!/usr/bin/env bash
# After a chain session's training call, here (README.md beside this file). From the repo root:
#   bash docs/runs/gpu-chain/after.sh FILES_AT   keep the call's outputs, commit them to history,
#                                                and read the held-out oracle rows (about 5 min)
set -euo pipefail
HERE=docs/runs/gpu-chain RUN=docs/runs/2026-12-04-h200 PY=.venv/bin/python
FROM=${1:?the training call reply files_at folder}
chain() { $PY -c "import json,sys; print(json.load(open('$HERE/chain.json'))[sys.argv[1]])" "$1"; }
set_chain() { $PY -c "import json,sys; p='$HERE/chain.json'; c=json.load(open(p)); c[sys.argv[1]]=json.loads(sys.argv[2]); open(p,'w').write(json.dumps(c, indent=1)+'\n')" "$1" "$2"; }
for f in compressor generator tokens; do [ -f "$FROM/$f.safetensors" ] || { echo "no $f.safetensors in $FROM"; exit 1; }; done
[ -f "$FROM/state.json" ] || { echo "no state.json in $FROM: the call saved nothing"; exit 1; }
git diff --cached --quiet || { echo "other changes are staged: commit or unstage them first"; exit 1; }
if [ "$(chain state_commit)" != None ] \
  && git show "$(chain state_commit):$HERE/state/state.json" | cmp -s - "$FROM/state.json"; then
  echo "$FROM holds the state already committed at $(chain state_commit): nothing to keep"
else

# the chain's log and the state, in git history only (the tree travels with every device call)
mkdir -p $HERE/state
cp "$FROM"/{compressor,generator,tokens}.safetensors "$FROM/state.json" $HERE/state/
cat "$FROM/log.jsonl" >> $HERE/log.jsonl
tail -n 40 "$FROM/train.txt" > $HERE/last-call.txt 2>/dev/null || : > $HERE/last-call.txt
git add -f $HERE/state $HERE/log.jsonl $HERE/last-call.txt
git commit -q -m "GPU chain: state after session $(( $(chain sessions) + 1 )): $(tr -d '\n ' < $HERE/state/state.json)"
SHA=$(git rev-parse HEAD)
git rm -r -q $HERE/state
set_chain state_commit "\"$SHA\""
set_chain sessions "$(( $(chain sessions) + 1 ))"
git add $HERE/chain.json
git commit -q -m "GPU chain: the state of $SHA kept in history, out of the tree (before.sh restores it)"
echo "state committed at $SHA"
fi

# a clara checkpoint of it, and the held-out oracle rows (not the end-to-end ones: bench_heldout
# without --oracle-only, with --baselines, once the chain ends)
mkdir -p runs/gpu-chain-raw && cp "$FROM"/*.safetensors "$FROM/log.jsonl" runs/gpu-chain-raw/
$PY $RUN/assemble.py runs/gpu-chain-raw runs/gpu-chain
$PY bench/bench_heldout.py --checkpoint runs/gpu-chain --tag "chain-$(chain sessions)" \
  --out runs/heldout-chain --questions 200 --oracle-only
