"""Several questions at once with the async openai SDK (the server queues them fairly).

python clients/async_chat.py
"""

from __future__ import annotations

import asyncio
import os

from openai import AsyncOpenAI

QUESTIONS = [
    "What does the assert statement do?",
    "What does pass do?",
    "When is the else clause of a while loop executed?",
    "What does the global statement declare?",
]


async def ask(client: AsyncOpenAI, model: str, question: str) -> str:
    resp = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=64
    )
    files = {s["filename"] for s in resp.choices[0].message.model_extra.get("sources", [])}
    return (
        f"Q: {question}\nA: {resp.choices[0].message.content}\n   from: {', '.join(sorted(files))}"
    )


async def main() -> None:
    client = AsyncOpenAI(
        base_url=os.environ.get("CLARA_URL", "http://127.0.0.1:8000/v1"),
        api_key=os.environ.get("CLARA_API_KEY", "unused"),
    )
    model = (await client.models.list()).data[0].id
    for line in await asyncio.gather(*(ask(client, model, q) for q in QUESTIONS)):
        print(line, end="\n\n")


if __name__ == "__main__":
    asyncio.run(main())
