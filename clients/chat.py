"""Ask one question with the official openai SDK and print the answer with its sources.

python clients/chat.py ["What does the assert statement do?"] [--base-url URL] [--top-k 5]
"""

from __future__ import annotations

import argparse
import os

from openai import OpenAI


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "question",
        nargs="?",
        default="What does the assert statement do?",
        help="(default: a question about `make demo`'s documents)",
    )
    p.add_argument("--base-url", default=os.environ.get("CLARA_URL", "http://127.0.0.1:8000/v1"))
    p.add_argument("--api-key", default=os.environ.get("CLARA_API_KEY", "unused"))
    p.add_argument("--top-k", type=int, default=5)
    args = p.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    model = client.models.list().data[0].id
    resp = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": args.question}],
        max_tokens=128,
        extra_body={"top_k": args.top_k},  # CLaRa extension fields travel in extra_body
    )
    message = resp.choices[0].message
    print(message.content)
    print("\nSources:")
    for s in (message.model_extra or {}).get("sources", []):
        start, end = s.get("page_start"), s.get("page_end")  # PDFs: the pages the chunk spans
        pages = (
            ""
            if start is None
            else f"  p. {start}"
            if end in (None, start)
            else f"  pp. {start}-{end}"
        )
        print(f"  {s['score']:.3f}  {s['filename']}{pages}")
    print(
        f"\nusage: {resp.usage.prompt_tokens} prompt positions, {resp.usage.completion_tokens} tokens"
    )


if __name__ == "__main__":
    main()
