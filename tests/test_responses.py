"""POST /v1/responses against a real clara-serve, driven by the official openai SDK as OpenAI's
file_search guide uses it: files.create -> vector_stores.create -> vector_stores.files.create
-> responses.create(tools=[file_search]), plain, streamed and chained; stored responses (GET,
DELETE, input_items, surviving a restart); errors. A tiny random model answers gibberish;
retrieval is still exact because a fresh model's query and compressor adapters agree.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import re
import threading
import time
import urllib.parse
from pathlib import Path

import httpx
import openai
import pytest

from clara.retrieval import Fusion
from tests.test_server_harness import API_KEY, DOCS, ServerProcess, add_documents, free_port

MODEL = "clara-tiny"
GUIDE = "The capital of France is Paris. The capital of Japan is Tokyo."


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("responses")


def start_server(tmp, tiny_llama_dir, *args: str) -> ServerProcess:
    return ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp / "index"), "--api-key", API_KEY,
        "--max-tokens", "8", "--served-model-name", MODEL, "--accept-any-model", "--responses-db", str(tmp / "responses.sqlite"), *args,
        env={"CLARA_HOME": str(tmp / "home")}, log=tmp / f"server-{free_port()}.log",
    ).wait_ready()  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp, tiny_llama_dir):
    from clara.checkpoint import load_clara

    add_documents(tmp / "index", load_clara(tiny_llama_dir, None, dtype=None), DOCS)
    proc = start_server(tmp, tiny_llama_dir)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    """The official SDK; only base_url (and the key) differ from OpenAI's guide."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def knowledge_base(client: openai.OpenAI, tmp) -> tuple[str, str]:
    """OpenAI's guide, steps 1 and 2, on clara-serve's own port: upload a file, make a vector
    store, attach the file (indexed by the same model worker that answers)."""
    path = tmp / "capitals.md"
    path.write_text(GUIDE)
    with open(path, "rb") as fh:
        f = client.files.create(file=fh, purpose="assistants")
    vs = client.vector_stores.create(name="knowledge_base")
    attached = client.vector_stores.files.create(vector_store_id=vs.id, file_id=f.id)
    # the link is there right after creation, before indexing finishes
    got = client.vector_stores.files.retrieve(vector_store_id=vs.id, file_id=f.id)
    assert got.id == attached.id == f.id
    client.vector_stores.files.poll(f.id, vector_store_id=vs.id, poll_interval_ms=50)
    return vs.id, f.id


