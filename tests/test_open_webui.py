"""clara-serve behind Open WebUI (its OpenAI connection): a chat as Open WebUI 0.12.4 sends it
(streamed, with its built-in tools, usage asked for) is answered, and with --source-events
every retrieved chunk reaches Open WebUI as a "source" event line carrying its text."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.test_server_harness import DOCS, ServerProcess, add_documents


@pytest.fixture(scope="module")
def cm(tiny_llama_dir: Path):
    from clara.checkpoint import load_clara

    return load_clara(tiny_llama_dir, None, dtype=None)


#: two of the 28 tools Open WebUI 0.12.4 sends with every chat (native function calling)
TOOLS = [
    {"type": "function", "function": {
        "name": "get_current_timestamp", "description": "Get the current Unix timestamp",
        "parameters": {"type": "object", "properties": {}, "required": []}}},
    {"type": "function", "function": {
        "name": "search_knowledge_bases", "description": "Search the user's knowledge bases",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                       "required": ["query"]}}},
]  # fmt: skip


def test_a_chat_as_open_webui_sends_it_gets_a_source_event_per_chunk(
    tiny_llama_dir: Path, cm, tmp_path: Path
) -> None:
    root = tmp_path / "index"
    add_documents(root, cm, DOCS)
    with ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(root), "--source-events",
        "--served-model-name", "clara", env={"CLARA_HOME": str(tmp_path / "home")},
    ) as server:  # fmt: skip
        server.wait_ready()
        body = {
            "stream": True, "model": "clara", "tools": TOOLS,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "top_k": 3, "max_tokens": 4,
        }  # fmt: skip
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as r:
            assert r.status_code == 200, r.read()
            lines = [x[6:] for x in r.iter_lines() if x.startswith("data: ")]
        # streaming off (a chat model's setting in Open WebUI): the same cards, in the
        # answer's top-level `sources`, which Open WebUI shows (it showed none: an audit)
        plain = {k: v for k, v in body.items() if k != "stream_options"} | {"stream": False}
        whole = httpx.post(f"{server.url}/v1/chat/completions", json=plain, timeout=60).json()
    assert lines[-1] == "[DONE]"
    parsed = [json.loads(x) for x in lines[:-1]]
    events = [p["event"] for p in parsed if "event" in p]
    chunks = [p for p in parsed if "event" not in p]
    sources = next(c["choices"][0]["delta"]["sources"] for c in chunks
                   if c["choices"] and "sources" in c["choices"][0]["delta"])  # fmt: skip
    assert len(events) == len(sources) == 3
    assert "event" in parsed[1] and "event" not in parsed[0]  # (before the answer: right
    # after the role chunk, so that an answer the user stops keeps them)
    texts = dict(DOCS)
    cards = set()
    for event, source in zip(events, sources):
        assert event["type"] == "source"
        data = event["data"]
        assert data["source"]["name"].startswith(source["filename"])
        assert data["document"] == [texts[source["filename"]]]  # (the chunk's whole text)
        meta = data["metadata"][0]
        assert meta["name"] == data["source"]["name"] and meta["score"] == source["score"]
        cards.add(meta["source"])  # (Open WebUI makes a card of each: one per chunk)
    assert len(cards) == 3
    done = next(c for c in chunks if c["choices"] and "sources" in c["choices"][0]["delta"])
    assert "annotations" not in done["choices"][0]["delta"]  # (Open WebUI shows each as a card
    # holding only a file's name)
    assert chunks[-1]["usage"]["completion_tokens"] >= 1  # (the usage chunk, still last)
    assert all("choices" in c for c in chunks)
    assert [c["metadata"][0]["source"] for c in whole["sources"]] == [
        e["data"]["metadata"][0]["source"] for e in events
    ]
    assert whole["sources"][0] == events[0]["data"]
