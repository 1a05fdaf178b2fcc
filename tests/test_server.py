"""clara-serve against a real uvicorn process: the OpenAI SDK (sync + async), errors, auth,
sources, embeddings, metrics. A tiny random model answers gibberish, which is all the
protocol needs; retrieval is still exact because fresh query and compressor adapters agree.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from clara import __version__
from clara.retrieval import Fusion
from tests.test_server_harness import API_KEY, DOCS, ServerProcess, add_documents, metric

MODEL = "clara-tiny"
RIVER = DOCS[0][1]


@pytest.fixture(scope="module")
def cm(tiny_llama_dir: Path):
    from clara.checkpoint import load_clara

    return load_clara(tiny_llama_dir, None, dtype=None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, cm):
    tmp = tmp_path_factory.mktemp("serve")
    add_documents(tmp / "index", cm, DOCS)
    with ServerProcess(
        "--model", str(tiny_llama_dir),
        "--index", str(tmp / "index"),
        "--served-model-name", MODEL,
        "--api-key", API_KEY,
        "--max-tokens", "16",
        env={"CLARA_HOME": str(tmp / "home")},
        log=tmp / "server.log",
    ) as proc:  # fmt: skip
        proc.index = tmp / "index"
        yield proc.wait_ready()  # (stopped on leaving, ready or not)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)


def post(server: ServerProcess, path: str, body, *, key: str | None = API_KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers.update(kw.pop("headers", {}))
    if isinstance(body, (dict, list)):
        return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=60, **kw)
    headers["Content-Type"] = "application/json"
    return httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=60, **kw)


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assert_error(r: httpx.Response, status: int, param=None, code=None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert "Traceback" not in err["message"]
    assert err["param"] == param and err["code"] == code, err
    return err


# ---- models and chat -----------------------------------------------------------------------
def test_models_list_served_name(client: openai.OpenAI, tiny_llama_dir: Path) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL, MODEL + "-no-retrieval"]
    card, bare = (m.model_extra for m in models.data)
    assert card["retrieval_modes"] == ["hybrid", "dense", "lexical"]
    assert card["retrieval_mode"] == "hybrid" and bare["retrieval_modes"] is None
    assert models.data[0].object == "model" and models.data[0].owned_by == "clara"
    assert client.models.retrieve(MODEL).id == MODEL
    assert models.data[0].model_extra["mode"] == "memory"  # fresh adapters: the server's --mode
    assert [m.model_extra["retrieval"] for m in models.data] == [True, False]


def test_the_no_retrieval_model_answers_without_the_documents(client: openai.OpenAI) -> None:
    """Open WebUI asks the chat's model for its title, tags and follow-ups too: each was
    answered from the documents, with sources (a title came back as "2019"). A chat app's
    task model can be this id instead, which reads no documents."""
    bare, question = MODEL + "-no-retrieval", DOCS[0][1]
    assert client.models.retrieve(bare).model_extra["retrieval"] is False
    got = client.chat.completions.create(model=bare, messages=ask(question), max_tokens=4)
    assert got.model == bare and got.model_extra["retrieval"]["status"] == "disabled"
    assert got.choices[0].message.sources == []
    rag = client.chat.completions.create(model=MODEL, messages=ask(question), max_tokens=4)
    assert rag.choices[0].message.sources  # (the same question: retrieved for)
    resp = client.responses.create(model=bare, input=question, max_output_tokens=4, store=False)
    assert resp.model == bare and resp.model_extra["retrieval"]["status"] == "disabled"
    tools = [{"type": "file_search", "vector_store_ids": ["vs_unknown"]}]  # not used: no search
    resp = client.responses.create(model=bare, input=question, max_output_tokens=4, tools=tools)
    assert [item.type for item in resp.output] == ["message"]


def test_without_retrieval_the_messages_are_read_as_sent(
    server: ServerProcess, client: openai.OpenAI, cm
) -> None:
    """Asked without retrieval, the model read clara's "Answer the question as briefly as
    possible from the documents." as its system prompt ("Hi" got "I'm not familiar with the
    document you requested"). It now reads the messages as sent; text parts are lines; a
    field the API does not have is named in the server's log."""
    bare = MODEL + "-no-retrieval"
    parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}]
    for messages, sent in [
        (ask("Hi"), ask("Hi")),
        ([{"role": "system", "content": "Be terse."}, *ask("Hi")], None),
        ([{"role": "user", "content": parts}], ask("Hello\nworld")),
    ]:
        sent = sent or messages
        want = len(cm.tokenizer.apply_chat_template(sent, add_generation_prompt=True))
        got = client.chat.completions.create(model=bare, messages=messages, max_tokens=1)
        assert got.usage.prompt_tokens == want, messages
    r = post(server, "/v1/chat/completions", {"messages": ask("Hi"), "max_token": 3, "top_k": 0})
    assert r.status_code == 200
    deadline = time.time() + 5
    while "ignored fields not in its API: max_token" not in server.log() and time.time() < deadline:
        time.sleep(0.1)
    assert "ignored fields not in its API: max_token" in server.log()


def test_a_conversation_begun_with_tool_calls_goes_on(
    server: ServerProcess, client: openai.OpenAI, cm
) -> None:
    """An agent audit: a history holding another model's tool calls and their results (what
    LangGraph and the Agents SDK send after a tool ran) was a 400. They are read as lines of
    the assistant's turn: the bare model's prompt is exactly that conversation's; with
    retrieval, the chat is answered with its sources."""
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"}}  # fmt: skip
    messages = [
        *ask("Weather?"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
        *ask(DOCS[0][1]),
    ]
    read = [*ask("Weather?"), {"role": "assistant", "content": (
        "Tool call: get_weather({})\nTool result (get_weather): Sunny")}, *ask(DOCS[0][1])]  # fmt: skip
    want = len(cm.tokenizer.apply_chat_template(read, add_generation_prompt=True))
    bare = client.chat.completions.create(
        model=MODEL + "-no-retrieval", messages=messages, max_tokens=1, tools=TOOLS
    )
    assert bare.usage.prompt_tokens == want
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, tools=TOOLS)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.model_extra["sources"]


#: a JSON schema the tiny random model's answer is held to: a few tokens to write in all
YES_NO = {
    "type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"],
    "additionalProperties": False,
}  # fmt: skip


def test_structured_output_holds_the_answer_to_json(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    """An agent audit: `response_format` JSON modes (LangChain's with_structured_output,
    the Agents SDK's output_type) were a 400. Decoding is held to the schema, so even the
    tiny random model answers valid JSON; a free-text chat decoding beside one is
    unchanged (the grammar masks its own row only)."""
    fmt = {"type": "json_schema", "json_schema": {"name": "yes_no", "schema": YES_NO}}
    r = client.chat.completions.create(
        model=MODEL, messages=ask("Is it true?"), max_tokens=24, response_format=fmt
    )
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    assert json.loads(r.choices[0].message.content)["answer"] in ("yes", "no")
    free = client.chat.completions.create(model=MODEL, messages=ask("hi"), max_tokens=12)
    with ThreadPoolExecutor(4) as pool:  # (one batch: JSON rows beside a free one)
        held = [pool.submit(client.chat.completions.create, model=MODEL, max_tokens=24,
                            messages=ask("Is it true?"), response_format=fmt)
                for _ in range(3)]  # fmt: skip
        beside = pool.submit(client.chat.completions.create, model=MODEL, messages=ask("hi"),
                             max_tokens=12)  # fmt: skip
        assert beside.result().choices[0].message.content == free.choices[0].message.content
        assert all(json.loads(h.result().choices[0].message.content) for h in held)
    # any JSON object: the answer starts one (the tiny model seldom ends it in 8 tokens)
    obj = client.chat.completions.create(
        model=MODEL, messages=ask("hi"), max_tokens=8, response_format={"type": "json_object"},
        stream=True,
    )  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in obj if c.choices).startswith("{")
    # a json_schema without its schema is any JSON object, as OpenAI's chat API has it (the
    # Responses API needs the schema: a 400 there)
    named = client.chat.completions.create(
        model=MODEL, messages=ask("hi"), max_tokens=8,
        response_format={"type": "json_schema", "json_schema": {"name": "any"}},
    )  # fmt: skip
    assert named.choices[0].message.content.startswith("{")


def test_base_model_id_is_accepted(client: openai.OpenAI, tiny_llama_dir: Path) -> None:
    resp = client.chat.completions.create(
        model=str(tiny_llama_dir), messages=ask("hello"), max_tokens=2
    )
    assert resp.model == MODEL


