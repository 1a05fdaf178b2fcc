"""Streamed chats timed against a clara-serve, for the benchmarks that compare chats alone with
chats beside other work (bench_upload_contention.py: an upload; bench_keys.py: another API
key's flood): the questions, one timed chat, a small index to ask them of, and the table and
ratio of the two phases."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench._common import ROOT, markdown_table, sample_texts

QUESTIONS = [
    "What does the assert statement do?",
    "How does a for loop work?",
    "What is a lambda expression?",
    "What does the with statement do?",
    "How are exceptions raised?",
    "What is the global statement for?",
    "What does the return statement do?",
    "How does the import statement find modules?",
]
TOPICS = 6  # Python documentation topics indexed (`index_topics`)


def chat(client, model: str, question: str, max_tokens: int) -> tuple[float, float]:
    """(seconds to the first token, seconds in all) of one streamed chat."""
    start = time.perf_counter()
    first = None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        stream=True,
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    return (first if first is not None else total), total


def chats(client, model: str, n: int, max_tokens: int) -> list[tuple[float, float]]:
    """`n` chats one after another, the questions in turn."""
    return [chat(client, model, QUESTIONS[i % len(QUESTIONS)], max_tokens) for i in range(n)]


def index_topics(tmp: Path) -> Path:
    """An index (under `tmp`) of the first TOPICS documentation topics, made by clara-index."""
    docs = tmp / "docs"
    docs.mkdir()
    for i, text in enumerate(sample_texts()[:TOPICS]):
        (docs / f"topic{i}.txt").write_text(text)
    index = tmp / "index"
    print(f"indexing {TOPICS} documentation topics ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "indexing.cli", "add", str(docs), "--index", str(index), "-q"],
        check=True, cwd=ROOT,
    )  # fmt: skip
    return index


def summary(name: str, rows: list[tuple[float, float]]) -> list:
    ttft, total = [r[0] for r in rows], [r[1] for r in rows]

    def p90(xs: list[float]) -> float:
        return sorted(xs)[max(0, round(0.9 * len(xs)) - 1)]

    return [name, len(rows), f"{statistics.median(ttft):.2f}", f"{p90(ttft):.2f}",
            f"{statistics.median(total):.2f}", f"{p90(total):.2f}"]  # fmt: skip


def phases_table(what: str, names: dict, runs: dict, alone: str, beside: str) -> str:
    """The table of each run's chats `alone` and `beside` the other work (`runs`: setting ->
    {"alone": chats, "beside": chats}, `names`: setting -> its row name)."""
    rows = []
    for key, r in runs.items():
        rows.append(summary(f"{names[key]}: {alone}", r["alone"]))
        rows.append(summary(f"{names[key]}: {beside}", r["beside"]))
    return markdown_table(
        [what, "n", "TTFT median s", "TTFT p90 s", "total median s", "total p90 s"], rows
    )


def slowdown(run: dict) -> float:
    """The chats' median time beside the other work over their median time alone."""
    return statistics.median(x[1] for x in run["beside"]) / statistics.median(
        x[1] for x in run["alone"]
    )
