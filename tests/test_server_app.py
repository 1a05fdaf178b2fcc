"""clara-serve in-process (no model loaded): 503 while loading or after a failed load, no
traceback in a 500, request -> pipeline parameters, Prometheus formatting."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from server.app import create_app, served_name
from server.engine import Settings
from server.metrics import Counter, Histogram
from server.protocol import ChatCompletionRequest, ServingDefaults


def call(app, method: str, path: str, **kw) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kw)

    return asyncio.run(run())


def test_requests_get_503_until_the_model_is_loaded() -> None:
    app = create_app(Settings(model="/nowhere"))  # lifespan not run: the engine never starts
    body = {"messages": [{"role": "user", "content": "hi"}]}
    for method, path, kw in [
        ("POST", "/v1/chat/completions", {"json": body}),
        ("POST", "/v1/embeddings", {"json": {"input": "hi"}}),
    ]:
        r = call(app, method, path, **kw)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "model_loading" and r.headers["Retry-After"]
    # the models are listed meanwhile (an Open WebUI audit: a 503 there dropped the model,
    # and its user read "Model '' was not found" instead of the chat's "still loading")
    listed = call(app, "GET", "/v1/models")
    assert listed.status_code == 200, listed.text
    assert [m["id"] for m in listed.json()["data"]] == [
        "clara-nowhere",
        "clara-nowhere-no-retrieval",
    ]
    assert call(app, "GET", "/v1/models/clara-nowhere").json()["max_model_len"] is None
    health = call(app, "GET", "/health")
    assert health.status_code == 503 and health.json()["status"] == "loading"
    assert health.headers["Retry-After"] == "5"  # as the API routes' (a protocol audit)


def test_a_failed_load_is_reported(tmp_path) -> None:
    app = create_app(Settings(model=str(tmp_path / "no-model"), index_root=str(tmp_path)))
    with TestClient(app) as client:  # runs the lifespan: the worker tries to load and fails
        engine = app.state.engine
        engine.worker._thread.join(60)
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "failed"
        assert "Retry-After" not in health.headers  # (no use waiting)
        assert "no-model" in health.json()["error"]
        r = client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_failed"
        r = client.get("/v1/models")  # (listed while loading, not once the load failed)
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_failed"


def test_500_never_leaks_internals() -> None:
    app = create_app(Settings(model="/nowhere"))

    def boom():
        raise RuntimeError("secret internal detail")

    app.state.serving.models = boom
    r = call(app, "GET", "/v1/models", headers={"X-Request-ID": "trace-me"})
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["type"] == "server_error" and "secret" not in r.text and "Traceback" not in r.text
    # the 500 names its request as the log line does (with no --allow-origin it was answered
    # outside the gate, without the header: a review)
    assert r.headers["x-request-id"] == "trace-me"
    # an id with the characters the access line's note is written with is a new one (a
    # security audit: "x), key admin" made the note name another key)
    lied = call(app, "GET", "/v1/models", headers={"X-Request-ID": "x), key admin"})
    assert lied.headers["x-request-id"].startswith("req_")
    kept = "Root=1-5f8a;Parent=53995c3f/Sampled=1"  # (a tracing id as proxies send them)
    assert (
        call(app, "GET", "/v1/models", headers={"X-Request-ID": kept}).headers["x-request-id"]
        == kept
    )
    metrics = call(app, "GET", "/metrics").text
    assert 'clara_requests_total{endpoint="/v1/models",method="GET",status="500"} 3' in metrics


def test_served_model_name() -> None:
    assert served_name("smollm2-135m") == served_name("default") == "clara-smollm2-135m"
    assert served_name("/models/My-Model/") == "clara-My-Model"
    assert served_name("org/name") == "clara-name"


def test_request_to_pipeline_params() -> None:
    msgs = [{"role": "system", "content": "Be brief."}]
    for i in range(4):
        msgs += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    msgs.append({"role": "user", "content": [{"type": "text", "text": "last"}]})
    req = ChatCompletionRequest.model_validate(
        {"messages": msgs, "stop": "END", "max_tokens": 9, "max_completion_tokens": 4, "top_k": 3}
    )
    req.check_supported()
    p = req.to_params(ServingDefaults(top_k=5, collection="docs", history_turns=2))
    assert p.question == "last" and p.system == "Be brief."
    assert [m["content"] for m in p.history] == ["q2", "a2", "q3", "a3"]
    assert p.query == "q2\nq3\nlast"  # recent user turns: what retrieval encodes
    assert p.stop == ["END"] and p.max_tokens == 4 and p.top_k == 3 and p.collections == ["docs"]
    assert not p.truncate
    # truncation (as the Responses API's; a framework audit: "My name is Bob" four exchanges
    # back was dropped, and nothing a request could send kept it)
    whole = req.model_copy(update={"truncation": "disabled"}).to_params(
        ServingDefaults(top_k=5, collection="docs", history_turns=2)
    )
    assert [m["content"] for m in whole.history] == ["q0", "a0", "q1", "a1", "q2", "a2", "q3", "a3"]
    assert whole.query == p.query and not whole.truncate  # (retrieval asks as before)
    auto = req.model_copy(update={"truncation": "auto"}).to_params(ServingDefaults(history_turns=2))
    assert auto.history == p.history and auto.truncate
    assert p.temperature == 0.0 and p.retrieval and p.mode == "memory"
    zero = ChatCompletionRequest.model_validate(
        {"messages": msgs[-1:], "top_p": 0, "temperature": 1.0, "top_k": 0}
    ).to_params(ServingDefaults(history_turns=0))
    assert zero.temperature == 0.0 and not zero.retrieval and zero.history == []


def test_a_conversation_with_tool_calls_is_read_as_text() -> None:
    """An agent audit: a conversation holding another model's tool calls (an assistant's
    `tool_calls`, `tool` results) was a 400, so an agent loop begun elsewhere could not go
    on here. Calls and results are lines of the assistant's turn; those after the question
    are read with it; retrieval asks with the user's words only."""
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    msgs = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "What does pass do?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "c2", "type": "custom", "custom": {"name": "grep", "input": "pass"}}]},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "no-op"}]},
        {"role": "function", "name": "old_style", "content": "42"},
    ]  # fmt: skip
    req = ChatCompletionRequest.model_validate({"messages": msgs})
    req.check_supported()
    p = req.to_params(ServingDefaults(history_turns=2))
    assert p.history == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": 'Tool call: get_weather({"city": "Paris"})\n'
         "Tool result (get_weather): Sunny\nIt is sunny."},
    ]  # fmt: skip
    assert p.question == (
        "What does pass do?\n\nLet me look.\nTool call: grep(pass)\nTool result (grep): no-op\n"
        "Tool result (old_style): 42"
    )
    assert p.query == "Weather?\nWhat does pass do?"
    # an assistant's answer begun after the question is not read (no prefill), as before
    begun = req.model_copy(update={"messages": req.messages[:5] + [req.messages[3]]})
    assert begun.to_params(ServingDefaults()).question == "What does pass do?"
    # an assistant's refusal part is read as its text (the Responses API read it; chat: a 400)
    refused = ChatCompletionRequest.model_validate({"messages": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot."}]},
        {"role": "user", "content": "b"},
    ]})  # fmt: skip
    refused.check_supported()
    assert refused.to_params(ServingDefaults()).history[1]["content"] == "I cannot."