def test_chat_non_streaming_shape_and_usage(client: openai.OpenAI, cm) -> None:
    from clara.prompt import memory_prompt

    resp = client.chat.completions.create(model=MODEL, messages=ask(RIVER), max_tokens=5)
    assert resp.id.startswith("chatcmpl-") and resp.object == "chat.completion"
    assert resp.created > 0 and resp.model == MODEL
    choice = resp.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.finish_reason == "length"
    # The generator read the question + 5 memory blocks of n_mem positions each.
    blank = [np.zeros((cm.n_mem, cm.hidden_size), np.float32)] * 5
    expected = memory_prompt(cm, RIVER, [_mx(b) for b in blank]).positions
    assert resp.usage.prompt_tokens == expected
    assert resp.usage.completion_tokens == 5
    assert resp.usage.total_tokens == expected + 5


def test_usage_counts_the_prompt_positions_the_prefix_cache_held(client: openai.OpenAI) -> None:
    """A client-library audit: cached tokens were always 0, while /metrics counted positions
    reused from the prefix cache. A system message asked twice is held the second time; the
    Responses API and streams say the same."""
    system = "You answer as a ferry captain. " + " ".join(f"dock{i}" for i in range(40))
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]
    kwargs = dict(model=MODEL, messages=msgs, max_tokens=1, extra_body={"retrieval": False})
    first = client.chat.completions.create(**kwargs).usage
    again = client.chat.completions.create(**kwargs).usage
    held = again.prompt_tokens_details.cached_tokens
    assert first.prompt_tokens_details.cached_tokens < held < again.prompt_tokens
    assert held >= 40  # (the system message: what the two share with nothing else asked)
    streamed = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    assert streamed[-1].usage.prompt_tokens_details.cached_tokens >= held
    r = client.responses.create(
        model=MODEL, instructions=system, input="hi", max_output_tokens=1,
        extra_body={"retrieval": False}, store=False,
    )  # fmt: skip
    assert r.usage.input_tokens_details.cached_tokens >= 40


def _mx(a):
    import mlx.core as mx

    return mx.array(a)


def test_streaming_matches_non_streaming(client: openai.OpenAI) -> None:
    kwargs = dict(model=MODEL, messages=ask("The cat sat on the mat."), max_tokens=12)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finish = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and chunks[finish[0]].choices[0].finish_reason == "length"
    with_sources = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.model_extra]
    assert with_sources == [finish[0] - 1]  # once, in the chunk before the finishing one
    delta = chunks[with_sources[0]].choices[0].delta
    assert delta.model_extra["sources"] == whole.choices[0].message.model_extra["sources"]
    last = chunks[-1]
    assert last.choices == [] and last.usage.model_dump() == whole.usage.model_dump()


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=ask("hi"), max_tokens=3, stream=True)
    )
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


def test_with_include_usage_every_chunk_says_usage(server: ServerProcess) -> None:
    """OpenAI's shape, which strict typed clients check (a JS developer's audit): with
    include_usage every chunk carries "usage", null but in the last; without, none does."""
    for asked in (True, False):
        body = {"messages": ask("hi"), "max_tokens": 3, "stream": True,
                "stream_options": {"include_usage": asked}}  # fmt: skip
        r = post(server, "/v1/chat/completions", body)
        chunks = [json.loads(line[6:]) for line in r.text.splitlines()
                  if line.startswith("data: {")]  # fmt: skip
        assert chunks and all(("usage" in c) == asked for c in chunks), r.text
        if asked:
            assert [c["usage"] is None for c in chunks] == [True] * (len(chunks) - 1) + [False]


def test_an_idle_connection_outlives_the_clients_keep_alive(server: ServerProcess) -> None:
    """The server keeps an idle keep-alive connection open past the 5 s after which httpx
    (so the openai SDK) drops its own: a request sent on a pooled connection then never meets
    the server closing it (a "connection reset by peer" with uvicorn's default of 5 s)."""
    import socket

    request = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()

    def response(sock: socket.socket) -> bytes:
        """One whole response: its head, then Content-Length bytes of body (which may come in
        another segment; read early, it would pass for the next reply)."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the connection after {data[:80]!r}"
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection mid-body"
            body += chunk
        return head

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for wait in (6, 0):
            sock.sendall(request)
            head = response(sock)
            assert head.startswith(b"HTTP/1.1 200"), head[:80]
            time.sleep(wait)  # longer than httpx's keepalive_expiry (5 s)


def test_raw_sse_ends_with_done(server: ServerProcess) -> None:
    body = {"model": MODEL, "messages": ask("hi"), "max_tokens": 2, "stream": True}
    with httpx.stream(
        "POST",
        f"{server.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e[6:])["object"] == "chat.completion.chunk" for e in events[:-1])


def test_async_client_streaming_and_not(server: ServerProcess) -> None:
    async def run() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
        kwargs = dict(model=MODEL, messages=ask("Water boils"), max_tokens=6)
        whole = await client.chat.completions.create(**kwargs)
        parts = []
        async for chunk in await client.chat.completions.create(**kwargs, stream=True):
            parts.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
        await client.close()
        return whole.choices[0].message.content, "".join(parts)

    whole, streamed = asyncio.run(run())
    assert whole == streamed


def test_concurrent_requests_all_answered(server: ServerProcess) -> None:
    async def run() -> list:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)

        async def one(i: int):
            kwargs = dict(model=MODEL, messages=ask(DOCS[i % len(DOCS)][1]), max_tokens=6)
            if i % 2:
                chunks = [
                    c async for c in await client.chat.completions.create(**kwargs, stream=True)
                ]
                return chunks[-1].choices[0].finish_reason
            return (await client.chat.completions.create(**kwargs)).choices[0].finish_reason

        try:
            return await asyncio.gather(*(one(i) for i in range(16)))
        finally:
            await client.close()

    assert asyncio.run(run()) == ["length"] * 16


@pytest.mark.parametrize("gap", [0.02, 0.0], ids=["staggered", "together"])
def test_concurrent_greedy_answers_equal_sequential_ones(server: ServerProcess, gap) -> None:
    """Continuous batching: requests that decode together (joining and leaving at different
    steps) answer exactly what each answers alone; memory and text prompts mixed. Sent all at
    once, they queue behind one another and are prefilled in batches (`Decoder.add_many`)."""
    questions = [(DOCS[i % len(DOCS)][1][: 20 + 9 * i], 4 + 3 * i) for i in range(6)]

    def kwargs(i: int) -> dict:
        text, n = questions[i]
        mode = {"mode": "text"} if i % 3 == 2 else {}
        return dict(model=MODEL, messages=ask(text), max_tokens=n, extra_body=mode)

    sync = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    alone = [sync.chat.completions.create(**kwargs(i)).choices[0].message.content for i in range(6)]

    async def run() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)

        async def one(i: int) -> str:
            await asyncio.sleep(gap * i)  # arrive while the others decode, or all at once
            resp = await client.chat.completions.create(**kwargs(i))
            return resp.choices[0].message.content

        try:
            return await asyncio.gather(*(one(i) for i in range(6)))
        finally:
            await client.close()

    def batched() -> float:
        text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
        return sum(
            metric(text.text, "clara_prefill_passes_total", requests=str(n)) for n in range(2, 17)
        )

    before = batched()
    assert asyncio.run(run()) == alone
    if gap == 0.0:
        assert batched() > before  # some of them really were prefilled together


# ---- sources -------------------------------------------------------------------------------
def test_a_source_says_which_section_it_is_from(server, client: openai.OpenAI, cm) -> None:
    """A docs repository's audit: a source named its file only (a docs tree has a README.md
    in every folder), never the section its chunk is under, which the index knows."""
    text = "The widget store is vacuumed every night at two o'clock."
    add_documents(server.index, cm, [("guide.md", text)], "sections", "Frob guide / Upkeep")
    r = client.chat.completions.create(
        model=MODEL, messages=ask(text), max_tokens=1,
        extra_body={"collection": "sections", "retrieval_mode": "lexical"},
    )  # fmt: skip
    assert r.choices[0].message.model_extra["sources"][0]["section"] == "Frob guide / Upkeep"
    plain = client.chat.completions.create(model=MODEL, messages=ask(DOCS[0][1]), max_tokens=1)
    assert plain.choices[0].message.model_extra["sources"][0].get("section") is None
    response = client.responses.create(
        model=MODEL, input=text, include=["file_search_call.results"], max_output_tokens=16,
        tools=[{"type": "file_search", "vector_store_ids": ["sections"]}],
    )  # fmt: skip
    found = response.output[0].results[0]
    assert found.attributes["section"] == "Frob guide / Upkeep"


@pytest.mark.parametrize("name,text", DOCS)
def test_identical_text_is_the_first_source(client: openai.OpenAI, name: str, text: str) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=ask(text), max_tokens=1)
    message = resp.choices[0].message
    sources = message.sources  # extension field, kept by the SDK
    assert len(sources) == 5 and [s["index"] for s in sources] == [1, 2, 3, 4, 5]
    top = sources[0]
    assert top["filename"] == name and top["snippet"] == text
    # hybrid (the default): first by memory vector and by words (1/61 + 1/61 at k=60)
    assert top["retrieval_mode"] == "hybrid" and top["ranks"] == {"dense": 1, "lexical": 1}
    assert top["score"] == pytest.approx(Fusion().score(top["ranks"]), abs=1e-5)
    assert all(s["score"] < top["score"] for s in sources[1:])
    assert top["document_id"].startswith("doc-") and top["collection"] == "default"
    if name.endswith(".pdf"):
        assert (top["page_start"], top["page_end"]) == (3, 3)
        assert top["url"] == f"file:///docs/{name}#page=3"
    else:
        assert top["url"] == f"file:///docs/{name}"
    cite = message.annotations[0]  # typed by the SDK
    assert cite.type == "url_citation" and cite.url_citation.url == top["url"]
    assert cite.url_citation.end_index == len(message.content)
    assert resp.model_extra["retrieval"]["status"] == "ok"


def test_sources_under_each_retrieval_mode(client: openai.OpenAI) -> None:
    def sources(question: str, mode: str, top_k: int = 3) -> tuple[list[dict], dict]:
        resp = client.chat.completions.create(
            model=MODEL, messages=ask(question), max_tokens=1,
            extra_body={"retrieval_mode": mode, "top_k": top_k},
        )  # fmt: skip
        return resp.choices[0].message.sources, resp.model_extra["retrieval"]

    dense, info = sources(RIVER, "dense")
    assert info["retrieval_mode"] == "dense" and dense[0]["filename"] == "river.txt"
    assert dense[0]["score"] == pytest.approx(1.0, abs=1e-3)  # cosine of identical memories
    assert [s["ranks"] for s in dense] == [{"dense": 1}, {"dense": 2}, {"dense": 3}]
    lexical, info = sources("Which stone bridge and old mill?", "lexical")
    assert [s["filename"] for s in lexical] == ["river.txt"]  # the only one with those words
    assert lexical[0]["ranks"] == {"lexical": 1} and lexical[0]["retrieval_mode"] == "lexical"
    hybrid, info = sources("Which stone bridge and old mill?", "hybrid")
    assert info["retrieval_mode"] == "hybrid" and len(hybrid) == 3
    river = next(s for s in hybrid if s["filename"] == "river.txt")
    assert river["ranks"]["lexical"] == 1
    assert river["score"] == pytest.approx(Fusion().score(river["ranks"]), abs=1e-5)
    for s in hybrid:  # each source's fused score is the sum of its reciprocal ranks
        expected = Fusion().score(s["ranks"])
        assert s["score"] == pytest.approx(expected, abs=1e-5)
    fallback, _ = sources("What is it?", "lexical")  # no usable word: dense alone
    assert len(fallback) == 3 and {s["retrieval_mode"] for s in fallback} == {"dense"}
    nothing, info = sources("zebra", "lexical")
    assert nothing == [] and info["status"] == "no_match"


def test_top_k_retrieval_off_and_text_mode(client: openai.OpenAI, cm) -> None:
    from clara.prompt import text_prompt

    def create(**extra):
        return client.chat.completions.create(
            model=MODEL, messages=ask(RIVER), max_tokens=1, extra_body=extra
        )

    two = create(top_k=2).choices[0].message.sources
    assert len(two) == 2 and two[0]["filename"] == "river.txt"
    for off in (create(retrieval=False), create(top_k=0)):
        assert off.choices[0].message.sources == [] and off.choices[0].message.annotations == []
        assert off.model_extra["retrieval"]["status"] == "disabled"
        # (the messages as sent: no "answer ... from the documents" system prompt)
        assert off.usage.prompt_tokens == text_prompt(cm, RIVER, None, None, None, None).positions
    text = create(mode="text", top_k=3)
    assert [s["filename"] for s in text.choices[0].message.sources][:1] == ["river.txt"]
    chunks = [s["snippet"] for s in text.choices[0].message.sources]
    assert text.usage.prompt_tokens == text_prompt(cm, RIVER, chunks).positions


def test_chunks_past_the_context_are_dropped_lowest_ranked_first(client: openai.OpenAI, cm):
    """An R2R user's audit: a top_k the server takes (up to 100) was a 400
    context_length_exceeded in text mode once its chunks did not fit, where the Responses API
    dropped some. The lowest-ranked chunks go; the client's own messages are read whole."""
    from clara.prompt import text_prompt

    limit = client.models.list().data[0].model_extra["max_model_len"]
    extra = {"mode": "text", "top_k": 3, "retrieval_mode": "lexical"}

    def create(question: str):
        return client.chat.completions.create(
            model=MODEL, messages=ask(question), max_tokens=1, extra_body=extra
        )

    # (the words side searches each distinct word once: the same chunks whatever the repeats)
    chunks = [s["snippet"] for s in create("mill water cat").choices[0].message.sources]
    assert len(chunks) == 3

    def question(n: int) -> str:
        return "mill water cat" + " mill" * n

    lo, hi = 0, limit  # the shortest question whose prompt with all three chunks is too long
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (
            (mid + 1, hi) if text_prompt(cm, question(mid), chunks).positions < limit else (lo, mid)
        )
    asked = question(lo)
    assert text_prompt(cm, asked, chunks[:2]).positions < limit  # (two fit)
    fitted = create(asked)
    assert [s["snippet"] for s in fitted.choices[0].message.sources] == chunks[:2]
    assert fitted.usage.prompt_tokens == text_prompt(cm, asked, chunks[:2]).positions
    with pytest.raises(openai.BadRequestError) as info:  # (the question alone too long: a 400)
        create(question(limit))
    assert info.value.code == "context_length_exceeded"