def post(server: ServerProcess, body: dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.post(f"{server.url}/v1/responses", json=body, headers=headers, timeout=60)


def test_openai_guide_code_unchanged(client: openai.OpenAI, tmp) -> None:
    """The steps of OpenAI's file_search guide as written there: no polling between attaching
    the file and asking (file_search waits for the store's indexing jobs), an OpenAI model
    name (--accept-any-model), the answer cites the file."""
    path = tmp / "deep_research.md"  # long enough to be indexed still when the question comes
    filler = "".join(f"The mill on the river has {i} stones and {i} doors.\n\n" for i in range(600))
    path.write_text("# Deep research\n\n" + DOCS[5][1] + "\n\n" + filler)
    with open(path, "rb") as file_content:
        file_id = client.files.create(file=file_content, purpose="assistants").id
    vector_store = client.vector_stores.create(name="knowledge_base_guide")
    client.vector_stores.files.create(vector_store_id=vector_store.id, file_id=file_id)
    assert [f.id for f in client.vector_stores.files.list(vector_store_id=vector_store.id)] == [
        file_id
    ]
    response = client.responses.create(
        model="gpt-4.1",
        input=DOCS[5][1],
        tools=[{"type": "file_search", "vector_store_ids": [vector_store.id]}],
    )
    assert response.model == MODEL  # the model that answered
    notes = response.output[1].content[0].annotations
    assert [(n.type, n.file_id, n.filename) for n in notes][0] == (
        "file_citation", file_id, "deep_research.md"
    )  # fmt: skip


def test_file_search_guide_plain(client: openai.OpenAI, knowledge_base) -> None:
    store_id, file_id = knowledge_base
    response = client.responses.create(
        model=MODEL,
        input=GUIDE,
        tools=[{"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 1}],
        include=["file_search_call.results"],
    )
    assert response.object == "response" and response.status in ("completed", "incomplete")
    call, message = response.output
    assert call.type == "file_search_call" and call.status == "completed"
    assert call.queries == [GUIDE]
    assert [(r.file_id, r.filename) for r in call.results] == [(file_id, "capitals.md")]
    # hybrid retrieval: first by memory vector and by words
    assert call.results[0].text == GUIDE and call.results[0].score == pytest.approx(
        Fusion().score({"dense": 1, "lexical": 1}), abs=1e-5
    )
    assert message.type == "message" and message.role == "assistant"
    text = message.content[0]
    assert text.type == "output_text" and text.text == response.output_text
    assert [(a.type, a.file_id, a.filename, a.index) for a in text.annotations] == [
        ("file_citation", file_id, "capitals.md", len(text.text))
    ]
    u = response.usage
    assert u.output_tokens >= 1 and u.total_tokens == u.input_tokens + u.output_tokens
    assert response.model_extra["retrieval"]["collection"] == store_id


def test_results_only_when_included(client: openai.OpenAI, knowledge_base) -> None:
    store_id, _ = knowledge_base
    tools = [{"type": "file_search", "vector_store_ids": [store_id]}]
    response = client.responses.create(model=MODEL, input=GUIDE, tools=tools, store=False)
    assert response.output[0].results is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)  # store: false keeps nothing


def test_an_agents_function_tools_and_tool_items_are_taken(
    client: openai.OpenAI, knowledge_base
) -> None:
    """An agent audit: the OpenAI Agents SDK sends an agent's function tools with each turn,
    and a conversation begun with another model holds function_call, function_call_output
    and reasoning items; each was a 400. Function tools are taken and not called (as chat
    completions takes them); calls and results are read as text, and listed as sent."""
    store_id, file_id = knowledge_base
    fn = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    search = {"type": "file_search", "vector_store_ids": [store_id]}
    r = client.responses.create(model=MODEL, input=GUIDE, tools=[fn, search], max_output_tokens=2)
    assert [i.type for i in r.output] == ["file_search_call", "message"]
    assert [t.type for t in r.tools] == ["function", "file_search"]
    turn = [
        {"role": "user", "content": "Weather?"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x"},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "Sunny and warm"},
        {"role": "user", "content": "What is the capital of Japan?"},
    ]
    plain = [turn[0], turn[-1]]
    sizes = []
    for items in (plain, turn):
        got = client.responses.create(
            model=MODEL + "-no-retrieval", input=items, tools=[fn], max_output_tokens=1
        )
        sizes.append(got.usage.input_tokens)
    assert sizes[1] > sizes[0]  # the call and its result were read
    listed = client.responses.input_items.list(got.id, order="asc").data
    assert [i.type for i in listed] == [
        "message", "function_call", "function_call_output", "message"
    ]  # fmt: skip
    assert listed[2].output == "Sunny and warm" and listed[1].id.startswith("fc_")
    # an agent loop goes on: the next turn is the tool's output, chained to the last response
    more = client.responses.create(
        model=MODEL, previous_response_id=got.id, tools=[fn], max_output_tokens=1, input=[
            {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": ""},
            {"type": "function_call_output", "call_id": "c2", "output": "Rain"},
        ],
    )  # fmt: skip
    assert more.status in ("completed", "incomplete")
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input="hi", tools=[fn], tool_choice="required")
    assert err.value.body["param"] == "tool_choice"  # (no file_search tool to call)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input="hi", tools=[search, fn, search])
    assert err.value.body["param"] == "tools.[2]" and "one file_search tool" in err.value.message
    assert err.value.body["code"] == "unsupported_value"
    with pytest.raises(openai.BadRequestError) as err:  # (a hosted tool clara does not run)
        client.responses.create(model=MODEL, input="hi", tools=[{"type": "web_search"}])
    assert err.value.code == "unsupported_value" and err.value.body["param"] == "tools.[0].type"
    custom = client.responses.create(
        model=MODEL + "-no-retrieval", max_output_tokens=1, input=[
            {"role": "user", "content": "Run it."},
            {"type": "custom_tool_call", "call_id": "k1", "name": "shell", "input": "ls"},
            {"type": "custom_tool_call_output", "call_id": "k1", "output": "a.txt"},
        ],
    )  # fmt: skip
    listed = client.responses.input_items.list(custom.id, order="asc").data
    assert [i.type for i in listed][1:] == ["custom_tool_call", "custom_tool_call_output"]


def test_a_search_without_a_tool_shows_its_results_when_included(
    client: openai.OpenAI, knowledge_base
) -> None:
    """An agent audit: asked without a file_search tool (the server's search, or a chained
    follow-up's), `include=["file_search_call.results"]` gave nothing, without a word."""
    store_id, file_id = knowledge_base
    r = client.responses.create(
        model=MODEL, input=GUIDE, max_output_tokens=1, include=["file_search_call.results"],
        extra_body={"collection": store_id},
    )  # fmt: skip
    call = r.output[0]
    assert call.type == "file_search_call" and call.results[0].file_id == file_id
    plain = client.responses.create(
        model=MODEL, input=GUIDE, max_output_tokens=1, extra_body={"collection": store_id}
    )
    assert [i.type for i in plain.output] == ["message"]  # (as before, unless asked)
    off = client.responses.create(
        model=MODEL, input=GUIDE, max_output_tokens=1, include=["file_search_call.results"],
        tool_choice="none",
    )  # fmt: skip
    assert [i.type for i in off.output] == ["message"]  # nothing searched: nothing shown


def test_text_format_holds_the_answer_to_a_json_schema(client: openai.OpenAI) -> None:
    """Structured output on the Responses API (the Agents SDK's `output_type`, the SDK's
    `responses.parse`): the answer is JSON valid under the schema, and says its format."""
    schema = {
        "type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
        "required": ["answer"], "additionalProperties": False,
    }  # fmt: skip
    fmt = {"type": "json_schema", "name": "yes_no", "schema": schema, "strict": True}
    r = client.responses.create(
        model=MODEL, input="Is it true?", max_output_tokens=24, text={"format": fmt}
    )
    assert r.status == "completed", r.output_text
    assert json.loads(r.output_text)["answer"] in ("yes", "no")
    assert r.text.format.type == "json_schema" and r.text.format.name == "yes_no"


def test_chat_sources_of_uploads_name_the_file_not_the_servers_folder(
    client: openai.OpenAI, server, knowledge_base
) -> None:
    """A source indexed from an upload carries its `file_id`, and its URL is the Files API's
    content route on this server: a client can fetch the file; the upload folder stays private."""
    store, file_id = knowledge_base
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": GUIDE}], max_tokens=2,
        extra_body={"collection": store},
    )  # fmt: skip
    top = resp.choices[0].message.sources[0]
    assert top["file_id"] == file_id and top["url"] == f"/v1/files/{file_id}/content"
    note = resp.choices[0].message.annotations[0]
    assert note.url_citation.url == top["url"] and "file://" not in note.url_citation.url
    headers = {"Authorization": f"Bearer {API_KEY}"}
    got = httpx.get(server.url + top["url"], headers=headers, timeout=10)
    assert got.status_code == 200 and got.text == GUIDE


def test_behind_a_proxy_under_a_path_the_links_name_it(tmp, tiny_llama_dir, knowledge_base):
    """A container audit: behind https://host/clara/ (a proxy that strips /clara) source
    links and the API reference pointed outside the prefix. With --root-path they name it;
    requests are routed as before (the proxy strips it)."""
    store, file_id = knowledge_base
    other = start_server(tmp, tiny_llama_dir, "--root-path", "/clara/")
    proxied = "http://proxy.example/clara/"  # what the browser sees; the proxy strips /clara
    headers = {"Authorization": f"Bearer {API_KEY}"}

    def through_proxy(url: str) -> httpx.Response:
        full = urllib.parse.urljoin(proxied, url)
        assert full.startswith(proxied), full  # (inside the prefix)
        return httpx.get(other.url + "/" + full.removeprefix(proxied), headers=headers)

    try:
        body = {"messages": [{"role": "user", "content": GUIDE}], "max_tokens": 2,
                "collection": store}  # fmt: skip
        chat = httpx.post(f"{other.url}/v1/chat/completions", json=body, headers=headers)
        top = chat.json()["choices"][0]["message"]["sources"][0]
        assert top["url"] == f"/clara/v1/files/{file_id}/content"
        assert through_proxy(top["url"]).text == GUIDE
        schema = httpx.get(f"{other.url}/openapi.json", headers=headers).json()
        assert schema["servers"][0] == {"url": "/clara"}  # ("Try it out" asks through it)
        docs = through_proxy("docs")
        assets = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", docs.text)
        assert "openapi.json" in assets and len(assets) > 2
        for url in assets:
            assert through_proxy(urllib.parse.urljoin(proxied + "docs", url)).status_code == 200
    finally:
        other.stop()


def test_metadata_is_bounded_as_openai_bounds_it(client: openai.OpenAI) -> None:
    """Before (a security audit): 5000 keys of 512 characters were stored with a response."""
    too_many = {f"k{i}": "v" for i in range(17)}
    for metadata in (too_many, {"k": "v" * 513}, {"k" * 65: "v"}):
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(model=MODEL, input="hi", metadata=metadata, max_output_tokens=1)
        assert e.value.body["param"].startswith("metadata"), e.value.body
    kept = {f"k{i}": "v" * 512 for i in range(16)}
    r = client.responses.create(model=MODEL, input="hi", metadata=kept, max_output_tokens=1)
    assert client.responses.retrieve(r.id).metadata == kept


def test_what_a_response_stores_beside_its_input_is_bounded(client: openai.OpenAI, server) -> None:
    """A security audit: `user`, `safety_identifier`, `prompt_cache_key` and `service_tier`
    of 7 MB each were stored with the response (30 MB per request), and so was any key of
    `text` or of a tool_choice object; none of them passes through the model's context check."""
    for field in ("user", "safety_identifier", "prompt_cache_key"):
        r = post(server, {"model": MODEL, "input": "hi", "max_output_tokens": 1, field: "u" * 513})
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    r = post(server, {"model": MODEL, "input": "hi", "max_output_tokens": 1, "service_tier": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "service_tier", r.text
    r = client.responses.create(
        model=MODEL, input="hi", max_output_tokens=1, user="u" * 512, service_tier="auto",
        text={"verbosity": "high", "junk": "j" * 1000},
    )  # fmt: skip
    kept = client.responses.retrieve(r.id)
    assert kept.user == "u" * 512 and kept.service_tier == "auto"
    assert kept.text.model_dump(exclude_none=True) == {
        "format": {"type": "text"}, "verbosity": "high"
    }  # fmt: skip


def test_truncation_auto_drops_the_oldest_turns(client: openai.OpenAI) -> None:
    """OpenAI's truncation "auto" (clara's default): a conversation past the context drops its
    oldest items instead of failing; "disabled" is a 400."""
    long = "river " * 2500
    items = [
        {"role": "user", "content": long},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "What flows?"},
    ]
    kw = dict(model=MODEL, input=items, max_output_tokens=2, extra_body={"retrieval": False})
    strict = dict(kw, truncation="disabled")
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(**strict)
    assert e.value.code == "context_length_exceeded"
    fitted = client.responses.create(**kw, truncation="auto")
    assert fitted.truncation == "auto" and fitted.status in ("completed", "incomplete")
    assert fitted.usage.input_tokens < 100  # the long turn is gone

    # exactly at the context: refused when "disabled", so "auto" must cut it (it cut only past
    # it, and a prompt of exactly the context was a 400; an engine review)
    def needs(words: int) -> int:  # positions of a first turn of `words` words: 0 if it fits
        items[0]["content"] = "river " * words
        try:
            client.responses.create(**strict)
        except openai.BadRequestError as e:
            found = re.search(r"needs (\d+) positions", e.message)
            assert found, e.message  # (not the character count's early refusal)
            return int(found[1])
        return 0

    low, high = 100, 4000  # fits, does not: the fewest words that do not fit need the context
    assert not needs(low) and needs(high)
    while high - low > 1:
        low, high = (
            (low, (low + high) // 2) if needs((low + high) // 2) else ((low + high) // 2, high)
        )
    assert needs(high) == 2048  # refused when "disabled"
    fitted = client.responses.create(**kw, truncation="auto")
    assert fitted.usage.input_tokens < 100
    unset = client.responses.create(**kw)  # clara's default: "auto", and it says so
    assert unset.truncation == "auto" and unset.usage.input_tokens < 100


def test_a_stream_the_client_leaves_is_kept_as_cancelled(client: openai.OpenAI, server) -> None:
    """The id `response.created` announced stays retrievable (store: true) after the client
    hangs up: status "cancelled", with the text written until then."""
    body = {"model": MODEL, "input": "Tell me everything.", "stream": True,
            "max_output_tokens": 1500, "retrieval": False}  # fmt: skip
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, headers=headers) as r:
        lines = r.iter_lines()
        created = json.loads(next(x for x in lines if '"response.created"' in x)[6:])
        next(x for x in lines if '"response.output_text.delta"' in x)
    response_id = created["response"]["id"]
    deadline = time.monotonic() + 30
    while True:  # stored as it started, then as cancelled when the stream's task winds down
        kept = client.responses.retrieve(response_id)
        if kept.status != "in_progress":
            break
        assert time.monotonic() < deadline, "the cancelled response was never stored"
        time.sleep(0.05)
    assert kept.status == "cancelled" and kept.output[-1].type == "message"
    chained = client.responses.create(
        model=MODEL, input="Go on.", previous_response_id=response_id, max_output_tokens=2
    )
    assert chained.status in ("completed", "incomplete")


def test_file_search_guide_streamed(client: openai.OpenAI, knowledge_base) -> None:
    store_id, file_id = knowledge_base
    tools = [{"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 1}]
    events = list(client.responses.create(model=MODEL, input=GUIDE, tools=tools, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:8] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.file_search_call.in_progress", "response.file_search_call.searching",
        "response.file_search_call.completed", "response.output_item.done",
        "response.output_item.added",
    ]  # fmt: skip
    assert kinds[8] == "response.content_part.added"
    assert kinds[-5:] == [
        "response.output_text.annotation.added", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", kinds[-1],
    ]  # fmt: skip
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = events[-1].response
    assert deltas and deltas == done.output_text
    assert done.output[1].content[0].annotations[0].file_id == file_id
    # the SDK's stream helper accumulates the same events into the same response
    # (an 8-token answer ends "incomplete", so read its text snapshots, not a final response)
    with client.responses.stream(model=MODEL, input=GUIDE, tools=tools) as stream:
        snapshots = [e.snapshot for e in stream if e.type == "response.output_text.delta"]
    assert snapshots[-1] == deltas
    # a streamed response is stored like a plain one
    assert client.responses.retrieve(done.id).output_text == deltas


def test_an_answer_cut_at_max_output_tokens_is_incomplete(client: openai.OpenAI) -> None:
    """A test-suite audit: every test allowed "completed" or "incomplete", so an answer cut by
    its token limit could read "completed" (its client then takes a cut answer as whole).
    The tiny random model never ends within 3 tokens, greedy."""
    kw = dict(model=MODEL, input=GUIDE, max_output_tokens=3, temperature=0,
              extra_body={"retrieval": False})  # fmt: skip
    plain = client.responses.create(**kw)
    assert plain.status == "incomplete" and plain.usage.output_tokens == 3
    assert plain.incomplete_details.reason == "max_output_tokens"
    with client.responses.stream(**kw) as stream:
        events = list(stream)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert events[-1].response.output_text == plain.output_text


def test_chained_with_previous_response_id(client: openai.OpenAI, knowledge_base) -> None:
    store_id, _ = knowledge_base
    tools = [{"type": "file_search", "vector_store_ids": [store_id]}]
    first = client.responses.create(model=MODEL, input=GUIDE, tools=tools, instructions="Be brief.")
    second = client.responses.create(
        model=MODEL, input=[{"role": "user", "content": "And Japan?"}], tools=tools,
        previous_response_id=first.id,
    )  # fmt: skip
    assert second.previous_response_id == first.id
    # the second prompt holds the first turn, question and answer (not its instructions): as
    # many input tokens as the same turns sent in full, and more than its question alone
    sent = [{"role": "user", "content": GUIDE}, {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "And Japan?"}]  # fmt: skip
    full = client.responses.create(model=MODEL, input=sent, tools=tools, store=False)
    alone = client.responses.create(model=MODEL, input="And Japan?", tools=tools, store=False)
    assert second.usage.input_tokens == full.usage.input_tokens > alone.usage.input_tokens
    # a chain of three reads both earlier turns in order: greedy, it answers as the same
    # turns sent in full do (a random model's answer moves with any change of its prompt)
    greedy = dict(model=MODEL, tools=tools, store=False, temperature=0)
    third = client.responses.create(input="And Italy?", previous_response_id=second.id, **greedy)
    sent += [{"role": "assistant", "content": second.output_text},
             {"role": "user", "content": "And Italy?"}]  # fmt: skip
    full = client.responses.create(input=sent, **greedy)
    assert third.usage.input_tokens == full.usage.input_tokens
    assert third.output_text == full.output_text
    got = client.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == second.output_text
    # its input items are the conversation: the first turn's input and output, then its own
    # (they were its own input only); the instructions are not an item
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [i.id for i in items] == [
        client.responses.input_items.list(first.id).data[0].id, *(o.id for o in first.output),
        client.responses.input_items.list(second.id).data[0].id,
    ]  # fmt: skip
    assert [(i.type, getattr(i, "role", None)) for i in items] == [
        ("message", "user"), *((o.type, getattr(o, "role", None)) for o in first.output),
        ("message", "user"),
    ]  # fmt: skip
    assert items[0].content[0].text == GUIDE and items[-1].content[0].text == "And Japan?"
    assert items[-2].content[0].text == first.output_text
    # an earlier turn's output sent again beside the id that holds it: OpenAI's 400 (it read
    # the first answer twice)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(
            model=MODEL, input=[*(o.model_dump() for o in first.output), {"role": "user", "content": "And Korea?"}],
            previous_response_id=first.id,
        )  # fmt: skip
    assert "Duplicate item" in err.value.message and err.value.body["param"] == "input"
    # an id twice in one input: the same 400 (stored, its listing's `after` cursor looped)
    twice = [{"id": "msg_a", "role": "user", "content": "A"}, {"role": "user", "content": "B"},
             {"id": "msg_a", "role": "user", "content": "C"}]  # fmt: skip
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input=twice, store=False)
    assert "Duplicate item found with id msg_a (input[2])" in err.value.message
    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model=MODEL, input="x", previous_response_id=second.id)
    assert err.value.body["param"] == "previous_response_id"


def test_item_references_read_the_stored_items(client: openai.OpenAI) -> None:
    """A JavaScript app developer's audit: the Vercel AI SDK sends the earlier turns of a
    stored conversation as `item_reference`s, which were a 400: its second turn failed. A
    reference reads the stored item; an unknown one is a 404."""
    greedy = dict(model=MODEL, temperature=0, max_output_tokens=4, tool_choice="none")
    first = client.responses.create(input="Where is Paris?", **greedy)
    asked = client.responses.input_items.list(first.id).data[0].id
    (said,) = [o for o in first.output if o.type == "message"]
    refs = [{"type": "item_reference", "id": asked}, {"type": "item_reference", "id": said.id},
            {"role": "user", "content": "And Japan?"}]  # fmt: skip
    by_ref = client.responses.create(input=refs, store=False, **greedy)
    sent = [{"role": "user", "content": "Where is Paris?"},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "And Japan?"}]  # fmt: skip
    full = client.responses.create(input=sent, store=False, **greedy)
    assert by_ref.usage.input_tokens == full.usage.input_tokens
    assert by_ref.output_text == full.output_text
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(input=[{"type": "item_reference", "id": "msg_nowhere"}], **greedy)
    assert "msg_nowhere" in err.value.message


def test_a_response_deleted_while_it_streams_stays_deleted(client: openai.OpenAI) -> None:
    """A JavaScript app developer's audit: a response deleted while it streamed was written
    again when its stream ended: the deleted conversation came back."""
    kw = dict(model=MODEL, input="Tell me a long story.", max_output_tokens=400, temperature=0,
              tool_choice="none")  # fmt: skip
    rid, deleted, last = None, False, None
    for event in client.responses.create(stream=True, **kw):
        if event.type == "response.created":
            rid = event.response.id
        elif event.type == "response.output_text.delta" and not deleted:
            client.responses.delete(rid)  # mid-stream (a 404 would raise)
            deleted = True
        last = event.type
    assert deleted and last in ("response.completed", "response.incomplete")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(rid)
    # a stored response streamed again (OpenAI's for background ones, which clara has none
    # of): a 400, not an empty stream
    done = client.responses.create(model=MODEL, input="Hi", max_output_tokens=1)
    with pytest.raises(openai.BadRequestError) as err:
        list(client.responses.retrieve(done.id, stream=True))
    assert err.value.body["param"] == "stream"


def test_without_file_search_the_default_collection_is_searched(client: openai.OpenAI) -> None:
    river = DOCS[0][1]
    r = client.responses.create(model=MODEL, input=river)
    assert r.output[0].type == "message"  # no tool: no file_search_call item
    assert r.model_extra["retrieval"]["status"] == "ok"
    assert r.output[0].content[0].annotations[0].filename == "river.txt"
    lexical = client.responses.create(
        model=MODEL, input=river, extra_body={"retrieval_mode": "lexical"}
    )
    assert lexical.output[0].content[0].annotations[0].filename == "river.txt"
    assert lexical.model_extra["retrieval"]["retrieval_mode"] == "lexical"
    off = client.responses.create(model=MODEL, input=river, extra_body={"retrieval": False})
    assert off.model_extra["retrieval"]["status"] == "disabled"
    assert off.output[0].content[0].annotations == []


def test_output_text_logprobs_plain_and_streamed(client: openai.OpenAI) -> None:
    kw = dict(model=MODEL, input=DOCS[2][1], include=["message.output_text.logprobs"],
              top_logprobs=2, store=False)  # fmt: skip
    r = client.responses.create(**kw)
    logprobs = r.output[0].content[0].logprobs
    assert len(logprobs) == r.usage.output_tokens
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in logprobs)
    events = list(client.responses.create(**kw, stream=True))
    deltas = [lp for e in events if e.type == "response.output_text.delta" for lp in e.logprobs]
    assert [(t.token, round(t.logprob, 4)) for t in deltas] == [
        (t.token, round(t.logprob, 4)) for t in logprobs
    ]
    plain = client.responses.create(model=MODEL, input=DOCS[2][1], store=False)
    assert plain.output[0].content[0].logprobs == []
    # top_logprobs alone: `include` asks for them (they came back before)
    unasked = client.responses.create(model=MODEL, input=DOCS[2][1], top_logprobs=2, store=False)
    assert unasked.output[0].content[0].logprobs == []
    assert r.top_logprobs == unasked.top_logprobs == 2  # echoed (it was not)