def test_prometheus_text() -> None:
    c = Counter("x_total", "help")
    c.inc(endpoint='/a"b', status="200")
    c.inc(2, endpoint='/a"b', status="200")
    assert 'x_total{endpoint="/a\\"b",status="200"} 3' in c.render()
    h = Histogram("lat_seconds", "help", buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 5.0):
        h.observe(v)
    lines = h.render()
    assert 'lat_seconds_bucket{le="0.1"} 1' in lines
    assert 'lat_seconds_bucket{le="1"} 2' in lines
    assert 'lat_seconds_bucket{le="+Inf"} 3' in lines
    assert "lat_seconds_count 3" in lines
    assert any(x.startswith("lat_seconds_sum 5.55") for x in lines)
    # a labelled metric shows nothing before its first value (an unlabelled 0 went away
    # once labelled values came: a stale series; an SRE's audit); an unlabelled one shows 0
    assert Counter("y_total", "help", labelled=True).render()[2:] == []
    assert Counter("z_total", "help").render()[2:] == ["z_total 0"]
    from server.app import _endpoint  # the labels dashboards know (a model's: since 0.1)

    assert _endpoint("/v1/models/clara-x") == "/v1/models/{model}"
    assert _endpoint("/v1/files/file-1/content") == "/v1/files/*"
    assert _endpoint("/v1/chat/completions") == "/v1/chat/completions"
    assert _endpoint("/wp-admin.php") == "other"


