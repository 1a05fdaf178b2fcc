"""OpenAI's file_search guide, run against clara-serve with only base_url changed: upload a
file, put it in a vector store, ask with the file_search tool, print the cited answer; then
stream a follow-up chained with previous_response_id.

python clients/file_search.py notes.pdf "What does the report conclude?" [--base-url URL]
"""

from __future__ import annotations

import argparse
import os

from openai import OpenAI


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("file", help="a PDF, text or Markdown file")
    p.add_argument("question")
    p.add_argument("--follow-up", default="Tell me more.")
    p.add_argument("--base-url", default=os.environ.get("CLARA_URL", "http://127.0.0.1:8000/v1"))
    p.add_argument("--api-key", default=os.environ.get("CLARA_API_KEY", "unused"))
    args = p.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    model = client.models.list().data[0].id

    # 1. upload the file and 2. index it into a vector store (a clara collection)
    with open(args.file, "rb") as fh:
        file = client.files.create(file=fh, purpose="assistants")
    store = client.vector_stores.create(name="knowledge_base")
    attached = client.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=file.id)
    if attached.status != "completed":
        raise SystemExit(f"indexing failed: {attached.last_error}")

    # 3. ask with the file_search tool
    tools = [{"type": "file_search", "vector_store_ids": [store.id]}]
    response = client.responses.create(
        model=model, input=args.question, tools=tools, include=["file_search_call.results"]
    )
    print(response.output_text)
    for item in response.output:
        if item.type == "message":
            for note in item.content[0].annotations:
                print(f"  cites {note.filename} ({note.file_id})")

    # 4. a streamed follow-up that remembers the first turn
    stream = client.responses.create(
        model=model, input=args.follow_up, tools=tools,
        previous_response_id=response.id, stream=True,
    )  # fmt: skip
    for event in stream:
        if event.type == "response.output_text.delta":
            print(event.delta, end="", flush=True)
    print()


if __name__ == "__main__":
    main()
