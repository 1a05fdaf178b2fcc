"""clara-serve as a process: a full queue (503), client disconnects, SSE keep-alives, an index
that appears (and grows) while it runs, a mismatched index at startup, the CLI, the default model.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from clara import __version__
from indexing.store import delete_collection
from tests.test_server_harness import DOCS, ROOT, ServerProcess, add_documents, metric

# A greedy random model does not meet EOS for this prompt: it runs to max_tokens (~4 ms/token).
LONG = {"messages": [{"role": "user", "content": "count"}], "retrieval": False}


@pytest.fixture(scope="module")
def cm(tiny_llama_dir: Path):
    from clara.checkpoint import load_clara

    return load_clara(tiny_llama_dir, None, dtype=None)


@pytest.fixture(scope="module")
def index_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("late-index") / "indexes"  # does not exist yet


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, index_root: Path):
    tmp = tmp_path_factory.mktemp("serve-queue")
    with ServerProcess(
        "--model", str(tiny_llama_dir),
        "--index", str(index_root),
        "--queue-size", "1",
        "--max-batch", "1",
        "--sse-keepalive", "0.005",
        env={"CLARA_HOME": str(tmp / "home")},
        log=tmp / "server.log",
    ) as proc:  # fmt: skip
        yield proc.wait_ready()  # (stopped on leaving, ready or not)


def metrics(server: ServerProcess) -> str:
    return httpx.get(f"{server.url}/metrics").text


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_full_queue_is_503_and_disconnect_stops_generation(server: ServerProcess) -> None:
    url = f"{server.url}/v1/chat/completions"
    cancelled = metric(metrics(server), "clara_generations_total", reason="cancelled")
    tokens_before = metric(metrics(server), "clara_completion_tokens_total")
    with httpx.stream("POST", url, json={**LONG, "max_tokens": 1500, "stream": True}) as running:
        assert running.status_code == 200
        lines = running.iter_lines()
        next(line for line in lines if '"content": "' in line and '"content": ""' not in line)
        # The one generation slot is taken; one more request fills the queue (size 1) ...
        waiting: dict = {}
        body = {**LONG, "max_tokens": 3}
        t = threading.Thread(
            target=lambda: waiting.update(r=httpx.post(url, json=body, timeout=120))
        )
        t.start()
        wait_for(lambda: metric(metrics(server), "clara_queue_depth") == 1)
        # ... so the next one is turned away at once.
        r = httpx.post(url, json=body, timeout=30)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "server_overloaded"
    # Leaving the `with` closed the connection mid-stream: the generation stops early.
    t.join(60)
    assert waiting["r"].status_code == 200
    assert waiting["r"].json()["choices"][0]["finish_reason"] == "length"
    text = metrics(server)
    assert metric(text, "clara_generations_total", reason="cancelled") == cancelled + 1
    generated = metric(text, "clara_completion_tokens_total") - tokens_before - 3
    assert 0 < generated < 1000, generated
    chats = {"method": "POST", "endpoint": "/v1/chat/completions"}
    assert metric(text, "clara_requests_total", **chats, status="503") >= 1
    # The stream its client closed counts as a 499, with a line of its own (an SRE's audit:
    # it counted as a 200, the status uvicorn's access line gave it as it began)
    wait_for(lambda: '/chat/completions" 499: the client closed the request during' in server.log())
    text = metrics(server)
    assert metric(text, "clara_requests_total", **chats, status="499") >= 1


def test_requests_sent_together_fill_the_batch_before_the_queue(server: ServerProcess) -> None:
    """With --max-batch 1 --queue-size 1, two requests sent at once to an idle server: one
    takes the batch's place, one waits. Both were queued before the first started, and the
    second was a 503 (a fairness audit: a burst of max-batch + queue-size had one)."""

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            url = f"{server.url}/v1/chat/completions"
            body = {**LONG, "max_tokens": 3}
            sent = [client.post(url, json=body) for _ in range(2)]
            return [r.status_code for r in await asyncio.gather(*sent)]

    for _ in range(3):
        assert asyncio.run(burst()) == [200, 200]


def test_api_keys_take_turns_and_each_has_its_own_queue(tiny_llama_dir, tmp_path) -> None:
    """A team on one server: a script's requests filled the one queue (a colleague's question
    was a 503) and went first when the batch had room. With named keys each key has
    --queue-size places of its own, and a free place in the batch goes to the key served
    longest ago."""
    keys = tmp_path / "keys"
    keys.write_text("script sk-script\nalice sk-alice\n")
    keys.chmod(0o600)
    with ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp_path / "index"),
        "--queue-size", "1", "--max-batch", "1", "--api-key-file", str(keys),
        "--max-context", "30000",  # (the running answer outlasts the test's requests)
        env={"CLARA_HOME": str(tmp_path / "home")}, log=tmp_path / "server.log",
    ) as server:  # fmt: skip
        server.wait_ready()
        url = f"{server.url}/v1/chat/completions"
        script = {"Authorization": "Bearer sk-script"}
        alice = {"Authorization": "Bearer sk-alice"}
        body = {**LONG, "max_tokens": 3}
        answered: list[str] = []

        def depth() -> float:
            text = httpx.get(f"{server.url}/metrics", headers=alice, timeout=30).text
            return metric(text, "clara_queue_depth")

        def ask(who: str, headers: dict) -> None:
            r = httpx.post(url, json=body, headers=headers, timeout=120)
            answered.append(f"{who} {r.status_code}")

        long = {**LONG, "max_tokens": 29000, "stream": True}
        with httpx.stream("POST", url, json=long, headers=script) as running:
            assert running.status_code == 200
            lines = running.iter_lines()  # (kept: a dropped one closes the stream)
            next(line for line in lines if '"content": "' in line)
            waiting = [threading.Thread(target=ask, args=("script", script))]
            waiting[0].start()
            wait_for(lambda: depth() == 1)
            r = httpx.post(url, json=body, headers=script, timeout=30)  # its one place is taken
            assert r.status_code == 503 and "with key script waiting" in r.text, r.text
            waiting.append(threading.Thread(target=ask, args=("alice", alice)))
            waiting[1].start()  # hers is free
            wait_for(lambda: depth() == 2)
        for t in waiting:  # the stream closed: the batch's place goes to alice first
            t.join(60)
        # whose requests were refused, for the operator (an SRE audit: in the answer only)
        text = httpx.get(f"{server.url}/metrics", headers=alice, timeout=30).text
        log = server.log()
    assert answered == ["alice 200", "script 200"]
    assert metric(text, "clara_refusals_total", reason="server_overloaded", key="script") == 1
    assert metric(text, "clara_refusals_total", reason="server_overloaded", key="alice") == 0
    assert metric(text, "clara_key_requests_total", key="script", status="503") == 1
    assert metric(text, "clara_key_requests_total", key="alice", status="200") >= 1  # (+ scrapes)
    assert re.search(r'"POST /v1/chat/completions HTTP/1.1" 503 \(request req_\w+, key script, '
                     r"server_overloaded\)", log), log  # fmt: skip


def test_what_an_operator_monitors(tiny_llama_dir, cm, tmp_path) -> None:
    """An SRE's audit: Prometheus needed a key that may also delete everything
    (--open-metrics); counters of known outcomes and the first-token histogram had no series
    before their first value (an alert missed the first failures after a start); no build,
    start time or memory; a damaged collection vanished from the metrics as if deleted; the
    access log named no request id (X-Request-ID) nor key; a collection's counts were read
    again at every scrape."""
    keys = tmp_path / "keys"
    keys.write_text("alice sk-alice\n")
    keys.chmod(0o600)
    root = tmp_path / "index"
    add_documents(root, cm, DOCS[:1], collection="kept")
    add_documents(root, cm, DOCS[:1], collection="broken")
    (root / "broken" / "meta.sqlite").write_bytes(b"not a database at all" * 10)
    add_documents(root, cm, DOCS[:1], collection="unlabelled")  # (an upgrade audit: a
    (root / "unlabelled" / "manifest.json").write_text("{oops")  # damaged manifest too)
    with ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(root), "--api-key-file", str(keys),
        "--open-metrics", env={"CLARA_HOME": str(tmp_path / "home")}, log=tmp_path / "server.log",
    ) as server:  # fmt: skip
        server.wait_ready()
        first = httpx.get(f"{server.url}/metrics", timeout=30)  # no key
        assert httpx.get(f"{server.url}/v1/models", timeout=30).status_code == 401  # the rest
        for reason in ("stop", "length", "cancelled", "error"):
            assert f'clara_generations_total{{reason="{reason}"}} 0' in first.text
        assert 'clara_retrievals_total{status="no_match"} 0' in first.text
        assert "clara_time_to_first_token_seconds_count 0" in first.text
        assert 'clara_build_info{model="' in first.text and f'version="{__version__}"' in first.text
        started = metric(first.text, "process_start_time_seconds")
        assert time.time() - 600 < started <= time.time()
        assert metric(first.text, "process_resident_memory_bytes") > 10 * 2**20
        assert metric(first.text, "clara_index_damaged", collection="broken") == 1
        assert metric(first.text, "clara_index_damaged", collection="unlabelled") == 1
        assert metric(first.text, "clara_index_documents", collection="kept") == 1
        assert metric(first.text, "clara_index_documents", collection="broken") == 0
        add_documents(root, cm, DOCS[1:], collection="kept")  # counted again: it changed
        again = httpx.get(f"{server.url}/metrics", timeout=30).text
        assert metric(again, "clara_index_documents", collection="kept") == len(DOCS)
        r = httpx.get(f"{server.url}/v1/models", timeout=30,
                      headers={"Authorization": "Bearer sk-alice", "X-Request-ID": "dash-7"})  # fmt: skip
        assert r.status_code == 200
        wait_for(lambda: "(request dash-7, key alice)" in server.log())
        log = server.log()
    assert '"GET /v1/models HTTP/1.1" 200 (request dash-7, key alice)' in log
    assert log.count("collection broken cannot be read") == 1, log  # (once, not per scrape)
    assert '"GET /metrics HTTP/1.1" 200' not in log  # (successful scrapes stay out)


def test_a_non_streamed_request_whose_client_leaves_stops(server: ServerProcess) -> None:
    """Tokens keep arriving while it decodes, yet the route still looks for its client (every
    0.25 s): a client that gave up frees the generation slot. The tiny model writes its whole
    context (~2000 tokens) in about 1.7 s here."""
    cancelled = metric(metrics(server), "clara_generations_total", reason="cancelled")
    tokens_before = metric(metrics(server), "clara_completion_tokens_total")
    body = {**LONG, "max_tokens": 4000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=0.3)
    wait_for(
        lambda: metric(metrics(server), "clara_generations_total", reason="cancelled") > cancelled
    )
    generated = metric(metrics(server), "clara_completion_tokens_total") - tokens_before
    assert 0 < generated < 1500, generated
    # its access line (uvicorn writes none for a client gone: a soak found no trace of it)
    wait_for(lambda: '"POST /v1/chat/completions" 499: the client closed' in server.log())


def test_keepalive_comments_during_prefill(server: ServerProcess) -> None:
    body = {**LONG, "messages": [{"role": "user", "content": "river " * 500}]}
    body.update(max_tokens=2, stream=True)
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as r:
        lines = list(r.iter_lines())
    assert ": keep-alive" in lines
    first_token = next(i for i, x in enumerate(lines) if '"content": "' in x and '""' not in x)
    assert lines.index(": keep-alive") < first_token
    assert "data: [DONE]" in lines[-2:]


@pytest.mark.parametrize("api", ["chat", "responses", "completions"])
def test_a_streamed_chat_waiting_in_the_queue_gets_its_headers_and_keep_alives(
    server: ServerProcess, api: str
) -> None:
    """A container audit: a streamed chat waiting for its turn got no byte at all until it
    started (24.6 s behind 18 chats): a proxy's first-byte or idle timeout cut it. Its
    headers and keep-alive comments now come while it waits; then its answer."""
    url = f"{server.url}/v1/chat/completions"
    with httpx.stream("POST", url, json={**LONG, "max_tokens": 1500, "stream": True}) as running:
        lines = running.iter_lines()
        next(line for line in lines if '"content": "' in line and '"content": ""' not in line)
        body = {**LONG, "max_tokens": 2, "stream": True}
        if api == "responses":
            url = f"{server.url}/v1/responses"
            body = {"input": "Hello?", "max_output_tokens": 2, "stream": True}
        elif api == "completions":  # (legacy: the re-audit of session 51)
            url = f"{server.url}/v1/completions"
            body = {"prompt": "Hello?", "max_tokens": 2, "stream": True}
        with httpx.stream("POST", url, json=body, timeout=60) as queued:
            assert queued.status_code == 200  # (the one place in the batch is taken)
            said = queued.iter_lines()
            assert next(x for x in said if x) == ": keep-alive"
            assert metric(metrics(server), "clara_queue_depth") == 1  # still waiting
            running.close()  # its place frees: the waiting one answers
            rest = [x for x in said if x]
    if api == "responses":
        assert any("response.completed" in x or "response.incomplete" in x for x in rest)
        return
    assert rest[-1] == "data: [DONE]"
    assert any('"finish_reason": "length"' in x for x in rest), rest[-3:]
    if api == "completions":
        assert any('"text_completion"' in x for x in rest)


def test_no_index_then_new_documents_without_restart(
    server: ServerProcess, index_root: Path, cm
) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id

    def ask(text: str):
        return client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": text}],
            max_tokens=2,
        )

    before = ask(DOCS[0][1])
    assert before.choices[0].message.sources == []
    assert before.model_extra["retrieval"]["status"] == "no_index"
    add_documents(index_root, cm, DOCS[:1])  # the collection appears while the server runs
    first = ask(DOCS[0][1]).choices[0].message.sources
    assert [s["filename"] for s in first] == [DOCS[0][0]]
    add_documents(index_root, cm, DOCS[1:3])  # and grows
    later = ask(DOCS[2][1]).choices[0].message.sources
    assert later[0]["filename"] == DOCS[2][0] and len(later) == 3
    add_documents(index_root, cm, DOCS[3:5], collection="notes")  # never queried
    text = metrics(server)
    assert metric(text, "clara_index_chunks", collection="default") == 3
    assert metric(text, "clara_index_documents", collection="notes") == 2  # every collection
    delete_collection(index_root, "notes")
    assert 'collection="notes"' not in metrics(server)  # and only those still there


def test_documents_added_with_clara_index_are_served(
    server: ServerProcess, index_root: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    text = "The lighthouse keeper climbs two hundred steps every evening to light the lamp."
    doc = tmp_path / "lighthouse.txt"
    doc.write_text(text + "\n")
    cmd = [sys.executable, "-m", "indexing.cli", "add", str(doc), "--index", str(index_root)]
    cmd += ["--model", str(tiny_llama_dir), "--quiet"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": 1, "top_k": 2}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    top = r.json()["choices"][0]["message"]["sources"][0]
    assert top["filename"] == "lighthouse.txt" and top["url"] == doc.resolve().as_uri()
    assert top["ranks"]["dense"] == 1 and top["retrieval_mode"] == "hybrid"


def test_index_of_another_checkpoint_fails_at_startup(
    tmp_path: Path, tiny_llama_dir: Path, tiny_hcx_dir: Path
) -> None:
    from clara.checkpoint import load_clara

    other = load_clara(tiny_hcx_dir, None, dtype=None)
    add_documents(tmp_path / "index", other, DOCS[:1])
    proc = ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp_path / "index"),
        env={"CLARA_HOME": str(tmp_path / "home")},
        log=tmp_path / "server.log",
    )  # fmt: skip
    try:
        assert proc.wait_exit() == 1
    finally:
        proc.stop()
    lines = [x for x in proc.log().splitlines() if x.startswith("clara-serve: error:")]
    assert len(lines) == 1, proc.log()
    assert "index 'default' was built with checkpoint" in lines[0] and "re-index" in lines[0]
    assert "Traceback" not in proc.log()


def test_a_model_that_fails_to_load_after_listening_says_so_in_one_line(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """A re-audit: the check for a worker that broke while serving read an attribute
    clara-serve's engine did not have, so a model failing to load (after the port was
    bound) ended in an AttributeError's traceback instead of its one line."""
    import shutil

    bad = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, bad)
    for weights in bad.glob("*.safetensors"):
        weights.write_text("garbage")
    run = subprocess.run(
        [sys.executable, "-m", "server.cli", "--model", str(bad), "--port", "0",
         "--index", str(tmp_path / "index")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "CLARA_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("clara-serve: error: could not load the model: "), last


def test_json_logs_are_one_object_a_line(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """A container audit: log shippers read each line as a record, and a traceback's lines
    as records of their own. `--log-format json` writes every record, access lines and the
    request id included, as one JSON object a line."""
    import json

    with ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp_path / "index"),
        "--log-format", "json", env={"CLARA_HOME": str(tmp_path / "home")},
        log=tmp_path / "server.log",
    ) as proc:  # fmt: skip
        proc.wait_ready()
        said = httpx.get(f"{proc.url}/v1/models", headers={"X-Request-ID": "req_json_1"})
        assert said.status_code == 200
        wait_for(lambda: "/v1/models" in proc.log())
    records = [json.loads(line) for line in proc.log().splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    access = next(r for r in records if "/v1/models" in r["message"])
    assert access["logger"] == "uvicorn.access" and "req_json_1" in access["message"]


def test_a_busy_port_fails_at_once_and_says_so(tmp_path: Path, tiny_llama_dir: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "server.cli", "--model", str(tiny_llama_dir), "--port",
             str(port), "--index", str(tmp_path / "index")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "CLARA_HOME": str(tmp_path / "home")},
        )  # fmt: skip
    why = "a server already answers there" if sys.platform == "darwin" else "Address already in use"
    assert run.returncode == 1, run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"clara-serve: error: cannot listen on 127.0.0.1:{port}: {why} (is "
        "another server using that port? pick another with --port)"
    )
    assert "model ready" not in run.stderr and "Traceback" not in run.stderr