def test_input_items_come_in_pages(client: openai.OpenAI) -> None:
    """`limit` and `after` were ignored: every item came back, has_more false."""
    turns = [{"role": "user", "content": f"Question {i}?"} for i in range(3)]
    r = client.responses.create(model=MODEL, input=turns, max_output_tokens=1, tool_choice="none")
    first = client.responses.input_items.list(r.id, limit=1, order="asc")
    assert [i.content[0].text for i in first.data] == ["Question 0?"] and first.has_more
    rest = client.responses.input_items.list(r.id, limit=5, order="asc", after=first.last_id)
    assert [i.content[0].text for i in rest.data] == ["Question 1?", "Question 2?"]
    assert not rest.has_more
    newest = client.responses.input_items.list(r.id, limit=1)  # desc by default
    assert [i.content[0].text for i in newest.data] == ["Question 2?"]
    client.responses.delete(r.id)


def test_a_chain_is_read_whole_when_truncation_is_disabled(client: openai.OpenAI) -> None:
    """A Responses audit: every chain was cut to the server's --history-turns (2) exchanges,
    with truncation "disabled" too, and said "disabled" (a code given in turn 1 was forgotten
    by turn 5). "disabled" now reads every turn (a 400 if they do not fit); "auto", clara's
    default, keeps the last --history-turns, and says "auto"."""
    kw = dict(model=MODEL, max_output_tokens=1, tool_choice="none")
    previous = None
    sent: list[dict] = []
    for i in range(4):
        r = client.responses.create(
            input=f"Turn {i}: remember {i}.", previous_response_id=previous, **kw
        )
        sent += [{"role": "user", "content": f"Turn {i}: remember {i}."},
                 {"role": "assistant", "content": r.output_text}]  # fmt: skip
        previous = r.id
    whole = client.responses.create(
        input="What was turn 0?", previous_response_id=previous, truncation="disabled", **kw
    )
    cut = client.responses.create(input="What was turn 0?", previous_response_id=previous, **kw)
    assert cut.truncation == "auto"
    inline = client.responses.create(
        input=sent + [{"role": "user", "content": "What was turn 0?"}], store=False,
        truncation="disabled", **kw,
    )  # fmt: skip
    assert whole.usage.input_tokens == inline.usage.input_tokens > cut.usage.input_tokens
    # a server cap on the answer's length is echoed (it said null, then stopped "incomplete")
    assert whole.max_output_tokens == 1
    assert (
        client.responses.create(model=MODEL, input="hi", tool_choice="none").max_output_tokens == 8
    )