def test_mixed_mode_reads_the_best_chunk_as_text(client: openai.OpenAI, cm) -> None:
    from clara.prompt import mixed_prompt

    resp = client.chat.completions.create(
        model=MODEL, messages=ask(RIVER), max_tokens=2, extra_body={"mode": "mixed", "top_k": 3}
    )
    sources = resp.choices[0].message.sources
    assert [s["filename"] for s in sources][:1] == ["river.txt"] and len(sources) == 3
    assert resp.model_extra["retrieval"]["mode"] == "mixed"
    blank = [_mx(np.zeros((cm.n_mem, cm.hidden_size), np.float32))] * 2
    expected = mixed_prompt(cm, RIVER, [sources[0]["snippet"]], blank).positions
    assert resp.usage.prompt_tokens == expected
    default = client.chat.completions.create(model=MODEL, messages=ask(RIVER), max_tokens=1)
    assert default.model_extra["retrieval"]["mode"] == "memory"  # the server's --mode


def test_a_repeated_best_chunk_is_prefilled_from_the_prefix_cache(
    server: ServerProcess, client: openai.OpenAI, cm
) -> None:
    from clara.decode import text_prefix
    from clara.prompt import mixed_prompt

    def reused() -> float:
        auth = {"Authorization": f"Bearer {API_KEY}"}
        text = httpx.get(f"{server.url}/metrics", headers=auth, timeout=30).text
        return metric(text, "clara_prefix_cache_reused_positions_total", adapter="generator")

    body = dict(model=MODEL, max_tokens=2, extra_body={"mode": "mixed", "top_k": 3})
    first = client.chat.completions.create(messages=ask(RIVER + " Where?"), **body)
    before = reused()
    again = client.chat.completions.create(messages=ask(RIVER + " When?"), **body)
    sources = again.choices[0].message.sources
    assert [s["snippet"] for s in sources] == [
        s["snippet"] for s in first.choices[0].message.sources
    ]
    blank = [_mx(np.zeros((cm.n_mem, cm.hidden_size), np.float32))] * 2
    prompt = mixed_prompt(cm, RIVER + " When?", [sources[0]["snippet"]], blank)
    assert reused() - before == len(text_prefix(prompt))  # the template and the best chunk
    assert len(text_prefix(prompt)) > 20


def test_history_is_bounded_and_counted(client: openai.OpenAI, cm) -> None:
    from clara.prompt import memory_prompt

    turns = []
    for i in range(3):
        turns += [
            {"role": "user", "content": f"question {i}"},
            {"role": "assistant", "content": f"answer {i}"},
        ]
    messages = [{"role": "system", "content": "Be brief."}, *turns, *ask("last question")]
    resp = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
    blank = [_mx(np.zeros((cm.n_mem, cm.hidden_size), np.float32))] * 5
    expected = memory_prompt(cm, "last question", blank, turns[-4:], "Be brief.").positions
    assert resp.usage.prompt_tokens == expected


def test_text_content_parts(client: openai.OpenAI) -> None:
    parts = [
        {"type": "text", "text": "The river runs past the old mill "},
        {"type": "text", "text": "and under the stone bridge."},
    ]
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": parts}], max_tokens=1
    )
    assert resp.choices[0].message.sources[0]["filename"] == "river.txt"


