"""The raw HTTP exchange with httpx: non-streaming JSON, then Server-Sent Events.

python clients/httpx_chat.py "What does del do?"
"""

from __future__ import annotations

import json
import os
import sys

import httpx

BASE = os.environ.get("CLARA_URL", "http://127.0.0.1:8000/v1")
HEADERS = {"Authorization": f"Bearer {os.environ.get('CLARA_API_KEY', 'unused')}"}


def main() -> None:
    question = " ".join(sys.argv[1:]) or "What does del do?"
    with httpx.Client(base_url=BASE, headers=HEADERS, timeout=300) as http:
        model = http.get("/models").json()["data"][0]["id"]
        body = {
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 64,
        }
        r = http.post("/chat/completions", json=body)
        if r.status_code != 200:
            raise SystemExit(f"error {r.status_code}: {r.json()['error']['message']}")
        data = r.json()
        print(data["choices"][0]["message"]["content"])
        print([s["filename"] for s in data["choices"][0]["message"]["sources"]])

        with http.stream("POST", "/chat/completions", json={**body, "stream": True}) as s:
            for line in s.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue  # ": keep-alive" comments and the end marker
                for choice in json.loads(line[6:])["choices"]:
                    print(choice["delta"].get("content") or "", end="", flush=True)
        print()


if __name__ == "__main__":
    main()
