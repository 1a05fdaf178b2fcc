"""BodyLimit, the JSON body cap both services put in front of their routes: a real FastAPI app
over ASGI (httpx's transport), with bodies announced by Content-Length and bodies sent in
chunks without one (counted as they arrive)."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI, Request

from clara_cli.http import BodyLimit, install_error_handlers

LIMIT = 1024


def app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=LIMIT)

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> dict:
        return {"size": len(body["text"])}

    @app.post("/v1/files")  # the upload route: its own limit, not BodyLimit's
    async def files(request: Request) -> dict:
        return {"size": len(await request.body())}

    return app


def send(path: str, content) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app())
        async with httpx.AsyncClient(transport=transport, base_url="http://clara") as client:
            headers = {"Content-Type": "application/json"}
            return await client.post(path, content=content, headers=headers)

    return asyncio.run(go())


def chunks(n: int):
    async def gen():
        yield b'{"text": "'
        for _ in range(n):
            yield b"a" * 256
        yield b'"}'

    return gen()


def test_a_body_over_the_limit_is_a_413_however_it_is_sent() -> None:
    big = b'{"text": "' + b"a" * 2 * LIMIT + b'"}'
    r = send("/v1/chat/completions", big)  # Content-Length
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = send("/v1/chat/completions", chunks(8))  # chunked: no length up front
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert "over the 1024 bytes limit" in r.json()["error"]["message"]


def test_bodies_within_the_limit_and_uploads_pass() -> None:
    assert send("/v1/chat/completions", chunks(2)).json() == {"size": 512}
    assert send("/v1/chat/completions", b'{"text": "hi"}').json() == {"size": 2}
    assert send("/v1/files", b"x" * 4 * LIMIT).json() == {"size": 4 * LIMIT}