# ---- sampling options ----------------------------------------------------------------------
def test_stop_string_and_list(client: openai.OpenAI, server: ServerProcess) -> None:
    kwargs = dict(model=MODEL, messages=ask("The train leaves"), max_tokens=16)
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    start = next(i for i in range(3, len(full) - 3) if "\ufffd" not in full[i : i + 3])
    stop = full[start : start + 3]
    for value in (stop, ["zzzz-never", stop]):
        resp = client.chat.completions.create(**kwargs, stop=value)
        assert resp.choices[0].finish_reason == "stop"
        assert resp.choices[0].message.content == full[: full.index(stop)]
        streamed = list(client.chat.completions.create(**kwargs, stop=value, stream=True))
        assert (
            "".join(c.choices[0].delta.content or "" for c in streamed) == full[: full.index(stop)]
        )
    # bounded (each is looked for in every token's text): a clear 400, not a slow batch
    for value in (["a"] * 17, "x" * 1001, ["x" * 1001]):
        r = post(server, "/v1/chat/completions", {"messages": ask("hi"), "stop": value})
        assert r.status_code == 400 and r.json()["error"]["param"].startswith("stop"), r.text
    ok = post(server, "/v1/chat/completions", {"messages": ask("hi"), "stop": ["a"] * 16})
    assert ok.status_code == 200


def test_max_completion_tokens_wins_and_ends_with_length(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL, messages=ask("hello"), max_tokens=9, max_completion_tokens=3
    )
    assert resp.choices[0].finish_reason == "length" and resp.usage.completion_tokens == 3


def test_seeded_sampling_is_reproducible(client: openai.OpenAI) -> None:
    kwargs = dict(model=MODEL, messages=ask("hello"), max_tokens=8, temperature=1.0, top_p=0.9)
    a = client.chat.completions.create(**kwargs, seed=7).choices[0].message.content
    b = client.chat.completions.create(**kwargs, seed=7).choices[0].message.content
    assert a == b


# ---- errors --------------------------------------------------------------------------------
def test_logprobs_plain_and_streamed(client: openai.OpenAI) -> None:
    kw = dict(model=MODEL, messages=ask(RIVER), max_tokens=6, logprobs=True, top_logprobs=3)
    resp = client.chat.completions.create(**kw)
    tokens = resp.choices[0].logprobs.content
    assert len(tokens) == resp.usage.completion_tokens
    for t in tokens:
        assert t.logprob <= 0 and t.bytes == list(t.token.encode())
        assert [a.logprob for a in t.top_logprobs] == sorted(
            [a.logprob for a in t.top_logprobs], reverse=True
        )
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token  # greedy: the best
        assert t.top_logprobs[0].logprob == pytest.approx(t.logprob)
    streamed = [
        entry
        for chunk in client.chat.completions.create(**kw, stream=True)
        for choice in chunk.choices
        if choice.logprobs is not None
        for entry in choice.logprobs.content
    ]
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [
        (t.token, round(t.logprob, 4)) for t in tokens
    ]
    plain = client.chat.completions.create(model=MODEL, messages=ask(RIVER), max_tokens=2)
    assert plain.choices[0].logprobs is None


def test_logprob_bytes_join_into_the_answer(client: openai.OpenAI) -> None:
    """A character split across tokens: each entry carries its token's own bytes (OpenAI's
    "bytes:\\x.." as its text), and joined they are the answer's bytes."""
    messages = [
        {"role": "system", "content": "Repeat the user's text exactly."},
        {"role": "user", "content": "☕☕ 日本語のテキスト ☕"},
    ]
    resp = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=24, logprobs=True,
        extra_body={"retrieval": False},
    )  # fmt: skip
    content = resp.choices[0].message.content
    raw = b"".join(bytes(t.bytes) for t in resp.choices[0].logprobs.content)
    assert any(ord(c) > 127 for c in content)  # the model did write some non-ASCII
    assert raw.decode("utf-8", "replace") == content
    partial = [t for t in resp.choices[0].logprobs.content if t.token.startswith("bytes:")]
    for t in partial:
        assert t.token == "bytes:" + "".join(f"\\x{b:02x}" for b in t.bytes)


#: the code of each refusal of something clara cannot do (by `param`), in the tests below
UNSUPPORTED = {
    "tool_choice": "unsupported_value", "response_format.type": "unsupported_value",
    "messages.[0].audio": "unsupported_parameter",
    "messages.[0].content.[0].type": "unsupported_value", "reasoning_effort": "unsupported_value",
    "web_search_options": "unsupported_parameter", "n": "unsupported_value",
}  # fmt: skip
TOOLS = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}]


def test_tools_sent_with_a_chat_are_not_called_and_it_is_answered(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    """An Open WebUI audit: it sends its built-in tools with every chat (no tool_choice), and
    every chat was a 400. With tool_choice "auto" or none the model may answer with text, as
    this one always does."""
    for choice in ({}, {"tool_choice": "auto"}, {"tool_choice": "none"}):
        r = client.chat.completions.create(
            model=MODEL, messages=ask("hi"), max_tokens=2, tools=TOOLS, **choice
        )
        assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "length"
    deadline = time.time() + 10
    while "answered with text: clara-serve calls no tools" not in server.log():
        assert time.time() < deadline, server.log()[-2000:]
        time.sleep(0.1)


def test_malformed_json_is_400(server: ServerProcess) -> None:
    err = assert_error(post(server, "/v1/chat/completions", b'{"messages": [}'), 400)
    assert "JSON" in err["message"]
    assert_error(post(server, "/v1/chat/completions", b"[1, 2]"), 400)


@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": ask("hi"), "n": 2}, "n"),
        ({"messages": ask("hi"), "tool_choice": "required", "tools": TOOLS}, "tool_choice"),
        (
            {
                "messages": ask("hi"),
                "tools": TOOLS,
                "tool_choice": {"type": "function", "function": {"name": "now"}},
            },
            "tool_choice",
        ),  # fmt: skip
        ({"messages": ask("hi"), "top_logprobs": 21}, "top_logprobs"),
        ({"messages": ask("hi"), "temperature": 3}, "temperature"),
        ({"messages": ask("hi"), "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.[0].role"),
        ({"messages": [{"role": "user"}]}, "messages.[0]"),  # only an assistant may omit it
        ({"messages": [{"role": "system", "content": None}, *ask("hi")]}, "messages.[0]"),
        (
            {"messages": [{"role": "tool", "tool_call_id": "1"}, *ask("hi")]},
            "messages.[0]",
        ),  # (a tool's result needs its content)
        (
            {"messages": [{"role": "assistant", "audio": {"id": "a"}}, *ask("hi")]},
            "messages.[0].audio",
        ),  # fmt: skip
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x/i.png"}}],
                    }
                ]
            },
            "messages.[0].content.[0].type",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "messages.[0].content.[0].type",
        ),
        ({"messages": ask("hi"), "response_format": {"type": "yaml"}}, "response_format.type"),
        (
            {
                "messages": ask("hi"),
                "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 5}}},
            },
            ("response_format.json_schema.schema", "invalid_schema"),
        ),
        (
            {"messages": ask("hi"), "response_format": {"type": "json_schema"}},
            ("response_format.json_schema", "missing_required_parameter"),
        ),  # fmt: skip
        (  # (the answer ends where its JSON does: a review)
            {"messages": ask("hi"), "ignore_eos": True, "response_format": {"type": "json_object"}},
            "ignore_eos",
        ),
        ({"messages": ask("hi"), "collection": "../etc"}, "collection"),
        # an OpenAI-parameters audit: each was answered as if it had not been sent
        ({"messages": ask("hi"), "response_format": {"json_schema": {}}}, "response_format.type"),
        ({"messages": ask("hi"), "stream_options": {"include_usage": True}}, "stream_options"),
        ({"messages": ask("hi"), "top_logprobs": 2}, "top_logprobs"),
        ({"messages": ask("hi"), "logprobs": False, "top_logprobs": 2}, "top_logprobs"),
        ({"messages": ask("hi"), "reasoning_effort": "high"}, "reasoning_effort"),
        ({"messages": ask("hi"), "web_search_options": {}}, "web_search_options"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages.[0].content.[0]",
        ),
    ],
)
def test_invalid_or_unsupported_requests_are_400(server: ServerProcess, body: dict, param) -> None:
    # what clara cannot do has OpenAI's code (an agent audit: clients that branch on it got
    # none); a malformed request has none
    param, code = param if isinstance(param, tuple) else (param, UNSUPPORTED.get(param))
    if param == "response_format.type" and "type" not in body["response_format"]:
        code = "invalid_type"  # (no type at all: malformed)
    err = assert_error(post(server, "/v1/chat/completions", body), 400, param=param, code=code)
    assert err["type"] == "invalid_request_error"
    if param == "collection":  # (it showed the regular expression; a web chat audit)
        assert err["message"] == (
            "'../etc' is not a collection name: use letters, digits, '.', '_' or '-', starting "
            "with a letter or digit (at most 128)"
        )


