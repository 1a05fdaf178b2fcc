"""CORS for browser and desktop chat apps (`--allow-origin`): Chatbox web, Open WebUI's direct
connections and Electron/Tauri apps send a preflight and an Origin header; before, the
preflight got 405 and their requests 403 `cross_origin_request` (a client audit). The gate
itself (`clara_cli.http.AccessGate`) around a small app, then a real clara-serve process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from clara.errors import ClaraError
from clara_cli.http import AccessGate, install_error_handlers, origin_rules
from tests.test_server_harness import API_KEY, ServerProcess

CHATBOX = "https://web.chatboxai.app"
#: What the openai JS SDK's preflight asks for (its x-stainless-* headers vary by version)
SDK_HEADERS = (
    "authorization,content-type,x-stainless-arch,x-stainless-lang,x-stainless-os,"
    "x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,"
    "x-stainless-runtime-version,x-stainless-timeout"
)
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def preflight(origin: str, method: str = "POST", headers: str = SDK_HEADERS) -> dict:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def small_app() -> FastAPI:
    app = FastAPI()
    app.post("/x")(lambda: {"ok": True})
    app.get("/health")(lambda: {"status": "ok"})

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def events():
            for n in range(3):
                yield f"data: {n}\n\n"
                await asyncio.sleep(0)

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def call(gate: AccessGate, method: str, path: str, headers: dict) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=gate)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            return await c.request(method, path, headers=headers)

    return asyncio.run(go())


def gate(*origins: str, key: str | None = API_KEY, **kw) -> AccessGate:
    return AccessGate(small_app(), key, "clara-serve", local_only=True, allow_origins=origins, **kw)


def assert_cors(r: httpx.Response, origin: str) -> None:
    assert r.headers["access-control-allow-origin"] == origin, r.headers
    assert "Origin" in r.headers["vary"]
    assert "Retry-After" in r.headers["access-control-expose-headers"]


def test_an_allowed_origins_preflight_is_answered_without_the_key() -> None:
    g = gate(CHATBOX)
    r = call(g, "OPTIONS", "/x", preflight(CHATBOX))  # browsers never send a key here
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == CHATBOX
    assert set(r.headers["access-control-allow-methods"].split(", ")) >= {
        "GET", "POST", "DELETE", "OPTIONS",
    }  # fmt: skip
    assert r.headers["access-control-allow-headers"] == SDK_HEADERS  # echoed, all of them
    assert int(r.headers["access-control-max-age"]) > 0
    assert "Origin" in r.headers["vary"]
    # Chromium's Private Network Access: a public site's page asking a server on this machine
    asks = {**preflight(CHATBOX), "Access-Control-Request-Private-Network": "true"}
    assert call(g, "OPTIONS", "/x", asks).headers["access-control-allow-private-network"] == "true"
    # a header list that is not one gets the headers clients need, not the text sent
    r = call(g, "OPTIONS", "/x", preflight(CHATBOX, headers="authorization, bad header"))
    assert (
        r.headers["access-control-allow-headers"]
        == "authorization, api-key, x-api-key, content-type"
    )


def test_another_sites_preflight_is_refused_not_405() -> None:
    for g in (gate(CHATBOX), gate()):  # other origins allowed, or none (the default)
        r = call(g, "OPTIONS", "/x", preflight("https://evil.example"))
        assert r.status_code == 403
        err = r.json()["error"]
        assert err["code"] == "cross_origin_request"
        assert "--allow-origin https://evil.example" in err["message"]
        assert "access-control-allow-origin" not in r.headers
    # an OPTIONS that is no preflight goes to the app as before (405 here)
    assert call(gate(CHATBOX), "OPTIONS", "/x", {**AUTH, "Origin": CHATBOX}).status_code == 405


def test_an_allowed_origins_requests_carry_the_header_and_still_need_the_key() -> None:
    g = gate(CHATBOX)
    r = call(g, "POST", "/x", {**AUTH, "Origin": CHATBOX})
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert_cors(r, CHATBOX)
    r = call(g, "POST", "/x", {"Origin": CHATBOX})  # no key: the app can read why
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert_cors(r, CHATBOX)
    r = call(g, "GET", "/nowhere", {**AUTH, "Origin": CHATBOX})  # the app's own errors too
    assert r.status_code == 404
    assert_cors(r, CHATBOX)
    r = call(g, "GET", "/stream", {**AUTH, "Origin": CHATBOX})
    assert r.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert_cors(r, CHATBOX)
    # another site: refused as before, and its pages cannot read anything
    r = call(g, "POST", "/x", {**AUTH, "Origin": "https://evil.example"})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    r = call(g, "GET", "/stream", {**AUTH, "Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert "Origin" in r.headers["vary"]  # the answer depends on the Origin: caches are told
    # this server's own pages (the web chat) and requests without an Origin: as before
    for head in ({"Origin": "http://127.0.0.1:8000"}, {}):
        r = call(g, "POST", "/x", {**AUTH, **head})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = call(gate(), "POST", "/x", AUTH)  # no --allow-origin: no CORS header at all
    assert r.status_code == 200 and "vary" not in r.headers


def test_scheme_wildcards_null_subdomains_and_ports() -> None:
    g = gate("tauri://*", "file://*", "null", "https://*.example.com", "http://localhost:*")
    for origin in ("tauri://localhost", "file://", "null", "https://chat.example.com",
                   "https://a.b.example.com", "http://localhost:3000", "http://localhost"):  # fmt: skip
        assert call(g, "OPTIONS", "/x", preflight(origin)).status_code == 204, origin
        r = call(g, "POST", "/x", {**AUTH, "Origin": origin})
        assert r.status_code == 200, origin
        assert_cors(r, origin)
    for origin in ("https://example.com", "https://evilexample.com", "http://chat.example.com",
                   "app://localhost", "http://127.0.0.1:3000", "https://localhost:3000"):  # fmt: skip
        assert call(g, "OPTIONS", "/x", preflight(origin)).status_code == 403, origin
        assert call(g, "POST", "/x", {**AUTH, "Origin": origin}).status_code == 403, origin


def test_the_refusal_names_the_allow_origin_that_fixes_it() -> None:
    g = gate()

    def message(origin: str) -> str:
        r = call(g, "POST", "/x", {**AUTH, "Origin": origin})
        assert r.status_code == 403
        return r.json()["error"]["message"]

    assert "--allow-origin tauri://localhost" in message("tauri://localhost")
    assert "--allow-origin file://*" in message("file://")  # (no host to name)
    assert "--allow-host" not in message("tauri://localhost")  # it cannot allow them
    null = message("null")
    assert "--allow-origin null" in null and "--api-key" in null and "--allow-host" not in null
    web = message("http://localhost:3000")  # Open WebUI beside it, or a reverse proxy's name
    assert "--allow-origin http://localhost:3000" in web and "--allow-host localhost" in web


def test_allowed_origins_do_not_relax_the_host_check() -> None:
    """DNS rebinding: a page whose name points at 127.0.0.1 sends its own name as Host."""
    g = gate("*")
    for method, head in (("OPTIONS", preflight(CHATBOX)), ("POST", {**AUTH, "Origin": CHATBOX})):
        r = call(g, method, "/x", {**head, "Host": "evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_host"
    r = call(g, "POST", "/x", {**AUTH, "Origin": "https://anything.example"})  # * is any
    assert r.status_code == 200
    assert_cors(r, "https://anything.example")


def test_any_page_patterns_need_a_key_and_bad_patterns_say_what_fits() -> None:
    for pattern in ("*", "null", "https://*", "http://*", "https://*.com"):  # every .com site
        with pytest.raises(ClaraError, match="--api-key"):
            origin_rules([pattern], keyed=False)
        assert origin_rules([pattern], keyed=True)
    assert origin_rules(["tauri://*", CHATBOX + "/", "https://*.example.com"], keyed=False)
    for bad in ("web.chatboxai.app", "https://x.example/chat", "http://*:3000", "https://x:0"):
        with pytest.raises(ClaraError, match="not an origin pattern.*tauri://"):
            origin_rules([bad], keyed=False)
    with pytest.raises(ClaraError, match="--api-key"):  # the gate itself holds to it too
        gate("*", key=None)


def test_an_unexpected_500_still_carries_the_cors_headers() -> None:
    """Before: a crash's 500 came from Starlette's outermost middleware, outside the gate: no
    Access-Control-Allow-Origin, so the browser app saw an opaque CORS failure (a review)."""
    app = small_app()

    @app.post("/crash")
    def crash() -> None:
        raise RuntimeError("a bug")

    install_error_handlers(app)  # as both servers: the gate inside the app's error middleware
    app.add_middleware(
        AccessGate, api_key=API_KEY, local_only=True, allow_origins=(CHATBOX,)
    )  # fmt: skip

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            return await c.post("/crash", headers={**AUTH, "Origin": CHATBOX})

    r = asyncio.run(go())
    assert r.status_code == 500 and "a bug" not in r.text  # (no internals to the client)
    assert_cors(r, CHATBOX)


def test_both_servers_refuse_star_without_a_key_at_startup(
    tiny_llama_dir: Path, capsys, monkeypatch, tmp_path: Path
) -> None:
    from clara_cli.serve import access_options
    from indexing.cli import main as index_main
    from server.cli import build_parser
    from server.cli import main as serve_main

    monkeypatch.delenv("CLARA_API_KEY", raising=False)
    assert serve_main(["--model", str(tiny_llama_dir), "--allow-origin", "*"]) == 1
    err = capsys.readouterr().err
    assert "--allow-origin *" in err and "--api-key" in err
    assert index_main(["serve", "--model", str(tiny_llama_dir), "--allow-origin", "null"]) == 1
    assert "--api-key" in capsys.readouterr().err
    assert serve_main(["--model", str(tiny_llama_dir), "--allow-origin", "chatboxai.app"]) == 1
    assert "not an origin pattern" in capsys.readouterr().err
    # CLARA_ALLOW_ORIGINS: comma-separated, and the options add to it
    monkeypatch.setenv("CLARA_ALLOW_ORIGINS", f"{CHATBOX}, tauri://*,")
    args = build_parser().parse_args(["--allow-origin", "file://*"])
    assert access_options(args)["allow_origins"] == (CHATBOX, "tauri://*", "file://*")
    # a key read from a file keeps its newline: taken without it (every request was a 401,
    # as clients send none); one clients cannot send in a header is refused at startup
    monkeypatch.setenv("CLARA_API_KEY", "team-key-1\n")
    assert access_options(build_parser().parse_args([]))["api_key"] == {"api-key": "team-key-1"}
    monkeypatch.setenv("CLARA_API_KEY", "new\x01line")
    assert serve_main(["--model", str(tiny_llama_dir)]) == 1
    assert "has control characters" in capsys.readouterr().err
    monkeypatch.setenv("CLARA_API_KEY", "my key é")  # (a header carries these: they worked)
    assert access_options(build_parser().parse_args([]))["api_key"] == {"api-key": "my key é"}
    # --api-key-file: named keys, each line checked, added to --api-key's
    monkeypatch.delenv("CLARA_API_KEY")
    keys = tmp_path / "keys"
    for text, said in (
        ("alice\n", "line 1: write 'NAME KEY'"),
        ("alice k1\nalice k2\n", "line 2: the name is there twice"),
        ("alice k1\nbob k1\n", "line 2: the key is there twice"),
        ("# nobody yet\n", "holds no key"),
        ("alice k\x7f\n", "the API key 'alice' has control characters"),
    ):
        keys.write_text(text)
        assert serve_main(["--model", str(tiny_llama_dir), "--api-key-file", str(keys)]) == 1
        assert said in capsys.readouterr().err, text
    monkeypatch.setenv("CLARA_API_KEY_FILE", "")  # (it served with no key at all)
    with pytest.raises(ClaraError, match="the API key file is empty"):
        access_options(build_parser().parse_args([]))
    monkeypatch.delenv("CLARA_API_KEY_FILE")
    keys.write_text("# team\nalice k#1\n\nbob k2\n")
    args = build_parser().parse_args(["--api-key", "k0", "--api-key-file", str(keys)])
    assert access_options(args)["api_key"] == {"api-key": "k0", "alice": "k#1", "bob": "k2"}
    args = build_parser().parse_args(["--api-key", "k2", "--api-key-file", str(keys)])
    with pytest.raises(ClaraError, match="line 4: the key is --api-key's too"):
        access_options(args)


def test_the_indexing_service_answers_allowed_origins(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from indexing.service.app import ServiceSettings, create_app

    def no_model():
        raise RuntimeError("not needed here")

    settings = ServiceSettings(index_root=str(tmp_path / "index"))
    app = create_app(
        settings, api_key=API_KEY, local_only=True, allow_origins=("tauri://*",), load=no_model
    )
    with TestClient(app, base_url="http://127.0.0.1:8001") as http:
        r = http.options("/v1/files", headers=preflight("tauri://localhost"))
        assert (
            r.status_code == 204 and r.headers["access-control-allow-origin"] == "tauri://localhost"
        )
        r = http.post(
            "/v1/vector_stores", json={"name": "x"}, headers={"Origin": "tauri://localhost"}
        )
        assert r.status_code == 401
        assert_cors(r, "tauri://localhost")
        r = http.get("/v1/files", headers={**AUTH, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        r = http.options("/v1/files", headers=preflight("https://evil.example"))
        assert r.status_code == 403 and "--allow-origin https://evil.example" in r.text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path):
    tmp = tmp_path_factory.mktemp("cors")
    with ServerProcess(
        "--model", str(tiny_llama_dir),
        "--index", str(tmp / "index"),
        "--api-key", API_KEY,
        "--max-tokens", "4",
        "--allow-origin", CHATBOX,
        "--allow-origin", "tauri://*",
        "--allow-origin", "null",
        env={"CLARA_HOME": str(tmp / "home")},
        log=tmp / "server.log",
    ) as proc:  # fmt: skip
        yield proc.wait_ready()  # (stopped on leaving, ready or not)


def test_clara_serve_answers_browser_and_desktop_apps(server: ServerProcess) -> None:
    url = f"{server.url}/v1/chat/completions"
    r = httpx.options(url, headers=preflight(CHATBOX))
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == CHATBOX
    assert r.headers["access-control-allow-headers"] == SDK_HEADERS
    assert "POST" in r.headers["access-control-allow-methods"]
    assert httpx.options(url, headers=preflight("https://evil.example")).status_code == 403
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "retrieval": False}
    r = httpx.post(url, json=body, headers={"Origin": CHATBOX}, timeout=60)  # no key
    assert r.status_code == 401
    assert_cors(r, CHATBOX)
    for origin in ("tauri://localhost", "null"):  # Jan (Tauri), a file:// page
        r = httpx.post(url, json=body, headers={**AUTH, "Origin": origin}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["object"] == "chat.completion"
        assert_cors(r, origin)
    stream = {**body, "stream": True}
    with httpx.stream(
        "POST", url, json=stream, headers={**AUTH, "Origin": CHATBOX}, timeout=60
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert_cors(r, CHATBOX)
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"
    # the Files API (mounted in clara-serve) and the DNS rebinding check, unchanged
    r = httpx.get(f"{server.url}/v1/files", headers={**AUTH, "Origin": "tauri://localhost"})
    assert r.status_code == 200
    assert_cors(r, "tauri://localhost")
    r = httpx.post(url, json=body, headers={**AUTH, "Origin": CHATBOX, "Host": "evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_host"


def test_a_websocket_is_closed_before_any_route() -> None:
    """A security audit: the gate passed every scope but HTTP's to the app unchecked (no
    route takes a websocket today; one added later would have had no key check)."""
    app = small_app()
    app.websocket("/ws")(lambda ws: ws.accept())
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    asyncio.run(gate()(scope, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_a_key_file_being_written_is_read_once_it_is_left_as_it_is(tmp_path: Path) -> None:
    """A review: the key file was read as soon as it changed, and a file caught half-written
    ('bob sk-bob' of 'bob sk-bob ask collections=handbook') gave bob every right for a
    second. It is read once left as it is for KEY_FILE_SETTLE_S."""
    import os
    import time

    from clara_cli.http import KEY_FILE_SETTLE_S, KeyFile

    path = tmp_path / "keys"
    path.write_text("bob sk-bob ask collections=handbook\n")
    loads: list[str] = []

    def load():
        loads.append(path.read_text())
        return {"bob": "sk-bob"}, {}, {}

    kf = KeyFile(path, load, KeyFile.stamp_of(path))
    g = gate(key={"bob": "sk-bob", "old": "sk-old"}, key_file=kf)
    path.write_text("bob sk-bob\n")  # (half-way through a write, say)
    g._reread()
    assert loads == [] and [n for n, _ in g.keys] == ["bob", "old"]  # not yet: just written
    time.sleep(KEY_FILE_SETTLE_S + 0.05)
    kf.checked = 0.0  # (the next look, a second later)
    g._reread()
    assert loads == ["bob sk-bob\n"] and [n for n, _ in g.keys] == ["bob"]
    stamp = kf.stamp
    os.utime(path, ns=(stamp[0], stamp[0]))  # the same time, a new inode change time: read
    kf.checked = 0.0
    time.sleep(KEY_FILE_SETTLE_S + 0.05)
    g._reread()
    assert len(loads) == 2
