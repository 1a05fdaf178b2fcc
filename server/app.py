"""The FastAPI app: lifespan (starts the MLX worker), thin routes, auth, error handlers, metrics.

Every error leaves as OpenAI's error body with its real status (`clara_cli.http`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.responses import Response as HTTPResponse

from clara import __version__, structured
from clara.checkpoint import resolve_checkpoint
from clara.paths import UPLOADS
from clara_cli.http import (
    APIError,
    BodyLimit,
    KeyFile,
    api_app,
    error_responses,
    health_response,
)
from clara_cli.metrics import MeteredGate, endpoints
from indexing.service import MAX_UPLOAD_MB
from indexing.service.app import ServiceSettings, mount_files_api
from indexing.service.handler import IndexService
from indexing.service.state import Registry
from server.completions import CompletionServing
from server.engine import Engine, Settings
from server.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelCard,
    ModelList,
    ServingDefaults,
)
from server.responses.protocol import (
    InputItemList,
    Response,
    ResponseCreateRequest,
    ResponseDeleted,
)
from server.responses.serving import ResponsesServing
from server.responses.store import ResponseStore
from server.serving import OpenAIServing

log = logging.getLogger("clara.serve")
WEB = Path(__file__).parent / "web"  # the web chat: static files shipped in the package
WEB_FILES = {"/": "index.html", "/web/app.js": "app.js", "/web/style.css": "style.css"}
OPEN_PATHS = ("/health", *WEB_FILES)  # reachable without the API key (the page asks for it)
ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/files",
    "/v1/vector_stores",
    "/v1/embeddings",
    "/v1/models",
    "/health",
    "/metrics",
)
ERRORS = error_responses(400, 401, 404, 503)
# `stream: true` answers with server-sent events instead of the JSON object
SSE_EVENT = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
    "required": ["data"],
}
STREAMS = {**ERRORS, 200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}}}


#: request metrics' endpoint labels: these paths as they are, those under these prefixes so
_endpoint = endpoints(ENDPOINTS, {
    "/v1/models": "/v1/models/{model}", "/v1/responses": "/v1/responses/*",
    "/v1/files": "/v1/files/*", "/v1/vector_stores": "/v1/vector_stores/*",
})  # fmt: skip


def create_app(
    settings: Settings,
    defaults: ServingDefaults | None = None,
    *,
    served_model_name: str | None = None,
    api_key: str | None = None,
    local_only: bool = False,
    allow_hosts: tuple[str, ...] = (),
    allow_origins: tuple[str, ...] = (),
    open_metrics: bool = False,
    key_roles: dict[str, str] | None = None,
    key_scopes: dict[str, tuple[str, ...]] | None = None,
    key_file: KeyFile | None = None,
    keepalive_s: float = 5.0,
    engine: Engine | None = None,
    responses_db: Path | None = None,
    keep_responses_days: float = 0,
    files_api: bool = True,
    max_upload_bytes: int = int(MAX_UPLOAD_MB * 2**20),
    max_stores_per_key: int | None = None,
    max_upload_bytes_per_key: int | None = None,
    accept_any_model: bool = False,
) -> FastAPI:
    """The clara-serve app; the model loads in the lifespan, on the MLX worker thread.
    Stored responses live in `responses_db` (default `$CLARA_HOME/responses.sqlite`), for
    `keep_responses_days` (0: until deleted).
    `files_api`: also serve the Files + Vector Stores API (`indexing.service`) over the same
    index root, on the same model worker. `api_key`, `local_only`, `allow_hosts`,
    `allow_origins`, `open_metrics` (/metrics without the key), `key_roles` (what each key
    may do), `key_scopes` (the collections a key may read), `key_file` (--api-key-file, read again
    when it changes): who may ask
    (`clara_cli.http.AccessGate`; from the options: `clara_cli.serve.access_options`)."""
    from clara.paths import home

    engine = engine or Engine(settings)
    defaults = defaults or ServingDefaults(collection=settings.collection)
    serving = OpenAIServing(
        engine, defaults, served_model_name or served_name(settings.model), keepalive_s
    )
    serving.accept_any_model = accept_any_model
    store = ResponseStore(responses_db or home() / "responses.sqlite", keep_responses_days)
    limits = {
        "max_upload_bytes": max_upload_bytes,
        "max_stores_per_key": max_stores_per_key,
        "max_upload_bytes_per_key": max_upload_bytes_per_key,
    }
    files = _files_service(settings, engine, limits) if files_api else None
    if files is not None:  # its uploads' metrics among the server's, and their attributes
        engine.metrics.files = files.metrics  # for attribute filters
        engine.document_attributes = files.document_attributes
    engine.metrics.build.set(1, version=__version__, model=serving.served_model_name)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()  # returns at once: requests get 503 until the model is loaded
        log.info(
            "requests that name no mode read %s (--mode, else the checkpoint's)", defaults.mode
        )
        if not structured.available():  # (JSON answers then fail, each saying so)
            log.warning("%s", structured.MISSING)
        if (
            resolve_checkpoint(settings.model, settings.checkpoint) is None
            and defaults.mode != "text"
        ):
            log.warning(
                "no CLaRa checkpoint for %s: its adapters are untrained, so answers read from "
                "memory (mode %s) say nothing useful and dense retrieval finds little; until you "
                "train adapters (README: Training your own adapters), serve it with --mode text "
                "and ask with retrieval_mode lexical", settings.model, defaults.mode,
            )  # fmt: skip
        yield
        ended = await asyncio.to_thread(engine.stop)
        store.close()
        if files is not None and ended:  # (not under a step still writing its collections)
            await asyncio.to_thread(files.close)

    app = api_app(
        title="clara-serve",
        summary="OpenAI-compatible RAG over CLaRa compressed memories",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.serving = serving
    app.state.stopping = serving.stopping  # serve_http: SIGTERM's grace begins
    app.state.forced = lambda: setattr(serving, "forced", True)  # ... and a second Ctrl-C
    app.state.responses = ResponsesServing(serving, store, files)
    app.state.completions = CompletionServing(serving)
    app.add_middleware(BodyLimit)  # inside the gate: a stranger's big body is a 401 first
    app.add_middleware(
        MeteredGate,
        metrics=engine.metrics,
        endpoint=_endpoint,
        service="clara-serve",
        open_paths=OPEN_PATHS + (("/metrics",) if open_metrics else ()),
        key_roles=key_roles,
        key_scopes=key_scopes,
        key_file=key_file,
        api_key=api_key,
        local_only=local_only,
        allow_hosts=allow_hosts,
        allow_origins=allow_origins,
    )
    if files is not None:
        mount_files_api(app, files)

    @app.post("/v1/chat/completions", response_model=ChatCompletion, responses=STREAMS)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await request.app.state.serving.chat(body, request)

    @app.post("/v1/completions", response_model=Completion, responses=STREAMS)
    async def completions(body: CompletionRequest, request: Request):
        """OpenAI's legacy text completion: the prompt as it is, to the bare base model (no
        chat template, no retrieval)."""
        return await request.app.state.completions.create(body, request)

    @app.post("/v1/responses", response_model=Response, responses=STREAMS)
    async def create_response(body: ResponseCreateRequest, request: Request):
        return await request.app.state.responses.create(body, request)

    # Stored responses: plain functions, which FastAPI runs on its thread pool, so a slow or
    # locked SQLite file holds up these requests only, never the event loop.
    @app.get("/v1/responses/{response_id}", response_model=Response, responses=ERRORS)
    def get_response(response_id: str, request: Request, stream: bool = False):
        """The stored response. OpenAI streams a background response again with
        `stream=true`; clara-serve runs none, so that is a 400 (the SDK's stream of it was
        empty, without a word)."""
        found = request.app.state.responses.get(response_id)
        if stream:
            raise APIError(
                400, "stream=true streams a background response again, and clara-serve runs "
                "none: retrieve the response without stream", param="stream",
            )  # fmt: skip
        return found

    @app.delete("/v1/responses/{response_id}", response_model=ResponseDeleted, responses=ERRORS)
    def delete_response(response_id: str, request: Request):
        return request.app.state.responses.delete(response_id)

    @app.post("/v1/responses/{response_id}/cancel", response_model=Response, responses=ERRORS)
    def cancel_response(response_id: str, request: Request):
        return request.app.state.responses.cancel(response_id)

    @app.get(
        "/v1/responses/{response_id}/input_items", response_model=InputItemList, responses=ERRORS
    )
    def response_input_items(
        response_id: str, request: Request, order: Literal["asc", "desc"] = Query("desc"),
        limit: int = Query(20, ge=1, le=100), after: str | None = None,
    ):  # fmt: skip
        return request.app.state.responses.input_items(response_id, order, limit, after)

    @app.post("/v1/embeddings", response_model=EmbeddingResponse, responses=ERRORS)
    async def embeddings(body: EmbeddingRequest, request: Request):
        return await request.app.state.serving.embeddings(body, request)

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS)
    async def models(request: Request):  # (on a thread: --collection-models reads the disk)
        return await asyncio.to_thread(request.app.state.serving.models)

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=ERRORS)
    async def model(model_id: str, request: Request):
        return await asyncio.to_thread(request.app.state.serving.model, model_id)

    schema = app.openapi

    def openapi() -> dict:
        """The schema, stating the loaded model's embedding size as the one `dimensions` and
        its vocabulary as the bound of token ids in `input`; without --embedding-token-ids,
        embeddings take text only (a client's ids are refused: `OpenAIServing.embeddings`)."""
        spec = schema()
        if not serving.defaults.embedding_token_ids:
            text = spec["components"]["schemas"]["EmbeddingRequest"]["properties"]["input"]
            text["anyOf"] = [s for s in text["anyOf"] if "integer" not in json.dumps(s)]
        if engine.info is not None:
            request = spec["components"]["schemas"]["EmbeddingRequest"]
            request["properties"]["dimensions"]["enum"] = [engine.info.embedding_dim, None]
            if engine.info.vocab_size:
                _bound_integers(request["properties"]["input"], engine.info.vocab_size - 1)
                legacy = spec["components"]["schemas"]["CompletionRequest"]
                _bound_integers(legacy["properties"]["prompt"], engine.info.vocab_size - 1)
        return spec

    app.openapi = openapi

    for path, name in WEB_FILES.items():
        app.add_api_route(
            path, _web_file(WEB / name), methods=["GET", "HEAD"], include_in_schema=False
        )

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        engine: Engine = request.app.state.engine
        state = "loading" if engine.state == "starting" else engine.state
        body = {"status": "ok" if state == "ready" else state}
        body["model"] = request.app.state.serving.served_model_name
        if engine.error is not None:
            body["error"] = str(engine.error)
        return health_response(engine.state, body, engine.worker, request.app)

    # HEAD too (curl -I, uptime monitors), apart: one operation id for each in the schema
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> PlainTextResponse:
        engine: Engine = request.app.state.engine
        m = engine.metrics
        m.queue_depth.set(engine.queue_depth())
        stats = await asyncio.to_thread(engine.index_stats)
        counted = [(name, counts) for name, counts in stats if counts is not None]
        m.index_documents.set_all((docs, {"collection": name}) for name, (docs, _) in counted)
        m.index_chunks.set_all((chunks, {"collection": name}) for name, (_, chunks) in counted)
        m.index_damaged.set_all((1, {"collection": name}) for name, c in stats if c is None)
        if files is not None:
            try:  # (the rest is shown whatever the registry)
                files.metrics.files_in_progress.set(await asyncio.to_thread(files.in_progress))
            except Exception as exc:  # noqa: BLE001
                log.warning("metrics: could not count the uploads in progress: %s", exc)
        return m.response(request.headers.get("accept-encoding", ""))

    return app


def _bound_integers(schema: Any, maximum: int) -> None:
    """Set `maximum` on every integer schema inside `schema` (a JSON schema, in place)."""
    if isinstance(schema, dict):
        if schema.get("type") == "integer":
            schema["maximum"] = maximum
        for value in schema.values():
            _bound_integers(value, maximum)
    elif isinstance(schema, list):
        for value in schema:
            _bound_integers(value, maximum)


#: The web chat's files: looked for again at each load, framed by no other site (its buttons
#: upload and index files, and ask with the key), and read as the type they are sent as
WEB_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def _web_file(path: Path):
    async def web_file(request: Request) -> HTTPResponse:
        """The file, or 304 when the browser's copy is it: no-cache makes the browser ask at
        every load, and each answer used to send the whole file again."""
        sent = FileResponse(path, headers=WEB_HEADERS, stat_result=os.stat(path))
        etag = sent.headers["etag"]
        asked = request.headers.get("if-none-match", "")
        if asked.strip() == "*" or etag in (t.strip().removeprefix("W/") for t in asked.split(",")):
            return HTTPResponse(status_code=304, headers={**WEB_HEADERS, "ETag": etag})
        return sent

    return web_file


def _files_service(settings: Settings, engine: Engine, limits: dict[str, Any]) -> IndexService:
    """The indexing service's handler over clara-serve's index root and model worker (its
    upload `limits`: `ServiceSettings`' fields)."""
    service_settings = ServiceSettings(
        model=settings.model,
        checkpoint=settings.checkpoint,
        dtype=settings.dtype,
        index_root=settings.index_root,
        **limits,
        default_collection=settings.collection,
    )
    registry = Registry(settings.root / UPLOADS)
    service = IndexService(service_settings, engine.worker, registry)
    service.deleted_hooks.append(engine.forget_collection)  # chats let go of their copy
    return service


def served_name(model: str) -> str:
    """The default model id clients use: "clara-" + the base model's short name."""
    from clara.loader import DEFAULT_ALIASES, DEFAULT_MODEL

    short = DEFAULT_MODEL if model.lower() in DEFAULT_ALIASES else model.rstrip("/").split("/")[-1]
    return f"clara-{short}"