def test_what_chat_apps_send_is_answered(server: ServerProcess, client: openai.OpenAI) -> None:
    """From a client-compatibility audit: Open WebUI forwards its frequency penalty (users from
    Ollama set ~1.1), LibreChat-style histories carry `tool_calls: []` on assistant turns:
    each was a 400. n > 1 said only what pydantic says."""
    history = [*ask("hi"), {"role": "assistant", "content": "Hello.", "tool_calls": []}]
    body = {"messages": [*history, *ask("more")], "max_tokens": 8, "ignore_eos": True}
    plain = post(server, "/v1/chat/completions", body).json()["choices"][0]["message"]
    pen = post(
        server, "/v1/chat/completions", {**body, "frequency_penalty": 1.1, "presence_penalty": 2}
    )
    assert pen.status_code == 200, pen.text
    assert pen.json()["choices"][0]["message"]["content"] != plain["content"]
    streamed = client.chat.completions.create(
        model=MODEL, messages=ask("hi"), max_tokens=4, frequency_penalty=-0.5, stream=True
    )
    assert [c for c in streamed if c.choices and c.choices[0].finish_reason]
    for field, value in (("frequency_penalty", 2.5), ("presence_penalty", -3)):
        assert_error(post(server, "/v1/chat/completions", {**body, field: value}), 400, field)
    n2 = post(server, "/v1/chat/completions", {**body, "n": 2})
    err = assert_error(n2, 400, "n", "unsupported_value")
    assert "send the request n times" in err["message"]
    calls = [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    history[-1]["tool_calls"] = calls  # a real one is read as text (an agent audit)
    called = post(server, "/v1/chat/completions", {"messages": [*history, *ask("more")]})
    assert called.status_code == 200, called.text
    calls[0]["function"] = {"arguments": "{}"}  # (without its name: a 400 that names it)
    bad = {"messages": [*history, *ask("more")]}
    assert_error(
        post(server, "/v1/chat/completions", bad), 400, "messages.[1].tool_calls.[0].function.name"
    )


def test_unknown_fields_are_tolerated(server: ServerProcess) -> None:
    body = {"model": MODEL, "messages": ask("hi"), "max_tokens": 1, "frobnicate": {"x": 1}}
    assert post(server, "/v1/chat/completions", body).status_code == 200


def test_unknown_model_is_404(client: openai.OpenAI, server: ServerProcess) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=ask("hi"))
    assert info.value.code == "model_not_found"
    body = {"model": "gpt-4o", "messages": ask("hi")}
    assert_error(post(server, "/v1/chat/completions", body), 404, "model", "model_not_found")
    assert_error(
        httpx.get(f"{server.url}/v1/models/gpt-4o", headers={"Authorization": f"Bearer {API_KEY}"}),
        404,
        "model",
        "model_not_found",
    )


def test_a_base_url_without_v1_or_with_a_slash_too_many_is_told_so(server: ServerProcess):
    """A chat front-end audit: base URLs without /v1 got a bare "Unknown request URL", and
    /v1/models/ said model '' does not exist."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    r = httpx.post(f"{server.url}/chat/completions", json={"messages": ask("hi")}, headers=auth)
    assert "did you mean /v1/chat/completions?" in assert_error(r, 404)["message"]
    r = httpx.get(f"{server.url}/models", headers=auth)
    assert "did you mean /v1/models?" in assert_error(r, 404)["message"]
    r = httpx.get(f"{server.url}/v1/models/", headers=auth)
    assert "GET /v1/models lists" in assert_error(r, 404, "model", "model_not_found")["message"]


def test_unknown_collection_is_404(server: ServerProcess) -> None:
    body = {"messages": ask("hi"), "collection": "nope"}
    assert_error(
        post(server, "/v1/chat/completions", body), 404, "collection", "collection_not_found"
    )


def test_context_length_exceeded(client: openai.OpenAI, server: ServerProcess) -> None:
    def cancelled() -> float:  # (a refused prompt counted as a generation cancelled: a soak)
        auth = {"Authorization": f"Bearer {API_KEY}"}
        deadline = time.monotonic() + 60
        while True:  # once an earlier test's generations have ended (a stream it left)
            text = httpx.get(f"{server.url}/metrics", headers=auth, timeout=30).text
            busy = metric(text, "clara_jobs_running") + metric(text, "clara_queue_depth")
            if not busy or time.monotonic() > deadline:
                return metric(text, "clara_generations_total", reason="cancelled")
            time.sleep(0.1)

    # the worker ends jobs in order: an earlier test's job whose client left while it waited
    # (counted when the worker next looks, and not "running") is counted before this ends
    client.chat.completions.create(model=MODEL, messages=ask("river"), max_tokens=1)
    before = cancelled()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ask("river " * 3000))
    assert info.value.code == "context_length_exceeded"
    # OpenAI's words first: litellm's ContextWindowExceededError (and its fallbacks) go by them
    assert info.value.body["message"].startswith("This model's maximum context length is ")
    # the worker ends jobs in order: once the next one is answered, that one's end is counted
    client.chat.completions.create(model=MODEL, messages=ask("river"), max_tokens=1)
    assert cancelled() == before
    body = {"messages": ask("river " * 3000), "stream": True}  # streams fail before any byte
    assert_error(
        post(server, "/v1/chat/completions", body), 400, "messages", "context_length_exceeded"
    )
    long_ago = [
        {"role": "user", "content": "river " * 3000},
        {"role": "assistant", "content": "ok"},
    ]
    with pytest.raises(openai.BadRequestError):  # a long turn before the question: a 400 ...
        client.chat.completions.create(model=MODEL, messages=long_ago + ask("river"), max_tokens=1)
    cut = client.chat.completions.create(  # ... unless truncation "auto" drops it
        model=MODEL, messages=long_ago + ask("river"), max_tokens=1,
        extra_body={"truncation": "auto"},
    )  # fmt: skip
    assert cut.usage.prompt_tokens < 500
    with pytest.raises(openai.BadRequestError) as info:  # the Responses API names its input
        client.responses.create(model=MODEL, input="river " * 3000)
    assert info.value.code == "context_length_exceeded" and info.value.param == "input"


def test_huge_prompts_are_refused_before_tokenizing(
    client: openai.OpenAI, server: ServerProcess
) -> None:
    """Megabytes in a message: a 400 at once (it cannot fit whatever its tokens), not seconds of
    tokenizing on the model thread; a body past the JSON limit: 413 before it is parsed."""
    big = "a" * 5_000_000
    start = time.perf_counter()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ask(big))
    assert info.value.code == "context_length_exceeded" and "5000000 characters" in str(info.value)
    assert info.value.body["message"].startswith("This model's maximum context length is ")
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=big)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input=big)
    assert info.value.code == "context_length_exceeded" and info.value.param == "input"
    assert info.value.body["message"].startswith("This model's maximum context length is ")
    assert time.perf_counter() - start < 15  # tokenizing 5 MB three times took far longer
    # a body announced past the limit: refused from its headers, before a byte of it is read
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            + f"\r\nAuthorization: Bearer {API_KEY}\r\nContent-Length: {33 * 2**20}".encode()
            + b"\r\n\r\n"
        )
        reply = http.client.HTTPResponse(sock)
        reply.begin()
        error = json.loads(reply.read())["error"]
    assert reply.status == 413 and error["code"] == "request_too_large"
    assert "MiB limit" in error["message"]
    client.chat.completions.create(model=MODEL, messages=ask("still serving?"), max_tokens=2)


def test_text_that_is_not_unicode_is_a_400(client: openai.OpenAI, server: ServerProcess) -> None:
    """JSON's \\ud800 escape parses to a lone surrogate, which no tokenizer takes: the request
    is refused and names where, and requests batched with it are answered (not a 500 each)."""
    bad = '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud800 hi"}]}]}'
    field = "messages[0].content[0].text"
    err = assert_error(post(server, "/v1/chat/completions", bad), 400, field)
    assert err["message"].startswith(f"{field} is not valid Unicode")  # no "Value error, "
    also = '{"input": [{"role": "user", "content": "\\ud800"}]}'
    assert_error(post(server, "/v1/responses", also), 400, "input[0].content")
    with ThreadPoolExecutor(6) as pool:  # sent together: admitted and encoded together
        sent = [pool.submit(post, server, "/v1/chat/completions", bad if i == 2 else
                            {"messages": ask(f"question {i}"), "max_tokens": 2})
                for i in range(6)]  # fmt: skip
        codes = [f.result().status_code for f in sent]
    assert codes == [200, 200, 400, 200, 200, 200]
    # in a large body too (looked through off the event loop, before the model's validators)
    long = "river " * 200_000
    big = f'{{"messages": [{{"role": "user", "content": "{long}\\ud800"}}]}}'
    assert len(big) > 1 << 20
    assert_error(post(server, "/v1/chat/completions", big), 400, "messages[0].content")
    # bytes that are not UTF-8 (a Latin-1 file sent as it is): said so, and which (it was
    # "There was an error parsing the body")
    latin = '{"messages": [{"role": "user", "content": "caf\xe9"}]}'.encode("latin-1")
    r = post(server, "/v1/chat/completions", latin)
    assert r.status_code == 400 and "not UTF-8 (byte 46: b'\\xe9')" in r.json()["error"]["message"]


def test_a_body_of_a_million_numbers_is_refused_before_validation(server: ServerProcess) -> None:
    """A security audit: 32 MiB of token ids held the event loop for about 10 s while the
    request was validated (/health did not answer); several at once kept the server deaf."""
    ids = ", ".join(["1"] * 1000)
    body = '{"input": [' + ", ".join([f"[{ids}]"] * 1001) + "]}"
    error = assert_error(post(server, "/v1/embeddings", body), 400)
    assert "more than 1000000 JSON values" in error["message"]


def test_client_errors_log_no_traceback(client: openai.OpenAI, server: ServerProcess) -> None:
    """A 4xx is the client's to fix: the server log says nothing of it with a traceback, so no
    client can flood the log (a 500 still logs its traceback)."""
    before = server.log().count("Traceback")
    body = {"messages": ask("hi"), "collection": "nope"}
    assert_error(
        post(server, "/v1/chat/completions", body), 404, "collection", "collection_not_found"
    )
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=ask("river " * 3000))
    assert server.log().count("Traceback") == before


def test_unknown_route_and_method(server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    assert_error(httpx.get(f"{server.url}/v1/nothing", headers=headers), 404)
    assert_error(httpx.get(f"{server.url}/v1/chat/completions", headers=headers), 405)


# ---- auth ----------------------------------------------------------------------------------
def test_api_key_required_except_health(server: ServerProcess) -> None:
    body = {"messages": ask("hi"), "max_tokens": 1}
    for key in (None, "wrong"):
        err = assert_error(
            post(server, "/v1/chat/completions", body, key=key), 401, code="invalid_api_key"
        )
        assert "API key" in err["message"]
    assert_error(
        post(server, "/v1/chat/completions", b"{bad", key=None), 401, code="invalid_api_key"
    )
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    for path in ("/health", "/"):  # HEAD too (curl -I, uptime monitors), no key, no body
        head = httpx.head(f"{server.url}{path}")
        assert head.status_code == 200 and head.content == b"", path
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    # Azure OpenAI's header and Anthropic-style clients' (before: 401 without a Bearer)
    for name in ("api-key", "x-api-key"):
        assert httpx.get(f"{server.url}/v1/models", headers={name: API_KEY}).status_code == 200
        assert httpx.get(f"{server.url}/v1/models", headers={name: "wrong"}).status_code == 401


def test_requests_for_another_host_or_from_another_site_are_refused(server: ServerProcess):
    """Before: a web page that rebinds its own name to 127.0.0.1 (DNS rebinding) could read
    a server without a key, and a form on any page could upload files (a security audit)."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    for path in ("/health", "/v1/models"):  # a name this machine-only server does not have
        r = httpx.get(f"{server.url}{path}", headers={**auth, "Host": "evil.example:80"})
        err = assert_error(r, 403, code="forbidden_host")
        assert "--allow-host evil.example" in err["message"]
    port = server.url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]"):  # this machine's
        assert httpx.get(f"{server.url}/health", headers={"Host": host}).status_code == 200
    body = {"messages": ask("hi"), "max_tokens": 1}
    for origin in ("http://evil.example", "null"):  # a page elsewhere: no change, key or not
        r = post(server, "/v1/chat/completions", body, headers={"Origin": origin})
        assert_error(r, 403, code="cross_origin_request")
    r = httpx.post(f"{server.url}/v1/files", headers={**auth, "Origin": "http://evil.example"},
                   files={"file": ("planted.txt", b"x")}, data={"purpose": "assistants"})  # fmt: skip
    assert_error(r, 403, code="cross_origin_request")
    ours = post(server, "/v1/chat/completions", body, headers={"Origin": server.url})
    assert ours.status_code == 200, ours.text  # the web chat's own page
    r = httpx.get(f"{server.url}/v1/models", headers={**auth, "Origin": "http://evil.example"})
    assert r.status_code == 200  # reading: the browser keeps the answer from the page (no CORS)
    assert "access-control-allow-origin" not in r.headers