def test_the_log_masks_query_secrets_and_says_an_error_once() -> None:
    """An SRE's audit: ?api_key=... went to the access log as sent; each 500's traceback was
    logged twice, by clara's handler and again by uvicorn (Starlette raises it on)."""
    import logging

    from clara_cli.serve import _logged_once, _quiet_polls

    def access(path: str, status: int = 401) -> logging.LogRecord:
        return logging.LogRecord(
            "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5", "GET", path, "1.1", status), None,
        )  # fmt: skip

    record = access("/v1/models?api_key=sk-SECRET&limit=5&x-auth-token=hunter2&sig=a%2Fb")
    assert _quiet_polls(record)
    said = record.getMessage()
    assert said.endswith(
        '"GET /v1/models?api_key=***&limit=5&x-auth-token=***&sig=*** HTTP/1.1" 401'
    )
    assert not _quiet_polls(access("/health?x=1", 200))  # (polls that pass stay out)
    for sent, logged in (  # a value that does not look like one a route takes, a bare one
        ("/v1/files?limit=5;api_key=sk-1&after=file-abc", "/v1/files?limit=***&after=file-abc"),
        ("/v1/files?sk-bare-secret", "/v1/files?***"),
        ("/v1/responses/r?include%5B%5D=x.y", "/v1/responses/r?include%5B%5D=x.y"),
    ):
        record = access(sent)
        assert _quiet_polls(record) and f"GET {logged} HTTP" in record.getMessage(), sent
    error = RuntimeError("boom")
    uvicorns = logging.LogRecord(
        "uvicorn.error", logging.ERROR, "", 0, "Exception in ASGI application", None,
        (RuntimeError, error, None),
    )  # fmt: skip
    assert _logged_once(uvicorns)
    error.clara_logged = True  # (what clara's handler sets once it has logged it)
    assert not _logged_once(uvicorns)


def test_empty_user_message_is_accepted_a_missing_one_refused() -> None:
    req = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": ""}]})
    req.check_supported()
    assert req.to_params(ServingDefaults()).question == ""
    for message in ({"role": "user", "content": None}, {"role": "developer"}):
        with pytest.raises(ValidationError, match="message needs 'content'"):
            ChatCompletionRequest.model_validate({"messages": [message]})
    assistant = {"role": "assistant", "content": None}  # OpenAI's, after tool calls
    ChatCompletionRequest.model_validate(
        {"messages": [assistant, {"role": "user", "content": "x"}]}
    )


