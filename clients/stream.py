"""Stream an answer token by token; the sources arrive once, in a chunk before the last.

python clients/stream.py "What does the lambda keyword create?"
"""

from __future__ import annotations

import os
import sys

from openai import OpenAI


def main() -> None:
    question = " ".join(sys.argv[1:]) or "What does the lambda keyword create?"
    client = OpenAI(
        base_url=os.environ.get("CLARA_URL", "http://127.0.0.1:8000/v1"),
        api_key=os.environ.get("CLARA_API_KEY", "unused"),
    )
    model = client.models.list().data[0].id
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        stream=True,
        stream_options={"include_usage": True},
    )
    sources = []
    for chunk in stream:
        if chunk.usage:
            print(f"\n\nusage: {chunk.usage.prompt_tokens} + {chunk.usage.completion_tokens}")
        for choice in chunk.choices:
            print(choice.delta.content or "", end="", flush=True)
            sources = (choice.delta.model_extra or {}).get("sources") or sources
    print("\nSources:")
    for s in sources:
        print(f"  {s['score']:.3f}  {s['filename']}: {s['snippet'][:80]!r}")


if __name__ == "__main__":
    main()