def test_the_access_gate_takes_allowed_hosts_and_non_ascii_keys() -> None:
    """--allow-host names a reverse proxy's host (and lets its pages write); a key that is
    not ASCII matches (it never could: the header was read as Latin-1, the key as UTF-8)."""
    from fastapi import FastAPI

    from clara_cli.http import AccessGate

    app = FastAPI()
    app.post("/x")(lambda: {"ok": True})
    gated = AccessGate(app, "clé", local_only=True, allow_hosts=("clara.example:8443", "[::2]"))
    key = {"Authorization": "Bearer clé".encode()}

    async def status(headers: dict) -> int:
        transport = httpx.ASGITransport(app=gated)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return (await c.post("/x", headers=headers)).status_code

    assert asyncio.run(status(key)) == 200
    assert asyncio.run(status({**key, "Host": "clara.example"})) == 200
    assert asyncio.run(status({**key, "Host": "[::2]:8000"})) == 200  # a name, with or
    assert asyncio.run(status({**key, "Host": "other.example"})) == 403  # without its port
    assert asyncio.run(status({**key, "Origin": "https://clara.example"})) == 200
    assert asyncio.run(status({**key, "Origin": "https://other.example"})) == 403
    assert asyncio.run(status({"Authorization": "Bearer cle"})) == 401
    open_to_all = AccessGate(app, None, local_only=False)  # --host 0.0.0.0: any name
    transport = httpx.ASGITransport(app=open_to_all)

    async def anywhere() -> int:
        async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.5") as c:
            return (await c.post("/x")).status_code

    assert asyncio.run(anywhere()) == 200


def test_an_empty_api_key_is_refused_not_taken_as_none(tiny_llama_dir, capsys) -> None:
    from server.cli import main

    assert main(["--model", str(tiny_llama_dir), "--api-key", " "]) == 1
    assert "the API key is empty" in capsys.readouterr().err