def test_an_answer_cites_the_sources_that_hold_its_words() -> None:
    """Every retrieved file was cited, so an answer about the Eiffel Tower named bananas.txt
    as a source (an app-developer audit)."""
    from server.jobs import Retrieved, SourceInfo

    def source(name: str, text: str) -> SourceInfo:
        return SourceInfo(1, f"doc-{name}", name, None, None, None, 0.5, text, "default")

    texts = {
        "report.txt": "The tower of the company's new office was completed in 2019.",
        "eiffel.md": "The Eiffel Tower in Paris was completed in 1889 for the World's Fair.",
        "bananas.txt": "Bananas grow in tropical regions and are rich in potassium.",
    }
    found = Retrieved(
        "ok", "default", [source(n, t) for n, t in texts.items()],
        query="When was the Eiffel Tower completed?",
    )  # fmt: skip
    assert found.cited("It was completed in 1889.") == [1]  # the answer's own fact
    assert found.cited("In Paris.") == [1]
    assert found.cited("The Eiffel Tower.") == [0, 1]  # no word the question lacks: any word
    # no chunk holds the answer's words: the best-ranked, as it holds most of the question's
    assert found.cited("I do not know.") == [0] and found.cited("") == [0]
    off_topic = Retrieved(  # (a chat front-end audit: Open WebUI showed it as the source)
        "ok", "default", found.sources[1:], query="What is the capital of Australia?"
    )
    assert off_topic.cited("Queensland.") == [] and off_topic.cited("") == []
    assert Retrieved("no_match", "default").cited("Yes") == []
    glue = Retrieved(  # words every source has say nothing of which one the answer read
        "ok", "default",
        [source(n, f"Der Text: {t}") for n, t in texts.items()] + [source("b", "Der Text.")],
        query="Wann wurde der Eiffelturm fertig?",
    )  # fmt: skip
    assert glue.cited("Der Text: 1889.") == [1]


def test_max_tokens_limit_caps_every_request() -> None:
    """An operator could not bound what one request decodes (a soak: max_tokens 1e9 on a prompt
    the bare model never ends took the whole context, slowing every other client)."""
    from server.protocol import CompletionRequest

    limited = ServingDefaults(max_tokens=512, max_tokens_limit=64)
    ask = [{"role": "user", "content": "hi"}]
    assert ChatCompletionRequest(messages=ask, max_tokens=10**9).to_params(limited).max_tokens == 64
    assert ChatCompletionRequest(messages=ask).to_params(limited).max_tokens == 64  # the default
    assert ChatCompletionRequest(messages=ask, max_tokens=8).to_params(limited).max_tokens == 8
    (prompt,) = CompletionRequest(prompt="hi", max_tokens=10**6).prompts()
    assert (
        CompletionRequest(prompt="hi", max_tokens=10**6).to_params(limited, prompt).max_tokens == 64
    )
    assert (
        ChatCompletionRequest(messages=ask, max_tokens=10**9)
        .to_params(ServingDefaults())
        .max_tokens
        == 10**9
    )  # no limit: the context's room cuts it later


def test_a_decode_step_that_fails_tells_its_requests(tmp_path, tiny_llama_dir, monkeypatch, caplog):
    """From a review of the engine: a step that raised ended every decoding request with no
    finish reason and no error, counted as cancelled (and every other adapter's batch with
    them). Now each hears the error, it is counted as one, and the server goes on. The error's
    log line names the request (it had no request id: the work ran on the model thread)."""
    from clara.decode import Decoder

    broken, step = [True], Decoder.step

    def step_once_broken(self):
        if broken.pop() if broken else False:
            raise RuntimeError("a step that broke")
        return step(self)

    monkeypatch.setattr(Decoder, "step", step_once_broken)
    app = create_app(Settings(model=str(tiny_llama_dir), index_root=str(tmp_path)))
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    with TestClient(app) as client:
        deadline = time.monotonic() + 120
        while app.state.engine.state != "ready" and time.monotonic() < deadline:
            time.sleep(0.1)
        with caplog.at_level("ERROR", logger="clara.worker"):
            r = client.post("/v1/chat/completions", json=body, headers={"X-Request-ID": "ask-1"})
        assert r.status_code == 500, r.text
        assert r.json()["error"]["message"].startswith("internal server error"), r.text
        assert r.headers["X-Request-ID"] == "ask-1"
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"], r.text
        metrics = client.get("/metrics").text
    assert 'clara_generations_total{reason="error"} 1' in metrics, metrics
    assert 'clara_generations_total{reason="cancelled"} 0' in metrics
    failed = [r for r in caplog.records if "request failed" in r.getMessage()]
    assert [r.getMessage() for r in failed] == ["chat request failed (request ask-1)"]