def test_a_host_that_is_not_this_machines_says_so() -> None:
    """A CLI audit: `--host 999.1.1.1` was told to pick another --port."""
    from clara.errors import ClaraError
    from clara_cli import serve

    for host in ("999.1.1.1", "no-such-host.invalid"):
        with pytest.raises(ClaraError, match="--host takes an address of this machine"):
            serve.listen(host, 0)


def test_on_macos_a_server_on_every_address_is_seen_before_binding_one(monkeypatch) -> None:
    """BSD sockets let SO_REUSEADDR bind 127.0.0.1:P beside a server on 0.0.0.0:P (clients
    then reach either), so on macOS listen() asks the port first; its check runs here."""
    import socket

    from clara.errors import ClaraError
    from clara_cli import serve

    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert serve.answering("0.0.0.0", port) and serve.answering("127.0.0.1", port)
        monkeypatch.setattr(serve.sys, "platform", "darwin")
        with pytest.raises(ClaraError, match="a server already answers there"):
            serve.listen("127.0.0.1", port)
    assert not serve.answering("127.0.0.1", port)
    serve.listen("127.0.0.1", port).close()  # free again


def test_connections_to_the_servers_socket_send_without_nagles_delay() -> None:
    """Every answer of clara-serve and clara-index serve to a keep-alive client (the OpenAI
    SDK, httpx) took 44 ms, where a plain uvicorn app took 1 ms: the socket `listen` makes
    for uvicorn had protocol 0, and asyncio turns Nagle off (TCP_NODELAY) only on connections
    of a socket that says TCP, so a body written after its headers waited for the client's
    delayed ACK. Connections accepted on it, as uvicorn accepts them, have TCP_NODELAY."""
    import socket

    from clara_cli import serve

    async def accepted_nodelay(host: str) -> int:
        sock = serve.listen(host, 0)
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport) -> None:
                conn = transport.get_extra_info("socket")
                seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        try:
            port = sock.getsockname()[1]
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return await asyncio.wait_for(seen, 10)
        finally:
            server.close()

    assert asyncio.run(accepted_nodelay("127.0.0.1")) != 0
    if socket.has_ipv6:
        try:
            assert asyncio.run(accepted_nodelay("::1")) != 0
        except OSError:  # (no IPv6 loopback here)
            pass