def test_api_reference_pages_need_no_network(server: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{server.url}{page}", headers=auth)
        assert html.status_code == 200 and re.search(r"""['"]openapi\.json['"]""", html.text)
        urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", html.text)
        assets = [u for u in urls if u != "openapi.json"]
        # no CDN; relative to the page (a proxy may serve it under a path: --root-path)
        assert assets and all(u.startswith("docs-files/") for u in assets), urls
        for url in assets:
            r = httpx.get(f"{server.url}/{url}", headers=auth)
            assert r.status_code == 200 and len(r.content) > 1000, url
    assert httpx.get(f"{server.url}/docs").status_code == 401  # behind the key like the API
    # one operation id each (GET and HEAD /health shared one: client generators refuse that)
    schema = httpx.get(f"{server.url}/openapi.json", headers=auth).json()
    assert schema["info"]["version"] == __version__  # (it said FastAPI's 0.1.0)
    ids = [op["operationId"] for path in schema["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)) and "health_health_get" in ids
    assert httpx.head(f"{server.url}/health").status_code == 200


# ---- embeddings ----------------------------------------------------------------------------
def test_embeddings_are_normalised_query_memories(
    client: openai.OpenAI, server: ServerProcess, cm
) -> None:
    from clara.retrieval import flatten_normalize

    def counted() -> tuple[float, float]:  # (an SRE's audit: embeddings load was invisible)
        text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
        return tuple(metric(text.text, f"clara_embedding_{x}_total") for x in ("inputs", "tokens"))

    inputs, tokens = counted()
    resp = client.embeddings.create(model=MODEL, input=[RIVER, "hello"])  # SDK asks base64
    assert counted() == (inputs + 2, tokens + resp.usage.prompt_tokens)
    assert resp.object == "list" and resp.model == MODEL and len(resp.data) == 2
    bare = client.embeddings.create(model=MODEL + "-no-retrieval", input="hello")
    assert bare.model == MODEL + "-no-retrieval"  # the name asked for (it was the other one)
    vec = np.array(resp.data[0].embedding, np.float32)
    assert vec.shape == (cm.n_mem * cm.hidden_size,)
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    expected = flatten_normalize(np.array(cm.encode_queries([RIVER])))[0]
    assert np.allclose(vec, expected, atol=1e-4)
    assert (
        resp.usage.prompt_tokens
        == resp.usage.total_tokens
        == sum(len(ids) for ids in cm.tokenize([RIVER, "hello"]))
    )
    r = post(
        server, "/v1/embeddings", {"model": MODEL, "input": "hello", "encoding_format": "float"}
    )
    floats = r.json()["data"][0]["embedding"]
    r = post(server, "/v1/embeddings", {"input": "hello", "encoding_format": "base64"})
    decoded = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), "<f4")
    assert np.allclose(floats, decoded)
    # token ids are refused unless the server is told they are its tokenizer's: a client's
    # are another's (LangChain sends tiktoken's), and they were embedded as other words
    ids = list(cm.tokenizer.encode("hello", add_special_tokens=False))
    refused = assert_error(post(server, "/v1/embeddings", {"input": [ids, ids]}), 400, "input")
    assert refused["message"].startswith("input 0 is token ids: send text")
    assert "--embedding-token-ids" in refused["message"]


def test_truncate_embeds_the_start_of_a_long_input(
    server: ServerProcess, client: openai.OpenAI, cm, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """Open WebUI and Continue embed 1000-character chunks, past the 256 tokens the query
    encoder reads: every one was a 400. `truncate` (per request, or --truncate-embeddings for
    clients that cannot send it) embeds the start instead, counted in usage as read."""
    long = "the river runs past the old mill and " * 120  # ~1000 tokens
    start = cm.tokenize([long])[0]  # its first 256 tokens
    assert len(start) == 256 and len(cm.tokenize([long], cut=False)[0]) > 800
    body = {"input": ["hello", long], "encoding_format": "float", "truncate": True}
    got = post(server, "/v1/embeddings", body).json()
    assert got["usage"]["prompt_tokens"] == len(cm.tokenize(["hello"])[0]) + 256
    big = client.embeddings.create(
        model=MODEL, input="a" * 5_000_000, extra_body={"truncate": True}
    )
    assert big.usage.prompt_tokens <= 256  # (only its start was tokenized)
    # the server's default, for clients that send no `truncate`; false still refuses
    proc = ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp_path / "index"),
        "--truncate-embeddings", "--embedding-token-ids", env={"CLARA_HOME": str(tmp_path / "home")},
        log=tmp_path / "server.log",
    ).wait_ready()  # fmt: skip
    try:  # (--embedding-token-ids: its own tokenizer's ids, embedded as the text they are)
        want = httpx.post(
            f"{proc.url}/v1/embeddings", json={"input": start, "encoding_format": "float"}
        ).json()
        assert np.allclose(got["data"][1]["embedding"], want["data"][0]["embedding"], atol=1e-5)
        foreign = httpx.post(f"{proc.url}/v1/embeddings", json={"input": [[9906, 10**5]]})
        assert foreign.status_code == 400 and "token id 100000 is past" in foreign.text
        cut = httpx.post(f"{proc.url}/v1/embeddings", json={"input": long}, timeout=60)
        assert cut.status_code == 200 and cut.json()["usage"]["prompt_tokens"] == 256
        strict = httpx.post(
            f"{proc.url}/v1/embeddings", json={"input": long, "truncate": False}, timeout=60
        )
        assert strict.status_code == 400, strict.text
        assert '"truncate": true' in strict.json()["error"]["message"]
        # ids far past the limit are refused before they are decoded (a security audit: 2
        # million held the model thread 7.7 s, a chat beside them 7x slower)
        many = {"input": [100] * 400_000, "truncate": False}
        refused = httpx.post(f"{proc.url}/v1/embeddings", json=many, timeout=60)
        assert refused.status_code == 400
        assert refused.json()["error"]["message"].startswith(
            "This model's maximum context length is 256 tokens"
        )
        assert "the input has 400000 tokens" in refused.json()["error"]["message"]
    finally:
        proc.stop()


def test_embedding_errors(server: ServerProcess, client: openai.OpenAI) -> None:
    empty = assert_error(post(server, "/v1/embeddings", {"input": []}), 400, "input")
    assert "at least 1 item" in empty["message"] and "more problems" not in empty["message"]
    assert_error(post(server, "/v1/embeddings", {"input": ""}), 400, "input")
    many = assert_error(post(server, "/v1/embeddings", {"input": ["a"] * 2049}), 400, "input")
    assert "at most 2048 items" in many["message"] and "more problems" not in many["message"]
    # longer than the query encoder reads: refused as OpenAI refuses, not silently cut
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input=["hello", "word " * 2000])
    assert info.value.code == "context_length_exceeded" and info.value.param == "input"
    assert "input 1 has" in info.value.message and "is 256 tokens per input" in info.value.message
    # each too long named (a framework audit: an index build failed at one, then the next)
    inputs = ["word " * (300 + i) if i in (2, 5, 7) else "hello" for i in range(9)]
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input=inputs)
    assert re.search(
        r"3 of the 9 inputs are longer: 2 \(\d+ tokens\), 5 \(\d+ tokens\), 7 \(\d+ tokens\)",
        info.value.message,
    ), info.value.message
    # another tokenizer's ids (LangChain sends tiktoken's by default): refused, not embedded
    foreign = assert_error(post(server, "/v1/embeddings", {"input": [[9906, 10**5]]}), 400, "input")
    assert "check_embedding_ctx_length=False" in foreign["message"]
    assert foreign["message"].startswith("the input is token ids: send text")
    got = post(server, "/v1/embeddings", {"input": "x", "dimensions": 3})
    assert_error(got, 400, "dimensions", "unsupported_value")
    assert_error(
        post(server, "/v1/embeddings", {"model": "nope", "input": "x"}),
        404,
        "model",
        "model_not_found",
    )


def test_a_flood_of_small_embeddings_requests_joins_one_batch(server: ServerProcess, cm) -> None:
    """An Open WebUI audit: it embeds a document with a request per chunk, all at once, and
    those past the queue's 16 places were refused (503), so the document failed. Requests of
    one key that come while one of its embeddings requests waits join it: all 40 answered,
    each with its own input's vector, and one too long fails alone."""
    from clara.retrieval import flatten_normalize

    texts = [f"chunk {i}: the river runs past mill number {i}" for i in range(40)]
    auth = {"Authorization": f"Bearer {API_KEY}"}

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, headers=auth, timeout=120) as c:
            asks = [c.post("/v1/embeddings", json={"input": [t], "encoding_format": "float"})
                    for t in texts]  # fmt: skip
            asks.append(c.post("/v1/embeddings", json={"input": ["word " * 2000]}))
            return await asyncio.gather(*asks)

    answers = asyncio.run(flood())
    assert [r.status_code for r in answers] == [200] * 40 + [400], [r.text for r in answers]
    assert answers[-1].json()["error"]["code"] == "context_length_exceeded"
    expected = flatten_normalize(np.array(cm.encode_queries([texts[0], texts[-1]])))
    for r, text, want in zip([answers[0], answers[39]], [texts[0], texts[-1]], expected):
        assert len(r.json()["data"]) == 1
        assert np.allclose(r.json()["data"][0]["embedding"], want, atol=1e-4)
        assert r.json()["usage"]["prompt_tokens"] == len(cm.tokenize([text])[0])


