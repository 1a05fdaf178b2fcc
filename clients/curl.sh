#!/usr/bin/env bash
# The same exchange with curl. Usage: clients/curl.sh "What does the assert statement do?"
# CLARA_URL (default http://127.0.0.1:8000/v1) and CLARA_API_KEY point it at another server.
set -euo pipefail
BASE=${CLARA_URL:-http://127.0.0.1:8000/v1}
KEY=${CLARA_API_KEY:-unused}
Q=${1:-What does the assert statement do?}
# --fail-with-body: a refused request (wrong key, wrong port) shows the server's own message
MODELS=$(curl -sS --fail-with-body "$BASE/models" -H "Authorization: Bearer $KEY") || { echo "$MODELS" >&2; exit 1; }
MODEL=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])' <<<"$MODELS")
BODY=$(python3 -c 'import json,sys; print(json.dumps({"model": sys.argv[1], "messages": [{"role": "user", "content": sys.argv[2]}], "max_tokens": 64, "top_k": 3}))' "$MODEL" "$Q")
echo "== non-streaming"
curl -sS "$BASE/chat/completions" -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" -d "$BODY"
echo
echo "== streaming (Server-Sent Events)"
curl -sSN "$BASE/chat/completions" -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
  -d "${BODY%\}}, \"stream\": true}"