def test_attribute_filters_choose_the_documents_searched(client: openai.OpenAI) -> None:
    """An R2R user's audit: `filters` (file_search's, OpenAI's shape) were a 400; chats had
    none. Only documents whose attributes pass are searched, in the Responses API's
    file_search and in chat completions (`extra_body`)."""
    vs = client.vector_stores.create(name="teams")
    for name, team in (("hr.md", "hr"), ("eng.md", "eng")):
        text = f"The {team} team's holiday policy: five days carry over to March."
        f = client.files.create(file=(name, text.encode()), purpose="assistants")
        client.vector_stores.files.create_and_poll(
            vector_store_id=vs.id, file_id=f.id, attributes={"team": team}, poll_interval_ms=50
        )
    question = "What is the holiday policy?"
    for team in ("hr", "eng"):
        only = {"type": "eq", "key": "team", "value": team}
        tool = {"type": "file_search", "vector_store_ids": [vs.id], "filters": only}
        r = client.responses.create(model=MODEL, input=question, tools=[tool],
                                    include=["file_search_call.results"], max_output_tokens=2)  # fmt: skip
        assert [x.filename for x in r.output[0].results] == [f"{team}.md"]
        # a follow-up searches the same documents (a review: the whole store again)
        on = client.responses.create(model=MODEL, input="And for new hires?", max_output_tokens=2,
                                     previous_response_id=r.id)  # fmt: skip
        assert on.model_extra["retrieval"]["filters"] == only
        # without a tool, as chat completions take them (a filters audit: a 400)
        plain = client.responses.create(model=MODEL, input=question, max_output_tokens=2,
                                        extra_body={"collection": vs.id, "filters": only})  # fmt: skip
        assert plain.model_extra["retrieval"]["filters"] == only
        # beside a tool without its own (a proxy scoping an app's requests); both: a 400
        bare_tool = {"type": "file_search", "vector_store_ids": [vs.id]}
        beside = client.responses.create(model=MODEL, input=question, tools=[bare_tool],
                                         max_output_tokens=2, extra_body={"filters": only})  # fmt: skip
        assert beside.model_extra["retrieval"]["filters"] == only
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(model=MODEL, input=question, tools=[tool],
                                    extra_body={"filters": only})  # fmt: skip
        assert err.value.body["param"] == "filters"
        assert [a.filename for a in on.output[0].content[0].annotations] in ([], [f"{team}.md"])
        chat = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=2,
            extra_body={"collection": vs.id, "filters": only},
        )  # fmt: skip
        assert [s["filename"] for s in chat.choices[0].message.sources] == [f"{team}.md"]
        assert chat.model_extra["retrieval"]["filters"] == only
    nobody = {"type": "eq", "key": "team", "value": "ops"}
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=2,
        extra_body={"collection": vs.id, "filters": nobody},
    )  # fmt: skip
    assert chat.choices[0].message.sources == []
    for bad in ({"type": "eq", "key": "team"}, {"type": "xor", "filters": []}):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": question}],
                extra_body={"collection": vs.id, "filters": bad},
            )  # fmt: skip
        assert err.value.body["param"].startswith("filters")
        tool = {"type": "file_search", "vector_store_ids": [vs.id], "filters": bad}
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(model=MODEL, input=question, tools=[tool])
        assert err.value.body["param"].startswith("tools.[0].filters")


def test_a_follow_up_searches_what_its_previous_response_searched(
    client: openai.OpenAI, knowledge_base
) -> None:
    """A Responses audit: a follow-up without the file_search tool searched the server's
    default collection, and was answered from other documents. It searches the previous
    response's vector store again (unless it names a collection or turns retrieval off)."""
    store_id, file_id = knowledge_base
    tools = [{"type": "file_search", "vector_store_ids": [store_id]}]
    first = client.responses.create(model=MODEL, input=GUIDE, tools=tools)
    follow = client.responses.create(
        model=MODEL, input="And the capital of Japan?", previous_response_id=first.id
    )
    assert follow.model_extra["retrieval"]["collection"] == store_id
    assert [n.filename for n in follow.output[0].content[0].annotations] == ["capitals.md"]
    named = client.responses.create(
        model=MODEL, input="And Japan?", previous_response_id=first.id,
        extra_body={"collection": "default"},
    )  # fmt: skip
    assert named.model_extra["retrieval"]["collection"] == "default"
    # a store deleted since: a 404 saying so (an R2R user's audit: it searched the server's
    # default collection, another team's documents, without a word)
    gone = client.vector_stores.create(name="soon gone")
    tools = [{"type": "file_search", "vector_store_ids": [gone.id]}]
    asked = client.responses.create(model=MODEL, input="hi", tools=tools, max_output_tokens=1)
    assert asked.model_extra["retrieval"]["collection"] == gone.id
    client.vector_stores.delete(gone.id)
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model=MODEL, input="hi", previous_response_id=asked.id)
    assert err.value.code == "collection_not_found" and gone.id in err.value.message
    bare = client.responses.create(
        model=MODEL, input="hi", previous_response_id=asked.id, max_output_tokens=1,
        extra_body={"retrieval": False},
    )  # fmt: skip
    assert bare.model_extra["retrieval"]["status"] == "disabled"
    named = client.responses.create(
        model=MODEL, input="hi", previous_response_id=asked.id, max_output_tokens=1,
        extra_body={"collection": "default"},
    )  # fmt: skip
    assert named.model_extra["retrieval"]["collection"] == "default"


