#!/usr/bin/env bash
# The same exchange with curl. Usage: clients/curl.sh "What does the assert statement do?"
set -euo pipefail
BASE=${CLARA_URL:-http://127.0.0.1:8000/v1}
KEY=${CLARA_API_KEY:-unused}
Q=${1:-What does the assert statement do?}
MODEL=$(curl -sf "$BASE/models" -H "Authorization: Bearer $KEY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
BODY=$(python3 -c 'import json,sys; print(json.dumps({"model": sys.argv[1], "messages": [{"role": "user", "content": sys.argv[2]}], "max_tokens": 64, "top_k": 3}))' "$MODEL" "$Q")
echo "== non-streaming"
curl -sS "$BASE/chat/completions" -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" -d "$BODY"
echo
echo "== streaming (Server-Sent Events)"
curl -sSN "$BASE/chat/completions" -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
  -d "${BODY%\}}, \"stream\": true}"