def test_a_request_whose_own_step_fails_leaves_its_neighbour_decoding(
    tmp_path, tiny_llama_dir, monkeypatch, caplog
):
    """A request's own text or logprobs raising in a step failed every request decoding
    beside it (an engine review); it now fails that request alone."""
    import threading

    from clara.stream import TextStream

    accept = TextStream.accept

    def accept_unless_13(self, token):
        if self.max_tokens == 13 and self.tokens >= 2:
            raise RuntimeError("this request's own text broke")
        return accept(self, token)

    monkeypatch.setattr(TextStream, "accept", accept_unless_13)
    app = create_app(Settings(model=str(tiny_llama_dir), index_root=str(tmp_path)))
    answers: dict[int, httpx.Response] = {}
    with TestClient(app) as client:
        deadline = time.monotonic() + 120
        while app.state.engine.state != "ready" and time.monotonic() < deadline:
            time.sleep(0.1)

        def ask(n: int) -> None:
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": n,
                    "ignore_eos": True}  # fmt: skip
            answers[n] = client.post(
                "/v1/chat/completions", json=body, headers={"X-Request-ID": f"ask-{n}"}
            )

        asking = [threading.Thread(target=ask, args=(n,)) for n in (13, 30)]
        with caplog.at_level("ERROR", logger="clara.worker"):
            for t in asking:
                t.start()
            for t in asking:
                t.join(120)
        metrics = client.get("/metrics").text
    failed = [r.getMessage() for r in caplog.records if "request failed" in r.getMessage()]
    assert failed == ["chat request failed (request ask-13)"]  # not its neighbour's
    assert answers[13].status_code == 500, answers[13].text
    assert answers[30].status_code == 200, answers[30].text
    assert answers[30].json()["usage"]["completion_tokens"] == 30
    assert 'clara_decode_step_seconds_count{requests="2"}' in metrics  # (side by side)
    assert 'clara_generations_total{reason="error"} 1' in metrics


def test_two_chunks_of_one_page_cite_it_once() -> None:
    """A citations audit: an answer drawn from two chunks of page 4 had two identical
    url_citations."""
    from types import SimpleNamespace

    from server.protocol import Source
    from server.serving import annotations_of

    def source(page: int) -> Source:
        return Source.model_construct(
            filename="manual.pdf", page_start=page, page_end=page, url=f"file:///m.pdf#page={page}"
        )

    ready = SimpleNamespace(retrieved=SimpleNamespace(cited=lambda content: [0, 1, 2]))
    cited = annotations_of(ready, [source(4), source(4), source(2)], "Page four.")
    assert [a.url_citation.title for a in cited] == ["manual.pdf, p. 4", "manual.pdf, p. 2"]
    assert all(a.url_citation.end_index == len("Page four.") for a in cited)


def test_a_source_url_names_the_file_by_its_bytes() -> None:
    """A file name that is not UTF-8 (a Latin-1 disk's) is stored with `\\xNN` escapes; its
    file:// URL percent-encoded the escape's backslash (latin%5Cxe9), naming another file or
    none (a citations audit). The URL now holds the name's bytes (latin%E9)."""
    from pathlib import Path

    from clara.paths import path_text
    from server.jobs import SourceInfo
    from server.serving import source_url

    def url(path: str, page: int | None = None) -> str:
        return source_url(SourceInfo(1, "doc-1", Path(path).name, path, page, page, 1.0, "t", "c"))

    latin = path_text(os.fsdecode(b"/docs/latin\xe9 name.txt"))
    assert latin == "/docs/latin\\xe9 name.txt"
    assert url(latin) == "file:///docs/latin%E9%20name.txt"
    for name in ("/docs/café #1 100%.pdf", "/docs/東京.txt"):  # as before: Path.as_uri's
        assert url(name, 2) == Path(name).as_uri() + ("#page=2" if name.endswith(".pdf") else "")