def test_file_search_over_several_stores_searches_them_as_one(
    client: openai.OpenAI, knowledge_base
) -> None:
    """A file_search tool with two vector stores (a 400 before): their chunks are ranked
    together, each result keeps its own store's attributes, a filter applies to both, a
    follow-up searches both again, and one deleted since is named in its 404. Chat
    completions take a list in `collection` the same way."""
    store_id, file_id = knowledge_base
    text = "The ferry to the island leaves the harbour at dawn and returns at dusk."
    f = client.files.create(file=("ferry.md", text.encode()), purpose="assistants")
    other = client.vector_stores.create(name="ferries")
    client.vector_stores.files.create_and_poll(
        file_id=f.id, vector_store_id=other.id, attributes={"team": "boats"},
        poll_interval_ms=50,
    )  # fmt: skip
    tool = {"type": "file_search", "vector_store_ids": [store_id, other.id], "max_num_results": 2}
    for question, first in ((text, f.id), (GUIDE, file_id)):
        r = client.responses.create(
            model=MODEL, input=question, tools=[tool], include=["file_search_call.results"],
            max_output_tokens=1,
        )  # fmt: skip
        assert [x.file_id for x in r.output[0].results] == [
            first,
            ({f.id, file_id} - {first}).pop(),
        ]
        assert r.model_extra["retrieval"]["collections"] == [store_id, other.id]
        attributes = {x.file_id: x.attributes for x in r.output[0].results}
        assert attributes[f.id]["team"] == "boats" and "team" not in attributes[file_id]
    boats = {"type": "eq", "key": "team", "value": "boats"}
    only = client.responses.create(
        model=MODEL, input=GUIDE, tools=[{**tool, "filters": boats}], max_output_tokens=1,
        include=["file_search_call.results"],
    )  # fmt: skip
    assert [x.file_id for x in only.output[0].results] == [f.id]
    follow = client.responses.create(
        model=MODEL, input=text, previous_response_id=r.id, max_output_tokens=1
    )
    assert follow.model_extra["retrieval"]["collections"] == [store_id, other.id]
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=1,
        extra_body={"collection": [other.id, store_id], "top_k": 2},
    )  # fmt: skip
    assert [s["filename"] for s in chat.choices[0].message.sources] == ["ferry.md", "capitals.md"]
    assert [s["collection"] for s in chat.choices[0].message.sources] == [other.id, store_id]
    twice = {**tool, "vector_store_ids": [other.id] * 3 + [store_id]}  # (a name given twice
    r2 = client.responses.create(model=MODEL, input=text, tools=[twice], max_output_tokens=1)
    assert r2.model_extra["retrieval"]["collections"] == [other.id, store_id]  # is searched
    # once; it counts twice toward the limit of 8, as the API's schema says)
    with pytest.raises(openai.BadRequestError) as err:  # (the model's collection and the
        client.responses.create(  # tool's: it searched the tool's, and named the model's)
            model=f"{MODEL}@default", input=text, tools=[tool], max_output_tokens=1
        )
    assert err.value.body["param"] == "tools.[0].vector_store_ids"
    client.vector_stores.delete(other.id)
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model=MODEL, input=text, previous_response_id=r.id)
    assert err.value.code == "collection_not_found" and f"'{other.id}'" in err.value.message
    assert f"'{store_id}'" not in err.value.message


def test_a_chain_with_a_gap_or_no_answer_yet_says_so(client: openai.OpenAI, server, tmp) -> None:
    """A Responses audit: a deleted earlier turn silently shortened every later turn's
    conversation; a chain to a response still being answered (or failed with no text) read an
    empty assistant turn."""
    from server.responses.store import ResponseStore

    kw = dict(model=MODEL, max_output_tokens=1, tool_choice="none")
    a = client.responses.create(input="Turn a.", **kw)
    b = client.responses.create(input="Turn b.", previous_response_id=a.id, **kw)
    client.responses.delete(a.id)
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(
            input="Turn c.", previous_response_id=b.id, truncation="disabled", **kw
        )
    assert err.value.code == "previous_response_not_found" and a.id in err.value.message
    assert "was deleted" in err.value.message
    on = client.responses.create(input="Turn c.", previous_response_id=b.id, **kw)  # ("auto")
    assert on.status in ("completed", "incomplete")

    store = ResponseStore(tmp / "responses.sqlite")  # the server's, written from here
    try:
        base = {"created_at": 0, "model": MODEL, "output": [], "previous_response_id": None}
        store.put({**base, "id": "resp_running", "status": "in_progress"}, [])  # (this pid: alive)
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(input="Go on.", previous_response_id="resp_running", **kw)
        assert "still in progress" in err.value.message
        turn = [{"id": "msg_1", "type": "message", "role": "user", "status": "completed",
                 "content": [{"type": "input_text", "text": "Turn one."}]}]  # fmt: skip
        store.put({**base, "id": "resp_failed", "status": "failed"}, turn)
    finally:
        store.delete("resp_running")
        store.close()
    chained = client.responses.create(input="Turn two.", previous_response_id="resp_failed", **kw)
    sent = [{"role": "user", "content": "Turn one."}, {"role": "user", "content": "Turn two."}]
    inline = client.responses.create(input=sent, store=False, **kw)
    assert chained.usage.input_tokens == inline.usage.input_tokens  # no empty assistant turn


def test_a_failed_responses_error_code_is_one_openais_sdks_know() -> None:
    """A Responses audit: a failed response's `error.code` was clara's ("shutting_down"),
    which the SDK's types (a closed list) refuse."""
    from typing import get_args

    from openai.types.responses import ResponseError as SDKError

    from clara_cli.http import APIError
    from server.responses.protocol import ResponseError

    known = set(get_args(SDKError.model_fields["code"].annotation))
    for code in ("shutting_down", "model_failed", "server_overloaded", "context_length_exceeded",
                 None, "server_error"):  # fmt: skip
        error = ResponseError.of(APIError(503, "the server is stopping", code=code))
        assert error.code in known
        SDKError.model_validate(error.model_dump(), strict=True)
        if code not in (None, "server_error"):
            assert error.message == f"the server is stopping ({code})"  # clara's, kept
    assert ResponseError.of(APIError(503, "busy", code="server_overloaded")).code == (
        "rate_limit_exceeded"
    )


def test_hints_a_client_adds_are_taken(client: openai.OpenAI) -> None:
    """A client-library audit: fields that are hints, which chat completions take, were a
    400 here (an SDK or agent that adds one broke against clara's Responses only)."""
    r = client.responses.create(
        model=MODEL, input="hi", max_output_tokens=1, max_tool_calls=1,
        reasoning={"effort": "minimal"}, extra_body={"prompt_cache_retention": "24h"},
    )  # fmt: skip
    assert r.status in ("completed", "incomplete")
    assert client.responses.create(model=MODEL, input="hi", max_output_tokens=1, reasoning={}).id


def test_cancel_and_paging_answer_as_openai_does(client: openai.OpenAI, server) -> None:
    """A Responses audit: cancel was a 404 "Unknown request URL" (as if the response were
    gone); an unknown `after` cursor was ignored (the first page again); content parts were
    run together ("part Apart B")."""
    r = client.responses.create(
        model=MODEL, max_output_tokens=1, tool_choice="none",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "part A"},
                                            {"type": "input_text", "text": "part B"}]}],
    )  # fmt: skip
    (item,) = client.responses.input_items.list(r.id).data
    assert item.content[0].text == "part A\npart B"  # (as chat completions reads parts)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.cancel(r.id)
    assert "background" in err.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_unknown")
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.input_items.list(r.id, after="msg_unknown")
    assert err.value.body["param"] == "after"