def test_a_long_embeddings_job_lets_chats_through_and_stops_when_its_client_leaves(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    """A big embeddings request runs in steps on the model thread: a chat sent after it
    answers while it still runs, and a client that leaves stops it before its end."""
    big = [f"river bank {i} " + "the water runs by the old mill and " * 16 for i in range(2048)]
    body = {"input": big, "encoding_format": "base64"}
    with ThreadPoolExecutor(2) as pool:  # two of them: ~2.5 s of encoding each here
        embeddings = [pool.submit(post, server, "/v1/embeddings", body) for _ in range(2)]
        time.sleep(1.0)  # both are queued or running
        chat = client.chat.completions.create(model=MODEL, messages=ask("hi"), max_tokens=4)
        assert chat.choices[0].finish_reason == "length"
        # answered between two of their steps, not after them (as when each was one job)
        assert not any(e.done() for e in embeddings)
        for e in embeddings:
            r = e.result()
            assert r.status_code == 200 and len(r.json()["data"]) == 2048
    with pytest.raises(httpx.ReadTimeout):  # the client gives up while it runs
        httpx.post(
            f"{server.url}/v1/embeddings",
            json={"input": big},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=1.0,
        )
    deadline = time.monotonic() + 30
    while "embeddings cancelled" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    done = re.search(r"embeddings cancelled after (\d+) of 2048 inputs", server.log())
    assert done and int(done.group(1)) < 2048, server.log()[-2000:]


# ---- metrics -------------------------------------------------------------------------------
def test_metrics_prometheus_text(server: ServerProcess, client: openai.OpenAI) -> None:
    client.chat.completions.create(model=MODEL, messages=ask("hi"), max_tokens=2)
    r = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert r.headers["content-encoding"] == "gzip" and len(text) > 1024  # (httpx takes gzip)
    for encoding in ("identity", "gzip;q=0"):  # (a scraper that takes no gzip gets plain text)
        plain = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {API_KEY}",
                                                            "Accept-Encoding": encoding})  # fmt: skip
        assert "content-encoding" not in plain.headers and "clara_requests_total" in plain.text
    timed = {"method": "POST", "endpoint": "/v1/chat/completions", "status": "200"}
    bad = {**timed, "status": "400"}
    ok = metric(text, "clara_requests_total", **timed)
    assert ok >= 1
    assert metric(text, "clara_requests_total", **bad) >= 1
    # by status (an SRE audit found 400s' and 503s' milliseconds pulling the answers' latency
    # down), and by method
    assert metric(text, "clara_request_duration_seconds_count", **timed) == ok
    assert metric(text, "clara_request_duration_seconds_count", **bad) >= 1
    assert metric(text, "clara_requests_total", **{**timed, "method": "GET"}) == 0
    assert metric(text, "clara_time_to_first_token_seconds_count") >= 1
    assert 'clara_time_to_first_token_seconds_bucket{le="+Inf"}' in text
    assert metric(text, "clara_completion_tokens_total") >= 2
    assert metric(text, "clara_prompt_tokens_total") > 0
    assert metric(text, "clara_queue_depth") == 0
    assert metric(text, "clara_index_chunks", collection="default") == len(DOCS)
    assert metric(text, "clara_index_documents", collection="default") == len(DOCS)
    assert "# TYPE clara_request_duration_seconds histogram" in text
    # the MLX worker's phases: the question's encoding, its prefill, the decode step after it
    assert metric(text, "clara_query_encode_seconds_count", queries="1") >= 1
    assert metric(text, "clara_prefill_seconds_count", requests="1") >= 1
    assert metric(text, "clara_decode_step_seconds_count", requests="1") >= 1
    assert metric(text, "clara_decode_step_seconds_sum", requests="1") > 0


def test_prefill_groups_cut_by_count_and_positions() -> None:
    from clara.prompt import Prompt
    from server.engine import prefill_groups

    items = [(i, None, Prompt([1] * n, None)) for i, n in enumerate([140, 150, 20, 400, 30, 30])]

    def ids(groups):
        return [[i for i, _, _ in g] for g in groups]

    # 320 positions a pass: 140 + 150 fit, + 20 fits, 400 alone, then the two short ones
    assert ids(prefill_groups(items, 8, 320)) == [[0, 1, 2], [3], [4, 5]]
    assert ids(prefill_groups(items, 2, 320)) == [[0, 1], [2], [3], [4, 5]]
    assert ids(prefill_groups(items, 8, 0)) == [[0, 1, 2, 3, 4, 5]]  # no position limit
    assert ids(prefill_groups(items, 1, 0)) == [[0], [1], [2], [3], [4], [5]]
    assert prefill_groups([], 8, 320) == []
    # prompts longer than the limit share a pass with other long ones, one per lane
    items = [(i, None, Prompt([1] * n, None)) for i, n in enumerate([372, 380, 360, 100, 400])]
    assert ids(prefill_groups(items, 8, 320, n_lanes=2)) == [[0, 1], [2], [3], [4]]
    assert ids(prefill_groups(items, 8, 320)) == [[0], [1], [2], [3], [4]]
    assert ids(prefill_groups(items, 1, 320, n_lanes=2)) == [[0], [1], [2], [3], [4]]
    items = [(i, None, Prompt([1] * n, None)) for i, n in enumerate([1300, 1250, 400, 450])]
    assert ids(prefill_groups(items, 8, 320, n_lanes=2)) == [[0], [1], [2, 3]]  # lanes: <= 512


def test_a_burst_gets_first_tokens_before_the_last_is_retrieved(
    tmp_path: Path, tiny_llama_dir: Path, cm
) -> None:
    """Requests admitted together are prefilled pass by pass as their prompts become ready:
    the first pass's first tokens go out before the last requests are retrieved for (their
    response headers, sent when retrieval is done, come after). Equal answers to sequential
    ones are checked above."""
    add_documents(tmp_path / "index", cm, DOCS)
    proc = ServerProcess(
        "--model", str(tiny_llama_dir),
        "--index", str(tmp_path / "index"),
        "--served-model-name", MODEL,
        "--prefill-batch", "2", "--prefill-tokens", "0",
        env={"CLARA_HOME": str(tmp_path / "home")},
        log=tmp_path / "server.log",
    )  # fmt: skip
    proc.wait_ready()

    async def one(client: httpx.AsyncClient, i: int) -> tuple[float, float]:
        body = {"model": MODEL, "messages": ask(DOCS[i % len(DOCS)][1]), "max_tokens": 2}
        async with client.stream(
            "POST", "/v1/chat/completions", json={**body, "stream": True}
        ) as r:
            assert r.status_code == 200
            headers = time.perf_counter()
            async for line in r.aiter_lines():
                data = line[6:] if line.startswith("data: {") else "{}"
                if any(c["delta"].get("content") for c in json.loads(data).get("choices", [])):
                    return headers, time.perf_counter()
        raise AssertionError("no content")

    async def burst() -> list[tuple[float, float]]:
        async with httpx.AsyncClient(base_url=proc.url, timeout=60) as client:
            return await asyncio.gather(*(one(client, i) for i in range(6)))

    try:
        times = asyncio.run(burst())
        text = httpx.get(f"{proc.url}/metrics").text
    finally:
        proc.stop()
    assert metric(text, "clara_prefill_passes_total", requests="2") >= 2  # admitted together
    assert min(first for _, first in times) < max(headers for headers, _ in times)


def test_a_keys_role_limits_what_it_may_do(tmp_path) -> None:
    """A team's audit: every key could delete every collection, and Prometheus needed such a
    key. A key file line may end with a role: 'ask' reads and asks, 'metrics' reads /metrics."""
    from fastapi import FastAPI

    from clara.errors import ClaraError
    from clara_cli.http import AccessGate
    from clara_cli.serve import read_api_keys

    keys_file = tmp_path / "keys"
    keys_file.write_text("alice sk-a\nbot sk-b ask\nprom sk-p metrics\ncarol sk-c all\n")
    roles: dict[str, str] = {}
    keys = read_api_keys(str(keys_file), {}, roles)
    assert keys == {"alice": "sk-a", "bot": "sk-b", "prom": "sk-p", "carol": "sk-c"}
    assert roles == {"bot": "ask", "prom": "metrics"}
    keys_file.write_text("bot sk-b admin\n")
    with pytest.raises(ClaraError, match="line 1: .*'ask' \\(ask and read"):
        read_api_keys(str(keys_file), {}, {})

    app = FastAPI()
    for method, path in (("post", "/v1/chat/completions"), ("post", "/v1/files"),
                         ("delete", "/v1/vector_stores/{i}"), ("get", "/v1/files/{i}"),
                         ("post", "/v1/vector_stores/{i}/search"), ("get", "/metrics"),
                         ("post", "/v1/responses/{i}/cancel"), ("delete", "/v1/responses/{i}")):  # fmt: skip
        getattr(app, method)(path)(lambda: {"ok": True})
    gated = AccessGate(app, keys, key_roles=roles)

    async def statuses(key: str) -> dict[str, int]:
        transport = httpx.ASGITransport(app=gated)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            h = {"Authorization": f"Bearer {key}"}
            return {
                "ask": (await c.post("/v1/chat/completions", headers=h)).status_code,
                "search": (await c.post("/v1/vector_stores/vs_1/search", headers=h)).status_code,
                "cancel": (await c.post("/v1/responses/resp_1/cancel", headers=h)).status_code,
                "read": (await c.get("/v1/files/file-1", headers=h)).status_code,
                "upload": (await c.post("/v1/files", headers=h)).status_code,
                "delete": (await c.delete("/v1/vector_stores/vs_1", headers=h)).status_code,
                "forget": (await c.delete("/v1/responses/resp_1", headers=h)).status_code,
                "metrics": (await c.get("/metrics", headers=h)).status_code,
            }

    everything = dict.fromkeys(("ask", "search", "cancel", "read", "upload", "delete",
                                "forget", "metrics"), 200)  # fmt: skip
    assert asyncio.run(statuses("sk-a")) == everything == asyncio.run(statuses("sk-c"))
    assert asyncio.run(statuses("sk-b")) == {**everything, "upload": 403, "delete": 403,
                                             "forget": 403}  # fmt: skip
    assert asyncio.run(statuses("sk-p")) == {**dict.fromkeys(everything, 403), "metrics": 200}

    async def refused() -> dict:
        transport = httpx.ASGITransport(app=gated)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return (await c.post("/v1/files", headers={"Authorization": "Bearer sk-b"})).json()

    error = asyncio.run(refused())["error"]
    assert (
        error["code"] == "insufficient_role" and "the key bot may ask and read" in error["message"]
    )