def test_a_path_is_logged_as_it_was_sent() -> None:
    """A security audit: the 499 and 500 lines logged the decoded path, so "%0D%0A" wrote a
    made-up line into the log and "%1B" a terminal escape."""
    from clara_cli.http import loggable_path

    logged = loggable_path("/v1/files/x\r\n2026-12-06 WARNING fake\x1b[31m/content")
    assert logged == "/v1/files/x%0D%0A2026-12-06%20WARNING%20fake%1B%5B31m/content"
    assert loggable_path("/v1/vector_stores/vs_1/files") == "/v1/vector_stores/vs_1/files"


def test_the_json_value_cap_takes_what_the_routes_take_and_stops_early(monkeypatch) -> None:
    """A review: 2048 token-id inputs of 250 ids (under the encoder's 256) were refused by a
    cap of 500000 values; a lone surrogate ended the count early and let any body through
    the cap; and the cap was checked once all of a body's values were built."""
    import json

    from starlette.exceptions import HTTPException

    from clara_cli import http

    data, where = http._parse(json.dumps({"input": [[7] * 480] * 2048}).encode())
    assert len(data["input"]) == 2048 and where is None
    bad = json.dumps({"input": ["a"] * 1_100_000, "z": "\ud800"}).encode()  # (strings: only
    with pytest.raises(HTTPException, match="more than 1000000 JSON values"):  # the walk
        http._parse(bad)  # counts them, and it stopped at the lone surrogate)
    with pytest.raises(HTTPException, match="more than 1000000 JSON values"):
        http._parse(b"[" + b"[]," * 1_000_001 + b"[]]")  # (refused before it is built)
    built = []
    finite = http._finite

    def counting(text: str) -> float:
        built.append(1)
        return finite(text)

    monkeypatch.setattr(http, "_finite", counting)
    with pytest.raises(HTTPException):
        http._parse(json.dumps({"input": [[7.5] * 1000] * 3000}).encode())
    assert len(built) == http.MAX_JSON_VALUES + 1  # (not the 3 million it holds)


def test_files_url_and_responses_db_are_checked_before_the_model_loads(tiny_llama_dir, capsys):
    """--files-url names the Files API of a clara-index serve beside a server that does not
    serve it: with the Files API on, or not an http(s) address, it is refused at startup."""
    from server.cli import main

    assert main(["--model", str(tiny_llama_dir), "--files-url", "http://localhost:8001"]) == 1
    assert "--files-url goes with --no-files-api" in capsys.readouterr().err
    bad = ["--model", str(tiny_llama_dir), "--no-files-api", "--files-url", "localhost:8001"]
    assert main(bad) == 1
    assert "http or https" in capsys.readouterr().err
    # a folder as --responses-db: every response was a 500 (an error audit)
    assert main(["--model", str(tiny_llama_dir), "--responses-db", str(tiny_llama_dir)]) == 1
    assert "is a folder: name the SQLite file" in capsys.readouterr().err


def test_a_max_context_too_small_for_any_question_is_named(tiny_llama_dir, tmp_path) -> None:
    """An error audit: `--max-context 10` started without a word, and every chat was a 400
    saying the question was too long for "the model's context". It still starts (legacy
    completions may fit), saying so in its log, and the 400 names --max-context."""
    from tests.test_server_harness import ServerProcess

    log = tmp_path / "serve.log"
    with ServerProcess("--model", str(tiny_llama_dir), "--max-context", "10", log=log,
                       env={"CLARA_HOME": str(tmp_path / "home")}) as server:  # fmt: skip
        server.wait_ready()
        chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        r = httpx.post(f"{server.url}/v1/chat/completions", json=chat, timeout=60)
        assert r.status_code == 400 and "--max-context" in r.json()["error"]["message"]
    assert "--max-context 10 leaves no room for an answer to a chat" in log.read_text()