def test_cli_help_and_bad_flags() -> None:
    from server.cli import build_parser

    text = build_parser().format_help()
    for flag in (
        "--host", "--port", "--model", "--checkpoint", "--index", "--collection", "--top-k",
        "--max-context", "--dtype", "--queue-size", "--served-model-name", "--api-key",
        "--max-tokens", "--sse-keepalive", "--history-turns",
    ):  # fmt: skip
        assert flag in text, flag
    # a wrong command line is exit 2, said at once, no traceback (a CLI audit: some were
    # 1, ports out of range a traceback, a negative temperature a 500 on every request)
    for argv, said in (
        (["--queue-size", "0"], "argument --queue-size: must be at least 1, got 0"),
        (["--port", "70000"], "argument --port: must be a port from 0 to 65535, got 70000"),
        (["--temperature", "-1"], "argument --temperature: -1: must be a finite number, 0 or more"),
        (
            ["--temperature", "nan"],
            "argument --temperature: nan: must be a finite number, 0 or more",
        ),
        (["--top-k", "-1"], "argument --top-k: must be 0 or more, got -1"),
        (["--max-context", "1"], "argument --max-context: must be at least 2, got 1"),
        (["--collection", "a/b"], "a folder of collections goes to --index"),
        (["--root-path", "clara"], "argument --root-path: 'clara': give the path the proxy"),
        (["--unhealthy-after", "-1"], "argument --unhealthy-after: -1: must be a finite"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "server.cli", *argv],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("clara-serve: error: ") and said in last, last


def test_a_model_or_checkpoint_that_names_nothing_ends_it_before_it_listens(
    tmp_path: Path,
) -> None:
    """Checked before the port is bound (a CLI audit): clara-serve said it was listening, the
    model then failed to load, and it ended; a supervisor saw a server come and go."""
    for argv, said in (
        (["--model", "nosuchmodel"], "model 'nosuchmodel' not found: give a local mlx-lm"),
        (["--model", str(tmp_path)], "has no config.json: not an mlx-lm model directory"),
        (["--checkpoint", str(tmp_path / "nowhere")], "nowhere: no such checkpoint folder"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "server.cli", *argv, "--port", "0"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "CLARA_HOME": str(tmp_path / "home")},
        )  # fmt: skip
        assert run.returncode == 1 and said in run.stderr, run.stderr
        assert "listening on" not in run.stderr and "Traceback" not in run.stderr, run.stderr


@pytest.mark.slow
def test_default_model_answers(tmp_path: Path) -> None:
    pytest.importorskip("clara.gguf", reason="clara.gguf (default model converter) is missing")
    proc = ServerProcess("--index", str(tmp_path / "none"), log=tmp_path / "server.log")
    try:
        wait_for(lambda: _listening(proc), timeout=120)
        r = httpx.post(f"{proc.url}/v1/chat/completions", json=LONG, timeout=60)
        if r.status_code == 503:  # still loading (the usual case): the documented answer
            assert r.json()["error"]["code"] == "model_loading" and "Retry-After" in r.headers
        proc.wait_ready()
        client = openai.OpenAI(base_url=f"{proc.url}/v1", api_key="unused", max_retries=0)
        models = client.models.list().data
        assert [m.id for m in models] == ["clara-smollm2-135m", "clara-smollm2-135m-no-retrieval"]
        assert models[0].model_extra["mode"] == "mixed"  # what the shipped adapters name
        resp = client.chat.completions.create(
            model="clara-smollm2-135m",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=20,
            extra_body={"retrieval": False},
        )
        assert "Paris" in resp.choices[0].message.content
        assert resp.choices[0].message.sources == []
        chunks = list(
            client.chat.completions.create(
                model="smollm2-135m",  # the base model id works too
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                max_tokens=20,
                stream=True,
            )
        )
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        retrieval = json.loads(chunks[-2].model_dump_json())["retrieval"]
        assert retrieval["status"] == "no_index"
        assert retrieval["mode"] == "mixed"  # what the shipped adapters name (no --mode)
    finally:
        proc.stop()


def _listening(proc: ServerProcess) -> bool:
    if proc.proc.poll() is not None:
        raise AssertionError(proc.log())
    try:
        httpx.get(f"{proc.url}/health", timeout=1)
        return True
    except httpx.HTTPError:
        return False


def test_sigterm_ends_running_answers_with_an_error_the_client_reads(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    """Answers still running when --shutdown-grace is nearly over end with a `shutting_down`
    error (an SSE error event; a 503 for a non-streamed one), not a connection cut mid-way.
    The grace is 1 s, so they end 0.5 s after SIGTERM (the margin is at most half the grace),
    well before the answers end on their own: the tiny model with a 16k context decodes for
    ~15 s (with the 2k one, ~1.7 s, a slow client could see them finish first)."""
    import signal
    from concurrent.futures import ThreadPoolExecutor

    from tests.tiny import build_tiny_model

    model = build_tiny_model(
        tmp_path / "long", tokenizer_dir=tiny_tokenizer_dir, tie_word_embeddings=False,
        extra_config={"max_position_embeddings": 16384},
    )  # fmt: skip

    def serve(*args: str) -> ServerProcess:
        return ServerProcess(
            "--model", str(model),
            "--index", str(tmp_path / "index"),
            *args,
            env={"CLARA_HOME": str(tmp_path / "home")},
            log=tmp_path / "server.log",
        ).wait_ready()  # fmt: skip

    def respond() -> list[dict]:  # a stored Responses stream, its events
        body = {"input": "count", "retrieval": False, "stream": True, "max_output_tokens": 16000}
        with httpx.stream("POST", f"{proc.url}/v1/responses", json=body, timeout=60) as r:
            return [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: ")]

    proc = serve("--shutdown-grace", "1")
    url = f"{proc.url}/v1/chat/completions"
    body = {**LONG, "max_tokens": 16000, "ignore_eos": True}
    try:
        with ThreadPoolExecutor(2) as pool:
            whole = pool.submit(httpx.post, url, json=body, timeout=60)
            events = pool.submit(respond)
            with httpx.stream("POST", url, json={**body, "stream": True}, timeout=60) as r:
                lines = r.iter_lines()
                next(x for x in lines if '"content": "' in x and '""' not in x)  # decoding
                wait_for(  # and the other two with it, in one batch
                    lambda: (
                        metric(metrics(proc), "clara_decode_step_seconds_count", requests="3") > 0
                    )
                )
                proc.proc.send_signal(signal.SIGTERM)
                rest = list(lines)
            cut, events = whole.result(), events.result()
        errors = [json.loads(x[6:]) for x in rest if x.startswith('data: {"error"')]
        assert [e["error"]["code"] for e in errors] == ["shutting_down"], rest[-3:]
        assert "data: [DONE]" in rest[-2:]  # the stream still ends as a stream does
        assert cut.status_code == 503 and cut.json()["error"]["code"] == "shutting_down"
        assert cut.headers["Retry-After"] == "10"
        failed = events[-1]
        assert failed["type"] == "response.failed", failed
        error = failed["response"]["error"]  # (a code OpenAI's SDKs know; clara's in the text)
        assert error["code"] == "server_error" and error["message"].endswith("(shutting_down)")
        streamed = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert proc.wait_exit(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
        said = proc.log()  # (an SRE's audit: counted and logged as a client's cancelling)
        assert said.count("generation cut by the server's stop after") >= 2, said
        assert "generation cancelled after" not in said
        proc = serve()  # the stored response keeps what was streamed before the stop
        stored = httpx.get(f"{proc.url}/v1/responses/{failed['response']['id']}").json()
        assert stored["status"] == "failed" and stored["error"] == error
        message = stored["output"][-1]
        assert message["status"] == "incomplete" and streamed
        assert message["content"][0]["text"] == streamed
    finally:
        proc.stop()


@pytest.mark.parametrize("mode", [None, "text"])
def test_untrained_adapters_in_memory_mode_are_warned_about(
    tmp_path: Path, tiny_llama_dir: Path, mode: str | None
) -> None:
    """A model without a CLaRa checkpoint (HyperCLOVA X, Mistral before adapters are trained)
    got untrained adapters and answered from memory without a word: the log says so, and what
    to serve it with; in text mode there is nothing to say."""
    proc = ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp_path / "index"),
        *(["--mode", mode] if mode else []),
        env={"CLARA_HOME": str(tmp_path / "home")}, log=tmp_path / "server.log",
    )  # fmt: skip
    try:
        proc.wait_ready()
    finally:
        proc.stop()
    warned = "its adapters are untrained" in proc.log()
    assert warned == (mode is None), proc.log()
    if warned:
        assert "--mode text" in proc.log()