def test_stored_responses_outlive_the_process(client, tmp, tiny_llama_dir) -> None:
    """A second server process on the same --responses-db reads and continues the chain
    (that one without the files API: --no-files-api)."""
    first = client.responses.create(model=MODEL, input=DOCS[1][1])
    other = start_server(tmp, tiny_llama_dir, "--no-files-api")
    try:
        fresh = openai.OpenAI(base_url=f"{other.url}/v1", api_key=API_KEY, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            fresh.files.list()
        assert fresh.responses.retrieve(first.id).output_text == first.output_text
        chained = fresh.responses.create(model=MODEL, input="More?", previous_response_id=first.id)
        assert chained.status in ("completed", "incomplete")
    finally:
        other.stop()


@pytest.mark.parametrize(
    "body, param",
    [
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools.[0].type"),
        (
            {
                "input": "hi",
                "tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "function", "name": "f"},
            },
            "tool_choice",
        ),
        ({"input": "hi", "background": True}, "background"),
        ({"input": "hi", "reasoning": {"effort": "low"}}, "reasoning.effort"),
        ({"input": "hi", "reasoning": {"effort": "none", "frob": 1}}, "reasoning"),
        ({"input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        (
            {"input": "hi", "text": {"format": {"type": "json_schema", "schema": {"type": "x"}}}},
            "text.format.schema",
        ),
        ({"input": "hi", "text": {"format": "json_object"}}, "text.format"),  # (read as text)
        ({"input": "hi", "text": {"format": {"name": "x"}}}, "text.format.type"),
        (  # (unknown at the top: ignored, as chat's are; inside a tool: a misshapen tool)
            {
                "input": "hi",
                "tools": [{"type": "file_search", "vector_store_ids": ["d"], "frobnicate": 1}],
            },
            ("tools.[0].frobnicate", "unknown_parameter"),
        ),
        ({"input": "hi", "include": ["reasoning.encrypted_content"]}, "include.[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, None),
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": [{"role": "user"}]}, "input.[0].content"),
        ({"input": [{"type": "computer_call_output", "call_id": "c", "output": {}}]}, "input.[0]"),
        (
            {"input": "hi", "tools": [{"type": "file_search", "vector_store_ids": ["../x"]}]},
            "tools.[0].vector_store_ids.[0]",
        ),
        (
            {
                "input": "hi",
                "tools": [{"type": "file_search", "vector_store_ids": [f"s{i}" for i in range(9)]}],
            },
            "tools.[0].vector_store_ids",
        ),
        ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "hi", "temperature": 3}, "temperature"),
        ({"input": "hi", "tool_choice": "required"}, ("tool_choice", "invalid_value")),
        ({"input": "hi", "tool_choice": {"type": "file_search"}}, "tool_choice"),
        (  # (no schema: a 400, as OpenAI says: any JSON object is json_object)
            {"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}},
            ("text.format.schema", "missing_required_parameter"),
        ),
        (
            {"input": "hi", "text": {"format": {"type": "json_schema", "schema": {"not": {}}}}},
            ("text.format.schema", "invalid_schema"),
        ),
    ],
)
def test_unsupported_or_invalid_requests_name_the_field(server, body, param) -> None:
    r = post(server, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    if isinstance(param, tuple):  # (and OpenAI's code for it: clients branch on it)
        param, code = param
        assert err["code"] == code, err
    assert err["message"] and "Traceback" not in err["message"]
    assert "more problems" not in err["message"]  # no noise from union members it is not
    if param is not None:
        assert err["param"] == param, err
    else:
        assert err["param"].startswith("input.[0].content"), err
        assert "reads text only" in err["message"]
    if param == "tools.[0].vector_store_ids":  # (pydantic's "List should have at most 8
        assert "at most 8 vector stores per request, not 9" in err["message"]  # items": whose)
    if "frobnicate" in str(body):  # (pydantic's "Extra inputs are not permitted" said less)
        assert err["message"].startswith("unknown parameter 'tools.[0].frobnicate'"), err
    if body["input"] and isinstance(body["input"], list) and "call_id" in body["input"][0]:
        assert "runs no hosted tools" in err["message"]


def test_an_upload_the_client_abandons_is_a_499_not_a_500(server) -> None:
    """An SRE's audit: an upload cut off by its client counted as a 500 and left two ERROR
    tracebacks in the log (Starlette's ClientDisconnect reached the crash handler)."""
    import socket

    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
        "Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 200000\r\n\r\n"
        '--XX\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
    )
    before = server.log().count("Traceback")
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(head.encode() + b"x" * 5000)
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    metrics = ""
    while 'method="POST",status="499"' not in metrics and time.monotonic() < deadline:
        time.sleep(0.2)
        metrics = httpx.get(
            f"{server.url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
        ).text
    assert 'clara_requests_total{endpoint="/v1/files",method="POST",status="499"} 1' in metrics
    assert 'endpoint="/v1/files",method="POST",status="500"' not in metrics
    assert server.log().count("Traceback") == before, server.log()[-3000:]
    # a chat's JSON body cut off the same way was a 400, "There was an error parsing the body"
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        f"{API_KEY}\r\nContent-Type: application/json\r\nContent-Length: 20000\r\n\r\n"
        '{"messages": [{"role": "user", "content": "'
    )
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(head.encode() + b"x" * 1000)
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while 'endpoint="/v1/chat/completions",method="POST",status="499"' not in metrics:
        assert time.monotonic() < deadline, metrics
        time.sleep(0.2)
        metrics = httpx.get(
            f"{server.url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
        ).text


def test_405_lists_every_method_of_the_path(server) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    r = httpx.put(f"{server.url}/v1/responses/resp_x", headers=headers, timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, DELETE"
    r = httpx.delete(f"{server.url}/v1/files", headers=headers, timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, POST"


def test_http_as_rfc_9110_has_it(server) -> None:
    """From a protocol audit: HEAD on the API's GET routes was a 405 (a load balancer's HEAD
    /v1/models saw the server down); JSON sent as another media type was told it was no JSON
    object; a gzip body was a bare parse error; two Authorization headers counted the last
    (FastAPI and proxies the first); a static folder's 405 said
    `Allow:` with nothing; the web chat's files came whole at every load despite their ETag;
    /health while loading had no Retry-After (see test_server_lifecycle)."""
    url, key = server.url, {"Authorization": f"Bearer {API_KEY}"}
    get = httpx.get(f"{url}/v1/models", headers=key, timeout=10)
    # every answer names its request (OpenAI's X-Request-ID): the one a proxy sent, if sane
    assert re.fullmatch(r"req_[0-9a-f]{24}", get.headers["x-request-id"])
    given = httpx.get(f"{url}/v1/models", headers={**key, "X-Request-ID": "abc-123"}, timeout=10)
    assert given.headers["x-request-id"] == "abc-123"
    odd = httpx.get(f"{url}/nope", headers={**key, "X-Request-ID": "a b"}, timeout=10)
    assert odd.status_code == 404 and odd.headers["x-request-id"].startswith("req_")
    head = httpx.head(f"{url}/v1/models", headers=key, timeout=10)
    assert head.status_code == 200 and head.content == b"", head
    assert head.headers["content-length"] == get.headers["content-length"]
    r = httpx.head(f"{url}/v1/models")  # the key is still needed
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'  # (RFC 6750)
    r = httpx.put(f"{url}/v1/models", headers=key, timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    r = httpx.put(f"{url}/docs-files/swagger-ui.css", headers=key, timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    r = httpx.request("QUERY", f"{url}/v1/models", headers=key, timeout=10)  # (not 501:
    assert r.status_code == 405  # QUERY is on its way to a standard; schemathesis asks 405)

    body = json.dumps({"input": "hi", "max_output_tokens": 1, "tools": []})
    for sent in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {**key, **({"Content-Type": sent} if sent else {})}
        r = httpx.post(f"{url}/v1/responses", content=body, headers=headers, timeout=30)
        error = r.json()["error"]
        assert r.status_code == 415 and error["code"] == "unsupported_media_type", r.text
        assert "'Content-Type: application/json'" in error["message"]
        assert (sent or "no Content-Type") in error["message"]
    headers = {**key, "Content-Type": "application/json; charset=utf-8"}
    r = httpx.post(f"{url}/v1/responses", content=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    r = httpx.post(
        f"{url}/v1/responses", content=gzip.compress(body.encode()), timeout=10,
        headers={**headers, "Content-Encoding": "gzip"},
    )  # fmt: skip
    assert r.status_code == 415 and r.headers["accept-encoding"] == "identity", r.text
    assert "content coding (gzip)" in r.json()["error"]["message"]
    # a gzip header then an identity one was read as identity (the last counted; an audit)
    both = httpx.Headers([*headers.items(), ("Content-Encoding", "gzip"),
                          ("Content-Encoding", "identity")])  # fmt: skip
    r = httpx.post(f"{url}/v1/responses", content=gzip.compress(body.encode()), headers=both)
    assert r.status_code == 415 and "content coding (gzip)" in r.text, r.text

    twice = [("Authorization", f"Bearer {API_KEY}"), ("Authorization", "Bearer wrong")]
    for pair in (twice, twice[::-1]):
        r = httpx.get(f"{url}/v1/models", headers=httpx.Headers(pair), timeout=10)
        assert r.status_code == 400 and "2 'authorization' headers" in r.text, r.text

    page = httpx.get(f"{url}/web/app.js", timeout=10)
    etag = page.headers["etag"]
    again = httpx.get(f"{url}/web/app.js", headers={"If-None-Match": etag}, timeout=10)
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert again.headers["cache-control"] == "no-cache"
    other = httpx.get(f"{url}/web/app.js", headers={"If-None-Match": '"other"'}, timeout=10)
    assert other.status_code == 200 and other.content == page.content


def test_unknown_vector_store_and_model(server, client, knowledge_base) -> None:
    for store in ("nope", "uploads"):  # uploads/ (the Files API's folder) is no vector store
        tool = {"type": "file_search", "vector_store_ids": [store]}
        r = post(server, {"input": "hi", "tools": [tool]})
        assert r.status_code == 404, store
        assert r.json()["error"]["param"] == "tools.[0].vector_store_ids"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_missing")


def test_a_response_whose_server_died_reads_failed(client, tmp, tiny_llama_dir) -> None:
    """kill -9 mid-stream: the id `response.created` announced is stored, and once its server
    is gone it reads "failed" with a reason (not a 404, not "in_progress" for ever)."""
    doomed = start_server(tmp, tiny_llama_dir)  # the same responses database as `server`
    body = {"model": MODEL, "input": "Tell me everything.", "stream": True,
            "max_output_tokens": 1500, "retrieval": False}  # fmt: skip
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        with httpx.stream("POST", f"{doomed.url}/v1/responses", json=body, headers=headers) as r:
            lines = r.iter_lines()
            created = json.loads(next(x for x in lines if '"response.created"' in x)[6:])
            next(x for x in lines if '"response.output_text.delta"' in x)
            response_id = created["response"]["id"]
            assert client.responses.retrieve(response_id).status == "in_progress"  # alive
            doomed.proc.kill()
            doomed.proc.wait(20)
    finally:
        doomed.stop()
    lost = client.responses.retrieve(response_id)  # read through the other server
    assert lost.status == "failed" and "stopped before this response finished" in (
        lost.error.message
    )


def test_store_chain_and_lazy_file(tmp_path) -> None:
    from server.responses.store import ResponseStore

    store = ResponseStore(tmp_path / "sub" / "responses.sqlite")
    assert not (tmp_path / "sub").exists()  # nothing stored: no file
    for i, prev in ((1, None), (2, "r1"), (3, "r2")):
        response = {"id": f"r{i}", "created_at": i, "previous_response_id": prev}
        store.put(response, [{"id": f"m{i}"}])
    assert [r["id"] for _, r in store.chain("r3").turns] == ["r1", "r2", "r3"]
    assert store.chain("r3").gap is None
    assert store.delete("r1") and not store.delete("r1")
    chain = store.chain("r3")
    assert [items for items, _ in chain.turns] == [[{"id": "m2"}], [{"id": "m3"}]]
    assert chain.gap == "r1"  # (the turns before it are gone: the caller says so)
    assert store.chain("r1") is None and store.get("r1") is None
    store.close()
    again = ResponseStore(tmp_path / "sub" / "responses.sqlite")  # durable: a new connection
    assert again.get("r3")["previous_response_id"] == "r2"
    again.close()
    # the conversations are this user's only (a team deployment audit: with umask 022 every
    # user of the machine could read them), the folder made for them too
    assert (tmp_path / "sub" / "responses.sqlite").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "sub").stat().st_mode & 0o777 == 0o700


def test_responses_past_keep_responses_are_deleted_and_erased(tmp_path) -> None:
    """A privacy audit: stored responses, with the file-search results that quoted a file
    since deleted, stayed for good, and a deleted one's text stayed in the WAL (a crash kept
    it there). --keep-responses DAYS deletes those older than DAYS; a deletion empties the
    WAL; a response is its key's (`owners`)."""
    import time as clock

    from server.responses.store import ResponseStore

    path = tmp_path / "responses.sqlite"
    store = ResponseStore(path)
    now = int(clock.time())
    for rid, age_days in (("r_old", 40), ("r_new", 1)):
        response = {"id": rid, "created_at": now - age_days * 86400, "secret": f"CANARY-{rid}"}
        store.put(response, [{"id": f"m_{rid}"}], key="alice")
    assert store.get("r_new", "bob") is None and store.item("m_r_new", "bob") is None
    assert not store.delete("r_new", "bob") and store.get("r_new", "alice") is not None
    # bob sending alice's item id in his input does not take it over (a privacy audit)
    store.put({"id": "r_bob", "created_at": now}, [{"id": "m_r_new", "bob": 1}], key="bob")
    assert store.item("m_r_new", "alice") == {"id": "m_r_new"}
    assert store.item("m_r_new", "bob") is None
    # alice replaying her items in a later response: they are its, and outlive the first
    store.put({"id": "r_first", "created_at": now}, [{"id": "m_replayed"}], key="alice")
    store.put({"id": "r_again", "created_at": now}, [{"id": "m_replayed", "n": 2}], key="alice")
    assert store.delete("r_first", "alice")
    assert store.item("m_replayed", "alice") == {"id": "m_replayed", "n": 2}
    store.close()
    kept = ResponseStore(path, keep_days=30)
    assert kept.get("r_old", "alice") is None and kept.item("m_r_old", "alice") is None
    kept.put({"id": "r_day", "created_at": now - 86400}, [], key="alice")
    kept.keep_days = 0.5  # (past keeping since the last look: gone to readers at once)
    assert kept.get("r_day", "alice") is None
    assert not kept.delete("r_day", "alice")  # (as GET says: none; its row goes)
    kept.keep_days = 30
    assert kept.get("r_day", "alice") is None
    assert kept.get("r_new", "alice")["secret"] == "CANARY-r_new"
    assert kept.delete("r_new", "alice")
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the file, its WAL
    assert b"CANARY" not in on_disk and b"m_r_old" not in on_disk
    kept.close()


def test_items_stored_by_an_older_clara_are_found_by_reference(tmp_path) -> None:
    """An upgrade audit: responses an older clara stored (it writes no `items` rows) after
    this version had made the table (a rollback, then the upgrade again) were never indexed:
    their `item_reference`s were 404s. A store older than the table is indexed whole."""
    import sqlite3

    from server.responses.store import SCHEMA, ResponseStore

    def as_older_clara(path, rid: str) -> None:  # (its SCHEMA, its INSERT, nothing else)
        db = sqlite3.connect(path, isolation_level=None)
        db.executescript(SCHEMA)
        response = {"id": rid, "created_at": 1, "output": [{"id": f"out_{rid}"}]}
        db.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
            (rid, 1, None, json.dumps([{"id": f"in_{rid}"}]), json.dumps(response)),
        )
        db.close()

    path = tmp_path / "responses.sqlite"
    as_older_clara(path, "r_before")  # a store from before the table
    store = ResponseStore(path)
    store.put({"id": "r_new", "created_at": 2, "output": [{"id": "out_r_new"}]}, [])
    assert store.item("in_r_before") == {"id": "in_r_before"}
    store.close()
    store = ResponseStore(path)
    store.put({"id": "r_last", "created_at": 3, "output": [{"id": "out_r_last"}]}, [])
    assert store.delete("r_last")  # (the next row takes its rowid: a review)
    store.close()
    as_older_clara(path, "r_rolled_back")  # stored by an older clara meanwhile
    store = ResponseStore(path)
    assert store.item("out_r_rolled_back") == {"id": "out_r_rolled_back"}
    assert store.item("in_r_rolled_back") == {"id": "in_r_rolled_back"}
    assert store.item("out_r_new") == {"id": "out_r_new"} and store.item("nowhere") is None
    store.close()
    # a store that may not be written is read as it is (a review: the indexing's writes
    # failed its every read)
    from server.responses.store import _index_items

    as_older_clara(path, "r_read_only")
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    _index_items(read_only)
    assert not read_only.in_transaction
    read_only.close()


def test_a_stream_cut_by_a_crash_reads_failed_after_a_restart_as_the_same_pid(
    tmp_path: Path,
) -> None:
    """A crash audit: in Docker every server is pid 1, so a stored stream its server died
    writing still had a live "writer" after the restart, and read "in_progress" forever."""
    import sqlite3
    import subprocess
    import sys

    from server.responses.store import INTERRUPTED, ResponseStore

    db = tmp_path / "responses.sqlite"
    crashed = (  # a server that died writing r1 (its process is gone)
        "import sys; from pathlib import Path; from server.responses.store import "
        "ResponseStore; ResponseStore(Path(sys.argv[1])).put({'id': 'r1', 'created_at': 1, "
        "'status': 'in_progress'}, [])"
    )
    subprocess.run([sys.executable, "-c", crashed, str(db)], check=True)
    with sqlite3.connect(db) as conn:  # ... as pid 1 in its container, as this server is
        conn.execute("UPDATE running SET pid = ?", (os.getpid(),))
    restarted = ResponseStore(db)
    restarted.put({"id": "r2", "created_at": 2, "status": "in_progress"}, [])
    assert restarted.get("r1") == {
        "id": "r1", "created_at": 1, "status": "failed", "error": INTERRUPTED
    }  # fmt: skip
    assert restarted.get("r2")["status"] == "in_progress"  # its own: still being written
    again = ResponseStore(db)  # another store of this process sees that too
    assert again.get("r2")["status"] == "in_progress"
    restarted.put({"id": "r2", "created_at": 2, "status": "completed"}, [])
    assert again.get("r2")["status"] == "completed"
    again.close()
    restarted.close()


def test_a_replica_in_another_container_is_seen_writing_its_responses(tmp_path: Path) -> None:
    """A container audit: replicas sharing the store in their own containers (each pid 1, or
    the other's pid not there) read each other's running responses as failed, and wrote
    that into the row. A writer is known by the lock it holds, not by its pid."""
    import sqlite3
    import subprocess
    import sys

    from server.responses.store import ResponseStore

    db = tmp_path / "responses.sqlite"
    writing = (  # another replica, streaming r1 (it holds its writer lock until killed)
        "import sys, time; from pathlib import Path; from server.responses.store import "
        "ResponseStore; s = ResponseStore(Path(sys.argv[1])); s.put({'id': 'r1', "
        "'created_at': 1, 'status': 'in_progress'}, []); print('ok', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", writing, str(db)], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"ok"
        with sqlite3.connect(db) as conn:  # its pid, as seen from here: this one's (both pid 1)
            conn.execute("UPDATE running SET pid = ?", (os.getpid(),))
        reader = ResponseStore(db)
        assert reader.get("r1")["status"] == "in_progress"
        child.kill()
        child.wait()
        assert reader.get("r1")["status"] == "failed"  # (gone: its lock went with it)
        reader.close()
    finally:
        child.kill()


def test_a_locked_response_store_holds_up_only_its_own_request(server, client, tmp) -> None:
    """Another process holds the SQLite file's write lock: the DELETE waits for it, while
    the event loop goes on answering everyone else (/health) at once."""
    import sqlite3
    import threading
    import time

    stored = client.responses.create(model=MODEL, input="hi")
    holder = sqlite3.connect(tmp / "responses.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, until ROLLBACK
    result: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {API_KEY}"}

    def delete() -> None:
        r = httpx.delete(f"{server.url}/v1/responses/{stored.id}", headers=headers, timeout=30)
        result["status"] = r.status_code

    deleting = threading.Thread(target=delete)
    try:
        deleting.start()
        time.sleep(0.5)  # the DELETE is now waiting on the lock (SQLite's busy timeout: 5 s)
        with httpx.Client(timeout=10) as health:
            t0 = time.monotonic()
            assert health.get(f"{server.url}/health").status_code == 200
            assert time.monotonic() - t0 < 3.0  # a blocked event loop would wait the 5 s
        assert deleting.is_alive()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        deleting.join(30)
    assert result["status"] == 200
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(stored.id)


def test_a_response_the_disk_cannot_hold_is_a_storage_error(tmp_path) -> None:
    """Before (a disk-full audit): SQLite had ended the transaction itself, the ROLLBACK
    failed and hid why, and the client got a 500 "internal" (a stream: a cut connection)."""
    import sqlite3

    from clara_cli.http import APIError, storage_error
    from server.responses.store import ResponseStore

    class FullDisk:
        in_transaction = False

        def execute(self, sql: str, *args):
            if sql.startswith("INSERT"):
                full = sqlite3.OperationalError("database or disk is full")
                full.sqlite_errorname = "SQLITE_FULL"  # (as SQLite raises it)
                raise full

    store = ResponseStore(tmp_path / "responses.sqlite")
    store._conn = FullDisk()
    with pytest.raises(APIError) as info:
        store.put({"id": "resp_1", "created_at": 0, "status": "completed"}, [])
    assert info.value.status == 507 and info.value.code == "storage_error"
    assert "free disk space there, or send store: false" in info.value.message

    # a refusal that is not a full disk is a 500 saying to check the folder's rights
    denied = storage_error(PermissionError(13, "Permission denied"), tmp_path, "store the response")
    assert denied.status == 500 and "Permission denied; check that the server may" in denied.message
    # uploads and responses judge a full disk alike (a quota too; it was below 1 MiB free
    # for the responses, ENOSPC alone for uploads)
    for errno_ in (errno.ENOSPC, errno.EDQUOT):
        full = storage_error(OSError(errno_, os.strerror(errno_)), tmp_path, "store the upload")
        assert full.status == 507 and "; free disk space there" in full.message

    # reads too (a review: only writes were mapped; a read was a 500 and a traceback)
    unopenable = ResponseStore(tmp_path / "a-folder")
    (tmp_path / "a-folder").mkdir()
    for read in (lambda: unopenable.get("resp_1"), lambda: unopenable.delete("resp_1")):
        with pytest.raises(APIError) as info:
            read()
        assert info.value.code == "storage_error" and "could not open the stored responses" in (
            info.value.message
        )
    # and a store that holds nothing yet is not made by a read of an unknown id
    empty = ResponseStore(tmp_path / "none" / "responses.sqlite")
    assert empty.get("resp_x") is None and empty.chain("resp_x") is None
    assert not empty.delete("resp_x") and not (tmp_path / "none").exists()


def test_results_carry_the_files_attributes_and_requests_are_echoed(
    client: openai.OpenAI,
) -> None:
    """An app-developer audit: file_search results had clara's attributes only (not those the
    app gave the file), and parallel_tool_calls, service_tier and text.verbosity came back
    as something else than asked; usage lacked cache_write_tokens, which the SDK requires."""
    f = client.files.create(file=("capitals.md", GUIDE.encode()), purpose="assistants")
    vs = client.vector_stores.create(name="attributed")
    client.vector_stores.files.create_and_poll(
        file_id=f.id, vector_store_id=vs.id, attributes={"year": 2024, "chunk_id": "mine"},
        poll_interval_ms=50,
    )  # fmt: skip
    raw = client.responses.with_raw_response.create(
        model=MODEL, input=GUIDE, include=["file_search_call.results"],
        tools=[{"type": "file_search", "vector_store_ids": [vs.id]}],
        parallel_tool_calls=False, service_tier="flex", text={"verbosity": "low"},
    )  # fmt: skip
    response = raw.parse()
    (result,) = raw.http_response.json()["output"][0]["results"]  # (the SDK makes 2024 2024.0)
    assert result["attributes"]["year"] == 2024 and type(result["attributes"]["year"]) is int
    assert result["attributes"]["chunk_id"] == "mine" and result["attributes"]["document_id"]
    assert response.parallel_tool_calls is False and response.service_tier == "flex"
    assert response.text.verbosity == "low" and response.text.format.type == "text"
    assert response.usage.input_tokens_details.cache_write_tokens == 0
    with pytest.raises(openai.BadRequestError):  # OpenAI's rankers only
        client.responses.create(
            model=MODEL, input=GUIDE,
            tools=[{"type": "file_search", "vector_store_ids": [vs.id],
                    "ranking_options": {"ranker": "bogus"}}],
        )  # fmt: skip
    client.vector_stores.delete(vs.id)


def test_a_stream_waiting_for_indexing_sends_keep_alives_first(tmp, tiny_llama_dir) -> None:
    """A file_search stream on a vector store with a file still being indexed sent nothing,
    not even its headers, until the file was done (up to two minutes: a proxy cuts such a
    request; a soak audit). Headers and keep-alive comments now come at once, then the
    response, which searched the file."""
    server = start_server(tmp, tiny_llama_dir, "--sse-keepalive", "0.01")
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
        book = "\n\n".join(f"Paragraph {i} tells of river {i} and its bridges." * 3
                           for i in range(600))  # fmt: skip
        f = client.files.create(file=("book.md", book.encode()), purpose="assistants")
        vs = client.vector_stores.create(name="indexing-now")
        client.vector_stores.files.create(vector_store_id=vs.id, file_id=f.id)
        body = {
            "model": MODEL, "input": "Which paragraph tells of river 7?", "stream": True,
            "tools": [{"type": "file_search", "vector_store_ids": [vs.id]}],
            "include": ["file_search_call.results"],
        }  # fmt: skip
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.stream(
            "POST", f"{server.url}/v1/responses", json=body, headers=headers, timeout=120
        ) as r:
            assert r.status_code == 200
            lines = [line for line in r.iter_lines() if line]
        assert lines[0] == ": keep-alive"  # before the first event: the file was indexing
        events = [json.loads(x[6:]) for x in lines if x.startswith("data: ")]
        assert events[0]["type"] == "response.created"
        assert events[-1]["type"] in ("response.completed", "response.incomplete")
        (call,) = [o for o in events[-1]["response"]["output"] if o["type"] == "file_search_call"]
        assert call["results"] and call["results"][0]["file_id"] == f.id
    finally:
        server.stop()


def test_a_store_deleted_while_its_files_are_waited_for_is_not_found_as_a_store(
    client: openai.OpenAI,
) -> None:
    """A concurrency audit: a file_search waiting for its store's uploads, the store deleted
    meanwhile, was told about a 'collection' field it never sent and `clara-index add`."""
    vs = client.vector_stores.create(name="going")
    slow = client.files.create(  # read for 5 s (its budget), then refused: in progress until
        file=("slow.html", b"<p>x</p>" + b"<a " * 60_000), purpose="assistants"
    )
    client.vector_stores.files.create(vector_store_id=vs.id, file_id=slow.id)
    deleting = threading.Timer(1.0, client.vector_stores.delete, args=(vs.id,))
    deleting.start()
    try:
        with pytest.raises(openai.NotFoundError) as e:
            client.responses.create(
                model=MODEL, input="What is the capital of France?",
                tools=[{"type": "file_search", "vector_store_ids": [vs.id]}],
            )  # fmt: skip
    finally:
        deleting.join()
    assert e.value.body["param"] == "tools.[0].vector_store_ids"
    assert e.value.body["message"] == f"No vector store found with id '{vs.id}'"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc")
def test_a_deleted_store_is_closed_by_chats_too(client: openai.OpenAI, server) -> None:
    """A concurrency audit: chats keep their own open copy of a store, which its deletion
    left open (its files and their disk space) until 128 other stores pushed it out."""
    f = client.files.create(file=("gone.md", GUIDE.encode()), purpose="assistants")
    vs = client.vector_stores.create(name="soon_gone")
    client.vector_stores.files.create_and_poll(
        vector_store_id=vs.id, file_id=f.id, poll_interval_ms=50
    )
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Capital of Japan?"}],
        extra_body={"collection": vs.id},
    )  # fmt: skip
    assert answer.choices[0].message.sources  # (read through the chats' copy)

    def open_files() -> list[str]:
        paths = []
        for fd in Path(f"/proc/{server.proc.pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # (closed meanwhile)
                paths.append(os.readlink(fd))
        return paths

    assert any(vs.id in p for p in open_files())
    client.vector_stores.delete(vs.id)
    assert not [p for p in open_files() if vs.id in p]


def test_unknown_request_fields_are_ignored_and_logged_as_chat_does(server) -> None:
    """A docs audit: the README says fields the API does not have are ignored (apps send
    other servers' options) and named in the log; the Responses API answered them a 400."""
    body = {"input": "hi", "store": False, "max_output_tokens": 16, "frobnicate_resp": {"x": 1}}
    r = post(server, body)
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("completed", "incomplete")
    assert "ignored fields not in its API: frobnicate_resp" in server.log()