def test_the_web_chat_offers_and_shows_the_types_the_server_reads() -> None:
    """The web chat's file picker (`accept`) and its list of files shown as text repeat the
    readers' sets by hand: kept equal here (the picker left out .dotm, which uploads read)."""
    import re
    from pathlib import Path

    from indexing.readers import (
        HTML_EXTENSIONS,
        MARKDOWN_EXTENSIONS,
        SUPPORTED_EXTENSIONS,
        TEXT_EXTENSIONS,
    )

    web = Path(__file__).resolve().parent.parent / "server" / "web"
    accept = re.search(r'accept="([^"]*)"', (web / "index.html").read_text()).group(1)
    assert {a for a in accept.split(",") if a.startswith(".")} == set(SUPPORTED_EXTENSIONS)
    shown = re.search(r"/\\\.\(([a-z|?]+)\)\$/i", (web / "app.js").read_text()).group(1)
    names = [e for x in shown.split("|") for e in ((x[:-2], x[:-1]) if x.endswith("?") else (x,))]
    assert {f".{e}" for e in names} == (MARKDOWN_EXTENSIONS | HTML_EXTENSIONS | TEXT_EXTENSIONS)


def test_a_stored_response_is_its_keys_and_its_deletion_is_logged(tiny_llama_dir, tmp_path):
    """A team deployment audit: what a colleague deleted was not logged, nor with which key.
    An R2R user's audit: with his own key bob read alice's stored conversation by its id (and
    could continue or delete it). A stored response is now its key's alone: for any other key
    it does not exist."""
    from tests.test_server_harness import ServerProcess

    keys = tmp_path / "keys"
    keys.write_text("alice sk-alice-1\nbob sk-bob-1\n")
    keys.chmod(0o600)
    log = tmp_path / "serve.log"
    with ServerProcess("--model", str(tiny_llama_dir), "--api-key-file", str(keys), log=log,
                       env={"CLARA_HOME": str(tmp_path / "home")}) as server:  # fmt: skip
        server.wait_ready()
        auth = {"Authorization": "Bearer sk-alice-1"}
        bob = {"Authorization": "Bearer sk-bob-1"}
        url = f"{server.url}/v1/responses"
        ask = {"input": "Hi", "max_output_tokens": 1, "tool_choice": "none"}
        made = httpx.post(url, json=ask, headers=auth, timeout=60)
        rid = made.json()["id"]
        item = made.json()["output"][0]["id"]
        for method, path, body in [
            ("GET", f"/{rid}", None), ("GET", f"/{rid}/input_items", None),
            ("DELETE", f"/{rid}", None), ("POST", "", {**ask, "previous_response_id": rid}),
            ("POST", "", {**ask, "input": [{"type": "item_reference", "id": item}]}),
        ]:  # fmt: skip
            r = httpx.request(method, url + path, json=body, headers=bob, timeout=60)
            assert r.status_code == 404, (method, path, r.text)
        assert httpx.get(f"{url}/{rid}/input_items", headers=auth, timeout=60).status_code == 200
        on = httpx.post(url, json={**ask, "previous_response_id": rid}, headers=auth, timeout=60)
        assert on.status_code == 200
        gone = httpx.delete(f"{url}/{rid}", headers=auth, timeout=60)
        assert gone.status_code == 200
    text = log.read_text()
    assert f"response {rid} deleted (key alice)" in text and "API keys accepted: alice" in text
    assert "may be read by other users" not in text  # (0600: no warning)
