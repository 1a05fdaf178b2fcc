"""A small terminal chat: keeps the conversation, streams answers, lists sources.

python clients/terminal_chat.py [--base-url URL]     (commands: /sources, /reset, /quit)
"""

from __future__ import annotations

import argparse
import os

from openai import OpenAI


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--base-url", default=os.environ.get("CLARA_URL", "http://127.0.0.1:8000/v1"))
    p.add_argument("--api-key", default=os.environ.get("CLARA_API_KEY", "unused"))
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument(
        "--mode",
        choices=("memory", "text", "mixed"),
        help="what the model reads (default: the server's --mode): chunk memories, raw text, "
        "or the best chunk's text and the others' memories",
    )
    args = p.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    model = client.models.list().data[0].id
    print(f"clara chat with {model}. /sources shows the last answer's sources, /reset, /quit.")
    history: list[dict] = []
    sources: list[dict] = []
    while True:
        try:
            line = input("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            history.clear()
            sources.clear()
            continue
        if line == "/sources":
            for s in sources:
                start, end = s.get("page_start"), s.get("page_end")
                page = (
                    ""
                    if start is None
                    else f" p. {start}"
                    if end in (None, start)
                    else f" pp. {start}-{end}"
                )
                print(f"  {s['score']:.3f} {s['filename']}{page}: {s['snippet'][:70]!r}")
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        print("clara> ", end="", flush=True)
        answer = ""
        extra = {"top_k": args.top_k, **({"mode": args.mode} if args.mode else {})}
        stream = client.chat.completions.create(
            model=model, messages=history, stream=True, extra_body=extra
        )
        for chunk in stream:
            for choice in chunk.choices:
                answer += choice.delta.content or ""
                print(choice.delta.content or "", end="", flush=True)
                sources = (choice.delta.model_extra or {}).get("sources") or sources
        print()
        history.append({"role": "assistant", "content": answer})


if __name__ == "__main__":
    main()
